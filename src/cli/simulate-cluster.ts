/**
 * `simulate` past one machine: `--shard auto/N` (the shard index from a Kubernetes Indexed Job's
 * `JOB_COMPLETION_INDEX`) and `--redis URL` (the fleet talks through one logical broker: the emulator cluster on that
 * Redis). With `--redis`, a shard uses the cluster's running processes when there are any (shard I connects to
 * process (I-1) mod M and provisions through its OpenAPI), else it starts an emulator process of its own that joins
 * the cluster (so `--processes N` makes an embedded cluster of N brokers). A `--processes` run decides once, for all
 * its shards, so that they do not split between the two.
 */
import type { SimulationTarget } from '../simulator/target.js';
import type { Shard } from '../simulator/options.js';
import { UsageError } from './io.js';

/** The Kubernetes Indexed Job's variable: the pod's index, 0 to completions - 1. */
export const JOB_INDEX_ENV = 'JOB_COMPLETION_INDEX';
/** Set by a `--processes` parent for its shards: `attach` (use the running cluster) or `embedded` (each joins it). */
export const REDIS_MODE_ENV = 'APSARAMQ_DEVICE_SIMULATE_REDIS_MODE';

/**
 * `--shard` as the simulator takes it: `auto/N` becomes `I/N` with I = JOB_COMPLETION_INDEX + 1 (the Job's index is
 * 0-based, shards 1-based); anything else is returned as given.
 * @throws UsageError when the variable is missing, not a whole number, or not below N.
 */
export function resolveShardFlag(shard: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  const match = shard === undefined ? null : /^\s*auto\s*\/\s*(\d+)\s*$/i.exec(shard);
  if (!match) return shard;
  const count = Number(match[1]);
  const raw = env[JOB_INDEX_ENV];
  const where = 'a Kubernetes Indexed Job (completionMode: Indexed) sets it to 0 … completions-1 in each pod';
  if (raw === undefined || raw.trim() === '') throw new UsageError(`--shard auto/${count} takes its index from ${JOB_INDEX_ENV}, which is not set: ${where}; elsewhere pass --shard I/${count}`);
  if (!/^\s*\d+\s*$/.test(raw)) throw new UsageError(`--shard auto/${count}: ${JOB_INDEX_ENV} is ${JSON.stringify(raw)}, not a whole number (${where})`);
  const index = Number(raw);
  if (index >= count) throw new UsageError(`--shard auto/${count}: ${JOB_INDEX_ENV} is ${index}, but a Job of ${count} completions has indexes 0 to ${count - 1}: make the Job's completions and N the same`);
  return `${index + 1}/${count}`;
}

/** Where a shard runs on the cluster, and what to close after it. */
export interface ClusterTarget {
  readonly target: SimulationTarget;
  /** Settles when an emulator process this shard started for the cluster died (never for a running cluster's). */
  readonly lost: Promise<string>;
  close(): Promise<void>;
}

/**
 * `--redis` is a Redis URL (its password never shown) and is not given with the real service's flags: the cluster is
 * the emulator's.
 */
export async function checkRedisFlags(flags: { readonly redis?: string | undefined; readonly endpoint?: string | undefined; readonly region?: string | undefined }): Promise<void> {
  if (flags.endpoint !== undefined || flags.region !== undefined) throw new UsageError(`--redis and ${flags.endpoint !== undefined ? '--endpoint' : '--region'} contradict each other: --redis runs against the emulator cluster on that Redis`);
  const { parseRedisUrl } = await import('../emulator/cluster/redis.js');
  const parsed = parseRedisUrl(flags.redis ?? '');
  if (!parsed.ok) throw new UsageError(`--redis must be ${parsed.problem}`);
}


/** What the cluster on `url` is now: its instance, account and live processes (read, never joined). */
async function inspect(url: string): Promise<Awaited<ReturnType<typeof import('../emulator/cluster/membership.js').inspectCluster>>> {
  const [{ connectRedis, loadClusterModules, parseRedisUrl }, { inspectCluster }] = await Promise.all([import('../emulator/cluster/redis.js'), import('../emulator/cluster/membership.js')]);
  const parsed = parseRedisUrl(url);
  if (!parsed.ok) throw new UsageError(`--redis must be ${parsed.problem}`);
  const redis = await connectRedis(await loadClusterModules(), parsed.value, 'simulate');
  try {
    return await inspectCluster(redis);
  } finally {
    redis.disconnect();
  }
}

/** `attach` when the cluster on `url` has live processes, else `embedded`. */
export async function clusterMode(url: string): Promise<'attach' | 'embedded'> {
  return (await inspect(url)).processes.length > 0 ? 'attach' : 'embedded';
}

/**
 * The target of one shard on the cluster of `url`: a running process of it (`attach`) or an emulator process of its
 * own that joins it (`embedded`); `mode` undefined decides by looking.
 */
export async function clusterTarget(options: {
  readonly url: string;
  readonly shard: Shard | undefined;
  readonly apiQps: number;
  readonly topic: string;
  readonly env: NodeJS.ProcessEnv;
  readonly mode: 'attach' | 'embedded' | undefined;
}): Promise<ClusterTarget> {
  const { url, env } = options;
  const { emulatorTarget, startEmulatorProcess } = await import('../simulator/target.js');
  const cluster = options.mode === 'embedded' ? undefined : await inspect(url);
  if (cluster && cluster.processes.length > 0) {
    const chosen = cluster.processes[((options.shard?.index ?? 1) - 1) % cluster.processes.length];
    if (!chosen || cluster.instanceId === undefined || cluster.accessKeyId === undefined) throw new UsageError(`The cluster on --redis lists no process to connect to`);
    const given = { id: env['ALIBABA_CLOUD_ACCESS_KEY_ID'], secret: env['ALIBABA_CLOUD_ACCESS_KEY_SECRET'] };
    // A key pair the cluster generated is kept in its Redis; one its processes were given is the environment's here.
    const secret = cluster.accessKeySecret ?? (given.id === cluster.accessKeyId ? given.secret : undefined);
    if (secret === undefined) {
      throw new UsageError(`The cluster on --redis serves the account ${cluster.accessKeyId} with keys its processes were given: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET to them`);
    }
    return {
      target: emulatorTarget({ mqttUrl: chosen.mqttUrl, apiEndpoint: chosen.apiEndpoint, instanceId: cluster.instanceId, accessKeyId: cluster.accessKeyId, accessKeySecret: secret }),
      lost: new Promise(() => undefined),
      close: async () => undefined,
    };
  }
  const { parentTopicsOf } = await import('../simulator/run.js');
  const own = await startEmulatorProcess({ qpsLimit: options.apiQps, parentTopics: parentTopicsOf(options.topic), redis: url });
  return { target: own.target, lost: own.lost, close: () => own.close() };
}
