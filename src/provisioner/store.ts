import type { DeviceCredential } from '../credential.js';
import type { CredentialLock } from './lock.js';

export type { CredentialLock } from './lock.js';

/**
 * Where device credentials are kept between runs, so a device is registered once, not on every boot.
 * Implement it to keep credentials elsewhere (a keychain, a database). Implementations must never write
 * half a credential, and must report a corrupt entry (StoreError `StoreCorrupt`) instead of hiding it.
 */
export interface CredentialStore {
  /** The stored credential of a ClientId on an instance, or `undefined` when there is none. */
  load(instanceId: string, clientId: string): Promise<DeviceCredential | undefined>;
  /** Store (or replace) a credential, atomically. */
  save(credential: DeviceCredential): Promise<void>;
  /** Forget a credential; no error when there is none. */
  remove(instanceId: string, clientId: string): Promise<void>;
  /**
   * Optional: check (and create) what the store needs for an instance, so that a store that could not keep an
   * answer fails before anything is registered. A Provisioner calls it once before its first API call.
   */
  prepare?(instanceId: string): Promise<void>;
  /**
   * Optional: hold the registration of one ClientId exclusively, against every other user of the same store
   * (other processes included, for a store shared between them), until the lock is released. A Provisioner takes
   * it around store check → GetDeviceCredential → RegisterDeviceCredential → save. Without it, only the calls of
   * one Provisioner object are serialised, and two registrars of one ClientId may both register.
   */
  lock?(instanceId: string, clientId: string, options?: { signal?: AbortSignal }): Promise<CredentialLock>;
}
