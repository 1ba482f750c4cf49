import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DeviceCredential } from '../../src/credential.js';
import { ApiError, ApsaraMqDeviceError, ConfigurationError, StoreError, ValidationError } from '../../src/errors.js';
import { FileCredentialStore, MemoryCredentialStore, Provisioner, type ProvisionerOptions } from '../../src/provisioner/index.js';
import { catchSync, type FakeOpenApi, type FakeOpenApiOptions, startFakeOpenApi } from '../helpers/http.js';

const INSTANCE = 'mqtt-cn-test';
const CLIENT = 'GID_test@@@dev-1';
const ACCOUNT_SECRET = 'account-secret-0123456789abcdef';
const KEYS = { accessKeyId: 'LTAI-test-id', accessKeySecret: ACCOUNT_SECRET } as const;
const POSIX = process.platform !== 'win32';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apsaramq-prov-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Setup {
  api: FakeOpenApi;
  store: FileCredentialStore;
  provisioner: Provisioner;
}

async function setup(apiOptions: FakeOpenApiOptions = {}, extra: Partial<ProvisionerOptions> = {}): Promise<Setup> {
  const api = await startFakeOpenApi(apiOptions);
  const store = new FileCredentialStore(join(dir, 'store'));
  const provisioner = new Provisioner({ endpoint: api.url, instanceId: INSTANCE, env: {}, ...KEYS, store, ...extra });
  return { api, store, provisioner };
}

async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

async function rejection(promise: Promise<unknown>): Promise<ApsaraMqDeviceError> {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ApsaraMqDeviceError);
  return error as ApsaraMqDeviceError;
}

/** Register a ClientId directly at the fake API, as another registrar would. */
function preRegister(api: FakeOpenApi, clientId = CLIENT): string {
  const keyId = `DC.preexisting${clientId.length}xxxxxxxxx`;
  api.credentials.set(clientId, {
    ClientId: clientId,
    InstanceId: INSTANCE,
    DeviceAccessKeyId: keyId,
    DeviceAccessKeySecret: 'DC.preexistingsecretxxxxxx',
    CreateTime: 1605541382000,
    UpdateTime: 1605541382000,
  });
  return keyId;
}

describe('Provisioner.ensureCredential', () => {
  it('gets, then registers only on DeviceCredentialNotFound, saves, and then answers from the store', async () => {
    const { api, store, provisioner } = await setup();
    const first = await provisioner.ensureCredential(CLIENT);
    expect(api.actions).toEqual(['GetDeviceCredential', 'RegisterDeviceCredential']);
    expect(first.clientId).toBe(CLIENT);
    expect((await store.load(INSTANCE, CLIENT))?.sameKeyAs(first)).toBe(true);

    const second = await provisioner.ensureCredential(CLIENT);
    expect(api.requests).toBe(2);
    expect(second.sameKeyAs(first)).toBe(true);
    expect(provisioner.apiCalls).toBe(2);
    expect(provisioner.apiCallsByAction()).toEqual({ GetDeviceCredential: 1, RegisterDeviceCredential: 1 });
  });

  it.each(['rotate', 'reject'] as const)('never registers a ClientId that has a credential (reRegister %s)', async (reRegister) => {
    const { api, provisioner } = await setup({ reRegister });
    const keyId = preRegister(api);
    const credential = await provisioner.ensureCredential(CLIENT);
    expect(credential.deviceAccessKeyId).toBe(keyId);
    expect(api.actions).toEqual(['GetDeviceCredential']);
    expect(api.credentials.get(CLIENT)?.DeviceAccessKeyId).toBe(keyId);
  });

  it('falls back to Get when Register answers DeviceCredentialExsit (another registrar won)', async () => {
    let gets = 0;
    const { api, provisioner } = await setup({
      reRegister: 'reject',
      // The first Get happens before the other registrar's Register lands.
      intercept: (action) => {
        if (action === 'GetDeviceCredential' && gets++ === 0) {
          return { status: 400, body: { Code: 'DeviceCredentialNotFound', Message: 'Device Credential Not Found.' } };
        }
        return undefined;
      },
    });
    const keyId = preRegister(api);
    const credential = await provisioner.ensureCredential(CLIENT);
    expect(api.actions).toEqual(['GetDeviceCredential', 'RegisterDeviceCredential', 'GetDeviceCredential']);
    expect(credential.deviceAccessKeyId).toBe(keyId);
  });

  it('passes other API errors on without registering or storing', async () => {
    const { api, provisioner } = await setup({
      intercept: () => ({ status: 400, body: { Code: 'InstancePermissionCheckFailed', Message: 'no' } }),
    });
    const e = await rejection(provisioner.ensureCredential(CLIENT));
    expect(e).toBeInstanceOf(ApiError);
    expect(e.code).toBe('InstancePermissionCheckFailed');
    expect(api.actions).toEqual(['GetDeviceCredential']);
    expect(await filesUnder(dir)).toEqual([]);
  });

  it('shares one call sequence among concurrent callers (single flight)', async () => {
    const { api, provisioner } = await setup({ delayMs: 30 });
    const results = await Promise.all(Array.from({ length: 50 }, () => provisioner.ensureCredential(CLIENT)));
    expect(api.actions).toEqual(['GetDeviceCredential', 'RegisterDeviceCredential']);
    expect(api.requests).toBe(2);
    for (const r of results) expect(r.sameKeyAs(results[0])).toBe(true);
    // Other ClientIds are not held up by it, and each gets its own flight.
    await Promise.all([provisioner.ensureCredential('GID_test@@@dev-2'), provisioner.ensureCredential('GID_test@@@dev-2'), provisioner.ensureCredential('GID_test@@@dev-3')]);
    expect(api.requests).toBe(6);
    // Once settled, the next call starts afresh (and is answered by the store).
    await provisioner.ensureCredential(CLIENT);
    expect(api.requests).toBe(6);
  });

  it('lets one caller give up without cancelling the others; cancels when all give up', async () => {
    const { api, provisioner } = await setup({ delayMs: 50 });
    const impatient = new AbortController();
    const a = provisioner.ensureCredential(CLIENT, { signal: impatient.signal });
    const b = provisioner.ensureCredential(CLIENT);
    impatient.abort();
    expect((await rejection(a)).code).toBe('Aborted');
    expect((await b).clientId).toBe(CLIENT);
    expect(api.actions).toEqual(['GetDeviceCredential', 'RegisterDeviceCredential']);

    const all = new AbortController();
    const c = provisioner.ensureCredential('GID_test@@@dev-2', { signal: all.signal });
    await api.received(3); // its Get is at the server
    all.abort();
    expect((await rejection(c)).code).toBe('Aborted');
    expect(await provisioner.store.load(INSTANCE, 'GID_test@@@dev-2')).toBeUndefined();
    // A new call gets the ClientId's lock only once the cancelled flight has let go of it, so whatever that flight
    // did is done by the time this one is: the shared Get was cancelled, and no Register followed it.
    const again = await provisioner.ensureCredential('GID_test@@@dev-2');
    const registersOfDev2 = api.params.filter((p) => p['Action'] === 'RegisterDeviceCredential' && p['ClientId'] === 'GID_test@@@dev-2');
    expect(registersOfDev2).toHaveLength(1);
    expect(again.deviceAccessKeyId).toBe(api.credentials.get('GID_test@@@dev-2')?.DeviceAccessKeyId);
  });

  it('lets a flight that failed be retried', async () => {
    let fail = true;
    const { api, provisioner } = await setup({
      intercept: () => (fail ? { status: 503, body: { Code: 'ServiceUnavailable', Message: 'busy' } } : undefined),
    });
    const e = await rejection(provisioner.ensureCredential(CLIENT));
    expect(e.retryable).toBe(true);
    fail = false;
    await provisioner.ensureCredential(CLIENT);
    expect(api.actions).toEqual(['GetDeviceCredential', 'GetDeviceCredential', 'RegisterDeviceCredential']);
  });
});

describe('bad input fails before any I/O and writes nothing', () => {
  it.each([
    ['without @@@', 'GID_test-dev-1'],
    ['of 65 characters', `GID_test@@@${'x'.repeat(54)}`],
    ['empty', ''],
    ['non-ASCII', 'GID_test@@@dévice'],
    ['with a path', 'GID_test@@@../../x'],
  ])('a ClientId %s', async (_what, clientId) => {
    const { api, provisioner } = await setup();
    for (const call of [
      () => provisioner.ensureCredential(clientId),
      () => provisioner.register(clientId),
      () => provisioner.get(clientId),
      () => provisioner.refresh(clientId),
      () => provisioner.unregister(clientId),
    ]) {
      const e = await rejection(call());
      expect(e).toBeInstanceOf(ValidationError);
      expect(e.code).toBe('InvalidClientId');
    }
    expect(() => provisioner.credentialSource(clientId)).toThrow(ValidationError);
    expect(api.requests).toBe(0);
    expect(await filesUnder(dir)).toEqual([]);
  });

  it('a ClientId of 65 characters is really 65 long', () => {
    expect(`GID_test@@@${'x'.repeat(54)}`).toHaveLength(65);
  });

  it.each([
    ['blank', ' '],
    ['empty', ''],
    ['with a slash', 'mqtt/cn'],
  ])('a %s instance id', async (_what, instanceId) => {
    const api = await startFakeOpenApi();
    const e = catchSync(() => new Provisioner({ endpoint: api.url, instanceId, env: {}, ...KEYS }));
    expect(e).toBeInstanceOf(ValidationError);
    expect(e.code).toBe('InvalidInstanceId');
    expect(api.requests).toBe(0);
  });

  it('missing account keys', async () => {
    const api = await startFakeOpenApi();
    const e = catchSync(() => new Provisioner({ endpoint: api.url, instanceId: INSTANCE, env: {}, store: new FileCredentialStore(join(dir, 'store')) }));
    expect(e).toBeInstanceOf(ConfigurationError);
    expect(e.code).toBe('MissingAccessKey');
    expect(e.message).toContain('ALIBABA_CLOUD_ACCESS_KEY_ID');
    expect(api.requests).toBe(0);
    expect(await filesUnder(dir)).toEqual([]);
  });

  it('a corrupt store file: StoreCorrupt, file untouched byte for byte, no API call', async () => {
    const { api, store, provisioner } = await setup();
    await store.save(new DeviceCredential({ clientId: CLIENT, instanceId: INSTANCE, deviceAccessKeyId: 'DC.a', deviceAccessKeySecret: 'DC.b' }));
    const file = store.pathOf(INSTANCE, CLIENT);
    const corrupt = Buffer.from('{"ClientId":"GID_test@@@dev-1","Device\u0000', 'utf8');
    await writeFile(file, corrupt);
    const e = await rejection(provisioner.ensureCredential(CLIENT));
    expect(e).toBeInstanceOf(StoreError);
    expect(e.code).toBe('StoreCorrupt');
    expect((e as StoreError).path).toBe(file);
    expect((await readFile(file)).equals(corrupt)).toBe(true);
    expect(api.requests).toBe(0);
    // The connector's path surfaces it too.
    const source = provisioner.credentialSource(CLIENT);
    expect((await rejection(source({ reason: 'connect' }))).code).toBe('StoreCorrupt');
    expect((await rejection(source({ reason: 'rejected' }))).code).toBe('StoreCorrupt');
    expect(api.requests).toBe(0);
    expect((await readFile(file)).equals(corrupt)).toBe(true);
  });

  it.skipIf(!POSIX)('a store file with mode 0644: StoreInsecure, no API call', async () => {
    const { api, store, provisioner } = await setup();
    await provisioner.ensureCredential(CLIENT);
    const requests = api.requests;
    await chmod(store.pathOf(INSTANCE, CLIENT), 0o644);
    const e = await rejection(provisioner.ensureCredential(CLIENT));
    expect(e.code).toBe('StoreInsecure');
    expect(api.requests).toBe(requests);
  });
});

describe('Provisioner wrappers', () => {
  it('register/get/refresh save, unregister removes, list pages', async () => {
    const { api, store, provisioner } = await setup();
    const registered = await provisioner.register(CLIENT);
    expect((await store.load(INSTANCE, CLIENT))?.sameKeyAs(registered.credential)).toBe(true);
    const refreshed = await provisioner.refresh(CLIENT);
    expect(refreshed.credential.sameKeyAs(registered.credential)).toBe(false);
    expect((await store.load(INSTANCE, CLIENT))?.sameKeyAs(refreshed.credential)).toBe(true);
    await store.remove(INSTANCE, CLIENT);
    const got = await provisioner.get(CLIENT);
    expect(got.credential.sameKeyAs(refreshed.credential)).toBe(true);
    expect((await store.load(INSTANCE, CLIENT))?.sameKeyAs(got.credential)).toBe(true);

    const page = await provisioner.list({ groupId: 'GID_test' });
    expect(page).toMatchObject({ total: 1, clientIds: [CLIENT], pageNo: 1, pageSize: 100 });

    const { requestId } = await provisioner.unregister(CLIENT);
    expect(requestId).toEqual(expect.any(String));
    expect(await store.load(INSTANCE, CLIENT)).toBeUndefined();
    expect(api.credentials.has(CLIENT)).toBe(false);
  });

  it('register whose answer was lost says not to retry it blindly, and stores nothing', async () => {
    const { api, provisioner, store } = await setup({ intercept: (action) => (action === 'RegisterDeviceCredential' ? { status: 400, body: { Code: 'SignatureNonceUsed', Message: 'x' } } : undefined) });
    const e = await rejection(provisioner.register(CLIENT));
    expect(e).toBeInstanceOf(ApiError);
    expect(e).toMatchObject({ code: 'SignatureNonceUsed', retryable: false });
    expect(e.remedy).toContain('check with GetDeviceCredential before registering');
    expect(await store.load(INSTANCE, CLIENT)).toBeUndefined();
    expect(api.count('RegisterDeviceCredential')).toBe(1);
  });

  it('keeps the stored credential when unregister fails', async () => {
    const { store, provisioner } = await setup({
      intercept: (action) => (action === 'UnRegisterDeviceCredential' ? { status: 417, body: { Code: 'InternalError', Message: 'x' } } : undefined),
    });
    await provisioner.ensureCredential(CLIENT);
    expect((await rejection(provisioner.unregister(CLIENT))).code).toBe('InternalError');
    expect(await store.load(INSTANCE, CLIENT)).toBeDefined();
  });

  it('uses a memory store by default', async () => {
    const api = await startFakeOpenApi();
    const provisioner = new Provisioner({ endpoint: api.url, instanceId: INSTANCE, env: {}, ...KEYS });
    expect(provisioner.store).toBeInstanceOf(MemoryCredentialStore);
    await provisioner.ensureCredential(CLIENT);
    await provisioner.ensureCredential(CLIENT);
    expect(api.requests).toBe(2);
    provisioner.close();
  });
});

describe('Provisioner.credentialSource', () => {
  it('connect: ensureCredential', async () => {
    const { api, provisioner } = await setup();
    const source = provisioner.credentialSource(CLIENT);
    const credential = await source({ reason: 'connect' });
    expect(api.actions).toEqual(['GetDeviceCredential', 'RegisterDeviceCredential']);
    expect((await source({ reason: 'connect' })).sameKeyAs(credential)).toBe(true);
    expect(api.requests).toBe(2);
  });

  it('rejected: returns a stored credential another process refreshed, without calling the API', async () => {
    const { api, store, provisioner } = await setup();
    const other = new Provisioner({ endpoint: api.url, instanceId: INSTANCE, env: {}, ...KEYS, store });
    const source = provisioner.credentialSource(CLIENT);
    const old = await source({ reason: 'connect' });
    const { credential: fresh } = await other.refresh(CLIENT); // saves into the shared store
    const requests = api.requests;
    const next = await source({ reason: 'rejected', rejected: old });
    expect(next.sameKeyAs(fresh)).toBe(true);
    expect(api.requests).toBe(requests);
  });

  it('rejected: fetches with Get when the store has the refused key, and saves it', async () => {
    const { api, store, provisioner } = await setup();
    const other = new Provisioner({ endpoint: api.url, instanceId: INSTANCE, env: {}, ...KEYS }); // its own (memory) store
    const source = provisioner.credentialSource(CLIENT);
    const old = await source({ reason: 'connect' });
    const { credential: fresh } = await other.refresh(CLIENT);
    api.actions.length = 0;
    const next = await source({ reason: 'rejected', rejected: old });
    expect(api.actions).toEqual(['GetDeviceCredential']);
    expect(next.sameKeyAs(fresh)).toBe(true);
    expect((await store.load(INSTANCE, CLIENT))?.sameKeyAs(fresh)).toBe(true);
  });

  it('rejected: returns the same key when the service still has it', async () => {
    const { api, provisioner } = await setup();
    const source = provisioner.credentialSource(CLIENT);
    const old = await source({ reason: 'connect' });
    const again = await source({ reason: 'rejected', rejected: old });
    expect(again.sameKeyAs(old)).toBe(true);
    expect(api.actions.at(-1)).toBe('GetDeviceCredential');
  });

  it('rejected: never registers, even when the credential was unregistered', async () => {
    const { api, provisioner } = await setup();
    const source = provisioner.credentialSource(CLIENT);
    const old = await source({ reason: 'connect' });
    api.credentials.delete(CLIENT);
    api.actions.length = 0;
    const e = await rejection(source({ reason: 'rejected', rejected: old }));
    expect(e.code).toBe('DeviceCredentialNotFound');
    expect(api.actions).toEqual(['GetDeviceCredential']);
  });
});

describe('secrets', () => {
  it('never appear in inspect or JSON of the provisioner, credentials, or any error', async () => {
    const { api, provisioner } = await setup();
    const credential = await provisioner.ensureCredential(CLIENT);
    const deviceSecret = credential.deviceAccessKeySecret;
    const errors: unknown[] = [];
    errors.push(await rejection(provisioner.ensureCredential('bad')));
    errors.push(await rejection(provisioner.refresh('GID_test@@@unknown')));
    errors.push(catchSync(() => new Provisioner({ endpoint: api.url, instanceId: INSTANCE, env: {} })));
    errors.push(catchSync(() => new Provisioner({ endpoint: 'nope', instanceId: INSTANCE, env: {}, ...KEYS })));
    const down = new Provisioner({ endpoint: 'http://127.0.0.1:1', instanceId: INSTANCE, env: {}, ...KEYS, timeoutMs: 500 });
    errors.push(await rejection(down.get(CLIENT)));
    for (const value of [provisioner, credential, credential.toJSON(), ...errors]) {
      for (const shown of [inspect(value, { depth: 10, showHidden: true }), JSON.stringify(value), String(value)]) {
        expect(shown).not.toContain(ACCOUNT_SECRET);
        expect(shown).not.toContain(deviceSecret);
      }
    }
    expect(JSON.stringify(provisioner)).toContain(api.url);
  });
});
