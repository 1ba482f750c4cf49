/**
 * apsaramq-device/testing: the emulator in a test suite in one call. Starts an emulator on free ports, registers and
 * connects devices, waits on what the broker sees (messages, clients coming and going), injects faults, and closes
 * everything it opened when the test is over. Free of any test framework: the adapters
 * `apsaramq-device/testing/vitest`, `…/jest` and `…/node-test` register its start and stop as hooks.
 *
 * Needs the emulator's optional peer dependencies, `aedes` and `ws`.
 *
 * @example
 * const emu = await startTestEmulator();
 * const device = await emu.connectDevice('GID_test@@@dev-1');
 * const seen = emu.waitForMessage('test/#');
 * await device.publish('test/hello', 'hi');
 * expect((await seen).payload.toString()).toBe('hi');
 * await emu.stop();
 */
import { randomUUID } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { CONNECTION_CHANNEL, type ConnectionMode, connectDevice, type ConnectDeviceOptions, type DeviceConnection } from '../connector/connect.js';
import { DeviceCredential, assertClientId } from '../credential.js';
import { ApiError, ApsaraMqDeviceError, type KnownApiErrorCode, LOCAL_ERROR_CATALOG, SystemError, ValidationError } from '../errors.js';
import { OnlineClients } from '../emulator/online-clients.js';
import { startEmulator, type EmulatedAction, type Emulator, type EmulatorOptions, type EmulatorStats, type TlsOptions } from '../emulator/index.js';
import { signDeviceCredential, type MqttCredentials } from '../signer/mqtt.js';
import { rpcTimestamp, signRpc } from '../signer/openapi.js';
import type { Logger } from '../util/logger.js';
import { topicMatches } from './topic.js';

export { startEmulatorProcess, type EmulatorProcess, type EmulatorProcessOptions } from './process.js';

/** Codes of {@link TestingError}. */
export type TestingErrorCode = 'WaitTimeout' | 'UnexpectedConnack';

/** What a testing helper throws when the awaited thing did not happen: the test failed, not the emulator. */
export class TestingError extends ApsaraMqDeviceError {
  declare readonly code: TestingErrorCode;
  constructor(code: TestingErrorCode, message: string) {
    const { retryable, remedy } = LOCAL_ERROR_CATALOG[code];
    super(code, `${message}. ${remedy}`, { retryable, remedy });
    this.name = 'TestingError';
  }
}

/** Options of {@link startTestEmulator}: every emulator option, and TLS with the package's test certificates. */
export interface TestEmulatorOptions extends Omit<EmulatorOptions, 'tls' | 'logger'> {
  /**
   * `true`: also listen with MQTT over TLS and secure WebSocket, with the test certificate for localhost and
   * 127.0.0.1 shipped in the package (`fixtures/tls/`; its CA is {@link TestEmulator.ca}). Or your own `{ cert, key }`.
   * @default false
   */
  tls?: boolean | TlsOptions;
  /** How long the `waitFor…` helpers wait by default, in ms. @default 5000 */
  timeoutMs?: number;
  /**
   * Where the emulator says which MQTT rule refused what (`MQTT rule parentTopic (option parentTopics, …)`), and the
   * fixture says which clients were still connected when it stopped. @default {@link testLogger}: those lines on
   * `console.warn`, so that a device refused for a parent topic the test did not list in `parentTopics` is explained
   * in the test's output
   */
  logger?: Logger;
}

/**
 * The default logger of {@link startTestEmulator}: warnings and errors on the console (which every test runner
 * shows with the test), prefixed `[apsaramq-device emulator]`; nothing else.
 */
export const testLogger: Logger = Object.freeze({
  debug: () => {},
  info: () => {},
  warn: (message: string) => console.warn(`[apsaramq-device emulator] ${message}`),
  error: (message: string) => console.error(`[apsaramq-device emulator] ${message}`),
});

/** A device registered with the emulator's OpenAPI: its credential and its MQTT login. */
export interface RegisteredDevice {
  readonly clientId: string;
  readonly credential: DeviceCredential;
  /** `clientId`, `username` and `password` of a DeviceCredential-mode CONNECT. */
  readonly login: MqttCredentials;
}

/** A PUBLISH the broker routed. */
export interface ObservedMessage {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: number;
  /** The ClientId of the publisher. */
  readonly clientId: string;
}

/** Options of the `waitFor…` helpers. */
export interface WaitOptions {
  /** @default the emulator's `timeoutMs` (5000) */
  timeoutMs?: number;
}

/** An emulator for tests, with helpers, that closes whatever it opened in {@link TestEmulator.stop}. */
export interface TestEmulator extends Pick<Emulator, 'mqttUrl' | 'wsUrl' | 'mqttsUrl' | 'wssUrl' | 'apiEndpoint' | 'instanceId' | 'accessKeyId' | 'accessKeySecret'> {
  /** The emulator itself (every control, `events`, `broker`). */
  readonly emulator: Emulator;
  /** The PEM of the test CA when the emulator listens with TLS on the package's test certificate. */
  readonly ca: string | undefined;
  /**
   * The environment the code under test reads the account keys from: `ALIBABA_CLOUD_ACCESS_KEY_ID`,
   * `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, plus `APSARAMQ_INSTANCE_ID`, `APSARAMQ_API_ENDPOINT` and `APSARAMQ_MQTT_URL`.
   */
  readonly env: Readonly<Record<string, string>>;
  /** `{ endpoint, instanceId, accessKeyId, accessKeySecret }`, ready to spread into a Provisioner's options. */
  readonly provisionerOptions: Readonly<{ endpoint: string; instanceId: string; accessKeyId: string; accessKeySecret: string }>;
  /** RegisterDeviceCredential through the emulator's real OpenAPI (signature method V2 over HTTP). */
  registerDevice(clientId: string): Promise<RegisteredDevice>;
  /**
   * A device on the library's connector, registered first; closed by {@link TestEmulator.stop}. Devices the code under
   * test connects to this emulator itself (`connectDevice`, `registerAndConnect`) are ended by `stop` too, with a
   * warning naming their ClientId: a device left reconnecting to a stopped emulator keeps the test process alive.
   */
  connectDevice(clientId: string, options?: Omit<ConnectDeviceOptions, 'credential'>): Promise<DeviceConnection>;
  /**
   * A raw mqtt.js client of a registered device (MQTT 3.1.1, no automatic reconnect unless you ask), for the code
   * under test or for watching from the side; closed by {@link TestEmulator.stop}.
   */
  mqttClient(clientId: string, options?: IClientOptions): Promise<MqttClient>;
  /** The next message the broker routes on a topic matching `filter` (MQTT wildcards `+` and `#`). */
  waitForMessage(filter: string, options?: WaitOptions): Promise<ObservedMessage>;
  /** Resolves once `clientId` is connected (at once if it already is). */
  waitForOnline(clientId: string, options?: WaitOptions): Promise<void>;
  /** Resolves once `clientId` is not connected (at once if it is not). */
  waitForOffline(clientId: string, options?: WaitOptions): Promise<void>;
  /**
   * CONNECT with `login` and expect a refusal with CONNACK return code `rc` (3.1.1: 2, 4 or 5). Resolves with the
   * code; rejects with TestingError `UnexpectedConnack` when the CONNECT was accepted or refused with another code.
   */
  expectRefused(login: MqttCredentials | DeviceCredential, rc: number): Promise<number>;
  /** {@link Emulator.failNext}: the next `count` calls of `action` answer `code`, before any state changes. */
  failNext(action: EmulatedAction, code: KnownApiErrorCode, count?: number): void;
  /** {@link Emulator.disconnect}. */
  disconnect(clientId: string): boolean;
  /** {@link Emulator.restart}. */
  restart(): Promise<void>;
  /** {@link Emulator.stats}. */
  stats(): EmulatorStats;
  /**
   * Close every device and client this object opened, then the emulator, and check that none of its ports still
   * accepts connections. Idempotent; never rejects because a client was already gone. A device of this process that
   * the test connected to the emulator and left connected (the test failed before its `end()`) is ended too, and any
   * client still connected is named in a warning on the logger.
   */
  stop(): Promise<void>;
}

/** Default of {@link TestEmulatorOptions.timeoutMs}. */
export const DEFAULT_WAIT_MS = 5_000;

/** The package's test TLS files (tests only: the private key is public). */
function testCertificates(): { cert: string; key: string; ca: string } {
  const dir = new URL('../../fixtures/tls/', import.meta.url);
  const read = (name: string): string => readFileSync(fileURLToPath(new URL(name, dir)), 'utf8');
  return { cert: read('server.pem'), key: read('server-key.pem'), ca: read('ca.pem') };
}

/**
 * Start an emulator for a test: free ports on 127.0.0.1, generated account keys (never the developer's environment),
 * state in memory. Options are the emulator's; `tls: true` adds TLS and WSS listeners with the test certificate.
 */
export async function startTestEmulator(options: TestEmulatorOptions = {}): Promise<TestEmulator> {
  const { tls, timeoutMs = DEFAULT_WAIT_MS, logger = testLogger, ...emulatorOptions } = options;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new ValidationError('InvalidOption', `Option timeoutMs must be a positive number of ms, not ${String(timeoutMs)}`);
  const certificates = tls === true ? testCertificates() : undefined;
  const tlsOptions = tls === true ? { cert: certificates!.cert, key: certificates!.key } : tls === false || tls === undefined ? undefined : tls;
  const emulator = await startEmulator({
    env: {},
    mqttPort: 0,
    wsPort: 0,
    apiPort: 0,
    logger,
    ...emulatorOptions,
    ...(tlsOptions ? { tls: tlsOptions, tlsPort: emulatorOptions.tlsPort ?? 0, wssPort: emulatorOptions.wssPort ?? 0 } : {}),
  });
  return new RunningTestEmulator(emulator, certificates?.ca, timeoutMs, logger);
}

/** What the connector publishes on {@link CONNECTION_CHANNEL}. */
interface PublishedConnection {
  connection: DeviceConnection<ConnectionMode>;
  brokerUrl: string;
}

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname.startsWith('127.') || hostname === '[::1]' || hostname === '::1';
}

class RunningTestEmulator implements TestEmulator {
  readonly emulator: Emulator;
  readonly ca: string | undefined;
  readonly #timeoutMs: number;
  readonly #connections = new Set<DeviceConnection>();
  readonly #clients = new Set<MqttClient>();
  /** Devices of this process connected to this emulator by the code under test (seen on the connector's channel). */
  readonly #foreign = new Set<DeviceConnection<ConnectionMode>>();
  readonly #onConnection: (message: unknown) => void;
  readonly #logger: Logger;
  /** ClientIds connected now, from the emulator's events, as its session queries count them (a takeover included). */
  readonly #online: OnlineClients;
  #stopping: Promise<void> | undefined;

  constructor(emulator: Emulator, ca: string | undefined, timeoutMs: number, logger: Logger) {
    this.emulator = emulator;
    this.ca = ca;
    this.#timeoutMs = timeoutMs;
    this.#logger = logger;
    // Listening before any waiter does, so a waiter's listener sees the count already updated.
    this.#online = new OnlineClients(emulator.events);
    const ports = new Set([emulator.mqttUrl, emulator.wsUrl, emulator.mqttsUrl, emulator.wssUrl].filter((u): u is string => u !== undefined).map((u) => new URL(u).port));
    const host = new URL(emulator.mqttUrl).hostname;
    this.#onConnection = (message) => {
      const { connection, brokerUrl } = message as PublishedConnection;
      let url: URL;
      try {
        url = new URL(brokerUrl);
      } catch {
        return;
      }
      if (!ports.has(url.port) || (url.hostname !== host && !isLoopback(url.hostname))) return;
      this.#foreign.add(connection);
      connection.once('closed', () => this.#foreign.delete(connection));
    };
    subscribe(CONNECTION_CHANNEL, this.#onConnection);
  }

  get mqttUrl(): string {
    return this.emulator.mqttUrl;
  }
  get wsUrl(): string | undefined {
    return this.emulator.wsUrl;
  }
  get mqttsUrl(): string | undefined {
    return this.emulator.mqttsUrl;
  }
  get wssUrl(): string | undefined {
    return this.emulator.wssUrl;
  }
  get apiEndpoint(): string {
    return this.emulator.apiEndpoint;
  }
  get instanceId(): string {
    return this.emulator.instanceId;
  }
  get accessKeyId(): string {
    return this.emulator.accessKeyId;
  }
  get accessKeySecret(): string {
    return this.emulator.accessKeySecret;
  }

  get env(): Readonly<Record<string, string>> {
    return Object.freeze({
      ALIBABA_CLOUD_ACCESS_KEY_ID: this.accessKeyId,
      ALIBABA_CLOUD_ACCESS_KEY_SECRET: this.accessKeySecret,
      APSARAMQ_INSTANCE_ID: this.instanceId,
      APSARAMQ_API_ENDPOINT: this.apiEndpoint,
      APSARAMQ_MQTT_URL: this.mqttUrl,
    });
  }

  get provisionerOptions(): Readonly<{ endpoint: string; instanceId: string; accessKeyId: string; accessKeySecret: string }> {
    return Object.freeze({ endpoint: this.apiEndpoint, instanceId: this.instanceId, accessKeyId: this.accessKeyId, accessKeySecret: this.accessKeySecret });
  }

  async registerDevice(clientId: string): Promise<RegisteredDevice> {
    assertClientId(clientId);
    const params: Record<string, string> = {
      Action: 'RegisterDeviceCredential',
      Version: '2020-04-20',
      Format: 'JSON',
      AccessKeyId: this.accessKeyId,
      SignatureMethod: 'HMAC-SHA1',
      SignatureVersion: '1.0',
      SignatureNonce: randomUUID(),
      Timestamp: rpcTimestamp(new Date()),
      ClientId: clientId,
      InstanceId: this.instanceId,
    };
    params['Signature'] = signRpc('POST', params, this.accessKeySecret);
    const response = await fetch(`${this.apiEndpoint}/`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params).toString(),
    });
    const body = (await response.json()) as Record<string, unknown>;
    if (!response.ok) {
      const requestId = body['RequestId'];
      throw new ApiError({
        code: String(body['Code'] ?? 'InvalidResponse'),
        action: 'RegisterDeviceCredential',
        httpStatus: response.status,
        requestId: typeof requestId === 'string' ? requestId : undefined,
        serviceMessage: String(body['Message'] ?? ''),
      });
    }
    const credential = DeviceCredential.fromWire(body);
    return { clientId, credential, login: signDeviceCredential(credential) };
  }

  async connectDevice(clientId: string, options: Omit<ConnectDeviceOptions, 'credential'> = {}): Promise<DeviceConnection> {
    const { credential } = await this.registerDevice(clientId);
    const connection = await connectDevice({ brokerUrl: this.mqttUrl, ...(this.ca ? { ca: this.ca } : {}), ...options, credential });
    this.#foreign.delete(connection); // ours: ended at stop without a warning
    this.#connections.add(connection);
    connection.once('closed', () => this.#connections.delete(connection));
    return connection;
  }

  async mqttClient(clientId: string, options: IClientOptions = {}): Promise<MqttClient> {
    const { login } = await this.registerDevice(clientId);
    const client = await mqtt.connectAsync(this.mqttUrl, {
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: this.#timeoutMs,
      ...(this.ca ? { ca: this.ca } : {}),
      ...login,
      ...options,
    });
    this.#clients.add(client);
    client.once('end', () => this.#clients.delete(client));
    return client;
  }

  waitForMessage(filter: string, options: WaitOptions = {}): Promise<ObservedMessage> {
    const events = this.emulator.events;
    return this.#waitFor(`a message on ${filter}`, options, (done) => {
      const listener = (message: ObservedMessage): void => {
        if (topicMatches(filter, message.topic)) done(message);
      };
      events.on('published', listener);
      return () => events.off('published', listener);
    });
  }

  waitForOnline(clientId: string, options: WaitOptions = {}): Promise<void> {
    return this.#waitForPresence(clientId, true, options);
  }

  waitForOffline(clientId: string, options: WaitOptions = {}): Promise<void> {
    return this.#waitForPresence(clientId, false, options);
  }

  async expectRefused(login: MqttCredentials | DeviceCredential, rc: number): Promise<number> {
    const credentials = login instanceof DeviceCredential ? signDeviceCredential(login) : login;
    let client: MqttClient | undefined;
    try {
      client = await mqtt.connectAsync(this.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: this.#timeoutMs, ...(this.ca ? { ca: this.ca } : {}), ...credentials });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === rc) return rc;
      throw new TestingError('UnexpectedConnack', `Expected the CONNECT of ${credentials.clientId} to be refused with CONNACK ${rc}, but it ${typeof code === 'number' ? `got CONNACK ${code}` : `failed otherwise (${(error as Error).message})`}`);
    }
    await client.endAsync(true);
    throw new TestingError('UnexpectedConnack', `Expected the CONNECT of ${credentials.clientId} to be refused with CONNACK ${rc}, but it was accepted`);
  }

  failNext(action: EmulatedAction, code: KnownApiErrorCode, count?: number): void {
    this.emulator.failNext(action, code, count);
  }

  disconnect(clientId: string): boolean {
    return this.emulator.disconnect(clientId);
  }

  restart(): Promise<void> {
    return this.emulator.restart();
  }

  stats(): EmulatorStats {
    return this.emulator.stats();
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    unsubscribe(CONNECTION_CHANNEL, this.#onConnection);
    const ended = new Set<string>();
    for (const connection of this.#connections) ended.add(connection.clientId);
    for (const client of this.#clients) ended.add(client.options.clientId ?? '');
    // Devices the test connected itself and left connected (it failed before their end()): ended, so that none keeps
    // reconnecting to a stopped emulator and the test process can exit; named, so that the test can end them.
    const left = [...this.#foreign].filter((c) => c.state !== 'closed' && c.state !== 'closing');
    for (const connection of left) {
      ended.add(connection.clientId);
      this.#logger.warn(`${connection.clientId} was still connected when the emulator stopped: the fixture ended it. End each device in the test (in an after-hook, so that a failed test ends it too).`);
    }
    await Promise.allSettled([...this.#connections, ...left].map((c) => c.end(true)));
    await Promise.allSettled([...this.#clients].map((c) => c.endAsync(true)));
    // Clients the fixture cannot end (a raw mqtt.js client, another process): named, for whoever wonders why the run does not exit.
    for (const clientId of this.#online.clientIds()) {
      if (!ended.has(clientId)) this.#logger.warn(`${clientId} was still connected when the emulator stopped: end its client in the test; one that reconnects keeps the test process alive.`);
    }
    const urls = [this.mqttUrl, this.wsUrl, this.mqttsUrl, this.wssUrl, this.apiEndpoint].filter((u): u is string => u !== undefined);
    await this.emulator.close();
    // Nothing may be left listening: a port that still answers means a server was not closed.
    const open = (await Promise.all(urls.map(async (url) => ((await accepts(url)) ? url : undefined)))).filter(Boolean);
    if (open.length > 0) throw new SystemError('UnknownError', `The emulator was closed but ${open.join(', ')} still accepts connections`);
  }

  #waitForPresence(clientId: string, online: boolean, options: WaitOptions): Promise<void> {
    if (this.#online.isOnline(clientId) === online) return Promise.resolve();
    const events = this.emulator.events;
    const event = online ? 'clientConnected' : 'clientDisconnected';
    return this.#waitFor(`${clientId} to go ${online ? 'online' : 'offline'}`, options, (done) => {
      const listener = (id: string): void => {
        // The end of a session taken over by a new connection is not going offline.
        if (id === clientId && this.#online.isOnline(clientId) === online) done(undefined);
      };
      events.on(event, listener);
      return () => events.off(event, listener);
    });
  }

  /** Wait for `watch` to call `done`, or fail with `WaitTimeout` naming `what`. */
  #waitFor<T>(what: string, options: WaitOptions, watch: (done: (value: T) => void) => () => void): Promise<T> {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        unwatch();
        reject(new TestingError('WaitTimeout', `Waited ${timeoutMs} ms for ${what}`));
      }, timeoutMs);
      const unwatch = watch((value) => {
        clearTimeout(timer);
        unwatch();
        resolve(value);
      });
    });
  }

  toJSON(): Record<string, unknown> {
    return { ...(this.emulator as unknown as { toJSON(): Record<string, unknown> }).toJSON(), testing: true };
  }

  [inspect.custom](): string {
    return `TestEmulator ${inspect(this.toJSON())}`;
  }
}

/** Does anything accept a TCP connection at the URL's host and port? */
function accepts(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = netConnect({ host: hostname.replace(/^\[|\]$/g, ''), port: Number(port) });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
