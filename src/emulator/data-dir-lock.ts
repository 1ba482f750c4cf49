/**
 * The lock of an emulator data directory (data-dir.ts), held for the emulator's life.
 *
 * proper-lockfile's directory `emulator.lock` (an atomic mkdir, its mtime refreshed every {@link LOCK_STALE_MS} / 2
 * while held) with an `owner` file inside naming the process. A lock is taken over only when it is provably
 * stale: its owner on this host is gone (not running, a zombie, or, on Linux, another process under a reused pid),
 * or, when the owner cannot be asked (another host, no owner file yet), it was not refreshed for LOCK_STALE_MS.
 * Every take-over happens under a second, short-lived lock (`emulator.lock.gate`), so that two starters can never
 * both judge the same lock stale and each remove the other's fresh one (issue 24: two emulators ran on one
 * directory in 13 of 25 rounds). The owner file inside the lock also keeps proper-lockfile itself (whose stale check
 * reads the mtime alone) from removing a held lock: a directory that is not empty is not removed.
 *
 * Writing that file changes the directory's mtime, which proper-lockfile reads back at its first refresh to check
 * that the lock is still its own: a different mtime and it declares the lock compromised. So the mtime it set is put
 * back after the owner file is written (before, every emulator on a data directory lost its lock at its first refresh,
 * 5 s after it started, and saved nothing after that).
 */
import { lstat, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { EmulatorStateError } from '../errors.js';
import { loadLockfile } from '../provisioner/lock.js';

/** Name of the lock in the data directory: a directory (proper-lockfile's) holding an `owner` file. */
export const LOCK_FILE = 'emulator.lock';
/** The short-lived lock every take-over of a stale lock happens under. */
const GATE_FILE = 'emulator.lock.gate';
/** How long a lock whose owner cannot be asked must go unrefreshed before it is taken over. */
export const LOCK_STALE_MS = 10_000;
/** proper-lockfile's smallest stale time, for the gate: held for milliseconds, taken over if its holder died holding it. */
const GATE_STALE_MS = 2_000;
/** The owner file inside the lock directory. */
const OWNER_FILE = 'owner';

/** Directories held by an emulator of this process, so a second one here is refused as from another process. */
const heldHere = new Set<string>();

/** `EmulatorStateIOError` with the system's code (ENOSPC...) or message. */
export function ioError(message: string, path: string, cause: unknown): EmulatorStateError {
  const reason = (cause as NodeJS.ErrnoException | undefined)?.code ?? (cause instanceof Error ? cause.message : String(cause));
  return new EmulatorStateError('EmulatorStateIOError', `${message} (${reason})`, path, cause);
}

/** Who holds a lock: process id, host, and (Linux) the process's start time, which tells a reused pid apart. */
interface Owner {
  readonly pid: number;
  readonly host?: string | undefined;
  readonly start?: string | undefined;
}

/** A process's state and start time from /proc (Linux), or `undefined` where there is no /proc or no such process. */
async function procStat(pid: number): Promise<{ state: string; start: string } | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields are counted after the last ")".
  const fields = text?.slice(text.lastIndexOf(')') + 2).split(' ');
  const [state, start] = [fields?.[0], fields?.[19]];
  return state === undefined || start === undefined ? undefined : { state, start };
}

/** Is this process gone for good? A zombie (killed, not yet reaped by its parent) is. */
async function processGone(owner: Owner): Promise<boolean> {
  try {
    process.kill(owner.pid, 0);
  } catch (error) {
    // EPERM: it exists, as another user's.
    return (error as NodeJS.ErrnoException).code !== 'EPERM';
  }
  const stat = await procStat(owner.pid);
  if (!stat) return false;
  return stat.state === 'Z' || stat.state === 'X' || (owner.start !== undefined && owner.start !== stat.start);
}

function parseOwner(text: string): Owner | undefined {
  // The lock of an earlier version: a file holding the pid alone.
  if (/^\d+\s*$/.test(text)) return { pid: Number.parseInt(text, 10) };
  try {
    const { pid, host, start } = JSON.parse(text) as Record<string, unknown>;
    if (!Number.isSafeInteger(pid) || (pid as number) <= 0) return undefined;
    return { pid: pid as number, host: typeof host === 'string' ? host : undefined, start: typeof start === 'string' ? start : undefined };
  } catch {
    return undefined;
  }
}

/** Whether the lock at `lockPath` may be taken over, and who holds it when it may not. */
async function judgeLock(dir: string, lockPath: string, staleMs: number): Promise<{ stale: boolean; owner: Owner | undefined }> {
  const info = await lstat(lockPath).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw ioError(`Cannot read the lock ${lockPath}`, lockPath, error);
  });
  if (!info) return { stale: true, owner: undefined };
  const text = await readFile(info.isDirectory() ? join(lockPath, OWNER_FILE) : lockPath, 'utf8').catch(() => '');
  const owner = parseOwner(text);
  const onThisHost = owner !== undefined && (owner.host === undefined || owner.host === hostname());
  if (owner && onThisHost) {
    if (owner.pid === process.pid) return { stale: !heldHere.has(dir), owner };
    if (await processGone(owner)) return { stale: true, owner };
    // Where /proc cannot tell a zombie or a reused pid, a lock not refreshed for the stale time is taken over too.
    if ((await procStat(owner.pid)) !== undefined) return { stale: false, owner };
  }
  return { stale: Date.now() - info.mtimeMs > staleMs, owner };
}

/** A lock held by this process. */
export interface HeldLock {
  readonly path: string;
  /** True once proper-lockfile saw the lock changed or removed under it: another process took it. */
  readonly compromised: () => boolean;
  release(): Promise<void>;
}

/** What {@link takeLock} may be told. */
export interface TakeLockOptions {
  /** How long the lock may go unrefreshed before another process may take it over. Default {@link LOCK_STALE_MS}. */
  readonly staleMs?: number;
  /** Called once when the lock is lost while held (removed, or taken over), with proper-lockfile's reason. */
  readonly onLost?: (reason: Error) => void;
}

/** Take the directory's lock, taking over a stale one; `EmulatorStateBusy` naming the owner when it is held. */
export async function takeLock(dir: string, options: TakeLockOptions = {}): Promise<HeldLock> {
  const staleMs = options.staleMs ?? LOCK_STALE_MS;
  const { lock } = await loadLockfile('An emulator data directory (--data-dir)');
  const lockPath = join(dir, LOCK_FILE);
  const failed = (what: string, error: unknown): EmulatorStateError => ioError(`Cannot ${what} the lock ${lockPath}`, lockPath, error);
  // Racing starters wait their turn at the gate: a few milliseconds each. (proper-lockfile keeps its locks by the
  // first argument, which names no file here: one key for the gate, another for the lock.)
  const releaseGate = await lock(join(dir, 'emulator-gate'), {
    lockfilePath: join(dir, GATE_FILE), stale: GATE_STALE_MS, realpath: false, onCompromised: () => undefined,
    retries: { retries: 100, minTimeout: 5, maxTimeout: 100, randomize: true },
  }).catch((error: unknown) => {
    throw failed('wait for', error);
  });
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      let compromised = false;
      try {
        const release = await lock(join(dir, 'emulator'), {
          lockfilePath: lockPath, stale: staleMs, realpath: false, retries: 0,
          // The default throws from a timer, which would crash the process.
          onCompromised: (reason: Error) => {
            if (compromised) return;
            compromised = true;
            options.onLost?.(reason);
          },
        });
        const owner: Owner = { pid: process.pid, host: hostname(), start: (await procStat(process.pid))?.start };
        try {
          // The mtime proper-lockfile set (and checks at its next refresh), put back once the owner file is in.
          const { mtime } = await stat(lockPath);
          await writeFile(join(lockPath, OWNER_FILE), `${JSON.stringify(owner)}\n`, { mode: 0o600 });
          await utimes(lockPath, mtime, mtime);
        } catch (error) {
          await release().catch(() => undefined);
          throw failed('write the owner of', error);
        }
        heldHere.add(dir);
        return {
          path: lockPath,
          compromised: () => compromised,
          release: async () => {
            heldHere.delete(dir);
            // proper-lockfile removes an empty directory only.
            await rm(join(lockPath, OWNER_FILE), { force: true }).catch(() => undefined);
            await release().catch(() => undefined);
          },
        };
      } catch (error) {
        // ELOCKED: held and recently refreshed; ENOTEMPTY / ENOTDIR: proper-lockfile found it stale by its mtime but
        // could not remove it (an owner file inside, or an earlier version's lock file): judged here.
        const code = (error as NodeJS.ErrnoException).code;
        if (error instanceof EmulatorStateError) throw error;
        if (code !== 'ELOCKED' && code !== 'ENOTEMPTY' && code !== 'ENOTDIR' && code !== 'EEXIST') throw failed('take', error);
      }
      const { stale, owner } = await judgeLock(dir, lockPath, staleMs);
      if (!stale) {
        const who = owner ? `process ${owner.pid}${owner.host !== undefined && owner.host !== hostname() ? ` on ${owner.host}` : ''}` : 'another process';
        throw new EmulatorStateError('EmulatorStateBusy', `The emulator data directory ${dir} is in use by ${who}`, dir);
      }
      // The owner is gone (killed, crashed): its lock means nothing now. Under the gate, nobody else removes it.
      await rm(lockPath, { recursive: true, force: true }).catch((error: unknown) => {
        throw failed('remove the stale', error);
      });
    }
    throw new EmulatorStateError('EmulatorStateBusy', `The emulator data directory ${dir} was locked again while taking over a stale lock`, dir);
  } finally {
    await releaseGate().catch(() => undefined);
  }
}

