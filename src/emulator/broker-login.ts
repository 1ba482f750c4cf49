/**
 * Who may connect (reference §0, §5.3, §5.4): the CONNECT checks of every authentication mode, and the aedes hooks
 * that apply them (preConnect decides, authenticate only reports the decision), count the CONNACKs, and follow each
 * connection from its CONNECT on (broker-connections.ts: what `kickOnRevoke` and `disconnect` drop).
 */
import type { Aedes, AedesOptions, AuthenticateError, Client } from 'aedes';
import { clientIdProblem, groupIdOf } from '../credential.js';
import { hmacPassword, parseUsername } from '../signer/mqtt.js';
import { setServerKeepAlive } from './aedes-adapter.js';
import { BrokerConnections } from './broker-connections.js';
import type { BrokerTokenMode } from './broker-token-mode.js';
import { writeRefusal, type BrokerContext } from './broker-wire.js';
import { safeEqual } from './crypto.js';
import type { GroupDirectory } from './groups.js';
import { checkKeepAlive, checkWill, type RuleName } from './mqtt-rules.js';
import type { CredentialRecord, CredentialRegistry } from './registry.js';
import type { TokenRecord, TokenRegistry } from './token-registry.js';
import { describeTokenCode, parseTokenPassword, tokenConnackCode } from './token-rules.js';

/** CONNACK return codes of MQTT 3.1.1 the authenticate hook uses (aedes' `AuthErrorCode` is an ambient const enum). */
const UNACCEPTABLE_PROTOCOL_VERSION = 1;
const IDENTIFIER_REJECTED = 2;
const SERVER_UNAVAILABLE = 3;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;

/** The MQTT 5 CONNACK reason code of each MQTT 3.1.1 refusal (MQTT 5.0 §3.2.2.2; aedes maps them the same way). */
const V5_REASON: Readonly<Record<number, number>> = Object.freeze({
  [UNACCEPTABLE_PROTOCOL_VERSION]: 0x84,
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
  /** The MQTT rule (and its option) that refused, when one did: the refusal is then counted and logged under it. */
  readonly rule: RuleName | undefined;
  constructor(returnCode: number, message: string, reasonCode: number = V5_REASON[returnCode] ?? 0x80, rule?: RuleName) {
    super(message);
    this.name = 'ConnectRefusal';
    this.returnCode = returnCode;
    this.reasonCode = reasonCode;
    this.rule = rule;
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
  /** The GroupIds that exist; without it any GroupId is accepted. */
  readonly groups?: GroupDirectory | undefined;
  /** The CONNACK of a ClientId whose GroupId does not exist (default `identifier-rejected`: 2 / 0x85). */
  readonly unknownGroupRefusal?: 'identifier-rejected' | 'not-authorized';
  /** Credentials that stopped authenticating, by DeviceAccessKeyId (for `revokedCredentialRefusal`). */
  readonly revoked?: { get(deviceAccessKeyId: string): CredentialRecord | undefined } | undefined;
  /** The CONNACK of a revoked key whose password verifies (default `bad-username-or-password`: 4 / 0x86). */
  readonly revokedCredentialRefusal?: 'bad-username-or-password' | 'not-authorized';
  /**
   * Clustered: resolves once the registries hold every change made anywhere in the cluster so far, so that a
   * credential registered through another process's OpenAPI logs in, and one revoked there does not.
   */
  readonly sync?: () => Promise<void>;
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
 * Token mode: see {@link checkTokenConnect}. Once the login verifies, the ClientId's GroupId must exist
 * ({@link BrokerAuthConfig.unknownGroupRefusal}); a revoked key is {@link BrokerAuthConfig.revokedCredentialRefusal}.
 */
export function checkConnect(config: BrokerAuthConfig, clientId: string, username: string | undefined, password: Buffer | undefined): ConnectIdentity {
  if (clientIdProblem(clientId)) throw new ConnectRefusal(IDENTIFIER_REJECTED, 'identifier rejected');
  const identity = checkLogin(config, clientId, username, password);
  if (config.groups && !config.groups.hasClientId(clientId)) {
    const code = config.unknownGroupRefusal === 'not-authorized' ? NOT_AUTHORIZED : IDENTIFIER_REJECTED;
    throw new ConnectRefusal(code, `GroupId ${groupIdOf(clientId)} was not created on the instance (the service refuses a ClientId of a GroupId it does not have)`, undefined, 'groupId');
  }
  return identity;
}

/** The login of a CONNECT with a well-formed ClientId, mode by mode. */
function checkLogin(config: BrokerAuthConfig, clientId: string, username: string | undefined, password: Buffer | undefined): ConnectIdentity {
  const parsed = parseUsername(username);
  if (!parsed) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'username is not <Mode>|<KeyId>|<InstanceId>');

  let boundClientId: string;
  let boundInstanceId: string;
  let secret: string;
  if (parsed.mode === 'DeviceCredential') {
    const record = config.registry.findByKeyId(parsed.keyId);
    if (!record) throw revokedOrUnknown(config, parsed, clientId, password);
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

/**
 * A DeviceAccessKeyId the registry does not hold: rc 4, unless it was revoked, its password verifies against it for
 * its own ClientId and instance, and `revokedCredentialRefusal` is `not-authorized` (then rc 5: the login is right,
 * the credential is no longer allowed).
 */
function revokedOrUnknown(config: BrokerAuthConfig, parsed: { keyId: string; instanceId: string }, clientId: string, password: Buffer | undefined): ConnectRefusal {
  const unknown = new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'unknown or revoked DeviceAccessKeyId');
  if (config.revokedCredentialRefusal !== 'not-authorized') return unknown;
  const revoked = config.revoked?.get(parsed.keyId);
  const verifies = revoked !== undefined && revoked.ClientId === clientId && revoked.InstanceId === parsed.instanceId && safeEqual(password, hmacPassword(revoked.DeviceAccessKeySecret, clientId));
  return verifies ? new ConnectRefusal(NOT_AUTHORIZED, 'the credential was revoked (Refresh, UnRegister or a newer Register)', undefined, 'revokedCredential') : unknown;
}

/** How many revoked credentials are remembered to tell them from keys that never existed (the oldest go first). */
export const REVOKED_KEYS_REMEMBERED = 10_000;

const revokedByRegistry = new WeakMap<CredentialRegistry, Map<string, CredentialRecord>>();

/**
 * The credentials of a registry that stopped authenticating, by DeviceAccessKeyId: the last
 * {@link REVOKED_KEYS_REMEMBERED}. One memory per registry, so that a restarted broker keeps it.
 */
export function revokedKeysOf(registry: CredentialRegistry): Map<string, CredentialRecord> {
  let revoked = revokedByRegistry.get(registry);
  if (!revoked) {
    const memory = new Map<string, CredentialRecord>();
    registry.onRevoke((record) => {
      memory.set(record.DeviceAccessKeyId, record);
      if (memory.size > REVOKED_KEYS_REMEMBERED) memory.delete(memory.keys().next().value as string);
    });
    revokedByRegistry.set(registry, memory);
    revoked = memory;
  }
  return revoked;
}

type BrokerHooks = Required<Pick<AedesOptions, 'preConnect' | 'authenticate'>>;

/**
 * The login hooks of one broker. CONNACKs decided by these hooks are counted when decided, so the count is already
 * right when the client reads its CONNACK (aedes emits `connackSent` only after the write); CONNACKs aedes decides
 * alone are counted on `connackSent`.
 */
export class BrokerLogin {
  readonly #context: BrokerContext;
  readonly #auth: BrokerAuthConfig;
  readonly #tokenMode: BrokerTokenMode;
  readonly #counted = new WeakSet<Client>();
  /** Who each CONNECT authenticated as, from preConnect (where it is decided) to authenticate (where aedes asks). */
  readonly #identities = new WeakMap<Client, ConnectIdentity>();
  /** Every connection from its CONNECT on, by ClientId and (with `kickOnRevoke`) by key: what drops them. */
  readonly #connections: BrokerConnections;

  constructor(context: BrokerContext, auth: BrokerAuthConfig, tokenMode: BrokerTokenMode) {
    this.#context = context;
    this.#auth = auth.revokedCredentialRefusal === 'not-authorized' ? { ...auth, revoked: revokedKeysOf(auth.registry) } : auth;
    this.#tokenMode = tokenMode;
    this.#connections = new BrokerConnections(context);
  }

  /** The hooks aedes is created with. */
  hooks(): BrokerHooks {
    return {
      preConnect: (client, packet, done) => this.#preConnect(client, packet, done),
      authenticate: (client, _username, _password, done) => this.#authenticate(client, done),
    };
  }

  /**
   * Count the CONNACKs aedes decided alone; with `kickOnRevoke`, drop the connections of revoked credentials: every
   * connection that logged in with the key, the one registered under its ClientId or not. Returns the undo.
   */
  install(broker: Aedes, registry: CredentialRegistry): () => void {
    broker.on('connackSent', (packet, client) => {
      if (!this.#counted.has(client)) this.#context.stats.recordConnack(packet.returnCode ?? packet.reasonCode ?? 0);
      this.#connections.answered(client);
    });
    if (!this.#context.options.kickOnRevoke) return () => undefined;
    // A credential is bound to one ClientId; only connections that logged in with this very key are dropped.
    return registry.onRevoke((record: CredentialRecord) => this.#connections.revoked(record.DeviceAccessKeyId));
  }

  /**
   * Cut every connection of `clientId` as a network failure would, registered or not, and any CONNECT of it on its
   * way (BrokerConnections `cut`): none of them comes up. True when one was connected or on its way.
   */
  disconnect(clientId: string): boolean {
    return this.#connections.cut(clientId);
  }

  /** A CONNACK decided here: counted now; a refusal's connection is on its way out, not to be dropped any more. */
  #decide(client: Client, code: number): void {
    if (code !== 0) this.#connections.refused(client);
    this.#counted.add(client);
    this.#context.stats.recordConnack(code);
  }

  #preConnect(client: Client, packet: Parameters<BrokerHooks['preConnect']>[1], done: Parameters<BrokerHooks['preConnect']>[2]): void {
    // Followed from here: clustered, the login waits for the cluster's credentials, and `disconnect` must find it then.
    this.#connections.connecting(client, packet.clientId);
    const sync = this.#auth.sync;
    if (!sync) {
      this.#decideConnect(client, packet, done);
      return;
    }
    sync().then(
      () => this.#decideConnect(client, packet, done),
      () => {
        // The cluster's state cannot be read (its Redis is gone): "server unavailable", as the service's own failure.
        const version = packet.protocolVersion === 5 ? 5 : packet.protocolVersion === 3 ? 3 : 4;
        const refusal = new ConnectRefusal(SERVER_UNAVAILABLE, 'emulator failure: the cluster\'s state cannot be read');
        this.#decide(client, version === 5 ? refusal.reasonCode : refusal.returnCode);
        writeRefusal(client.conn, version, refusal, this.#context.options.drainTimeoutMs, () => done(refusal, false), packet.properties?.maximumPacketSize);
      },
    );
  }

  #decideConnect(client: Client, packet: Parameters<BrokerHooks['preConnect']>[1], done: Parameters<BrokerHooks['preConnect']>[2]): void {
    const { options, report } = this.#context;
    const version = packet.protocolVersion ?? 4;
    // A protocol version aedes does not speak gets its own CONNACK 1.
    if (version !== 3 && version !== 4 && version !== 5) {
      this.#connections.refused(client);
      done(null, true);
      return;
    }
    let refusal: ConnectRefusal;
    try {
      if (version === 3 && options.mqtt31 === 'refuse') {
        throw new ConnectRefusal(UNACCEPTABLE_PROTOCOL_VERSION, 'an MQTT 3.1 CONNECT (the service speaks MQTT 3.1.1 and 5)', undefined, 'mqtt31');
      }
      const identity = checkConnect(this.#auth, packet.clientId, packet.username, packet.password);
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
        // MQTT 5 is told in the CONNACK (Server Keep Alive); MQTT 3.1.1 has no way to be told.
        if (version === 5) setServerKeepAlive(client, keepAlive.seconds);
        else packet.keepalive = keepAlive.seconds;
      }
      this.#identities.set(client, identity);
      // Remembered from the decision on: aedes authenticates a turn of the event loop later (`setImmediate`), and a
      // revocation in between must find the connection too.
      if (identity.mode === 'DeviceCredential' && options.kickOnRevoke) this.#connections.loggedIn(client, identity.keyId);
      const maximumPacketSize = packet.properties?.maximumPacketSize;
      if (version === 5 && maximumPacketSize !== undefined) this.#context.maximumPacketSize.set(client, maximumPacketSize);
      done(null, true);
      return;
    } catch (error) {
      // An unexpected failure must not crash the broker's process: refuse as "server unavailable".
      refusal = error instanceof ConnectRefusal ? error : new ConnectRefusal(SERVER_UNAVAILABLE, 'emulator failure');
    }
    if (refusal.rule) report({ rule: refusal.rule, action: 'disconnect', reasonCode: refusal.reasonCode, reason: refusal.message }, packet.clientId);
    this.#decide(client, version === 5 ? refusal.reasonCode : refusal.returnCode);
    writeRefusal(client.conn, version, refusal, options.drainTimeoutMs, () => done(refusal, false), packet.properties?.maximumPacketSize);
  }

  #authenticate(client: Client, done: Parameters<BrokerHooks['authenticate']>[3]): void {
    // Its socket closed (a network cut, `disconnect`) since the login was decided: aedes stops at this answer
    // whatever it is, so no CONNACK is counted for it, and no Token-mode session is admitted.
    if (client.closed || client.conn.destroyed) {
      done(null, false);
      return;
    }
    // preConnect has decided already; only an accepted CONNECT gets here.
    const identity = this.#identities.get(client);
    if (!identity) {
      this.#decide(client, client.version === 5 ? V5_REASON[SERVER_UNAVAILABLE] ?? 0x88 : SERVER_UNAVAILABLE);
      done(new ConnectRefusal(SERVER_UNAVAILABLE, 'emulator failure') as AuthenticateError, false);
      return;
    }
    if (identity.mode === 'Token' && identity.tokens) this.#tokenMode.admit(client, identity.tokens);
    this.#decide(client, 0);
    done(null, true);
  }
}
