/**
 * An emulator process as a member of a cluster (the `redis` option): every process of one Redis database is one
 * logical service. What each part shares, and how:
 * - the OpenAPI's state (credentials, tokens, and the revoked keys remembered for `revokedCredentialRefusal`):
 *   ledger.ts, a log every process applies to its own registries, with the same action rules (groups, parent topics);
 * - the gateway's state (nonces, the account's and each action's rate limit, in either `rateLimitMode`), `failNext`'s
 *   faults and the fault burst running: admission.ts;
 * - sessions, subscriptions and queued messages: the brokers' Redis persistence and queues (redis-broker.ts,
 *   redis-queues.ts, paced as session-queues.ts paces them), and messages route between brokers over the shared bus;
 * - who is connected where, for QuerySession, and which processes are live: membership.ts;
 * - the options, GroupIds and parent topics included: every process has the same (membership.ts refuses another).
 * Per process: its listeners, `restart` (its broker, and the downtime asked of it), `disconnect` (connections to its
 * broker), `checkTokens` (its Token-mode sessions), the injected latency and the configured random faults of its
 * OpenAPI, the draw of each reconnect's offline-detection delay, and its stats' counters.
 */
import { randomBytes } from 'node:crypto';
import type { Aedes } from 'aedes';
import type { Redis } from 'ioredis';
import { ApiFault } from '../api-errors.js';
import { ACTIONS, actionRules, isEmulatedAction, type ActionContext, type ActionHandler, type SessionDirectory } from '../actions.js';
import { onAccepted } from '../aedes-adapter.js';
import { tellTakenOver, yieldMovedSessions } from '../aedes-cluster-takeovers.js';
import type { OutgoingQueues } from '../aedes-session-queues.js';
import { revokedKeysOf } from '../broker-login.js';
import { BASE36_LOWER, randomString } from '../crypto.js';
import { COMMON_PARAMETERS, type RpcParams } from '../gateway.js';
import { groupDirectory } from '../groups.js';
import type { IncomingSessions } from '../incoming-qos2.js';
import type { ResolvedEmulatorOptions } from '../options.js';
import { CredentialRegistry } from '../registry.js';
import type { QueueLimits, QueueOverflow } from '../session-queues.js';
import type { EmulatorStats } from '../stats.js';
import { TokenRegistry } from '../token-registry.js';
import { SharedAdmission, type Admitted } from './admission.js';
import { KEYS, takeoverChannel } from './keys.js';
import { Ledger, seededBytes, type Change, type Outcome } from './ledger.js';
import { Membership, sharedOptions, type ClusterProcess } from './membership.js';
import { brokerBackend, type BrokerBackend } from './redis-broker.js';
import { RedisIncomingSessions } from './redis-incoming.js';
import { RedisSessionQueues } from './redis-queues.js';
import { connectRedis, hidePassword, loadClusterModules, parseRedisUrl, type RedisTarget } from './redis.js';

/** The actions that change the state: proposed to the log, applied by every process. The others read. */
export const REPLICATED_ACTIONS: ReadonlySet<string> = new Set(['RegisterDeviceCredential', 'RefreshDeviceCredential', 'UnRegisterDeviceCredential', 'ApplyToken', 'RevokeToken']);

/** What a broker of the cluster is built with (broker.ts). */
export interface BrokerCluster {
  /** The broker id: the process's id in the cluster, kept across a restart. */
  readonly brokerId: string;
  /** A new persistence and message bus, for one start of the broker. */
  backend(): Promise<BrokerBackend>;
  /** The persistent sessions' queues, in Redis. */
  createQueues(limits: QueueLimits, onOverflow: QueueOverflow): OutgoingQueues;
  /** The sessions' QoS 2 messages awaiting their PUBREL, in Redis. */
  createIncoming(): IncomingSessions;
  /** Resolves once this process has applied every change of the state made so far (before deciding a CONNECT). */
  sync(): Promise<void>;
  /**
   * Count the broker's clients in the cluster as they connect and leave (membership.ts), each CONNACK held until its
   * client is counted.
   */
  follow(broker: Aedes): void;
  /** Resolves once every connect and disconnect so far is counted in Redis (a broker closing waits for it). */
  settled(): Promise<void>;
}

/** What the OpenAPI server does clustered (api-server.ts). */
export interface ClusterApi {
  /**
   * The gateway's shared checks and the queued faults, after the signature check; resolves with the cluster's fault
   * burst, which the call's own draw is made from (FaultInjector.inject). Throws an ApiFault.
   */
  admit(call: { readonly nonce?: string | undefined; readonly accessKeyId: string; readonly action: string }): Promise<Admitted>;
  /** Run an action: a change through the log, a read on the state as it is now (QuerySession cluster-wide). */
  run(action: string, params: RpcParams, handler: ActionHandler, context: ActionContext): Promise<Record<string, unknown>>;
}


/** The same error, logged at most once every this many ms (a Redis outage fails every call). */
const ERROR_LOG_MS = 5_000;

/** An error logger that says each distinct message once per {@link ERROR_LOG_MS}, without the Redis password. */
function errorLog(config: ResolvedEmulatorOptions, target: RedisTarget): (error: unknown) => void {
  const said = new Map<string, number>();
  return (error) => {
    const message = hidePassword(error instanceof Error ? error.message : String(error), target);
    const now = Date.now();
    if ((said.get(message) ?? Number.NEGATIVE_INFINITY) + ERROR_LOG_MS > now) return;
    said.set(message, now);
    config.logger.error(`Emulator cluster (${target.shown}): ${message}`);
  };
}

/** The business parameters of a call: what its change carries (the signature's are the caller's, not the state's). */
function businessParams(params: RpcParams): Record<string, string> {
  const common = new Set<string>([...COMMON_PARAMETERS, 'Format', 'RegionId']);
  return Object.fromEntries(Object.entries(params).filter(([name]) => !common.has(name)));
}

/** The ClientIds a session query asks about. */
function queriedClientIds(params: RpcParams): string[] {
  return Object.entries(params).filter(([name]) => name === 'ClientId' || /^ClientIdList\.\d+$/.test(name)).map(([, value]) => value);
}

/** A session directory answering from what was read for this call. */
function answered(online: ReadonlyMap<string, boolean>): SessionDirectory {
  return { isOnline: (clientId) => online.get(clientId) === true };
}

const NO_SESSIONS: SessionDirectory = { isOnline: () => false };

/**
 * Join the cluster of `resolved.redis`: connect, adopt its identity and check the options (membership.ts), apply its
 * state, and follow it.
 * @throws EmulatorStateError `EmulatorClusterUnavailable` (no Redis there) or `EmulatorClusterMismatch`;
 *   ConfigurationError `MissingDependency` without the cluster's packages.
 */
export async function joinCluster(resolved: ResolvedEmulatorOptions, rateClock: (() => number) | undefined): Promise<EmulatorCluster> {
  const parsed = parseRedisUrl(resolved.redis ?? '');
  if (!parsed.ok) throw new Error(`Emulator bug: joinCluster() without a valid redis option (${parsed.problem})`);
  const target = parsed.value;
  const modules = await loadClusterModules();
  const processId = `emu-${randomString(BASE36_LOWER, 10)}`;
  const onError = errorLog(resolved, target);
  const redis = await connectRedis(modules, target, `${processId}:state`);
  let reader: Redis | undefined;
  let membership: Membership | undefined;
  try {
    reader = await connectRedis(modules, target, `${processId}:log`, { maxRetriesPerRequest: null });
    const joined = await Membership.join(redis, {
      processId,
      instanceId: resolved.instanceId,
      instanceGiven: resolved.instanceIdSource !== 'generated',
      accessKeyId: resolved.accessKeyId,
      accessKeySecret: resolved.accessKeySecret,
      keysGiven: resolved.accessKeySource !== 'generated',
      options: sharedOptions(resolved),
      takeoverChannel: takeoverChannel(target.db),
    }, target.shown, onError);
    membership = joined.membership;
    const config: ResolvedEmulatorOptions = Object.freeze({
      ...resolved,
      instanceId: joined.identity.instanceId,
      accessKeyId: joined.identity.accessKeyId,
      accessKeySecret: joined.identity.accessKeySecret,
    });
    return await Member.start(config, { redis, reader, membership, modules, target, processId, onError, rateClock });
  } catch (error) {
    await membership?.leave();
    reader?.disconnect();
    redis.disconnect();
    throw error;
  }
}

interface MemberParts {
  readonly redis: Redis;
  readonly reader: Redis;
  readonly membership: Membership;
  readonly modules: Awaited<ReturnType<typeof loadClusterModules>>;
  readonly target: RedisTarget;
  readonly processId: string;
  readonly onError: (error: unknown) => void;
  readonly rateClock: (() => number) | undefined;
}

/** The change being applied: its clock and random bytes are every registry's while it runs. */
interface Applying {
  readonly now: number;
  readonly random: (size: number) => Buffer;
}

/** A process's membership of a cluster, as the emulator uses it. */
export type EmulatorCluster = Member;

class Member {
  /** The resolved options with the cluster's instance and account. */
  readonly config: ResolvedEmulatorOptions;
  readonly processId: string;
  /** The Redis URL with its password hidden. */
  readonly redisUrl: string;
  readonly registry: CredentialRegistry;
  readonly tokens: TokenRegistry;
  readonly broker: BrokerCluster;
  readonly api: ClusterApi;
  readonly #parts: MemberParts;
  readonly #ledger: Ledger;
  readonly #admission: SharedAdmission;
  /** What the actions answer by besides the state: the same options in every process, so every copy applies alike. */
  readonly #rules: Pick<ActionContext, 'groups' | 'parentTopics' | 'p2pTopicLength' | 'unknownInstanceCode'>;
  #queues: RedisSessionQueues | undefined;
  /**
   * The broker of this process's current start, which takeover notices are told to. A restart makes its backend before
   * its broker: a notice in between finds no connection at the old broker, which has closed them all.
   */
  #broker: Aedes | undefined;
  #applying: Applying | undefined;
  #closing: Promise<void> | undefined;

  private constructor(config: ResolvedEmulatorOptions, parts: MemberParts) {
    this.config = config;
    this.processId = parts.processId;
    this.redisUrl = parts.target.shown;
    this.#parts = parts;
    // The registries' clock and randomness are the change's while one is applied: every process gets the same state.
    const now = (): number => this.#applying?.now ?? config.now();
    const random = (size: number): Buffer => (this.#applying ? this.#applying.random(size) : randomBytes(size));
    this.registry = new CredentialRegistry({ ...config, now, randomBytes: random });
    this.tokens = new TokenRegistry({ now, randomBytes: random });
    // The revoked keys are remembered from the first change applied: a process that joins later, or starts again,
    // remembers what the cluster revoked before it, as every other process does.
    if (config.revokedCredentialRefusal === 'not-authorized') revokedKeysOf(this.registry);
    this.#rules = actionRules(config, groupDirectory(config.groups));
    this.#ledger = new Ledger(parts.redis, parts.reader, KEYS.log, (change) => this.#apply(change), parts.onError);
    this.#admission = new SharedAdmission(parts.redis, config, parts.rateClock);
    const { modules, target, processId, redis } = parts;
    // A failure of Redis reaches the client as InternalError or CONNACK 3; the log says what it was.
    const logged = <T>(work: Promise<T>): Promise<T> => work.catch((error: unknown) => {
      if (!(error instanceof ApiFault)) parts.onError(error);
      throw error;
    });
    this.broker = {
      brokerId: processId,
      backend: () => brokerBackend(modules, target, processId, {
        features: { retained: config.retainedMessages === 'allow', wills: config.willMessages === 'allow' },
        emptyQueue: (client) => this.#queues?.markEmpty(client),
        takenOver: (clientId) => {
          if (this.#broker !== undefined) tellTakenOver(this.#broker, clientId);
        },
        onError: parts.onError,
      }),
      createQueues: (limits, onOverflow) => {
        this.#queues = new RedisSessionQueues(redis, limits, onOverflow);
        return this.#queues;
      },
      createIncoming: () => new RedisIncomingSessions(redis),
      sync: () => logged(this.#ledger.barrier()),
      follow: (broker) => {
        const { membership } = parts;
        this.#broker = broker;
        yieldMovedSessions(broker);
        // Each connection counted once, from when aedes accepts its CONNECT (a takeover's new connection has its
        // CONNACK, and is to be reached by P2P, before aedes registers it once the old connection's close has ended),
        // and taken back once: at aedes' 'clientDisconnect' (aedes-registrations.ts has it come once for each
        // connection registered), or when its socket closes (also the end of one never registered), whichever comes
        // first.
        const counted = new WeakSet<object>();
        const left = (client: { id: string }): void => {
          if (counted.delete(client)) void membership.disconnected(client.id);
        };
        // (A connection closed before it is accepted, while aedes asked Redis, is neither accepted nor registered.)
        onAccepted(broker, (client) => {
          counted.add(client);
          client.conn.once('close', () => left(client));
          // The CONNACK, written right after this, waits (the connection corked) until Redis counts the client:
          // P2P messages are routed to the processes their addressee is counted on, and QuerySession answers from the
          // count, so a client that knows it is connected is one they find.
          client.conn.cork();
          void membership.connected(client.id).finally(() => client.conn.uncork());
        });
        broker.on('clientDisconnect', left);
      },
      settled: () => parts.membership.settled(),
    };
    this.api = {
      admit: (call) => logged(this.#admission.admit(call)),
      run: (action, params, handler, context) => logged(this.#run(action, params, handler, context)),
    };
  }

  static async start(config: ResolvedEmulatorOptions, parts: MemberParts): Promise<Member> {
    const member = new Member(config, parts);
    await member.#ledger.catchUp();
    member.#ledger.follow();
    return member;
  }

  /** Apply one change of the log to this process's registries. */
  #apply(change: Change): Outcome {
    if (!isEmulatedAction(change.action) || !REPLICATED_ACTIONS.has(change.action)) {
      return { ok: false, error: new Error(`The cluster's log holds a change of ${change.action}, which this emulator does not apply`) };
    }
    const handler = ACTIONS[change.action];
    this.#applying = { now: change.now, random: seededBytes(Buffer.from(change.seed, 'base64')) };
    try {
      const body = handler(change.params, { ...this.#rules, registry: this.registry, tokens: this.tokens, sessions: NO_SESSIONS, instanceId: this.config.instanceId, now: () => change.now });
      return { ok: true, body };
    } catch (error) {
      return { ok: false, error };
    } finally {
      this.#applying = undefined;
    }
  }

  async #run(action: string, params: RpcParams, handler: ActionHandler, context: ActionContext): Promise<Record<string, unknown>> {
    if (REPLICATED_ACTIONS.has(action)) {
      const outcome = await this.#ledger.propose(action, businessParams(params), Math.floor(this.config.now()));
      if (outcome.ok) return outcome.body;
      throw outcome.error;
    }
    await this.#ledger.barrier();
    const queried = queriedClientIds(params);
    const sessions = queried.length === 0 ? context.sessions : answered(await this.#parts.membership.online(queried));
    return handler(params, { ...context, sessions });
  }

  /** Queue faults for the cluster's next calls of `action` (checked by the caller). */
  failNext(action: string, code: string, count: number): Promise<void> {
    return this.#admission.failNext(action, code, count);
  }

  /** Start (or end) the cluster's fault burst (checked by the caller). */
  faultBurst(rate: number, codes: readonly string[], forMs: number): Promise<void> {
    return this.#admission.burst(rate, codes, forMs);
  }

  /** Say where this process listens. */
  announce(process: Omit<ClusterProcess, 'id'>): Promise<void> {
    return this.#parts.membership.announce(process);
  }

  /** The live processes. */
  processes(): Promise<ClusterProcess[]> {
    return this.#parts.membership.processes();
  }

  /** This process's stats with the cluster's queues and clients. */
  async stats(local: EmulatorStats): Promise<EmulatorStats> {
    const [queues, processes, online] = await Promise.all([
      this.#queues?.refresh() ?? Promise.resolve(local.mqtt.queues),
      this.#parts.membership.processes(),
      this.#parts.membership.onlineCount(),
    ]);
    return { ...local, mqtt: { ...local.mqtt, queues }, cluster: { processId: this.processId, processes: processes.length, online } };
  }

  /** Leave the cluster and close the connections. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#parts.membership.leave();
      await this.#ledger.close();
      this.#parts.redis.disconnect();
    })();
    return this.#closing;
  }
}
