import { randomBytes } from 'node:crypto';
import { createConnection } from 'node:net';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { DeviceCredentialWire } from '../../src/credential.js';
import { COMMON_PARAMETERS } from '../../src/emulator/gateway.js';
import { rpcTimestamp, stringToSign } from '../../src/signer/openapi.js';
import {
  apiClient,
  apiFailure,
  callApi,
  commonParams,
  rawCall,
  signed,
  signedCall,
  useEmulator,
  type RawReply,
} from '../helpers/emulator.js';

const UUID_UPPER = /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/;
const DEVICE_KEY = /^DC\.[A-Za-z0-9]{22}$/;

interface CredentialBody {
  RequestId: string;
  DeviceCredential: DeviceCredentialWire;
}

interface ListBody {
  RequestId: string;
  DeviceCredentialClientIdList: { Total: string; ClientIdList: string[]; PageNo: string; PageSize: string; NextToken?: string };
}

/** Status, Code and the exact error body shape. */
function expectError(reply: RawReply, status: number, code: string): void {
  expect(reply.status).toBe(status);
  expect(Object.keys(reply.body).sort()).toEqual(['Code', 'HostId', 'Message', 'Recommend', 'RequestId']);
  expect(reply.body['Code']).toBe(code);
  expect(reply.body['RequestId']).toMatch(UUID_UPPER);
  expect(reply.body['HostId']).toBe('onsmqtt.cn-hangzhou.aliyuncs.com');
  expect(reply.body['Recommend']).toBe(
    `https://api.aliyun.com/troubleshoot?q=${code}&product=OnsMqtt&requestId=${String(reply.body['RequestId'])}`,
  );
  expect(reply.headers.get('x-acs-request-id')).toBe(reply.body['RequestId']);
  expect(reply.headers.get('content-type')).toBe('application/json;charset=utf-8');
}

describe('OpenAPI emulator: the five actions through the real pop-core', () => {
  // The clock runs at wall-clock speed but can be pushed forward, to see UpdateTime move.
  let offset = 0;
  const emu = useEmulator({ now: () => Date.now() + offset });

  it('registers, gets, refreshes, lists and unregisters', async () => {
    const e = emu();
    const params = { ClientId: 'GID_life@@@dev-1', InstanceId: e.instanceId };
    const before = Date.now();
    const registered = await callApi<CredentialBody>(e, 'RegisterDeviceCredential', params);
    expect(Object.keys(registered).sort()).toEqual(['DeviceCredential', 'RequestId']);
    expect(registered.RequestId).toMatch(UUID_UPPER);
    const cred = registered.DeviceCredential;
    expect(Object.keys(cred).sort()).toEqual(['ClientId', 'CreateTime', 'DeviceAccessKeyId', 'DeviceAccessKeySecret', 'InstanceId', 'UpdateTime']);
    expect(cred).toMatchObject({ ClientId: 'GID_life@@@dev-1', InstanceId: e.instanceId });
    expect(cred.DeviceAccessKeyId).toMatch(DEVICE_KEY);
    expect(cred.DeviceAccessKeySecret).toMatch(DEVICE_KEY);
    expect(cred.DeviceAccessKeySecret).not.toBe(cred.DeviceAccessKeyId);
    expect(Number.isInteger(cred.CreateTime)).toBe(true);
    expect(cred.CreateTime).toBeGreaterThanOrEqual(before);
    expect(cred.CreateTime).toBeLessThanOrEqual(Date.now());
    expect(cred.UpdateTime).toBe(cred.CreateTime);

    const got = await callApi<CredentialBody>(e, 'GetDeviceCredential', params);
    expect(got.DeviceCredential).toEqual(cred);
    expect(got.RequestId).not.toBe(registered.RequestId);

    offset = 60_000;
    const refreshed = (await callApi<CredentialBody>(e, 'RefreshDeviceCredential', params)).DeviceCredential;
    expect(refreshed.DeviceAccessKeyId).toMatch(DEVICE_KEY);
    expect(refreshed.DeviceAccessKeyId).not.toBe(cred.DeviceAccessKeyId);
    expect(refreshed.DeviceAccessKeySecret).not.toBe(cred.DeviceAccessKeySecret);
    expect(refreshed.CreateTime).toBe(cred.CreateTime);
    expect(refreshed.UpdateTime - cred.UpdateTime).toBeGreaterThanOrEqual(60_000);
    expect((await callApi<CredentialBody>(e, 'GetDeviceCredential', params)).DeviceCredential).toEqual(refreshed);

    const list = await callApi<ListBody>(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_life', PageSize: '10' });
    expect(list.DeviceCredentialClientIdList).toEqual({ Total: '1', ClientIdList: ['GID_life@@@dev-1'], PageNo: '1', PageSize: '10' });

    const unregistered = await callApi(e, 'UnRegisterDeviceCredential', params);
    expect(Object.keys(unregistered)).toEqual(['RequestId']);
    const gone = await apiFailure(callApi(e, 'GetDeviceCredential', params));
    expect(gone.code).toBe('DeviceCredentialNotFound');
  });

  it('rotates on a second Register by default: new keys, CreateTime = UpdateTime = now', async () => {
    const e = emu();
    const params = { ClientId: 'GID_life@@@dev-rotate', InstanceId: e.instanceId };
    const first = (await callApi<CredentialBody>(e, 'RegisterDeviceCredential', params)).DeviceCredential;
    offset += 1_000;
    const second = (await callApi<CredentialBody>(e, 'RegisterDeviceCredential', params)).DeviceCredential;
    expect(second.DeviceAccessKeyId).not.toBe(first.DeviceAccessKeyId);
    expect(second.DeviceAccessKeySecret).not.toBe(first.DeviceAccessKeySecret);
    expect(second.CreateTime).toBeGreaterThanOrEqual(first.CreateTime + 1_000);
    expect(second.UpdateTime).toBe(second.CreateTime);
  });

  it('refuses GET of the four POST-only credential operations (404 InvalidAction.NotFound, nothing changed); List takes GET', async () => {
    const e = emu();
    const params = { ClientId: 'GID_get@@@dev', InstanceId: e.instanceId };
    for (const action of ['RegisterDeviceCredential', 'GetDeviceCredential', 'RefreshDeviceCredential', 'UnRegisterDeviceCredential']) {
      const refused = await apiFailure(callApi(e, action, params, 'GET'));
      expect([action, refused.code, refused.entry.response.statusCode]).toEqual([action, 'InvalidAction.NotFound', 404]);
    }
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', params))).code).toBe('DeviceCredentialNotFound');
    await callApi(e, 'RegisterDeviceCredential', params);
    const list = await callApi<ListBody>(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_get', PageSize: '1' }, 'GET');
    expect(list.DeviceCredentialClientIdList.ClientIdList).toEqual(['GID_get@@@dev']);
  });

  it('pages ListDeviceCredentialClientId by PageNo and by NextToken, sorted, strings for numbers', async () => {
    const e = emu();
    for (const id of ['d5', 'd3', 'd1', 'd4', 'd2']) {
      await callApi(e, 'RegisterDeviceCredential', { ClientId: `GID_page@@@${id}`, InstanceId: e.instanceId });
    }
    await callApi(e, 'RegisterDeviceCredential', { ClientId: 'GID_pageother@@@x', InstanceId: e.instanceId });
    const list = async (extra: Record<string, string>) =>
      (await callApi<ListBody>(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_page', ...extra })).DeviceCredentialClientIdList;

    const p1 = await list({ PageSize: '2' });
    expect(p1).toMatchObject({ Total: '5', ClientIdList: ['GID_page@@@d1', 'GID_page@@@d2'], PageNo: '1', PageSize: '2' });
    expect(typeof p1.NextToken).toBe('string');
    const p2 = await list({ PageSize: '2', NextToken: p1.NextToken ?? '' });
    expect(p2).toMatchObject({ ClientIdList: ['GID_page@@@d3', 'GID_page@@@d4'], PageNo: '2' });
    const p3 = await list({ PageSize: '2', NextToken: p2.NextToken ?? '', PageNo: '1' }); // NextToken wins
    expect(p3).toEqual({ Total: '5', ClientIdList: ['GID_page@@@d5'], PageNo: '3', PageSize: '2' });
    expect(await list({ PageSize: '2', PageNo: '3' })).toEqual(p3);
    expect(await list({ PageSize: '100', PageNo: '2' })).toEqual({ Total: '5', ClientIdList: [], PageNo: '2', PageSize: '100' });
    expect((await list({ PageSize: '100' })).ClientIdList).toHaveLength(5);
  });

  it('accepts a JSON body, a path other than /, and ignores RegionId, SecurityToken and ResourceOwnerAccount', async () => {
    const e = emu();
    const reply = await signedCall(
      e,
      commonParams(e, 'RegisterDeviceCredential', { ClientId: 'GID_json@@@d', InstanceId: e.instanceId, RegionId: 'cn-hangzhou', ResourceOwnerAccount: 'x' }),
      { encoding: 'json', path: '/some/path' },
    );
    expect(reply.status).toBe(200);
    expect(reply.body).not.toHaveProperty('Code');
    expect(reply.headers.get('content-type')).toBe('application/json;charset=utf-8');
    expect(reply.headers.get('x-acs-request-id')).toBe(reply.body['RequestId']);

    const sts = apiClient(e, { securityToken: 'any-sts-token' });
    const got = await sts.request<CredentialBody>('GetDeviceCredential', { ClientId: 'GID_json@@@d', InstanceId: e.instanceId, RegionId: 'cn-shanghai' }, { method: 'POST' });
    expect(got.DeviceCredential.ClientId).toBe('GID_json@@@d');
  });

  it('exposes its URLs and keys, and redacts the secret when printed', () => {
    const e = emu();
    expect(e.apiEndpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(e.mqttUrl).toMatch(/^mqtt:\/\/127\.0\.0\.1:\d+$/);
    expect(e.accessKeySecret).toMatch(/^[0-9A-Za-z]{30}$/);
    expect(JSON.stringify(e)).not.toContain(e.accessKeySecret);
    expect(inspect(e)).not.toContain(e.accessKeySecret);
    expect(JSON.parse(JSON.stringify(e))).toMatchObject({ instanceId: e.instanceId, accessKeyId: e.accessKeyId });
  });

  it('answers pop-core with errors it turns into typed exceptions (Code, data, HTTP status)', async () => {
    const e = emu();
    const err = await apiFailure(callApi(e, 'GetDeviceCredential', { ClientId: 'GID_none@@@x', InstanceId: e.instanceId }));
    expect(err.name).toBe('DeviceCredentialNotFoundError');
    expect(err.code).toBe('DeviceCredentialNotFound');
    expect(err.data['Message']).toBe('Device Credential Not Found. Check if the device certificate is registered.');
    expect(err.entry.response.statusCode).toBe(400);
  });
});

describe('OpenAPI emulator: gateway errors, in the documented order', () => {
  const emu = useEmulator();
  const target = () => ({ ClientId: 'GID_gw@@@d', InstanceId: emu().instanceId });

  it('MissingParameter names each missing common parameter', async () => {
    const e = emu();
    for (const name of COMMON_PARAMETERS) {
      const params = signed(commonParams(e, 'GetDeviceCredential', target()), 'POST', e.accessKeySecret);
      delete params[name];
      const reply = await rawCall(e, params);
      expectError(reply, 400, 'MissingParameter');
      expect(reply.body['Message']).toBe(`The input parameter "${name}" that is mandatory for processing this request is not supplied.`);
    }
    // An empty value is as good as none.
    expectError(await signedCall(e, commonParams(e, 'GetDeviceCredential', { ...target(), SignatureNonce: '' })), 400, 'MissingParameter');
  });

  it('InvalidTimeStamp.Format, then InvalidTimeStamp.Expired', async () => {
    const e = emu();
    for (const ts of ['2020-05-19 10:33:56', '2020-05-19T10:33:56.000Z', '2020-02-30T10:00:00Z', 'yesterday']) {
      // Bad format wins over an unknown AccessKeyId.
      const reply = await signedCall(e, commonParams(e, 'GetDeviceCredential', { ...target(), Timestamp: ts, AccessKeyId: 'LTAInobody' }));
      expectError(reply, 400, 'InvalidTimeStamp.Format');
    }
    for (const skew of [-16 * 60_000, 16 * 60_000]) {
      const ts = rpcTimestamp(new Date(Date.now() + skew));
      const reply = await signedCall(e, commonParams(e, 'GetDeviceCredential', { ...target(), Timestamp: ts, AccessKeyId: 'LTAInobody' }));
      expectError(reply, 400, 'InvalidTimeStamp.Expired');
    }
    const nearEdge = rpcTimestamp(new Date(Date.now() - 14 * 60_000));
    expect((await signedCall(e, commonParams(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_gway', PageSize: '1', Timestamp: nearEdge }))).status).toBe(200);
  });

  it('InvalidAccessKeyId.NotFound (404) before the signature is looked at', async () => {
    const e = emu();
    const reply = await rawCall(e, signed(commonParams(e, 'GetDeviceCredential', { ...target(), AccessKeyId: 'LTAInobody' }), 'POST', 'wrong'));
    expectError(reply, 404, 'InvalidAccessKeyId.NotFound');
    const viaPopCore = await apiFailure(apiClient(e, { accessKeyId: 'LTAInobody' }).request('GetDeviceCredential', target(), { method: 'POST' }));
    expect(viaPopCore.code).toBe('InvalidAccessKeyId.NotFound');
    expect(viaPopCore.entry.response.statusCode).toBe(404);
  });

  it('SignatureDoesNotMatch echoes the server StringToSign; the method is part of it', async () => {
    const e = emu();
    const params = commonParams(e, 'GetDeviceCredential', target());
    const reply = await rawCall(e, signed(params, 'POST', 'not-the-secret'));
    expectError(reply, 400, 'SignatureDoesNotMatch');
    expect(reply.body['Message']).toBe(`Specified signature is not matched with our calculation. server string to sign is:${stringToSign('POST', params)}`);

    // Signed as GET, sent as POST.
    const mismatch = await rawCall(e, signed(commonParams(e, 'GetDeviceCredential', target()), 'GET', e.accessKeySecret), { method: 'POST' });
    expectError(mismatch, 400, 'SignatureDoesNotMatch');
    expect(String(mismatch.body['Message'])).toContain('server string to sign is:POST&%2F&');

    // Only HMAC-SHA1 / 1.0 is verified.
    const sha256 = await signedCall(e, commonParams(e, 'GetDeviceCredential', { ...target(), SignatureMethod: 'HMAC-SHA256' }));
    expectError(sha256, 400, 'SignatureDoesNotMatch');

    const viaPopCore = await apiFailure(apiClient(e, { accessKeySecret: 'wrong' }).request('GetDeviceCredential', target(), { method: 'POST' }));
    expect(viaPopCore.code).toBe('SignatureDoesNotMatch');
    expect(JSON.stringify(viaPopCore.data)).not.toContain(e.accessKeySecret);
  });

  it('SignatureNonceUsed on a replay; a forged request does not burn the nonce', async () => {
    const e = emu();
    const nonce = 'fixed-nonce-1';
    const forged = await rawCall(e, signed(commonParams(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_gway', PageSize: '1', SignatureNonce: nonce }), 'POST', 'wrong'));
    expectError(forged, 400, 'SignatureDoesNotMatch');
    const params = commonParams(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_gway', PageSize: '1', SignatureNonce: nonce });
    expect((await signedCall(e, params)).status).toBe(200);
    expectError(await signedCall(e, params), 400, 'SignatureNonceUsed');
    // Nonces are per gateway, not per request shape: a different call with the same nonce is a replay too.
    expectError(await signedCall(e, commonParams(e, 'GetDeviceCredential', { ...target(), SignatureNonce: nonce })), 400, 'SignatureNonceUsed');
  });

  it('unknown Action → 404 ApiNotSupport; other Version → 400 InvalidVersion', async () => {
    const e = emu();
    expectError(await signedCall(e, commonParams(e, 'DeleteEverything', target())), 404, 'ApiNotSupport');
    expectError(await signedCall(e, commonParams(e, 'toString', target())), 404, 'ApiNotSupport');
    expectError(await signedCall(e, commonParams(e, 'GetDeviceCredential', { ...target(), Version: '2019-01-01' })), 400, 'InvalidVersion');
    const viaPopCore = await apiFailure(apiClient(e).request('SendMessage', {}, { method: 'POST' }));
    expect(viaPopCore.code).toBe('ApiNotSupport');
    expect(viaPopCore.entry.response.statusCode).toBe(404);
  });

  it('refuses malformed bodies with ParameterCheckFailed and serves unknown /_emulator paths with 404', async () => {
    const e = emu();
    const bad = await fetch(new URL('/', e.apiEndpoint), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{not json' });
    expectError({ status: bad.status, headers: bad.headers, body: (await bad.json()) as Record<string, unknown> }, 400, 'ParameterCheckFailed');
    const nested = await fetch(new URL('/', e.apiEndpoint), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"Action":{"x":1}}' });
    expect(nested.status).toBe(400);
    await nested.json();
    const unknown = await fetch(new URL('/_emulator/nothing', e.apiEndpoint));
    expectError({ status: unknown.status, headers: unknown.headers, body: (await unknown.json()) as Record<string, unknown> }, 404, 'InvalidAction.NotFound');
  });
});

describe('OpenAPI emulator: product errors', () => {
  const emu = useEmulator();

  it('InvalidParameter.ClientId / InstanceId for missing, empty or malformed values', async () => {
    const e = emu();
    const cases: Array<[Record<string, string>, string]> = [
      [{ InstanceId: e.instanceId }, 'InvalidParameter.ClientId'],
      [{ ClientId: '', InstanceId: e.instanceId }, 'InvalidParameter.ClientId'],
      [{ ClientId: 'no-separator', InstanceId: e.instanceId }, 'InvalidParameter.ClientId'],
      [{ ClientId: 'GRP_x@@@d', InstanceId: e.instanceId }, 'InvalidParameter.ClientId'],
      [{ ClientId: `GID_x@@@${'d'.repeat(60)}`, InstanceId: e.instanceId }, 'InvalidParameter.ClientId'],
      [{ ClientId: 'GID_x@@@d' }, 'InvalidParameter.InstanceId'],
      [{ ClientId: 'GID_x@@@d', InstanceId: '' }, 'InvalidParameter.InstanceId'],
    ];
    for (const action of ['RegisterDeviceCredential', 'GetDeviceCredential', 'RefreshDeviceCredential', 'UnRegisterDeviceCredential']) {
      for (const [params, code] of cases) {
        expectError(await signedCall(e, commonParams(e, action, params)), 400, code);
      }
    }
  });

  it('InstancePermissionCheckFailed for another instance', async () => {
    const e = emu();
    const err = await apiFailure(callApi(e, 'RegisterDeviceCredential', { ClientId: 'GID_x@@@d', InstanceId: 'mqtt-cn-someoneelse' }));
    expect(err.code).toBe('InstancePermissionCheckFailed');
    expect(err.entry.response.statusCode).toBe(400);
    const list = await signedCall(e, commonParams(e, 'ListDeviceCredentialClientId', { InstanceId: 'mqtt-cn-other', GroupId: 'GID_xxxx', PageSize: '1' }));
    expectError(list, 400, 'InstancePermissionCheckFailed');
  });

  it('DeviceCredentialNotFound for Get, Refresh and UnRegister of an unknown ClientId', async () => {
    const e = emu();
    for (const action of ['GetDeviceCredential', 'RefreshDeviceCredential', 'UnRegisterDeviceCredential']) {
      const reply = await signedCall(e, commonParams(e, action, { ClientId: 'GID_x@@@unknown', InstanceId: e.instanceId }));
      expectError(reply, 400, 'DeviceCredentialNotFound');
      expect(reply.body['Message']).toBe('Device Credential Not Found. Check if the device certificate is registered.');
    }
  });

  it('InvalidParameter.GroupId / PageSize / PageNo / NextToken for List', async () => {
    const e = emu();
    const base = { InstanceId: e.instanceId, GroupId: 'GID_list', PageSize: '10' };
    const cases: Array<[Record<string, string>, string]> = [
      [{ InstanceId: e.instanceId, PageSize: '10' }, 'InvalidParameter.GroupId'],
      [{ ...base, GroupId: 'GRP_list' }, 'InvalidParameter.GroupId'],
      [{ ...base, GroupId: 'GID_' }, 'InvalidParameter.GroupId'],
      [{ InstanceId: e.instanceId, GroupId: 'GID_list' }, 'InvalidParameter.PageSize'],
      [{ ...base, PageSize: '0' }, 'InvalidParameter.PageSize'],
      [{ ...base, PageSize: '101' }, 'InvalidParameter.PageSize'],
      [{ ...base, PageSize: 'ten' }, 'InvalidParameter.PageSize'],
      [{ ...base, PageNo: '0' }, 'InvalidParameter.PageNo'],
      [{ ...base, PageNo: '-1' }, 'InvalidParameter.PageNo'],
      [{ ...base, NextToken: 'garbage!' }, 'InvalidParameter.NextToken'],
      [{ ...base, NextToken: Buffer.from('2:GID_other').toString('base64url') }, 'InvalidParameter.NextToken'],
      [{ PageSize: '10', GroupId: 'GID_list' }, 'InvalidParameter.InstanceId'],
    ];
    for (const [params, code] of cases) {
      expectError(await signedCall(e, commonParams(e, 'ListDeviceCredentialClientId', params)), 400, code);
    }
  });
});

describe('OpenAPI emulator: switches', () => {
  describe('reRegister: reject', () => {
    const emu = useEmulator({ reRegister: 'reject' });
    it('answers a second Register with 400 DeviceCredentialExsit and keeps the first credential', async () => {
      const e = emu();
      const params = { ClientId: 'GID_rej@@@d', InstanceId: e.instanceId };
      const first = await callApi<CredentialBody>(e, 'RegisterDeviceCredential', params);
      const err = await apiFailure(callApi(e, 'RegisterDeviceCredential', params));
      expect(err.code).toBe('DeviceCredentialExsit');
      expect(err.data['Message']).toBe('Device Credential Exsit');
      expect(err.entry.response.statusCode).toBe(400);
      expect((await callApi<CredentialBody>(e, 'GetDeviceCredential', params)).DeviceCredential).toEqual(first.DeviceCredential);
    });
  });

  describe('credentialQuota: 1', () => {
    const emu = useEmulator({ credentialQuota: 1 });
    it('answers a second ClientId with DeviceCredentialNumExceed; rotating the first is still allowed', async () => {
      const e = emu();
      await callApi(e, 'RegisterDeviceCredential', { ClientId: 'GID_q@@@one', InstanceId: e.instanceId });
      const err = await apiFailure(callApi(e, 'RegisterDeviceCredential', { ClientId: 'GID_q@@@two', InstanceId: e.instanceId }));
      expect(err.code).toBe('DeviceCredentialNumExceed');
      expect(err.entry.response.statusCode).toBe(400);
      await callApi(e, 'RegisterDeviceCredential', { ClientId: 'GID_q@@@one', InstanceId: e.instanceId });
      await callApi(e, 'UnRegisterDeviceCredential', { ClientId: 'GID_q@@@one', InstanceId: e.instanceId });
      await callApi(e, 'RegisterDeviceCredential', { ClientId: 'GID_q@@@two', InstanceId: e.instanceId });
    });
  });

  describe('qpsLimit: 2', () => {
    const emu = useEmulator({ qpsLimit: 2 });
    it('throttles a burst with 400 Throttling.User', async () => {
      const e = emu();
      const params = { InstanceId: e.instanceId, GroupId: 'GID_burst', PageSize: '1' };
      const results = await Promise.allSettled(Array.from({ length: 6 }, () => callApi(e, 'ListDeviceCredentialClientId', params)));
      const throttled = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      // The bucket refills at 2/s, so a slow machine may let a third call through; never all six.
      expect(results.filter((r) => r.status === 'fulfilled').length).toBeGreaterThanOrEqual(2);
      expect(throttled.length).toBeGreaterThanOrEqual(3);
      for (const r of throttled) {
        const err = r.reason as { code: string; data: Record<string, unknown>; entry: { response: { statusCode: number } } };
        expect(err.code).toBe('Throttling.User');
        expect(err.data['Message']).toBe('Request was denied due to user flow control.');
        expect(err.entry.response.statusCode).toBe(400);
      }
    });
  });
});

describe('OpenAPI emulator: /_emulator/stats', () => {
  const emu = useEmulator({}, 'test');

  it('counts calls by Action: ok, and errors by Code, gateway refusals included', async () => {
    const e = emu();
    const params = { ClientId: 'GID_stats@@@d', InstanceId: e.instanceId };
    await callApi(e, 'RegisterDeviceCredential', params);
    await callApi(e, 'GetDeviceCredential', params);
    await callApi(e, 'GetDeviceCredential', params);
    await apiFailure(callApi(e, 'GetDeviceCredential', { ...params, ClientId: 'GID_stats@@@none' }));
    await apiFailure(apiClient(e, { accessKeySecret: 'wrong' }).request('GetDeviceCredential', params, { method: 'POST' }));
    await rawCall(e, { Version: '2020-04-20' });

    const response = await fetch(new URL('/_emulator/stats', e.apiEndpoint));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/json;charset=utf-8');
    const expected = {
      actions: {
        RegisterDeviceCredential: { ok: 1, errors: {} },
        GetDeviceCredential: { ok: 2, errors: { DeviceCredentialNotFound: 1, SignatureDoesNotMatch: 1 } },
        '(none)': { ok: 0, errors: { MissingParameter: 1 } },
      },
      mqtt: { connected: 0, connacks: {}, rules: {}, queues: { sessions: 0, messages: 0, bytes: 0, largestMessages: 0, largestBytes: 0 } },
    };
    expect(await response.json()).toEqual(expected);
    expect(e.stats()).toEqual(expected);
  });
});

describe('OpenAPI emulator: bounded against hostile requests', () => {
  const emu = useEmulator({}, 'test');

  /** Send raw bytes as one HTTP request and read the whole answer (status line, headers, body). */
  function rawHttp(e: { apiEndpoint: string }, request: string | Buffer): Promise<{ status: number; headers: string; body: string }> {
    const url = new URL(e.apiEndpoint);
    return new Promise((resolve, reject) => {
      const socket = createConnection({ host: url.hostname, port: Number(url.port) }, () => socket.end(request));
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('error', reject);
      socket.on('close', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const split = text.indexOf('\r\n\r\n');
        resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]), headers: text.slice(0, split), body: text.slice(split + 4) });
      });
    });
  }

  it('300 requests with 1 MB random Action values leave one (unknown) key in the stats', async () => {
    const e = emu();
    const send = async (): Promise<void> => {
      const action = randomBytes(499_000).toString('hex');
      const response = await fetch(e.apiEndpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `Action=${action}` });
      expect(response.status).toBe(400);
      await response.arrayBuffer();
    };
    for (let batch = 0; batch < 75; batch++) await Promise.all([send(), send(), send(), send()]);
    await signedCall(e, commonParams(e, 'MadeUpAction', {}));
    expect(e.stats().actions).toEqual({ '(unknown)': { ok: 0, errors: { MissingParameter: 300, ApiNotSupport: 1 } } });
    // Still small: about 220 characters, the fixed mqtt.queues gauges included.
    expect(JSON.stringify(e.stats()).length).toBeLessThan(300);
  });

  it.each([
    ['invalid UTF-8 in the query', '/?ClientId=%E0%A4', undefined],
    ['a stray % in the query', '/?ClientId=%zz', undefined],
    ['a lone % at the end', '/?ClientId=50%', undefined],
    ['a bad parameter name', '/?%FF=1', undefined],
    ['raw non-UTF-8 bytes in a form body', '/', Buffer.from([0x43, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x49, 0x64, 0x3d, 0xff, 0xfe])],
    ['a lone surrogate in a JSON body', '/', '{"ClientId": "GID_a@@@\\ud800"}'],
    ['a lone surrogate in a JSON name', '/', '{"\\udc00": "x"}'],
  ])('%s answers 400 ParameterCheckFailed, never 417 InternalError', async (_name, path, body) => {
    const e = emu();
    const json = typeof body === 'string';
    const response = await fetch(new URL(path, e.apiEndpoint), {
      method: 'POST',
      ...(body === undefined ? {} : { body, headers: { 'content-type': json ? 'application/json' : 'application/x-www-form-urlencoded' } }),
    });
    const reply = { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, unknown> };
    expectError(reply, 400, 'ParameterCheckFailed');
    expect(String(reply.body['Message'])).toMatch(/is not (valid percent-encoded UTF-8|well-formed Unicode)\.$/);
    if (path.includes('ClientId') || (typeof body === 'string' && body.includes('ClientId'))) expect(String(reply.body['Message'])).toContain('"ClientId"');
  });

  it.each(['PUT', 'DELETE', 'PATCH', 'OPTIONS'])('%s is refused like a call the gateway cannot route: 404 InvalidAction.NotFound', async (method) => {
    const e = emu();
    const reply = await fetch(e.apiEndpoint, { method, body: method === 'OPTIONS' ? null : 'Action=GetDeviceCredential' });
    expectError({ status: reply.status, headers: reply.headers, body: (await reply.json()) as Record<string, unknown> }, 404, 'InvalidAction.NotFound');
    expect(e.stats().actions).toEqual({ '(none)': { ok: 0, errors: { 'InvalidAction.NotFound': 1 } } });
  });

  it('HEAD gets the same 404 status without a body', async () => {
    const e = emu();
    const reply = await fetch(e.apiEndpoint, { method: 'HEAD' });
    expect(reply.status).toBe(404);
  });

  it('an HTTP request that does not parse gets a JSON error body too, not a bare 400', async () => {
    const e = emu();
    for (const garbage of ['GARBAGE\r\n\r\n', 'GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n', `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`]) {
      const reply = await rawHttp(e, garbage);
      expect([400, 431]).toContain(reply.status);
      expect(reply.headers).toContain('Content-Type: application/json;charset=utf-8');
      const body = JSON.parse(reply.body) as Record<string, unknown>;
      expect(body['Code']).toBe('ParameterCheckFailed');
      expect(body['RequestId']).toMatch(UUID_UPPER);
    }
  });
});
