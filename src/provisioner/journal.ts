import { type FileHandle, open, stat, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { assertClientId } from '../credential.js';
import { StoreError, ValidationError } from '../errors.js';
import { errno, makePrivateDir, syncDir } from './file-store.js';

/** Name of the journal directory inside a file store's instance directory. */
export const JOURNAL_DIR_NAME = '.journal';

/**
 * A write-ahead record of RegisterDeviceCredential calls whose result may not be in the store yet: one empty-ish
 * file per ClientId, `<dir>/<clientId>.register`, made durable (file and directory fsync) before the Register is
 * sent and removed once the credential is stored.
 *
 * A process killed after the service answered a Register but before the store write leaves the entry behind; the
 * next run sees it and fetches the credential with GetDeviceCredential instead of registering again, which under
 * latest-wins would rotate the credential a device may already have been given.
 */
export class RegistrationJournal {
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
    try {
      await stat(this.#path(clientId));
      return true;
    } catch (error) {
      if (errno(error) === 'ENOENT' || errno(error) === 'ENOTDIR') return false;
      throw ioError('read', this.#path(clientId), error);
    }
  }

  /** Record, durably, that a Register of this ClientId is about to be sent. Resolves once it is on disk. */
  async record(clientId: string): Promise<void> {
    const file = this.#path(clientId);
    await this.#ensureDir();
    let handle: FileHandle | undefined;
    try {
      handle = await open(file, 'w', 0o600);
      await handle.writeFile(`${JSON.stringify({ clientId, pid: process.pid, at: new Date().toISOString() })}\n`, 'utf8');
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
