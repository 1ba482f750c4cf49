import type { DeviceCredential } from '../credential.js';

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
}
