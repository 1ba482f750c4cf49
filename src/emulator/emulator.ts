/**
 * A local emulator of ApsaraMQ for MQTT: an aedes broker (TCP and WebSocket) and an OpenAPI HTTP server that
 * enforce the real service's authentication, so that provisioning and connecting can be tested offline.
 *
 * @example
 * const emu = await startEmulator({ env: {} });
 * // RPCClient({ endpoint: emu.apiEndpoint, apiVersion: '2020-04-20', accessKeyId: emu.accessKeyId, ... })
 * // mqtt.connectAsync(emu.mqttUrl, { ...signDeviceCredential(credential), protocolVersion: 4 })
 * await emu.close();
 *
 * This module is the start-up (the parts wired together) and the emulator handed out. Its MQTT side across restarts
 * is mqtt-service.ts; what it does with a data directory (`dataDir`) is data-dir-wiring.ts.
 */
import type { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import type { Aedes } from 'aedes';
import { redact } from '../credential.js';
import type { KnownApiErrorCode } from '../errors.js';
import { EMULATED_ACTIONS, actionRules, type EmulatedAction } from './actions.js';
import { hostIdOf } from './api-errors.js';
import { checkRestartDownMs, startApiServer, type ApiDependencies, type ApiServer } from './api-server.js';
import { startBroker, type BrokerDependencies } from './broker.js';
import { openDataDir, reconcile, startPersistence, type Persistence } from './data-dir-wiring.js';
import { FaultInjector, checkBurst, checkFailNext } from './faults.js';
import { joinCluster, type EmulatorCluster } from './cluster/cluster.js';
import type { ClusterProcess } from './cluster/membership.js';
import { Gateway } from './gateway.js';
import { groupDirectory, type GroupDirectory } from './groups.js';
import { MqttService } from './mqtt-service.js';
import { resolveOptions, type EmulatorOptions, type ResolvedEmulatorOptions, type ValueSource } from './options.js';
import { CredentialRegistry } from './registry.js';
import { OnlineClients } from './online-clients.js';
import { StatsRecorder, type EmulatorStats } from './stats.js';
import { offlineDeliveryOf, viewQueue } from './queue-view.js';
import { TokenRegistry } from './token-registry.js';

/**
 * What happens on the emulator's MQTT side, for tests that wait on it instead of polling. Listeners stay attached
 * across {@link Emulator.restart}.
 */
export interface EmulatorEvents {
  /** A client authenticated and its session is up (emitted before its CONNACK is written). */
  clientConnected: [clientId: string];
  /** A connected client's connection closed: DISCONNECT, a network cut, a kick, a restart. */
  clientDisconnected: [clientId: string];
  /** A device's PUBLISH passed the broker's checks and is being routed (`$SYS` topics are not reported). */
  published: [message: { topic: string; payload: Buffer; qos: number; clientId: string }];
  /** A client's SUBSCRIBE was handled (the filters granted). */
  subscribed: [info: { clientId: string; topics: string[] }];
}

/** A running emulator. */
export interface Emulator {
  /** MQTT-side events ({@link EmulatorEvents}), kept across restarts. */
  readonly events: EventEmitter<EmulatorEvents>;
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
  /**
   * Where the account key pair came from: `options`, the `environment`, or `generated` by the emulator (now or, with
   * `dataDir`, by an earlier run). Only a generated secret is the emulator's to print.
   */
  readonly accessKeySource: ValueSource;
  /** The absolute data directory the OpenAPI's state is kept in, or `undefined` when it lives in memory. */
  readonly dataDir: string | undefined;
  /** The aedes broker, for tests that want to watch or drive it. A new instance after {@link Emulator.restart}. */
  readonly broker: Aedes;
  /**
   * Clustered (the `redis` option): this process's id in the cluster, the Redis URL (password hidden), and the live
   * processes with their endpoints. `undefined` for a process of its own.
   */
  readonly cluster: EmulatorClusterInfo | undefined;
  /**
   * Counters, the same object `GET /_emulator/stats` answers for a process of its own. Clustered (`redis`) they are
   * this process's, with the queues as last read: `GET /_emulator/stats` adds `cluster` and reads the queues afresh.
   */
  stats(): EmulatorStats;
  /**
   * Make the next `count` (default 1) OpenAPI calls of `action` answer error `code` with its catalog HTTP status
   * (gateway codes such as `Throttling.User` too), after the gateway's signature check and before any state change.
   * Queued faults come before random ones (`faultRate`) and add up per action in call order. Clustered (`redis`), they
   * are the cluster's next calls of `action`, through any process, and the returned promise settles once Redis holds
   * them (a call through another process made before that may not see them).
   * @throws ValidationError `InvalidOption` when `action` is not one of {@link EMULATED_ACTIONS}, `code` is not in
   *   `API_ERROR_CATALOG`, or `count` is not an integer from 1 to {@link MAX_FAIL_NEXT_COUNT} (checked at run time too).
   */
  failNext(action: EmulatedAction, code: KnownApiErrorCode, count?: number): void | Promise<void>;
  /**
   * For the next `forMs`, answer a share `rate` (0 to 1) of the OpenAPI calls the gateway lets through with one of
   * `codes` (picked at random), in place of the `faultRate` and `faultCodes` options: an outage or throttling of the
   * OpenAPI for a while. A new burst replaces the one running; `rate` 0 ends it. Queued `failNext` faults still come
   * first. Clustered (`redis`), the burst is the cluster's, through any process, timed on the clock of its rate
   * limits, and the returned promise settles once Redis holds it.
   * @throws ValidationError `InvalidOption` naming a bad value (checked at run time too).
   */
  faultBurst(burst: { rate: number; codes: readonly KnownApiErrorCode[]; forMs: number }): void | Promise<void>;
  /**
   * Drop a client's MQTT connection without a DISCONNECT, like a network cut: its will is published and a
   * persistent session keeps queueing. Every connection of the ClientId goes, registered or not: one whose takeover of
   * an older connection still waits for that one's close, and a CONNECT on its way (its login being decided, or its
   * CONNACK not yet written), which never comes up. Returns whether one of them was connected or on its way (one
   * already closing does not count). Clustered, the connections to this process's broker.
   */
  disconnect(clientId: string): boolean;
  /**
   * Token mode: look at every Token-mode session against the `now` clock at once, as the broker's own timers do when
   * they fire: a token within `tokenExpireNoticeLeadMs` of its ExpireTime gets its `$SYS/tokenExpireNotice`, and a
   * session holding a token that expired gets `$SYS/tokenInvalidNotice` (code 2) and is disconnected. The timers
   * run on real time; a test that moves `now` calls this instead of waiting.
   */
  checkTokens(): void;
  /**
   * Close the broker and its listeners (every client is dropped) and start them again on the same ports. Device
   * credentials, persistent sessions (clean: false) with their subscriptions and queued QoS 1 messages, and stats
   * are kept. The OpenAPI server keeps running throughout. With `downMs`, the broker stays down that long between
   * the two (connects are refused meanwhile), as in a maintenance window. Rejects when the emulator is closed or a
   * port cannot be bound again.
   */
  restart(options?: { downMs?: number }): Promise<void>;
  /** Close the broker, every client socket and all servers. Idempotent; never hangs on open connections. */
  close(): Promise<void>;
}

/** A clustered emulator's place in its cluster ({@link Emulator.cluster}). */
export interface EmulatorClusterInfo {
  /** This process's id in the cluster (its broker id). */
  readonly processId: string;
  /** The cluster's Redis, its password hidden. */
  readonly redisUrl: string;
  /** The live processes of the cluster, with their MQTT URL and OpenAPI endpoint. */
  processes(): Promise<ClusterProcess[]>;
}

/**
 * Start an emulator. Options are validated first (a `ValidationError` with code `InvalidOption` naming the option);
 * a listener that cannot bind rejects the promise after closing whatever had started.
 */
export async function startEmulator(options: EmulatorOptions = {}): Promise<Emulator> {
  const resolved = resolveOptions(options);
  const stats = new StatsRecorder(EMULATED_ACTIONS);
  // Clustered, the state is the cluster's (cluster/cluster.ts): its instance, account, credentials and tokens.
  const cluster = resolved.redis === undefined ? undefined : await joinCluster(resolved, options.rateClock);
  const storage = resolved.dataDir === undefined ? undefined : await openDataDir(resolved.dataDir, resolved.logger);
  let config: ResolvedEmulatorOptions;
  let persistence: Persistence | undefined;
  const registry = cluster?.registry ?? new CredentialRegistry(resolved);
  const tokens = cluster?.tokens ?? new TokenRegistry(resolved);
  try {
    config = cluster?.config ?? (storage ? reconcile(resolved, storage) : resolved);
    if (storage) persistence = await startPersistence(config, storage, registry, tokens);
  } catch (error) {
    await storage?.close();
    throw error;
  }
  const faults = cluster ? new ClusterFaults(config, cluster) : new FaultInjector(config);
  const groups = groupDirectory(config.groups);
  const deps: BrokerDependencies = { registry, tokens, stats, groups, ...(cluster ? { cluster: cluster.broker } : {}) };
  const mqtt = new MqttService(config, deps, await startBroker(config, deps).catch(async (error: unknown) => {
    await persistence?.close();
    await cluster?.close();
    throw error;
  }));
  const snapshot = (): EmulatorStats => stats.snapshot(mqtt.broker.connectedClients, mqtt.handle.queueStats());
  // The session queries answer from the broker's own events, which stay on `mqtt.events` across restarts.
  const sessions = new OnlineClients(mqtt.events);

  const apiServer = await startApiServer({
    // Clustered, the rate limits are the cluster's (in Redis), checked right after these.
    gateway: new Gateway(cluster ? { ...config, qpsLimit: Number.POSITIVE_INFINITY, actionQpsLimits: {} } : config),
    faults,
    controls: mqtt,
    registry,
    tokens,
    sessions,
    now: config.now,
    stats,
    snapshot,
    // The store's queues outlive a restart: the broker of the moment reads them (clustered, Redis holds them).
    queue: (query) => viewQueue((clientId, take) => mqtt.handle.peekQueue(clientId, take), query, offlineDeliveryOf(config)),
    instanceId: config.instanceId,
    ...apiRules(config, groups),
    host: config.host,
    port: config.apiPort,
    errorStatuses: config.errorStatuses,
    getOnPostOnly: config.getOnPostOnly,
    logger: config.logger,
    ...(persistence ? { persist: persistence.flush } : {}),
    ...(cluster ? { cluster: cluster.api, snapshot: () => cluster.stats(snapshot()) } : {}),
  }).catch(async (error: unknown) => {
    await mqtt.close();
    await persistence?.close();
    await cluster?.close();
    throw error;
  });
  const running = new RunningEmulator(config, mqtt, apiServer, snapshot, faults, persistence, cluster);
  try {
    await cluster?.announce({ mqttUrl: running.mqttUrl, apiEndpoint: running.apiEndpoint, pid: process.pid });
  } catch (error) {
    await running.close();
    throw error;
  }
  return running;
}

/**
 * A clustered emulator's faults: `failNext` queues them in Redis, for the next calls anywhere in the cluster, and a
 * fault burst is the cluster's (an outage of the account's OpenAPI, not of one process); each returns a promise that
 * settles once the cluster holds it. Latency and the configured random faults stay this process's own.
 */
class ClusterFaults extends FaultInjector {
  readonly #cluster: EmulatorCluster;

  constructor(config: ResolvedEmulatorOptions, cluster: EmulatorCluster) {
    super(config);
    this.#cluster = cluster;
  }

  override failNext(action: EmulatedAction, code: KnownApiErrorCode, count = 1): Promise<void> {
    checkFailNext(action, code, count);
    const queued = this.#cluster.failNext(action, code, count);
    // A caller that does not wait for it must not get an unhandled rejection; one that does still sees it.
    queued.catch(() => undefined);
    return queued;
  }

  override burst(rate: number, codes: readonly string[], forMs: number): Promise<void> {
    checkBurst(rate, codes, forMs);
    const started = this.#cluster.faultBurst(rate, codes, forMs);
    started.catch(() => undefined);
    return started;
  }
}

/** What the OpenAPI answers from the options besides its state: the groups and parent topics that exist, and its own names. */
function apiRules(config: ResolvedEmulatorOptions, groups: GroupDirectory): Pick<ApiDependencies, 'groups' | 'parentTopics' | 'p2pTopicLength' | 'unknownInstanceCode' | 'hostId'> {
  return { ...actionRules(config, groups), hostId: hostIdOf(config.regionId) };
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
  readonly accessKeySource: ValueSource;
  readonly dataDir: string | undefined;
  readonly stats: () => EmulatorStats;
  readonly failNext: (action: EmulatedAction, code: KnownApiErrorCode, count?: number) => void | Promise<void>;
  readonly faultBurst: (burst: { rate: number; codes: readonly KnownApiErrorCode[]; forMs: number }) => void | Promise<void>;
  readonly events: EventEmitter<EmulatorEvents>;
  readonly cluster: EmulatorClusterInfo | undefined;
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
    persistence: Persistence | undefined,
    cluster: EmulatorCluster | undefined,
  ) {
    this.mqttUrl = mqtt.handle.mqttUrl;
    this.wsUrl = mqtt.handle.wsUrl;
    this.mqttsUrl = mqtt.handle.mqttsUrl;
    this.wssUrl = mqtt.handle.wssUrl;
    this.apiEndpoint = apiServer.endpoint;
    this.instanceId = config.instanceId;
    this.accessKeyId = config.accessKeyId;
    this.accessKeySource = config.accessKeySource;
    this.dataDir = persistence?.path;
    this.#mqtt = mqtt;
    this.events = mqtt.events;
    this.stats = snapshot;
    this.failNext = (action, code, count) => faults.failNext(action, code, count);
    this.faultBurst = ({ rate, codes, forMs }) => faults.burst(rate, codes, forMs);
    this.#secret = config.accessKeySecret;
    this.cluster = cluster === undefined ? undefined : { processId: cluster.processId, redisUrl: cluster.redisUrl, processes: () => cluster.processes() };
    // The data directory closes last: a call being answered may still be saving. A cluster's connections likewise.
    this.#closeAll = async () => {
      await Promise.all([mqtt.close(), apiServer.close()]);
      await persistence?.close();
      await cluster?.close();
    };
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

  checkTokens(): void {
    this.#mqtt.checkTokens();
  }

  restart(options: { downMs?: number } = {}): Promise<void> {
    const downMs = options.downMs ?? 0;
    try {
      checkRestartDownMs(downMs);
    } catch (error) {
      return Promise.reject(error as Error);
    }
    return this.#mqtt.restart(downMs);
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
      accessKeySource: this.accessKeySource,
      dataDir: this.dataDir,
      ...(this.cluster === undefined ? {} : { cluster: { processId: this.cluster.processId, redisUrl: this.cluster.redisUrl } }),
    };
  }

  [inspect.custom](): string {
    return `Emulator ${inspect(this.toJSON())}`;
  }
}
