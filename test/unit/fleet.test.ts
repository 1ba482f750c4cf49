import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileCredentialStore, MemoryCredentialStore, type FleetOptions, type FleetProgress, Provisioner, provisionFleet, RegistrationJournal } from '../../src/provisioner/index.js';
import { tempDir } from '../helpers/cli.js';
import { type FakeOpenApiOptions, formParams, sendJson, startFakeOpenApi, startHttpServer } from '../helpers/http.js';

const INSTANCE = 'mqtt-cn-test';
const KEYS = { accessKeyId: 'LTAI-fleet-unit', accessKeySecret: 'account-secret-0123456789abcdef' } as const;
const FAST = { minDelayMs: 0, maxDelayMs: 0 } as const;
/**
 * A lost Register is confirmed with a Get once timeoutMs + maxServiceLatencyMs have passed since it was sent; the
 * fake API applies every request before it answers, so a short window is enough here.
 */
const WINDOW = { timeoutMs: 1_000, maxServiceLatencyMs: 0 } as const;

function ids(n: number, from = 0): string[] {
  return Array.from({ length: n }, (_, i) => `GID_test@@@dev-${from + i}`);
}

let fakes = 0;

async function fake(options: FakeOpenApiOptions = {}) {
  const api = await startFakeOpenApi(options);
  fakes += 1;
  const base: FleetOptions = { endpoint: api.url, instanceId: INSTANCE, env: {}, ...KEYS, accessKeyId: `${KEYS.accessKeyId}-${fakes}`, retry: FAST, ...WINDOW };
  return { api, base };
}

describe('provisionFleet', () => {
  it('get-first: Get, Register on NotFound, store; then everything from the store', async () => {
    const { api, base } = await fake();
    const store = new MemoryCredentialStore();
    const progress: FleetProgress[] = [];
    const first = await provisionFleet(ids(10), { ...base, store, onProgress: (p) => progress.push(p) });
    expect(first).toMatchObject({ requested: 10, provisioned: 10, fromStore: 0, fetched: 0, registered: 10, failed: [], apiCalls: 20, retries: 0, throttled: 0 });
    expect(first.credentials.size).toBe(10);
    expect(first.credentials.get('GID_test@@@dev-3')?.deviceAccessKeyId).toBe(api.credentials.get('GID_test@@@dev-3')?.DeviceAccessKeyId);
    expect(progress.map((p) => p.done)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(progress.at(-1)).toMatchObject({ total: 10, provisioned: 10, failed: 0, apiCalls: 20 });

    const second = await provisionFleet(ids(10), { ...base, store });
    expect(second).toMatchObject({ provisioned: 10, fromStore: 10, apiCalls: 0 });
    expect(api.count('RegisterDeviceCredential')).toBe(10);
  });

  it('never registers a ClientId that already has a credential, under either strategy', async () => {
    const { api, base } = await fake({ reRegister: 'reject' });
    await provisionFleet(['GID_test@@@dev-0'], { ...base });
    const keyId = api.credentials.get('GID_test@@@dev-0')?.DeviceAccessKeyId;
    const getFirst = await provisionFleet(ids(3), { ...base });
    expect(getFirst).toMatchObject({ fetched: 1, registered: 2 });
    // register-first on a service that rejects: DeviceCredentialExsit → Get.
    const registerFirst = await provisionFleet(ids(4), { ...base, strategy: 'register-first' });
    expect(registerFirst).toMatchObject({ provisioned: 4, fetched: 3, registered: 1, apiCalls: 7 });
    expect(api.credentials.get('GID_test@@@dev-0')?.DeviceAccessKeyId).toBe(keyId);
  });

  it('register-first makes one call per new device', async () => {
    const { api, base } = await fake();
    const result = await provisionFleet(ids(8), { ...base, strategy: 'register-first' });
    expect(result).toMatchObject({ registered: 8, apiCalls: 8 });
    expect(api.count('GetDeviceCredential')).toBe(0);
  });

  it('shares one sequence of calls for a ClientId asked for twice or concurrently (single flight)', async () => {
    const { api, base } = await fake({ delayMs: 20 });
    const duplicated = [...ids(5), ...ids(5)];
    const result = await provisionFleet(duplicated, { ...base });
    expect(result).toMatchObject({ requested: 5, provisioned: 5, apiCalls: 10 });

    const provisioner = new Provisioner({ ...base, instanceId: INSTANCE });
    const same = await Promise.all(Array.from({ length: 20 }, () => provisioner.obtainCredential('GID_test@@@dev-99')));
    expect(new Set(same.map((o) => o.credential.deviceAccessKeyId)).size).toBe(1);
    expect(api.count('RegisterDeviceCredential')).toBe(6);
    provisioner.close();
  });

  it('retries throttling and faults, counting them, until every device is provisioned', async () => {
    let n = 0;
    const { api, base } = await fake({
      intercept: () => {
        n += 1;
        if (n % 3 === 1) return { status: 400, body: { Code: 'Throttling.User', Message: 'x' } };
        if (n % 3 === 2) return { status: 417, body: { Code: 'InternalError', Message: 'x' } };
        return undefined;
      },
    });
    const result = await provisionFleet(ids(6), { ...base, concurrency: 1 });
    expect(result.failed).toEqual([]);
    expect(result.provisioned).toBe(6);
    expect(result.apiCalls).toBe(api.requests);
    expect(result.retries).toBe(api.requests - 12);
    expect(result.throttled).toBeGreaterThan(0);
  });

  it.each([
    ['reset', (_res: Parameters<typeof sendJson>[0], req: { socket: { destroy(): void } }) => req.socket.destroy()],
    ['answered SignatureNonceUsed (an intermediary sent it twice)', (res: Parameters<typeof sendJson>[0]) => sendJson(res, 400, { RequestId: 'R', Code: 'SignatureNonceUsed', Message: 'x' })],
    ['answered an uncatalogued JSON 502', (res: Parameters<typeof sendJson>[0]) => sendJson(res, 502, { RequestId: 'R', Code: 'BadGateway', Message: 'x' })],
    ['answered an uncatalogued JSON 504', (res: Parameters<typeof sendJson>[0]) => sendJson(res, 504, { RequestId: 'R', Code: 'GatewayTimeout', Message: 'x' })],
  ] as const)('reconciles a Register that was applied but %s with a Get instead of registering again', async (_what, answer) => {
    const registered = new Map<string, Record<string, unknown>>();
    let registers = 0;
    const server = await startHttpServer((req, res, body) => {
      const p = formParams(req, body);
      const clientId = p['ClientId'] ?? '';
      if (p['Action'] === 'RegisterDeviceCredential') {
        registers += 1;
        registered.set(clientId, { ClientId: clientId, InstanceId: INSTANCE, DeviceAccessKeyId: 'DC.Z5fXh9sRRVufyLi6wo0000', DeviceAccessKeySecret: 'DC.BJMkn4eMQJK2vaApTS0000', CreateTime: 1, UpdateTime: 1 });
        answer(res, req); // applied, but the answer is lost or says nothing of the outcome
        return;
      }
      const credential = registered.get(clientId);
      if (credential) sendJson(res, 200, { RequestId: 'R', DeviceCredential: credential });
      else sendJson(res, 400, { RequestId: 'R', Code: 'DeviceCredentialNotFound', Message: 'x' });
    });
    const result = await provisionFleet(['GID_test@@@dev-1'], { endpoint: server.url, instanceId: INSTANCE, env: {}, ...KEYS, retry: FAST, ...WINDOW, strategy: 'register-first' });
    expect(result).toMatchObject({ provisioned: 1, fetched: 1, registered: 0, retries: 1, failed: [] });
    expect(registers).toBe(1);
  });

  it('register-first with a pending journal entry looks the device up first', async () => {
    const { api, base } = await fake();
    const root = await tempDir();
    const journal = RegistrationJournal.forStore(root, INSTANCE);
    // An earlier run was killed after this Register was answered but before the store write.
    await journal.record('GID_test@@@dev-0');
    await provisionFleet(['GID_test@@@dev-0'], { ...base, strategy: 'register-first' });
    const keyId = api.credentials.get('GID_test@@@dev-0')?.DeviceAccessKeyId;
    const result = await provisionFleet(ids(3), { ...base, strategy: 'register-first', store: new FileCredentialStore(root) });
    expect(result).toMatchObject({ provisioned: 3, fetched: 1, registered: 2 });
    expect(api.credentials.get('GID_test@@@dev-0')?.DeviceAccessKeyId).toBe(keyId);
    expect(await journal.has('GID_test@@@dev-0')).toBe(false);
    expect(await journal.has('GID_test@@@dev-1')).toBe(false);
  });

  it('uses journalDir when given', async () => {
    const { base } = await fake();
    const journalDir = join(await tempDir(), 'journal');
    const journal = new RegistrationJournal(journalDir);
    await journal.record('GID_test@@@dev-0');
    const result = await provisionFleet(ids(1), { ...base, strategy: 'register-first', journalDir });
    // NotFound on the Get, then the Register; the entry is cleared once stored.
    expect(result).toMatchObject({ registered: 1, apiCalls: 2 });
    expect(await journal.has('GID_test@@@dev-0')).toBe(false);
  });

  it('lists failures by ClientId and code, and keeps going', async () => {
    const { base } = await fake({
      intercept: (action, p) => (action === 'RegisterDeviceCredential' && p['ClientId']?.endsWith('-2') ? { status: 400, body: { Code: 'DeviceCredentialNumExceed', Message: 'x' } } : undefined),
    });
    const result = await provisionFleet(ids(4), { ...base });
    expect(result.failed).toEqual([{ clientId: 'GID_test@@@dev-2', code: 'DeviceCredentialNumExceed' }]);
    expect(result.provisioned).toBe(3);
  });

  it('stops starting devices after an error every device would get', async () => {
    const { api, base } = await fake({ intercept: () => ({ status: 400, body: { Code: 'SignatureDoesNotMatch', Message: 'x' } }) });
    const result = await provisionFleet(ids(50), { ...base, concurrency: 2 });
    expect(result.failed).toHaveLength(50);
    expect(result.failed.every((f) => f.code === 'SignatureDoesNotMatch')).toBe(true);
    expect(result.failed.map((f) => f.clientId)).toEqual(ids(50));
    expect(api.requests).toBeLessThanOrEqual(2);
  });

  it('is cancelled by its signal: devices not provisioned are failed with Aborted', async () => {
    const { api, base } = await fake();
    const result = await provisionFleet(ids(5), { ...base, signal: AbortSignal.abort() });
    expect(result.failed).toEqual(ids(5).map((clientId) => ({ clientId, code: 'Aborted' })));
    expect(api.requests).toBe(0);
  });

  it('validates ClientIds and options before any I/O', async () => {
    const { api, base } = await fake();
    await expect(provisionFleet(['GID_test@@@ok', 'not a client id'], base)).rejects.toMatchObject({ code: 'InvalidClientId' });
    await expect(provisionFleet(ids(1), { ...base, strategy: 'whatever' as 'get-first' })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(provisionFleet(ids(1), { ...base, qps: 0 })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(provisionFleet(ids(1), { ...base, concurrency: 0 })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(provisionFleet(ids(1), { ...base, retry: { maxAttempts: 0 } })).rejects.toMatchObject({ code: 'InvalidOption' });
    const { accessKeyId: _id, accessKeySecret: _secret, ...noKeys } = base;
    await expect(provisionFleet(ids(1), noKeys)).rejects.toMatchObject({ code: 'MissingAccessKey' });
    expect(api.requests).toBe(0);
  });

  it('an empty fleet is a result, not an error', async () => {
    const { base } = await fake();
    expect(await provisionFleet([], base)).toMatchObject({ requested: 0, provisioned: 0, failed: [], apiCalls: 0 });
  });
});
