import { constants } from 'node:fs';
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { assertClientId } from '../credential.js';
import { StoreError, ValidationError } from '../errors.js';
import { JOURNAL_DIR_NAME, errno, makePrivateDir, readSmallRegularFile, syncDir } from './file-store.js';

/** Name of the journal directory inside a file store's instance directory. */
export { JOURNAL_DIR_NAME };
/** An entry is a line of JSON; anything larger is not one. */
const MAX_ENTRY_BYTES = 4096;
/** Never through a symlink, never blocking on a FIFO put in its place. */
const SAFE_WRITE = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

/** A Register that may have been sent and not accounted for. */
export interface PendingRegister {
  /** When it was about to be sent (ms since the epoch). */
  at: number;
  /**
   * From when (ms since the epoch) a late answer can no longer change anything, by the window of the registrar that
   * sent it (`timeoutMs + maxServiceLatencyMs` after `at`); absent when the entry does not say. Before then,
   * GetDeviceCredential may not yet see it.
   */
  settledAt?: number;
}

/** Where a provisioner notes Registers whose result may not be stored yet (see {@link RegistrationJournal}). */
export interface RegisterLog {
  entry(clientId: string): Promise<PendingRegister | undefined>;
  record(clientId: string, settleWindowMs: number): Promise<void>;
  clear(clientId: string): Promise<void>;
}

/**
 * A write-ahead record of RegisterDeviceCredential calls whose result may not be in the store yet: one empty-ish
 * file per ClientId, `<dir>/<clientId>.register`, made durable (file and directory fsync) before the Register is
 * sent and removed once the credential is stored.
 *
 * A process killed after the service answered a Register but before the store write leaves the entry behind; the
 * next run sees it and fetches the credential with GetDeviceCredential instead of registering again, which under
 * latest-wins would rotate the credential a device may already have been given. The entry says when the Register
 * was sent and until when it could still land (`settledAt`), so that the next registrar asks only once it cannot.
 */
export class RegistrationJournal implements RegisterLog {
  /** The journal directory (absolute). */
  readonly dir: string;
  #ready: Promise<void> | undefined;

  constructor(dir: string) {
    if (typeof dir !== 'string' || dir === '') throw new ValidationError('InvalidOption', 'The journal directory must be a non-empty path');
    this.dir = resolve(dir);
  }

  /** The journal of a file store directory for an instance: `<storeDir>/<instanceId>/.journal`. */
  static forStore(storeDir: string, instanceId: string): RegistrationJournal {
    return new RegistrationJournal(join(storeDir, instanceId, JOURNAL_DIR_NAME));
  }

  /** Is a Register of this ClientId possibly unaccounted for? */
  async has(clientId: string): Promise<boolean> {
    return (await this.entry(clientId)) !== undefined;
  }

  /**
   * The Register of this ClientId that may be unaccounted for, if any. An entry that cannot be read as one (an
   * older format, a torn write) counts as sent just now without a window of its own: the reader then waits its own
   * full window, which errs on the side of waiting.
   * @throws StoreError `StoreCorrupt` when something other than a small regular file is in its place.
   */
  async entry(clientId: string): Promise<PendingRegister | undefined> {
    const file = this.#path(clientId);
    const text = await readSmallRegularFile(file, 'Journal entry', MAX_ENTRY_BYTES).catch((error: unknown) => {
      if (error instanceof StoreError && error.code === 'StoreIOError') throw ioError('read', file, error.cause);
      throw error;
    });
    if (text === undefined) return undefined;
    let at: unknown;
    let settledAt: unknown;
    try {
      ({ at, settledAt } = JSON.parse(text) as { at?: unknown; settledAt?: unknown });
    } catch {
      // unreadable: treated as sent now
    }
    const sent = typeof at === 'string' ? Date.parse(at) : Number.NaN;
    // A window only with a sending time of its own; tested as such, not by comparing `at` with the clock, which would
    // drop the window of an entry read in the millisecond it was written.
    if (!Number.isFinite(sent)) return { at: Date.now() };
    return { at: sent, ...(typeof settledAt === 'number' && Number.isFinite(settledAt) ? { settledAt } : {}) };
  }

  /**
   * Record, durably, that a Register of this ClientId is about to be sent, and that its answer could land until
   * `settleWindowMs` from now. Resolves once it is on disk.
   */
  async record(clientId: string, settleWindowMs = 0): Promise<void> {
    const file = this.#path(clientId);
    await this.#ensureDir();
    const at = Date.now();
    let handle: FileHandle | undefined;
    try {
      handle = await open(file, SAFE_WRITE, 0o600);
      await handle.writeFile(`${JSON.stringify({ clientId, pid: process.pid, at: new Date(at).toISOString(), settledAt: at + settleWindowMs })}\n`, 'utf8');
      await handle.sync();
    } catch (error) {
      throw ioError('write', file, error);
    } finally {
      await handle?.close().catch(() => undefined);
    }
    // The new directory entry must be durable too, or a crash could lose the file that says a Register was sent.
    await syncDir(this.dir);
  }

  /** Forget the entry of a ClientId (its credential is stored). No error when there is none. */
  async clear(clientId: string): Promise<void> {
    const file = this.#path(clientId);
    try {
      await unlink(file);
    } catch (error) {
      const code = errno(error);
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw ioError('remove', file, error);
    }
    // Not synced: an entry that reappears after a crash only costs one Get on the next run.
  }

  #path(clientId: string): string {
    assertClientId(clientId); // the grammar keeps the name inside the directory
    return join(this.dir, `${clientId}.register`);
  }

  #ensureDir(): Promise<void> {
    this.#ready ??= makePrivateDir(this.dir).catch((error: unknown) => {
      this.#ready = undefined; // let a later call try again
      throw error;
    });
    return this.#ready;
  }

  toJSON(): Record<string, unknown> {
    return { dir: this.dir };
  }
}

function ioError(verb: string, path: string, error: unknown): StoreError {
  return new StoreError('StoreIOError', `Cannot ${verb} journal ${path} (${errno(error) ?? 'I/O error'})`, path, error);
}
