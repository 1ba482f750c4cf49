/**
 * The bounded queues of persistent sessions (session-queues.ts) kept in Redis, so that every process of a cluster sees
 * the same queue of a session: a message queued by the process its publisher is connected to is sent by the process
 * its subscriber reconnects to, and acknowledged there. The same bound, the same policies and the same operations as
 * {@link SessionQueues}, each one script, so that two processes working on one session's queue never interleave.
 *
 * Per session: a list of message ids, oldest first, and a hash with each message (v8-serialised, as aedes hands it
 * over), its size, its broker id and counter, and its packet id once sent; and the session's totals. The cluster's
 * totals and largest sessions are kept beside them, for the stats.
 */
import { deserialize, serialize } from 'node:v8';
import type { Redis } from 'ioredis';
import { stored, storedBytes, type QueueLimits, type QueueOverflow, type RedeliveryPace, type StoredPacket } from '../session-queues.js';
import type { QueueStats } from '../stats.js';
import { KEYS } from './keys.js';
import { script, type Script } from './redis.js';

/** Shared by the scripts: the session's totals and the cluster's, after a change of `dn` messages and `dt` bytes. */
const TOTALS = `
local function totals(n, t, dn, dt)
  redis.call('HSET', KEYS[2], 'n', n, 't', t)
  if dn ~= 0 then redis.call('HINCRBY', KEYS[3], 'messages', dn) end
  if dt ~= 0 then redis.call('HINCRBY', KEYS[3], 'bytes', dt) end
  if n > 0 then
    redis.call('ZADD', KEYS[4], n, ARGV[1])
    redis.call('ZADD', KEYS[5], t, ARGV[1])
  else
    redis.call('ZREM', KEYS[4], ARGV[1])
    redis.call('ZREM', KEYS[5], ARGV[1])
  end
end
local function forget(id)
  redis.call('HDEL', KEYS[2], 'p' .. id, 'z' .. id, 'b' .. id, 'c' .. id, 'm' .. id)
end
`;

/**
 * Queue a message (ARGV: clientId, packet, brokerId, brokerCounter, bytes, maxMessages or -1, maxBytes or -1, policy).
 * Returns `{refused, n, t, dropped states…}`: each message dropped for it as the queue's totals after the drop.
 */
const ENQUEUE = `${TOTALS}
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
local t = tonumber(redis.call('HGET', KEYS[2], 't') or '0')
local bytes = tonumber(ARGV[5])
local maxM = tonumber(ARGV[6])
local maxB = tonumber(ARGV[7])
local n0, t0 = n, t
local function fits() return (maxM < 0 or n < maxM) and (maxB < 0 or t + bytes <= maxB) end
local reply = {0, 0, 0}
if not fits() and ARGV[8] == 'drop-oldest' then
  for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    if fits() then break end
    if redis.call('HEXISTS', KEYS[2], 'm' .. id) == 0 then
      local size = tonumber(redis.call('HGET', KEYS[2], 'z' .. id) or '0')
      redis.call('LREM', KEYS[1], 1, id)
      forget(id)
      n = n - 1
      t = t - size
      reply[#reply + 1] = n
      reply[#reply + 1] = t
    end
  end
end
if not fits() then
  reply[1] = 1
else
  local id = redis.call('HINCRBY', KEYS[2], 'seq', 1)
  redis.call('RPUSH', KEYS[1], id)
  redis.call('HSET', KEYS[2], 'p' .. id, ARGV[2], 'z' .. id, bytes, 'b' .. id, ARGV[3], 'c' .. id, ARGV[4])
  n = n + 1
  t = t + bytes
end
totals(n, t, n - n0, t - t0)
reply[2] = n
reply[3] = t
return reply
`;

/**
 * A message is being sent (ARGV: clientId, brokerId or '', brokerCounter, messageId, packet, bytes): the first message
 * of the same broker id and counter takes the packet id; or the first of another broker id holding that packet id is
 * replaced by the packet (a PUBREL standing for a QoS 2 message), under a new id in the same place, as SessionQueues
 * puts a new object there (a redelivery under way skips the message it replaced). Same walk as SessionQueues.update.
 */
const UPDATE = `${TOTALS}
for at, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local b = redis.call('HGET', KEYS[2], 'b' .. id)
  if b == ARGV[2] then
    if redis.call('HGET', KEYS[2], 'c' .. id) == ARGV[3] then
      redis.call('HSET', KEYS[2], 'm' .. id, ARGV[4])
      return 1
    end
  elseif redis.call('HGET', KEYS[2], 'm' .. id) == ARGV[4] then
    local old = tonumber(redis.call('HGET', KEYS[2], 'z' .. id) or '0')
    local size = tonumber(ARGV[6])
    forget(id)
    id = redis.call('HINCRBY', KEYS[2], 'seq', 1)
    redis.call('LSET', KEYS[1], at - 1, id)
    redis.call('HSET', KEYS[2], 'p' .. id, ARGV[5], 'z' .. id, size, 'b' .. id, ARGV[2], 'c' .. id, ARGV[3])
    if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'm' .. id, ARGV[4]) end
    local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
    local t = tonumber(redis.call('HGET', KEYS[2], 't') or '0') + size - old
    totals(n, t, 0, size - old)
    return 1
  end
end
return 0
`;

/**
 * Forget a message (ARGV: clientId, mode 'unsent' or 'sent', brokerId, brokerCounter, messageId): the first unsent
 * one of that broker id and counter, or the first holding that packet id. Returns `{packet, messageId}` or nothing.
 */
const CLEAR = `${TOTALS}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local hit
  if ARGV[2] == 'unsent' then
    hit = redis.call('HGET', KEYS[2], 'b' .. id) == ARGV[3] and redis.call('HGET', KEYS[2], 'c' .. id) == ARGV[4]
  else
    hit = redis.call('HGET', KEYS[2], 'm' .. id) == ARGV[5]
  end
  if hit then
    local packet = redis.call('HGET', KEYS[2], 'p' .. id)
    local messageId = redis.call('HGET', KEYS[2], 'm' .. id) or ''
    local size = tonumber(redis.call('HGET', KEYS[2], 'z' .. id) or '0')
    redis.call('LREM', KEYS[1], 1, id)
    forget(id)
    local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0') - 1
    local t = tonumber(redis.call('HGET', KEYS[2], 't') or '0') - size
    totals(n, t, -1, -size)
    if n == 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
    return {packet, messageId}
  end
end
return false
`;

/** Every message of a session, oldest first, with its id and packet id ('' while unsent): `{id, packet, messageId, …}`. */
const LIST = `
local reply = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  reply[#reply + 1] = id
  reply[#reply + 1] = redis.call('HGET', KEYS[2], 'p' .. id) or ''
  reply[#reply + 1] = redis.call('HGET', KEYS[2], 'm' .. id) or ''
end
return reply
`;

/**
 * A page of a session's messages (ARGV: first index, count, the last id the previous page listed or ''), oldest first,
 * after its totals and where the next page starts: `{messages, bytes, next, read, id, packet, messageId, …}`
 * (queue-view.ts reads a queue page by page, never whole). Ids grow along the list (a replaced message gets a new one
 * in place), and messages leave it from anywhere before the page too (acknowledged, dropped) and shift it left: the
 * page starts right after the last id listed, wherever it is now, and lists only ids past it, so that nothing still
 * queued is skipped and nothing is listed twice, but for a message replaced by its PUBREL between two pages (its new
 * id is past the last one listed: it is listed again, as its PUBREL).
 */
const PAGE = `
local reply = {redis.call('HGET', KEYS[2], 'n') or '0', redis.call('HGET', KEYS[2], 't') or '0', 0, 0}
local from = tonumber(ARGV[1])
local last = tonumber(ARGV[3])
if last then
  local i = math.min(from, redis.call('LLEN', KEYS[1])) - 1
  while i >= 0 and tonumber(redis.call('LINDEX', KEYS[1], i)) > last do i = i - 1 end
  from = i + 1
end
local ids = redis.call('LRANGE', KEYS[1], from, from + tonumber(ARGV[2]) - 1)
reply[3] = from + #ids
reply[4] = #ids
for _, id in ipairs(ids) do
  if not last or tonumber(id) > last then
    reply[#reply + 1] = id
    reply[#reply + 1] = redis.call('HGET', KEYS[2], 'p' .. id) or ''
    reply[#reply + 1] = redis.call('HGET', KEYS[2], 'm' .. id) or ''
  end
end
return reply
`;

/** Messages per page of {@link RedisSessionQueues.peek}. */
const PEEK_PAGE = 64;

/** The cluster's totals: `{sessions, messages, bytes, largestMessages, largestBytes}`. */
const STATS = `
local largestM = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local largestB = redis.call('ZREVRANGE', KEYS[3], 0, 0, 'WITHSCORES')
return {redis.call('ZCARD', KEYS[2]), redis.call('HGET', KEYS[1], 'messages') or '0', redis.call('HGET', KEYS[1], 'bytes') or '0', largestM[2] or '0', largestB[2] or '0'}
`;

/** A limit as the scripts take it: none is -1. */
function limitArg(limit: number): string {
  return Number.isFinite(limit) ? String(limit) : '-1';
}

/** The fields of a packet that are kept: a packet being sent (aedes' QoSPacket) also holds its client. */
const FIELDS = ['cmd', 'brokerId', 'brokerCounter', 'topic', 'payload', 'qos', 'retain', 'dup', 'messageId', 'clientId', 'nl', 'properties', 'messageExpiry', 'reasonCode'] as const;

/** A packet as stored: its fields, Buffers kept as Buffers. */
function encode(packet: StoredPacket): Buffer {
  const plain: Record<string, unknown> = {};
  for (const field of FIELDS) if (Object.hasOwn(packet, field)) plain[field] = packet[field];
  return serialize(plain);
}

function decode(blob: Buffer, messageId: string): StoredPacket {
  const packet = deserialize(blob) as StoredPacket;
  if (packet.payload instanceof Uint8Array && !Buffer.isBuffer(packet.payload)) packet.payload = Buffer.from(packet.payload);
  packet.messageId = messageId === '' ? undefined : Number(messageId);
  return packet;
}

const EMPTY: QueueStats = Object.freeze({ sessions: 0, messages: 0, bytes: 0, largestMessages: 0, largestBytes: 0 });

/** The persistent sessions' queues of a cluster, in its Redis. */
export class RedisSessionQueues {
  readonly #scripts: Record<'enqueue' | 'update' | 'clear' | 'list' | 'page' | 'stats', Script>;
  #limits: QueueLimits;
  #onOverflow: QueueOverflow;
  #last: QueueStats = EMPTY;
  /** Clients whose CONNECT found their queue empty (redis-broker.ts), until the read right after their CONNACK. */
  readonly #foundEmpty = new WeakSet<object>();

  constructor(redis: Redis, limits: QueueLimits, onOverflow: QueueOverflow) {
    this.#scripts = {
      enqueue: script(redis, 'apsaramqQueueEnqueue', ENQUEUE, 5),
      update: script(redis, 'apsaramqQueueUpdate', UPDATE, 5),
      clear: script(redis, 'apsaramqQueueClear', CLEAR, 5),
      list: script(redis, 'apsaramqQueueList', LIST, 2),
      page: script(redis, 'apsaramqQueuePage', PAGE, 2),
      stats: script(redis, 'apsaramqQueueStats', STATS, 3),
    };
    this.#limits = limits;
    this.#onOverflow = onOverflow;
  }

  configure(limits: QueueLimits, onOverflow: QueueOverflow): void {
    this.#limits = limits;
    this.#onOverflow = onOverflow;
  }

  #keys(clientId: string): string[] {
    return [KEYS.queue(clientId), KEYS.queueItems(clientId), KEYS.queueTotals, KEYS.queueMessages, KEYS.queueBytes];
  }

  async enqueue(clientId: string, packet: StoredPacket): Promise<void> {
    const copy = stored(packet);
    const { maxMessages, maxBytes, policy } = this.#limits;
    const reply = (await this.#scripts.enqueue.run(...this.#keys(clientId), clientId, encode(copy), copy.brokerId ?? '', String(copy.brokerCounter ?? ''), String(storedBytes(copy)), limitArg(maxMessages), limitArg(maxBytes), policy)) as number[];
    const [refused = 0, messages = 0, bytes = 0, ...drops] = reply;
    for (let i = 0; i + 1 < drops.length; i += 2) this.#onOverflow(clientId, 'dropped', { messages: drops[i] ?? 0, bytes: drops[i + 1] ?? 0 });
    if (refused === 1) this.#onOverflow(clientId, 'refused', { messages, bytes });
  }

  async update(clientId: string, packet: StoredPacket): Promise<void> {
    await this.#scripts.update.run(...this.#keys(clientId), clientId, packet.brokerId ?? '', String(packet.brokerCounter ?? ''), String(packet.messageId ?? ''), encode(packet), String(storedBytes(packet)));
  }

  async clear(clientId: string, packet: StoredPacket): Promise<StoredPacket | undefined> {
    const unsent = packet.messageId === undefined && packet.brokerId !== undefined;
    const reply = (await this.#scripts.clear.runBuffer(...this.#keys(clientId), clientId, unsent ? 'unsent' : 'sent', packet.brokerId ?? '', String(packet.brokerCounter ?? ''), String(packet.messageId ?? ''))) as [Buffer, Buffer] | null;
    return reply ? decode(reply[0], reply[1].toString()) : undefined;
  }

  /** This client's CONNECT found its queue empty: the next {@link RedisSessionQueues.emptyAtConnect} of it says so. */
  markEmpty(client: object): void {
    this.#foundEmpty.add(client);
  }

  /** Did this client's CONNECT find its queue empty (and nothing asked since)? Answers once. */
  emptyAtConnect(client: object): boolean {
    return this.#foundEmpty.delete(client);
  }

  async list(clientId: string): Promise<StoredPacket[]> {
    return (await this.#held(clientId)).map(({ packet }) => packet);
  }

  /**
   * Walk the session's messages oldest first, a page at a time, while `take` says go on; its totals as the first page
   * found them. Each page starts after the last message the previous one listed, wherever the list holds it now: a
   * message another process cleared meanwhile shifts nothing still queued out of the walk.
   */
  async peek(clientId: string, take: (packet: StoredPacket) => boolean): Promise<{ messages: number; bytes: number }> {
    let totals: { messages: number; bytes: number } | undefined;
    let last = '';
    // A first page of one message: a count-only read (`GET /_emulator/queue?count=1`, which a game day repeats while
    // its subscriber's backlog drains) stops there, and fetches one message's blob, not a page of them.
    for (let from = 0, size = 1; ; size = PEEK_PAGE) {
      const reply = (await this.#scripts.page.runBuffer(KEYS.queue(clientId), KEYS.queueItems(clientId), String(from), String(size), last)) as Buffer[];
      const [n, t, next, read, ...page] = reply;
      totals ??= { messages: Number(n?.toString() ?? 0), bytes: Number(t?.toString() ?? 0) };
      for (let i = 0; i + 2 < page.length; i += 3) {
        last = (page[i] as Buffer).toString();
        const blob = page[i + 1] as Buffer;
        if (blob.length > 0 && !take(decode(blob, (page[i + 2] as Buffer).toString()))) return totals;
      }
      if (Number(read?.toString() ?? 0) < size) return totals;
      from = Number(next?.toString() ?? 0);
    }
  }

  /** The session's messages, oldest first, each with the id it is held under (a replaced message gets a new one). */
  async #held(clientId: string): Promise<{ id: string; packet: StoredPacket }[]> {
    const reply = (await this.#scripts.list.runBuffer(KEYS.queue(clientId), KEYS.queueItems(clientId))) as Buffer[];
    const held: { id: string; packet: StoredPacket }[] = [];
    for (let i = 0; i + 2 < reply.length; i += 3) {
      const blob = reply[i + 1] as Buffer;
      if (blob.length > 0) held.push({ id: (reply[i] as Buffer).toString(), packet: decode(blob, (reply[i + 2] as Buffer).toString()) });
    }
    return held;
  }

  /**
   * {@link SessionQueues.redeliver} on the session's queue in Redis: the messages it holds when this is called, at
   * `pace`, skipping each that left the queue (or was replaced) meanwhile, then `end` (once the queue is read, at once
   * when it holds none). Each batch is read as the queue holds it then, so another process's acknowledgement or drop
   * counts. A read that fails calls `fail`: the messages stay queued for the next reconnect.
   */
  redeliver(clientId: string, pace: RedeliveryPace, push: (packet: StoredPacket) => void, end: () => void, gone: () => boolean = () => false, fail: (error: Error) => void = () => end()): () => void {
    let stopped = false;
    let timer: unknown;
    const stop = (): void => {
      stopped = true;
      if (timer !== undefined) pace.timers.clearTimeout(timer);
      timer = undefined;
    };
    const failed = (error: unknown): void => {
      if (stopped) return;
      stop();
      fail(error instanceof Error ? error : new Error(String(error)));
    };
    const step = async (pending: string[]): Promise<void> => {
      timer = undefined;
      if (stopped || gone()) {
        stopped = true;
        return;
      }
      const held = new Map((await this.#held(clientId)).map(({ id, packet }) => [id, packet]));
      // The client may have gone while the queue was read.
      if (stopped || gone()) {
        stopped = true;
        return;
      }
      for (let sent = 0; sent < pace.batchSize && pending.length > 0;) {
        const packet = held.get(pending.shift() as string);
        if (packet === undefined) continue;
        push(packet);
        sent++;
      }
      if (pending.length === 0) end();
      else timer = pace.timers.setTimeout(() => void step(pending).catch(failed), pace.intervalMs);
    };
    // The delay runs from the reconnect, while the queue as it is now is read.
    const first = this.#held(clientId).then((held) => held.map(({ id }) => id));
    timer = pace.timers.setTimeout(() => void first.then(step).catch(failed), pace.delayMs());
    first.then((pending) => {
      if (pending.length > 0 || stopped) return;
      stop();
      end();
    }, failed);
    return stop;
  }

  /** The cluster's totals as last read ({@link RedisSessionQueues.refresh} reads them again). */
  stats(): QueueStats {
    return { ...this.#last };
  }

  /** Read the cluster's totals now. */
  async refresh(): Promise<QueueStats> {
    const [sessions, messages, bytes, largestMessages, largestBytes] = ((await this.#scripts.stats.run(KEYS.queueTotals, KEYS.queueMessages, KEYS.queueBytes)) as (string | number)[]).map(Number);
    this.#last = { sessions: sessions ?? 0, messages: messages ?? 0, bytes: bytes ?? 0, largestMessages: largestMessages ?? 0, largestBytes: largestBytes ?? 0 };
    return { ...this.#last };
  }
}
