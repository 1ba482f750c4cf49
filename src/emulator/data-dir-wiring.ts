/**
 * The emulator's use of its data directory (the `dataDir` option), at start and at close: opening it (and what is
 * said when its lock is lost), the options meeting the state kept there, the registries restored from it and
 * journaled into it from then on, and its last save. data-dir.ts is the files themselves; this module is what
 * `startEmulator` (emulator.ts) does with them, kept apart so that the start-up reads as the wiring of its parts.
 */
import { ValidationError } from '../errors.js';
import { DataDir, StateWriter, type EmulatorState, type StateChange } from './data-dir.js';
import { LOCK_STALE_MS } from './data-dir-lock.js';
import type { ResolvedEmulatorOptions } from './options.js';
import type { CredentialRegistry } from './registry.js';
import type { TokenRegistry } from './token-registry.js';

/** Said once when the data directory's lock is lost: every change after it fails (InternalError) until a restart. */
function lockLost(dir: string, reason: Error): string {
  return `Emulator data directory ${dir}: its lock was lost (${reason.message}): nothing more is saved, and every OpenAPI call that changes the state answers InternalError. Another process may have taken the directory over as stale (this one stalled for longer than ${LOCK_STALE_MS / 1000} s) or removed the lock: stop the other emulator on it, then restart this one.`;
}

/** Open the data directory, the loss of its lock and its warnings said through the emulator's logger. */
export function openDataDir(dir: string, logger: ResolvedEmulatorOptions['logger']): Promise<DataDir> {
  return DataDir.open(dir, {
    onLost: (reason) => logger.error(lockLost(dir, reason)),
    onWarning: (message) => logger.warn(message),
  });
}

/**
 * Options meet the kept state: an instance id or a generated key pair that was not given comes from the state, so
 * that a restart with the same command serves the same instance with the same keys. An instance id given that
 * differs from the kept one is refused (the directory holds another instance's credentials).
 */
export function reconcile(config: ResolvedEmulatorOptions, storage: DataDir): ResolvedEmulatorOptions {
  const kept = storage.initial;
  if (!kept) return config;
  if (config.instanceIdSource !== 'generated' && config.instanceId !== kept.instanceId) {
    throw new ValidationError(
      'InvalidOption',
      `Emulator option instanceId is ${config.instanceId}, but the data directory ${storage.path} holds instance ${kept.instanceId}: pass ${kept.instanceId}, leave the instance id out, or use another data directory`,
    );
  }
  const account = config.accessKeySource === 'generated' && kept.account ? kept.account : undefined;
  return Object.freeze({ ...config, instanceId: kept.instanceId, ...(account ?? {}) });
}

/** The data directory in use: saves on demand, closes after the last save. */
export interface Persistence {
  readonly path: string;
  readonly flush: () => Promise<void>;
  close(): Promise<void>;
}

/**
 * Restore the kept credentials and tokens, and compact (a new snapshot with the journal's changes, so that the
 * instance id and generated keys are fixed from now on, and a journal cut short is left behind). From then on every
 * change of the registries is journaled, and `flush` makes the changes so far durable, many callers' in one write.
 * Tokens are kept like credentials because the service keeps them: a token issued before a restart stays valid (or
 * revoked) until its ExpireTime.
 */
export async function startPersistence(config: ResolvedEmulatorOptions, storage: DataDir, registry: CredentialRegistry, tokens: TokenRegistry): Promise<Persistence> {
  if (storage.initial) {
    registry.restore(storage.initial.credentials);
    tokens.restore(storage.initial.tokens ?? []);
  }
  // Only keys this emulator generated are written: others may be real ones, and are not the emulator's to keep.
  const account = config.accessKeySource === 'generated'
    ? { accessKeyId: config.accessKeyId, accessKeySecret: config.accessKeySecret }
    : storage.initial?.account;
  const state = (): EmulatorState => ({ instanceId: config.instanceId, account, credentials: registry.all(), tokens: tokens.all() });
  await storage.compact(state);
  const record = (change: StateChange): void => storage.record(change);
  const stop = [registry.onChange(record), tokens.onChange(record)];
  const writer = new StateWriter(() => storage.commit(state));
  return {
    path: storage.path,
    flush: () => writer.flush(),
    close: async () => {
      await writer.idle();
      for (const off of stop) off();
      await storage.close(state);
    },
  };
}
