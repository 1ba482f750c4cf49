import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { TokenLogin } from '../../src/connector/login.js';
import { type CoreOptions, type Input, initialModel, step } from '../../src/connector/state.js';
import { NO_TAKEOVER, onSessionEnd } from '../../src/connector/takeover.js';
import {
  MIN_RENEW_RETRY_MS,
  TOKEN_DEFAULTS,
  type HeldToken,
  changedTokens,
  checkTokenAnswer,
  deferRenewal,
  dueForRenewal,
  isOperationCode,
  mergeTokens,
  nextRenewalDelay,
  noteExpiry,
  parseExpireNotice,
  parseInvalidNotice,
  renewAt,
  resolveTokenOptions,
  sameTokens,
  uploadPayload,
} from '../../src/connector/token-rules.js';
import type { TokenRequest } from '../../src/credential.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';

const MINUTE = 60_000;
const base = { accessKeyId: 'LTAIexample', instanceId: 'mqtt-cn-test', source: async () => [] };

function held(type: 'R' | 'W' | 'RW', token: string, expireTime: number | undefined, receivedAt = 0, retryAt?: number): HeldToken {
  return { type, token, expireTime, receivedAt, retryAt };
}

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error('did not throw');
}

describe('resolveTokenOptions', () => {
  it('fills in the defaults', () => {
    const resolved = resolveTokenOptions(base, 'GID_t@@@d');
    expect(resolved).toMatchObject({ accessKeyId: 'LTAIexample', instanceId: 'mqtt-cn-test', fixed: false, renewBeforeMs: 5 * MINUTE, now: Date.now });
    expect(TOKEN_DEFAULTS.renewBeforeMs).toBe(5 * MINUTE);
  });

  it('takes fixed tokens, checked at once, and makes them a source', async () => {
    const resolved = resolveTokenOptions({ ...base, source: [{ type: 'W', token: 'abc' }] }, 'GID_t@@@d');
    expect(resolved.fixed).toBe(true);
    expect(await resolved.source({ reason: 'connect', types: [] })).toEqual([{ type: 'W', token: 'abc' }]);
  });

  it.each([
    [{ ...base, accessKeyId: 'a|b' }, 'GID_t@@@d', 'InvalidOption', /token.accessKeyId/],
    [{ ...base, accessKeyId: 7 }, 'GID_t@@@d', 'InvalidOption', /token.accessKeyId/],
    [{ ...base, instanceId: '' }, 'GID_t@@@d', 'InvalidInstanceId', /./],
    [base, 'no-separator', 'InvalidClientId', /./],
    [base, undefined, 'InvalidClientId', /./],
    [{ ...base, source: {} }, 'GID_t@@@d', 'InvalidOption', /token.source must be a function/],
    [{ ...base, source: [] }, 'GID_t@@@d', 'InvalidToken', /holds no token/],
    [{ ...base, source: [{ type: 'W', token: 'x|y' }] }, 'GID_t@@@d', 'InvalidToken', /contains "\|"/],
    [{ ...base, renewBeforeMs: Number.NaN }, 'GID_t@@@d', 'InvalidOption', /token.renewBeforeMs/],
    [{ ...base, renewBeforeMs: -5 }, 'GID_t@@@d', 'InvalidOption', /token.renewBeforeMs/],
    [{ ...base, now: 'now' }, 'GID_t@@@d', 'InvalidOption', /token.now/],
    [null, 'GID_t@@@d', 'InvalidOption', /Option token must be/],
    [[], 'GID_t@@@d', 'InvalidOption', /Option token must be/],
  ] as const)('%j with ClientId %j: %s', (token, clientId, code, message) => {
    const error = thrown(() => resolveTokenOptions(token, clientId));
    expect(isApsaraMqDeviceError(error, code)).toBe(true);
    expect(error.message).toMatch(message);
  });
});

describe('checkTokenAnswer', () => {
  it('reads getters (an IssuedToken) and returns plain frozen copies', () => {
    class Issued {
      readonly type = 'RW' as const;
      readonly expireTime = 1_800_000_000_000;
      readonly #token = 'secret-token';
      get token(): string {
        return this.#token;
      }
    }
    const answer = checkTokenAnswer([new Issued()]);
    expect(answer).toEqual([{ type: 'RW', token: 'secret-token', expireTime: 1_800_000_000_000 }]);
    expect(Object.isFrozen(answer[0])).toBe(true);
  });

  it.each([
    [undefined, /did not return an array/],
    [[{ type: 'rw', token: 'x' }], /type "rw", not R, W or RW/],
    [[{ type: 'R', token: '' }], /the R token is not a non-empty string/],
    [[{ type: 'R', token: 5 }], /the R token is not a non-empty string/],
    [[{ type: 'R', token: 'a' }, { type: 'R', token: 'b' }], /more than one R token/],
    [[{ type: 'W', token: 'a', expireTime: 'soon' }], /expireTime of the W token/],
    [[{ type: 'W', token: 'a', expireTime: 1.5 }], /expireTime of the W token/],
    [[null], /type undefined/],
  ])('%j is InvalidToken (%s), naming no token', (answer, message) => {
    const error = thrown(() => checkTokenAnswer(answer));
    expect(isApsaraMqDeviceError(error, 'InvalidToken')).toBe(true);
    expect(error.message).toMatch(message);
    expect(error.message).not.toMatch(/"a"|"b"/);
  });
});

describe('holding tokens', () => {
  it('merges an answer by type, keeping what is known of a token handed out again', () => {
    const before = [held('R', 'r1', undefined, 0), held('W', 'w1', 5_000, 0)];
    const after = mergeTokens(before, [{ type: 'R', token: 'r1', expireTime: 9_000 }, { type: 'RW', token: 'rw1' }], 100);
    expect(after).toEqual([held('R', 'r1', 9_000, 0), held('W', 'w1', 5_000, 0), held('RW', 'rw1', undefined, 100)]);
    expect(changedTokens(before, after).map((t) => t.type)).toEqual(['RW']);
    expect(sameTokens(before, mergeTokens(before, [{ type: 'W', token: 'w1' }], 100))).toBe(true);
    expect(sameTokens(before, mergeTokens(before, [{ type: 'W', token: 'w2' }], 100))).toBe(false);
  });

  it('notes an expiry the source did not give, never overwriting a known one', () => {
    const tokens = [held('R', 'r', undefined), held('W', 'w', 7)];
    expect(noteExpiry(tokens, 'R', 9)).toEqual([held('R', 'r', 9), held('W', 'w', 7)]);
    expect(noteExpiry(tokens, 'W', 9)).toEqual(tokens);
  });
});

describe('when to renew', () => {
  const renewBefore = 5 * MINUTE;

  it('renewBeforeMs ahead of expiry for a long token', () => {
    expect(renewAt(held('W', 'w', 60 * MINUTE, 0), renewBefore)).toBe(55 * MINUTE);
  });

  it('never before half the lifetime it had on arrival (a token shorter than the window)', () => {
    expect(renewAt(held('W', 'w', 2 * MINUTE + 1_000, 1_000), renewBefore)).toBe(MINUTE + 1_000);
    expect(renewAt(held('W', 'w', 10 * MINUTE, 0), renewBefore)).toBe(5 * MINUTE);
  });

  it('not before a retry time, and not at all without an expiry', () => {
    expect(renewAt(held('W', 'w', 60 * MINUTE, 0, 58 * MINUTE), renewBefore)).toBe(58 * MINUTE);
    expect(renewAt(held('W', 'w', undefined), renewBefore)).toBeUndefined();
  });

  it('due: past its renewal time and not yet expired; the next delay is the earliest', () => {
    const tokens = [held('R', 'r', 60 * MINUTE, 0), held('W', 'w', 30 * MINUTE, 0), held('RW', 'rw', undefined, 0)];
    expect(dueForRenewal(tokens, 25 * MINUTE - 1, renewBefore)).toEqual([]);
    expect(nextRenewalDelay(tokens, 25 * MINUTE - 1, renewBefore)).toBe(1);
    expect(dueForRenewal(tokens, 25 * MINUTE, renewBefore)).toEqual(['W']);
    expect(nextRenewalDelay(tokens, 25 * MINUTE, renewBefore)).toBe(0);
    expect(dueForRenewal(tokens, 30 * MINUTE - 1, renewBefore)).toEqual(['W']);
    // An expired token is the broker's to end: no renewal timer for it.
    expect(dueForRenewal(tokens, 30 * MINUTE, renewBefore)).toEqual([]);
    expect(dueForRenewal(tokens, 55 * MINUTE, renewBefore)).toEqual(['R']);
    expect(nextRenewalDelay(tokens, 30 * MINUTE, renewBefore)).toBe(25 * MINUTE);
    expect(nextRenewalDelay([held('RW', 'rw', undefined)], 0, renewBefore)).toBeUndefined();
  });

  it('a delay beyond what a timer takes is cut to it (looked at again when it fires)', () => {
    expect(nextRenewalDelay([held('W', 'w', 30 * 24 * 60 * MINUTE, 0)], 0, renewBefore)).toBe(2_147_483_647);
  });

  it('defers a failed renewal to half the time left, at least a second', () => {
    const tokens = [held('W', 'w', 10 * MINUTE, 0), held('R', 'r', 10 * MINUTE, 0)];
    const deferred = deferRenewal(tokens, ['W'], 6 * MINUTE);
    expect(deferred).toEqual([held('W', 'w', 10 * MINUTE, 0, 8 * MINUTE), held('R', 'r', 10 * MINUTE, 0)]);
    expect(deferRenewal(tokens, ['W'], 10 * MINUTE - 500)[0]?.retryAt).toBe(10 * MINUTE - 500 + MIN_RENEW_RETRY_MS);
    // Tries thin out: 6 → 8 → 9 → 9.5 minutes …
    let now = 6 * MINUTE;
    const times: number[] = [];
    let current = tokens;
    for (let i = 0; i < 3; i++) {
      current = deferRenewal(current, ['W'], now);
      now = renewAt(current[0] as HeldToken, renewBefore) as number;
      times.push(now / MINUTE);
    }
    expect(times).toEqual([8, 9, 9.5]);
  });
});

describe('the broker notices and the upload', () => {
  it('reads the documented payloads, and refuses anything else', () => {
    expect(parseExpireNotice(Buffer.from('{"expireTime":1800000000000,"type":"W"}'))).toEqual({ expireTime: 1_800_000_000_000, type: 'W' });
    expect(parseExpireNotice(Buffer.from('{"expireTime":"soon","type":"W"}'))).toBeUndefined();
    expect(parseExpireNotice(Buffer.from('{"expireTime":1,"type":"X"}'))).toBeUndefined();
    expect(parseExpireNotice(Buffer.from('not json'))).toBeUndefined();
    expect(parseInvalidNotice(Buffer.from('{"code":3,"type":"R"}'))).toEqual({ code: 3, type: 'R' });
    expect(parseInvalidNotice(Buffer.from('{"code":-1}'))).toEqual({ code: -1, type: undefined });
    expect(parseInvalidNotice(Buffer.from('{"code":"3"}'))).toBeUndefined();
    expect(parseInvalidNotice(Buffer.from('[3]'))).toBeUndefined();
  });

  it('codes 4 and 5 are about the operation; the others about the tokens', () => {
    expect([1, 2, 3, 4, 5, 8, -1].map(isOperationCode)).toEqual([false, false, false, true, true, false, false]);
  });

  it('uploads {"Token", "type"} with the documented casing', () => {
    expect(uploadPayload({ type: 'RW', token: 'a+b/c==' })).toBe('{"Token":"a+b/c==","type":"RW"}');
  });
});

describe('the state machine in Token mode', () => {
  const options: CoreOptions = {
    protocolVersion: 4,
    reconnect: { minDelayMs: 1_000, maxDelayMs: 60_000 },
    takeover: { minDelayMs: 5_000, maxDelayMs: 300_000, giveUpAfter: Number.POSITIVE_INFINITY },
    stableSessionMs: 10_000,
    maxRefetches: 3,
  };
  const online = step(initialModel(), { type: 'accepted', now: 0 }, options, () => 0.5).model;
  const lost = (code: number): Input => ({ type: 'lost', end: { kind: 'token', code }, now: 20_000 });

  it.each([1, 2, 3, 8, -1])('an invalid notice with code %i: offline, then the source is asked at once (no backoff)', (code) => {
    const { model, effects } = step(online, lost(code), options, () => 0.5);
    expect(model.state).toBe('refetching-credential');
    expect(model.refetches).toBe(1);
    expect(effects.map((e) => e.type)).toEqual(['offline', 'refetch']);
  });

  it.each([4, 5])('code %i (the operation was outside the tokens): offline, then the usual backoff with the same tokens', (code) => {
    const { model, effects } = step(online, lost(code), options, () => 0.5);
    expect(model.state).toBe('backing-off');
    expect(effects.map((e) => e.type)).toEqual(['offline', 'wait']);
  });

  it('with reconnect off the connection closes as for any loss', () => {
    const { model, effects } = step(online, lost(2), { ...options, reconnect: false }, () => 0.5);
    expect(model.state).toBe('closed');
    expect(effects).toEqual([{ type: 'offline' }, { type: 'close', problem: { code: 'ConnectionLost' } }]);
  });

  it('the notice path is bounded by the same ladder', () => {
    const { model, effects } = step({ ...online, refetches: 3 }, lost(2), options, () => 0.5);
    expect(model.state).toBe('closed');
    expect(effects.at(-1)).toEqual({ type: 'close', problem: { code: 'CredentialRejected', why: 'exhausted' } });
  });

  it('a token end is never taken for a takeover', () => {
    const ended = onSessionEnd(NO_TAKEOVER, { kind: 'token', code: 2 }, { protocolVersion: 4, lastedMs: 1, stableSessionMs: 10_000, options: options.takeover as CoreOptions['takeover'] & object });
    expect(ended).toEqual({ state: { streak: 0, pending: false, silent: 0 } });
  });
});

describe('TokenLogin', () => {
  function login(answers: ((request: TokenRequest) => unknown)[], now = { value: 0 }) {
    const requests: TokenRequest[] = [];
    const options = resolveTokenOptions(
      {
        ...base,
        now: () => now.value,
        source: async (request: TokenRequest) => {
          requests.push(request);
          const answer = answers.shift();
          if (!answer) throw new Error('no more answers');
          return answer(request) as never;
        },
      },
      'GID_t@@@d',
    );
    return { login: new TokenLogin('GID_t@@@d', options, [{ type: 'W', token: 'w-first', expireTime: 10 * MINUTE }]), requests, now };
  }
  const signal = new AbortController().signal;

  it('signs the documented username and password', () => {
    const { login: l } = login([]);
    expect(l.sign()).toEqual({ clientId: 'GID_t@@@d', username: 'Token|LTAIexample|mqtt-cn-test', password: 'W|w-first' });
  });

  it('after a refusal: the very same tokens are same-key; new ones are used, merged into what is held', async () => {
    const t = login([() => [{ type: 'W', token: 'w-first' }], () => [{ type: 'W', token: 'w-second' }, { type: 'R', token: 'r-first' }]]);
    expect(await t.login.refetch(signal)).toBe('same-key');
    expect(await t.login.refetch(signal, 2, 'W')).toBe('use');
    expect(t.requests.map(({ reason, types, code }) => ({ reason, types, code }))).toEqual([
      { reason: 'rejected', types: ['W'], code: undefined },
      { reason: 'rejected', types: ['W'], code: 2 },
    ]);
    expect(t.login.use()).toEqual(['R', 'W']);
    expect(t.login.sign().password).toBe('R|r-first|W|w-second');
    expect(t.login.use()).toBeUndefined();
  });

  it('an answer that is not tokens is not-a-credential, with the problem kept for the error', async () => {
    const t = login([() => [{ type: 'W', token: 'a|b' }]]);
    expect(await t.login.refetch(signal)).toBe('not-a-credential');
    expect(t.login.problem).toMatch(/contains "\|"/);
  });

  it('renews: holds the new tokens at once and returns what changed; the same answer defers the next try', async () => {
    const t = login([() => [{ type: 'W', token: 'w-first', expireTime: 10 * MINUTE }], () => [{ type: 'W', token: 'w-second', expireTime: 20 * MINUTE }]]);
    t.now.value = 5 * MINUTE;
    expect(t.login.due()).toEqual(['W']);
    expect(await t.login.renew(['W'], signal)).toEqual([]);
    expect(t.login.due()).toEqual([]);
    expect(t.login.nextRenewalDelay()).toBe(2.5 * MINUTE);
    t.now.value = 7.5 * MINUTE;
    expect((await t.login.renew(['W'], signal)).map((token) => token.token)).toEqual(['w-second']);
    expect(t.login.tokens).toEqual([{ type: 'W', expireTime: 20 * MINUTE }]);
    // Received at 7.5 min, expiring at 20: renewed at 15 (renewBeforeMs), not before 13.75 (half-life).
    expect(t.login.nextRenewalDelay()).toBe(7.5 * MINUTE);
  });

  it('a failed renewal is thrown and deferred', async () => {
    const t = login([]);
    t.now.value = 6 * MINUTE;
    await expect(t.login.renew(['W'], signal)).rejects.toThrow('no more answers');
    expect(t.login.nextRenewalDelay()).toBe(2 * MINUTE);
  });

  it('an expire notice gives an unknown expiry, and says whether the token is due', () => {
    const options = resolveTokenOptions({ ...base, now: () => 4 * MINUTE }, 'GID_t@@@d');
    const l = new TokenLogin('GID_t@@@d', options, [{ type: 'R', token: 'r' }]);
    expect(l.nextRenewalDelay()).toBeUndefined();
    // Arrived at 4 min, expires at 6: half-life 5 min, so not due yet.
    expect(l.noteExpireNotice('R', 6 * MINUTE)).toBe(false);
    expect(l.nextRenewalDelay()).toBe(MINUTE);
    // A notice about an older token (expiring before the held one) is old news.
    expect(l.noteExpireNotice('R', 5 * MINUTE)).toBe(false);
  });

  it('shows no token in JSON or inspect, and keeps every token to scrub logs', async () => {
    const t = login([() => [{ type: 'W', token: 'w-second' }]]);
    await t.login.refetch(signal);
    t.login.use();
    const shown = `${JSON.stringify(t.login)} ${inspect(t.login)}`;
    expect(shown).not.toContain('w-first');
    expect(shown).not.toContain('w-second');
    expect(t.login.secrets()).toEqual(expect.arrayContaining(['w-first', 'w-second']));
  });
});
