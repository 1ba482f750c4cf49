/** The parts of the emulator's cluster that need no Redis: names, options, the log's ordering and randomness. */
import { describe, expect, it } from 'vitest';
import { processArgs } from '../../src/cli/emulator-cluster.js';
import { resolveShardFlag } from '../../src/cli/simulate-cluster.js';
import { ACTIONS, EMULATED_ACTIONS, type EmulatedAction } from '../../src/emulator/actions.js';
import { REPLICATED_ACTIONS } from '../../src/emulator/cluster/cluster.js';
import { reached, seededBytes } from '../../src/emulator/cluster/ledger.js';
import { describeDifference, sharedOptions } from '../../src/emulator/cluster/membership.js';
import { inboxChannel, routeOf, subscriptionOf } from '../../src/emulator/cluster/redis-broker.js';
import { hidePassword, parseRedisUrl, shownRedisUrl, TurnBatch } from '../../src/emulator/cluster/redis.js';
import { resolveOptions } from '../../src/emulator/options.js';
import { CredentialRegistry } from '../../src/emulator/registry.js';
import { TokenRegistry } from '../../src/emulator/token-registry.js';

const P = 'apsaramq-device:0:';
const I = `${P}i/emu-1`;

describe('the message bus\'s channels', () => {
  it('a P2P message goes to its addressee\'s processes, and every client\'s P2P subscription is its process\'s inbox, not a pattern', () => {
    const inbox = inboxChannel(P, 'emu-1');
    expect(inbox).toBe(`${P}i/emu-1`);
    expect(routeOf(P, 'demo/p2p/GID_a@@@1')).toEqual({ addressee: 'GID_a@@@1' });
    expect(subscriptionOf(P, '+/p2p/GID_a@@@1', inbox)).toEqual({ channel: inbox, pattern: false });
    expect(subscriptionOf(P, '+/p2p/GID_b@@@2', inbox)).toEqual({ channel: inbox, pattern: false });
    expect(routeOf(P, 'demo/x')).toEqual({ channel: `${P}t/demo/x` });
    expect(routeOf(P, 'demo/p2p/a/b')).toEqual({ channel: `${P}t/demo/p2p/a/b` });
  });

  it('an exact filter is a channel; a wildcard one a pattern that matches at least what it matches, its own glob characters escaped', () => {
    expect(subscriptionOf(P, 'demo/x', I)).toEqual({ channel: `${P}t/demo/x`, pattern: false });
    expect(subscriptionOf(P, 'demo/#', I)).toEqual({ channel: `${P}t/demo*`, pattern: true });
    expect(subscriptionOf(P, '#', I)).toEqual({ channel: `${P}t/*`, pattern: true });
    expect(subscriptionOf(P, 'demo/+/x', I)).toEqual({ channel: `${P}t/demo/*/x`, pattern: true });
    expect(subscriptionOf(P, 'de*mo/[a]?/#', I)).toEqual({ channel: `${P}t/de\\*mo/\\[a\\]\\?*`, pattern: true });
    // A filter naming another client's inbox with a wildcard is not an inbox.
    expect(subscriptionOf(P, '+/p2p/+', I).pattern).toBe(true);
  });
});

describe('the options a cluster shares', () => {
  it('leave out what is a process\'s own (ports, TLS, clocks, identity, its OpenAPI\'s faults) and compare the rest', () => {
    const base = resolveOptions({ env: {}, mqttPort: 1883, faultRate: 0.5 });
    const other = resolveOptions({ env: {}, mqttPort: 1884, apiPort: 1, faultRate: 0, latencyMs: { min: 1, max: 2 } });
    expect(sharedOptions(other)).toBe(sharedOptions(base));
    const stricter = resolveOptions({ env: {}, maxSubscriptions: 100, parentTopics: ['sim', 'demo'] });
    expect(describeDifference(sharedOptions(base), sharedOptions(stricter))).toBe('maxSubscriptions is 30 there, 100 here');
    expect(describeDifference(sharedOptions(base), sharedOptions(resolveOptions({ env: {}, parentTopics: ['demo'] })))).toBe('parentTopics is ["demo","sim"] there, ["demo"] here');
  });
});

describe('the redis option', () => {
  it('takes redis:// and rediss:// URLs with a database number, and shows them without the password', () => {
    const parsed = parseRedisUrl('redis://user:s3cret@cache.local:6380/4');
    expect(parsed).toEqual({ ok: true, value: { url: 'redis://user:s3cret@cache.local:6380/4', shown: 'redis://user:***@cache.local:6380/4', db: 4 } });
    if (parsed.ok) expect(hidePassword('WRONGPASS for s3cret at redis://user:s3cret@x', parsed.value)).not.toContain('s3cret');
    expect(shownRedisUrl('rediss://:pw@h')).toBe('rediss://:***@h');
    for (const bad of ['http://h:6379', 'redis://h:6379/x', 'not a url', 'redis://']) expect(parseRedisUrl(bad).ok, bad).toBe(false);
  });

  it('is refused beside dataDir, and a malformed one names the option, never the password', () => {
    expect(() => resolveOptions({ env: {}, redis: 'redis://127.0.0.1:6379', dataDir: '/tmp/x' })).toThrow(expect.objectContaining({ code: 'InvalidOption', message: expect.stringContaining('dataDir and redis contradict') }));
    expect(() => resolveOptions({ env: {}, redis: 'ftp://:pw@h' })).toThrow(expect.objectContaining({ code: 'InvalidOption', message: 'Emulator option redis must be a redis:// or rediss:// URL' }));
    expect(resolveOptions({ env: {}, redis: 'redis://127.0.0.1:6379/2' }).redis).toBe('redis://127.0.0.1:6379/2');
  });
});

describe('the state log', () => {
  it('orders stream ids by time, then sequence', () => {
    expect(reached('5-0', '4-9')).toBe(true);
    expect(reached('5-1', '5-1')).toBe(true);
    expect(reached('5-1', '5-2')).toBe(false);
    expect(reached('10-0', '9-5')).toBe(true);
  });

  it('draws the same bytes from the same seed, whatever sizes they are asked in', () => {
    const seed = Buffer.alloc(32, 7);
    const a = seededBytes(seed);
    const b = seededBytes(seed);
    expect(Buffer.concat([a(3), a(29)])).toEqual(b(32));
    expect(seededBytes(Buffer.alloc(32, 8))(32)).not.toEqual(seededBytes(seed)(32));
  });
});

describe('simulate --shard auto/N', () => {
  it('is I/N with I = JOB_COMPLETION_INDEX + 1; other values pass through', () => {
    expect(resolveShardFlag('auto/4', { JOB_COMPLETION_INDEX: '0' })).toBe('1/4');
    expect(resolveShardFlag(' auto / 4 ', { JOB_COMPLETION_INDEX: '3' })).toBe('4/4');
    expect(resolveShardFlag('2/4', {})).toBe('2/4');
    expect(resolveShardFlag(undefined, { JOB_COMPLETION_INDEX: '1' })).toBeUndefined();
    expect(() => resolveShardFlag('auto/4', {})).toThrow(expect.objectContaining({ code: 'InvalidOption', message: expect.stringContaining('JOB_COMPLETION_INDEX, which is not set') }));
    expect(() => resolveShardFlag('auto/4', { JOB_COMPLETION_INDEX: '-1' })).toThrow(/not a whole number/);
    expect(() => resolveShardFlag('auto/4', { JOB_COMPLETION_INDEX: '4' })).toThrow(/indexes 0 to 3/);
  });
});

describe('emulator --cluster', () => {
  it('gives each process the user\'s flags without those it sets itself (either spelling)', () => {
    expect(processArgs(['--cluster', '3', '--max-subscriptions', '50', '--redis=redis://h', '--json', '--mqtt-port', '1883', '--lenient', '--api-port=8080'])).toEqual(['--max-subscriptions', '50', '--lenient']);
  });
});

describe('the actions the cluster replicates through its log', () => {
  it('are exactly those that change the state: every emulated action run once, on a registry holding a device and a token', () => {
    const instanceId = 'mqtt-emu-test';
    const now = (): number => 1_800_000_000_000;
    const changing = EMULATED_ACTIONS.filter((action: EmulatedAction) => {
      const registry = new CredentialRegistry({ reRegister: 'rotate', credentialQuota: 100, now });
      const tokens = new TokenRegistry({ now });
      const context = { registry, tokens, instanceId, now, sessions: { isOnline: () => false } };
      ACTIONS.RegisterDeviceCredential({ ClientId: 'GID_demo@@@d', InstanceId: instanceId }, context);
      const { Token } = ACTIONS.ApplyToken({ Resources: 'demo/#', Actions: 'R', ExpireTime: String(now() + 3_600_000), InstanceId: instanceId }, context) as { Token: string };
      const params: Record<EmulatedAction, Record<string, string>> = {
        RegisterDeviceCredential: { ClientId: 'GID_demo@@@e', InstanceId: instanceId },
        GetDeviceCredential: { ClientId: 'GID_demo@@@d', InstanceId: instanceId },
        RefreshDeviceCredential: { ClientId: 'GID_demo@@@d', InstanceId: instanceId },
        UnRegisterDeviceCredential: { ClientId: 'GID_demo@@@d', InstanceId: instanceId },
        ListDeviceCredentialClientId: { GroupId: 'GID_demo', PageSize: '10', InstanceId: instanceId },
        ApplyToken: { Resources: 'demo/x', Actions: 'W', ExpireTime: String(now() + 3_600_000), InstanceId: instanceId },
        QueryToken: { Token, InstanceId: instanceId },
        RevokeToken: { Token, InstanceId: instanceId },
        QuerySessionByClientId: { ClientId: 'GID_demo@@@d', InstanceId: instanceId },
        BatchQuerySessionByClientIds: { 'ClientIdList.1': 'GID_demo@@@d', InstanceId: instanceId },
      };
      const before = registry.changes + tokens.changes;
      ACTIONS[action](params[action], context);
      return registry.changes + tokens.changes !== before;
    });
    expect(new Set(changing)).toEqual(REPLICATED_ACTIONS);
  });
});

describe('TurnBatch: the round trips a burst of CONNECTs shares', () => {
  /** A batch whose sends are recorded and answered by the test. */
  function recorded(): { batch: TurnBatch<string, string>; sent: string[][]; next: () => Promise<{ answer: () => void; fail: (error: Error) => void }> } {
    const sent: string[][] = [];
    const waiting: ((send: { answer: () => void; fail: (error: Error) => void }) => void)[] = [];
    const pending: { answer: () => void; fail: (error: Error) => void }[] = [];
    const batch = new TurnBatch<string, string>((items) => new Promise((resolve, reject) => {
      sent.push(items);
      const send = { answer: () => resolve(items.map((item) => `${item}!`)), fail: reject };
      const waiter = waiting.shift();
      if (waiter) waiter(send);
      else pending.push(send);
    }));
    const next = (): Promise<{ answer: () => void; fail: (error: Error) => void }> => {
      const ready = pending.shift();
      return ready ? Promise.resolve(ready) : new Promise((resolve) => waiting.push(resolve));
    };
    return { batch, sent, next };
  }

  it('what is asked in one turn goes as one batch, in order; what is asked while it is on its way goes as the next, once it is answered', async () => {
    const { batch, sent, next } = recorded();
    const a = batch.add('a');
    const b = batch.add('b');
    const first = await next();
    expect(sent).toEqual([['a', 'b']]);
    const c = batch.add('c');
    const d = batch.add('d');
    // Not sent while the first batch is on its way, whatever turns pass.
    await new Promise((resolve) => setImmediate(resolve));
    expect(sent).toEqual([['a', 'b']]);
    first.answer();
    expect([await a, await b]).toEqual(['a!', 'b!']);
    const second = await next();
    expect(sent).toEqual([['a', 'b'], ['c', 'd']]);
    second.answer();
    expect([await c, await d]).toEqual(['c!', 'd!']);
  });

  it('a batch that fails rejects its own items only; the next batch still goes', async () => {
    const { batch, sent, next } = recorded();
    const lost = batch.add('lost');
    const first = await next();
    const kept = batch.add('kept');
    first.fail(new Error('Redis went away'));
    await expect(lost).rejects.toThrow('Redis went away');
    (await next()).answer();
    expect(await kept).toBe('kept!');
    expect(sent).toEqual([['lost'], ['kept']]);
  });

  it('idle() resolves once every item asked so far is answered, the batch waiting behind one on its way included; drop() answers what is not sent yet with its reason', async () => {
    const { batch, sent, next } = recorded();
    const a = batch.add('a');
    const first = await next();
    const b = batch.add('b');
    let idle = false;
    const idled = batch.idle().then(() => {
      idle = true;
    });
    first.answer();
    expect(await a).toBe('a!');
    const second = await next();
    expect(idle).toBe(false);
    second.answer();
    await idled;
    expect(await b).toBe('b!');
    // Asked, not sent yet (it goes on the next turn): dropped, its caller told why, and nothing sent.
    const c = batch.add('c');
    batch.drop(new Error('left the cluster'));
    await expect(c).rejects.toThrow('left the cluster');
    await batch.idle();
    expect(sent).toEqual([['a'], ['b']]);
  });
});
