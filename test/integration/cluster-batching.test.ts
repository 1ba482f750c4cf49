/**
 * The cluster shares its round trips to Redis between the CONNECTs of a burst (cluster/redis.ts TurnBatch): one read
 * of the state log's end answers every barrier asked before it was sent, and none asked after; a client's presence is
 * answered once Redis holds it, though it went with others. Checked on a real Redis, with two ledgers, one proposing
 * while the other's read is on its way, and with a membership whose first batch's answer is held back.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS } from '../../src/emulator/cluster/keys.js';
import { Ledger, type Change, type Outcome } from '../../src/emulator/cluster/ledger.js';
import { Membership } from '../../src/emulator/cluster/membership.js';
import { redisAvailable, startRedis, type TestRedis } from '../helpers/redis.js';

const { available, skipped } = redisAvailable();

describe.skipIf(!available)(`the cluster's shared reads${skipped}`, () => {
  let redis: TestRedis;
  const connections: Redis[] = [];
  const connect = (): Redis => {
    const connection = new Redis(redis.url, { enableAutoPipelining: true });
    connections.push(connection);
    return connection;
  };
  beforeAll(async () => {
    redis = await startRedis('manual');
  });
  afterAll(async () => {
    for (const connection of connections) connection.disconnect();
    await redis?.stop();
  });

  it('a barrier asked while a read of the log is on its way waits for a read of its own: it sees a change made meanwhile by another process', async () => {
    const key = 'test:log';
    const applied: string[] = [];
    const record = (change: Change): Outcome => {
      applied.push(change.params['name'] ?? '');
      return { ok: true, body: {} };
    };
    const proposer = new Ledger(connect(), connect(), key, () => ({ ok: true, body: {} }), (error) => { throw error; });
    proposer.follow();
    // The reader's first read of the log's end runs at once but its answer is held back, as if the network were slow.
    const state = connect();
    const read = state.xrevrange.bind(state) as (...args: unknown[]) => Promise<unknown>;
    let firstRead: (() => void) | undefined;
    const firstReadDone = new Promise<void>((resolve) => (firstRead = resolve));
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let reads = 0;
    (state as unknown as { xrevrange: typeof read }).xrevrange = async (...args: unknown[]) => {
      reads += 1;
      const answer = await read(...args);
      if (reads === 1) {
        firstRead?.();
        await held;
      }
      return answer;
    };
    // The reader's follower gets the change only once the first barrier is answered: the second barrier must wait for it.
    const tail = connect();
    const follow = tail.xread.bind(tail) as (...args: unknown[]) => Promise<unknown>;
    let letFollow: () => void = () => undefined;
    const following = new Promise<void>((resolve) => (letFollow = resolve));
    (tail as unknown as { xread: typeof follow }).xread = async (...args: unknown[]) => {
      const answer = await follow(...args);
      await following;
      return answer;
    };
    const events: string[] = [];
    const reader = new Ledger(state, tail, key, (change) => {
      events.push(`applied ${change.params['name'] ?? ''}`);
      return record(change);
    }, (error) => { throw error; });
    reader.follow();
    const first = reader.barrier();
    await firstReadDone;
    // The change is in the log after the first read ran, before the second barrier is asked.
    await proposer.propose('RegisterDeviceCredential', { name: 'made meanwhile' }, Date.now());
    const second = reader.barrier().then(() => events.push('second barrier'));
    release();
    await first;
    events.push('first barrier');
    letFollow();
    await second;
    expect(events).toEqual(['first barrier', 'applied made meanwhile', 'second barrier']);
    expect(applied).toEqual(['made meanwhile']);
    expect(reads).toBe(2);
    await Promise.all([proposer.close(), reader.close()]);
  });

  it('a client counts once Redis holds it: connected() resolves then, also when it waited behind a batch on its way; settled() once every change asked is in', async () => {
    // Without auto-pipelining, whose pipelines would call the wrapped script below again.
    const state = new Redis(redis.url);
    connections.push(state);
    const watcher = connect();
    const { membership } = await Membership.join(state, {
      processId: 'emu-batching', instanceId: 'mqtt-batching', instanceGiven: true, accessKeyId: 'LTAIbatching', accessKeySecret: 'batching-secret',
      keysGiven: true, options: '{}', takeoverChannel: 'test:takeover',
    }, 'redis://batching', (error) => { throw error; });
    const counted = (clientId: string): Promise<number> => watcher.hexists(KEYS.presence('emu-batching'), clientId);
    // The first batch runs at once, but its answer is held back, as if the network were slow.
    const commands = state as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const run = (commands['apsaramqRoster'] as (...args: unknown[]) => Promise<unknown>).bind(state);
    let ran: () => void = () => undefined;
    const firstRan = new Promise<void>((resolve) => (ran = resolve));
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let runs = 0;
    commands['apsaramqRoster'] = async (...args: unknown[]) => {
      runs += 1;
      const answer = await run(...args);
      if (runs === 1) {
        ran();
        await held;
      }
      return answer;
    };
    let released = false;
    const first = membership.connected('GID_demo@@@first').then(() => released);
    await firstRan;
    // Asked while the first batch is on its way: sent once that one is answered, and answered only once it is in.
    const second = membership.connected('GID_demo@@@second').then(() => counted('GID_demo@@@second'));
    released = true;
    release();
    expect(await first).toBe(true);
    expect(await second).toBe(1);
    void membership.disconnected('GID_demo@@@second');
    await membership.settled();
    expect(await counted('GID_demo@@@second')).toBe(0);
    expect(runs).toBe(3);
    await membership.leave();
  });
});
