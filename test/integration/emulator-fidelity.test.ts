/**
 * The OpenAPI side of issue 23, checked with clients no one here wrote: Alibaba's pop-core (signature V2, GET and
 * POST), Alibaba's @alicloud/openapi-client (V3, its default) and curl. Groups that must exist, one rule for GET of
 * every POST-only action, a rate limit that holds over any one second, the instance and HostId answers, and the
 * emulator's own controls as curl sends them. (The MQTT side is in emulator-rules.test.ts, emulator-offline-pace
 * .test.ts and the interop tests with mosquitto and Paho.)
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it, onTestFinished } from 'vitest';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { runSimulation } from '../../src/simulator/index.js';
import { apiFailure, callApi, useEmulator } from '../helpers/emulator.js';
import { officialCall, officialClient, officialFailure } from '../helpers/openapi-client.js';

const run = promisify(execFile);

/** An emulator of this test only, on its options as given (the default groups unless named). */
async function own(options: EmulatorOptions = {}): Promise<Emulator> {
  const e = await startEmulator({ env: {}, ...options });
  onTestFinished(() => e.close());
  return e;
}

const POST_ONLY = ['RegisterDeviceCredential', 'GetDeviceCredential', 'RefreshDeviceCredential', 'UnRegisterDeviceCredential', 'ApplyToken', 'RevokeToken'] as const;

describe('GroupIds that must exist (reference §5.1; default GID_demo, GID_test, GID_sim)', () => {
  it('pop-core: Register, Get, Refresh, UnRegister and List of a GroupId not created answer 400 PermissionCheckFailed, naming the GroupId', async () => {
    const e = await own();
    const target = { ClientId: 'GID_nogroupcreated@@@x', InstanceId: e.instanceId };
    for (const action of ['RegisterDeviceCredential', 'GetDeviceCredential', 'RefreshDeviceCredential', 'UnRegisterDeviceCredential']) {
      const refused = await apiFailure(callApi(e, action, target));
      expect([action, refused.code, refused.entry.response.statusCode]).toEqual([action, 'PermissionCheckFailed', 400]);
      expect(refused.data['Message']).toContain('GroupId GID_nogroupcreated was not created on instance');
    }
    const list = await apiFailure(callApi(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_nogroupcreated', PageSize: '10' }));
    expect([list.code, list.entry.response.statusCode]).toEqual(['PermissionCheckFailed', 400]);
    // A GroupId that exists lists as usual, empty or not.
    await callApi(e, 'RegisterDeviceCredential', { ClientId: 'GID_demo@@@dev-1', InstanceId: e.instanceId });
    const listed = await callApi<{ DeviceCredentialClientIdList: { Total: string } }>(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_demo', PageSize: '10' });
    expect(listed.DeviceCredentialClientIdList.Total).toBe('1');
    const empty = await callApi<{ DeviceCredentialClientIdList: { Total: string } }>(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_test', PageSize: '10' });
    expect(empty.DeviceCredentialClientIdList.Total).toBe('0');
    // The session query does not refuse: a ClientId of a GroupId that does not exist is simply never online.
    expect(await callApi(e, 'QuerySessionByClientId', target)).toMatchObject({ OnlineStatus: false });
  });

  it('@alicloud/openapi-client (V3): the same answer; groups: [...] names the groups, false accepts any', async () => {
    const e = await own({ groups: ['GID_fleet'] });
    const client = officialClient(e);
    const refused = await officialFailure(officialCall(client, 'RegisterDeviceCredential', { ClientId: 'GID_demo@@@dev', InstanceId: e.instanceId }));
    expect([refused.code, refused.data.statusCode]).toEqual(['PermissionCheckFailed', 400]);
    expect((await officialCall(client, 'RegisterDeviceCredential', { ClientId: 'GID_fleet@@@dev', InstanceId: e.instanceId })).statusCode).toBe(200);
    const any = await own({ groups: false });
    expect((await officialCall(officialClient(any), 'RegisterDeviceCredential', { ClientId: 'GID_whatever@@@dev', InstanceId: any.instanceId })).statusCode).toBe(200);
  });

  it('the simulator\'s embedded emulator has the simulation\'s GroupId, as it has its parent topic', async () => {
    const report = await runSimulation({ devices: 2, groupId: 'GID_fleetx', topic: 'fleetx/%i', durationMs: 0, publishIntervalMs: 0, connectRate: 0 });
    expect(report).toMatchObject({ connected: 2, failedConnects: 0, errors: {} });
  });

  it('pop-core: ApplyToken for a parent topic that was not created answers 400 PermissionCheckFailed; parentTopics: false accepts any', async () => {
    const e = await own();
    const apply = (resources: string, on: Emulator = e): Promise<unknown> => callApi(on, 'ApplyToken', { Resources: resources, InstanceId: on.instanceId, ExpireTime: String(Date.now() + 3_600_000), Actions: 'R' });
    const refused = await apiFailure(apply('demo/+,nosuch/#'));
    expect([refused.code, refused.entry.response.statusCode]).toEqual(['PermissionCheckFailed', 400]);
    expect(refused.data['Message']).toContain('Parent topic nosuch (of resource nosuch/#) was not created on instance');
    await expect(apply('demo/+,sim/#')).resolves.toMatchObject({ Token: expect.any(String) });
    const any = await own({ parentTopics: false });
    await expect(apply('nosuch/#', any)).resolves.toMatchObject({ Token: expect.any(String) });
  });
});

describe('one rule for GET of every POST-only action (reference §1.0, §2)', () => {
  const emu = useEmulator();

  it('pop-core GET of each of the six POST-only actions: 404 InvalidAction.NotFound, nothing done; POST works; the others take GET', async () => {
    const e = emu();
    const target = { ClientId: 'GID_method@@@dev', InstanceId: e.instanceId };
    for (const action of POST_ONLY) {
      const refused = await apiFailure(callApi(e, action, { ...target, Token: 'x', Resources: 'demo/x', ExpireTime: String(Date.now() + 3_600_000), Actions: 'R' }, 'GET'));
      expect([action, refused.code, refused.entry.response.statusCode]).toEqual([action, 'InvalidAction.NotFound', 404]);
    }
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', target))).code).toBe('DeviceCredentialNotFound');
    await callApi(e, 'RegisterDeviceCredential', target);
    await callApi(e, 'GetDeviceCredential', target);
    await expect(callApi(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_method', PageSize: '1' }, 'GET')).resolves.toBeDefined();
    await expect(callApi(e, 'QuerySessionByClientId', target, 'GET')).resolves.toMatchObject({ OnlineStatus: false });
    await expect(callApi(e, 'QueryToken', { Token: 'x', InstanceId: e.instanceId }, 'GET')).resolves.toMatchObject({ TokenStatus: false });
  });

  it('getOnPostOnly: accept serves pop-core GET for all six', async () => {
    const e = await own({ getOnPostOnly: 'accept', groups: ['GID_method'] });
    const target = { ClientId: 'GID_method@@@dev', InstanceId: e.instanceId };
    await callApi(e, 'RegisterDeviceCredential', target, 'GET');
    await callApi(e, 'GetDeviceCredential', target, 'GET');
    await callApi(e, 'RefreshDeviceCredential', target, 'GET');
    await callApi(e, 'UnRegisterDeviceCredential', target, 'GET');
    const { Token } = await callApi<{ Token: string }>(e, 'ApplyToken', { Resources: 'demo/x', InstanceId: e.instanceId, ExpireTime: String(Date.now() + 3_600_000), Actions: 'W' }, 'GET');
    await callApi(e, 'RevokeToken', { Token, InstanceId: e.instanceId }, 'GET');
    expect(e.stats().actions).toMatchObject(Object.fromEntries(POST_ONLY.map((action) => [action, { ok: 1, errors: {} }])));
  });
});

describe('the account limit holds over any one second (reference §0: 500/s)', () => {
  /** Send `n` GetDeviceCredential through pop-core, 50 at a time; how many got past the flow control. */
  async function burst(e: Emulator, n: number): Promise<{ passed: number; throttled: number }> {
    let passed = 0;
    let throttled = 0;
    for (let sent = 0; sent < n; sent += 50) {
      const answers = await Promise.all(Array.from({ length: Math.min(50, n - sent) }, () => callApi(e, 'GetDeviceCredential', { ClientId: 'GID_demo@@@none', InstanceId: e.instanceId }).catch((error: { code: string }) => error.code)));
      for (const answer of answers) {
        if (answer === 'Throttling.User') throttled++;
        else passed++;
      }
    }
    return { passed, throttled };
  }

  it('sliding-window (default): 1,500 calls within one second pass 500; the next pass only once the first are a second old', async () => {
    let clock = 0;
    const e = await own({ rateClock: () => clock });
    expect(await burst(e, 1_500)).toEqual({ passed: 500, throttled: 1_000 });
    clock = 999;
    expect(await burst(e, 10)).toEqual({ passed: 0, throttled: 10 });
    clock = 1_000;
    expect(await burst(e, 600)).toEqual({ passed: 500, throttled: 100 });
    expect(e.stats().actions['GetDeviceCredential']?.errors['Throttling.User']).toBe(1_110);
  });

  it('rateLimitMode: token-bucket refills within the second (the old behaviour: about twice the limit in a burst\'s first second)', async () => {
    let clock = 0;
    const e = await own({ rateClock: () => clock, rateLimitMode: 'token-bucket' });
    expect(await burst(e, 600)).toEqual({ passed: 500, throttled: 100 });
    clock = 999;
    expect((await burst(e, 600)).passed).toBe(499);
  });
});

describe('the instance, the HostId', () => {
  it('pop-core: another InstanceId answers InstancePermissionCheckFailed, or MqttInstanceNotFound with unknownInstanceCode', async () => {
    const e = await own();
    const other = { ClientId: 'GID_demo@@@dev', InstanceId: 'mqtt-cn-notmine' };
    const refused = await apiFailure(callApi(e, 'GetDeviceCredential', other));
    expect([refused.code, refused.entry.response.statusCode]).toEqual(['InstancePermissionCheckFailed', 400]);
    const notFound = await own({ unknownInstanceCode: 'MqttInstanceNotFound' });
    const missing = await apiFailure(callApi(notFound, 'GetDeviceCredential', other));
    expect([missing.code, missing.entry.response.statusCode, missing.data['Message']]).toEqual(['MqttInstanceNotFound', 400, 'Specified instance is not found.']);
  });

  it('error bodies carry HostId onsmqtt.<region>.aliyuncs.com, as the real gateway names itself (pop-core and curl)', async () => {
    const e = await own();
    const refused = await apiFailure(callApi(e, 'GetDeviceCredential', { ClientId: 'GID_demo@@@none', InstanceId: e.instanceId }));
    expect(refused.data['HostId']).toBe('onsmqtt.cn-hangzhou.aliyuncs.com');
    const region = await own({ regionId: 'ap-southeast-1' });
    const { stdout } = await run('curl', ['-s', `${region.apiEndpoint}/?Action=GetDeviceCredential`]);
    expect(JSON.parse(stdout)).toMatchObject({ Code: 'MissingParameter', HostId: 'onsmqtt.ap-southeast-1.aliyuncs.com' });
  });
});

describe('the emulator\'s controls as curl sends them', () => {
  const emu = useEmulator();

  it('curl -d \'{…}\' (a form content type) is read as JSON: fail-next queues, disconnect answers; a real form body still works', async () => {
    const e = emu();
    const { stdout: queued } = await run('curl', ['-s', '-d', '{"action": "GetDeviceCredential", "code": "SystemOverFlow", "count": 2}', `${e.apiEndpoint}/_emulator/fail-next`]);
    expect(JSON.parse(queued)).toEqual({ queued: 2 });
    for (let i = 0; i < 2; i++) expect((await apiFailure(callApi(e, 'GetDeviceCredential', { ClientId: 'GID_demo@@@x', InstanceId: e.instanceId }))).code).toBe('SystemOverFlow');
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', { ClientId: 'GID_demo@@@x', InstanceId: e.instanceId }))).code).toBe('DeviceCredentialNotFound');
    const { stdout: json } = await run('curl', ['-s', '-H', 'Content-Type: application/json', '-d', '{"clientId": "GID_demo@@@nobody"}', `${e.apiEndpoint}/_emulator/disconnect`]);
    expect(JSON.parse(json)).toEqual({ disconnected: false });
    const { stdout: form } = await run('curl', ['-s', '-d', 'clientId=GID_demo%40%40%40nobody', `${e.apiEndpoint}/_emulator/disconnect`]);
    expect(JSON.parse(form)).toEqual({ disconnected: false });
    const { stdout: bad } = await run('curl', ['-s', '-d', '{"action": "Nope", "code": "SystemOverFlow"}', `${e.apiEndpoint}/_emulator/fail-next`]);
    expect(JSON.parse(bad)).toMatchObject({ Code: 'ParameterCheckFailed' });
  });
});
