/**
 * The durable outbox's engine, LevelDB through `classic-level`, and what its failures mean.
 *
 * The engine is LevelDB through `classic-level` (an optional peer dependency, loaded on the first open), chosen by
 * `bench/outbox-store.bench.mjs` (BENCHMARKS.md, "Durable outbox") over `better-sqlite3` 12 and `lmdb` 3 because it
 * (a) installs from the registry alone with prebuilt binaries inside the package, also with install scripts skipped
 * (better-sqlite3 12 has no reachable binary for Node 20 here: it compiles for minutes, and without its install
 * script it does not load); (b) survives a file cut short at any offset (its write-ahead log is a sequence of
 * checksummed records replayed up to the last complete one; LMDB's memory-mapped file, cut short, silently lost
 * records of earlier durable commits, or killed the process with SIGBUS); (c) writes and fsyncs on libuv's thread
 * pool, so the event loop (and the MQTT clients on it) never waits for the disk (better-sqlite3 is synchronous);
 * (d) locks its directory with fcntl, which the kernel releases when a process dies, so a store left by a kill -9
 * is reopened at once and a second opener is refused. No candidate was cheaper per message.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClassicLevel } from 'classic-level';
import { ConfigurationError, OutboxError, isApsaraMqDeviceError } from '../errors.js';
import { checkLogFile, type LogCheck } from './leveldb-log.js';
import type { ResolvedOutboxOptions } from './options.js';

export type Level = ClassicLevel<Buffer, Buffer>;
export type LevelModule = typeof import('classic-level');

let engine: Promise<LevelModule> | undefined;

/** classic-level, imported on the first open: an optional peer, so a device that never opens an outbox needs none. */
export function loadEngine(): Promise<LevelModule> {
  engine ??= import('classic-level').catch((error: unknown) => {
    engine = undefined;
    if ((error as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND') {
      throw new ConfigurationError(
        'MissingDependency',
        'The durable outbox needs the package classic-level, which is not installed (an optional peer dependency of apsaramq-device): npm install classic-level',
      );
    }
    throw error;
  });
  return engine;
}

/** The errno-like code LevelDB's message carries (it says "IO error: <path>: No space left on device"). */
function diskFullIn(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return true;
    if (typeof message === 'string' && /No space left on device|Disk quota exceeded|File too large/i.test(message)) return true;
  }
  return false;
}

function levelCode(error: unknown): string | undefined {
  const cause = (error as { cause?: { code?: unknown } }).cause;
  const code = typeof cause?.code === 'string' ? cause.code : (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/** A write failure as the error an append gets: `OutboxDiskFull` for a full disk or a size limit, else `OutboxIOError`. */
export function writeError(dir: string, error: unknown): OutboxError {
  if (isApsaraMqDeviceError(error) && error instanceof OutboxError) return error;
  return diskFullIn(error)
    ? new OutboxError('OutboxDiskFull', `The outbox in ${dir} cannot write: the disk is full or a size limit was reached`, dir, { cause: error })
    : new OutboxError('OutboxIOError', `The outbox in ${dir} cannot write (${(error as Error).message ?? 'I/O error'})`, dir, { cause: error });
}

/**
 * One LevelDB write batch, filled by `fill` (nothing written when it adds nothing). The chained form: abstract-level's
 * array form copies and checks every operation object, which cost 2 to 4 times the CPU per message
 * (bench/outbox-store.bench.mjs, measured while choosing).
 */
export async function write(db: Level, fill: (batch: { put(key: Buffer, value: Buffer): void; del(key: Buffer): void }) => void, sync: boolean): Promise<void> {
  const batch = db.batch();
  try {
    fill(batch);
  } catch (error) {
    await batch.close();
    throw error;
  }
  if (batch.length === 0) return batch.close();
  await batch.write({ sync });
}

export function levelOptions(options: ResolvedOutboxOptions): Record<string, unknown> {
  return {
    keyEncoding: 'buffer',
    valueEncoding: 'buffer',
    createIfMissing: true,
    writeBufferSize: options.writeBufferBytes,
    // Reads are of recent messages (in the write buffer) or once, in order, after an outage: a small cache is enough.
    cacheSize: 2 * 2 ** 20,
  };
}

/** Check every LevelDB log in `dir` before LevelDB replays it. */
export async function checkLogs(dir: string): Promise<{ tornTailBytes: number; corruptBytes: number; checks: Array<LogCheck & { file: string }> }> {
  const checks: Array<LogCheck & { file: string }> = [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return { tornTailBytes: 0, corruptBytes: 0, checks };
  }
  for (const name of names.filter((n) => /^\d+\.log$/.test(n)).sort()) {
    try {
      checks.push({ file: name, ...(await checkLogFile(join(dir, name))) });
    } catch {
      // Unreadable here means unreadable to LevelDB too: its open reports it.
    }
  }
  return {
    tornTailBytes: checks.reduce((sum, c) => sum + c.tornTailBytes, 0),
    corruptBytes: checks.reduce((sum, c) => sum + c.corruptBytes, 0),
    checks,
  };
}

/** What LevelDB's failure to open (or read) a store means here. */
export function openError(dir: string, error: unknown, what: 'opened' | 'read' = 'opened'): OutboxError {
  if (error instanceof OutboxError) return error;
  const code = levelCode(error);
  if (code === 'LEVEL_LOCKED') {
    return new OutboxError('OutboxLocked', `The outbox in ${dir} is open in another process or already open in this one`, dir, { cause: error });
  }
  if (code === 'LEVEL_CORRUPTION') return new OutboxError('OutboxCorrupt', `The outbox in ${dir} is corrupt (${(error as { cause?: Error }).cause?.message ?? 'LevelDB'})`, dir, { cause: error });
  if (diskFullIn(error)) return new OutboxError('OutboxDiskFull', `The outbox in ${dir} cannot be ${what}: the disk is full or a size limit was reached`, dir, { cause: error });
  const message = (error as { cause?: Error }).cause?.message ?? (error as Error).message;
  return new OutboxError('OutboxIOError', `The outbox in ${dir} cannot be ${what} (${message})`, dir, { cause: error });
}
