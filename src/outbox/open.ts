/**
 * Opening the durable outbox: the directory, what LevelDB's logs hold before it replays them (a write cut short,
 * damaged bytes), the record format, the hot log's messages moved into LevelDB, the unclean-shutdown mark, and the
 * `OutboxRecovered` warning; and repair of a store LevelDB refuses as corrupt.
 */
import { mkdir } from 'node:fs/promises';
import { OutboxError, ValidationError, isApsaraMqDeviceError } from '../errors.js';
import { RECORD_FORMAT, decodeSeq, encodeSeq, markKey, metaKey, seal } from './codec.js';
import { checkLogs, levelOptions, loadEngine, openError, type Level } from './level.js';
import { resolveOutboxOptions, type OutboxStoreOptions } from './options.js';
import { OutboxStore } from './store.js';
import { HotLog } from './wal.js';
import { removeWalFiles, replayWal, type WalReplay } from './wal-format.js';

/**
 * What the hot log files hold goes into LevelDB (one fsync'd batch: the live messages, their devices' marks, the next
 * seq), then the files are deleted. Idempotent: a crash in between puts the same records again at the next open.
 */
async function moveHotLog(db: Level, wal: WalReplay, dir: string): Promise<void> {
  if (wal.files.length === 0) return;
  const marks = await Promise.all([...wal.marks].map(async ([clientId, seq]) => [clientId, Math.max(seq, decodeSeq(await db.get(markKey(clientId))) ?? 0)] as const));
  const nextSeq = Math.max(wal.maxSeq + 1, decodeSeq(await db.get(metaKey('seq'))) ?? 1);
  const batch = db.batch();
  // Each value gets its CRC (the hot log's record had one of its own, checked when it was read).
  for (const m of wal.live) batch.put(m.key, seal(m.key, m.value));
  for (const [clientId, seq] of marks) batch.put(markKey(clientId), encodeSeq(seq));
  batch.put(metaKey('seq'), encodeSeq(nextSeq));
  await batch.write({ sync: true });
  await removeWalFiles(dir, wal.files);
}

/**
 * Open (or create) the durable outbox in `options.dir`. One process at a time holds a directory: a second opener, in
 * this process or another, gets `OutboxLocked`; a process that died (kill -9, power cut) holds nothing.
 *
 * Reopening after a crash recovers every message that was accepted; a write cut short (power cut, full disk) or
 * damaged bytes cost only what they held, reported by an `OutboxRecovered` warning (also in `store.recovery`).
 *
 * @throws ValidationError `InvalidOption`; ConfigurationError `MissingDependency` without classic-level;
 *   OutboxError `OutboxLocked`, `OutboxCorrupt`, `OutboxDiskFull`, `OutboxIOError`.
 * @example
 * const store = await openOutboxStore({ dir: '/var/lib/gateway/outbox', maxBytes: 256 * 2 ** 20, whenFull: 'drop-oldest' });
 * store.on('drop', ({ clientId, seq, reason }) => log.warn('dropped', { clientId, seq, reason }));
 * const { seq } = await store.append('GID_x@@@dev-1', { topic: 'telemetry/dev-1', payload, qos: 1 });
 */
export async function openOutboxStore(options: OutboxStoreOptions): Promise<OutboxStore> {
  const resolved = resolveOutboxOptions(options);
  const level = await loadEngine();
  const { dir } = resolved;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (cause) {
    throw openError(dir, cause);
  }
  // Before LevelDB replays (and then deletes) its logs: what they hold, and where they are damaged.
  const logs = await checkLogs(dir);
  const db = new level.ClassicLevel<Buffer, Buffer>(dir, levelOptions(resolved));
  try {
    await db.open();
  } catch (cause) {
    throw openError(dir, cause);
  }
  try {
    const format = await db.get(metaKey('format'));
    if (format !== undefined && format[0] !== RECORD_FORMAT) {
      throw new OutboxError('OutboxCorrupt', `The outbox in ${dir} was written in format ${String(format[0])}, which this version does not read`, dir, { retryable: false });
    }
    const unclean = (await db.get(metaKey('open'))) !== undefined;
    const wal = await replayWal(dir);
    await moveHotLog(db, wal, dir);
    const store = new OutboxStore(resolved, level, db);
    const found = await store.load();
    const nextSeq = Math.max(found.maxSeq + 1, decodeSeq(await db.get(metaKey('seq'))) ?? 1);
    const tornTailBytes = logs.tornTailBytes + wal.tornTailBytes;
    const corruptBytes = logs.corruptBytes + wal.corruptBytes;
    store.begin(
      nextSeq,
      { uncleanShutdown: unclean, messages: found.messages, possibleDuplicates: found.possibleDuplicates, tornTailBytes, corruptBytes },
      await HotLog.create(dir, wal.nextFile, nextSeq),
    );
    await db.batch(
      [
        { type: 'put', key: metaKey('format'), value: Buffer.from([RECORD_FORMAT]) },
        { type: 'put', key: metaKey('open'), value: Buffer.from(JSON.stringify({ pid: process.pid, openedAt: resolved.clock() })) },
      ],
      { sync: true },
    );
    if (unclean || tornTailBytes > 0 || corruptBytes > 0) {
      const damage = [...logs.checks.filter((c) => c.firstDamageAt !== undefined).map((c) => `${c.file} at byte ${String(c.firstDamageAt)}`), ...wal.damage];
      const warning = new OutboxError(
        'OutboxRecovered',
        `The outbox in ${dir} was recovered${unclean ? ' after an unclean shutdown' : ''}: ${found.messages} messages kept, ${found.possibleDuplicates} of them possibly delivered already` +
          (tornTailBytes > 0 ? `; the last write was cut short (${tornTailBytes} bytes dropped)` : '') +
          (corruptBytes > 0 ? `; ${corruptBytes} damaged bytes skipped with the records they held` : '') +
          (damage.length > 0 ? ` (${damage.join(', ')})` : ''),
        dir,
      );
      setImmediate(() => store.emit('warning', warning));
    }
    store.start();
    return store;
  } catch (error) {
    await db.close().catch(() => undefined);
    throw isApsaraMqDeviceError(error) ? error : openError(dir, error);
  }
}

/**
 * Salvage a store that {@link openOutboxStore} refuses as `OutboxCorrupt`: LevelDB's repair reads every table and
 * log it can and rebuilds the store from them (damaged records are lost; nothing is invented). Run it with the store
 * closed; open the store again afterwards. Keep a copy of the directory first if its contents matter.
 *
 * @throws ConfigurationError `MissingDependency` without classic-level; OutboxError `OutboxIOError`.
 */
export async function repairOutboxStore(dir: string): Promise<void> {
  if (typeof dir !== 'string' || dir.length === 0) throw new ValidationError('InvalidOption', 'repairOutboxStore: dir must be the path of a directory');
  const level = await loadEngine();
  try {
    await level.ClassicLevel.repair(dir);
  } catch (cause) {
    throw openError(dir, cause);
  }
}
