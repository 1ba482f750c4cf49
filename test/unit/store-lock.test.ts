import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileCredentialStore, MemoryCredentialStore } from '../../src/provisioner/index.js';
import { tempDir } from '../helpers/cli.js';

const INSTANCE = 'mqtt-cn-test';
const CLIENT = 'GID_test@@@dev-1';
const OTHER = 'GID_test@@@dev-2';

type LockingStore = FileCredentialStore | MemoryCredentialStore;

describe.each([
  ['FileCredentialStore', async (): Promise<LockingStore> => new FileCredentialStore(join(await tempDir(), 'store'))],
  ['MemoryCredentialStore', async (): Promise<LockingStore> => new MemoryCredentialStore()],
])('%s.lock', (_name, make) => {
  it('lets one holder per ClientId in; the next gets it once the first lets go', async () => {
    const store = await make();
    const first = await store.lock(INSTANCE, CLIENT);
    const order: string[] = [];
    const second = store.lock(INSTANCE, CLIENT).then((lock) => {
      order.push('second granted');
      return lock;
    });
    // A lock on another ClientId goes through the same steps: once it is granted, a free lock would have been too.
    const other = await store.lock(INSTANCE, OTHER);
    order.push('other granted');
    await other.release();
    order.push('first released');
    await first.release();
    await (await second).release();
    expect(order).toEqual(['other granted', 'first released', 'second granted']);
    await first.release(); // idempotent
  });

  it('gives up waiting when the signal fires, and leaves the lock usable', async () => {
    const store = await make();
    const held = await store.lock(INSTANCE, CLIENT);
    const controller = new AbortController();
    const waiting = store.lock(INSTANCE, CLIENT, { signal: controller.signal });
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'Aborted' });
    await held.release();
    const again = await store.lock(INSTANCE, CLIENT);
    expect(again.compromised).toBe(false);
    await again.release();
  });

  it('refuses ids that could escape the store, before any I/O', async () => {
    const store = await make();
    await expect(store.lock(INSTANCE, '../../etc/passwd')).rejects.toMatchObject({ code: 'InvalidClientId' });
    await expect(store.lock('..', CLIENT)).rejects.toMatchObject({ code: 'InvalidInstanceId' });
  });
});

describe('FileCredentialStore.lock on disk', () => {
  it('keeps its locks under <dir>/<instanceId>/.locks and removes each on release', async () => {
    const store = new FileCredentialStore(join(await tempDir(), 'store'));
    const lock = await store.lock(INSTANCE, CLIENT);
    expect(await readdir(join(store.dir, INSTANCE, '.locks'))).toEqual([`${CLIENT}.lock`]);
    await lock.release();
    expect(await readdir(join(store.dir, INSTANCE, '.locks'))).toEqual([]);
    // The store never reads its lock directory as a credential.
    expect(await store.load(INSTANCE, CLIENT)).toBeUndefined();
    await store.prepare(INSTANCE);
  });

  it('refuses a stale time proper-lockfile would not honour', () => {
    expect(() => new FileCredentialStore('/tmp/x', { lockStaleMs: 1_999 })).toThrow(expect.objectContaining({ code: 'InvalidOption', message: expect.stringContaining('lockStaleMs') }));
    expect(new FileCredentialStore('/tmp/x').lockStaleMs).toBe(10_000);
  });
});
