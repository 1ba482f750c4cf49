import type { Client } from 'aedes';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TokenSessions } from '../../src/emulator/broker-token-sessions.js';
import { TokenRegistry, type TokenRecord } from '../../src/emulator/token-registry.js';
import { tokenTimer, type TokenInvalidCode, type TokenType } from '../../src/emulator/token-rules.js';

const LEAD = 5 * 60_000;

describe('tokenTimer', () => {
  it('waits for the notice, then for the expiry; both are due on their exact millisecond', () => {
    const expireTime = 1_000_000;
    expect(tokenTimer(expireTime - LEAD - 1, expireTime, LEAD, false)).toEqual({ due: 'later', inMs: 1 });
    expect(tokenTimer(expireTime - LEAD, expireTime, LEAD, false)).toEqual({ due: 'notice' });
    expect(tokenTimer(expireTime - LEAD, expireTime, LEAD, true)).toEqual({ due: 'later', inMs: LEAD });
    expect(tokenTimer(expireTime - 1, expireTime, LEAD, true)).toEqual({ due: 'later', inMs: 1 });
    expect(tokenTimer(expireTime, expireTime, LEAD, true)).toEqual({ due: 'expired' });
    expect(tokenTimer(expireTime + 5, expireTime, LEAD, false)).toEqual({ due: 'expired' });
  });

  it('a lead of 0 puts the notice on the expiry, which wins', () => {
    expect(tokenTimer(99, 100, 0, false)).toEqual({ due: 'later', inMs: 1 });
    expect(tokenTimer(100, 100, 0, false)).toEqual({ due: 'expired' });
  });

  it('a token issued inside the lead is noticed at once', () => {
    expect(tokenTimer(0, 60_000, LEAD, false)).toEqual({ due: 'notice' });
  });
});

describe('TokenSessions', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  /** Sessions on a registry with a clock the test moves; the host records what it is asked to send. */
  function setup(leadMs = LEAD) {
    let clock = 1_700_000_000_000;
    const registry = new TokenRegistry({ now: () => clock });
    const calls: string[] = [];
    const sessions = new TokenSessions(registry, { now: () => clock, leadMs, instanceId: 'mqtt-test' }, {
      expiring: (_client: Client, record: TokenRecord) => calls.push(`expiring ${record.type} ${record.expireTime - clock}`),
      invalid: (_client: Client, code: TokenInvalidCode, type: TokenType) => calls.push(`invalid ${code} ${type}`),
    });
    const apply = (type: TokenType, resources: string[], lifetimeMs: number) =>
      registry.apply({ instanceId: 'mqtt-test', type, resources, expireTime: clock + lifetimeMs });
    const client = (): Client => ({}) as Client;
    return {
      registry,
      sessions,
      calls,
      apply,
      client,
      advance: (ms: number) => {
        clock += ms;
      },
    };
  }

  it('authorizes by resource and permission; a refusal condemns the session and later packets are refused as repeated', () => {
    const t = setup();
    const w = t.apply('W', ['demo/out/#'], 60 * 60_000);
    const c = t.client();
    t.sessions.admit(c, [w.record]);
    t.sessions.ready(c);
    expect(t.sessions.authorize(c, 'W', 'demo/out/a')).toEqual({ allowed: true });
    expect(t.sessions.authorize(c, 'R', 'demo/out/a')).toEqual({ allowed: false, code: 5, type: 'W', rule: 'tokenResource', repeated: false });
    expect(t.sessions.authorize(c, 'W', 'demo/out/a')).toEqual({ allowed: false, code: 5, type: 'W', rule: 'tokenResource', repeated: true });
    expect(t.calls).toEqual([]);
  });

  it('checkAll sends the expire notice once within the lead, then condemns at the expiry', () => {
    const t = setup();
    const w = t.apply('W', ['demo/#'], 10 * 60_000);
    const c = t.client();
    t.sessions.admit(c, [w.record]);
    t.sessions.ready(c);
    t.sessions.checkAll();
    expect(t.calls).toEqual([]);
    t.advance(5 * 60_000);
    t.sessions.checkAll();
    t.sessions.checkAll();
    expect(t.calls).toEqual([`expiring W ${5 * 60_000}`]);
    t.advance(5 * 60_000);
    t.sessions.checkAll();
    t.sessions.checkAll();
    expect(t.calls).toEqual([`expiring W ${5 * 60_000}`, 'invalid 2 W']);
  });

  it('arms one timer for the earliest event of its tokens, and follows the clock when it fires', () => {
    vi.useFakeTimers();
    const t = setup();
    const r = t.apply('R', ['demo/#'], 20 * 60_000);
    const w = t.apply('W', ['demo/#'], 10 * 60_000);
    const c = t.client();
    t.sessions.admit(c, [r.record, w.record]);
    t.sessions.ready(c);
    expect(vi.getTimerCount()).toBe(1);
    // The W notice is due in 5 minutes: the timer fires then and finds the clock unmoved, so it waits again.
    vi.advanceTimersByTime(5 * 60_000);
    expect(t.calls).toEqual([]);
    t.advance(5 * 60_000);
    vi.advanceTimersByTime(5 * 60_000);
    expect(t.calls).toEqual([`expiring W ${5 * 60_000}`]);
    t.advance(5 * 60_000);
    vi.advanceTimersByTime(5 * 60_000);
    expect(t.calls).toEqual([`expiring W ${5 * 60_000}`, 'invalid 2 W']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('an upload replaces the token of its type and its notice is looked at on the next turn', async () => {
    const t = setup();
    const old = t.apply('W', ['demo/a'], 10 * 60_000);
    const fresh = t.apply('W', ['demo/b'], 2 * 60_000);
    const c = t.client();
    t.sessions.admit(c, [old.record]);
    t.sessions.ready(c);
    expect(t.sessions.upload(c, { type: 'W', token: fresh.token })).toEqual({ allowed: true });
    expect(t.sessions.authorize(c, 'W', 'demo/b')).toEqual({ allowed: true });
    expect(t.calls).toEqual([]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(t.calls).toEqual([`expiring W ${2 * 60_000}`]);
    expect(t.sessions.held(c).map((record) => record.id)).toEqual([fresh.record.id]);
  });

  it('an upload that does not verify refuses with its code and claimed type', () => {
    const t = setup();
    const w = t.apply('W', ['demo/a'], 10 * 60_000);
    const c = t.client();
    t.sessions.admit(c, [w.record]);
    t.sessions.ready(c);
    expect(t.sessions.upload(c, { type: 'R', token: w.token })).toMatchObject({ allowed: false, code: 5, type: 'R', rule: 'tokenInvalid' });
  });

  it('RevokeToken condemns the live sessions holding the token, once; ended sessions are left alone', () => {
    const t = setup();
    const w = t.apply('W', ['demo/#'], 10 * 60_000);
    const [a, b, ended] = [t.client(), t.client(), t.client()];
    for (const c of [a, b, ended]) {
      t.sessions.admit(c, [w.record]);
      t.sessions.ready(c);
    }
    t.sessions.end(ended);
    t.registry.revoke('mqtt-test', w.token);
    expect(t.calls).toEqual(['invalid 3 W', 'invalid 3 W']);
    t.sessions.checkAll();
    expect(t.calls).toHaveLength(2);
  });

  it('a session not yet ready is not told anything; when it becomes ready with a revoked token it is condemned', () => {
    const t = setup();
    const w = t.apply('W', ['demo/#'], 10 * 60_000);
    const c = t.client();
    t.sessions.admit(c, [w.record]);
    t.registry.revoke('mqtt-test', w.token);
    expect(t.calls).toEqual([]);
    t.sessions.ready(c);
    expect(t.calls).toEqual(['invalid 3 W']);
  });

  it('close() stops the timers and the revocation hook', () => {
    vi.useFakeTimers();
    const t = setup();
    const w = t.apply('W', ['demo/#'], 10 * 60_000);
    const c = t.client();
    t.sessions.admit(c, [w.record]);
    t.sessions.ready(c);
    t.sessions.close();
    expect(vi.getTimerCount()).toBe(0);
    t.registry.revoke('mqtt-test', w.token);
    expect(t.calls).toEqual([]);
  });
});
