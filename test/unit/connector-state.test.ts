import { describe, expect, it } from 'vitest';
import { type CoreOptions, type Effect, type Input, type Model, classifyRefusal, initialModel, step } from '../../src/connector/state.js';

const options: CoreOptions = {
  protocolVersion: 4,
  reconnect: { minDelayMs: 1_000, maxDelayMs: 60_000 },
  takeover: { minDelayMs: 5_000, maxDelayMs: 300_000, giveUpAfter: Number.POSITIVE_INFINITY },
  stableSessionMs: 10_000,
  maxRefetches: 3,
};
const half = (): number => 0.5;

/** Feed inputs in order; returns the last model and every effect, as short strings. */
function run(inputs: Input[], from: Model = initialModel(), opts: CoreOptions = options): { model: Model; effects: string[]; states: string[] } {
  let model = from;
  const effects: string[] = [];
  const states: string[] = [];
  for (const input of inputs) {
    const next = step(model, input, opts, half);
    model = next.model;
    states.push(model.state);
    effects.push(...next.effects.map(show));
  }
  return { model, effects, states };
}

function show(effect: Effect): string {
  switch (effect.type) {
    case 'wait':
      return `wait ${effect.delayMs}`;
    case 'auth-failed':
      return `auth-failed ${effect.code}`;
    case 'takeover':
      return `takeover ${effect.confirmed ? 'confirmed' : 'suspected'}`;
    case 'report':
    case 'close':
      return effect.problem ? `${effect.type} ${JSON.stringify(effect.problem)}` : effect.type;
    default:
      return effect.type;
  }
}

const online = (now = 0): Model => run([{ type: 'accepted', now }]).model;

describe('the first connect', () => {
  it('CONNACK 0: online', () => {
    expect(run([{ type: 'accepted', now: 0 }])).toMatchObject({ effects: ['online'], states: ['online'] });
  });

  it.each([
    ['unreachable'],
    ['timeout'],
    ['untrusted'],
    ['http'],
    ['protocol'],
  ] as const)('no CONNACK (%s): closed at once, no retry', (failure) => {
    expect(run([{ type: 'failed', failure }])).toMatchObject({ effects: [`close {"code":"ConnectFailed","failure":"${failure}"}`], states: ['closed'] });
  });

  it('refused credential: the ladder asks at most three times, then CredentialRejected', () => {
    const refused: Input = { type: 'refused', code: 4 };
    const fresh: Input = { type: 'credential', verdict: 'use' };
    const { effects, states } = run([refused, fresh, refused, fresh, refused, fresh, refused]);
    expect(effects).toEqual([
      'auth-failed 4', 'refetch', 'use-credential', 'connect',
      'auth-failed 4', 'refetch', 'use-credential', 'connect',
      'auth-failed 4', 'refetch', 'use-credential', 'connect',
      'auth-failed 4', 'close {"code":"CredentialRejected","connackCode":4,"why":"exhausted"}',
    ]);
    expect(states.at(-1)).toBe('closed');
  });

  it('the same refused key ends the episode without another CONNECT; a non-credential is InvalidCredential', () => {
    expect(run([{ type: 'refused', code: 5 }, { type: 'credential', verdict: 'same-key' }]).effects).toEqual(['auth-failed 5', 'refetch', 'close {"code":"CredentialRejected","why":"same-key"}']);
    expect(run([{ type: 'refused', code: 4 }, { type: 'credential', verdict: 'not-a-credential' }]).effects.at(-1)).toBe('close {"code":"InvalidCredential","verdict":"not-a-credential"}');
  });

  it('a failing source during the first connect closes (the caller decides); after it, it is retried later', () => {
    expect(run([{ type: 'refused', code: 4 }, { type: 'source-failed', retryable: true }]).effects.at(-1)).toBe('close {"code":"CredentialRejected","why":"source-failed"}');
    const later = run([{ type: 'lost', end: { kind: 'error' }, now: 100 }, { type: 'timer' }, { type: 'refused', code: 4 }, { type: 'source-failed', retryable: true }], online());
    expect(later.effects).toEqual(['offline', 'wait 500', 'connect', 'auth-failed 4', 'refetch', 'report {"code":"SourceFailed"}', 'wait 1000']);
    expect(later.model.refetches).toBe(0); // the failed step is not counted
  });

  it('classifies refusals by number, per protocol version', () => {
    expect([1, 2, 3, 4, 5].map((c) => classifyRefusal(c, 4))).toEqual(['permanent', 'identifier', 'unavailable', 'credential', 'credential']);
    expect([0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x97, 0x9c, 0x9f].map((c) => classifyRefusal(c, 5))).toEqual([
      'identifier', 'credential', 'credential', 'unavailable', 'unavailable', 'permanent', 'unavailable', 'permanent', 'unavailable',
    ]);
    expect(run([{ type: 'refused', code: 0x86 }], initialModel(), { ...options, protocolVersion: 5 }).effects).toEqual(['auth-failed 134', 'refetch']);
    expect(run([{ type: 'refused', code: 2 }]).effects).toEqual(['close {"code":"IdentifierRejected","connackCode":2,"retryable":false}']);
    expect(run([{ type: 'refused', code: 3 }]).effects).toEqual(['close {"code":"ConnackRefused","connackCode":3,"retryable":true}']);
  });
});

describe('after the first connect', () => {
  it('a lost session backs off with full jitter and reconnects; every failure while the broker is down backs off further, forever', () => {
    const inputs: Input[] = [{ type: 'lost', end: { kind: 'closed' }, now: 100 }];
    for (let i = 0; i < 10; i++) inputs.push({ type: 'timer' }, { type: 'failed', failure: 'unreachable' });
    inputs.push({ type: 'timer' }, { type: 'accepted', now: 200_000 });
    const { effects, model } = run(inputs, online());
    // random 0.5: half the ceiling min(60 s, 1 s x 2^attempt)
    expect(effects.filter((e) => e.startsWith('wait'))).toEqual(['wait 500', 'wait 1000', 'wait 2000', 'wait 4000', 'wait 8000', 'wait 16000', 'wait 30000', 'wait 30000', 'wait 30000', 'wait 30000', 'wait 30000']);
    expect(effects).not.toContain(expect.stringContaining('close'));
    expect(effects).not.toContain(expect.stringContaining('takeover'));
    expect(model.state).toBe('online');
  });

  it('a broker that restarts eight times, faster than the reconnect delay, is at most a suspected takeover, never a close', () => {
    let model = online();
    const effects: string[] = [];
    let now = 0;
    for (let i = 0; i < 8; i++) {
      now += 2_000;
      const r = run([{ type: 'lost', end: { kind: 'closed' }, now }, { type: 'timer' }, { type: 'accepted', now: now + 500 }], model);
      model = r.model;
      effects.push(...r.effects);
    }
    expect(model.state).toBe('online');
    expect(effects.filter((e) => e.startsWith('close'))).toEqual([]);
    expect(effects.filter((e) => e.startsWith('takeover'))).toEqual(Array(7).fill('takeover suspected'));
    // Longer waits after each suspected takeover: 5 s x 2^(n-1) at random 0.5 is 3/4 of the ceiling.
    expect(effects.filter((e) => e.startsWith('wait')).slice(0, 4)).toEqual(['wait 500', 'wait 1000', 'wait 3750', 'wait 7500']);
  });

  it('MQTT 5: DISCONNECT 0x8E is a confirmed takeover at once, with the longer delay', () => {
    const v5 = { ...options, protocolVersion: 5 as const };
    const { effects } = run([{ type: 'lost', end: { kind: 'disconnect', reasonCode: 0x8e }, now: 100 }], online(), v5);
    expect(effects).toEqual(['offline', 'takeover confirmed', 'wait 3750']);
  });

  it('takeover.giveUpAfter is opt-in: then TakeoverLoop closes', () => {
    const v5 = { ...options, protocolVersion: 5 as const, takeover: { ...(options.takeover as object), giveUpAfter: 2 } as CoreOptions['takeover'] };
    const taken: Input = { type: 'lost', end: { kind: 'disconnect', reasonCode: 0x8e }, now: 100 };
    const { effects, model } = run([taken, { type: 'timer' }, { type: 'accepted', now: 200 }, { ...taken, now: 300 }], online(), v5);
    expect(effects.slice(-1)).toEqual(['close {"code":"TakeoverLoop","streak":2}']);
    expect(model.state).toBe('closed');
  });

  it('a session that lasted stableSessionMs resets the backoff', () => {
    const short = run([{ type: 'lost', end: { kind: 'error' }, now: 100 }, { type: 'timer' }, { type: 'accepted', now: 200 }, { type: 'lost', end: { kind: 'error' }, now: 300 }], online());
    expect(short.effects.filter((e) => e.startsWith('wait'))).toEqual(['wait 500', 'wait 1000']);
    const stable = run([{ type: 'lost', end: { kind: 'error' }, now: 100 }, { type: 'timer' }, { type: 'accepted', now: 200 }, { type: 'lost', end: { kind: 'error' }, now: 10_200 }], online());
    expect(stable.effects.filter((e) => e.startsWith('wait'))).toEqual(['wait 500', 'wait 500']);
  });

  it('reconnect: false closes on the first loss', () => {
    expect(run([{ type: 'lost', end: { kind: 'closed' }, now: 1 }], online(), { ...options, reconnect: false }).effects).toEqual(['offline', 'close {"code":"ConnectionLost"}']);
  });

  it('failures that cannot heal by themselves are reported, and retried', () => {
    const { effects } = run([{ type: 'lost', end: { kind: 'error' }, now: 1 }, { type: 'timer' }, { type: 'failed', failure: 'untrusted' }], online());
    expect(effects).toEqual(['offline', 'wait 500', 'connect', 'report {"code":"ConnectFailed","failure":"untrusted"}', 'wait 1000']);
  });
});

describe('ending', () => {
  it('end() while online flushes first; a lost session or the flush ends it; a second end(true) ends it at once', () => {
    expect(run([{ type: 'end', graceful: true }, { type: 'flushed' }], online())).toMatchObject({ effects: ['flush', 'close'], states: ['closing', 'closed'] });
    expect(run([{ type: 'end', graceful: true }, { type: 'lost', end: { kind: 'closed' }, now: 5 }], online()).effects).toEqual(['flush', 'close']);
    expect(run([{ type: 'end', graceful: true }, { type: 'end', graceful: false }], online()).effects).toEqual(['flush', 'close']);
  });

  it('end() while offline or backing off closes at once, and nothing happens after closed', () => {
    const lost = run([{ type: 'lost', end: { kind: 'error' }, now: 1 }], online()).model;
    const ended = run([{ type: 'end', graceful: true }, { type: 'timer' }, { type: 'accepted', now: 2 }, { type: 'end', graceful: true }], lost);
    expect(ended).toMatchObject({ effects: ['close'], states: ['closed', 'closed', 'closed', 'closed'] });
  });

  it('abort closes with Aborted in any state', () => {
    expect(run([{ type: 'abort' }]).effects).toEqual(['close {"code":"Aborted"}']);
    expect(run([{ type: 'abort' }], online()).effects).toEqual(['close {"code":"Aborted"}']);
  });
});
