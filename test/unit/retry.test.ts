import { describe, expect, it } from 'vitest';
import { ApiError, ApsaraMqDeviceError, LOCAL_ERROR_CATALOG, NetworkError, StoreError, ValidationError } from '../../src/errors.js';
import { OpenApiClient, type OpenApiClientOptions } from '../../src/provisioner/index.js';
import {
  classifyFailure,
  DEFAULT_RETRY_OPTIONS,
  isRetryableFailure,
  NO_RETRY,
  resolveRetryOptions,
  type RetryClass,
  RetryRun,
  unknownOutcomeRemedy,
} from '../../src/provisioner/retry.js';
import { formParams, sendJson, startHttpServer } from '../helpers/http.js';

const INSTANCE = 'mqtt-cn-test';
const CLIENT = 'GID_test@@@dev-1';
const KEYS = { accessKeyId: 'LTAI-retry-test', accessKeySecret: 'account-secret-0123456789abcdef' } as const;
const RID = 'E4581CCF-62AF-44D9-B5B4-D1DBDC0E0001';
const KEY = 'DC.Z5fXh9sRRVufyLi6wo0000';
const CREDENTIAL = { ClientId: CLIENT, InstanceId: INSTANCE, DeviceAccessKeyId: KEY, DeviceAccessKeySecret: KEY, CreateTime: 1, UpdateTime: 1 };
/** Retries as fast as possible: the delays' maths is tested on its own. */
const FAST = { minDelayMs: 0, maxDelayMs: 0 } as const;

function apiError(code: string, httpStatus = 400): ApiError {
  return new ApiError({ code, action: 'GetDeviceCredential', httpStatus, serviceMessage: 'x' });
}

function networkError(code: 'ConnectionRefused' | 'HostNotFound' | 'RequestTimeout' | 'NetworkError' | 'InvalidResponse'): NetworkError {
  return new NetworkError(code, 'x', 'http://127.0.0.1:1');
}

function client(endpoint: string, extra: Partial<OpenApiClientOptions> = {}): OpenApiClient {
  return new OpenApiClient({ endpoint, env: {}, ...KEYS, ...extra });
}

describe('retry classification (the documented table)', () => {
  const table: [string, ApsaraMqDeviceError, RetryClass, boolean, boolean][] = [
    // what, error, class, retried for GetDeviceCredential, retried for RegisterDeviceCredential
    ['Throttling', apiError('Throttling'), 'throttled', true, true],
    ['Throttling.User', apiError('Throttling.User'), 'throttled', true, true],
    ['Throttling.Api', apiError('Throttling.Api'), 'throttled', true, true],
    ['an unknown Throttling.* code', apiError('Throttling.Whatever'), 'throttled', true, true],
    ['SystemOverFlow', apiError('SystemOverFlow', 403), 'throttled', true, true],
    ['ApplyTokenOverFlow', apiError('ApplyTokenOverFlow'), 'throttled', true, true],
    ['InternalError', apiError('InternalError', 417), 'transient', true, true],
    ['ServiceUnavailable', apiError('ServiceUnavailable', 503), 'transient', true, true],
    ['an uncatalogued code with HTTP 502 (an intermediary may have forwarded it)', apiError('SomethingNew', 502), 'unknown-outcome', true, false],
    ['an uncatalogued code with HTTP 504', apiError('GatewayTimeout', 504), 'unknown-outcome', true, false],
    ['SignatureNonceUsed (this very request reached the gateway before)', apiError('SignatureNonceUsed'), 'unknown-outcome', true, false],
    ['a catalogued fatal code with HTTP 5xx', apiError('PermissionCheckFailed', 502), 'fatal', false, false],
    ['an unknown Throttling.* code with HTTP 5xx', apiError('Throttling.Gateway', 503), 'throttled', true, true],
    ['ConnectionRefused', networkError('ConnectionRefused'), 'not-sent', true, true],
    ['HostNotFound', networkError('HostNotFound'), 'not-sent', true, true],
    ['RequestTimeout', networkError('RequestTimeout'), 'unknown-outcome', true, false],
    ['NetworkError (reset)', networkError('NetworkError'), 'unknown-outcome', true, false],
    ['InvalidResponse (a proxy page)', networkError('InvalidResponse'), 'unknown-outcome', true, false],
    ['SignatureDoesNotMatch', apiError('SignatureDoesNotMatch'), 'fatal', false, false],
    ['InvalidAccessKeyId.NotFound', apiError('InvalidAccessKeyId.NotFound', 404), 'fatal', false, false],
    ['InvalidTimeStamp.Expired', apiError('InvalidTimeStamp.Expired'), 'fatal', false, false],
    ['PermissionCheckFailed', apiError('PermissionCheckFailed'), 'fatal', false, false],
    ['InstancePermissionCheckFailed', apiError('InstancePermissionCheckFailed'), 'fatal', false, false],
    ['MqttOwnerCheckError', apiError('MqttOwnerCheckError', 403), 'fatal', false, false],
    ['ParameterCheckFailed', apiError('ParameterCheckFailed'), 'fatal', false, false],
    ['InvalidParameter.ClientId', apiError('InvalidParameter.ClientId'), 'fatal', false, false],
    ['DeviceCredentialNotFound', apiError('DeviceCredentialNotFound'), 'fatal', false, false],
    ['DeviceCredentialExsit', apiError('DeviceCredentialExsit'), 'fatal', false, false],
    ['DeviceCredentialNumExceed', apiError('DeviceCredentialNumExceed'), 'fatal', false, false],
    ['an unknown 4xx code', apiError('SomethingElse', 404), 'fatal', false, false],
    ['Aborted', new ApsaraMqDeviceError('Aborted', 'x', LOCAL_ERROR_CATALOG.Aborted), 'fatal', false, false],
    ['a validation error', new ValidationError('InvalidClientId', 'x'), 'fatal', false, false],
    ['a store error', new StoreError('StoreIOError', 'x'), 'fatal', false, false],
  ];

  it.each(table)('%s', (_what, error, kind, forGet, forRegister) => {
    expect(classifyFailure(error)).toBe(kind);
    expect(isRetryableFailure(error, 'GetDeviceCredential')).toBe(forGet);
    expect(isRetryableFailure(error, 'RegisterDeviceCredential')).toBe(forRegister);
  });

  it('gives every unknown outcome of a non-idempotent action a "check with Get first" remedy', () => {
    expect(unknownOutcomeRemedy('RegisterDeviceCredential')).toBe(
      'The outcome is unknown: check with GetDeviceCredential before registering (or refreshing) again; a second Register may rotate the credential.',
    );
    expect(unknownOutcomeRemedy('RefreshDeviceCredential')).toBe(unknownOutcomeRemedy('RegisterDeviceCredential'));
    expect(unknownOutcomeRemedy('UnRegisterDeviceCredential')).toContain('GetDeviceCredential');
    expect(unknownOutcomeRemedy('ApplyToken')).toContain('ApplyToken may have been applied');
  });

  it('never retries what is not one of our errors', () => {
    expect(classifyFailure(new Error('boom'))).toBe('fatal');
    expect(classifyFailure('boom')).toBe('fatal');
  });
});

describe('retry options', () => {
  it('defaults to no retries for a bare client and to the fleet policy on {}', () => {
    expect(resolveRetryOptions(undefined).maxAttempts).toBe(1);
    expect(resolveRetryOptions(false)).toEqual(NO_RETRY);
    expect(resolveRetryOptions({})).toEqual(DEFAULT_RETRY_OPTIONS);
    expect(resolveRetryOptions({ maxAttempts: 3, minDelayMs: undefined as unknown as number })).toEqual({ ...DEFAULT_RETRY_OPTIONS, maxAttempts: 3 });
  });

  it.each([
    [{ maxAttempts: 0 }, 'maxAttempts'],
    [{ maxAttempts: 1.5 }, 'maxAttempts'],
    [{ minDelayMs: -1 }, 'minDelayMs'],
    [{ minDelayMs: 500, maxDelayMs: 100 }, 'maxDelayMs'],
    [{ maxElapsedMs: Number.NaN }, 'maxElapsedMs'],
  ])('rejects %j naming %s', (options, name) => {
    expect(() => resolveRetryOptions(options)).toThrow(expect.objectContaining({ code: 'InvalidOption', message: expect.stringContaining(name) }));
  });
});

describe('RetryRun', () => {
  it('stops after maxAttempts attempts in all', async () => {
    const run = new RetryRun(resolveRetryOptions({ maxAttempts: 3, ...FAST }), 'op');
    expect(await run.backoff(true)).toBe(true);
    expect(await run.backoff(true)).toBe(true);
    expect(await run.backoff(true)).toBe(false);
    expect(run.retries).toBe(2);
  });

  it('never retries what is not retryable', async () => {
    const run = new RetryRun(resolveRetryOptions({ ...FAST }), 'op');
    expect(await run.backoff(false)).toBe(false);
    expect(run.retries).toBe(0);
  });

  it('stops when the next delay would pass maxElapsedMs (injected clock and random)', async () => {
    let now = 1_000;
    const policy = resolveRetryOptions({ maxAttempts: 100, minDelayMs: 0, maxDelayMs: 0, maxElapsedMs: 5_000 });
    const run = new RetryRun(policy, 'op', undefined, () => now);
    expect(await run.backoff(true)).toBe(true);
    now += 4_999;
    expect(await run.backoff(true)).toBe(true);
    now += 2;
    expect(await run.backoff(true)).toBe(false);
  });

  it('draws full-jitter delays from the policy: ceiling min * 2^retry, capped', async () => {
    const draws: number[] = [];
    // random() = 0 sleeps 0 ms whatever the ceiling; the ceilings are checked through backoffCeiling's own tests.
    const policy = resolveRetryOptions({ maxAttempts: 4, minDelayMs: 1_000, maxDelayMs: 60_000, random: () => (draws.push(0), 0) });
    const run = new RetryRun(policy, 'op');
    while (await run.backoff(true));
    expect(draws).toHaveLength(3);
  });

  it('is cancelled by its signal during the delay', async () => {
    const controller = new AbortController();
    const run = new RetryRun(resolveRetryOptions({ minDelayMs: 60_000, maxDelayMs: 60_000, random: () => 0.99 }), 'op', controller.signal);
    const pending = run.backoff(true);
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: 'Aborted' });
  });
});

describe('OpenApiClient retries (real HTTP server)', () => {
  /** A server answering the first `failures` requests with `fail`, then the credential; it records each nonce. */
  async function flaky(failures: number, fail: (res: Parameters<Parameters<typeof startHttpServer>[0]>[1], req: Parameters<Parameters<typeof startHttpServer>[0]>[0]) => void) {
    const nonces: string[] = [];
    const server = await startHttpServer((req, res, body) => {
      nonces.push(formParams(req, body)['SignatureNonce'] ?? '');
      if (nonces.length <= failures) fail(res, req);
      else sendJson(res, 200, { RequestId: RID, DeviceCredential: CREDENTIAL });
    });
    return { server, nonces };
  }

  it('does not retry by default: the error says it is retryable', async () => {
    const { server } = await flaky(1, (res) => sendJson(res, 403, { RequestId: RID, Code: 'SystemOverFlow', Message: 'x' }));
    const c = client(server.url);
    await expect(c.getDeviceCredential(INSTANCE, CLIENT)).rejects.toMatchObject({ code: 'SystemOverFlow', retryable: true });
    expect(server.requests).toBe(1);
    expect(c.stats()).toEqual({ apiCalls: 1, retries: 0, throttled: 1 });
  });

  it.each([
    ['Throttling.User', 400, 1],
    ['SystemOverFlow', 403, 1],
    ['InternalError', 417, 0],
    ['ServiceUnavailable', 503, 0],
  ] as const)('retries %s, counting retries and throttled answers, each attempt with a fresh nonce', async (code, status, throttledEach) => {
    const { server, nonces } = await flaky(2, (res) => sendJson(res, status, { RequestId: RID, Code: code, Message: 'x' }));
    const c = client(server.url, { retry: FAST });
    const { credential } = await c.registerDeviceCredential(INSTANCE, CLIENT);
    expect(credential.clientId).toBe(CLIENT);
    expect(server.requests).toBe(3);
    expect(new Set(nonces).size).toBe(3);
    expect(c.stats()).toEqual({ apiCalls: 3, retries: 2, throttled: 2 * throttledEach });
  });

  it('retries a reset GetDeviceCredential but never re-sends a RegisterDeviceCredential whose answer was lost', async () => {
    const reset = (_res: unknown, req: { socket: { destroy(): void } }): void => req.socket.destroy();
    const get = await flaky(1, reset);
    const c1 = client(get.server.url, { retry: FAST });
    await c1.getDeviceCredential(INSTANCE, CLIENT);
    expect(get.server.requests).toBe(2);

    const register = await flaky(1, reset);
    const c2 = client(register.server.url, { retry: FAST });
    await expect(c2.registerDeviceCredential(INSTANCE, CLIENT)).rejects.toMatchObject({ code: 'NetworkError' });
    expect(register.server.requests).toBe(1);
  });

  it.each([
    ['SignatureNonceUsed', 400],
    ['an uncatalogued 502 in JSON', 502],
  ] as const)('retries %s for GetDeviceCredential, with a fresh nonce each attempt', async (what, status) => {
    const code = what === 'SignatureNonceUsed' ? what : 'BadGateway';
    const { server, nonces } = await flaky(2, (res) => sendJson(res, status, { RequestId: RID, Code: code, Message: 'x' }));
    const c = client(server.url, { retry: FAST });
    await c.getDeviceCredential(INSTANCE, CLIENT);
    expect(server.requests).toBe(3);
    expect(new Set(nonces).size).toBe(3);
  });

  it.each([
    ['SignatureNonceUsed', 400],
    ['an uncatalogued 502 in JSON', 502],
    ['an uncatalogued 504 in JSON', 504],
  ] as const)('never re-sends a RegisterDeviceCredential answered %s, and says not to retry it', async (what, status) => {
    const code = what === 'SignatureNonceUsed' ? what : 'GatewayFailure';
    const { server } = await flaky(1, (res) => sendJson(res, status, { RequestId: RID, Code: code, Message: 'x' }));
    const c = client(server.url, { retry: FAST });
    const error = await c.registerDeviceCredential(INSTANCE, CLIENT).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    const remedy = unknownOutcomeRemedy('RegisterDeviceCredential');
    expect(error).toMatchObject({ code, httpStatus: status, retryable: false, remedy, action: 'RegisterDeviceCredential' });
    const e = error as ApiError;
    expect(e.message.endsWith(remedy)).toBe(true);
    expect(e.message).not.toContain('retry');
    expect(JSON.parse(JSON.stringify(e))).toMatchObject({ code, retryable: false, remedy });
    expect(server.requests).toBe(1);
  });

  it('a Get answered SignatureNonceUsed still says it is retryable (a bare client does not retry)', async () => {
    const { server } = await flaky(1, (res) => sendJson(res, 400, { RequestId: RID, Code: 'SignatureNonceUsed', Message: 'x' }));
    await expect(client(server.url).getDeviceCredential(INSTANCE, CLIENT)).rejects.toMatchObject({ code: 'SignatureNonceUsed', retryable: true });
  });

  it('does not retry fatal errors, and gives up after maxAttempts with the last error', async () => {
    const fatal = await flaky(5, (res) => sendJson(res, 400, { RequestId: RID, Code: 'PermissionCheckFailed', Message: 'x' }));
    await expect(client(fatal.server.url, { retry: FAST }).getDeviceCredential(INSTANCE, CLIENT)).rejects.toMatchObject({ code: 'PermissionCheckFailed' });
    expect(fatal.server.requests).toBe(1);

    const always = await flaky(100, (res) => sendJson(res, 417, { RequestId: RID, Code: 'InternalError', Message: 'x' }));
    const c = client(always.server.url, { retry: { ...FAST, maxAttempts: 4 } });
    await expect(c.getDeviceCredential(INSTANCE, CLIENT)).rejects.toMatchObject({ code: 'InternalError' });
    expect(always.server.requests).toBe(4);
    expect(c.stats().retries).toBe(3);
  });

  it('is cancelled by the call signal during a backoff delay', async () => {
    let answered!: () => void;
    const firstAnswered = new Promise<void>((resolve) => {
      answered = resolve;
    });
    const server = await startHttpServer((_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ RequestId: RID, Code: 'Throttling.User', Message: 'x' }), () => answered());
    });
    const c = client(server.url, { retry: { minDelayMs: 60_000, maxDelayMs: 60_000, random: () => 0.99 } });
    const controller = new AbortController();
    const pending = c.getDeviceCredential(INSTANCE, CLIENT, { signal: controller.signal });
    // Aborted once the first attempt has been answered: from then on the client is reading that answer or sleeping
    // its 59-second backoff, and either way no second attempt may leave.
    await firstAnswered;
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: 'Aborted' });
    expect(server.requests).toBe(1);
  });
});
