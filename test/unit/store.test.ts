import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DeviceCredential } from '../../src/credential.js';
import { StoreError, ValidationError } from '../../src/errors.js';
import { defaultStoreDir, FileCredentialStore, MemoryCredentialStore } from '../../src/provisioner/index.js';
import type { CredentialStore } from '../../src/provisioner/store.js';

const INSTANCE = 'mqtt-cn-test';
const CLIENT = 'GID_test@@@dev-1';
const POSIX = process.platform !== 'win32';

function credential(clientId = CLIENT, suffix = '0000'): DeviceCredential {
  return new DeviceCredential({
    clientId,
    instanceId: INSTANCE,
    deviceAccessKeyId: `DC.Z5fXh9sRRVufyLi6wo${suffix}`,
    deviceAccessKeySecret: `DC.BJMkn4eMQJK2vaApTS${suffix}`,
    createTime: 1605541382000,
    updateTime: 1605541383000,
  });
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apsaramq-store-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Every file under a directory, relative paths, recursively. */
async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(root.length + 1)).sort();
}

async function storeError(promise: Promise<unknown>): Promise<StoreError> {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(StoreError);
  return error as StoreError;
}

describe.each([
  ['MemoryCredentialStore', (): CredentialStore => new MemoryCredentialStore()],
  ['FileCredentialStore', (): CredentialStore => new FileCredentialStore(join(dir, 'store'))],
])('%s', (_name, make) => {
  it('round-trips a credential, replaces it, and removes it', async () => {
    const store = make();
    expect(await store.load(INSTANCE, CLIENT)).toBeUndefined();
    await store.save(credential());
    const loaded = await store.load(INSTANCE, CLIENT);
    expect(loaded?.toWire()).toEqual(credential().toWire());
    await store.save(credential(CLIENT, '1111'));
    expect((await store.load(INSTANCE, CLIENT))?.deviceAccessKeyId).toBe('DC.Z5fXh9sRRVufyLi6wo1111');
    expect(await store.load(INSTANCE, 'GID_test@@@dev-2')).toBeUndefined();
    expect(await store.load('mqtt-cn-other', CLIENT)).toBeUndefined();
    await store.remove(INSTANCE, CLIENT);
    expect(await store.load(INSTANCE, CLIENT)).toBeUndefined();
    await store.remove(INSTANCE, CLIENT); // no error when absent
  });

  it.each([
    ['no @@@', INSTANCE, 'GID_test-dev-1', 'InvalidClientId'],
    ['a path separator', INSTANCE, 'GID_test@@@../../etc', 'InvalidClientId'],
    ['65 characters', INSTANCE, `GID_test@@@${'x'.repeat(54)}`, 'InvalidClientId'],
    ['an empty ClientId', INSTANCE, '', 'InvalidClientId'],
    ['a blank instance', ' ', CLIENT, 'InvalidInstanceId'],
    ['instance ..', '..', CLIENT, 'InvalidInstanceId'],
    ['instance .', '.', CLIENT, 'InvalidInstanceId'],
    ['instance with /', 'a/b', CLIENT, 'InvalidInstanceId'],
  ])('refuses %s before touching anything', async (_what, instanceId, clientId, code) => {
    const store = make();
    for (const op of [store.load(instanceId, clientId), store.remove(instanceId, clientId)]) {
      await expect(op).rejects.toSatisfy((e) => e instanceof ValidationError && e.code === code);
    }
    expect(await filesUnder(dir)).toEqual([]);
  });
});

describe('FileCredentialStore on disk', () => {
  it('keeps <dir>/<instanceId>/<clientId>.json in the wire shape', async () => {
    const store = new FileCredentialStore(join(dir, 'store'));
    await store.save(credential());
    expect(store.pathOf(INSTANCE, CLIENT)).toBe(join(dir, 'store', INSTANCE, `${CLIENT}.json`));
    expect(await filesUnder(dir)).toEqual([join('store', INSTANCE, `${CLIENT}.json`)]);
    expect(JSON.parse(await readFile(store.pathOf(INSTANCE, CLIENT), 'utf8'))).toEqual(credential().toWire());
  });

  it.skipIf(!POSIX)('creates directories 0700 and files 0600 whatever the umask', async () => {
    const previous = process.umask(0);
    try {
      const root = join(dir, 'a', 'store');
      const store = new FileCredentialStore(root);
      await store.save(credential());
      expect((await stat(root)).mode & 0o777).toBe(0o700);
      expect((await stat(join(root, INSTANCE))).mode & 0o777).toBe(0o700);
      expect((await stat(store.pathOf(INSTANCE, CLIENT))).mode & 0o777).toBe(0o600);
      // Replacing keeps it private too.
      await store.save(credential(CLIENT, '2222'));
      expect((await stat(store.pathOf(INSTANCE, CLIENT))).mode & 0o777).toBe(0o600);
    } finally {
      process.umask(previous);
    }
  });

  it('leaves no temp file behind, even with many concurrent writers', async () => {
    const store = new FileCredentialStore(join(dir, 'store'));
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.save(credential(CLIENT, String(i).padStart(4, '0')))));
    expect(await filesUnder(dir)).toEqual([join('store', INSTANCE, `${CLIENT}.json`)]);
    expect((await store.load(INSTANCE, CLIENT))?.clientId).toBe(CLIENT);
  });

  it('removes its temp file when the write fails', async () => {
    const store = new FileCredentialStore(join(dir, 'store'));
    // A directory where the file should go makes the final rename fail.
    await mkdir(store.pathOf(INSTANCE, CLIENT), { recursive: true, mode: 0o700 });
    await chmod(join(dir, 'store'), 0o700);
    await chmod(join(dir, 'store', INSTANCE), 0o700);
    const e = await storeError(store.save(credential()));
    expect(e.code).toBe('StoreIOError');
    expect(e.path).toBe(store.pathOf(INSTANCE, CLIENT));
    expect(await filesUnder(dir)).toEqual([]);
  });

  it('reports an unreadable store as StoreIOError', async () => {
    const root = join(dir, 'store');
    await mkdir(root, { mode: 0o700 });
    await chmod(root, 0o700);
    await writeFile(join(root, INSTANCE), 'not a directory', { mode: 0o600 });
    const e = await storeError(new FileCredentialStore(root).load(INSTANCE, CLIENT));
    expect(e.code).toBe('StoreIOError');
  });

  describe('corrupt files are reported and left untouched', () => {
    const cases: [string, string][] = [
      ['not JSON', '{"ClientId": "GID_test@@@dev-1", '],
      ['an empty file', ''],
      ['a JSON array', '[]'],
      ['a missing secret', JSON.stringify({ ...credential().toWire(), DeviceAccessKeySecret: undefined })],
      ['a numeric key id', JSON.stringify({ ...credential().toWire(), DeviceAccessKeyId: 5 })],
      ['a bad CreateTime', JSON.stringify({ ...credential().toWire(), CreateTime: 'soon' })],
      ['another ClientId', JSON.stringify(credential('GID_test@@@dev-9').toWire())],
      ['another instance', JSON.stringify({ ...credential().toWire(), InstanceId: 'mqtt-cn-other' })],
    ];
    it.each(cases)('%s', async (_what, text) => {
      const store = new FileCredentialStore(join(dir, 'store'));
      await store.save(credential());
      const file = store.pathOf(INSTANCE, CLIENT);
      await writeFile(file, text);
      const e = await storeError(store.load(INSTANCE, CLIENT));
      expect(e.code).toBe('StoreCorrupt');
      expect(e.path).toBe(file);
      expect(e.retryable).toBe(false);
      expect(await readFile(file, 'utf8')).toBe(text);
    });
  });

  describe.skipIf(!POSIX)('insecure permissions', () => {
    it('refuses a file readable by others (0644)', async () => {
      const store = new FileCredentialStore(join(dir, 'store'));
      await store.save(credential());
      const file = store.pathOf(INSTANCE, CLIENT);
      await chmod(file, 0o644);
      const e = await storeError(store.load(INSTANCE, CLIENT));
      expect(e.code).toBe('StoreInsecure');
      expect(e.path).toBe(file);
      expect(e.message).toContain('644');
    });

    it('refuses a group-writable file (0620)', async () => {
      const store = new FileCredentialStore(join(dir, 'store'));
      await store.save(credential());
      await chmod(store.pathOf(INSTANCE, CLIENT), 0o620);
      expect((await storeError(store.load(INSTANCE, CLIENT))).code).toBe('StoreInsecure');
    });

    it.each(['root', 'instance'] as const)('refuses an open %s directory on load and save', async (which) => {
      const root = join(dir, 'store');
      const store = new FileCredentialStore(root);
      await store.save(credential());
      const target = which === 'root' ? root : join(root, INSTANCE);
      await chmod(target, 0o755);
      const loaded = await storeError(store.load(INSTANCE, CLIENT));
      expect(loaded.code).toBe('StoreInsecure');
      expect(loaded.path).toBe(target);
      const before = await readFile(store.pathOf(INSTANCE, CLIENT), 'utf8');
      expect((await storeError(store.save(credential(CLIENT, '3333')))).code).toBe('StoreInsecure');
      expect(await readFile(store.pathOf(INSTANCE, CLIENT), 'utf8')).toBe(before);
    });
  });
});

describe('defaultStoreDir', () => {
  it('prefers APSARAMQ_DEVICE_STORE, then XDG_CONFIG_HOME, then ~/.config', () => {
    expect(defaultStoreDir({ APSARAMQ_DEVICE_STORE: '/srv/creds', XDG_CONFIG_HOME: '/x', HOME: '/home/u' })).toBe('/srv/creds');
    expect(defaultStoreDir({ XDG_CONFIG_HOME: '/xdg', HOME: '/home/u' })).toBe(join('/xdg', 'apsaramq-device', 'credentials'));
    expect(defaultStoreDir({ HOME: '/home/u' })).toBe(join('/home/u', '.config', 'apsaramq-device', 'credentials'));
    expect(defaultStoreDir({ XDG_CONFIG_HOME: 'relative', HOME: '/home/u' })).toBe(join('/home/u', '.config', 'apsaramq-device', 'credentials'));
  });
});
