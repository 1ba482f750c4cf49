import { describe, expect, it } from 'vitest';
import {
  MAX_HELD_TOKENS,
  TOKEN_INVALID,
  TOKEN_TOPICS,
  actionsOfTokenType,
  authorizePublish,
  authorizeSubscribe,
  expireNoticePayload,
  invalidNoticePayload,
  parseResources,
  parseTokenPassword,
  parseUploadToken,
  resolveExpireTime,
  resourceCovers,
  resourceProblem,
  tokenConnackCode,
  tokenTypeOfActions,
  type TokenGrant,
} from '../../src/emulator/token-rules.js';
import { TokenRegistry, type TokenRecord } from '../../src/emulator/token-registry.js';
import { apiFaultCode } from '../helpers/emulator.js';

const INSTANCE = 'mqtt-test';
const DAY = 24 * 60 * 60_000;

describe('ApplyToken parameters', () => {
  it('Actions: exactly R, W or R,W', () => {
    expect(tokenTypeOfActions('R')).toBe('R');
    expect(tokenTypeOfActions('W')).toBe('W');
    expect(tokenTypeOfActions('R,W')).toBe('RW');
    for (const bad of ['W,R', 'RW', 'r', 'R, W', 'R,W,', 'R,R', '', 'RWX']) expect(tokenTypeOfActions(bad), bad).toBeUndefined();
    expect(actionsOfTokenType('R')).toBe('R');
    expect(actionsOfTokenType('W')).toBe('W');
    expect(actionsOfTokenType('RW')).toBe('R,W');
  });

  it('a resource is a topic or filter under a literal parent topic, at most 64 characters', () => {
    for (const good of ['TopicA', 'TopicA/+', 'TopicA/#', 'TopicA/+/x', 'TopicA/+/+/#', 'T-1_a/b/c', 'p/p2p/GID_x@@@d', 'p/p2p/+', 'a'.repeat(64)]) {
      expect(resourceProblem(good), good).toBeUndefined();
    }
    expect(resourceProblem('')).toBe('is empty');
    expect(resourceProblem('a'.repeat(65))).toBe('is longer than 64 characters');
    expect(resourceProblem('+/a')).toBe('must start with a parent topic of letters, digits, - and _ (no wildcard)');
    expect(resourceProblem('#')).toBe('must start with a parent topic of letters, digits, - and _ (no wildcard)');
    expect(resourceProblem('/a')).toBe('must start with a parent topic of letters, digits, - and _ (no wildcard)');
    expect(resourceProblem('a/#/b')).toBe('has # before its last level');
    expect(resourceProblem('a//b')).toBe('has an empty level');
    expect(resourceProblem('a/')).toBe('has an empty level');
    expect(resourceProblem('a/b c')).toBe('has a level that is not letters, digits, -, _ and @, or a whole + or #');
    expect(resourceProblem('a/+x')).toBe('has a level that is not letters, digits, -, _ and @, or a whole + or #');
    expect(resourceProblem('a/x#')).toBe('has a level that is not letters, digits, -, _ and @, or a whole + or #');
    expect(resourceProblem('a.b')).toBe('must start with a parent topic of letters, digits, - and _ (no wildcard)');
    expect(resourceProblem('GID_a@@@b/x')).toBe('must start with a parent topic of letters, digits, - and _ (no wildcard)');
  });

  it('Resources: comma-separated, 1 to 100, strictly ascending by code unit', () => {
    expect(parseResources('TopicA/+')).toEqual({ ok: true, value: ['TopicA/+'] });
    expect(parseResources('A,B/#,a')).toEqual({ ok: true, value: ['A', 'B/#', 'a'] });
    // '/' (0x2F) sorts before '1' (0x31), upper case before '_' before lower case.
    expect(parseResources('Topic/a,Topic1')).toEqual({ ok: true, value: ['Topic/a', 'Topic1'] });
    expect(parseResources('Z,_,a')).toEqual({ ok: true, value: ['Z', '_', 'a'] });
    expect(parseResources('Topic1,Topic/a')).toEqual({ ok: false, problem: 'resources must be in dictionary order without duplicates: "Topic1" comes before "Topic/a"' });
    expect(parseResources('a,B')).toEqual({ ok: false, problem: 'resources must be in dictionary order without duplicates: "a" comes before "B"' });
    expect(parseResources('a,a')).toEqual({ ok: false, problem: 'resources must be in dictionary order without duplicates: "a" comes before "a"' });
    expect(parseResources('')).toEqual({ ok: false, problem: 'resource 1 ("") is empty' });
    expect(parseResources('a,')).toEqual({ ok: false, problem: 'resource 2 ("") is empty' });
    expect(parseResources('a, b')).toEqual({ ok: false, problem: 'resource 2 (" b") must start with a parent topic of letters, digits, - and _ (no wildcard)' });

    const hundred = Array.from({ length: 100 }, (_, i) => `T${String(i).padStart(3, '0')}`);
    expect(parseResources(hundred.join(','))).toEqual({ ok: true, value: hundred });
    expect(parseResources([...hundred, 'T100'].join(','))).toEqual({ ok: false, problem: 'at most 100 resources, not 101' });
  });

  it('ExpireTime: at least 60 s after now (inclusive), cut to 30 days, digits only', () => {
    const now = 1_609_434_061_000; // the metadata's own example: now + 60 s = 1609434121000
    expect(resolveExpireTime('1609434121000', now)).toEqual({ ok: true, value: 1_609_434_121_000 });
    expect(resolveExpireTime('1609434120999', now)).toEqual({ ok: false, problem: 'must be at least 60 s in the future' });
    expect(resolveExpireTime('1609434061000', now)).toEqual({ ok: false, problem: 'must be at least 60 s in the future' });
    expect(resolveExpireTime('1000', now)).toEqual({ ok: false, problem: 'must be at least 60 s in the future' });
    // 30 days = 2 592 000 000 ms; anything later is accepted and cut.
    expect(resolveExpireTime('1612026061000', now)).toEqual({ ok: true, value: 1_612_026_061_000 });
    expect(resolveExpireTime('1612026061001', now)).toEqual({ ok: true, value: 1_612_026_061_000 });
    expect(resolveExpireTime('9007199254740991', now)).toEqual({ ok: true, value: 1_612_026_061_000 });
    for (const bad of ['', '-1609434121000', '+1609434121000', '1609434121000.0', '1.7e12', ' 1609434121000', '9007199254740992', '12345678901234567']) {
      expect(resolveExpireTime(bad, now), bad).toEqual({ ok: false, problem: 'must be ms since the epoch, in decimal digits' });
    }
    // A fractional clock is floored, as the registry's times are.
    expect(resolveExpireTime('61000', 1_000.9)).toEqual({ ok: true, value: 61_000 });
    expect(resolveExpireTime('60999', 1_000.9)).toEqual({ ok: false, problem: 'must be at least 60 s in the future' });
  });
});

describe('resources against topics and filters', () => {
  it.each([
    // resource, topic or filter, covered
    ['a/b', 'a/b', true],
    ['a/b', 'a/c', false],
    ['a/b', 'a', false],
    ['a/b', 'a/b/c', false],
    ['a', 'a', true],
    ['a', 'a/b', false],
    ['a/+', 'a/b', true],
    ['a/+', 'a', false],
    ['a/+', 'a/b/c', false],
    ['a/+', 'a/+', true],
    ['a/+', 'a/#', false],
    ['a/#', 'a', true],
    ['a/#', 'a/b', true],
    ['a/#', 'a/b/c/d', true],
    ['a/#', 'a/+', true],
    ['a/#', 'a/#', true],
    ['a/#', 'a/+/c', true],
    ['a/#', 'b', false],
    ['a/#', 'ab', false],
    ['a/+/#', 'a', false],
    ['a/+/#', 'a/x', true],
    ['a/+/#', 'a/x/y/z', true],
    ['a/+/#', 'a/#', false],
    ['a/+/#', 'a/+/#', true],
    ['a/b/c', 'a/+/c', false],
    ['a/+/c', 'a/b/c', true],
    ['a/+/c', 'a/b/d', false],
    ['a/b', '+/b', false],
    ['a/b', '#', false],
    ['a/b', '$SYS/b', false],
  ])('%s covers %s: %s', (resource, filter, covered) => {
    expect(resourceCovers(resource, filter)).toBe(covered);
  });

  const r = (resources: string[]): TokenGrant => ({ type: 'R', resources });
  const w = (resources: string[]): TokenGrant => ({ type: 'W', resources });
  const rw = (resources: string[]): TokenGrant => ({ type: 'RW', resources });

  it('PUBLISH needs a W or RW token covering the topic; else 5 when only an R token covers it, else 4', () => {
    expect(authorizePublish([w(['up/#'])], 'up/dev1')).toEqual({ allowed: true });
    expect(authorizePublish([rw(['up/+'])], 'up/dev1')).toEqual({ allowed: true });
    expect(authorizePublish([r(['down/#']), w(['up/+'])], 'up/dev1')).toEqual({ allowed: true });
    expect(authorizePublish([r(['up/#'])], 'up/dev1')).toEqual({ allowed: false, code: 5, type: 'R' });
    expect(authorizePublish([r(['up/#']), w(['other'])], 'up/dev1')).toEqual({ allowed: false, code: 5, type: 'R' });
    expect(authorizePublish([w(['up/+'])], 'up/dev1/x')).toEqual({ allowed: false, code: 4, type: 'W' });
    expect(authorizePublish([rw(['a']), w(['b'])], 'c')).toEqual({ allowed: false, code: 4, type: 'W' });
    expect(authorizePublish([r(['a']), rw(['b'])], 'c')).toEqual({ allowed: false, code: 4, type: 'RW' });
    expect(authorizePublish([r(['a'])], 'c')).toEqual({ allowed: false, code: 4, type: 'R' });
    expect(authorizePublish([], 'c')).toEqual({ allowed: false, code: 4, type: undefined });
    // A P2P topic is a topic like any other: W on it, or on a filter covering it.
    expect(authorizePublish([w(['chat/p2p/+'])], 'chat/p2p/GID_a@@@b')).toEqual({ allowed: true });
  });

  it('SUBSCRIBE needs one R or RW resource covering the whole filter; else 5 when a W token covers it, else 4', () => {
    expect(authorizeSubscribe([r(['down/#'])], 'down/dev1')).toEqual({ allowed: true });
    expect(authorizeSubscribe([r(['down/#'])], 'down/+')).toEqual({ allowed: true });
    expect(authorizeSubscribe([r(['down/#'])], 'down/#')).toEqual({ allowed: true });
    expect(authorizeSubscribe([rw(['down/+'])], 'down/+')).toEqual({ allowed: true });
    expect(authorizeSubscribe([r(['down/+'])], 'down/#')).toEqual({ allowed: false, code: 4, type: 'R' });
    expect(authorizeSubscribe([r(['down/a', 'down/b'])], 'down/+')).toEqual({ allowed: false, code: 4, type: 'R' });
    // Two resources together match all of a/#, but neither covers it alone.
    expect(authorizeSubscribe([r(['a', 'a/+/#'])], 'a/#')).toEqual({ allowed: false, code: 4, type: 'R' });
    expect(authorizeSubscribe([w(['down/#'])], 'down/x')).toEqual({ allowed: false, code: 5, type: 'W' });
    expect(authorizeSubscribe([r(['up']), w(['down/#'])], 'down/x')).toEqual({ allowed: false, code: 5, type: 'W' });
    expect(authorizeSubscribe([w(['a']), rw(['b'])], 'c')).toEqual({ allowed: false, code: 4, type: 'RW' });
  });
});

describe('Token-mode CONNECT password and $SYS payloads', () => {
  it('parses <type>|<token> pairs, any order, one per type', () => {
    expect(parseTokenPassword('R|123')).toEqual({ ok: true, value: [{ type: 'R', token: '123' }] });
    expect(parseTokenPassword('R|123|W|abcd')).toEqual({ ok: true, value: [{ type: 'R', token: '123' }, { type: 'W', token: 'abcd' }] });
    expect(parseTokenPassword('W|abcd|R|123')).toEqual({ ok: true, value: [{ type: 'W', token: 'abcd' }, { type: 'R', token: '123' }] });
    expect(parseTokenPassword('RW|a+b/c==')).toEqual({ ok: true, value: [{ type: 'RW', token: 'a+b/c==' }] });
    expect(parseTokenPassword(Buffer.from('R|1|W|2|RW|3'))).toEqual({
      ok: true,
      value: [{ type: 'R', token: '1' }, { type: 'W', token: '2' }, { type: 'RW', token: '3' }],
    });
  });

  it('refuses what is not such a password', () => {
    expect(parseTokenPassword(undefined)).toEqual({ ok: false, problem: 'the password is empty' });
    expect(parseTokenPassword('')).toEqual({ ok: false, problem: 'the password is empty' });
    expect(parseTokenPassword(Buffer.alloc(0))).toEqual({ ok: false, problem: 'the password is empty' });
    expect(parseTokenPassword(Buffer.from([0x52, 0x7c, 0xff]))).toEqual({ ok: false, problem: 'the password is not UTF-8' });
    expect(parseTokenPassword('R')).toEqual({ ok: false, problem: 'the password is not <type>|<token> pairs joined by |' });
    expect(parseTokenPassword('R|1|W')).toEqual({ ok: false, problem: 'the password is not <type>|<token> pairs joined by |' });
    expect(parseTokenPassword('X|1')).toEqual({ ok: false, problem: 'token type "X" is not R, W or RW' });
    expect(parseTokenPassword('r|1')).toEqual({ ok: false, problem: 'token type "r" is not R, W or RW' });
    expect(parseTokenPassword('R,W|1')).toEqual({ ok: false, problem: 'token type "R,W" is not R, W or RW' });
    expect(parseTokenPassword('R|')).toEqual({ ok: false, problem: 'the R token is empty' });
    expect(parseTokenPassword('R|1|R|2')).toEqual({ ok: false, problem: 'the R token is given twice' });
  });

  it('parses $SYS/uploadToken payloads: {"Token", "type"} exactly', () => {
    expect(parseUploadToken(Buffer.from('{"Token":"abc==","type":"W"}'))).toEqual({ ok: true, value: { type: 'W', token: 'abc==' } });
    expect(parseUploadToken(Buffer.from('{"type":"RW","Token":"x","extra":1}'))).toEqual({ ok: true, value: { type: 'RW', token: 'x' } });
    expect(parseUploadToken(Buffer.from('{"token":"x","type":"W"}'))).toEqual({ ok: false, problem: '"Token" is missing or not a non-empty string' });
    expect(parseUploadToken(Buffer.from('{"Token":"","type":"W"}'))).toEqual({ ok: false, problem: '"Token" is missing or not a non-empty string' });
    expect(parseUploadToken(Buffer.from('{"Token":"x","Type":"W"}'))).toEqual({ ok: false, problem: '"type" is not "R", "W" or "RW"' });
    expect(parseUploadToken(Buffer.from('{"Token":"x","type":"R,W"}'))).toEqual({ ok: false, problem: '"type" is not "R", "W" or "RW"' });
    expect(parseUploadToken(Buffer.from('["x"]'))).toEqual({ ok: false, problem: 'the payload is not a JSON object' });
    expect(parseUploadToken(Buffer.from('null'))).toEqual({ ok: false, problem: 'the payload is not a JSON object' });
    expect(parseUploadToken(Buffer.from('R|x'))).toEqual({ ok: false, problem: 'the payload is not JSON' });
    expect(parseUploadToken(Buffer.from([0x22, 0xff, 0x22]))).toEqual({ ok: false, problem: 'the payload is not JSON' });
  });

  it('builds the notices byte for byte, and names the three topics', () => {
    expect(expireNoticePayload(1_609_434_121_000, 'RW').toString('utf8')).toBe('{"expireTime":1609434121000,"type":"RW"}');
    expect(invalidNoticePayload(TOKEN_INVALID.revoked, 'W').toString('utf8')).toBe('{"code":3,"type":"W"}');
    expect(invalidNoticePayload(TOKEN_INVALID.account, 'R').toString('utf8')).toBe('{"code":-1,"type":"R"}');
    expect(TOKEN_TOPICS).toEqual({ upload: '$SYS/uploadToken', expireNotice: '$SYS/tokenExpireNotice', invalidNotice: '$SYS/tokenInvalidNotice' });
    expect(TOKEN_INVALID).toEqual({ forged: 1, expired: 2, revoked: 3, resourceMismatch: 4, permissionMismatch: 5, badSignature: 8, account: -1 });
  });

  it('maps notice codes to CONNACK codes: 4 cannot be verified, 5 not allowed', () => {
    expect([1, 2, 3, 4, 5, 8, -1].map((code) => tokenConnackCode(code as 1))).toEqual([4, 5, 5, 5, 5, 4, 4]);
  });
});

describe('token registry', () => {
  const TOKEN_SHAPE = /^[A-Za-z0-9+/]{66}==$/;
  let clock = 1_000_000.6;
  const make = (): TokenRegistry => new TokenRegistry({ now: () => clock });
  const request = { instanceId: INSTANCE, type: 'W' as const, resources: ['up/#'], expireTime: 2_000_000 };

  /** The token with one character at `index` replaced by another Base64 letter. */
  const altered = (token: string, index: number): string => {
    const replacement = token[index] === 'A' ? 'B' : 'A';
    return `${token.slice(0, index)}${replacement}${token.slice(index + 1)}`;
  };

  it('issues opaque Base64 tokens and keeps only a hash of their secret', () => {
    clock = 1_000_000.6;
    const tokens = make();
    const { token, record } = tokens.apply(request);
    expect(token).toMatch(TOKEN_SHAPE);
    expect(record).toEqual({
      id: Buffer.from(token, 'base64').subarray(0, 16).toString('hex'),
      secretSha256: expect.stringMatching(/^[0-9a-f]{64}$/) as unknown as string,
      instanceId: INSTANCE,
      type: 'W',
      resources: ['up/#'],
      createTime: 1_000_000,
      expireTime: 2_000_000,
    });
    expect(JSON.stringify(record)).not.toContain(token.slice(24, 60));
    expect(Object.isFrozen(record)).toBe(true);
    expect(Object.isFrozen(record.resources)).toBe(true);
    expect(tokens.apply(request).token).not.toBe(token);
    expect(tokens.size).toBe(2);
  });

  it('checks: forged 1, bad signature 8, other instance 1, revoked 3, expired 2, wrong type 5', () => {
    clock = 1_000_000;
    const tokens = make();
    const { token, record } = tokens.apply(request);
    expect(tokens.check(INSTANCE, token)).toEqual({ ok: true, record });
    expect(tokens.isValid(INSTANCE, token)).toBe(true);

    expect(tokens.check(INSTANCE, 'not a token')).toEqual({ ok: false, code: 1 });
    expect(tokens.check(INSTANCE, '')).toEqual({ ok: false, code: 1 });
    expect(tokens.check(INSTANCE, altered(token, 3))).toEqual({ ok: false, code: 1 }); // another id
    expect(tokens.check(INSTANCE, altered(token, 40))).toEqual({ ok: false, code: 8 }); // same id, another secret
    expect(tokens.check(INSTANCE, token.replace(/==$/, ''))).toEqual({ ok: false, code: 1 });
    // The last character before "==" carries 2 bits of data and 4 unused ones: a non-canonical spelling is refused.
    const last = token[65] ?? '';
    const sibling = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.indexOf(last) ^ 1;
    const nonCanonical = `${token.slice(0, 65)}${'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'[sibling] ?? ''}==`;
    expect(Buffer.from(nonCanonical, 'base64').equals(Buffer.from(token, 'base64'))).toBe(true);
    expect(tokens.check(INSTANCE, nonCanonical)).toEqual({ ok: false, code: 1 });
    expect(tokens.check('mqtt-other', token)).toEqual({ ok: false, code: 1 });

    expect(tokens.verify(INSTANCE, { type: 'W', token })).toEqual({ ok: true, record });
    expect(tokens.verify(INSTANCE, { type: 'RW', token })).toEqual({ ok: false, code: 5 });
    expect(tokens.verify(INSTANCE, { type: 'R', token })).toEqual({ ok: false, code: 5 });

    clock = 1_999_999;
    expect(tokens.isValid(INSTANCE, token)).toBe(true);
    clock = 2_000_000;
    expect(tokens.check(INSTANCE, token)).toEqual({ ok: false, code: 2 });
    expect(tokens.recheck(record)).toEqual({ ok: false, code: 2 });
    expect(tokens.isValid(INSTANCE, token)).toBe(false);
  });

  it('revokes once, tells listeners, stays idempotent, and refuses what is not a token of the instance', () => {
    clock = 1_000_000;
    const tokens = make();
    const { token, record } = tokens.apply(request);
    const told: TokenRecord[] = [];
    const stop = tokens.onRevoke((revoked) => told.push(revoked));
    const before = tokens.changes;
    clock = 1_500_000;
    tokens.revoke(INSTANCE, token);
    expect(told).toEqual([{ ...record, revokeTime: 1_500_000 }]);
    expect(tokens.changes).toBe(before + 1);
    expect(tokens.check(INSTANCE, token)).toEqual({ ok: false, code: 3 });
    expect(tokens.recheck(record)).toEqual({ ok: false, code: 3 });
    expect(tokens.verify(INSTANCE, { type: 'R', token })).toEqual({ ok: false, code: 3 });

    tokens.revoke(INSTANCE, token); // again: a success that changes nothing
    expect(told).toHaveLength(1);
    expect(tokens.changes).toBe(before + 1);

    for (const bad of ['', 'x', altered(token, 3), altered(token, 40)]) {
      expect(apiFaultCode(() => tokens.revoke(INSTANCE, bad)), bad).toBe('InvalidParameter.Token');
    }
    expect(apiFaultCode(() => tokens.revoke('mqtt-other', token))).toBe('InvalidParameter.Token');

    const expiring = tokens.apply({ ...request, expireTime: 1_600_000 });
    clock = 1_600_000;
    tokens.revoke(INSTANCE, expiring.token); // expired: nothing to revoke, not an error
    expect(tokens.check(INSTANCE, expiring.token)).toEqual({ ok: false, code: 2 });
    stop();
    const third = tokens.apply({ ...request, expireTime: 9_000_000 });
    tokens.revoke(INSTANCE, third.token);
    expect(told).toHaveLength(1);
  });

  it('logs a session in: every token must verify, the first failure decides with its claimed type', () => {
    clock = 1_000_000;
    const tokens = make();
    const r = tokens.apply({ ...request, type: 'R', resources: ['down/#'] });
    const w = tokens.apply(request);
    expect(tokens.login(INSTANCE, [{ type: 'R', token: r.token }, { type: 'W', token: w.token }])).toEqual({ ok: true, records: [r.record, w.record] });
    expect(tokens.login(INSTANCE, [{ type: 'R', token: r.token }, { type: 'RW', token: w.token }])).toEqual({ ok: false, code: 5, type: 'RW' });
    expect(tokens.login(INSTANCE, [{ type: 'W', token: 'forged' }, { type: 'R', token: r.token }])).toEqual({ ok: false, code: 1, type: 'W' });
    tokens.revoke(INSTANCE, r.token);
    expect(tokens.login(INSTANCE, [{ type: 'W', token: w.token }, { type: 'R', token: r.token }])).toEqual({ ok: false, code: 3, type: 'R' });
  });

  it('forgets tokens a day after their ExpireTime, sweeping at most once a minute', () => {
    clock = 0;
    const tokens = make();
    const old = tokens.apply({ ...request, expireTime: 100_000 });
    clock = 100_000 + DAY - 1;
    tokens.apply({ ...request, expireTime: 10 * DAY });
    expect(tokens.check(INSTANCE, old.token)).toEqual({ ok: false, code: 2 });
    clock = 100_000 + DAY;
    tokens.apply({ ...request, expireTime: 10 * DAY }); // less than a minute since the last sweep: kept
    expect(tokens.size).toBe(3);
    expect(tokens.check(INSTANCE, old.token)).toEqual({ ok: false, code: 2 });
    clock = 100_000 + DAY + 59_999;
    const before = tokens.changes;
    tokens.apply({ ...request, expireTime: 10 * DAY });
    expect(tokens.changes).toBe(before + 2); // the sweep and the new token
    expect(tokens.size).toBe(3);
    expect(tokens.check(INSTANCE, old.token)).toEqual({ ok: false, code: 1 });
    expect(apiFaultCode(() => tokens.revoke(INSTANCE, old.token))).toBe('InvalidParameter.Token');
    expect(tokens.recheck(old.record)).toEqual({ ok: false, code: 1 });
  });

  it('restores kept records, dropping those past their retention, only into an empty registry', () => {
    clock = 5 * DAY;
    const source = new TokenRegistry({ now: () => 0 });
    const live = source.apply({ ...request, expireTime: 10 * DAY });
    const gone = source.apply({ ...request, expireTime: 4 * DAY });
    const tokens = make();
    tokens.restore([live.record, gone.record]);
    expect(tokens.all()).toEqual([live.record]);
    expect(tokens.check(INSTANCE, live.token)).toEqual({ ok: true, record: live.record });
    expect(tokens.check(INSTANCE, gone.token)).toEqual({ ok: false, code: 1 });
    expect(() => tokens.restore([])).toThrow('Emulator bug');
  });

  it(`holds at most ${MAX_HELD_TOKENS} tokens: then ApplyTokenOverFlow until some are forgotten`, () => {
    clock = 0;
    const tokens = make();
    for (let i = 0; i < MAX_HELD_TOKENS; i++) tokens.apply({ ...request, expireTime: 100_000 });
    expect(tokens.size).toBe(MAX_HELD_TOKENS);
    expect(apiFaultCode(() => tokens.apply(request))).toBe('ApplyTokenOverFlow');
    clock = 100_000 + DAY; // all past their retention: a full registry sweeps at once, whatever the last sweep
    expect(apiFaultCode(() => tokens.apply({ ...request, expireTime: 10 * DAY }))).toBeUndefined();
    expect(tokens.size).toBe(1);
  });
});
