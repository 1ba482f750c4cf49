/**
 * The sessions' QoS 2 messages awaiting their PUBREL (incoming-qos2.ts) in a cluster's Redis, so that every process
 * sees the same session: a session resumed at another process goes on with its packet ids, and a Clean Start at one
 * process discards them, and the share of a connection of the old session still open at another, for all. One hash per
 * ClientId: its generation (`g`), how many connections share in it (`n`), and a field per packet id (`m<id>`). Each
 * operation is one script on the cluster's connection, so that operations of processes working on one session never
 * interleave. aedes' discarding a session (a Clean Start's CONNECT, a session that ends or expires) deletes the hash in
 * the script its own check runs then (redis-broker.ts `ARRIVALS`).
 *
 * In place of aedes-persistence-redis' own (`incoming:<ClientId>:<packet id>` keys, never deleted at a Clean Start).
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { IncomingSessions, Share } from '../incoming-qos2.js';
import { KEYS } from './keys.js';
import { script, type Script } from './redis.js';

/** ARGV: the new generation, which the connection that starts the session shares in. */
const START = `
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'g', ARGV[1], 'n', 1)
return 1
`;

/** ARGV: a generation for a session the ClientId does not have. Returns the session's generation. */
const JOIN = `
local g = redis.call('HGET', KEYS[1], 'g')
if not g then
  g = ARGV[1]
  redis.call('HSET', KEYS[1], 'g', g)
end
redis.call('HINCRBY', KEYS[1], 'n', 1)
return g
`;

/** ARGV: the share, '1' when the session ends with the connection. */
const LEAVE = `
if redis.call('HGET', KEYS[1], 'g') ~= ARGV[1] then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'n', -1)
if n <= 0 and ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
return 1
`;

/** ARGV: the share, 'store' | 'has' | 'delete', the packet id. Returns -1 when the share is gone, else 1 or 0. */
const MESSAGE = `
if redis.call('HGET', KEYS[1], 'g') ~= ARGV[1] then return -1 end
local field = 'm' .. ARGV[3]
if ARGV[2] == 'store' then
  redis.call('HSET', KEYS[1], field, 1)
  return 1
elseif ARGV[2] == 'has' then
  return redis.call('HEXISTS', KEYS[1], field)
end
redis.call('HDEL', KEYS[1], field)
return 1
`;

function generation(): Share {
  return randomBytes(12).toString('base64url');
}

/** The sessions of a cluster, in its Redis. */
export class RedisIncomingSessions implements IncomingSessions {
  readonly #start: Script;
  readonly #join: Script;
  readonly #leave: Script;
  readonly #message: Script;

  constructor(redis: Redis) {
    this.#start = script(redis, 'apsaramqIncomingStart', START, 1);
    this.#join = script(redis, 'apsaramqIncomingJoin', JOIN, 1);
    this.#leave = script(redis, 'apsaramqIncomingLeave', LEAVE, 1);
    this.#message = script(redis, 'apsaramqIncomingMessage', MESSAGE, 1);
  }

  /** Nothing to send: aedes' discarding a session runs `ARRIVALS` (redis-broker.ts), which deletes the hash. */
  discard(): void {}

  async start(clientId: string): Promise<Share> {
    const share = generation();
    await this.#start.run(KEYS.incoming(clientId), share);
    return share;
  }

  async join(clientId: string): Promise<Share> {
    return String(await this.#join.run(KEYS.incoming(clientId), generation()));
  }

  async leave(clientId: string, share: Share, ends: boolean): Promise<void> {
    await this.#leave.run(KEYS.incoming(clientId), share, ends ? '1' : '0');
  }

  async store(clientId: string, share: Share, messageId: number): Promise<boolean> {
    return (await this.#message.run(KEYS.incoming(clientId), share, 'store', messageId)) !== -1;
  }

  async has(clientId: string, share: Share, messageId: number): Promise<boolean | undefined> {
    const found = await this.#message.run(KEYS.incoming(clientId), share, 'has', messageId);
    return found === -1 ? undefined : found === 1;
  }

  async delete(clientId: string, share: Share, messageId: number): Promise<boolean> {
    return (await this.#message.run(KEYS.incoming(clientId), share, 'delete', messageId)) !== -1;
  }
}
