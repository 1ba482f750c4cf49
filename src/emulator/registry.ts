import { groupIdOf } from '../credential.js';
import { ApiFault } from './api-errors.js';
import { BASE62, randomString, type RandomBytes } from './crypto.js';
import type { ReRegisterPolicy } from './options.js';

/** One issued device credential, as the emulator stores it (the wire field names of the API). */
export interface CredentialRecord {
  readonly ClientId: string;
  readonly InstanceId: string;
  readonly DeviceAccessKeyId: string;
  readonly DeviceAccessKeySecret: string;
  /** ms since the epoch, integer. */
  readonly CreateTime: number;
  /** ms since the epoch, integer. */
  readonly UpdateTime: number;
}

/**
 * One change of the registry, as the data directory's journal keeps it: a credential issued (registered, rotated or
 * refreshed: the whole new record), or a ClientId's credential removed.
 */
export type CredentialChange =
  | { readonly op: 'credential'; readonly record: CredentialRecord }
  | { readonly op: 'credential-removed'; readonly instanceId: string; readonly clientId: string };

/** Policy the registry enforces; a subset of the resolved emulator options. */
export interface RegistryPolicy {
  readonly reRegister: ReRegisterPolicy;
  readonly credentialQuota: number;
  readonly now: () => number;
  /** Where key pairs are drawn from: the CSPRNG by default (a clustered emulator replays changes with a seeded one). */
  readonly randomBytes?: RandomBytes;
}

/** `DC.` + 22 base62 characters, the shape of real device keys (reference §0). */
function deviceKey(source?: RandomBytes): string {
  return `DC.${randomString(BASE62, 22, source)}`;
}

/**
 * Device-credential state: by instance and ClientId (the API's view) and by DeviceAccessKeyId (the broker's
 * view). A credential that is rotated or unregistered leaves the key index at once, so it stops authenticating
 * new CONNECTs; live sessions are the broker's business.
 */
export class CredentialRegistry {
  readonly #byInstance = new Map<string, Map<string, CredentialRecord>>();
  readonly #byKeyId = new Map<string, CredentialRecord>();
  readonly #revokeListeners = new Set<(record: CredentialRecord) => void>();
  readonly #changeListeners = new Set<(change: CredentialChange) => void>();
  readonly #policy: RegistryPolicy;
  #changes = 0;

  constructor(policy: RegistryPolicy) {
    this.#policy = policy;
  }

  /** Counts every change (register, refresh, unregister, restore): a caller compares it before and after. */
  get changes(): number {
    return this.#changes;
  }

  /** Every credential held, of every instance, in a stable order (instance, then ClientId). */
  all(): CredentialRecord[] {
    return [...this.#byInstance.keys()].sort().flatMap((instanceId) => {
      const clients = this.#byInstance.get(instanceId) ?? new Map<string, CredentialRecord>();
      return [...clients.keys()].sort().flatMap((clientId) => clients.get(clientId) ?? []);
    });
  }

  /**
   * Load credentials kept from an earlier run (the data directory), as they were: same keys, same times. Only into
   * an empty registry; the records must already be validated (one per ClientId and instance, distinct key ids).
   */
  restore(records: Iterable<CredentialRecord>): void {
    if (this.#byKeyId.size > 0) throw new Error('Emulator bug: restore() into a registry that holds credentials');
    for (const record of records) {
      let clients = this.#byInstance.get(record.InstanceId);
      if (!clients) {
        clients = new Map();
        this.#byInstance.set(record.InstanceId, clients);
      }
      const frozen = Object.freeze({ ...record });
      clients.set(record.ClientId, frozen);
      this.#byKeyId.set(record.DeviceAccessKeyId, frozen);
    }
    this.#changes++;
  }

  /**
   * RegisterDeviceCredential. An existing ClientId is rotated (new key pair, CreateTime = UpdateTime = now) or
   * refused with `DeviceCredentialExsit`, per policy. A new one past the quota gets `DeviceCredentialNumExceed`.
   */
  register(instanceId: string, clientId: string): CredentialRecord {
    const existing = this.find(instanceId, clientId);
    if (existing && this.#policy.reRegister === 'reject') throw new ApiFault('DeviceCredentialExsit');
    if (!existing && this.count(instanceId) >= this.#policy.credentialQuota) throw new ApiFault('DeviceCredentialNumExceed');
    const now = this.#now();
    return this.#store(instanceId, clientId, now, now);
  }

  /** GetDeviceCredential; unknown → `DeviceCredentialNotFound`. */
  get(instanceId: string, clientId: string): CredentialRecord {
    const record = this.find(instanceId, clientId);
    if (!record) throw new ApiFault('DeviceCredentialNotFound');
    return record;
  }

  /** RefreshDeviceCredential: new key pair, CreateTime kept, UpdateTime = now; unknown → `DeviceCredentialNotFound`. */
  refresh(instanceId: string, clientId: string): CredentialRecord {
    const record = this.get(instanceId, clientId);
    return this.#store(instanceId, clientId, record.CreateTime, this.#now());
  }

  /** UnRegisterDeviceCredential; unknown → `DeviceCredentialNotFound`. */
  unregister(instanceId: string, clientId: string): void {
    const record = this.get(instanceId, clientId);
    this.#byInstance.get(instanceId)?.delete(clientId);
    this.#changed({ op: 'credential-removed', instanceId, clientId });
    this.#revoke(record);
  }

  /** The credential of a ClientId, or `undefined`. */
  find(instanceId: string, clientId: string): CredentialRecord | undefined {
    return this.#byInstance.get(instanceId)?.get(clientId);
  }

  /** The live credential holding this DeviceAccessKeyId, or `undefined` (also for revoked keys). */
  findByKeyId(deviceAccessKeyId: string): CredentialRecord | undefined {
    return this.#byKeyId.get(deviceAccessKeyId);
  }

  /** ClientIds of one GroupId holding a credential, sorted so that pages are stable. */
  listClientIds(instanceId: string, groupId: string): string[] {
    const clientIds = [...(this.#byInstance.get(instanceId)?.keys() ?? [])];
    return clientIds.filter((id) => groupIdOf(id) === groupId).sort();
  }

  /** Number of credentials in an instance. */
  count(instanceId: string): number {
    return this.#byInstance.get(instanceId)?.size ?? 0;
  }

  /**
   * Call `listener` with every credential that stops authenticating (rotated, refreshed or unregistered), right
   * after it left the key index. Returns the function that removes the listener.
   */
  onRevoke(listener: (record: CredentialRecord) => void): () => void {
    this.#revokeListeners.add(listener);
    return () => this.#revokeListeners.delete(listener);
  }

  /**
   * Call `listener` with every change after it is made (not with {@link CredentialRegistry.restore}, which loads what
   * was kept): the data directory journals them. Returns the function that removes the listener.
   */
  onChange(listener: (change: CredentialChange) => void): () => void {
    this.#changeListeners.add(listener);
    return () => this.#changeListeners.delete(listener);
  }

  #changed(change: CredentialChange): void {
    this.#changes++;
    for (const listener of this.#changeListeners) listener(change);
  }

  #now(): number {
    return Math.floor(this.#policy.now());
  }

  /** Issue a fresh key pair for a ClientId, revoking the one it replaces. */
  #store(instanceId: string, clientId: string, createTime: number, updateTime: number): CredentialRecord {
    let clients = this.#byInstance.get(instanceId);
    if (!clients) {
      clients = new Map();
      this.#byInstance.set(instanceId, clients);
    }
    const previous = clients.get(clientId);
    if (previous) this.#revoke(previous);
    const source = this.#policy.randomBytes;
    let keyId = deviceKey(source);
    while (this.#byKeyId.has(keyId)) keyId = deviceKey(source); // 62^22 makes this loop theoretical
    const record: CredentialRecord = Object.freeze({
      ClientId: clientId,
      InstanceId: instanceId,
      DeviceAccessKeyId: keyId,
      DeviceAccessKeySecret: deviceKey(source),
      CreateTime: createTime,
      UpdateTime: updateTime,
    });
    clients.set(clientId, record);
    this.#byKeyId.set(keyId, record);
    this.#changed({ op: 'credential', record });
    return record;
  }

  /** The single place where a key pair stops authenticating; listeners may kick its live sessions. */
  #revoke(record: CredentialRecord): void {
    this.#byKeyId.delete(record.DeviceAccessKeyId);
    for (const listener of this.#revokeListeners) listener(record);
  }
}
