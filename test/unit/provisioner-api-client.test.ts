import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { AccountCredentials } from '../../src/credential.js';
import { API_ERROR_CATALOG, ApiError, ApsaraMqDeviceError, ConfigurationError, LOCAL_ERROR_CATALOG, NetworkError, ValidationError } from '../../src/errors.js';
import { OpenApiClient, type OpenApiClientOptions } from '../../src/provisioner/index.js';
import { resolveEndpoint } from '../../src/provisioner/api-client.js';
import { catchSync, closedPort, formParams, sendJson, startFakeOpenApi, startHttpServer } from '../helpers/http.js';

const INSTANCE = 'mqtt-cn-test';
const CLIENT = 'GID_test@@@dev-1';
const ACCOUNT_SECRET = 'account-secret-0123456789abcdef';
const KEYS = { accessKeyId: 'LTAI-test-id', accessKeySecret: ACCOUNT_SECRET } as const;
const RID = 'E4581CCF-62AF-44D9-B5B4-D1DBDC0E0001';

function client(endpoint: string, extra: Partial<OpenApiClientOptions> = {}): OpenApiClient {
  const c = new OpenApiClient({ endpoint, env: {}, ...KEYS, ...extra });
  return c;
}

function wireCredential(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ClientId: CLIENT,
    InstanceId: INSTANCE,
    DeviceAccessKeyId: 'DC.Z5fXh9sRRVufyLi6wo0000',
    DeviceAccessKeySecret: 'DC.BJMkn4eMQJK2vaApTS0000',
    CreateTime: 1605541382000,
    UpdateTime: 1605541382000,
    ...overrides,
  };
}

/** A server that answers every request with this status and raw body text. */
async function answering(status: number, text: string, contentType = 'application/json'): Promise<{ url: string; requests: () => number }> {
  const server = await startHttpServer((_req, res) => {
    res.writeHead(status, { 'content-type': contentType });
    res.end(text);
  });
  return { url: server.url, requests: () => server.requests };
}

async function failure(promise: Promise<unknown>): Promise<ApsaraMqDeviceError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ApsaraMqDeviceError);
    const e = error as ApsaraMqDeviceError;
    const shown = `${e.message} ${JSON.stringify(e)} ${inspect(e, { depth: 5 })}`;
    expect(shown).not.toContain(ACCOUNT_SECRET);
    expect(shown).not.toContain('Signature=');
    return e;
  }
  throw new Error('expected a rejection');
}

describe('OpenApiClient construction', () => {
  it('defaults the endpoint from the region', () => {
    const c = new OpenApiClient({ region: 'cn-hangzhou', env: {}, ...KEYS });
    expect(c.endpoint).toBe('https://onsmqtt.cn-hangzhou.aliyuncs.com');
    expect(c.timeoutMs).toBe(10_000);
  });

  it('normalises and checks an explicit endpoint', () => {
    expect(resolveEndpoint({ endpoint: 'http://127.0.0.1:8080/' })).toBe('http://127.0.0.1:8080');
    expect(resolveEndpoint({ endpoint: 'https://example.com/api/' })).toBe('https://example.com/api');
    for (const endpoint of ['not a url', 'ftp://example.com', 'http://user:pw@example.com', 'http://example.com/?a=1']) {
      expect(() => resolveEndpoint({ endpoint }), endpoint).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
    }
  });

  it('needs an endpoint or a region, and a valid timeout', () => {
    const e = catchSync(() => new OpenApiClient({ env: {}, ...KEYS }));
    expect(e).toBeInstanceOf(ValidationError);
    expect(e.code).toBe('InvalidOption');
    expect(e.message).toMatch(/endpoint/);
    expect(e.message).toMatch(/region/);
    expect(() => new OpenApiClient({ region: 'Bad Region', env: {}, ...KEYS })).toThrow(/region/);
    expect(() => new OpenApiClient({ region: 'cn-hangzhou', timeoutMs: 0, env: {}, ...KEYS })).toThrow(/timeoutMs/);
  });

  it('reads account keys from the environment, naming what is missing', () => {
    const env = { ALIBABA_CLOUD_ACCESS_KEY_ID: 'id-from-env', ALIBABA_CLOUD_ACCESS_KEY_SECRET: ACCOUNT_SECRET, ALIBABA_CLOUD_SECURITY_TOKEN: 'sts-token-0123456789abcdef' };
    expect(new OpenApiClient({ region: 'cn-hangzhou', env }).accessKeyId).toBe('id-from-env');

    const none = catchSync(() => new OpenApiClient({ region: 'cn-hangzhou', env: {} }));
    expect(none).toBeInstanceOf(ConfigurationError);
    expect(none.code).toBe('MissingAccessKey');
    expect(none.message).toContain('ALIBABA_CLOUD_ACCESS_KEY_ID');
    expect(none.message).toContain('ALIBABA_CLOUD_ACCESS_KEY_SECRET');

    const noSecret = catchSync(() => new OpenApiClient({ region: 'cn-hangzhou', env: { ALIBABA_CLOUD_ACCESS_KEY_ID: 'x' } }));
    expect(noSecret.message).toContain('ALIBABA_CLOUD_ACCESS_KEY_SECRET');
    expect(noSecret.message).not.toContain('ALIBABA_CLOUD_ACCESS_KEY_ID');

    const halfOptions = catchSync(() => new OpenApiClient({ region: 'cn-hangzhou', accessKeyId: 'x', env }));
    expect(halfOptions.code).toBe('MissingAccessKey');
    expect(halfOptions.message).toContain('accessKeySecret');
  });

  it('never shows the account secret', () => {
    const c = new OpenApiClient({ region: 'cn-hangzhou', env: {}, ...KEYS, securityToken: 'sts-token-0123456789abcdef' });
    for (const shown of [inspect(c, { depth: 10, showHidden: true }), JSON.stringify(c), String(c)]) {
      expect(shown).not.toContain(ACCOUNT_SECRET);
      expect(shown).not.toContain('sts-token-0123456789abcdef');
      expect(shown).toContain('LTAI-test-id');
    }
    const account = new AccountCredentials('LTAI-test-id', ACCOUNT_SECRET, 'sts-token-0123456789abcdef');
    expect(`${inspect(account)} ${JSON.stringify(account)}`).not.toContain(ACCOUNT_SECRET);
  });
});

describe('OpenApiClient requests', () => {
  it('POSTs exactly the given parameters, dropping undefined ones', async () => {
    const api = await startFakeOpenApi();
    const c = client(api.url);
    await c.call('GetDeviceCredential', { InstanceId: INSTANCE, ClientId: CLIENT, Extra: undefined, Page: 2 }).catch(() => undefined);
    const sent = api.params[0] ?? {};
    expect(sent).toMatchObject({ Action: 'GetDeviceCredential', Version: '2020-04-20', InstanceId: INSTANCE, ClientId: CLIENT, Page: '2', AccessKeyId: 'LTAI-test-id' });
    expect(sent).not.toHaveProperty('Extra');
    expect(Object.values(sent)).not.toContain('undefined');
    expect(c.apiCalls).toBe(1);
    expect(c.apiCallsByAction()).toEqual({ GetDeviceCredential: 1 });
  });

  it('sends the STS token when there is one', async () => {
    const api = await startFakeOpenApi();
    await client(api.url, { securityToken: 'sts-token-0123456789abcdef' }).call('GetDeviceCredential', { InstanceId: INSTANCE, ClientId: CLIENT }).catch(() => undefined);
    expect(api.params[0]?.['SecurityToken']).toBe('sts-token-0123456789abcdef');
  });

  it('registers, gets, refreshes, unregisters and lists', async () => {
    const api = await startFakeOpenApi();
    const c = client(api.url);
    const registered = await c.registerDeviceCredential(INSTANCE, CLIENT);
    expect(registered.requestId).toMatch(/^[0-9A-F-]{36}$/);
    expect(registered.credential.clientId).toBe(CLIENT);
    expect(registered.credential.deviceAccessKeyId).toMatch(/^DC\./);
    const got = await c.getDeviceCredential(INSTANCE, CLIENT);
    expect(got.credential.sameKeyAs(registered.credential)).toBe(true);
    const refreshed = await c.refreshDeviceCredential(INSTANCE, CLIENT);
    expect(refreshed.credential.sameKeyAs(registered.credential)).toBe(false);
    expect(refreshed.credential.createTime).toBe(registered.credential.createTime);
    await c.registerDeviceCredential(INSTANCE, 'GID_test@@@dev-2');
    await c.registerDeviceCredential(INSTANCE, 'GID_other@@@dev-3');

    const page1 = await c.listDeviceCredentialClientId(INSTANCE, { groupId: 'GID_test', pageSize: 1 });
    expect(page1).toMatchObject({ total: 2, clientIds: [CLIENT], pageNo: 1, pageSize: 1, nextToken: 'page-2' });
    const page2 = await c.listDeviceCredentialClientId(INSTANCE, { groupId: 'GID_test', pageSize: 1, pageNo: 2 });
    expect(page2).toEqual({ requestId: expect.any(String), total: 2, clientIds: ['GID_test@@@dev-2'], pageNo: 2, pageSize: 1 });
    expect(api.params.at(-1)).toMatchObject({ PageSize: '1', PageNo: '2', GroupId: 'GID_test' });

    const gone = await c.unregisterDeviceCredential(INSTANCE, CLIENT);
    expect(Object.keys(gone)).toEqual(['requestId']);
    const notFound = await failure(c.getDeviceCredential(INSTANCE, CLIENT));
    expect(notFound.code).toBe('DeviceCredentialNotFound');
  });

  it('sends the default page size and no PageNo unless asked', async () => {
    const api = await startFakeOpenApi();
    await client(api.url).listDeviceCredentialClientId(INSTANCE, { groupId: 'GID_test' });
    expect(api.params[0]?.['PageSize']).toBe('100');
    expect(api.params[0]).not.toHaveProperty('PageNo');
    expect(api.params[0]).not.toHaveProperty('NextToken');
  });

  it('validates ids and paging before any I/O', async () => {
    const api = await startFakeOpenApi();
    const c = client(api.url);
    const cases: [Promise<unknown>, string][] = [
      [c.getDeviceCredential(INSTANCE, 'no-separator'), 'InvalidClientId'],
      [c.registerDeviceCredential(INSTANCE, `GID_a@@@${'x'.repeat(57)}`), 'InvalidClientId'],
      [c.refreshDeviceCredential(INSTANCE, ''), 'InvalidClientId'],
      [c.unregisterDeviceCredential(INSTANCE, 'GID_a@@@dévice'), 'InvalidClientId'],
      [c.getDeviceCredential('  ', CLIENT), 'InvalidInstanceId'],
      [c.listDeviceCredentialClientId(INSTANCE, { groupId: 'nope' }), 'InvalidGroupId'],
      [c.listDeviceCredentialClientId(INSTANCE, { groupId: 'GID_test', pageSize: 101 }), 'InvalidOption'],
      [c.listDeviceCredentialClientId(INSTANCE, { groupId: 'GID_test', pageNo: 0 }), 'InvalidOption'],
    ];
    for (const [promise, code] of cases) {
      const e = await failure(promise);
      expect(e).toBeInstanceOf(ValidationError);
      expect(e.code).toBe(code);
    }
    expect(api.requests).toBe(0);
    expect(c.apiCalls).toBe(0);
  });
});

describe('OpenApiClient error mapping', () => {
  const catalog = Object.entries(API_ERROR_CATALOG);

  it.each(catalog)('maps %s in the real body shape', async (code, info) => {
    const requestId = `${RID.slice(0, -4)}${String(catalog.findIndex(([c]) => c === code)).padStart(4, '0')}`;
    const message = info.message ?? 'message';
    const server = await startHttpServer((_req, res) => {
      const body: Record<string, unknown> = { RequestId: requestId, HostId: 'onsmqtt.cn-hangzhou.aliyuncs.com', Code: code, Message: message };
      if (info.origin === 'gateway') body['Recommend'] = `https://api.aliyun.com/troubleshoot?q=${code}&product=OnsMqtt&requestId=${requestId}`;
      sendJson(res, info.httpStatus ?? 400, body);
    });
    const e = await failure(client(server.url).getDeviceCredential(INSTANCE, CLIENT));
    expect(e).toBeInstanceOf(ApiError);
    const api = e as ApiError;
    expect(api.code).toBe(code);
    expect(api.httpStatus).toBe(info.httpStatus);
    expect(api.requestId).toBe(requestId);
    expect(api.retryable).toBe(info.retryable);
    expect(api.remedy).toBe(info.remedy);
    expect(api.action).toBe('GetDeviceCredential');
    expect(api.serviceMessage).toBe(message);
    expect(api.message).not.toContain('URL');
    expect(api.message).not.toContain(server.url);
  });

  it.each([
    ['Foo.Bar', 400, false],
    ['Throttling.Whatever', 400, true],
    ['SomethingNew', 503, true],
    ['SomethingElse', 404, false],
  ] as const)('classifies the unknown code %s (HTTP %i)', async (code, status, retryable) => {
    const server = await startHttpServer((_req, res) => sendJson(res, status, { RequestId: RID, Code: code, Message: 'something' }));
    const e = (await failure(client(server.url).getDeviceCredential(INSTANCE, CLIENT))) as ApiError;
    expect(e).toBeInstanceOf(ApiError);
    expect(e.code).toBe(code);
    expect(e.httpStatus).toBe(status);
    expect(e.retryable).toBe(retryable);
    expect(e.remedy).toEqual(expect.any(String));
    expect(e.remedy.length).toBeGreaterThan(10);
  });

  it('scrubs the STS token from the string to sign SignatureDoesNotMatch echoes', async () => {
    const token = 'CAIS/sts+token=0123456789abcdef';
    const server = await startHttpServer((req, res, body) => {
      const sent = new URLSearchParams(body).get('SecurityToken') ?? '';
      const once = encodeURIComponent(sent).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
      const message = `Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3DLTAI-test-id%26SecurityToken%3D${encodeURIComponent(once)}%26raw=${sent}`;
      sendJson(res, 400, { RequestId: RID, Code: 'SignatureDoesNotMatch', Message: message });
    });
    const e = (await failure(client(server.url, { securityToken: token }).getDeviceCredential(INSTANCE, CLIENT))) as ApiError;
    expect(e.code).toBe('SignatureDoesNotMatch');
    const shown = `${e.message} ${e.serviceMessage} ${JSON.stringify(e)} ${inspect(e)}`;
    expect(shown).toContain('SecurityToken%3D****');
    expect(shown).not.toContain('sts+token');
    expect(shown).not.toContain('sts%2Btoken');
    expect(shown).not.toContain('0123456789abcdef');
  });

  it('maps an HTML 502 page to InvalidResponse with the status', async () => {
    const server = await answering(502, '<html><body><h1>502 Bad Gateway</h1></body></html>', 'text/html');
    const e = await failure(client(server.url).getDeviceCredential(INSTANCE, CLIENT));
    expect(e).toBeInstanceOf(NetworkError);
    expect(e.code).toBe('InvalidResponse');
    expect(e.retryable).toBe(true);
    expect(e.message).toContain('502');
    expect(e.message).toContain('text/html');
    expect((e as NetworkError).endpoint).toBe(server.url);
  });

  it.each([
    ['an empty body', 200, ''],
    ['JSON null', 200, 'null'],
    ['a JSON array', 200, '[]'],
    ['a JSON string', 200, '"ok"'],
    ['JSON without a RequestId', 200, '{"DeviceCredential":{}}'],
    ['a 500 with JSON but no Code', 500, `{"RequestId":"${RID}","Message":"oops"}`],
    ['a 404 with JSON but no Code', 404, `{"RequestId":"${RID}"}`],
    ['a numeric Code', 400, `{"RequestId":"${RID}","Code":42,"Message":"x"}`],
    ['no DeviceCredential', 200, `{"RequestId":"${RID}"}`],
    ['DeviceCredential not an object', 200, `{"RequestId":"${RID}","DeviceCredential":"x"}`],
    ['a missing secret', 200, JSON.stringify({ RequestId: RID, DeviceCredential: wireCredential({ DeviceAccessKeySecret: undefined }) })],
    ['a numeric key id', 200, JSON.stringify({ RequestId: RID, DeviceCredential: wireCredential({ DeviceAccessKeyId: 12345 }) })],
    ['a non-numeric CreateTime', 200, JSON.stringify({ RequestId: RID, DeviceCredential: wireCredential({ CreateTime: 'yesterday' }) })],
    ['an object CreateTime', 200, JSON.stringify({ RequestId: RID, DeviceCredential: wireCredential({ CreateTime: { a: 1 } }) })],
    ['another ClientId', 200, JSON.stringify({ RequestId: RID, DeviceCredential: wireCredential({ ClientId: 'GID_test@@@someone-else' }) })],
    ['another instance', 200, JSON.stringify({ RequestId: RID, DeviceCredential: wireCredential({ InstanceId: 'mqtt-cn-other' }) })],
  ])('maps %s to InvalidResponse, never a half-built credential', async (_what, status, text) => {
    const server = await answering(status, text);
    const e = await failure(client(server.url).getDeviceCredential(INSTANCE, CLIENT));
    expect(e).toBeInstanceOf(NetworkError);
    expect(e.code).toBe('InvalidResponse');
    if (status !== 200) expect(e.message).toContain(`HTTP ${status}`);
    expect(e.message).not.toContain('DC.BJMkn4eMQJK2vaApTS0000');
    expect(JSON.stringify(e)).not.toContain('DC.BJMkn4eMQJK2vaApTS0000');
  });

  it('accepts BigNumber-sized and string times', async () => {
    const text = JSON.stringify({ RequestId: RID, DeviceCredential: wireCredential({ CreateTime: '1605541382000' }) }).replace('"UpdateTime":1605541382000', '"UpdateTime":1605541382000000000');
    const server = await answering(200, text);
    const { credential } = await client(server.url).getDeviceCredential(INSTANCE, CLIENT);
    expect(credential.createTime).toBe(1605541382000);
    expect(credential.updateTime).toBe(1605541382000000000);
  });

  it.each([
    ['Total missing', { ClientIdList: [] }],
    ['Total not a count', { Total: 'many', ClientIdList: [] }],
    ['ClientIdList not strings', { Total: '1', ClientIdList: [1] }],
    ['PageNo not a number', { Total: '0', ClientIdList: [], PageNo: 'first' }],
    ['NextToken not a string', { Total: '0', ClientIdList: [], NextToken: 7 }],
  ])('maps a list answer with %s to InvalidResponse', async (_what, list) => {
    const server = await answering(200, JSON.stringify({ RequestId: RID, DeviceCredentialClientIdList: list }));
    const e = await failure(client(server.url).listDeviceCredentialClientId(INSTANCE, { groupId: 'GID_test' }));
    expect(e.code).toBe('InvalidResponse');
  });

  it('reads list numbers sent as strings, numbers or big integers', async () => {
    const server = await answering(200, `{"RequestId":"${RID}","DeviceCredentialClientIdList":{"Total":12345678901234,"PageNo":"3","PageSize":100,"ClientIdList":["${CLIENT}"],"NextToken":""}}`);
    const page = await client(server.url).listDeviceCredentialClientId(INSTANCE, { groupId: 'GID_test', pageNo: 3 });
    expect(page).toEqual({ requestId: RID, total: 12345678901234, clientIds: [CLIENT], pageNo: 3, pageSize: 100 });
  });

  it('maps a refused connection to ConnectionRefused', async () => {
    const port = await closedPort();
    const e = await failure(client(`http://127.0.0.1:${port}`).getDeviceCredential(INSTANCE, CLIENT));
    expect(e).toBeInstanceOf(NetworkError);
    expect(e.code).toBe('ConnectionRefused');
    expect(e.retryable).toBe(true);
  });

  it('maps an unresolvable host to HostNotFound', async () => {
    const e = await failure(client('http://nonexistent.invalid').getDeviceCredential(INSTANCE, CLIENT));
    expect(e.code).toBe('HostNotFound');
  });

  it('maps a server that never answers to RequestTimeout', async () => {
    const server = await startHttpServer(() => undefined);
    const started = Date.now();
    const e = await failure(client(server.url, { timeoutMs: 200 }).getDeviceCredential(INSTANCE, CLIENT));
    expect(e.code).toBe('RequestTimeout');
    expect(e.message).toContain('200 ms');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('maps a reset connection to NetworkError', async () => {
    const server = await startHttpServer((req) => {
      req.socket.destroy();
    });
    const e = await failure(client(server.url).getDeviceCredential(INSTANCE, CLIENT));
    expect(e.code).toBe('NetworkError');
    expect(e.retryable).toBe(true);
  });

  it('maps a body cut short to NetworkError', async () => {
    const server = await startHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '500' });
      // Cut the connection once the head and the first bytes are on their way.
      res.write('{"RequestId":"', () => res.socket?.destroy());
    });
    const e = await failure(client(server.url).getDeviceCredential(INSTANCE, CLIENT));
    expect(e.code).toBe('NetworkError');
  });

  it('aborts on the signal, before or during the request', async () => {
    const server = await startHttpServer(() => undefined);
    const c = client(server.url);
    const before = await failure(c.getDeviceCredential(INSTANCE, CLIENT, { signal: AbortSignal.abort() }));
    expect(before.code).toBe('Aborted');
    expect(server.requests).toBe(0);
    const controller = new AbortController();
    const pending = c.getDeviceCredential(INSTANCE, CLIENT, { signal: controller.signal });
    await server.received(1);
    controller.abort();
    const during = await failure(pending);
    expect(during.code).toBe('Aborted');
  });

  it('reuses connections and closes them on close()', async () => {
    const sockets = new Set<unknown>();
    const server = await startHttpServer((req, res, body) => {
      sockets.add(req.socket);
      const p = formParams(req, body);
      if (p['ClientId'] === CLIENT) sendJson(res, 200, { RequestId: RID, DeviceCredential: wireCredential({ ClientId: p['ClientId'] }) });
      else sendJson(res, 400, { RequestId: RID, Code: 'DeviceCredentialNotFound', Message: 'not found' });
    });
    const c = client(server.url);
    await c.getDeviceCredential(INSTANCE, CLIENT);
    await expect(c.getDeviceCredential(INSTANCE, 'GID_test@@@other')).rejects.toBeInstanceOf(ApiError);
    await c.getDeviceCredential(INSTANCE, CLIENT);
    expect(sockets.size).toBe(1);
    c.close();
  });
});

describe('NetworkError httpStatus (an answer arrived, but not a usable one)', () => {
  it('carries the status of an HTML 502 page, also in toJSON', async () => {
    const server = await answering(502, '<html><body><h1>502 Bad Gateway</h1></body></html>', 'text/html');
    const e = (await failure(client(server.url).getDeviceCredential(INSTANCE, CLIENT))) as NetworkError;
    expect(e).toMatchObject({ code: 'InvalidResponse', httpStatus: 502 });
    expect(JSON.parse(JSON.stringify(e))).toMatchObject({ code: 'InvalidResponse', httpStatus: 502, endpoint: server.url });
  });

  it.each([
    ['JSON without a Code', 504, `{"RequestId":"${RID}"}`],
    ['JSON null', 200, 'null'],
    ['no RequestId', 200, '{}'],
    ['a malformed credential', 200, `{"RequestId":"${RID}","DeviceCredential":"x"}`],
    ['a numeric Code', 400, `{"RequestId":"${RID}","Code":42}`],
  ])('carries the status of %s (HTTP %i)', async (_what, status, text) => {
    const server = await answering(status, text);
    const e = (await failure(client(server.url).getDeviceCredential(INSTANCE, CLIENT))) as NetworkError;
    expect(e).toMatchObject({ code: 'InvalidResponse', httpStatus: status });
  });

  it('carries the status of a list answer that is malformed', async () => {
    const server = await answering(200, `{"RequestId":"${RID}","DeviceCredentialClientIdList":{"ClientIdList":[]}}`);
    const e = (await failure(client(server.url).listDeviceCredentialClientId(INSTANCE, { groupId: 'GID_test' }))) as NetworkError;
    expect(e).toMatchObject({ code: 'InvalidResponse', httpStatus: 200, retryable: true });
  });

  it('carries the status of a body cut short', async () => {
    const server = await startHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '500' });
      // Cut the connection once the head and the first bytes are on their way.
      res.write('{"RequestId":"', () => res.socket?.destroy());
    });
    const e = (await failure(client(server.url).getDeviceCredential(INSTANCE, CLIENT))) as NetworkError;
    expect(e).toMatchObject({ code: 'NetworkError', httpStatus: 200 });
  });

  it('has none when no answer arrived', async () => {
    const port = await closedPort();
    const refused = (await failure(client(`http://127.0.0.1:${port}`).getDeviceCredential(INSTANCE, CLIENT))) as NetworkError;
    expect(refused.httpStatus).toBeUndefined();
    const reset = await startHttpServer((req) => {
      req.socket.destroy();
    });
    const e = (await failure(client(reset.url).getDeviceCredential(INSTANCE, CLIENT))) as NetworkError;
    expect(e).toMatchObject({ code: 'NetworkError', httpStatus: undefined });
    expect(new NetworkError('RequestTimeout', 'x', 'http://127.0.0.1:1').httpStatus).toBeUndefined();
  });
});

describe('unknown outcomes of actions that are not safe to repeat', () => {
  const REGISTER_REMEDY = 'The outcome is unknown: check with GetDeviceCredential before registering (or refreshing) again; a second Register may rotate the credential.';

  const lost: [string, () => Promise<{ url: string }>, string, Partial<OpenApiClientOptions>][] = [
    ['a reset', () => startHttpServer((req) => void req.socket.destroy()), 'NetworkError', {}],
    ['a timeout', () => startHttpServer(() => undefined), 'RequestTimeout', { timeoutMs: 100 }],
    ['an HTML 502 page', () => answering(502, '<html>502 Bad Gateway</html>', 'text/html'), 'InvalidResponse', {}],
    ['a malformed credential', () => answering(200, `{"RequestId":"${RID}","DeviceCredential":{}}`), 'InvalidResponse', {}],
  ];

  it.each(lost)('Register after %s: retryable false, remedy "check with Get first"', async (_what, start, code, extra) => {
    const server = await start();
    const e = (await failure(client(server.url, extra).registerDeviceCredential(INSTANCE, CLIENT))) as NetworkError;
    expect(e).toBeInstanceOf(NetworkError);
    expect(e).toMatchObject({ code, retryable: false, remedy: REGISTER_REMEDY });
    expect(e.message.endsWith(REGISTER_REMEDY)).toBe(true);
    expect(JSON.parse(JSON.stringify(e))).toMatchObject({ code, retryable: false, remedy: REGISTER_REMEDY });
  });

  it.each(lost)('Get after %s: still retryable with the catalog remedy', async (_what, start, code, extra) => {
    const server = await start();
    const e = await failure(client(server.url, extra).getDeviceCredential(INSTANCE, CLIENT));
    expect(e).toMatchObject({ code, retryable: true, remedy: (LOCAL_ERROR_CATALOG as Record<string, { remedy: string }>)[code]?.remedy });
  });

  it('Refresh and UnRegister after a reset are not retryable either; a refused connection still is', async () => {
    const reset = await startHttpServer((req) => void req.socket.destroy());
    const c = client(reset.url);
    expect(await failure(c.refreshDeviceCredential(INSTANCE, CLIENT))).toMatchObject({ code: 'NetworkError', retryable: false, remedy: REGISTER_REMEDY });
    const unregister = await failure(c.unregisterDeviceCredential(INSTANCE, CLIENT));
    expect(unregister).toMatchObject({ code: 'NetworkError', retryable: false });
    expect(unregister.remedy).toContain('GetDeviceCredential');
    const port = await closedPort();
    expect(await failure(client(`http://127.0.0.1:${port}`).registerDeviceCredential(INSTANCE, CLIENT))).toMatchObject({ code: 'ConnectionRefused', retryable: true });
  });
});
