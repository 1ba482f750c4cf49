import { EventEmitter } from 'node:events';
import { format, inspect } from 'node:util';
import mqtt, {
  type IClientOptions,
  type IClientPublishOptions,
  type IClientSubscribeOptions,
  type IPublishPacket,
  type ISubscriptionGrant,
  type MqttClient,
} from 'mqtt';
import { DeviceCredential, type CredentialSource } from '../credential.js';
import { AbortedError, ApsaraMqDeviceError, CONNACK_CODES, ConnectError, ValidationError, toApsaraMqDeviceError } from '../errors.js';
import { signDeviceCredential } from '../signer/mqtt.js';
import { type BackoffOptions, fullJitterDelay } from '../util/backoff.js';
import { type Logger, silentLogger } from '../util/logger.js';

/** How the device reaches the broker. */
export type Transport = 'tcp' | 'tls' | 'ws' | 'wss';

/** The service's port for each transport. */
export const TRANSPORT_PORTS: Readonly<Record<Transport, number>> = Object.freeze({ tcp: 1883, tls: 8883, ws: 80, wss: 443 });

const SCHEMES: Readonly<Record<Transport, string>> = { tcp: 'mqtt', tls: 'mqtts', ws: 'ws', wss: 'wss' };

/**
 * How many times one refusal episode may ask the source for another credential: the ladder has three steps (the
 * store, GetDeviceCredential, RegisterDeviceCredential), each of which may hand out a different key.
 */
export const MAX_REFETCHES = 3;

/** The service's WebSocket path; mqtt.js would default to `/`. */
export const WEBSOCKET_PATH = '/mqtt';

/** Defaults of {@link ConnectDeviceOptions}. */
export const CONNECT_DEFAULTS = Object.freeze({
  transport: 'tcp' as Transport,
  /** Seconds; what every official demo uses. */
  keepalive: 90,
  clean: true,
  connectTimeoutMs: 10_000,
  reconnect: Object.freeze({ minDelayMs: 1_000, maxDelayMs: 60_000 }) as Readonly<BackoffOptions>,
  rejectUnauthorized: true,
  takeover: Object.freeze({ shortSessionMs: 10_000, maxShortSessions: 4 }) as Readonly<TakeoverOptions>,
});

/**
 * How a takeover loop is recognised: two clients with one ClientId kick each other off, so each session is closed
 * by the broker soon after it opened. After `maxShortSessions` such sessions in a row the connector stops with
 * `TakeoverLoop` instead of flapping forever. A session that lasts `shortSessionMs` resets the count (and the
 * reconnect backoff).
 */
export interface TakeoverOptions {
  /** @default 10000 */
  shortSessionMs: number;
  /** @default 4 */
  maxShortSessions: number;
}

/** Options of {@link connectDevice}. */
export interface ConnectDeviceOptions {
  /** The device credential, or a source to ask for it (a provisioner's `credentialSource(clientId)`, or your own). */
  credential: DeviceCredential | CredentialSource;
  /** Explicit broker URL (`mqtt://`, `mqtts://`, `ws://`, `wss://`). Default: `<instanceId>.mqtt.aliyuncs.com` on the transport's port. */
  brokerUrl?: string;
  /** @default 'tcp' (1883); 'tls' 8883, 'ws' 80 and 'wss' 443 at path /mqtt. Ignored when brokerUrl is given. */
  transport?: Transport;
  /** MQTT keepalive in seconds. @default 90 */
  keepalive?: number;
  /** MQTT clean session. Use false (with QoS 1) to get messages sent while offline. @default true */
  clean?: boolean;
  /** Time allowed for each CONNECT to be answered. @default 10000 */
  connectTimeoutMs?: number;
  /** Reconnect after a network loss with exponential backoff and full jitter; `false` to stay down. @default {minDelayMs: 1000, maxDelayMs: 60000} */
  reconnect?: false | Partial<BackoffOptions>;
  /** CA certificate(s) for tls/wss, e.g. a test CA. */
  ca?: string | Buffer | string[] | Buffer[];
  /** Verify the broker's TLS certificate. @default true */
  rejectUnauthorized?: boolean;
  /** Last will message. */
  will?: IClientOptions['will'];
  /** Cancels the first connect. */
  signal?: AbortSignal;
  /** Source of randomness for jitter, [0, 1). @default Math.random */
  random?: () => number;
  /** Where to log (never receives a secret; mqtt.js's own debug lines come here too, at debug level, scrubbed). @default silent */
  logger?: Logger;
  /** Takeover-loop detection; `false` to flap forever. @default {shortSessionMs: 10000, maxShortSessions: 4} */
  takeover?: false | Partial<TakeoverOptions>;
}

/** Events of a {@link DeviceConnection}. */
export interface DeviceConnectionEvents {
  /** CONNACK 0 received (first connect and every reconnect). */
  online: [];
  /** The session was lost; a reconnect follows unless `closed` is emitted. */
  offline: [];
  /** A reconnect is scheduled. */
  reconnecting: [info: { attempt: number; delayMs: number }];
  /** A refused CONNECT led to a new credential from the source. */
  'credential-refreshed': [info: { credential: DeviceCredential }];
  /** The broker refused the credential (CONNACK 4 or 5). */
  'auth-failed': [info: { rc: number }];
  /** Something went wrong; emitted only when someone listens, so an unobserved error never crashes the process. */
  error: [error: ApsaraMqDeviceError];
  /** An application message arrived. */
  message: [topic: string, payload: Buffer, packet: IPublishPacket];
  /** The connection is finished for good: by `end()` (no error) or because it gave up (with the error). */
  closed: [info: { error?: ApsaraMqDeviceError }];
}

interface ResolvedOptions {
  brokerUrl: string;
  keepalive: number;
  clean: boolean;
  connectTimeoutMs: number;
  reconnect: Readonly<BackoffOptions> | false;
  random: () => number;
  logger: Logger;
  tls: { ca?: string | Buffer | string[] | Buffer[]; rejectUnauthorized: boolean };
  will: IClientOptions['will'] | undefined;
  takeover: Readonly<TakeoverOptions> | false;
}

function positiveNumber(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new ValidationError('InvalidOption', `Option ${name} must be a non-negative number, not ${String(value)}`);
  }
  return value;
}

/** The broker URL for an instance and transport, or the explicit one (ws/wss get path /mqtt when none is given). */
export function brokerUrlFor(instanceId: string, transport: Transport = 'tcp', explicit?: string): string {
  if (explicit !== undefined) {
    let url: URL;
    try {
      url = new URL(explicit);
    } catch {
      throw new ValidationError('InvalidOption', `Option brokerUrl ${JSON.stringify(explicit)} is not a URL (expected e.g. mqtt://host:1883)`);
    }
    const scheme = url.protocol.replace(/:$/, '');
    if (!['mqtt', 'mqtts', 'tcp', 'tls', 'ssl', 'ws', 'wss'].includes(scheme)) {
      throw new ValidationError('InvalidOption', `Option brokerUrl has scheme ${scheme}:; use mqtt:, mqtts:, ws: or wss:`);
    }
    if ((scheme === 'ws' || scheme === 'wss') && (url.pathname === '' || url.pathname === '/')) url.pathname = WEBSOCKET_PATH;
    return url.toString();
  }
  if (!(transport in TRANSPORT_PORTS)) {
    throw new ValidationError('InvalidOption', `Option transport must be tcp, tls, ws or wss, not ${JSON.stringify(transport)}`);
  }
  const path = transport === 'ws' || transport === 'wss' ? WEBSOCKET_PATH : '';
  return `${SCHEMES[transport]}://${instanceId}.mqtt.aliyuncs.com:${TRANSPORT_PORTS[transport]}${path}`;
}

function resolveOptions(options: ConnectDeviceOptions, instanceId: string): ResolvedOptions {
  const reconnect =
    options.reconnect === false
      ? false
      : Object.freeze({
          minDelayMs: positiveNumber('reconnect.minDelayMs', options.reconnect?.minDelayMs, CONNECT_DEFAULTS.reconnect.minDelayMs),
          maxDelayMs: positiveNumber('reconnect.maxDelayMs', options.reconnect?.maxDelayMs, CONNECT_DEFAULTS.reconnect.maxDelayMs),
        });
  if (reconnect && reconnect.maxDelayMs < reconnect.minDelayMs) {
    throw new ValidationError('InvalidOption', 'Option reconnect.maxDelayMs must be at least reconnect.minDelayMs');
  }
  return {
    brokerUrl: brokerUrlFor(instanceId, options.transport ?? CONNECT_DEFAULTS.transport, options.brokerUrl),
    keepalive: positiveNumber('keepalive', options.keepalive, CONNECT_DEFAULTS.keepalive),
    clean: options.clean ?? CONNECT_DEFAULTS.clean,
    connectTimeoutMs: positiveNumber('connectTimeoutMs', options.connectTimeoutMs, CONNECT_DEFAULTS.connectTimeoutMs) || CONNECT_DEFAULTS.connectTimeoutMs,
    reconnect,
    random: options.random ?? Math.random,
    logger: options.logger ?? silentLogger,
    tls: { ...(options.ca === undefined ? {} : { ca: options.ca }), rejectUnauthorized: options.rejectUnauthorized ?? CONNECT_DEFAULTS.rejectUnauthorized },
    will: options.will,
    takeover:
      options.takeover === false
        ? false
        : Object.freeze({
            shortSessionMs: positiveNumber('takeover.shortSessionMs', options.takeover?.shortSessionMs, CONNECT_DEFAULTS.takeover.shortSessionMs),
            maxShortSessions: Math.max(1, positiveNumber('takeover.maxShortSessions', options.takeover?.maxShortSessions, CONNECT_DEFAULTS.takeover.maxShortSessions)),
          }),
  };
}

/** TLS verification failures (OpenSSL's codes), which no retry will cure. */
function isCertificateError(error: (Error & { code?: unknown }) | undefined): boolean {
  const code = typeof error?.code === 'string' ? error.code : '';
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS_CERT/.test(code);
}

/** Errors of the transport that mean "the broker could not be reached". */
function describeNetworkError(error: Error & { code?: unknown }): string {
  const code = typeof error.code === 'string' ? `${error.code}: ` : '';
  return `${code}${error.message}`;
}

/**
 * An MQTT session of one device, kept alive: it reconnects after network loss with jittered exponential
 * backoff, and when the broker refuses the credential it asks the source for a fresh one once before giving up.
 * `client` is the underlying mqtt.js client for anything this class does not wrap.
 */
export class DeviceConnection extends EventEmitter<DeviceConnectionEvents> {
  /** The mqtt.js client. */
  readonly client: MqttClient;
  readonly clientId: string;
  #credential: DeviceCredential;
  readonly #source: CredentialSource;
  readonly #options: ResolvedOptions;
  #attempt = 0;
  #refusedRc: number | undefined;
  /** Credentials asked of the source since the last CONNACK 0 (bounded: see MAX_REFETCHES). */
  #refetches = 0;
  #lastNetworkError: Error | undefined;
  #online = false;
  #finished = false;
  #initial: { resolve: () => void; reject: (e: ApsaraMqDeviceError) => void } | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #password: string;
  #onlineSince = 0;
  #shortSessions = 0;
  #stableTimer: NodeJS.Timeout | undefined;

  /** Use {@link connectDevice}. */
  constructor(credential: DeviceCredential, source: CredentialSource, options: ResolvedOptions) {
    super();
    this.#credential = credential;
    this.#source = source;
    this.#options = options;
    this.clientId = credential.clientId;
    const signed = signDeviceCredential(credential);
    this.#password = signed.password;
    const mqttOptions: IClientOptions = {
      protocolVersion: 4,
      clientId: signed.clientId,
      username: signed.username,
      password: signed.password,
      keepalive: options.keepalive,
      clean: options.clean,
      connectTimeout: options.connectTimeoutMs,
      // mqtt.js only uses this as the delay of the next reconnect; we set it per attempt (see #onClose).
      reconnectPeriod: options.reconnect ? Math.max(1, options.reconnect.minDelayMs) : 0,
      manualConnect: true,
      // mqtt.js's debug lines include the CONNECT packet with its password: route them through a scrubber, which
      // also means DEBUG=mqttjs* can no longer print them raw.
      log: (...args: unknown[]) => this.#mqttLog(args),
      ...options.tls,
      ...(options.will ? { will: options.will } : {}),
    };
    this.client = mqtt.connect(options.brokerUrl, mqttOptions);
    // Runs before mqtt.js's own close handler, which reads reconnectPeriod to schedule the next attempt.
    this.client.prependListener('close', () => this.#onClose());
    this.client.on('connect', () => this.#onConnect());
    this.client.on('error', (error) => this.#onMqttError(error));
    this.client.on('message', (topic, payload, packet) => this.emit('message', topic, payload, packet));
  }

  /** What logs and `util.inspect` show: never the password (the mqtt.js client's options hold it). */
  toJSON(): Record<string, unknown> {
    return { clientId: this.clientId, brokerUrl: this.#options.brokerUrl, online: this.#online, credential: this.#credential.toJSON() };
  }

  [inspect.custom](): string {
    return `DeviceConnection ${inspect(this.toJSON())}`;
  }

  /** The credential in use now (it changes when the source hands out a rotated one). */
  get credential(): DeviceCredential {
    return this.#credential;
  }

  /** True while a CONNACK 0 session is up. */
  get online(): boolean {
    return this.#online;
  }

  /** @internal Opens the first session; resolves on CONNACK 0. */
  start(signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(this.#abortError());
        return;
      }
      const onAbort = (): void => this.#fail(this.#abortError());
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#initial = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      this.#log('debug', 'connecting', { brokerUrl: this.#options.brokerUrl });
      this.client.connect();
    });
  }

  /** Publish; resolves when the broker acknowledged it (QoS 1) or it was written (QoS 0). */
  async publish(topic: string, message: string | Buffer, options: IClientPublishOptions = {}): Promise<void> {
    await this.client.publishAsync(topic, message, options);
  }

  /** Subscribe; rejects with `SubscribeRejected` when the broker refuses a topic. */
  async subscribe(topic: string | string[], options: IClientSubscribeOptions = { qos: 1 }): Promise<ISubscriptionGrant[]> {
    const granted = await this.client.subscribeAsync(topic, options);
    const refused = granted.filter((g) => g.qos === 128);
    if (refused.length > 0) {
      throw new ApsaraMqDeviceError('SubscribeRejected', `The broker refused the subscription to ${refused.map((g) => g.topic).join(', ')}`, {
        retryable: false,
        remedy: 'Check the topic: its parent topic must exist on the instance, and a client may not subscribe to another client\'s p2p topic.',
      });
    }
    return granted;
  }

  /** Disconnect cleanly and stop reconnecting. */
  async end(force = false): Promise<void> {
    if (this.#finished) {
      if (!this.client.disconnected) await this.client.endAsync(true);
      return;
    }
    this.#finish();
    this.emit('closed', {});
    await this.client.endAsync(force);
  }

  #onConnect(): void {
    this.#refetches = 0;
    this.#online = true;
    this.#onlineSince = Date.now();
    clearTimeout(this.#stableTimer);
    const stableAfter = this.#options.takeover ? this.#options.takeover.shortSessionMs : 0;
    // Backoff and the takeover count reset once the session proves stable, not on CONNACK: otherwise two clients
    // kicking each other would reconnect at the shortest delay forever.
    this.#stableTimer = setTimeout(() => {
      this.#attempt = 0;
      this.#shortSessions = 0;
    }, stableAfter);
    this.#stableTimer.unref();
    this.#lastNetworkError = undefined;
    this.#log('info', 'online', {});
    const initial = this.#initial;
    this.#initial = undefined;
    initial?.resolve();
    this.emit('online');
  }

  #onMqttError(error: Error & { code?: unknown }): void {
    const code = error.code;
    if (typeof code === 'number' && code >= 1 && code <= 5 && /refused/i.test(error.message)) {
      this.#refusedRc = code;
    } else {
      this.#lastNetworkError = error;
    }
  }

  #onClose(): void {
    if (this.#finished) return;
    const wasOnline = this.#online;
    this.#online = false;
    if (wasOnline) {
      clearTimeout(this.#stableTimer);
      this.#log('warn', 'offline', {});
      this.emit('offline');
      if (this.#isTakeoverLoop()) return;
    }
    const rc = this.#refusedRc;
    this.#refusedRc = undefined;
    if (rc !== undefined) {
      // mqtt.js suppresses its own reconnect after a refused CONNACK; we decide what comes next.
      this.#onRefused(rc).catch((error: unknown) => this.#fail(toApsaraMqDeviceError(error)));
      return;
    }
    if (this.#initial) {
      const cause = this.#lastNetworkError;
      const timedOut = cause?.message === 'connack timeout';
      this.#fail(
        timedOut
          ? new ConnectError('ConnectTimeout', `No CONNACK from ${this.#options.brokerUrl} within ${this.#options.connectTimeoutMs} ms`, { clientId: this.clientId, cause })
          : new ConnectError('BrokerUnreachable', `Could not reach the broker at ${this.#options.brokerUrl}${cause ? ` (${describeNetworkError(cause)})` : ''}`, {
              clientId: this.clientId,
              cause,
              // A certificate that cannot be verified stays so: retrying does not help.
              ...(isCertificateError(cause) ? { retryable: false } : {}),
            }),
      );
      return;
    }
    this.#scheduleReconnect((delayMs) => {
      // mqtt.js's close handler, which runs right after this one, schedules the attempt with this period.
      this.client.options.reconnectPeriod = Math.max(1, delayMs);
    });
  }

  /** Count a session the broker closed soon after it opened; true (and given up) when that makes a loop. */
  #isTakeoverLoop(): boolean {
    const takeover = this.#options.takeover;
    if (!takeover) return false;
    const lasted = Date.now() - this.#onlineSince;
    // A network fault shows as a socket error; a broker that closes a session it just accepted does not.
    const closedByBroker = this.#lastNetworkError === undefined && this.#refusedRc === undefined;
    this.#shortSessions = closedByBroker && lasted < takeover.shortSessionMs ? this.#shortSessions + 1 : 0;
    if (this.#shortSessions < takeover.maxShortSessions) return false;
    this.#fail(
      new ConnectError(
        'TakeoverLoop',
        `The broker closed the session of ${this.clientId} ${this.#shortSessions} times in a row within ${takeover.shortSessionMs} ms of connecting: another client is probably using the same ClientId (or the device breaks a broker rule that gets it disconnected, such as a payload over 64 KB)`,
        { clientId: this.clientId },
      ),
    );
    return true;
  }

  /** Next attempt after a jittered delay; `arm` installs the timer, or we install our own. */
  #scheduleReconnect(arm?: (delayMs: number) => void): void {
    if (!this.#options.reconnect) {
      this.#fail(new ConnectError('BrokerUnreachable', `The session to ${this.#options.brokerUrl} was lost and reconnect is off`, { clientId: this.clientId, retryable: true }));
      return;
    }
    const delayMs = Math.max(1, fullJitterDelay(this.#attempt, this.#options.reconnect, this.#options.random));
    this.#attempt += 1;
    this.#log('info', 'reconnecting', { attempt: this.#attempt, delayMs });
    this.emit('reconnecting', { attempt: this.#attempt, delayMs });
    if (arm) {
      arm(delayMs);
    } else {
      this.#retryTimer = setTimeout(() => this.#reconnectNow(), delayMs);
    }
  }

  #reconnectNow(): void {
    this.#retryTimer = undefined;
    if (this.#finished) return;
    // Keep the stores, so QoS 1 messages queued while offline are sent after the reconnect.
    this.client.reconnect({ incomingStore: this.client.incomingStore, outgoingStore: this.client.outgoingStore });
  }

  async #onRefused(rc: number): Promise<void> {
    const reason = CONNACK_CODES[rc] ?? `return code ${rc}`;
    this.#log('warn', 'connect refused', { rc, reason, deviceAccessKeyId: this.#credential.deviceAccessKeyId });
    if (rc === 2) {
      this.#fail(new ConnectError('IdentifierRejected', `The broker rejected ClientId ${this.clientId} (CONNACK 2)`, { clientId: this.clientId, connackCode: rc }));
      return;
    }
    if (rc === 3 && !this.#initial) {
      this.#scheduleReconnect();
      return;
    }
    if (rc !== 4 && rc !== 5) {
      this.#fail(new ConnectError('ConnackRefused', `The broker refused the CONNECT: ${reason} (CONNACK ${rc})`, { clientId: this.clientId, connackCode: rc, retryable: rc === 3 }));
      return;
    }
    this.emit('auth-failed', { rc });
    const refusal = `The broker refused credential ${this.#credential.deviceAccessKeyId} of ${this.clientId}: ${reason} (CONNACK ${rc})`;
    const rejected = new ConnectError('CredentialRejected', refusal, { clientId: this.clientId, connackCode: rc });
    if (this.#refetches >= MAX_REFETCHES) {
      // Every step of the ladder handed out a credential that was refused too: stop, no loop.
      this.#fail(rejected);
      return;
    }
    this.#refetches += 1;
    let next: unknown;
    try {
      next = await this.#source({ reason: 'rejected', rejected: this.#credential });
    } catch (error) {
      const cause = toApsaraMqDeviceError(error);
      if (cause.retryable && !this.#initial && !this.#finished) {
        // The source is unreachable for now (e.g. the OpenAPI is down): try the whole thing again later.
        this.#refetches -= 1;
        this.#emitError(cause);
        this.#scheduleReconnect();
        return;
      }
      this.#fail(new ConnectError('CredentialRejected', `${refusal}, and asking for a new one failed with ${cause.code}`, { clientId: this.clientId, connackCode: rc, cause }));
      return;
    }
    if (this.#finished) return;
    if (!(next instanceof DeviceCredential)) {
      this.#fail(new ValidationError('InvalidCredential', 'The credential source did not return a DeviceCredential (build one with DeviceCredential.fromWire)'));
      return;
    }
    if (next.clientId !== this.clientId) {
      this.#fail(new ValidationError('InvalidCredential', `The credential source returned a credential for ${next.clientId}, not ${this.clientId}`));
      return;
    }
    if (next.sameKeyAs(this.#credential)) {
      this.#fail(rejected);
      return;
    }
    this.#useCredential(next);
    this.#reconnectNow();
  }

  #useCredential(credential: DeviceCredential): void {
    const signed = signDeviceCredential(credential);
    this.#credential = credential;
    this.#password = signed.password;
    this.client.options.username = signed.username;
    this.client.options.password = signed.password;
    this.#log('info', 'credential refreshed', { deviceAccessKeyId: credential.deviceAccessKeyId });
    this.emit('credential-refreshed', { credential });
  }

  #abortError(): AbortedError {
    return new AbortedError(`Connecting ${this.clientId} was aborted`);
  }

  #emitError(error: ApsaraMqDeviceError): void {
    this.#log('error', error.message, { code: error.code });
    if (this.listenerCount('error') > 0) this.emit('error', error);
  }

  /** Give up: reject the first connect, or report the error and close for good. */
  #fail(error: ApsaraMqDeviceError): void {
    if (this.#finished) return;
    const initial = this.#initial;
    this.#finish();
    this.client.end(true);
    if (initial) {
      initial.reject(error);
    } else {
      this.#emitError(error);
    }
    this.emit('closed', { error });
  }

  #finish(): void {
    this.#finished = true;
    this.#online = false;
    this.#initial = undefined;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#stableTimer);
  }

  /** mqtt.js's debug output, with the password and secret taken out, at debug level. */
  #mqttLog(args: unknown[]): void {
    const logger = this.#options.logger;
    if (logger === silentLogger) return; // formatting every packet costs CPU; skip it when nobody listens
    let text = format(...args);
    // Called from inside mqtt.js's constructor too, before this.client is set: use our own copy of the secrets.
    for (const secret of [this.#password, this.#credential.deviceAccessKeySecret]) {
      if (secret.length > 0) text = text.split(secret).join('****');
    }
    logger.debug(`[mqtt.js] ${this.clientId}: ${text}`);
  }

  #log(level: keyof Logger, message: string, fields: Record<string, unknown>): void {
    this.#options.logger[level](`[apsaramq-device] ${this.clientId}: ${message}`, fields);
  }
}

/**
 * Open an MQTT 3.1.1 session for a device, authenticated in DeviceCredential mode. Resolves on CONNACK 0;
 * rejects with a {@link ConnectError} (`CredentialRejected`, `BrokerUnreachable`, `ConnectTimeout`, …).
 *
 * @example
 * const conn = await connectDevice({ credential: provisioner.credentialSource('GID_demo@@@dev-1'), brokerUrl });
 * await conn.publish('demo/hello', 'hi');
 */
export async function connectDevice(options: ConnectDeviceOptions): Promise<DeviceConnection> {
  if (!options || options.credential === undefined) {
    throw new ValidationError('InvalidOption', 'Option credential is required: a DeviceCredential or a function returning one');
  }
  const source: CredentialSource =
    options.credential instanceof DeviceCredential ? staticSource(options.credential) : options.credential;
  if (typeof source !== 'function') {
    throw new ValidationError('InvalidOption', 'Option credential must be a DeviceCredential or a function returning one');
  }
  const credential = await source({ reason: 'connect', ...(options.signal ? { signal: options.signal } : {}) });
  if (!(credential instanceof DeviceCredential)) {
    throw new ValidationError('InvalidCredential', 'The credential source did not return a DeviceCredential (build one with DeviceCredential.fromWire)');
  }
  const resolved = resolveOptions(options, credential.instanceId);
  const connection = new DeviceConnection(credential, source, resolved);
  await connection.start(options.signal);
  return connection;
}

/** A source that always hands out the same credential (the connector then cannot heal a rotation). */
export function staticSource(credential: DeviceCredential): CredentialSource {
  return async () => credential;
}
