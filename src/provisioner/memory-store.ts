import type { DeviceCredential } from '../credential.js';
import { type CredentialLock, KeyedLocks } from './lock.js';
import type { CredentialStore } from './store.js';
import { assertStoreKey } from './store-key.js';

/** A {@link CredentialStore} in process memory: nothing survives a restart. The provisioner's default. */
export class MemoryCredentialStore implements CredentialStore {
  // DeviceCredential is frozen, so stored objects can be handed out as they are.
  readonly #credentials = new Map<string, DeviceCredential>();
  readonly #locks = new KeyedLocks();

  /** Number of credentials held. */
  get size(): number {
    return this.#credentials.size;
  }

  load(instanceId: string, clientId: string): Promise<DeviceCredential | undefined> {
    return Promise.resolve().then(() => this.#credentials.get(key(instanceId, clientId)));
  }

  save(credential: DeviceCredential): Promise<void> {
    return Promise.resolve().then(() => {
      this.#credentials.set(key(credential.instanceId, credential.clientId), credential);
    });
  }

  /** The registration of one ClientId, exclusive among the users of this store object (it lives in one process). */
  lock(instanceId: string, clientId: string, options: { signal?: AbortSignal } = {}): Promise<CredentialLock> {
    return Promise.resolve().then(() => this.#locks.acquire(key(instanceId, clientId), `lock(${clientId})`, options.signal));
  }

  remove(instanceId: string, clientId: string): Promise<void> {
    return Promise.resolve().then(() => {
      this.#credentials.delete(key(instanceId, clientId));
    });
  }
}

function key(instanceId: string, clientId: string): string {
  assertStoreKey(instanceId, clientId);
  // Neither id can hold a space, so the pair cannot collide with another.
  return `${instanceId} ${clientId}`;
}
