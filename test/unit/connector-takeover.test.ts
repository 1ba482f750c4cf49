import { describe, expect, it } from 'vitest';
import {
  NO_TAKEOVER,
  SESSION_TAKEN_OVER,
  SUSPECT_AFTER,
  type SessionEnd,
  type TakeoverState,
  onConnectOutcome,
  onSessionEnd,
  takeoverCeiling,
  takeoverDelay,
  takeoverGiveUp,
} from '../../src/connector/takeover.js';

const delays = { minDelayMs: 5_000, maxDelayMs: 300_000 };
const v3: { protocolVersion: 4 | 5; stableSessionMs: number; options: typeof delays } = { protocolVersion: 4, stableSessionMs: 10_000, options: delays };
const v5 = { ...v3, protocolVersion: 5 as const };

/** A session that lasted `lastedMs` ended with `end`, then the next CONNECT came to `outcome`. */
function cycle(state: TakeoverState, end: SessionEnd, outcome: 'accepted' | 'refused' | 'failed', lastedMs = 1_000, context = v3) {
  const ended = onSessionEnd(state, end, { ...context, lastedMs });
  const connected = onConnectOutcome(ended.state, outcome);
  return { state: connected.state, verdicts: [ended.verdict, connected.verdict].filter(Boolean) };
}

describe('takeover detection', () => {
  it('MQTT 5: DISCONNECT 0x8E is a confirmed takeover; another reason or an error is none', () => {
    expect(SESSION_TAKEN_OVER).toBe(0x8e);
    const taken = onSessionEnd(NO_TAKEOVER, { kind: 'disconnect', reasonCode: 0x8e }, { ...v5, lastedMs: 60_000 });
    expect(taken).toEqual({ state: { streak: 1, pending: false, silent: 0 }, verdict: 'confirmed' });
    for (const end of [{ kind: 'disconnect', reasonCode: 0x8b }, { kind: 'error' }] as const) {
      let state = NO_TAKEOVER;
      for (let i = 0; i < 3; i++) {
        const next = cycle(state, end, 'accepted', 1_000, v5);
        expect(next).toEqual({ state: NO_TAKEOVER, verdicts: [] });
        state = next.state;
      }
    }
  });

  it('MQTT 5: a silent close is judged as over 3.1.1 (Mosquitto 2.0.11 sends no 0x8E)', () => {
    const once = cycle(NO_TAKEOVER, { kind: 'closed' }, 'accepted', 1_000, v5);
    expect(once.verdicts).toEqual([]);
    expect(cycle(once.state, { kind: 'closed' }, 'accepted', 1_000, v5).verdicts).toEqual(['suspected']);
  });

  it('MQTT 3.1.1: one silent close followed by an accepted CONNECT is not enough (a quick broker restart looks the same)', () => {
    expect(SUSPECT_AFTER).toBe(2);
    const once = cycle(NO_TAKEOVER, { kind: 'closed' }, 'accepted');
    expect(once.verdicts).toEqual([]);
    const twice = cycle(once.state, { kind: 'closed' }, 'accepted');
    expect(twice.verdicts).toEqual(['suspected']);
    expect(twice.state.streak).toBe(1);
    const thrice = cycle(twice.state, { kind: 'closed' }, 'accepted');
    expect(thrice.verdicts).toEqual(['suspected']);
    expect(thrice.state.streak).toBe(2);
  });

  it('MQTT 3.1.1: a failed CONNECT in between means the broker was down: no takeover, and the run is over', () => {
    let state = cycle(cycle(NO_TAKEOVER, { kind: 'closed' }, 'accepted').state, { kind: 'closed' }, 'accepted').state;
    expect(state.streak).toBe(1);
    const ended = onSessionEnd(state, { kind: 'closed' }, { ...v3, lastedMs: 1_000 });
    state = onConnectOutcome(ended.state, 'failed').state;
    expect(state).toEqual(NO_TAKEOVER);
    expect(onConnectOutcome(state, 'accepted')).toEqual({ state: NO_TAKEOVER });
  });

  it('a broker restarting many times in a row, each time seen down by one CONNECT, is never a takeover', () => {
    let state = NO_TAKEOVER;
    for (let i = 0; i < 20; i++) {
      const ended = onSessionEnd(state, { kind: 'closed' }, { ...v3, lastedMs: 1_500 });
      expect(ended.verdict).toBeUndefined();
      const failed = onConnectOutcome(ended.state, 'failed');
      const accepted = onConnectOutcome(failed.state, 'accepted');
      expect(accepted.verdict).toBeUndefined();
      state = accepted.state;
    }
    expect(state).toEqual(NO_TAKEOVER);
  });

  it('socket errors, a refused CONNECT and a message-blamed close are never a takeover', () => {
    for (const end of [{ kind: 'error' }, { kind: 'message' }] as const) {
      let state = NO_TAKEOVER;
      for (let i = 0; i < 5; i++) {
        const next = cycle(state, end, 'accepted');
        expect(next.verdicts).toEqual([]);
        state = next.state;
      }
    }
    const refused = cycle(cycle(NO_TAKEOVER, { kind: 'closed' }, 'accepted').state, { kind: 'closed' }, 'refused');
    expect(refused).toEqual({ state: { streak: 0, pending: false, silent: 0 }, verdicts: [] });
  });

  it('a stable session ends the run: the streak and the silent count start over', () => {
    let state: TakeoverState = { streak: 3, pending: false, silent: 2 };
    // Quiet means the longer of stableSessionMs and twice the current ceiling (5 s x 2^2 = 20 s, so 40 s).
    expect(takeoverCeiling(3, delays)).toBe(20_000);
    state = onSessionEnd(state, { kind: 'closed' }, { ...v3, lastedMs: 39_999 }).state;
    expect(state.streak).toBe(3);
    state = onSessionEnd({ streak: 3, pending: false, silent: 2 }, { kind: 'closed' }, { ...v3, lastedMs: 40_000 }).state;
    expect(state).toEqual({ streak: 0, pending: true, silent: 0 });
  });

  it('delays grow from [2.5 s, 5 s] and double per takeover up to the maximum, never near zero', () => {
    expect(takeoverDelay(1, delays, () => 0)).toBe(2_500);
    expect(takeoverDelay(1, delays, () => 0.999_999)).toBe(4_999);
    expect(takeoverDelay(2, delays, () => 0.5)).toBe(7_500);
    expect(takeoverCeiling(7, delays)).toBe(300_000);
    expect(takeoverCeiling(1_000, delays)).toBe(300_000);
    expect(takeoverDelay(1_000, delays, () => 0)).toBe(150_000);
  });

  it('gives up only when the caller opted in', () => {
    expect(takeoverGiveUp({ streak: 100, pending: false, silent: 0 }, { giveUpAfter: Number.POSITIVE_INFINITY })).toBe(false);
    expect(takeoverGiveUp({ streak: 3, pending: false, silent: 0 }, { giveUpAfter: 3 })).toBe(true);
    expect(takeoverGiveUp({ streak: 2, pending: false, silent: 0 }, { giveUpAfter: 3 })).toBe(false);
  });
});
