/**
 * A local emulator of ApsaraMQ for MQTT: an aedes broker (TCP and WebSocket) and an OpenAPI HTTP server that
 * enforce the real service's authentication, so that provisioning and connecting can be tested offline.
 *
 * @example
 * const emu = await startEmulator({ env: {} });
 * // RPCClient({ endpoint: emu.apiEndpoint, apiVersion: '2020-04-20', accessKeyId: emu.accessKeyId, ... })
 * // mqtt.connectAsync(emu.mqttUrl, { ...signDeviceCredential(credential), protocolVersion: 4 })
 * await emu.close();
 */
import { inspect } from 'node:util';
import type { Aedes } from 'aedes';
import { redact } from '../credential.js';
import { startApiServer, type ApiServer } from './api-server.js';
import { startBroker, type BrokerDependencies, type BrokerHandle } from './broker.js';
import { FaultInjector } from './faults.js';
import { Gateway } from './gateway.js';
import { resolveOptions, type EmulatorOptions, type ResolvedEmulatorOptions } from './options.js';
import { CredentialRegistry } from './registry.js';
import { StatsRecorder, type EmulatorStats } from './stats.js';

export { EMULATOR_DEFAULTS, EMULATOR_ENV, type EmulatorOptions, type ReRegisterPolicy, type TlsOptions } from './options.js';
export { BROKER_DEFAULTS, DEFAULT_PARENT_TOPICS, type BrokerOptions, type UnsupportedFeaturePolicy } from './broker-options.js';
export { RULES, type RuleName } from './mqtt-rules.js';
export type { ErrorStatusMode } from './api-errors.js';
export type { ActionStats, EmulatorStats } from './stats.js';

/** A running emulator. */
export interface Emulator {
  /** `mqtt://host:port` */
  readonly mqttUrl: string;
  /** `ws://host:port/mqtt`, or `undefined` when `wsPort` is `false`. */
  readonly wsUrl: string | undefined;
  /** `mqtts://host:port` (MQTT over TLS), or `undefined` without the `tls` option. */
  readonly mqttsUrl: string | undefined;
  /** `wss://host:port/mqtt` (MQTT over secure WebSocket), or `undefined` without `tls` or with `wssPort: false`. */
  readonly wssUrl: string | undefined;
  /** `http://host:port`: the OpenAPI endpoint for pop-core's RPCClient. */
  readonly apiEndpoint: string;
  /** The emulated instance id. */
  readonly instanceId: string;
  /** The account AccessKeyId the gateway and Signature-mode CONNECTs accept. */
  readonly accessKeyId: string;
  /** The account AccessKeySecret. */
  readonly accessKeySecret: string;
  /** The aedes broker, for tests that want to watch or drive it. A new instance after {@link Emulator.restart}. */
  readonly broker: Aedes;
  /** Counters, the same object `GET /_emulator/stats` answers. */
  stats(): EmulatorStats;
  /**
   * Make the next `count` (default 1) OpenAPI calls of `action` answer error `code` with its catalog HTTP status
   * (gateway codes such as `Throttling.User` too), after the gateway's signature check and before any state change.
   * Queued faults come before random ones (`faultRate`) and add up per action in call order.
   * @throws ValidationError `InvalidOption` when `code` is not in `API_ERROR_CATALOG` or `count` is not a positive integer.
   */
  failNext(action: string, code: string, count?: number): void;
  /**
   * Drop a client's MQTT connection without a DISCONNECT, like a network cut: its will is published and a
   * persistent session keeps queueing. Returns whether that ClientId was connected.
   */
  disconnect(clientId: string): boolean;
  /**
   * Close the broker and its listeners (every client is dropped) and start them again on the same ports. Device
   * credentials, persistent sessions (clean: false) with their subscriptions and queued QoS 1 messages, and stats
   * are kept. The OpenAPI server keeps running throughout. Rejects when the emulator is closed or a port cannot be
   * bound again.
   */
  restart(): Promise<void>;
  /** Close the broker, every client socket and all servers. Idempotent; never hangs on open connections. */
  close(): Promise<void>;
}

/**
 * Start an emulator. Options are validated first (a `ValidationError` with code `InvalidOption` naming the option);
 * a listener that cannot bind rejects the promise after closing whatever had started.
 */
export async function startEmulator(options: EmulatorOptions = {}): Promise<Emulator> {
  const config = resolveOptions(options);
  const stats = new StatsRecorder();
  const registry = new CredentialRegistry(config);
  const faults = new FaultInjector(config);
  const mqtt = new MqttService(config, { registry, stats }, await startBroker(config, { registry, stats }));
  const snapshot = (): EmulatorStats => stats.snapshot(mqtt.broker.connectedClients);

  const apiServer = await startApiServer({
    gateway: new Gateway(config),
    faults,
    controls: mqtt,
    registry,
    stats,
    snapshot,
    instanceId: config.instanceId,
    host: config.host,
    port: config.apiPort,
    errorStatuses: config.errorStatuses,
  }).catch(async (error: unknown) => {
    await mqtt.close();
    throw error;
  });

  return new RunningEmulator(config, mqtt, apiServer, snapshot, faults);
}

/**
 * The MQTT side of the emulator: the current broker, which {@link MqttService.restart} replaces. Restarts and
 * close are serialised, so a close during a restart closes the restarted broker.
 */
class MqttService {
  readonly #config: ResolvedEmulatorOptions;
  readonly #deps: BrokerDependencies;
  #handle: BrokerHandle;
  #queue: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(config: ResolvedEmulatorOptions, deps: BrokerDependencies, handle: BrokerHandle) {
    this.#config = config;
    this.#deps = deps;
    this.#handle = handle;
  }

  get handle(): BrokerHandle {
    return this.#handle;
  }

  get broker(): Aedes {
    return this.#handle.broker;
  }

  disconnect(clientId: string): boolean {
    return this.#handle.disconnect(clientId);
  }

  restart(): Promise<void> {
    return this.#serialise(async () => {
      if (this.#closed) throw new Error('The emulator is closed');
      const previous = this.#handle;
      await previous.close();
      // Port 0 was resolved at the first start: listen on the very same ports, so clients' URLs stay valid.
      this.#handle = await startBroker({ ...this.#config, ...previous.ports }, {
        ...this.#deps,
        persistence: previous.persistence,
        brokerId: previous.broker.id,
      });
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    return this.#serialise(() => this.#handle.close());
  }

  /** Run after everything queued before, whether that succeeded or not. */
  #serialise(task: () => Promise<void>): Promise<void> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}

/**
 * The {@link Emulator} handed out. The account secret sits behind a getter and is redacted from `toJSON` and
 * `util.inspect`, so printing the emulator in a failing test does not print the secret.
 */
class RunningEmulator implements Emulator {
  readonly mqttUrl: string;
  readonly wsUrl: string | undefined;
  readonly mqttsUrl: string | undefined;
  readonly wssUrl: string | undefined;
  readonly apiEndpoint: string;
  readonly instanceId: string;
  readonly accessKeyId: string;
  readonly stats: () => EmulatorStats;
  readonly failNext: (action: string, code: string, count?: number) => void;
  readonly #mqtt: MqttService;
  readonly #secret: string;
  readonly #closeAll: () => Promise<unknown>;
  #closing: Promise<void> | undefined;

  constructor(
    config: ResolvedEmulatorOptions,
    mqtt: MqttService,
    apiServer: ApiServer,
    snapshot: () => EmulatorStats,
    faults: FaultInjector,
  ) {
    this.mqttUrl = mqtt.handle.mqttUrl;
    this.wsUrl = mqtt.handle.wsUrl;
    this.mqttsUrl = mqtt.handle.mqttsUrl;
    this.wssUrl = mqtt.handle.wssUrl;
    this.apiEndpoint = apiServer.endpoint;
    this.instanceId = config.instanceId;
    this.accessKeyId = config.accessKeyId;
    this.#mqtt = mqtt;
    this.stats = snapshot;
    this.failNext = (action, code, count) => faults.failNext(action, code, count);
    this.#secret = config.accessKeySecret;
    this.#closeAll = () => Promise.all([mqtt.close(), apiServer.close()]);
  }

  get accessKeySecret(): string {
    return this.#secret;
  }

  get broker(): Aedes {
    return this.#mqtt.broker;
  }

  disconnect(clientId: string): boolean {
    return this.#mqtt.disconnect(clientId);
  }

  restart(): Promise<void> {
    return this.#mqtt.restart();
  }

  close(): Promise<void> {
    this.#closing ??= this.#closeAll().then(() => undefined);
    return this.#closing;
  }

  toJSON(): Record<string, unknown> {
    return {
      mqttUrl: this.mqttUrl,
      wsUrl: this.wsUrl,
      mqttsUrl: this.mqttsUrl,
      wssUrl: this.wssUrl,
      apiEndpoint: this.apiEndpoint,
      instanceId: this.instanceId,
      accessKeyId: this.accessKeyId,
      accessKeySecret: redact(this.#secret),
    };
  }

  [inspect.custom](): string {
    return `Emulator ${inspect(this.toJSON())}`;
  }
}
