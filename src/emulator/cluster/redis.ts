/**
 * The Redis side of a clustered emulator: its URL (checked, and shown without its password), the optional packages it
 * needs (ioredis, mqemitter-redis, aedes-persistence-redis: loaded only when `redis` is used, a missing one named with
 * the command that installs them), and connections that fail at start with a clear error instead of retrying forever.
 */
import { createRequire } from 'node:module';
import type { Redis, RedisOptions } from 'ioredis';
import { ConfigurationError, EmulatorStateError } from '../../errors.js';

/** The optional packages a clustered emulator needs, with the ranges package.json gives them. */
const CLUSTER_PEERS = ['ioredis', 'mqemitter-redis', 'aedes-persistence-redis'] as const;

/** A Redis URL: `redis://[user:password@]host[:port][/db]` or `rediss://` (TLS). */
export interface RedisTarget {
  /** As given (it may hold a password: never print it; use {@link RedisTarget.shown}). */
  readonly url: string;
  /** The URL with its password replaced by `***`. */
  readonly shown: string;
  /** The database index (the URL's path, default 0): one cluster per database. */
  readonly db: number;
}

/** Parse and check a Redis URL; `undefined` with the reason when it is not one. */
export function parseRedisUrl(value: string): { ok: true; value: RedisTarget } | { ok: false; problem: string } {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return { ok: false, problem: 'a URL such as redis://127.0.0.1:6379 (or rediss:// for TLS)' };
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') return { ok: false, problem: 'a redis:// or rediss:// URL' };
  if (url.hostname === '') return { ok: false, problem: 'a Redis URL with a host' };
  const path = url.pathname.replace(/^\//, '');
  if (path !== '' && !/^\d{1,5}$/.test(path)) return { ok: false, problem: 'a Redis URL whose path, if any, is a database number (redis://host:6379/2)' };
  const shownUrl = new URL(url.href);
  if (shownUrl.password !== '') shownUrl.password = '***';
  return { ok: true, value: { url: value, shown: shownUrl.href, db: path === '' ? 0 : Number(path) } };
}

/** A Redis URL as it may be shown: its password as `***` (a string that is not a URL, as it is). */
export function shownRedisUrl(url: string): string {
  const parsed = parseRedisUrl(url);
  return parsed.ok ? parsed.value.shown : url;
}

/** Text that may hold the URL, with the URL's password hidden. */
export function hidePassword(text: string, target: RedisTarget): string {
  const password = new URL(target.url).password;
  return password === '' ? text : text.split(password).join('***').split(decodeURIComponent(password)).join('***');
}

/** What the cluster loads from its optional packages. */
export interface ClusterModules {
  readonly Redis: typeof Redis;
  /** mqemitter-redis's factory. */
  readonly mqemitterRedis: (options: Record<string, unknown>) => MqEmitterRedis;
  /** aedes-persistence-redis's factory (a callback persistence aedes 2.0.0-beta.1 takes). */
  readonly redisPersistence: (options: { conn: Redis }) => unknown;
}

/** The parts of an mqemitter-redis instance the cluster relies on (see redis-broker.ts). */
export interface MqEmitterRedis {
  _subTopic(topic: string): string;
  emit(message: { topic: string }, done?: (error?: Error) => void): unknown;
  /** Listen to a filter; `done` once its channel is subscribed (at once when it already was). */
  on(topic: string, listener: (message: unknown, done: () => void) => void, done?: () => void): unknown;
  _containsWildcard(topic: string): boolean;
  close(cb?: () => void): unknown;
  /** MQEmitter's own close, kept by mqemitter-redis under this name. */
  _close(cb: () => void): unknown;
  /** MQEmitter's own emit (to this process's listeners only), kept by mqemitter-redis under this name. */
  _emit(message: { topic: string; payload: Buffer }): unknown;
  /** Channels whose messages mqemitter-redis leaves alone (not its own msgpack packets). */
  readonly _ignoredTopicsSet: Set<string>;
}

let modules: Promise<ClusterModules> | undefined;

/**
 * Load the three packages, once per process.
 * @throws ConfigurationError `MissingDependency` naming the first missing package and the command that installs all
 *   three; `DependencyMismatch` when mqemitter-redis lacks what the cluster's channel mapping replaces.
 */
export function loadClusterModules(): Promise<ClusterModules> {
  modules ??= (async () => {
    const [ioredis, mqemitter, persistence] = await Promise.all([importPeer('ioredis'), importPeer('mqemitter-redis'), importPeer('aedes-persistence-redis')]);
    const Redis = (ioredis as { Redis: typeof import('ioredis').Redis }).Redis;
    const mqemitterRedis = ((mqemitter as { default?: unknown }).default ?? mqemitter) as ClusterModules['mqemitterRedis'];
    const redisPersistence = ((persistence as { default?: unknown }).default ?? persistence) as ClusterModules['redisPersistence'];
    const proto = (mqemitterRedis as unknown as { prototype?: Partial<MqEmitterRedis> }).prototype;
    if (typeof proto?._subTopic !== 'function' || typeof proto._containsWildcard !== 'function' || typeof proto._close !== 'function' || typeof proto._emit !== 'function') {
      const remedy = `npm install mqemitter-redis@${peerRange('mqemitter-redis')}`;
      throw new ConfigurationError('DependencyMismatch', `The emulator's cluster needs mqemitter-redis ${peerRange('mqemitter-redis')} (it maps its channels; the installed one has no _subTopic): ${remedy}`, remedy);
    }
    return { Redis, mqemitterRedis, redisPersistence };
  })();
  modules.catch(() => {
    modules = undefined;
  });
  return modules;
}

function peerRange(name: string): string {
  try {
    const pkg = createRequire(import.meta.url)('../../../package.json') as { peerDependencies?: Record<string, string> };
    return pkg.peerDependencies?.[name] ?? '';
  } catch {
    return '';
  }
}

/** Each peer by its literal name, so that the packages the built code loads can be checked (dist-imports.test.ts). */
const IMPORTS: Readonly<Record<(typeof CLUSTER_PEERS)[number], () => Promise<unknown>>> = {
  ioredis: () => import('ioredis'),
  'mqemitter-redis': () => import('mqemitter-redis'),
  'aedes-persistence-redis': () => import('aedes-persistence-redis'),
};

async function importPeer(name: (typeof CLUSTER_PEERS)[number]): Promise<unknown> {
  try {
    return await IMPORTS[name]();
  } catch (error) {
    if ((error as { code?: unknown }).code !== 'ERR_MODULE_NOT_FOUND') throw error;
    const all = CLUSTER_PEERS.map((peer) => `${peer}@${peerRange(peer)}`.replace(/@$/, '')).join(' ');
    const remedy = `npm install ${all}`;
    throw new ConfigurationError('MissingDependency', `The emulator's redis option (emulator --redis, --cluster) needs the package ${name}, which is not installed (an optional peer dependency of apsaramq-device). Install it next to apsaramq-device: ${remedy}`, remedy);
  }
}

/**
 * A connection to the cluster's Redis, connected: a Redis that cannot be reached fails here, at start, with
 * `EmulatorClusterUnavailable` (the URL shown without its password) rather than retrying in the background. Once
 * connected, ioredis reconnects by itself after an outage; a command waits through at most a few attempts.
 */
export async function connectRedis(modules: ClusterModules, target: RedisTarget, name: string, options: RedisOptions = {}): Promise<Redis> {
  const client = new modules.Redis(target.url, {
    lazyConnect: true,
    connectionName: `apsaramq-device:${name}`,
    maxRetriesPerRequest: 3,
    enableAutoPipelining: true,
    ...options,
  });
  // ioredis reports every failed attempt as an 'error' event; unheard, it would end the process.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    client.disconnect();
    const reason = hidePassword(error instanceof Error ? error.message : String(error), target);
    throw new EmulatorStateError('EmulatorClusterUnavailable', `The emulator cannot reach the cluster's Redis at ${target.shown} (${reason})`, target.shown, error);
  }
  return client;
}

/** A Lua script of the cluster, run by its SHA once Redis has it (ioredis' `defineCommand`). */
export interface Script {
  run(...args: (string | number | Buffer)[]): Promise<unknown>;
  /** The same, with bulk replies as Buffers. */
  runBuffer(...args: (string | number | Buffer)[]): Promise<unknown>;
}

/** Define `lua` (taking `keys` keys first) on a connection. */
export function script(redis: Redis, name: string, lua: string, keys: number): Script {
  const commands = redis as unknown as Record<string, ((...args: unknown[]) => Promise<unknown>) | undefined>;
  if (commands[name] === undefined) redis.defineCommand(name, { numberOfKeys: keys, lua });
  return {
    run: (...args) => (commands[name] as (...a: unknown[]) => Promise<unknown>).apply(redis, args),
    runBuffer: (...args) => (commands[`${name}Buffer`] as (...a: unknown[]) => Promise<unknown>).apply(redis, args),
  };
}

/**
 * Work asked for while Redis is busy with the last batch, sent together: a fleet's CONNECTs arrive in bursts, and one
 * script (or one SUBSCRIBE) for a burst costs Redis and this process a fraction of one per CONNECT. What is asked in a
 * turn of the event loop goes once the turn's callbacks have run; at most one batch is on its way at a time, and what
 * is asked meanwhile goes as the next batch as soon as that one is answered, so every item is sent after it was
 * asked. Items keep their order, and batches go in the order they were made.
 */
export class TurnBatch<T, R> {
  readonly #send: (items: T[]) => Promise<readonly R[]>;
  #items: T[] = [];
  #settle: { resolve: (result: R) => void; reject: (error: unknown) => void }[] = [];
  #scheduled = false;
  #sending = false;
  /** The last item asked: once it is answered, so is every item asked before it. */
  #last: Promise<unknown> = Promise.resolve();

  /** @param send - sends a batch; resolves with one result per item, in order. */
  constructor(send: (items: T[]) => Promise<readonly R[]>) {
    this.#send = send;
  }

  /** Add an item to the next batch; resolves with its result once that batch is answered. */
  add(item: T): Promise<R> {
    if (!this.#scheduled && !this.#sending) {
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.#flush();
      });
    }
    this.#items.push(item);
    const result = new Promise<R>((resolve, reject) => this.#settle.push({ resolve, reject }));
    this.#last = result.catch(() => undefined);
    return result;
  }

  /** Resolves once every item asked so far is answered (or failed, or dropped). */
  async idle(): Promise<void> {
    await this.#last;
  }

  /** Forget what was asked and not sent yet: its callers are answered with `reason`. */
  drop(reason: Error): void {
    const settle = this.#settle;
    this.#items = [];
    this.#settle = [];
    for (const { reject } of settle) reject(reason);
  }

  #flush(): void {
    if (this.#sending || this.#items.length === 0) return;
    const items = this.#items;
    const settle = this.#settle;
    this.#items = [];
    this.#settle = [];
    this.#sending = true;
    let sent: Promise<readonly R[]>;
    try {
      sent = this.#send(items);
    } catch (error) {
      sent = Promise.reject(error);
    }
    sent.then(
      (results) => settle.forEach(({ resolve }, i) => resolve(results[i] as R)),
      (error: unknown) => settle.forEach(({ reject }) => reject(error)),
    ).finally(() => {
      this.#sending = false;
      this.#flush();
    });
  }
}
