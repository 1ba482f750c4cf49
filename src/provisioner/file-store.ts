import { randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { chmod, type FileHandle, lstat, mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DeviceCredential, isRecord } from '../credential.js';
import { StoreError, ValidationError } from '../errors.js';
import { defaultStoreDir } from './env.js';
import { type CredentialLock, DEFAULT_LOCK_STALE_MS, lockFile, MIN_LOCK_STALE_MS } from './lock.js';
import type { CredentialStore } from './store.js';
import { assertStoreKey } from './store-key.js';
import { syncDir as fsyncDir } from '../util/fs.js';

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
/** Bits that let group or others read or write. */
const SHARED_BITS = 0o066;
// POSIX permission bits mean nothing on Windows (Node reports 0o666 for every file there).
const CHECK_MODES = process.platform !== 'win32';
/**
 * Largest credential file read. A credential is about 300 bytes of JSON; anything much larger is not one, and
 * reading it whole would cost memory for nothing.
 */
export const MAX_CREDENTIAL_FILE_BYTES = 64 * 1024;
/**
 * Flags for opening a file that should be a small regular file: O_NOFOLLOW (never through a symlink) and
 * O_NONBLOCK (a FIFO or device put there opens at once instead of blocking a thread forever). Both are 0 where the
 * platform lacks them (Windows), where the lstat check before the open is what holds.
 */
const SAFE_READ = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);
const SAFE_CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);
/** `.<ClientId>.<pid>.<12 hex>.tmp`: the temp file of a save (see {@link FileCredentialStore.save}). */
const TEMP_FILE = /^\.([A-Za-z0-9_-]+@@@[A-Za-z0-9_-]+)\.(\d+)\.[0-9a-f]{12}\.tmp$/;
/** A temp file older than this is left over from a write that will never finish, whoever wrote it. */
const TEMP_FILE_MAX_AGE_MS = 60_000;

/** Options of a {@link FileCredentialStore}. */
export interface FileCredentialStoreOptions {
  /**
   * After how long the lock of a ClientId whose holder stopped refreshing it (a killed process) is taken over, in
   * ms; at least 2000. A live holder refreshes it every half of this. @default 10000
   */
  lockStaleMs?: number;
}

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
 * - Only regular files are read: a symlink, FIFO, device or directory where a credential file should be is
 *   `StoreCorrupt` without being opened, and a file over {@link MAX_CREDENTIAL_FILE_BYTES} without being read.
 * - {@link prepare} checks all of that for an instance before any API call is made, and removes the temp files
 *   of writes that were killed (they hold a device secret).
 * - {@link lock} serialises the registrar of one ClientId across processes (see its TSDoc).
 */
export class FileCredentialStore implements CredentialStore {
  /** The store's root directory (absolute). */
  readonly dir: string;
  /** After how long a lock whose holder stopped refreshing it (killed) is taken over, in ms. */
  readonly lockStaleMs: number;

  /**
   * @param dir - The root directory; created on first save. @default {@link defaultStoreDir}()
   * @throws ValidationError `InvalidOption` for an empty `dir` or a `lockStaleMs` below 2000.
   */
  constructor(dir: string = defaultStoreDir(), options: FileCredentialStoreOptions = {}) {
    if (typeof dir !== 'string' || dir === '') throw new ValidationError('InvalidOption', 'The credential store directory must be a non-empty path');
    this.dir = resolve(dir);
    const stale = options.lockStaleMs ?? DEFAULT_LOCK_STALE_MS;
    if (!Number.isFinite(stale) || stale < MIN_LOCK_STALE_MS) {
      throw new ValidationError('InvalidOption', `Invalid lockStaleMs ${String(stale)}: expected at least ${MIN_LOCK_STALE_MS} ms`);
    }
    this.lockStaleMs = stale;
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
    const text = await readSmallRegularFile(file, 'Credential file', MAX_CREDENTIAL_FILE_BYTES, async () => {
      await this.#checkDirs(join(this.dir, instanceId));
    });
    return text === undefined ? undefined : parseCredentialFile(text, file, instanceId, clientId);
  }

  /**
   * Check the store of an instance before anything costs money: create the directories (0700) where missing; refuse
   * a root, instance or journal directory that is not a directory or that group or others can read or write
   * (`StoreInsecure`); refuse any `<ClientId>.json` that is not a regular file or is too large (`StoreCorrupt`);
   * and remove the temp files of killed writes (`.<ClientId>.<pid>.<hex>.tmp`, holding a device secret) whose
   * writer is gone or which are older than a minute. A Provisioner calls it before its first API call.
   * @throws StoreError `StoreInsecure`, `StoreCorrupt` or `StoreIOError`; ValidationError `InvalidInstanceId`.
   */
  async prepare(instanceId: string): Promise<void> {
    assertStoreKey(instanceId, 'GID_check@@@check');
    const dir = join(this.dir, instanceId);
    await makePrivateDir(this.dir);
    await makePrivateDir(dir);
    await this.#checkDirs(dir);
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch (error) {
      throw ioError('read', dir, error);
    }
    for (const name of entries) {
      const path = join(dir, name);
      const temp = TEMP_FILE.exec(name);
      if (temp) {
        await removeLeftoverTemp(path, Number(temp[2]));
      } else if (name.endsWith('.json') && !name.startsWith('.')) {
        const info = await lstat(path).catch((error: unknown) => {
          if (errno(error) === 'ENOENT') return undefined; // removed meanwhile
          throw ioError('read', path, error);
        });
        if (info) checkRegular(info, path, 'Credential file', MAX_CREDENTIAL_FILE_BYTES);
      } else if (name === JOURNAL_DIR_NAME || name === LOCK_DIR) {
        await checkPrivateDir(path);
      }
    }
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
      handle = await open(temp, SAFE_CREATE, FILE_MODE);
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

  /**
   * Hold the registration of one ClientId exclusively, against every process that uses this store directory (and
   * every other caller in this one), with proper-lockfile: `<dir>/<instanceId>/.locks/<clientId>.lock`. A holder
   * that is killed leaves its lock behind; it is taken over once not refreshed for {@link lockStaleMs}. Waits
   * (polling every 10-200 ms) while another holds it, until it is free or `signal` fires.
   * @throws AbortedError `Aborted`; StoreError `StoreIOError` / `StoreInsecure`; ConfigurationError
   *   `MissingDependency` when proper-lockfile is not installed.
   */
  async lock(instanceId: string, clientId: string, options: { signal?: AbortSignal } = {}): Promise<CredentialLock> {
    const file = this.pathOf(instanceId, clientId);
    const instanceDir = join(this.dir, instanceId);
    const lockDir = join(instanceDir, LOCK_DIR);
    await makePrivateDir(this.dir);
    await makePrivateDir(instanceDir);
    await makePrivateDir(lockDir);
    await checkPrivateDir(lockDir);
    return lockFile(join(lockDir, clientId), { staleMs: this.lockStaleMs, what: `Locking ${file}`, signal: options.signal });
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
    return { dir: this.dir, lockStaleMs: this.lockStaleMs };
  }

  /** The root and the instance directory must be directories, not open to group or others. */
  async #checkDirs(instanceDir: string): Promise<void> {
    for (const dir of [this.dir, instanceDir]) await checkPrivateDir(dir);
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

/** Names inside an instance directory that are not credentials: the Register journal (journal.ts) and the lock directory. */
export const JOURNAL_DIR_NAME = '.journal';
const LOCK_DIR = '.locks';

/** A directory (a symlink to one is followed: the root may well be one) that group and others cannot use. */
export async function checkPrivateDir(dir: string): Promise<void> {
  const info = await stat(dir).catch((error: unknown) => {
    throw ioError('read', dir, error);
  });
  if (!info.isDirectory()) throw new StoreError('StoreCorrupt', `Credential store path ${dir} is not a directory`, dir);
  checkPrivate(info, dir, 'directory');
}

/** A regular file of at most `maxBytes`, not open to group or others; `what` names it in the error. */
function checkRegular(info: Stats, path: string, what: string, maxBytes: number): void {
  if (!info.isFile()) throw new StoreError('StoreCorrupt', `${what} ${path} is not a regular file`, path);
  if (info.size > maxBytes) throw new StoreError('StoreCorrupt', `${what} ${path} is ${info.size} bytes, more than the ${maxBytes} a credential store file may have`, path);
  checkPrivate(info, path, 'file');
}

/**
 * The text of a small private regular file, or `undefined` when there is none. Checked with lstat before it is
 * opened (a FIFO, device, symlink or directory is never opened), opened without following links and without
 * blocking, checked again on the open handle (the file read is the file checked), and read no further than
 * `maxBytes`. `beforeRead` runs between the checks and the read (the directory checks).
 * @throws StoreError `StoreCorrupt`, `StoreInsecure` or `StoreIOError`.
 */
export async function readSmallRegularFile(file: string, what: string, maxBytes: number, beforeRead?: () => Promise<void>): Promise<string | undefined> {
  let info: Stats;
  try {
    info = await lstat(file);
  } catch (error) {
    if (errno(error) === 'ENOENT') return undefined;
    throw ioError('read', file, error);
  }
  checkRegular(info, file, what, maxBytes);
  let handle: FileHandle;
  try {
    handle = await open(file, SAFE_READ);
  } catch (error) {
    const code = errno(error);
    if (code === 'ENOENT') return undefined; // removed between the check and the open
    if (code === 'ELOOP') throw new StoreError('StoreCorrupt', `${what} ${file} is not a regular file`, file);
    throw ioError('read', file, error);
  }
  try {
    const opened = await handle.stat().catch((error: unknown) => {
      throw ioError('read', file, error);
    });
    checkRegular(opened, file, what, maxBytes);
    await beforeRead?.();
    const buffer = Buffer.alloc(maxBytes + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null).catch((error: unknown) => {
        throw ioError('read', file, error);
      });
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > maxBytes) throw new StoreError('StoreCorrupt', `${what} ${file} grew past the ${maxBytes} bytes a credential store file may have`, file);
    }
    return buffer.toString('utf8', 0, length);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * Remove the temp file of a save that will never finish: its writer is no longer running here, or it is older than
 * {@link TEMP_FILE_MAX_AGE_MS} (a save takes milliseconds). Only a regular file is removed; anything else is left.
 */
async function removeLeftoverTemp(path: string, pid: number): Promise<void> {
  const info = await lstat(path).catch(() => undefined);
  if (!info?.isFile()) return;
  const abandoned = !processIsRunning(pid) || Date.now() - info.mtimeMs > TEMP_FILE_MAX_AGE_MS;
  if (!abandoned) return;
  try {
    await unlink(path);
  } catch (error) {
    if (errno(error) !== 'ENOENT') throw ioError('remove', path, error);
  }
}

/** Whether a process with this pid runs on this host (EPERM: it does, under another user). */
function processIsRunning(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return errno(error) === 'EPERM';
  }
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

/** Make a rename (or a new file) in `dir` durable ({@link fsyncDir}), a failure worded as the store's. */
export async function syncDir(dir: string): Promise<void> {
  try {
    await fsyncDir(dir);
  } catch (error) {
    throw ioError('sync', dir, error);
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
