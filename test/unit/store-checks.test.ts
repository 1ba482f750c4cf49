import { execFileSync, spawn } from 'node:child_process';
import { chmod, mkdir, readdir, stat, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DeviceCredential } from '../../src/credential.js';
import { StoreError } from '../../src/errors.js';
import { FileCredentialStore, MAX_CREDENTIAL_FILE_BYTES, Provisioner, provisionFleet, RegistrationJournal } from '../../src/provisioner/index.js';
import { tempDir } from '../helpers/cli.js';
import { startFakeOpenApi } from '../helpers/http.js';

const INSTANCE = 'mqtt-cn-test';
const CLIENT = 'GID_test@@@dev-1';
const KEYS = { accessKeyId: 'LTAI-store-checks', accessKeySecret: 'account-secret-0123456789abcdef' } as const;
const POSIX = process.platform !== 'win32';

function credential(clientId = CLIENT): DeviceCredential {
  return new DeviceCredential({ clientId, instanceId: INSTANCE, deviceAccessKeyId: 'DC.Z5fXh9sRRVufyLi6wo0000', deviceAccessKeySecret: 'DC.BJMkn4eMQJK2vaApTS0000' });
}

async function storeError(promise: Promise<unknown>): Promise<StoreError> {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(StoreError);
  return error as StoreError;
}

/** A store with its instance directory made (0700), and the path a ClientId's credential would have. */
async function emptyStore(): Promise<{ store: FileCredentialStore; file: string; instanceDir: string }> {
  const store = new FileCredentialStore(join(await tempDir(), 'store'));
  await store.prepare(INSTANCE);
  return { store, file: store.pathOf(INSTANCE, CLIENT), instanceDir: join(store.dir, INSTANCE) };
}

/** The pid of a process that has exited (so nothing runs under it, barring reuse within the test). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid as number;
}

describe.skipIf(!POSIX)('what is not a regular credential file is never opened', () => {
  it('a FIFO: StoreCorrupt at once from load and prepare (an open would block forever)', async () => {
    const { store, file } = await emptyStore();
    execFileSync('mkfifo', ['-m', '600', file]);
    for (const call of [store.load(INSTANCE, CLIENT), store.prepare(INSTANCE)]) {
      const e = await storeError(call);
      expect(e.code).toBe('StoreCorrupt');
      expect(e.message).toContain('not a regular file');
      expect(e.path).toBe(file);
    }
    expect((await stat(file)).isFIFO()).toBe(true); // left as it is
  });

  it('a symlink (here to /dev/zero, which would never end): StoreCorrupt, not followed', async () => {
    const { store, file } = await emptyStore();
    await symlink('/dev/zero', file);
    expect((await storeError(store.load(INSTANCE, CLIENT))).code).toBe('StoreCorrupt');
    expect((await storeError(store.prepare(INSTANCE))).code).toBe('StoreCorrupt');
  });

  it('a directory: StoreCorrupt', async () => {
    const { store, file } = await emptyStore();
    await mkdir(file, { mode: 0o700 });
    expect((await storeError(store.load(INSTANCE, CLIENT))).code).toBe('StoreCorrupt');
  });

  it('a file over the size limit (a sparse 1 GB one): StoreCorrupt without reading it', async () => {
    const { store, file } = await emptyStore();
    await writeFile(file, '', { mode: 0o600 });
    await truncate(file, 1024 ** 3);
    const e = await storeError(store.load(INSTANCE, CLIENT));
    expect(e.code).toBe('StoreCorrupt');
    expect(e.message).toContain(String(MAX_CREDENTIAL_FILE_BYTES));
    expect((await storeError(store.prepare(INSTANCE))).code).toBe('StoreCorrupt');
  });

  it('a file at the limit is still read (and then judged as JSON)', async () => {
    const { store, file } = await emptyStore();
    const wire = JSON.stringify(credential().toWire());
    await writeFile(file, wire.padEnd(MAX_CREDENTIAL_FILE_BYTES, ' '), { mode: 0o600 });
    expect((await store.load(INSTANCE, CLIENT))?.sameKeyAs(credential())).toBe(true);
  });
});

describe.skipIf(!POSIX)('prepare: the store checks itself before anything costs money', () => {
  it.each(['root', 'instance', 'journal'] as const)('refuses an open %s directory (0755)', async (which) => {
    const { store, instanceDir } = await emptyStore();
    await RegistrationJournal.forStore(store.dir, INSTANCE).record(CLIENT);
    const target = { root: store.dir, instance: instanceDir, journal: join(instanceDir, '.journal') }[which];
    await chmod(target, 0o755);
    const e = await storeError(store.prepare(INSTANCE));
    expect(e).toMatchObject({ code: 'StoreInsecure', path: target });
  });

  it('removes the temp files of killed writes (they hold a secret), and keeps a live writer\'s fresh one', async () => {
    const { store, instanceDir } = await emptyStore();
    const dead = join(instanceDir, `.${CLIENT}.${await deadPid()}.0123456789ab.tmp`);
    const live = join(instanceDir, `.${CLIENT}.${process.pid}.0123456789ac.tmp`);
    const stale = join(instanceDir, `.GID_test@@@dev-2.${process.pid}.0123456789ad.tmp`);
    for (const path of [dead, live, stale]) await writeFile(path, JSON.stringify(credential().toWire()), { mode: 0o600 });
    const anHourAgo = new Date(Date.now() - 3_600_000);
    await utimes(stale, anHourAgo, anHourAgo);
    // Not a temp file of ours (wrong shape) and a directory with a temp file's name: both left alone.
    const other = join(instanceDir, '.notes.tmp');
    await writeFile(other, 'x', { mode: 0o600 });
    const dirNamedLikeTemp = join(instanceDir, `.${CLIENT}.1.0123456789ae.tmp`);
    await mkdir(dirNamedLikeTemp, { mode: 0o700 });
    await store.prepare(INSTANCE);
    const left = await readdir(instanceDir);
    expect(left.sort()).toEqual(['.notes.tmp', `.${CLIENT}.${process.pid}.0123456789ac.tmp`, `.${CLIENT}.1.0123456789ae.tmp`].sort());
  });

  it('a Provisioner checks before its first API call: an open instance directory costs nothing', async () => {
    const api = await startFakeOpenApi();
    const { store, instanceDir } = await emptyStore();
    await chmod(instanceDir, 0o755);
    const provisioner = new Provisioner({ endpoint: api.url, instanceId: INSTANCE, env: {}, ...KEYS, store });
    for (const call of [
      () => provisioner.ensureCredential(CLIENT),
      () => provisioner.register(CLIENT),
      () => provisioner.get(CLIENT),
      () => provisioner.refresh(CLIENT),
      () => provisioner.unregister(CLIENT),
      () => provisioner.credentialSource(CLIENT)({ reason: 'connect' }),
      () => provisioner.credentialSource(CLIENT)({ reason: 'rejected' }),
    ]) {
      expect((await storeError(call())).code).toBe('StoreInsecure');
    }
    expect(api.requests).toBe(0);
    // Fixed, it goes on: the check is not remembered as failed.
    await chmod(instanceDir, 0o700);
    await provisioner.ensureCredential(CLIENT);
    expect(api.count('RegisterDeviceCredential')).toBe(1);
    provisioner.close();
  });

  it('a fleet of 500 on an open store: every device StoreInsecure, not one call billed', async () => {
    const api = await startFakeOpenApi();
    const { store, instanceDir } = await emptyStore();
    await chmod(instanceDir, 0o755);
    const ids = Array.from({ length: 500 }, (_, i) => `GID_test@@@dev-${i}`);
    const result = await provisionFleet(ids, { endpoint: api.url, instanceId: INSTANCE, env: {}, ...KEYS, store });
    expect(result).toMatchObject({ provisioned: 0, apiCalls: 0 });
    expect(result.failed).toHaveLength(500);
    expect(new Set(result.failed.map((f) => f.code))).toEqual(new Set(['StoreInsecure']));
    expect(api.requests).toBe(0);
  });

  it('a FIFO in the store fails a fleet at once, before any call', async () => {
    const api = await startFakeOpenApi();
    const { store } = await emptyStore();
    execFileSync('mkfifo', ['-m', '600', store.pathOf(INSTANCE, 'GID_test@@@dev-3')]);
    const result = await provisionFleet(['GID_test@@@dev-1', 'GID_test@@@dev-2'], { endpoint: api.url, instanceId: INSTANCE, env: {}, ...KEYS, store });
    expect(result.failed.map((f) => f.code)).toEqual(['StoreCorrupt', 'StoreCorrupt']);
    expect(api.requests).toBe(0);
  });
});
