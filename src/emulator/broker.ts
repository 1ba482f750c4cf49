/**
 * The emulator's MQTT broker: aedes with the emulator's login (broker-login.ts), the service's rules
 * (broker-rules.ts), Token mode (broker-token-mode.ts) and the guards against hostile clients (client-guards.ts),
 * on its listeners (listeners.ts). aedes' internals are reached only through aedes-adapter.ts (and
 * aedes-session-queues.ts for the session store's queues).
 */
import { Aedes, type AedesOptions } from 'aedes';
import { MAX_CLIENT_ID_LENGTH } from '../credential.js';
import { assertAedesVersion, countOnFrom, hardenBroker, sessionStore } from './aedes-adapter.js';
import { BrokerLogin } from './broker-login.js';
import { BrokerRules } from './broker-rules.js';
import { BrokerTokenMode } from './broker-token-mode.js';
import { brokerContext } from './broker-wire.js';
import { BrokerGuards } from './client-guards.js';
import { groupDirectory, type GroupDirectory } from './groups.js';
import { startListeners, type BrokerPorts } from './listeners.js';
import type { ResolvedEmulatorOptions } from './options.js';
import type { CredentialRegistry } from './registry.js';
import type { PeekQueue } from './queue-view.js';
import type { QueueStats, StatsRecorder } from './stats.js';
import type { TokenRegistry } from './token-registry.js';
import type { BrokerCluster } from './cluster/cluster.js';

export { WS_PATH, type BrokerPorts } from './listeners.js';

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
  /**
   * Cut every connection of a ClientId at this broker without a DISCONNECT, like a network failure: the registered
   * one, one whose takeover of it waits, and any CONNECT of it on its way (none of them comes up). True when one was
   * connected or on its way.
   */
  disconnect(clientId: string): boolean;
  /** What the persistent sessions hold now (their bounded queues). */
  queueStats(): QueueStats;
  /** One persistent session's messages, oldest first, while `take` says go on; its totals (queue-view.ts). */
  readonly peekQueue: PeekQueue;
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
  /** How many messages the previous broker of this id numbered: this one numbers on from there (aedes-adapter.ts `messagesCounted`). */
  readonly counted?: number;
  /** The GroupIds that exist (shared with the OpenAPI); default those of the `groups` option. */
  readonly groups?: GroupDirectory;
  /**
   * Clustered (the `redis` option): the broker's persistence and message bus are the cluster's, its persistent
   * sessions' queues are in Redis, and a CONNECT is decided once the credentials of the whole cluster are applied here.
   * Takes the place of `persistence` and `brokerId`.
   */
  readonly cluster?: BrokerCluster;
}

/**
 * Inbound MQTT 5 topic aliases a client may use. The service documents topic aliases without a number; the
 * emulator advertises this one in its CONNACK, and a client uses at most that many.
 */
export const TOPIC_ALIAS_MAXIMUM = 32;

/** The largest Receive Maximum MQTT 5 has, advertised as the service caps it there (reference §8.2). */
const RECEIVE_MAXIMUM = 65_535;

/**
 * Start aedes with the emulator's authentication, the service's MQTT rules, P2P, Token mode, the guards against
 * hostile clients and (with `kickOnRevoke`) session kicking, on a TCP listener and (unless off) WebSocket, TLS and
 * secure WebSocket listeners. Speaks MQTT 3.1.1 and 5 (and 3.1 with `mqtt31: 'accept'`).
 * @throws ConfigurationError `DependencyMismatch` when the installed aedes is not the one the adapter was written for.
 */
export async function startBroker(options: ResolvedEmulatorOptions, deps: BrokerDependencies): Promise<BrokerHandle> {
  assertAedesVersion();
  const context = brokerContext(options, deps.stats);
  const tokenMode = new BrokerTokenMode(context, deps.tokens);
  const cluster = deps.cluster;
  const groups = deps.groups ?? groupDirectory(options.groups);
  const login = new BrokerLogin(context, { ...options, registry: deps.registry, tokens: deps.tokens, groups, ...(cluster ? { sync: cluster.sync } : {}) }, tokenMode);
  const rules = new BrokerRules(context, tokenMode, cluster !== undefined);
  const guards = new BrokerGuards(context, cluster?.createQueues);
  const backend = await cluster?.backend();
  const brokerId = cluster?.brokerId ?? deps.brokerId;
  const persistence = backend?.persistence ?? deps.persistence;

  const created = Aedes.createBroker({
    ...(brokerId === undefined ? {} : { id: brokerId }),
    ...(persistence === undefined ? {} : { persistence }),
    ...(backend === undefined ? {} : { mq: backend.mq as AedesOptions['mq'] }),
    // aedes refuses MQTT 3.1 ClientIds over 23 characters by default; the service allows 64.
    maxClientsIdLength: MAX_CLIENT_ID_LENGTH,
    // Checked on every read as soon as a packet's fixed header is in, CONNECT included: never buffered whole.
    maximumPacketSize: options.maxPacketBytes,
    drainTimeout: options.drainTimeoutMs,
    // The Keep Alive cap is the login's (broker-login.ts): it lowers a 3.1.1 CONNECT's and tells an MQTT 5 client in
    // its CONNACK (Server Keep Alive). aedes' own cap would refuse a 3.1.1 CONNECT over it (with a return code 3.1.1
    // does not have) and cannot leave a Keep Alive of 0 alone.
    keepaliveLimit: 0,
    receiveMaximum: RECEIVE_MAXIMUM,
    topicAliasMaximum: TOPIC_ALIAS_MAXIMUM,
    ...login.hooks(),
    ...rules.hooks(),
  });
  // A broker that never started never closes its bus: its connections are let go here.
  const broker = await created.catch(async (error: unknown) => {
    await backend?.abandon();
    throw error;
  });
  hardenBroker(broker, { ...(cluster ? { create: cluster.createIncoming } : {}), persistentQos2: options.qos2PersistentSessions === 'allow' });
  if (deps.counted !== undefined) countOnFrom(broker, deps.counted);
  rules.install(broker);
  tokenMode.install(broker);
  guards.install(broker);
  const stopKicking = login.install(broker, deps.registry);
  cluster?.follow(broker);

  const closeBroker = async (): Promise<void> => {
    stopKicking();
    tokenMode.close();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
    await backend?.close();
  };

  const listeners = await startListeners(guards.handle, options.host, options, options.tls, options.maxPacketBytes).catch(async (error: unknown) => {
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
    persistence: sessionStore(broker),
    // Every connection of the ClientId, registered or not (a takeover's new one, a CONNECT on its way): aedes closes
    // each as on a network cut (the will is published), and registers none that was not yet.
    disconnect: (clientId) => login.disconnect(clientId),
    queueStats: () => guards.queueStats(),
    peekQueue: guards.peekQueue,
    checkTokens() {
      tokenMode.checkAll();
    },
    async close() {
      await closeBroker();
      await listeners.close();
      // Clustered, a closed (or restarted) broker's clients are no longer counted once it has closed: its listeners
      // first, so that no connection is taken meanwhile by a broker that no longer answers.
      await cluster?.settled();
    },
  };
}
