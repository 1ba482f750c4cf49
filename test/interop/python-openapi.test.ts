/**
 * The OpenAPI against a V2 signer no one here wrote from code: test/interop/pop-v2.py, Python's standard library only,
 * written from the reference's §3.3-3.4 and checked against its test vector first. It shares no line with our signer
 * (src/signer/openapi.ts) or pop-core's, so a rule that holds here holds for a client built from Alibaba's documents:
 * the GET rule of every POST-only action (issue 23 item 2), GroupIds that must exist (item 1), the unknown-instance
 * answer and the HostId (item 6).
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import { callApi, useEmulator } from '../helpers/emulator.js';

const run = promisify(execFile);
const CLIENT = fileURLToPath(new URL('./pop-v2.py', import.meta.url));
/** Debian's interpreter (the standard library is all the client needs). */
const PYTHON = '/usr/bin/python3';

interface Reply {
  status: number;
  body: Record<string, unknown>;
}

async function pyCall(e: Emulator, method: 'GET' | 'POST', action: string, params: Record<string, string>): Promise<Reply> {
  const env = { ...process.env, ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret };
  const pairs = Object.entries(params).map(([k, v]) => `${k}=${v}`);
  const { stdout } = await run(PYTHON, [CLIENT, e.apiEndpoint, method, action, ...pairs], { env, timeout: 20_000 });
  return JSON.parse(stdout) as Reply;
}

const POST_ONLY = ['RegisterDeviceCredential', 'GetDeviceCredential', 'RefreshDeviceCredential', 'UnRegisterDeviceCredential', 'ApplyToken', 'RevokeToken'] as const;

describe('a V2 client written from the reference (Python, standard library)', () => {
  // The default GroupIds of the emulator (useEmulator accepts any unless told).
  const emulator = useEmulator({ parentTopics: ['demo'], groups: ['GID_demo', 'GID_test', 'GID_sim'] });

  it('computes the reference\'s test-vector signatures (GET and POST), so its answers below can be trusted', async () => {
    const { stdout } = await run(PYTHON, [CLIENT, '--vector']);
    expect(JSON.parse(stdout)).toEqual({ GET: 'pHWkc3ADMq3E9X2BHpcigpS8n3g=', POST: '7K8pdI/y1CsfrxiHe0LniV8macM=' });
  });

  it('GET of each POST-only action: 404 InvalidAction.NotFound and nothing done; POST registers; List and the session query take GET', async () => {
    const e = emulator();
    const target = { ClientId: 'GID_demo@@@py-1', InstanceId: e.instanceId };
    for (const action of POST_ONLY) {
      const params = action === 'ApplyToken' ? { InstanceId: e.instanceId, Resources: 'demo/a', Actions: 'R', ExpireTime: String(Date.now() + 3_600_000) }
        : action === 'RevokeToken' ? { InstanceId: e.instanceId, Token: 'x' } : target;
      const reply = await pyCall(e, 'GET', action, params);
      expect([action, reply.status, reply.body['Code']]).toEqual([action, 404, 'InvalidAction.NotFound']);
    }
    // The GET Register did nothing: the ClientId has no credential yet.
    const listedBefore = await pyCall(e, 'GET', 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_demo', PageSize: '100' });
    expect(listedBefore.status).toBe(200);
    expect(JSON.stringify(listedBefore.body)).not.toContain('GID_demo@@@py-1');
    const registered = await pyCall(e, 'POST', 'RegisterDeviceCredential', target);
    expect(registered.status).toBe(200);
    expect(registered.body).toMatchObject({ DeviceCredential: { ClientId: 'GID_demo@@@py-1', InstanceId: e.instanceId } });
    // pop-core, an independent client of its own, sees the same credential the Python client registered.
    const got = await callApi<{ DeviceCredential: { DeviceAccessKeyId: string } }>(e, 'GetDeviceCredential', target);
    expect(got.DeviceCredential.DeviceAccessKeyId).toBe((registered.body['DeviceCredential'] as { DeviceAccessKeyId: string }).DeviceAccessKeyId);
    const listed = await pyCall(e, 'GET', 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_demo', PageSize: '100' });
    expect(JSON.stringify(listed.body)).toContain('GID_demo@@@py-1');
    expect(await pyCall(e, 'GET', 'QuerySessionByClientId', target)).toMatchObject({ status: 200, body: { OnlineStatus: false } });
  });

  it('a GroupId not created: 400 PermissionCheckFailed naming it; another InstanceId: InstancePermissionCheckFailed; HostId as the gateway names itself', async () => {
    const e = emulator();
    const unknownGroup = await pyCall(e, 'POST', 'RegisterDeviceCredential', { ClientId: 'GID_nogroupcreated@@@py', InstanceId: e.instanceId });
    expect([unknownGroup.status, unknownGroup.body['Code']]).toEqual([400, 'PermissionCheckFailed']);
    expect(unknownGroup.body['Message']).toContain('GID_nogroupcreated');
    const otherInstance = await pyCall(e, 'POST', 'GetDeviceCredential', { ClientId: 'GID_demo@@@py', InstanceId: 'mqtt-cn-someoneelse' });
    expect(otherInstance.body['Code']).toBe('InstancePermissionCheckFailed');
    expect(otherInstance.body['HostId']).toMatch(/^onsmqtt\.[a-z0-9-]+\.aliyuncs\.com$/);
  });
});
