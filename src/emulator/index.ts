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
import { startBroker, type BrokerHandle } from './broker.js';
import { Gateway } from './gateway.js';
import { resolveOptions, type EmulatorOptions, type ResolvedEmulatorOptions } from './options.js';
import { CredentialRegistry } from './registry.js';
import { StatsRecorder, type EmulatorStats } from './stats.js';

export { EMULATOR_DEFAULTS, EMULATOR_ENV, type EmulatorOptions, type ReRegisterPolicy } from './options.js';
export type { ErrorStatusMode } from './api-errors.js';
export type { ActionStats, EmulatorStats } from './stats.js';

/** A running emulator. */
export interface Emulator {
  /** `mqtt://host:port` */
  readonly mqttUrl: string;
  /** `ws://host:port/mqtt`, or `undefined` when `wsPort` is `false`. */
  readonly wsUrl: string | undefined;
  /** `http://host:port`: the OpenAPI endpoint for pop-core's RPCClient. */
  readonly apiEndpoint: string;
  /** The emulated instance id. */
  readonly instanceId: string;
  /** The account AccessKeyId the gateway and Signature-mode CONNECTs accept. */
  readonly accessKeyId: string;
  /** The account AccessKeySecret. */
  readonly accessKeySecret: string;
  /** The aedes broker, for tests that want to watch or drive it. */
  readonly broker: Aedes;
  /** Counters, the same object `GET /_emulator/stats` answers. */
  stats(): EmulatorStats;
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
  const brokerHandle = await startBroker(config, { registry, stats });
  const snapshot = (): EmulatorStats => stats.snapshot(brokerHandle.broker.connectedClients);

  const apiServer = await startApiServer({
    gateway: new Gateway(config),
    registry,
    stats,
    snapshot,
    instanceId: config.instanceId,
    host: config.host,
    port: config.apiPort,
    errorStatuses: config.errorStatuses,
  }).catch(async (error: unknown) => {
    await brokerHandle.close();
    throw error;
  });

  return new RunningEmulator(config, brokerHandle, apiServer, snapshot);
}

/**
 * The {@link Emulator} handed out. The account secret sits behind a getter and is redacted from `toJSON` and
 * `util.inspect`, so printing the emulator in a failing test does not print the secret.
 */
class RunningEmulator implements Emulator {
  readonly mqttUrl: string;
  readonly wsUrl: string | undefined;
  readonly apiEndpoint: string;
  readonly instanceId: string;
  readonly accessKeyId: string;
  readonly broker: Aedes;
  readonly stats: () => EmulatorStats;
  readonly #secret: string;
  readonly #closeAll: () => Promise<unknown>;
  #closing: Promise<void> | undefined;

  constructor(
    config: ResolvedEmulatorOptions,
    brokerHandle: BrokerHandle,
    apiServer: ApiServer,
    snapshot: () => EmulatorStats,
  ) {
    this.mqttUrl = brokerHandle.mqttUrl;
    this.wsUrl = brokerHandle.wsUrl;
    this.apiEndpoint = apiServer.endpoint;
    this.instanceId = config.instanceId;
    this.accessKeyId = config.accessKeyId;
    this.broker = brokerHandle.broker;
    this.stats = snapshot;
    this.#secret = config.accessKeySecret;
    this.#closeAll = () => Promise.all([brokerHandle.close(), apiServer.close()]);
  }

  get accessKeySecret(): string {
    return this.#secret;
  }

  close(): Promise<void> {
    this.#closing ??= this.#closeAll().then(() => undefined);
    return this.#closing;
  }

  toJSON(): Record<string, unknown> {
    return {
      mqttUrl: this.mqttUrl,
      wsUrl: this.wsUrl,
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
