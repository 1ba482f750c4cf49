import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { chmod, type FileHandle, mkdir, open, rename, rm, stat, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DeviceCredential, isRecord } from '../credential.js';
import { StoreError, ValidationError } from '../errors.js';
import { defaultStoreDir } from './env.js';
import type { CredentialStore } from './store.js';
import { assertStoreKey } from './store-key.js';

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
/** Bits that let group or others read or write. */
const SHARED_BITS = 0o066;
// POSIX permission bits mean nothing on Windows (Node reports 0o666 for every file there).
const CHECK_MODES = process.platform !== 'win32';

/**
 * A {@link CredentialStore} on disk: one JSON file per ClientId, `<dir>/<instanceId>/<clientId>.json`, holding the
 * DeviceCredential in its wire shape (what the OpenAPI returns).
 *
 * - Directories are created 0700 and files 0600, whatever the umask.
 * - Writes are atomic (temp file in the same directory, fsync, rename, fsync of the directory): a crash leaves the
 *   old credential or the new one, never half of one, and no temp file survives a failed write.
 * - A file or directory that group or others can read or write is refused on load and save (`StoreInsecure`;
 *   not checked on Windows), a file that is not a valid credential for its name is reported (`StoreCorrupt`) and
 *   left as it is, and any other I/O failure is `StoreIOError`.
 */
export class FileCredentialStore implements CredentialStore {
  /** The store's root directory (absolute). */
  readonly dir: string;

  /** @param dir - The root directory; created on first save. @default {@link defaultStoreDir}() */
  constructor(dir: string = defaultStoreDir()) {
    if (typeof dir !== 'string' || dir === '') throw new ValidationError('InvalidOption', 'The credential store directory must be a non-empty path');
    this.dir = resolve(dir);
  }

  /**
   * The file a credential is kept in. The ids are validated first, so the path always stays inside {@link dir}.
   * @throws ValidationError `InvalidClientId` / `InvalidInstanceId`.
   */
  pathOf(instanceId: string, clientId: string): string {
    assertStoreKey(instanceId, clientId);
    return join(this.dir, instanceId, `${clientId}.json`);
  }

  async load(instanceId: string, clientId: string): Promise<DeviceCredential | undefined> {
    const file = this.pathOf(instanceId, clientId);
    let handle: FileHandle;
    try {
      handle = await open(file, 'r');
    } catch (error) {
      if (errno(error) === 'ENOENT') return undefined;
      throw ioError('read', file, error);
    }
    let text: string;
    try {
      // Checked on the open handle, so the file read is the file checked.
      const info = await handle.stat().catch((error: unknown) => {
        throw ioError('read', file, error);
      });
      if (!info.isFile()) throw new StoreError('StoreCorrupt', `Credential file ${file} is not a regular file`, file);
      checkPrivate(info, file, 'file');
      await this.#checkDirs(join(this.dir, instanceId));
      text = await handle.readFile('utf8').catch((error: unknown) => {
        throw ioError('read', file, error);
      });
    } finally {
      await handle.close().catch(() => undefined);
    }
    return parseCredentialFile(text, file, instanceId, clientId);
  }

  /**
   * Make sure a credential of this instance could be saved: create the directories (0700) and refuse an insecure
   * one (`StoreInsecure`). For callers that must not change anything on the service unless the answer can be kept.
   */
  async prepare(instanceId: string): Promise<void> {
    assertStoreKey(instanceId, 'GID_check@@@check');
    const dir = join(this.dir, instanceId);
    await makePrivateDir(this.dir);
    await makePrivateDir(dir);
    await this.#checkDirs(dir);
  }

  async save(credential: DeviceCredential): Promise<void> {
    const file = this.pathOf(credential.instanceId, credential.clientId);
    const dir = join(this.dir, credential.instanceId);
    await makePrivateDir(this.dir);
    await makePrivateDir(dir);
    await this.#checkDirs(dir);
    // Unique per process and call, so concurrent writers never share a temp file; the leading dot keeps it apart
    // from the `<clientId>.json` names that load reads.
    const temp = join(dir, `.${credential.clientId}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    let handle: FileHandle | undefined;
    try {
      handle = await open(temp, 'wx', FILE_MODE);
      await handle.chmod(FILE_MODE); // the mode passed to open is reduced by the umask
      await handle.writeFile(`${JSON.stringify(credential.toWire(), null, 2)}\n`, 'utf8');
      await handle.sync();
      await handle.close();
      handle = undefined;
      await rename(temp, file);
    } catch (error) {
      await handle?.close().catch(() => undefined);
      await rm(temp, { force: true }).catch(() => undefined);
      throw ioError('write', file, error);
    }
    await syncDir(dir);
  }

  async remove(instanceId: string, clientId: string): Promise<void> {
    const file = this.pathOf(instanceId, clientId);
    try {
      await unlink(file);
    } catch (error) {
      const code = errno(error);
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw ioError('remove', file, error);
    }
    await syncDir(join(this.dir, instanceId));
  }

  toJSON(): Record<string, unknown> {
    return { dir: this.dir };
  }

  /** The root and the instance directory must not be open to group or others. */
  async #checkDirs(instanceDir: string): Promise<void> {
    if (!CHECK_MODES) return;
    for (const dir of [this.dir, instanceDir]) {
      const info = await stat(dir).catch((error: unknown) => {
        throw ioError('read', dir, error);
      });
      checkPrivate(info, dir, 'directory');
    }
  }
}

function parseCredentialFile(text: string, file: string, instanceId: string, clientId: string): DeviceCredential {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new StoreError('StoreCorrupt', `Credential file ${file} is not JSON`, file);
  }
  if (!isRecord(parsed)) throw new StoreError('StoreCorrupt', `Credential file ${file} does not hold a JSON object`, file);
  let credential: DeviceCredential;
  try {
    credential = DeviceCredential.fromWire(parsed, `credential file ${file}`);
  } catch (error) {
    if (error instanceof ValidationError) throw new StoreError('StoreCorrupt', error.message, file, error);
    throw error;
  }
  if (credential.clientId !== clientId || credential.instanceId !== instanceId) {
    throw new StoreError(
      'StoreCorrupt',
      `Credential file ${file} holds the credential of ${credential.clientId} on ${credential.instanceId}, not of ${clientId} on ${instanceId}`,
      file,
    );
  }
  return credential;
}

function checkPrivate(info: Stats, path: string, what: 'file' | 'directory'): void {
  if (CHECK_MODES && (info.mode & SHARED_BITS) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(3, '0');
    throw new StoreError('StoreInsecure', `Credential ${what} ${path} has mode ${mode}: group or others can read or write it`, path);
  }
}

/** mkdir -p, then chmod 0700 whatever the umask did, but only to a directory this call created. */
export async function makePrivateDir(dir: string): Promise<void> {
  try {
    const created = await mkdir(dir, { recursive: true, mode: DIR_MODE });
    if (created !== undefined) await chmod(dir, DIR_MODE);
  } catch (error) {
    throw ioError('create', dir, error);
  }
}

/** Make a rename (or a new file) in `dir` durable. Filesystems that cannot fsync a directory are tolerated. */
export async function syncDir(dir: string): Promise<void> {
  if (process.platform === 'win32') return; // directories cannot be opened for fsync there
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch (error) {
    const code = errno(error);
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EISDIR' && code !== 'EPERM' && code !== 'EBADF') throw ioError('sync', dir, error);
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** The errno code (`ENOENT`, …) of a Node fs error, if it has one. */
export function errno(error: unknown): string | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

function ioError(verb: 'read' | 'write' | 'create' | 'remove' | 'sync', path: string, error: unknown): StoreError {
  if (error instanceof StoreError) return error;
  return new StoreError('StoreIOError', `Cannot ${verb} ${path} (${errno(error) ?? 'I/O error'})`, path, error);
}
