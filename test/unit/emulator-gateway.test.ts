import { describe, expect, it } from 'vitest';
import { ApiFault, errorBody, hostIdOf, httpStatusFor, invalidParameter } from '../../src/emulator/api-errors.js';
import { COMMON_PARAMETERS, Gateway, NonceCache, RateLimiter, isV3Request, parseTimestamp } from '../../src/emulator/gateway.js';
import { decodeFormComponent, parseFormInto } from '../../src/emulator/request.js';
import { API_ERROR_CATALOG } from '../../src/errors.js';
import { rpcTimestamp, signRpc } from '../../src/signer/openapi.js';
import { apiFaultCode as codeOf } from '../helpers/emulator.js';

const NOW = Date.parse('2024-03-01T12:00:00Z');
const KEY = { accessKeyId: 'LTAItest', accessKeySecret: 'testsecret' };

function gateway(overrides: Partial<ConstructorParameters<typeof Gateway>[0]> = {}): Gateway {
  return new Gateway({ ...KEY, timestampWindowMs: 900_000, nonceWindowMs: 900_000, qpsLimit: 500, now: () => NOW, ...overrides });
}

let nonce = 0;
function request(overrides: Record<string, string> = {}, secret = KEY.accessKeySecret, method = 'POST'): Record<string, string> {
  const params = {
    Action: 'GetDeviceCredential', Version: '2020-04-20', AccessKeyId: KEY.accessKeyId, Format: 'JSON',
    SignatureMethod: 'HMAC-SHA1', SignatureVersion: '1.0', SignatureNonce: `n-${++nonce}`, Timestamp: rpcTimestamp(new Date(NOW)),
    ClientId: 'GID_a@@@b', InstanceId: 'mqtt-test', ...overrides,
  };
  return { ...params, Signature: signRpc(method, params, secret) };
}

describe('gateway check order', () => {
  it('accepts a well-signed request and verifies with the method really used', () => {
    const g = gateway();
    expect(codeOf(() => g.authenticate('POST', request()))).toBeUndefined();
    expect(codeOf(() => g.authenticate('GET', request({}, KEY.accessKeySecret, 'GET')))).toBeUndefined();
    expect(codeOf(() => g.authenticate('POST', request({}, KEY.accessKeySecret, 'GET')))).toBe('SignatureDoesNotMatch');
  });

  it('reports the first failing check when several fail', () => {
    const g = gateway();
    const everythingWrong = { Timestamp: 'bad', AccessKeyId: 'nobody' };
    const withoutAction = request(everythingWrong, 'wrong');
    delete withoutAction['Action'];
    expect(codeOf(() => g.authenticate('POST', withoutAction))).toBe('MissingParameter');
    expect(codeOf(() => g.authenticate('POST', request(everythingWrong, 'wrong')))).toBe('InvalidTimeStamp.Format');
    const stale = rpcTimestamp(new Date(NOW - 900_001 - 999));
    expect(codeOf(() => g.authenticate('POST', request({ Timestamp: stale, AccessKeyId: 'nobody' }, 'wrong')))).toBe('InvalidTimeStamp.Expired');
    expect(codeOf(() => g.authenticate('POST', request({ AccessKeyId: 'nobody' }, 'wrong')))).toBe('InvalidAccessKeyId.NotFound');
    const used = request();
    g.authenticate('POST', used);
    expect(codeOf(() => g.authenticate('POST', request({ SignatureNonce: used['SignatureNonce'] ?? '' }, 'wrong')))).toBe('SignatureDoesNotMatch');
    expect(codeOf(() => g.authenticate('POST', request({ SignatureNonce: used['SignatureNonce'] ?? '' })))).toBe('SignatureNonceUsed');
  });

  it('checks the common parameters in the documented order', () => {
    const g = gateway();
    const params = request();
    // Removing them from the last to the first, each removal changes which one is reported.
    for (const name of [...COMMON_PARAMETERS].reverse()) {
      delete params[name];
      let error: ApiFault | undefined;
      try {
        g.authenticate('POST', params);
      } catch (e) {
        error = e as ApiFault;
      }
      expect(error?.code).toBe('MissingParameter');
      expect(error?.message).toBe(`The input parameter "${name}" that is mandatory for processing this request is not supplied.`);
    }
  });

  it('accepts timestamps at the edge of the window, either side', () => {
    const g = gateway({ timestampWindowMs: 60_000 });
    expect(codeOf(() => g.authenticate('POST', request({ Timestamp: rpcTimestamp(new Date(NOW - 60_000)) })))).toBeUndefined();
    expect(codeOf(() => g.authenticate('POST', request({ Timestamp: rpcTimestamp(new Date(NOW + 60_000)) })))).toBeUndefined();
    expect(codeOf(() => g.authenticate('POST', request({ Timestamp: rpcTimestamp(new Date(NOW + 61_000)) })))).toBe('InvalidTimeStamp.Expired');
  });

  it('throttles past qpsLimit per AccessKeyId', () => {
    const g = gateway({ qpsLimit: 2 });
    const key = request()['AccessKeyId'] ?? '';
    expect(codeOf(() => g.throttle(key))).toBeUndefined();
    expect(codeOf(() => g.throttle(key))).toBeUndefined();
    expect(codeOf(() => g.throttle(key))).toBe('Throttling.User');
    expect(codeOf(() => g.throttle('LTAIanother'))).toBeUndefined();
  });
});

describe('timestamps', () => {
  it('takes exactly YYYY-MM-DDThh:mm:ssZ of a real date', () => {
    expect(parseTimestamp('2020-05-19T10:33:56Z')).toBe(Date.parse('2020-05-19T10:33:56Z'));
    for (const bad of ['', '2020-05-19T10:33:56', '2020-05-19T10:33:56.000Z', '2020-05-19T10:33:56+08:00', '2020-13-01T00:00:00Z', '2021-02-29T00:00:00Z', '1589884436']) {
      expect(parseTimestamp(bad)).toBeUndefined();
    }
  });
});

describe('nonce cache', () => {
  it('refuses a nonce within the window, forgets it after, and prunes so memory stays bounded', () => {
    let now = 0;
    const cache = new NonceCache(1_000, () => now);
    expect(cache.use('a')).toBe(true);
    expect(cache.use('a')).toBe(false);
    now = 999;
    expect(cache.use('a')).toBe(false);
    now = 1_000;
    expect(cache.use('a')).toBe(true);
    for (let i = 0; i < 10_000; i++) {
      now += 1;
      cache.use(`n${i}`);
    }
    expect(cache.size).toBeLessThanOrEqual(1_000);
  });

  it('does not count an expired entry as used even when the clock went backwards', () => {
    let now = 10_000;
    const cache = new NonceCache(1_000, () => now);
    cache.use('late');
    now = 0;
    cache.use('early');
    now = 10_999;
    expect(cache.use('early')).toBe(true);
    expect(cache.use('late')).toBe(false);
  });
});

describe('rate limiter', () => {
  it('sliding-window (default): at most the rate in any one second, wherever the second starts', () => {
    let t = 0;
    const limiter = new RateLimiter(2, () => t);
    expect([limiter.tryTake('k'), limiter.tryTake('k'), limiter.tryTake('k')]).toEqual([true, true, false]);
    expect(limiter.tryTake('other')).toBe(true);
    // Half a second on, the window (-500, 500] still holds both calls: no refill within the second.
    t = 500;
    expect(limiter.tryTake('k')).toBe(false);
    // The first two leave the window only a full second after they came.
    t = 999;
    expect(limiter.tryTake('k')).toBe(false);
    t = 1000;
    expect([limiter.tryTake('k'), limiter.tryTake('k'), limiter.tryTake('k')]).toEqual([true, true, false]);
    const unlimited = new RateLimiter(Infinity, () => 0);
    for (let i = 0; i < 1_000; i++) expect(unlimited.tryTake('k')).toBe(true);
  });

  it('sliding-window: a burst gets the limit through its first second, never more in any window', () => {
    let t = 0;
    const limiter = new RateLimiter(500, () => t);
    const passed: number[] = [];
    // 1,500 calls spread evenly over 1.34 s, the burst that got 1,087 through the old bucket.
    for (let i = 0; i < 1_500; i++) {
      t = (i * 1340) / 1500;
      if (limiter.tryTake('k')) passed.push(t);
    }
    for (const [i, start] of passed.entries()) {
      const inWindow = passed.slice(i).filter((at) => at < start + 1000).length;
      expect(inWindow, `the second from ${start} ms`).toBeLessThanOrEqual(500);
    }
    expect(passed.filter((at) => at < 1000)).toHaveLength(500);
    // The old bucket let 1,087 through; here 500 in the first second and then only as the first ones age out.
    expect(passed.length).toBeLessThan(1000);
  });

  it('token-bucket (the option): refills at the rate, holding and starting with a second of burst', () => {
    let t = 0;
    const limiter = new RateLimiter(2, () => t, 'token-bucket');
    expect([limiter.tryTake('k'), limiter.tryTake('k'), limiter.tryTake('k')]).toEqual([true, true, false]);
    t = 499;
    expect(limiter.tryTake('k')).toBe(false);
    t = 500;
    expect(limiter.tryTake('k')).toBe(true);
    t = 60_000;
    expect([limiter.tryTake('k'), limiter.tryTake('k'), limiter.tryTake('k')]).toEqual([true, true, false]);
  });
});

describe('error statuses and bodies', () => {
  it('maps InternalError / SystemOverFlow per errorStatuses, everything else from the catalog', () => {
    expect(httpStatusFor('InternalError', 'remapped')).toBe(417);
    expect(httpStatusFor('SystemOverFlow', 'remapped')).toBe(403);
    expect(httpStatusFor('InternalError', 'legacy')).toBe(500);
    expect(httpStatusFor('SystemOverFlow', 'legacy')).toBe(500);
    for (const [code, info] of Object.entries(API_ERROR_CATALOG)) {
      if (code === 'InternalError' || code === 'SystemOverFlow') continue;
      expect(httpStatusFor(code, 'legacy')).toBe(info.httpStatus);
      expect(httpStatusFor(code, 'remapped')).toBe(info.httpStatus);
    }
  });

  it('takes messages from the catalog and refuses unknown codes', () => {
    expect(new ApiFault('DeviceCredentialExsit').message).toBe('Device Credential Exsit');
    expect(invalidParameter('ClientId').code).toBe('InvalidParameter.ClientId');
    expect(new ApiFault('SignatureDoesNotMatch', { suffix: 'x' }).message).toBe('Specified signature is not matched with our calculation. x');
    expect(() => new ApiFault('NoSuchCode')).toThrow(/not in API_ERROR_CATALOG/);
  });

  it('builds the gateway error body', () => {
    expect(errorBody(new ApiFault('Throttling.User'), 'ABC', hostIdOf('cn-shanghai'))).toEqual({
      RequestId: 'ABC',
      HostId: 'onsmqtt.cn-shanghai.aliyuncs.com',
      Code: 'Throttling.User',
      Message: 'Request was denied due to user flow control.',
      Recommend: 'https://api.aliyun.com/troubleshoot?q=Throttling.User&product=OnsMqtt&requestId=ABC',
    });
  });
});

describe('request decoding (strict)', () => {
  it('decodes form components: + is a space, %XY two hex digits, UTF-8 only', () => {
    expect(decodeFormComponent('GID_a%40%40%40b+c%2A~')).toBe('GID_a@@@b c*~');
    expect(decodeFormComponent('%E4%B8%AD')).toBe('中');
    expect(decodeFormComponent(Buffer.from('中', 'utf8').toString('latin1'))).toBe('中');
    for (const bad of ['%', '%4', '%zz', '50%', '%E4%B8', '%FF', '%C0%AF', '%ED%A0%80', '\u4e2d']) expect(decodeFormComponent(bad), bad).toBeUndefined();
  });

  it('parses a form strictly and names the parameter whose value is bad', () => {
    const into: Record<string, string> = {};
    parseFormInto(into, 'a=1&&b&c=x%20y');
    expect(into).toEqual({ a: '1', b: '', c: 'x y' });
    expect(codeOf(() => parseFormInto({}, 'ClientId=%E0%A4'))).toBe('ParameterCheckFailed');
    try {
      parseFormInto({}, 'ClientId=%E0%A4');
    } catch (error) {
      expect((error as Error).message).toContain('The value of "ClientId" is not valid percent-encoded UTF-8.');
    }
  });

  it('tells V3 from V2: an Authorization header, or V3 headers without a V2 Signature', () => {
    expect(isV3Request({ authorization: ['x'] }, {})).toBe(true);
    expect(isV3Request({ 'x-acs-date': ['x'] }, {})).toBe(true);
    expect(isV3Request({ 'x-acs-date': ['x'] }, { Signature: 's' })).toBe(false);
    // pop-core's V2 requests carry x-acs-action and x-acs-version: they decide nothing.
    expect(isV3Request({ 'x-acs-action': ['A'], 'x-acs-version': ['V'] }, { Signature: 's' })).toBe(false);
    expect(isV3Request({ 'x-acs-action': ['A'] }, {})).toBe(false);
  });
});
