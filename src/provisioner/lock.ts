import { ConfigurationError, StoreError } from '../errors.js';
import { sleep } from '../util/backoff.js';
import { abortError } from '../util/abort.js';
import { Semaphore } from './rate-limit.js';

/** The registration of one ClientId, held exclusively until {@link CredentialLock.release}. */
export interface CredentialLock {
  /**
   * True once the lock was lost while held: another process took it over as stale (this one stalled for longer
   * than the stale time) or its lock directory was removed. Whoever holds a lost lock must not Register or save.
   */
  readonly compromised: boolean;
  /** Let the next waiter in. Idempotent; never rejects. */
  release(): Promise<void>;
}

/** Default time after which a file lock whose holder stopped refreshing it is taken over (proper-lockfile's `stale`). */
export const DEFAULT_LOCK_STALE_MS = 10_000;
/** The smallest stale time proper-lockfile accepts. */
export const MIN_LOCK_STALE_MS = 2_000;
/** Longest pause between two tries at a lock someone else holds. */
const MAX_POLL_MS = 200;

type LockFile = typeof import('proper-lockfile');
let lockfile: Promise<LockFile> | undefined;

/**
 * proper-lockfile, imported on the first lock: it is an optional peer dependency of the registrar and emulator roles,
 * so that a device (or a CLI that never registers) does not need it. `purpose` names what needs it in the error.
 */
export function loadLockfile(purpose = 'Locking a credential store'): Promise<LockFile> {
  lockfile ??= import('proper-lockfile').then((module) => (module as { default?: LockFile }).default ?? module);
  return lockfile.catch((error: unknown) => {
    lockfile = undefined;
    if ((error as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND') {
      throw new ConfigurationError(
        'MissingDependency',
        `${purpose} needs the package proper-lockfile, which is not installed (an optional peer dependency of apsaramq-device): npm install proper-lockfile`,
      );
    }
    throw error;
  });
}

/**
 * Take the lock of `target` across processes (and within this one) with proper-lockfile: an atomic mkdir of
 * `<target>.lock`, whose mtime the holder refreshes every `staleMs / 2`; a lock not refreshed for `staleMs` (its
 * holder was killed) is taken over. While someone else holds it, try again after a short pause (10 ms growing to
 * 200 ms, jittered) until it is free or `signal` fires.
 *
 * @throws AbortedError `Aborted` when `signal` fires while waiting; StoreError `StoreIOError` when the lock
 *   directory cannot be made; ConfigurationError `MissingDependency` without proper-lockfile.
 */
export async function lockFile(target: string, options: { staleMs: number; what: string; signal?: AbortSignal | undefined }): Promise<CredentialLock> {
  const { lock } = await loadLockfile();
  const { signal, what } = options;
  let compromised = false;
  for (let attempt = 0; ; attempt++) {
    if (signal?.aborted) throw abortError(what, signal);
    let release: () => Promise<void>;
    try {
      release = await lock(target, {
        stale: options.staleMs,
        realpath: false,
        retries: 0,
        // The default throws from a timer, which would crash the process.
        onCompromised: () => {
          compromised = true;
        },
      });
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'ELOCKED') {
        const code = (error as { code?: unknown }).code;
        throw new StoreError('StoreIOError', `Cannot lock ${target} (${typeof code === 'string' ? code : 'I/O error'})`, target, error);
      }
      const pause = Math.min(MAX_POLL_MS, 10 * 1.5 ** attempt) * (0.5 + Math.random() / 2);
      await sleep(pause, signal).catch(() => {
        throw abortError(what, signal as AbortSignal);
      });
      continue;
    }
    let released = false;
    return {
      get compromised() {
        return compromised;
      },
      release: async () => {
        if (released) return;
        released = true;
        // A lost lock is not ours to remove; proper-lockfile says so with ERELEASED/ECOMPROMISED.
        await release().catch(() => undefined);
      },
    };
  }
}

/** Locks by key within this process: for stores that live in one process only (MemoryCredentialStore). */
export class KeyedLocks {
  readonly #held = new Map<string, { slots: Semaphore; users: number }>();

  /** @throws AbortedError `Aborted` when `signal` fires while waiting. */
  async acquire(key: string, what: string, signal?: AbortSignal): Promise<CredentialLock> {
    let entry = this.#held.get(key);
    if (!entry) {
      entry = { slots: new Semaphore(1), users: 0 };
      this.#held.set(key, entry);
    }
    const held = entry;
    held.users += 1;
    const forget = (): void => {
      held.users -= 1;
      if (held.users === 0 && this.#held.get(key) === held) this.#held.delete(key);
    };
    let release: () => void;
    try {
      release = await held.slots.acquire(what, signal);
    } catch (error) {
      forget();
      throw error;
    }
    let released = false;
    return {
      compromised: false,
      release: () => {
        if (!released) {
          released = true;
          release();
          forget();
        }
        return Promise.resolve();
      },
    };
  }
}
