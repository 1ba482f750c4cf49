import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { EmulatorStateError } from '../errors.js';
import { ioError, takeLock, type HeldLock, type TakeLockOptions } from './data-dir-lock.js';
import { JOURNAL_FILE, MAX_STATE_BYTES, STATE_FILE, corrupt, journalHeader, parseState, replay, serializeChange, serializeState, sha256, type EmulatorState, type StateChange } from './data-dir-format.js';
import { encodeWrite, WRITE_RECORD_OVERHEAD_BYTES } from './journal.js';
import { syncDir } from '../util/fs.js';

/**
 * The emulator's data directory: the OpenAPI's state, kept across restarts (issue #10). The files' formats, their
 * validation and the replay of a journal onto its snapshot are data-dir-format.ts; this module is the files.
 *
 * Two files. `state.json`, the snapshot, holds the whole state and is only ever replaced atomically (temp file 0600,
 * fsync, rename, fsync of the directory), so a crash leaves either the old or the new one, never half of one.
 * `state.journal` holds the changes made since that snapshot, one framed record per change (journal.ts: length and
 * CRC-32), appended: the changes of the calls that arrive while one append is on its way to the disk share the next
 * append and its fdatasync (group commit), and a call that changed the state is answered once its record is durable.
 * So a change costs what it changes, not a rewrite of every credential. The journal's first record names the snapshot
 * it follows (SHA-256 of its bytes); once it outgrows the snapshot (and {@link JOURNAL_COMPACT_MIN_BYTES}), and at
 * every start and close, the state is compacted: a new snapshot, then the journal removed (the next change starts a
 * new one, made whole under a temp name and renamed in). A crash between the two leaves a journal naming the old
 * snapshot: it is set aside, as its changes are in the new one.
 *
 * Reading: the snapshot, then the journal's records in order. Each record names the write (append) it came in, and
 * writes never overlap: each is fdatasync'd before the next begins. So a last write that is not whole (a crash or
 * power cut during it, which may leave its pages on the disk in any order; no call was answered for any of its
 * changes) is cut off whole, with a warning, and a damaged record in a write that another follows is
 * `EmulatorStateCorrupt`, like a snapshot that does not validate: that write was durable, the file was damaged in
 * place, and its records are not dropped silently. A journal an emulator wrote before records named their write
 * (version 1) is read by the rules of then: a tail holding no whole record is cut off, a damaged record with a whole
 * one after it is `EmulatorStateCorrupt`.
 *
 * A lock file held for the emulator's life keeps a second emulator off the same directory. What is kept: the
 * instance id, the device credentials, the tokens ApplyToken issued (their records: never a usable token, only a hash
 * of its secret), and the account key pair only when the emulator generated it (a key pair from options or the
 * environment may be a real one and is never written). `tokens` is optional on reading, so a file written before
 * tokens existed still loads, and an older emulator, which ignores fields it does not know, still reads a newer file;
 * after a clean stop the directory holds the snapshot alone, which is all an older emulator reads.
 */

export { LOCK_FILE } from './data-dir-lock.js';
export {
  JOURNAL_FILE,
  JOURNAL_KIND,
  JOURNAL_VERSION,
  MAX_STATE_BYTES,
  STATE_FILE,
  STATE_KIND,
  STATE_VERSION,
  parseState,
  serializeChange,
  serializeState,
  type EmulatorState,
  type StateChange,
} from './data-dir-format.js';

/**
 * The journal is compacted into a new snapshot once it is larger than the snapshot and than this: a snapshot is
 * rewritten only after as many bytes of changes as it holds, so each change costs its own bytes plus, amortised, as
 * many again, and reading at start costs at most twice the snapshot.
 */
export const JOURNAL_COMPACT_MIN_BYTES = 4 * 1024 * 1024;

/** Options of {@link DataDir.open}. */
export interface DataDirOptions extends TakeLockOptions {
  /** Where a problem that was recovered from is said (a journal's cut-off tail, a journal set aside). */
  readonly onWarning?: ((message: string) => void) | undefined;
  /** Compact once the journal is larger than the snapshot and than this many bytes (default {@link JOURNAL_COMPACT_MIN_BYTES}). */
  readonly compactMinBytes?: number | undefined;
}

const TEMP_FILE = /^state\.(?:json|journal)\.[0-9a-f]+\.tmp$/;

/** Group or other may read, write or enter: refused, as the directory holds device secrets. */
function checkPrivate(path: string, mode: number, what: 'directory' | 'file'): void {
  if ((mode & 0o077) !== 0) {
    const octal = (mode & 0o777).toString(8).padStart(3, '0');
    throw new EmulatorStateError('EmulatorStateInsecure', `The emulator data ${what} ${path} has mode ${octal}; it holds device secrets and must be ${what === 'directory' ? '700' : '600'}`, path);
  }
}

/** Write `bytes` whole at `position` (a write may take fewer bytes than it was given). */
async function writeAll(handle: FileHandle, bytes: Buffer, position: number): Promise<void> {
  let written = 0;
  while (written < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, written, bytes.length - written, position + written);
    // A disk that takes nothing would otherwise be asked again forever.
    if (bytesWritten === 0) throw Object.assign(new Error('the disk took none of the write'), { code: 'ENOSPC' });
    written += bytesWritten;
  }
}

/**
 * An open data directory: locked for this emulator, its state read. {@link DataDir.record} queues a change,
 * {@link DataDir.commit} makes the queued changes durable, {@link DataDir.compact} writes a new snapshot,
 * {@link DataDir.close} compacts and releases the lock. Writes never overlap: each waits for the one before.
 */
export class DataDir {
  /** Absolute path of the directory. */
  readonly path: string;
  /** The state found at open (the snapshot with the journal's changes), or `undefined` for a new directory. */
  readonly initial: EmulatorState | undefined;
  readonly #lock: HeldLock;
  readonly #warn: (message: string) => void;
  readonly #compactMinBytes: number;
  /** Payloads of the records not yet written, and the bytes they will take framed. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /** The journal this process appends to (made on the first change after a snapshot), and its length. */
  #journal: FileHandle | undefined;
  #journalBytes = 0;
  /** A journal file (this process's or one found at open) is in the directory. */
  #journalOnDisk: boolean;
  #snapshotSha256: string;
  #snapshotBytes: number;
  /**
   * The next write must be a snapshot: there is none yet, a journal found at open holds changes a new journal must not
   * replace, or an append failed (the journal's tail is unknown, and nothing may be appended after it).
   */
  #mustCompact: boolean;
  #serial: Promise<void> = Promise.resolve();
  #closed = false;
  #closing: Promise<void> | undefined;

  private constructor(path: string, read: ReadState, lock: HeldLock, options: DataDirOptions) {
    this.path = path;
    this.initial = read.state;
    this.#lock = lock;
    this.#warn = options.onWarning ?? (() => undefined);
    this.#compactMinBytes = options.compactMinBytes ?? JOURNAL_COMPACT_MIN_BYTES;
    this.#snapshotSha256 = read.snapshotSha256;
    this.#snapshotBytes = read.snapshotBytes;
    this.#journalOnDisk = read.journal;
    this.#mustCompact = read.state === undefined || read.journal;
  }

  /**
   * Create the directory (0700) if needed, check that it and its files are private, lock it, remove temp files a
   * killed write left behind, and read the state: the snapshot and the journal's changes. Throws
   * {@link EmulatorStateError} and leaves nothing locked.
   */
  static async open(dir: string, options: DataDirOptions = {}): Promise<DataDir> {
    const path = resolve(dir);
    try {
      await mkdir(path, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw ioError(`Cannot create the emulator data directory ${path}`, path, error);
    }
    const info = await stat(path).catch((error: unknown) => {
      throw ioError(`Cannot read the emulator data directory ${path}`, path, error);
    });
    if (!info.isDirectory()) throw ioError(`The emulator data directory ${path} is not a directory`, path, new Error('ENOTDIR'));
    checkPrivate(path, info.mode, 'directory');

    const lock = await takeLock(path, options);
    try {
      await removeTempFiles(path);
      return new DataDir(path, await readState(path, options.onWarning ?? (() => undefined)), lock, options);
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  /** Queue a change (already made in memory) for the next {@link DataDir.commit}. */
  record(change: StateChange): void {
    if (this.#closed) return;
    const payload = Buffer.from(serializeChange(change), 'utf8');
    this.#pending.push(payload);
    this.#pendingBytes += WRITE_RECORD_OVERHEAD_BYTES + payload.length;
  }

  /**
   * Make every change recorded so far durable: one append of their records and one fdatasync, or, when the journal
   * has outgrown the snapshot or cannot be appended to, a new snapshot of `state()` (the state in memory, which holds
   * them). `EmulatorStateBusy` once the lock is lost, `EmulatorStateIOError` when nothing could be written.
   */
  commit(state: () => EmulatorState): Promise<void> {
    return this.#run(async () => {
      if (this.#pending.length === 0 && !this.#mustCompact) return;
      if (this.#mustCompact || this.#journalBytes + this.#pendingBytes > Math.max(this.#snapshotBytes, this.#compactMinBytes)) {
        await this.#compact(state);
        return;
      }
      const payloads = this.#pending;
      this.#pending = [];
      this.#pendingBytes = 0;
      try {
        await this.#append(payloads);
      } catch (error) {
        if (error instanceof EmulatorStateError && error.code === 'EmulatorStateBusy') throw error;
        // What reached the journal is unknown: nothing more goes after it. The state in memory holds these changes, so a
        // snapshot of it makes them durable all the same; if that fails too, its error is the caller's.
        this.#mustCompact = true;
        await this.#compact(state);
      }
    });
  }

  /** Write `state()` as a new snapshot and remove the journal (its changes are in the snapshot). */
  compact(state: () => EmulatorState): Promise<void> {
    return this.#run(() => this.#compact(state));
  }

  /**
   * Compact (when the journal holds anything, so that the directory is left with the snapshot alone) and release the
   * lock. A failure to compact is only warned of: the journal still holds every change. Idempotent.
   */
  close(state?: () => EmulatorState): Promise<void> {
    this.#closing ??= this.#close(state);
    return this.#closing;
  }

  async #close(state: (() => EmulatorState) | undefined): Promise<void> {
    try {
      await this.#closeFiles(state);
    } finally {
      await this.#lock.release();
    }
  }

  #closeFiles(state: (() => EmulatorState) | undefined): Promise<void> {
    return this.#run(async () => {
      // A lost lock: the directory may be another process's now, and nothing more is written to it.
      if (state && (this.#journalOnDisk || this.#pending.length > 0 || this.#mustCompact) && !this.#lock.compromised()) {
        await this.#compact(state).catch((error: unknown) => this.#warn(`Emulator data directory ${this.path}: cannot compact at close, the journal is read at the next start (${(error as Error).message})`));
      }
      this.#closed = true;
      this.#pending = [];
      await this.#journal?.close().catch(() => undefined);
      this.#journal = undefined;
    }, false);
  }

  /** Run after every write queued before, whether that succeeded or not; `writes`: only while the lock is held. */
  #run(task: () => Promise<void>, writes = true): Promise<void> {
    const run = this.#serial.then(() => {
      if (this.#closed) throw new Error('Emulator bug: a write of the data directory after close()');
      // Never two writers: a lock another process took over (this one stalled, or its lock was removed) is not ours.
      if (writes && this.#lock.compromised()) {
        // Nothing is written again: the queued records would only grow.
        this.#pending = [];
        this.#pendingBytes = 0;
        throw new EmulatorStateError('EmulatorStateBusy', `The lock of the emulator data directory ${this.path} was lost (removed, or taken over by another process): nothing more is saved`, this.path);
      }
      return task();
    });
    this.#serial = run.catch(() => undefined);
    return run;
  }

  /**
   * One write of `payloads`' records, each naming this write (where it begins, its length), then fdatasync: a power cut
   * before that returns may leave this write's pages in any order, and replay must tell that from damage to the
   * writes before it, which were durable before this one began.
   */
  async #append(payloads: readonly Buffer[]): Promise<void> {
    const file = join(this.path, JOURNAL_FILE);
    let batch: Buffer;
    try {
      this.#journal ??= await this.#newJournal();
      batch = encodeWrite(payloads, this.#journalBytes);
      await writeAll(this.#journal, batch, this.#journalBytes);
      await this.#journal.datasync();
      // Removed under us (the directory deleted): appends would go to a file nobody reads again.
      if ((await this.#journal.stat()).nlink === 0) throw new Error('the journal file was removed');
    } catch (error) {
      throw ioError(`Cannot append to the emulator data file ${file}`, file, error);
    }
    this.#journalBytes += batch.length;
  }

  /** A journal holding only its header, made whole under a temp name and renamed in (replacing a set-aside one). */
  async #newJournal(): Promise<FileHandle> {
    const file = join(this.path, JOURNAL_FILE);
    const temp = join(this.path, `${JOURNAL_FILE}.${randomBytes(8).toString('hex')}.tmp`);
    const header = journalHeader(this.#snapshotSha256);
    const handle = await open(temp, 'wx', 0o600);
    try {
      await writeAll(handle, header, 0);
      await handle.sync();
      await rename(temp, file);
      this.#journalOnDisk = true;
      await syncDir(this.path);
    } catch (error) {
      await handle.close().catch(() => undefined);
      await rm(temp, { force: true }).catch(() => undefined);
      throw error;
    }
    this.#journalBytes = header.length;
    return handle;
  }

  /**
   * The state, read now with the records queued so far (they are in it), as a new snapshot: temp file (0600), write,
   * fsync, rename over, fsync the directory. Then the journal goes. A crash before the rename leaves the old snapshot
   * and its journal; after it, the new snapshot and a journal naming the old one, which is set aside when read.
   */
  async #compact(state: () => EmulatorState): Promise<void> {
    const bytes = Buffer.from(serializeState(state()), 'utf8');
    this.#pending = [];
    this.#pendingBytes = 0;
    const file = join(this.path, STATE_FILE);
    const temp = join(this.path, `${STATE_FILE}.${randomBytes(8).toString('hex')}.tmp`);
    try {
      const handle = await open(temp, 'wx', 0o600);
      try {
        await writeAll(handle, bytes, 0);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, file);
      await syncDir(this.path);
    } catch (error) {
      await rm(temp, { force: true }).catch(() => undefined);
      throw ioError(`Cannot write the emulator data file ${file}`, file, error);
    }
    this.#snapshotSha256 = sha256(bytes);
    this.#snapshotBytes = bytes.length;
    this.#mustCompact = false;
    const journal = this.#journal;
    this.#journal = undefined;
    this.#journalBytes = 0;
    await journal?.close().catch(() => undefined);
    if (!this.#journalOnDisk) return;
    // The journal is stale now whatever happens: one left behind is set aside when read, and replaced by the next.
    try {
      await rm(join(this.path, JOURNAL_FILE), { force: true });
      await syncDir(this.path);
      this.#journalOnDisk = false;
    } catch (error) {
      this.#warn(`Emulator data directory ${this.path}: cannot remove the compacted ${JOURNAL_FILE} (${(error as NodeJS.ErrnoException).code ?? String(error)}); it is set aside when read`);
    }
  }
}

/** A killed emulator may leave a temp file (holding secrets) behind; it was never the state, so it goes. */
async function removeTempFiles(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    throw ioError(`Cannot list the emulator data directory ${dir}`, dir, error);
  }
  for (const name of names.filter((n) => TEMP_FILE.test(n))) {
    await rm(join(dir, name), { force: true }).catch((error: unknown) => {
      throw ioError(`Cannot remove the leftover temp file ${join(dir, name)}`, dir, error);
    });
  }
}

/** A private regular file's bytes, or `undefined` when there is none. */
async function readPrivateFile(file: string): Promise<Buffer | undefined> {
  let info;
  try {
    info = await lstat(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError(`Cannot read the emulator data file ${file}`, file, error);
  }
  // Not followed: a link or a FIFO where the state should be is something else's file.
  if (!info.isFile()) throw corrupt(file, 'it is not a regular file');
  checkPrivate(file, info.mode, 'file');
  if (info.size > MAX_STATE_BYTES) throw corrupt(file, `it is larger than ${MAX_STATE_BYTES} bytes`);
  try {
    return await readFile(file);
  } catch (error) {
    throw ioError(`Cannot read the emulator data file ${file}`, file, error);
  }
}

/** What {@link readState} found. */
interface ReadState {
  readonly state: EmulatorState | undefined;
  readonly snapshotSha256: string;
  readonly snapshotBytes: number;
  /** A journal file is there (read, set aside, or cut short). */
  readonly journal: boolean;
}

/** The snapshot, and the journal's changes applied to it. */
async function readState(dir: string, warn: (message: string) => void): Promise<ReadState> {
  const snapshotFile = join(dir, STATE_FILE);
  const journalFile = join(dir, JOURNAL_FILE);
  const snapshot = await readPrivateFile(snapshotFile);
  const journal = await readPrivateFile(journalFile);
  if (snapshot === undefined) {
    // Never left by the emulator: a journal is only made after the snapshot it follows.
    if (journal !== undefined) throw corrupt(journalFile, `there is no ${STATE_FILE} for it to follow: put ${STATE_FILE} back, or remove ${JOURNAL_FILE} to start afresh`);
    return { state: undefined, snapshotSha256: '', snapshotBytes: 0, journal: false };
  }
  const parsed = parseState(snapshot.toString('utf8'), snapshotFile);
  const snapshotSha256 = sha256(snapshot);
  const state = journal === undefined ? parsed : replay(parsed, journal, snapshotSha256, journalFile, warn);
  return { state, snapshotSha256, snapshotBytes: snapshot.length, journal: journal !== undefined };
}

/**
 * The state a data directory holds, read as {@link DataDir.open} reads it (the snapshot, then the journal's changes)
 * but without locking it or changing anything: for tests and tools that look at a directory an emulator may be using.
 * `undefined` for a directory without state. Throws {@link EmulatorStateError} as {@link DataDir.open} would.
 */
export async function readDataDirState(dir: string, onWarning: (message: string) => void = () => undefined): Promise<EmulatorState | undefined> {
  return (await readState(resolve(dir), onWarning)).state;
}

/**
 * Coalesces saves: {@link StateWriter.flush} resolves once a save that began after the call has finished, so a
 * caller's change is on disk; saves never overlap, and changes that arrive during one save share the next (with the
 * journal, one append and one fdatasync for all of them: group commit).
 */
export class StateWriter {
  readonly #save: () => Promise<void>;
  /** The save not yet begun, which every flush arriving now joins. */
  #queued: Promise<void> | undefined;
  /** The save in progress. */
  #running: Promise<void> = Promise.resolve();

  constructor(save: () => Promise<void>) {
    this.#save = save;
  }

  flush(): Promise<void> {
    if (this.#queued) return this.#queued;
    const next = this.#running
      .catch(() => undefined)
      .then(() => {
        // From here on, a new flush needs a save that sees its change: queue another one.
        this.#queued = undefined;
        return this.#save();
      });
    this.#queued = next;
    this.#running = next;
    return next;
  }

  /** Wait for the saves under way (their failures are the flushing callers' to see). */
  async idle(): Promise<void> {
    await this.#running.catch(() => undefined);
  }
}
