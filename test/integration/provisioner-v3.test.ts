/**
 * The provisioner signing with V3 (`ACS3-HMAC-SHA256`, today's official SDKs' method) instead of pop-core: every
 * operation against the emulator (which verifies V3 independently: its verifier is checked against Alibaba's
 * @alicloud/openapi-client), and the failures mapped exactly as with pop-core.
 */
import { describe, expect, it } from 'vitest';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { OpenApiClient } from '../../src/provisioner/api-client.js';
import { MemoryCredentialStore } from '../../src/provisioner/memory-store.js';
import { Provisioner } from '../../src/provisioner/provisioner.js';
import { connackCode, useEmulator } from '../helpers/emulator.js';
import { closedPort, formParams, sendJson, startHttpServer } from '../helpers/http.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';

const emulator = useEmulator();

function v3Provisioner(overrides: { accessKeySecret?: string; endpoint?: string } = {}): Provisioner {
  const e = emulator();
  return new Provisioner({
    endpoint: overrides.endpoint ?? e.apiEndpoint,
    instanceId: e.instanceId,
    accessKeyId: e.accessKeyId,
    accessKeySecret: overrides.accessKeySecret ?? e.accessKeySecret,
    signature: 'v3',
    store: new MemoryCredentialStore(),
  });
}

describe('the provisioner with V3 signatures', () => {
  it('runs every operation against the emulator, and the credential connects', async () => {
    const p = v3Provisioner();
    const clientId = 'GID_v3@@@dev-1';
    const ensured = await p.ensureCredential(clientId); // Get → NotFound → Register
    expect(await connackCode(emulator().mqttUrl, signDeviceCredential(ensured))).toBe(0);
    const fetched = (await p.get(clientId)).credential;
    expect(fetched.sameKeyAs(ensured)).toBe(true);
    const refreshed = (await p.refresh(clientId)).credential;
    expect(refreshed.sameKeyAs(ensured)).toBe(false);
    const page = await p.list({ groupId: 'GID_v3' });
    expect(page.clientIds).toEqual([clientId]);
    await p.unregister(clientId);
    const gone = await p.get(clientId).catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(gone, 'DeviceCredentialNotFound')).toBe(true);
    expect(emulator().stats().actions['RegisterDeviceCredential']?.ok).toBe(1);
    p.close();
  });

  it('sends an ACS3-HMAC-SHA256 Authorization with action and version in headers, and no Signature parameter', async () => {
    const seen: { headers: Record<string, unknown>; params: Record<string, string> }[] = [];
    const server = await startHttpServer((request, response, body) => {
      seen.push({ headers: request.headers, params: formParams(request, body) });
      sendJson(response, 200, { RequestId: 'R-1', DeviceCredential: { ClientId: 'GID_v3@@@dev-2', InstanceId: emulator().instanceId, DeviceAccessKeyId: 'DC.k', DeviceAccessKeySecret: 'DC.s', CreateTime: 1, UpdateTime: 1 } });
    });
    const client = new OpenApiClient({ endpoint: server.url, accessKeyId: 'LTAIv3', accessKeySecret: 'secret', signature: 'v3' });
    await client.getDeviceCredential(emulator().instanceId, 'GID_v3@@@dev-2');
    client.close();
    const [request] = seen;
    expect(request?.headers['authorization']).toMatch(/^ACS3-HMAC-SHA256 Credential=LTAIv3,SignedHeaders=[a-z0-9;-]*,Signature=[0-9a-f]{64}$/);
    expect(request?.headers['x-acs-action']).toBe('GetDeviceCredential');
    expect(request?.headers['x-acs-version']).toBe('2020-04-20');
    expect(request?.params).toEqual({ ClientId: 'GID_v3@@@dev-2', InstanceId: emulator().instanceId });
  });

  it('maps failures as with pop-core: a wrong secret, a closed port, a body that is not JSON', async () => {
    const wrong = await v3Provisioner({ accessKeySecret: 'not-the-secret' }).get('GID_v3@@@x').catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(wrong, 'SignatureDoesNotMatch')).toBe(true);
    expect((wrong as Error).message).not.toContain('not-the-secret');
    const refused = await v3Provisioner({ endpoint: `http://127.0.0.1:${await closedPort()}` }).get('GID_v3@@@x').catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(refused, 'ConnectionRefused')).toBe(true);
    const html = await startHttpServer((_request, response) => {
      response.writeHead(502, { 'content-type': 'text/html' }).end('<html>Bad gateway</html>');
    });
    const proxied = await v3Provisioner({ endpoint: html.url }).get('GID_v3@@@x').catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(proxied, 'InvalidResponse')).toBe(true);
    expect(proxied).toMatchObject({ httpStatus: 502 });
  });

  it('refuses an unknown signature before any I/O', () => {
    const e = emulator();
    expect(() => new OpenApiClient({ endpoint: e.apiEndpoint, accessKeyId: 'a', accessKeySecret: 'b', signature: 'v4' as never })).toThrow(/Invalid signature "v4"/);
  });
});
