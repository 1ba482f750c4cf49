/**
 * Who may connect (reference §0, §5.3, §5.4): the CONNECT checks of every authentication mode, and the aedes hooks
 * that apply them (preConnect decides, authenticate only reports the decision), count the CONNACKs, and remember
 * which key each session logged in with (for `kickOnRevoke`).
 */
import type { Aedes, AedesOptions, AuthenticateError, Client } from 'aedes';
import { clientIdProblem } from '../credential.js';
import { hmacPassword, parseUsername } from '../signer/mqtt.js';
import { clientById } from './aedes-adapter.js';
import type { BrokerTokenMode } from './broker-token-mode.js';
import { sendDisconnect, writeRefusal, type BrokerContext } from './broker-wire.js';
import { safeEqual } from './crypto.js';
import { REASON, checkKeepAlive, checkWill } from './mqtt-rules.js';
import type { CredentialRecord, CredentialRegistry } from './registry.js';
import type { TokenRecord, TokenRegistry } from './token-registry.js';
import { describeTokenCode, parseTokenPassword, tokenConnackCode } from './token-rules.js';

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
  /** The DeviceAccessKeyId each live DeviceCredential session authenticated with, for kickOnRevoke. */
  readonly #sessionKeys = new WeakMap<Client, string>();

  constructor(context: BrokerContext, auth: BrokerAuthConfig, tokenMode: BrokerTokenMode) {
    this.#context = context;
    this.#auth = auth;
    this.#tokenMode = tokenMode;
  }

  /** The hooks aedes is created with. */
  hooks(): BrokerHooks {
    return {
      preConnect: (client, packet, done) => this.#preConnect(client, packet, done),
      authenticate: (client, _username, _password, done) => this.#authenticate(client, done),
    };
  }

  /** Count the CONNACKs aedes decided alone; with `kickOnRevoke`, drop sessions of revoked credentials. Returns the undo. */
  install(broker: Aedes, registry: CredentialRegistry): () => void {
    broker.on('connackSent', (packet, client) => {
      if (!this.#counted.has(client)) this.#context.stats.recordConnack(packet.returnCode ?? packet.reasonCode ?? 0);
    });
    if (!this.#context.options.kickOnRevoke) return () => undefined;
    return registry.onRevoke((record: CredentialRecord) => {
      // A credential is bound to one ClientId; only a session that logged in with this very key is dropped.
      const client = clientById(broker, record.ClientId);
      if (!client || this.#sessionKeys.get(client) !== record.DeviceAccessKeyId) return;
      // MQTT 5 is told why; MQTT 3.1.1 loses the connection as on a network cut.
      if (client.version === 5) sendDisconnect(client, REASON.NOT_AUTHORIZED, 'the credential was revoked', this.#context.options.drainTimeoutMs, undefined, this.#context.maximumPacketSize.get(client));
      else client.conn.destroy();
    });
  }

  #decide(client: Client, code: number): void {
    this.#counted.add(client);
    this.#context.stats.recordConnack(code);
  }

  #preConnect(client: Client, packet: Parameters<BrokerHooks['preConnect']>[1], done: Parameters<BrokerHooks['preConnect']>[2]): void {
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
      done(null, true);
      return;
    }
    let refusal: ConnectRefusal;
    try {
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
        if (version !== 5) packet.keepalive = keepAlive.seconds;
      }
      this.#identities.set(client, identity);
      const maximumPacketSize = packet.properties?.maximumPacketSize;
      if (version === 5 && maximumPacketSize !== undefined) this.#context.maximumPacketSize.set(client, maximumPacketSize);
      done(null, true);
      return;
    } catch (error) {
      // An unexpected failure must not crash the broker's process: refuse as "server unavailable".
      refusal = error instanceof ConnectRefusal ? error : new ConnectRefusal(SERVER_UNAVAILABLE, 'emulator failure');
    }
    this.#decide(client, version === 5 ? refusal.reasonCode : refusal.returnCode);
    writeRefusal(client.conn, version, refusal, options.drainTimeoutMs, () => done(refusal, false), packet.properties?.maximumPacketSize);
  }

  #authenticate(client: Client, done: Parameters<BrokerHooks['authenticate']>[3]): void {
    // preConnect has decided already; only an accepted CONNECT gets here.
    const identity = this.#identities.get(client);
    if (!identity) {
      this.#decide(client, client.version === 5 ? V5_REASON[SERVER_UNAVAILABLE] ?? 0x88 : SERVER_UNAVAILABLE);
      done(new ConnectRefusal(SERVER_UNAVAILABLE, 'emulator failure') as AuthenticateError, false);
      return;
    }
    if (identity.mode === 'DeviceCredential') this.#sessionKeys.set(client, identity.keyId);
    if (identity.mode === 'Token' && identity.tokens) this.#tokenMode.admit(client, identity.tokens);
    this.#decide(client, 0);
    done(null, true);
  }
}
