import { Aedes, type AuthenticateError, type Client } from 'aedes';
import { MAX_CLIENT_ID_LENGTH, clientIdProblem } from '../credential.js';
import { hmacPassword, parseUsername } from '../signer/mqtt.js';
import { safeEqual } from './crypto.js';
import { startListeners, type BrokerPorts } from './listeners.js';
import type { ResolvedEmulatorOptions } from './options.js';
import { mayP2pSubscribe, p2pInbox, p2pTarget } from './p2p.js';
import type { CredentialRecord, CredentialRegistry } from './registry.js';
import type { StatsRecorder } from './stats.js';

export { WS_PATH, type BrokerPorts } from './listeners.js';

/** CONNACK return codes of MQTT 3.1.1 the authenticate hook uses (aedes' `AuthErrorCode` is an ambient const enum). */
const IDENTIFIER_REJECTED = 2;
const SERVER_UNAVAILABLE = 3;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;

/** Why a CONNECT is refused: its CONNACK return code and a message that names no secret. */
export class ConnectRefusal extends Error {
  readonly returnCode: number;
  constructor(returnCode: number, message: string) {
    super(message);
    this.name = 'ConnectRefusal';
    this.returnCode = returnCode;
  }
}

/** What the broker authenticates against. */
export interface BrokerAuthConfig {
  readonly instanceId: string;
  readonly accessKeyId: string;
  readonly accessKeySecret: string;
  readonly registry: CredentialRegistry;
}

/** Who an accepted CONNECT authenticated as. */
export interface ConnectIdentity {
  readonly mode: 'DeviceCredential' | 'Signature';
  /** The DeviceAccessKeyId or account AccessKeyId of the username. */
  readonly keyId: string;
}

/**
 * Decide a CONNECT per reference §0 / §5.3, or throw {@link ConnectRefusal}:
 * rc 2 for a ClientId breaking the grammar; rc 4 when username/password cannot be verified (malformed username,
 * unknown mode or key id, wrong password); rc 5 when they verify but are not allowed here (another instance, or
 * a device credential bound to another ClientId).
 *
 * Token mode is not emulated (it needs ApplyToken and the token lifecycle): it always gets rc 4.
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
  /** Close the broker, every client socket and all listeners. Never rejects. */
  close(): Promise<void>;
}

/** What the broker is built with besides the options. */
export interface BrokerDependencies {
  readonly registry: CredentialRegistry;
  readonly stats: StatsRecorder;
  /** A previous broker's {@link BrokerHandle.persistence} to keep its sessions; default a fresh in-memory store. */
  readonly persistence?: unknown;
  /** A previous broker's id, so that stored packets and wills keep naming a live broker. */
  readonly brokerId?: string;
}

/** aedes keeps connected clients by id at runtime but does not declare it. */
function clientById(broker: Aedes, clientId: string): Client | undefined {
  const clients = (broker as unknown as { clients: Record<string, Client | undefined> }).clients;
  return clients[clientId];
}

/** Destroy the client's transport: aedes then closes the session as on a network cut (the will is published). */
function cut(client: Client): void {
  client.conn.destroy();
}

/**
 * Start aedes with the emulator's authentication, P2P rules, payload limit and (with `kickOnRevoke`) session
 * kicking, on a TCP listener and (unless off) WebSocket, TLS and secure WebSocket listeners.
 */
export async function startBroker(options: ResolvedEmulatorOptions, deps: BrokerDependencies): Promise<BrokerHandle> {
  const auth: BrokerAuthConfig = { ...options, registry: deps.registry };
  // CONNACKs decided by our hook are counted when decided, so the count is already right when the client reads its
  // CONNACK (aedes emits connackSent only after the write). CONNACKs aedes decides alone are counted on connackSent.
  const counted = new WeakSet<Client>();
  // The DeviceAccessKeyId each live DeviceCredential session authenticated with, for kickOnRevoke.
  const sessionKeys = new WeakMap<Client, string>();
  const decide = (client: Client, returnCode: number): void => {
    counted.add(client);
    deps.stats.recordConnack(returnCode);
  };
  const broker = await Aedes.createBroker({
    ...(deps.brokerId === undefined ? {} : { id: deps.brokerId }),
    ...(deps.persistence === undefined ? {} : { persistence: deps.persistence }),
    // aedes refuses MQTT 3.1 ClientIds over 23 characters by default; the service allows 64.
    maxClientsIdLength: MAX_CLIENT_ID_LENGTH,
    authenticate(client: Client, username, password, done) {
      try {
        // client.id is the CONNECT ClientId, or aedes' own `aedes_<uuid>` when it was empty: that fails the grammar.
        const identity = checkConnect(auth, client.id, username, password);
        if (identity.mode === 'DeviceCredential') sessionKeys.set(client, identity.keyId);
        decide(client, 0);
        done(null, true);
      } catch (error) {
        // An unexpected failure must not crash the broker's process: refuse as "server unavailable".
        const refusal = error instanceof ConnectRefusal ? error : new ConnectRefusal(SERVER_UNAVAILABLE, 'emulator failure');
        decide(client, refusal.returnCode);
        done(refusal as AuthenticateError, false);
      }
    },
    authorizeSubscribe(client, subscription, done) {
      // null = SUBACK 0x80 for this filter only; the client's other filters are granted.
      done(null, mayP2pSubscribe(subscription.topic, client.id) ? subscription : null);
    },
    authorizeForward(client, packet) {
      // Broad filters (`#`, `Parent/#`) match other clients' P2P topics; only the addressee gets those messages.
      const target = p2pTarget(packet.topic);
      return target === undefined || target === client.id ? packet : null;
    },
  });

  // Keep aedes' own publish rules (no publishing to $SYS) and add the service's.
  const aedesAuthorizePublish = broker.authorizePublish;
  broker.authorizePublish = (client, packet, done) => {
    // aedes closes the connection when this fails, as the service does for an oversized message (reference §5.7).
    if (packet.payload.length > options.maxPayloadBytes) {
      done(new Error(`payload of ${packet.payload.length} bytes is over the limit of ${options.maxPayloadBytes}`));
      return;
    }
    // A retained P2P message would be re-sent to its addressee on every connect; the service has no such thing.
    if (p2pTarget(packet.topic) !== undefined) packet.retain = false;
    aedesAuthorizePublish.call(broker, client, packet, done);
  };

  broker.on('connackSent', (packet, client) => {
    if (!counted.has(client)) deps.stats.recordConnack(packet.returnCode ?? 0);
  });
  // 'client' comes after authentication and before the CONNACK is written, so the P2P subscription is in place
  // before the client can know it is connected. Persistent sessions keep it (with their queued P2P messages).
  // aedes does not downgrade to a wildcard subscription's QoS, so P2P messages arrive at the QoS they were sent
  // with; and it delivers a message once per client even when the client also subscribed to its own P2P topic.
  broker.on('client', (client) => {
    client.subscribe({ topic: p2pInbox(client.id), qos: 2 }, () => undefined);
  });

  const stopKicking = options.kickOnRevoke
    ? deps.registry.onRevoke((record: CredentialRecord) => {
      // A credential is bound to one ClientId; only a session that logged in with this very key is dropped.
      const client = clientById(broker, record.ClientId);
      if (client && sessionKeys.get(client) === record.DeviceAccessKeyId) cut(client);
    })
    : () => undefined;

  const closeBroker = async (): Promise<void> => {
    stopKicking();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
  };

  const listeners = await startListeners(broker, options.host, options, options.tls).catch(async (error: unknown) => {
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
    async close() {
      await closeBroker();
      await listeners.close();
    },
  };
}
