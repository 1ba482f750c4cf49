/**
 * The connector's door: {@link connectDevice} checks every option, asks the credential (or token) source for the
 * first login and opens a {@link DeviceConnection}; the names a device needs are re-exported from here.
 */
import { channel } from 'node:diagnostics_channel';
import { type CredentialSource, DeviceCredential, type TokenRequest, type TokenSource } from '../credential.js';
import { ValidationError, toApsaraMqDeviceError } from '../errors.js';
import type { TokenGrant } from '../signer/mqtt.js';
import { raceAbort } from '../util/abort.js';
import type { ConnectionMode } from './connection-types.js';
import { DeviceConnection, START } from './connection.js';
import { CredentialLogin, type Login, TokenLogin, signable } from './login.js';
import { type ConnectDeviceOptions, type ResolvedConnectOptions, type TokenConnectOptions, brokerUrlFor, checkCredentialOption, resolveConnectOptions } from './options.js';
import { checkTokenAnswer } from './token-rules.js';

export { CONNECT_DEFAULTS, TRANSPORT_PORTS, WEBSOCKET_PATH, brokerUrlFor, type ConnectDeviceOptions, type ConnectGate, type TokenConnectOptions, type Transport } from './options.js';
export { TOKEN_DEFAULTS, type TokenOptions } from './token-rules.js';
export type { TokenRequest, TokenSource } from '../credential.js';
export type { TakeoverOptions } from './takeover.js';
export type { ConnectionState } from './state.js';
export type {
  ConnectionMode,
  DeviceConnectionEvents,
  OutboxDropReason,
  OutboxReport,
  PublishAccepted,
  PublishOptions,
  PublishProperties,
  Publishing,
  SubscribeOptions,
} from './connection-types.js';
export type { ConnectionOutboxStats } from './delivery.js';
export type { DurableOutboxStats, EnqueueOptions } from './durable.js';
export { enqueueDurable } from './enqueue.js';
export { DeviceConnection } from './connection.js';

/**
 * Every {@link DeviceConnection} made in this process is published on this diagnostics channel as `{ connection,
 * brokerUrl }` before its first CONNECT, when someone subscribes: the testing entry ends, at teardown, the devices
 * the code under test left connected to its emulator. A channel is process-wide, so it also reaches a copy of this
 * module loaded a second time (the CommonJS build beside the ES one).
 */
export const CONNECTION_CHANNEL = 'apsaramq-device:connection';
const connectionChannel = channel(CONNECTION_CHANNEL);

/** Ask a credential source, with the signal; anything thrown becomes an ApsaraMqDeviceError. */
async function askSource(source: CredentialSource, request: Parameters<CredentialSource>[0]): Promise<DeviceCredential> {
  let credential: unknown;
  try {
    credential = await raceAbort(Promise.resolve().then(() => source(request)), 'Fetching the device credential', request.signal);
  } catch (error) {
    throw toApsaraMqDeviceError(error);
  }
  if (!(credential instanceof DeviceCredential)) {
    throw new ValidationError('InvalidCredential', 'The credential source did not return a DeviceCredential (build one with DeviceCredential.fromWire)');
  }
  if (!signable(credential)) throw new ValidationError('InvalidCredential', `The DeviceAccessKeyId of ${credential.clientId} contains "|", which the MQTT username cannot carry`);
  return credential;
}

/** Ask a token source for the first tokens, with the signal; anything thrown becomes an ApsaraMqDeviceError. */
async function askTokenSource(source: TokenSource, request: TokenRequest): Promise<readonly TokenGrant[]> {
  let answer: unknown;
  try {
    answer = await raceAbort(Promise.resolve().then(() => source(request)), 'Fetching the tokens', request.signal);
  } catch (error) {
    throw toApsaraMqDeviceError(error);
  }
  const tokens = checkTokenAnswer(answer);
  if (tokens.length === 0) throw new ValidationError('InvalidToken', 'The token source returned no token');
  return tokens;
}

/**
 * Open an MQTT session for a device (MQTT 3.1.1 by default, 5 with `protocolVersion: 5`), authenticated in
 * DeviceCredential mode, or in Token mode with the `token` option ({@link TokenConnectOptions}). Every option is
 * checked before any I/O. Resolves on CONNACK 0; rejects with a {@link ConnectError} (`CredentialRejected`,
 * `TokenRejected`, `BrokerUnreachable`, `ConnectTimeout`, `ProtocolError`, …), an `AbortedError`, or a
 * `ValidationError`.
 *
 * @example
 * const conn = await connectDevice({ credential: provisioner.credentialSource('GID_demo@@@dev-1'), brokerUrl });
 * await conn.publish('demo/hello', 'hi', { qos: 1 });
 */
export async function connectDevice(options: TokenConnectOptions): Promise<DeviceConnection<'Token'>>;
// The DeviceCredential signature comes last: `Parameters<typeof connectDevice>` reads it, as it did before Token mode.
export async function connectDevice(options: ConnectDeviceOptions): Promise<DeviceConnection>;
export async function connectDevice(options: ConnectDeviceOptions | TokenConnectOptions): Promise<DeviceConnection<ConnectionMode>> {
  return openConnection(options as ConnectDeviceOptions);
}

/** What a caller of {@link openConnection} (a gateway) adds to connectDevice's options. */
export interface OpenExtras {
  /**
   * Handed the connection as soon as it exists, before its first CONNECT (and its gate): whoever holds it can stop it
   * with `end()` instead of an AbortSignal (a gateway holds thousands of devices, and an AbortSignal with a listener
   * costs about a kilobyte each).
   */
  readonly started?: (connection: DeviceConnection) => void;
  /** The same options already resolved (they hold no credential): one object for many connections. */
  readonly shared?: ResolvedConnectOptions;
  /** Stops the first ask of the credential (or token) source, before there is a connection to end (default: `signal`). */
  readonly asking?: AbortSignal;
}

/** @internal {@link connectDevice}, with a gateway's {@link OpenExtras}. */
export async function openConnection(options: TokenConnectOptions, extras?: OpenExtras): Promise<DeviceConnection<'Token'>>;
export async function openConnection(options: ConnectDeviceOptions, extras?: OpenExtras): Promise<DeviceConnection>;
export async function openConnection(options: ConnectDeviceOptions | TokenConnectOptions, extras: OpenExtras = {}): Promise<DeviceConnection<ConnectionMode>> {
  const { started, shared, asking } = extras;
  const resolved = shared ?? resolveConnectOptions(options);
  const askSignal = asking ?? resolved.signal;
  const signal = askSignal ? { signal: askSignal } : {};
  let login: Login;
  if (resolved.token) {
    const { clientId, ...token } = resolved.token;
    const tokens = await askTokenSource(token.source, { reason: 'connect', types: [], ...signal });
    login = new TokenLogin(clientId, token, tokens);
  } else {
    const given = (options as ConnectDeviceOptions).credential;
    // Options resolved with another connection's credential checked that one only.
    if (shared) checkCredentialOption(given);
    const source: CredentialSource = given instanceof DeviceCredential ? staticSource(given) : given;
    login = new CredentialLogin(await askSource(source, { reason: 'connect', ...signal }), source);
  }
  const url = resolved.explicitUrl ?? brokerUrlFor(login.instanceId, resolved.transport);
  // The durable outbox's code only for a connection that has one: a device without it loads nothing more.
  const durable = resolved.durable ? await import('./durable.js') : undefined;
  const connection = new DeviceConnection<ConnectionMode>(login, resolved, url, durable);
  if (connectionChannel.hasSubscribers) connectionChannel.publish({ connection, brokerUrl: url });
  // Handed over before its first CONNECT: ended from then on, it never reaches its gate (a gate finds no slot of a
  // connection ended meanwhile, e.g. a gateway's device removed and added again).
  started?.(connection as DeviceConnection);
  await connection[START]();
  return connection;
}

/** A source that always hands out the same credential (the connector then cannot heal a rotation). */
export function staticSource(credential: DeviceCredential): CredentialSource {
  return async () => credential;
}
