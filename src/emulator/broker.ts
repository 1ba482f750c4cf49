import type { Duplex } from 'node:stream';
import { Aedes, type AuthenticateError, type Client, type Subscription } from 'aedes';
import mqttPacket, { type IConnackPacket, type IDisconnectPacket, type IPubackPacket, type IPubrecPacket, type Packet } from 'mqtt-packet';
import { MAX_CLIENT_ID_LENGTH, clientIdProblem } from '../credential.js';
import { hmacPassword, parseUsername } from '../signer/mqtt.js';
import { guardClient, hardenBroker, type GuardedClient } from './client-guards.js';
import { safeEqual } from './crypto.js';
import { startListeners, type BrokerPorts } from './listeners.js';
import { REASON, checkKeepAlive, checkPublish, checkSubscribe, checkWill, describeRefusal, type Refusal, type SessionFacts } from './mqtt-rules.js';
import type { ResolvedEmulatorOptions } from './options.js';
import { p2pInbox, p2pTarget } from './p2p.js';
import type { CredentialRecord, CredentialRegistry } from './registry.js';
import type { StatsRecorder } from './stats.js';
import { TokenSessions } from './token-sessions.js';
import {
  TOKEN_TOPICS,
  authorizeSubscribe,
  describeTokenCode,
  expireNoticePayload,
  invalidNoticePayload,
  parseTokenPassword,
  parseUploadToken,
  tokenConnackCode,
  type TokenInvalidCode,
  type TokenRecord,
  type TokenRegistry,
  type TokenType,
} from './tokens.js';

export { WS_PATH, type BrokerPorts } from './listeners.js';

/** CONNACK return codes of MQTT 3.1.1 the authenticate hook uses (aedes' `AuthErrorCode` is an ambient const enum). */
const IDENTIFIER_REJECTED = 2;
const SERVER_UNAVAILABLE = 3;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;

/** The MQTT 5 CONNACK reason code of each MQTT 3.1.1 refusal (MQTT 5.0 §3.2.2.2; aedes maps them the same way). */
const V5_REASON: Readonly<Record<number, number>> = Object.freeze({
  [IDENTIFIER_REJECTED]: 0x85,
  [SERVER_UNAVAILABLE]: 0x88,
  [BAD_USERNAME_OR_PASSWORD]: 0x86,
  [NOT_AUTHORIZED]: 0x87,
});

/**
 * Why a CONNECT is refused: its MQTT 3.1.1 CONNACK return code, its MQTT 5 reason code (by default the one
 * MQTT 5 gives the same refusal), and a message that names no secret.
 */
export class ConnectRefusal extends Error {
  readonly returnCode: number;
  readonly reasonCode: number;
  constructor(returnCode: number, message: string, reasonCode: number = V5_REASON[returnCode] ?? 0x80) {
    super(message);
    this.name = 'ConnectRefusal';
    this.returnCode = returnCode;
    this.reasonCode = reasonCode;
  }
}

/** What the broker authenticates against. */
export interface BrokerAuthConfig {
  readonly instanceId: string;
  readonly accessKeyId: string;
  readonly accessKeySecret: string;
  readonly registry: CredentialRegistry;
  /** The tokens ApplyToken issued; without it Token mode is refused (rc 4). */
  readonly tokens?: TokenRegistry | undefined;
}

/** Who an accepted CONNECT authenticated as. */
export interface ConnectIdentity {
  readonly mode: 'DeviceCredential' | 'Signature' | 'Token';
  /** The DeviceAccessKeyId or account AccessKeyId of the username. */
  readonly keyId: string;
  /** Token mode: the records of the tokens of the password, in its order. */
  readonly tokens?: readonly TokenRecord[];
}

/**
 * Token mode (reference §5.3): username `Token|<AccessKeyId>|<InstanceId>`, password `<type>|<token>` pairs. rc 4
 * for an AccessKeyId that is not the account's (notice code -1), a password that is not such pairs, and a token
 * that is forged or altered (codes 1, 8); rc 5 for a token that verifies but is not allowed (expired 2, revoked 3,
 * claimed with another type 5) and for a username naming another instance. A Token-mode CONNECT may use any
 * ClientId of the instance, as Signature mode may.
 */
function checkTokenConnect(config: BrokerAuthConfig, parsed: { keyId: string; instanceId: string }, password: Buffer | undefined): ConnectIdentity {
  if (!config.tokens) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'authentication mode Token is not supported by this broker');
  if (parsed.keyId !== config.accessKeyId) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'unknown AccessKeyId (not the account that applies for tokens)');
  const credentials = parseTokenPassword(password);
  // Not the parser's detail: a password with its parts swapped would have the token quoted as a "type".
  if (!credentials.ok) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, "the password is not Token mode's <type>|<token> pairs (types R, W or RW, one token each)");
  const login = config.tokens.login(config.instanceId, credentials.value);
  if (!login.ok) throw new ConnectRefusal(tokenConnackCode(login.code), `the ${login.type} token is ${describeTokenCode(login.code)}`);
  if (parsed.instanceId !== config.instanceId) throw new ConnectRefusal(NOT_AUTHORIZED, 'the username names another instance');
  return { mode: 'Token', keyId: parsed.keyId, tokens: login.records };
}

/**
 * Decide a CONNECT per reference §0 / §5.3, or throw {@link ConnectRefusal}:
 * rc 2 for a ClientId breaking the grammar; rc 4 when username/password cannot be verified (malformed username,
 * unknown mode or key id, wrong password); rc 5 when they verify but are not allowed here (another instance, or
 * a device credential bound to another ClientId). MQTT 5 gets 0x85, 0x86 and 0x87 for the same cases.
 * Token mode: see {@link checkTokenConnect}.
 */
export function checkConnect(config: BrokerAuthConfig, clientId: string, username: string | undefined, password: Buffer | undefined): ConnectIdentity {
  if (clientIdProblem(clientId)) throw new ConnectRefusal(IDENTIFIER_REJECTED, 'identifier rejected');
  const parsed = parseUsername(username);
  if (!parsed) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'username is not <Mode>|<KeyId>|<InstanceId>');

  let boundClientId: string;
  let boundInstanceId: string;
  let secret: string;
  if (parsed.mode === 'DeviceCredential') {
    const record = config.registry.findByKeyId(parsed.keyId);
    if (!record) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'unknown or revoked DeviceAccessKeyId');
    ({ ClientId: boundClientId, InstanceId: boundInstanceId, DeviceAccessKeySecret: secret } = record);
  } else if (parsed.mode === 'Token') {
    return checkTokenConnect(config, parsed, password);
  } else if (parsed.mode === 'Signature') {
    if (parsed.keyId !== config.accessKeyId) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'unknown AccessKeyId');
    // The account key may connect any ClientId of its instance.
    [boundClientId, boundInstanceId, secret] = [clientId, config.instanceId, config.accessKeySecret];
  } else {
    throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, `authentication mode ${parsed.mode} is not supported by the emulator`);
  }

  // The password is keyed by the secret over the CONNECT's own ClientId, so it verifies the key holder even when
  // the credential belongs to another ClientId; that case is then "not authorized", not "bad password".
  if (!safeEqual(password, hmacPassword(secret, clientId))) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'wrong password');
  if (parsed.instanceId !== config.instanceId || boundInstanceId !== parsed.instanceId) {
    throw new ConnectRefusal(NOT_AUTHORIZED, 'the username names another instance');
  }
  if (boundClientId !== clientId) throw new ConnectRefusal(NOT_AUTHORIZED, 'the credential belongs to another ClientId');
  return { mode: parsed.mode, keyId: parsed.keyId };
}

/** The running broker and its listeners. */
export interface BrokerHandle {
  readonly broker: Aedes;
  readonly mqttUrl: string;
  readonly wsUrl: string | undefined;
  /** `mqtts://host:port`, or `undefined` without TLS. */
  readonly mqttsUrl: string | undefined;
  /** `wss://host:port/mqtt`, or `undefined` without TLS. */
  readonly wssUrl: string | undefined;
  /** The ports actually bound: a restart listens on these again. */
  readonly ports: BrokerPorts;
  /**
   * aedes' session store (persistent sessions' subscriptions, queued QoS 1/2 messages, wills). Passing it to the
   * next {@link startBroker} keeps sessions across a restart; aedes never destroys it on close.
   */
  readonly persistence: unknown;
  /** Cut a connected client's connection without a DISCONNECT, like a network failure. True when it was connected. */
  disconnect(clientId: string): boolean;
  /** Token mode: look at every Token-mode session against the `now` clock at once (notices due, tokens run out). */
  checkTokens(): void;
  /** Close the broker, every client socket and all listeners. Never rejects. */
  close(): Promise<void>;
}

/** What the broker is built with besides the options. */
export interface BrokerDependencies {
  readonly registry: CredentialRegistry;
  /** The tokens ApplyToken issued (Token mode); without it Token-mode CONNECTs are refused. */
  readonly tokens?: TokenRegistry;
  readonly stats: StatsRecorder;
  /** A previous broker's {@link BrokerHandle.persistence} to keep its sessions; default a fresh in-memory store. */
  readonly persistence?: unknown;
  /** A previous broker's id, so that stored packets and wills keep naming a live broker. */
  readonly brokerId?: string;
}

/**
 * Inbound MQTT 5 topic aliases a client may use. The service documents topic aliases without a number; the
 * emulator advertises this one in its CONNACK, and a client uses at most that many.
 */
export const TOPIC_ALIAS_MAXIMUM = 32;

/** The largest Receive Maximum MQTT 5 has, advertised as the service caps it there (reference §8.2). */
const RECEIVE_MAXIMUM = 65_535;

/** aedes keeps connected clients by id at runtime but does not declare it. */
function clientById(broker: Aedes, clientId: string): Client | undefined {
  const clients = (broker as unknown as { clients: Record<string, Client | undefined> }).clients;
  return clients[clientId];
}

/** Destroy the client's transport: aedes then closes the session as on a network cut (the will is published). */
function cut(client: Client): void {
  client.conn.destroy();
}

/** The part of aedes' session store (aedes-persistence) the broker repairs. */
interface SessionStore {
  removeSubscriptions(client: Client, filters: readonly string[]): Promise<void>;
  addSubscriptions(client: Client, subscriptions: readonly Subscription[]): Promise<void>;
  incomingDelPacket(client: Client, packet: { messageId: number }): Promise<void>;
}

/** What the rules need to know of a client. */
function sessionFacts(client: Client): SessionFacts {
  // aedes sets `clean` from the clean-session flag (MQTT 3.1.1) or a zero session expiry (MQTT 5).
  return { clientId: client.id, persistent: !client.clean };
}

/**
 * Send an MQTT 5 client a DISCONNECT with `reasonCode` and `reasonString`, then close it and call `then`. Not aedes'
 * `client.disconnect()`: it sends nothing to a client whose CONNACK is out but whose queued messages are still being
 * sent (aedes calls it connecting, not connected), and a PUBLISH that arrives right after the CONNACK is in that
 * window (Paho's, at times).
 */
function sendDisconnect(client: Client, reasonCode: number, reasonString: string, drainTimeoutMs: number, then: () => void = noop): void {
  const packet: IDisconnectPacket = { cmd: 'disconnect', reasonCode, properties: { reasonString } };
  writePacket(client.conn, packet, 5, drainTimeoutMs, () => client.close(then));
}

function noop(): void {}

/**
 * Write one packet straight to a connection, generated for its protocol level; `then` runs once the bytes are handed
 * over (destroying the socket also calls it). A client that does not read its socket is not waited for longer than
 * for any other write: past `drainTimeoutMs` its socket is destroyed. The timer ends when the socket drains, so a
 * client that reads, merely behind at that moment (a subscriber busy with messages), is never cut for it.
 */
export function writePacket(conn: Duplex, packet: Packet, protocolVersion: number, drainTimeoutMs: number, then: () => void = noop): void {
  const version = protocolVersion === 5 ? 5 : protocolVersion === 3 ? 3 : 4;
  if (conn.write(mqttPacket.generate(packet, { protocolVersion: version }), () => then())) return;
  const timer = setTimeout(() => conn.destroy(), drainTimeoutMs);
  timer.unref();
  conn.once('drain', () => clearTimeout(timer));
}

/**
 * Refuse a CONNECT with our own CONNACK (aedes' authenticate hook can only answer 3.1.1 codes 2 to 5), then let aedes
 * close the connection. MQTT 5 gets the reason code and, as Reason String, why.
 */
function writeRefusal(conn: Duplex, protocolVersion: number, refusal: ConnectRefusal, drainTimeoutMs: number, then: () => void): void {
  const connack: IConnackPacket = protocolVersion === 5
    ? { cmd: 'connack', sessionPresent: false, reasonCode: refusal.reasonCode, properties: { reasonString: refusal.message } }
    : { cmd: 'connack', sessionPresent: false, returnCode: refusal.returnCode };
  // Written before the connection is closed, as aedes does with its own CONNACKs; not waited for forever.
  writePacket(conn, connack, protocolVersion, drainTimeoutMs, then);
}

/**
 * Start aedes with the emulator's authentication, the service's MQTT rules (mqtt-rules.ts), P2P, the guards
 * against hostile clients (client-guards.ts) and (with `kickOnRevoke`) session kicking, on a TCP listener and
 * (unless off) WebSocket, TLS and secure WebSocket listeners. Speaks MQTT 3.1, 3.1.1 and 5.
 */
export async function startBroker(options: ResolvedEmulatorOptions, deps: BrokerDependencies): Promise<BrokerHandle> {
  const auth: BrokerAuthConfig = { ...options, registry: deps.registry, tokens: deps.tokens };
  // CONNACKs decided by our hooks are counted when decided, so the count is already right when the client reads
  // its CONNACK (aedes emits connackSent only after the write). CONNACKs aedes decides alone are counted on connackSent.
  const counted = new WeakSet<Client>();
  // Who each CONNECT authenticated as, from preConnect (where it is decided) to authenticate (where aedes asks).
  const identities = new WeakMap<Client, ConnectIdentity>();
  // The DeviceAccessKeyId each live DeviceCredential session authenticated with, for kickOnRevoke.
  const sessionKeys = new WeakMap<Client, string>();
  // The subscriptions each client holds, by filter: for the subscriptions-per-client rule, and to repair what aedes
  // stores of a persistent session.
  const held = new WeakMap<Client, Map<string, Subscription>>();
  const decide = (client: Client, code: number): void => {
    counted.add(client);
    deps.stats.recordConnack(code);
  };
  const report = (refusal: Refusal, clientId: string | undefined): void => {
    deps.stats.recordRule(refusal.rule);
    options.logger.warn(describeRefusal(refusal, clientId), { rule: refusal.rule, ...(clientId ? { clientId } : {}) });
  };
  const heldBy = (client: Client): Map<string, Subscription> => {
    let filters = held.get(client);
    if (!filters) {
      filters = new Map();
      held.set(client, filters);
    }
    return filters;
  };
  // MQTT 5 is told why in a DISCONNECT; MQTT 3.1.1 has no such packet, and aedes closes the connection on the error.
  const disconnectFor = (client: Client | null, refusal: Refusal, then: () => void): void => {
    if (client?.version === 5 && !client.closed) sendDisconnect(client, refusal.reasonCode, describeRefusal(refusal, client.id), options.drainTimeoutMs, then);
    else then();
  };

  // Token mode: the broker's notices go to the one client, without a subscription (devices cannot subscribe to
  // $SYS), as QoS 0 PUBLISHes written straight to its connection; `then` runs once the bytes are handed over, so a
  // disconnect that follows does not lose them.
  const sendPublish = (client: Client, topic: string, payload: Buffer, then: () => void = noop): void => {
    if (client.closed) {
      then();
      return;
    }
    writePacket(client.conn, { cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false }, client.version, options.drainTimeoutMs, then);
  };
  const tokenRefusal = (rule: 'tokenResource' | 'tokenInvalid', code: TokenInvalidCode, type: TokenType, what: string): Refusal => ({
    rule,
    action: 'disconnect',
    reasonCode: REASON.NOT_AUTHORIZED,
    reason: `${what}: the ${type} token is ${describeTokenCode(code)}; $SYS/tokenInvalidNotice sent`,
  });
  // The reference's order: $SYS/tokenInvalidNotice {code, type}, then the disconnect (MQTT 5: DISCONNECT 0x87).
  const noticeThenDisconnect = (client: Client, code: TokenInvalidCode, type: TokenType, refusal: Refusal, then: () => void): void => {
    sendPublish(client, TOKEN_TOPICS.invalidNotice, invalidNoticePayload(code, type), () => disconnectFor(client, refusal, then));
  };
  const tokenSessions = deps.tokens
    ? new TokenSessions(deps.tokens, { now: options.now, leadMs: options.tokenExpireNoticeLeadMs, instanceId: options.instanceId }, {
      expiring: (client, record) => sendPublish(client, TOKEN_TOPICS.expireNotice, expireNoticePayload(record.expireTime, record.type)),
      invalid: (client, code, type) => {
        const refusal = tokenRefusal('tokenInvalid', code, type, 'the session');
        report(refusal, client.id);
        noticeThenDisconnect(client, code, type, refusal, () => client.close());
      },
    })
    : undefined;
  /** A PUBLISH, SUBSCRIBE or upload refused by the session's tokens: the notice, then the disconnect, then `then`. */
  const refuseByToken = (
    client: Client,
    outcome: { code: TokenInvalidCode; type: TokenType; rule: 'tokenResource' | 'tokenInvalid'; repeated: boolean },
    what: string,
    then: (error: Error) => void,
  ): void => {
    const refusal = tokenRefusal(outcome.rule, outcome.code, outcome.type, what);
    const error = new Error(refusal.reason);
    // A packet behind the one that ended the session: it is being told and disconnected already.
    if (outcome.repeated) {
      then(error);
      return;
    }
    report(refusal, client.id);
    noticeThenDisconnect(client, outcome.code, outcome.type, refusal, () => then(error));
  };

  const broker = await Aedes.createBroker({
    ...(deps.brokerId === undefined ? {} : { id: deps.brokerId }),
    ...(deps.persistence === undefined ? {} : { persistence: deps.persistence }),
    // aedes refuses MQTT 3.1 ClientIds over 23 characters by default; the service allows 64.
    maxClientsIdLength: MAX_CLIENT_ID_LENGTH,
    // Checked on every read as soon as a packet's fixed header is in, CONNECT included: never buffered whole.
    maximumPacketSize: options.maxPacketBytes,
    drainTimeout: options.drainTimeoutMs,
    // MQTT 5 clients are told the cap in the CONNACK (Server Keep Alive); 3.1.1 CONNECTs are lowered in preConnect,
    // as aedes would refuse them (with a return code 3.1.1 does not have).
    keepaliveLimit: Number.isFinite(options.maxKeepAliveSeconds) ? options.maxKeepAliveSeconds : 0,
    receiveMaximum: RECEIVE_MAXIMUM,
    topicAliasMaximum: TOPIC_ALIAS_MAXIMUM,
    preConnect(client: Client, packet, done) {
      const version = packet.protocolVersion ?? 4;
      // A protocol version aedes does not speak gets its own CONNACK 1.
      if (version !== 3 && version !== 4 && version !== 5) {
        done(null, true);
        return;
      }
      let refusal: ConnectRefusal;
      try {
        const identity = checkConnect(auth, packet.clientId, packet.username, packet.password);
        const will = checkWill(options, packet.will);
        if (will) report(will, packet.clientId);
        // rc 5: of the five codes 3.1.1 has, "not authorized" is the one that means "not allowed here".
        if (will?.action === 'disconnect') throw new ConnectRefusal(NOT_AUTHORIZED, will.reason, will.reasonCode);
        if (will && packet.will) {
          if (will.rule === 'will') delete packet.will;
          else packet.will.retain = false;
        }
        const keepAlive = checkKeepAlive(options, packet.keepalive ?? 0);
        if (keepAlive) {
          report(keepAlive, packet.clientId);
          if (version !== 5) packet.keepalive = keepAlive.seconds;
        }
        identities.set(client, identity);
        done(null, true);
        return;
      } catch (error) {
        // An unexpected failure must not crash the broker's process: refuse as "server unavailable".
        refusal = error instanceof ConnectRefusal ? error : new ConnectRefusal(SERVER_UNAVAILABLE, 'emulator failure');
      }
      decide(client, version === 5 ? refusal.reasonCode : refusal.returnCode);
      writeRefusal(client.conn, version, refusal, options.drainTimeoutMs, () => done(refusal, false));
    },
    authenticate(client: Client, _username, _password, done) {
      // preConnect has decided already; only an accepted CONNECT gets here.
      const identity = identities.get(client);
      if (!identity) {
        decide(client, client.version === 5 ? V5_REASON[SERVER_UNAVAILABLE] ?? 0x88 : SERVER_UNAVAILABLE);
        done(new ConnectRefusal(SERVER_UNAVAILABLE, 'emulator failure') as AuthenticateError, false);
        return;
      }
      if (identity.mode === 'DeviceCredential') sessionKeys.set(client, identity.keyId);
      if (identity.mode === 'Token' && identity.tokens) tokenSessions?.admit(client, identity.tokens);
      decide(client, 0);
      done(null, true);
    },
    authorizeSubscribe(client, subscription, done) {
      // The broker's own P2P subscription (also when a persistent session restores it) is not the client's doing.
      if (subscription.topic === p2pInbox(client.id)) {
        done(null, subscription);
        return;
      }
      // Token mode: a filter must be within an R token (reference §5.3), checked before the service's other rules
      // so that the client is told why. `$` filters ($SYS, $share/) are the rules' to refuse.
      if (tokenSessions?.has(client) && !subscription.topic.startsWith('$')) {
        const outcome = tokenSessions.authorize(client, 'R', subscription.topic);
        if (!outcome.allowed) {
          refuseByToken(client, outcome, `SUBSCRIBE to '${subscription.topic}'`, (error) => done(error));
          return;
        }
      }
      const filters = heldBy(client);
      const refusal = checkSubscribe(options, subscription, sessionFacts(client), filters);
      if (!refusal) {
        filters.set(subscription.topic, subscription);
        done(null, subscription);
        return;
      }
      report(refusal, client.id);
      if (refusal.action === 'disconnect') {
        disconnectFor(client, refusal, () => done(new Error(refusal.reason)));
        return;
      }
      // null = a SUBACK failure for this filter only (3.1.1: 0x80, MQTT 5: 0x87); the client's other filters are granted.
      done(null, null);
    },
    authorizeForward(client, packet) {
      // Broad filters (`#`, `Parent/#`) match other clients' P2P topics; only the addressee gets those messages.
      const target = p2pTarget(packet.topic);
      if (target === undefined) return packet;
      if (target !== client.id) return null;
      if (options.tokenP2pNeedsRead && tokenSessions?.has(client) && !authorizeSubscribe(tokenSessions.held(client), packet.topic).allowed) {
        deps.stats.recordRule('tokenResource');
        options.logger.warn(`MQTT rule tokenResource (option tokenP2pNeedsRead): ${client.id}: a P2P message on '${packet.topic}' not delivered: no R token of the session covers it`, { rule: 'tokenResource', clientId: client.id });
        return null;
      }
      return packet;
    },
  });
  hardenBroker(broker);

  // Keep aedes' own publish rules (no publishing to $SYS) after the service's.
  const aedesAuthorizePublish = broker.authorizePublish;
  broker.authorizePublish = (client, packet, done) => {
    if (tokenSessions?.has(client)) {
      if (packet.topic === TOKEN_TOPICS.upload) {
        uploadToken(client, packet, done);
        return;
      }
      // A topic must be within a W token (reference §5.3), checked before the service's other rules so that the
      // client is told why. `$` topics are the rules' (and aedes') to refuse.
      if (!packet.topic.startsWith('$')) {
        const outcome = tokenSessions.authorize(client, 'W', packet.topic);
        if (!outcome.allowed) {
          refuseByToken(client, outcome, `PUBLISH to '${packet.topic}'`, done);
          return;
        }
      }
    }
    const refusal = checkPublish(options, packet, client ? sessionFacts(client) : undefined);
    if (refusal) {
      report(refusal, client?.id);
      if (refusal.action !== 'ignore') {
        // MQTT 3.1.1: aedes closes the connection on the error, as the service does (reference §5.4, §5.7).
        // A will being published (its client closed) is just dropped.
        const error = new Error(refusal.reason);
        disconnectFor(client, refusal, () => done(error));
        return;
      }
      packet.retain = false;
    }
    // A retained P2P message would be re-sent to its addressee on every connect; the service has no such thing.
    if (p2pTarget(packet.topic) !== undefined) packet.retain = false;
    aedesAuthorizePublish.call(broker, client, packet, done);
  };

  /**
   * `$SYS/uploadToken` (reference §5.3): `{"Token": "…", "type": "R|W|RW"}` replaces the session's token of that type
   * (or adds one) before the PUBACK, so a client that waited for its PUBACK holds the new token. A payload that is
   * not that is refused as a protocol error without a notice (there is no token to name): the client is disconnected
   * (MQTT 5: DISCONNECT 0x99 Payload format invalid). A token that does not verify gets $SYS/tokenInvalidNotice with
   * its code, then the disconnect, like any invalid token of the session.
   */
  const uploadToken = (client: Client, packet: Parameters<Aedes['authorizePublish']>[1], done: (error?: Error | null) => void): void => {
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload, 'utf8') : packet.payload;
    const parsed = parseUploadToken(payload);
    if (!parsed.ok) {
      const refusal: Refusal = { rule: 'tokenUpload', action: 'disconnect', reasonCode: REASON.PAYLOAD_FORMAT_INVALID, reason: `a ${TOKEN_TOPICS.upload} payload that is not {"Token": "…", "type": "R|W|RW"}: ${parsed.problem}` };
      report(refusal, client.id);
      disconnectFor(client, refusal, () => done(new Error(refusal.reason)));
      return;
    }
    const outcome = tokenSessions?.upload(client, parsed.value) ?? { allowed: true };
    if (!outcome.allowed) {
      refuseByToken(client, outcome, `the ${parsed.value.type} token uploaded to ${TOKEN_TOPICS.upload}`, done);
      return;
    }
    // The upload is the broker's business and its payload a credential: it is acknowledged here and never routed.
    // aedes 2.0.0-beta.1 (pinned) skips publishing a packet flagged `_notAuthorized`, and then sends no
    // acknowledgement of its own (a QoS 2 upload's PUBREL finds nothing stored and gets its PUBCOMP all the same).
    if (packet.qos > 0 && packet.messageId !== undefined) {
      const ack: IPubackPacket | IPubrecPacket = packet.qos === 1 ? { cmd: 'puback', messageId: packet.messageId } : { cmd: 'pubrec', messageId: packet.messageId };
      writePacket(client.conn, ack, client.version, options.drainTimeoutMs);
    }
    (packet as { _notAuthorized?: boolean })._notAuthorized = true;
    done(null);
  };

  broker.on('connackSent', (packet, client) => {
    if (!counted.has(client)) deps.stats.recordConnack(packet.returnCode ?? packet.reasonCode ?? 0);
  });
  // 'client' comes after authentication and before the CONNACK is written, so the P2P subscription is in place
  // before the client can know it is connected. Persistent sessions keep it (with their queued P2P messages).
  // aedes does not downgrade to a wildcard subscription's QoS, so P2P messages arrive at the QoS they were sent
  // with (QoS 1 at most in a persistent session while QoS 2 is refused there); and it delivers a message once per
  // client even when the client also subscribed to its own P2P topic.
  broker.on('client', (client) => {
    const qos = options.qos2PersistentSessions === 'refuse' && !client.clean ? 1 : 2;
    client.subscribe({ topic: p2pInbox(client.id), qos }, () => undefined);
  });
  // aedes has set each subscription's `qos` to what the SUBACK granted: 0x80 and up is a refusal.
  broker.on('subscribe', (subscriptions, client) => {
    const refused: string[] = [];
    for (const sub of subscriptions) {
      const granted = sub.qos as number;
      // MQTT 5: aedes answers `$share/` filters with SUBACK 0x9E itself, before the authorize hook.
      if (granted === 0x9e) {
        report({ rule: 'sharedSubscription', action: 'deny', reasonCode: 0x9e, reason: `a shared subscription '${sub.topic}' (MQTT 5: SUBACK 0x9E)` }, client.id);
      }
      if (granted >= 0x80) refused.push(sub.topic);
    }
    if (!client.clean && refused.length > 0) repairStoredSession(client, refused);
  });
  /**
   * In a persistent session aedes stores every filter of a SUBSCRIBE once one of them is granted, the refused ones
   * too, and would then queue offline messages for them: put back what the client really holds.
   */
  const repairStoredSession = (client: Client, refused: readonly string[]): void => {
    const mine = held.get(client);
    const persistence = (broker as unknown as { persistence: SessionStore }).persistence;
    const removed = refused.filter((filter) => !mine?.has(filter));
    const restored = refused.flatMap((filter) => mine?.get(filter) ?? []);
    persistence.removeSubscriptions(client, removed)
      .then(() => (restored.length > 0 ? persistence.addSubscriptions(client, restored) : undefined))
      .catch((error: unknown) => options.logger.error(`MQTT broker error: ${error instanceof Error ? error.message : String(error)}`));
  };
  broker.on('unsubscribe', (filters, client) => {
    const mine = held.get(client);
    for (const filter of filters) mine?.delete(filter);
  });
  // Refusals aedes makes itself, reported like the rules' own. A drain timeout fails every write that waited for
  // the drain, each with its own error event: it is reported once per client.
  const drainTimedOut = new WeakSet<Client>();
  const aedesRefusal = (client: Client | null, error: Error): void => {
    const id = client?.id ?? undefined;
    if (error.message === 'packet too large') {
      report({ rule: 'packetSize', action: 'disconnect', reasonCode: REASON.PACKET_TOO_LARGE, reason: `a packet of ${String((error as { size?: number }).size)} bytes, over the limit of ${options.maxPacketBytes}` }, id);
    } else if (error.message === 'drain timeout' && client && !drainTimedOut.has(client)) {
      drainTimedOut.add(client);
      report({ rule: 'slowConsumer', action: 'disconnect', reasonCode: 0, reason: `a socket that took no data for ${options.drainTimeoutMs} ms` }, id);
    } else if (error.message.startsWith('invalid subscription identifier')) {
      report({ rule: 'subscriptionIdentifier', action: 'disconnect', reasonCode: 0x82, reason: `${error.message} (MQTT 5 allows 1 to 268,435,455; DISCONNECT 0x82)` }, id);
    }
  };
  broker.on('clientError', aedesRefusal);
  broker.on('connectionError', aedesRefusal);
  // aedes reports persistence failures here; unheard, an 'error' event would end the process.
  (broker as unknown as NodeJS.EventEmitter).on('error', (error: Error) => options.logger.error(`MQTT broker error: ${error.message}`));

  const onSlow = (client: Client, queued: number): void => {
    report({ rule: 'slowConsumer', action: 'disconnect', reasonCode: 0, reason: `${queued} bytes waiting to be read, over the limit of ${options.maxQueuedBytes}` }, client.id ?? undefined);
  };
  const onUnsafeSubscribe = (client: Client): void => {
    const refusal: Refusal = { rule: 'unsafeSubscribe', action: 'disconnect', reasonCode: REASON.TOPIC_FILTER_INVALID, reason: "a SUBSCRIBE listing '__proto__' beside other filters (aedes 2.0.0-beta.1 would crash on it)" };
    report(refusal, client.id ?? undefined);
    disconnectFor(client, refusal, () => client.conn.destroy());
  };
  const onUnreleased = (client: Client, bytes: number): void => {
    const refusal: Refusal = { rule: 'qos2Unreleased', action: 'disconnect', reasonCode: REASON.QUOTA_EXCEEDED, reason: `QoS 2 messages never released (no PUBREL) holding ${bytes} bytes, over the limit of ${options.maxQueuedBytes}` };
    report(refusal, client.id ?? undefined);
    disconnectFor(client, refusal, () => client.conn.destroy());
  };
  const guarded = new WeakMap<Client, GuardedClient>();
  const handle = (conn: Duplex, req?: Parameters<Aedes['handle']>[1]): void => {
    const client = broker.handle(conn, req);
    guarded.set(client, guardClient(client, options.maxQueuedBytes, { onSlow, onUnsafeSubscribe, onUnreleased }));
  };
  // A clean session's state ends with its connection (MQTT 3.1.1 §3.1.2.4, MQTT 5 §4.1): aedes keeps the QoS 2
  // messages it stored for their PUBREL under the ClientId for good, where they take memory and make the next
  // session's QoS 2 message with the same packet id look like a duplicate, dropped. They go with the session here.
  // Token mode: notices may be sent once the CONNACK is out; the tokens' timers end with the connection.
  broker.on('clientReady', (client) => tokenSessions?.ready(client));
  broker.on('clientDisconnect', (client) => tokenSessions?.end(client));
  broker.on('clientDisconnect', (client) => {
    const unreleased = guarded.get(client)?.unreleased() ?? [];
    if (!client.clean || unreleased.length === 0) return;
    const store = (broker as unknown as { persistence: SessionStore }).persistence;
    // One aedes did not store (a refused PUBLISH) is not there to delete: that is not an error.
    for (const messageId of unreleased) store.incomingDelPacket(client, { messageId }).catch(() => undefined);
  });

  const stopKicking = options.kickOnRevoke
    ? deps.registry.onRevoke((record: CredentialRecord) => {
      // A credential is bound to one ClientId; only a session that logged in with this very key is dropped.
      const client = clientById(broker, record.ClientId);
      if (!client || sessionKeys.get(client) !== record.DeviceAccessKeyId) return;
      // MQTT 5 is told why; MQTT 3.1.1 loses the connection as on a network cut.
      if (client.version === 5) sendDisconnect(client, REASON.NOT_AUTHORIZED, 'the credential was revoked', options.drainTimeoutMs);
      else cut(client);
    })
    : () => undefined;

  const closeBroker = async (): Promise<void> => {
    stopKicking();
    tokenSessions?.close();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
  };

  const listeners = await startListeners(handle, options.host, options, options.tls, options.maxPacketBytes).catch(async (error: unknown) => {
    await closeBroker();
    throw error;
  });
  const { mqttUrl, wsUrl, mqttsUrl, wssUrl, ports } = listeners;
  return {
    broker,
    mqttUrl,
    wsUrl,
    mqttsUrl,
    wssUrl,
    ports,
    persistence: (broker as unknown as { persistence: unknown }).persistence,
    disconnect(clientId) {
      const client = clientById(broker, clientId);
      // In the map means authenticated and registered; `connected` is only set once the queued messages are sent.
      if (!client || client.closed) return false;
      cut(client);
      return true;
    },
    checkTokens() {
      tokenSessions?.checkAll();
    },
    async close() {
      await closeBroker();
      await listeners.close();
    },
  };
}
