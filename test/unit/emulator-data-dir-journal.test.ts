/**
 * The data directory's journal (state.journal beside the state.json snapshot): replay, a tail cut short at every byte,
 * damage in the middle, and every point at which a compaction can be cut short, on real files in temp dirs.
 */
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DataDir, JOURNAL_FILE, readDataDirState, STATE_FILE, StateWriter, type EmulatorState, type StateChange } from '../../src/emulator/data-dir.js';
import { readJournal } from '../../src/emulator/data-dir-format.js';
import { encodeFrame, encodeWrite, FRAME_HEADER_BYTES, readFrames } from '../../src/emulator/journal.js';
import { CredentialRegistry } from '../../src/emulator/registry.js';
import { TokenRegistry } from '../../src/emulator/token-registry.js';
import { TOKEN_RETENTION_MS } from '../../src/emulator/token-rules.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { tempDir } from '../helpers/cli.js';

const INSTANCE = 'mqtt-journal';
const DAY = 86_400_000;

/** An emulator's state kept in a data directory, wired as startEmulator wires it, on a clock the test moves. */
interface Kept {
  readonly dir: DataDir;
  readonly registry: CredentialRegistry;
  readonly tokens: TokenRegistry;
  readonly state: () => EmulatorState;
  /** Make what changed durable (as an answered OpenAPI call does). */
  readonly flush: () => Promise<void>;
  clock: number;
}

async function keep(path: string, options: { compactMinBytes?: number; warnings?: string[] } = {}): Promise<Kept> {
  const dir = await DataDir.open(path, { compactMinBytes: options.compactMinBytes, onWarning: (m) => options.warnings?.push(m) });
  const kept: Kept = {
    dir,
    registry: new CredentialRegistry({ reRegister: 'rotate', credentialQuota: Number.POSITIVE_INFINITY, now: () => kept.clock }),
    tokens: new TokenRegistry({ now: () => kept.clock }),
    state: () => ({ instanceId: INSTANCE, account: { accessKeyId: 'LTAIjournal', accessKeySecret: 'account-secret' }, credentials: kept.registry.all(), tokens: kept.tokens.all() }),
    flush: () => writer.flush(),
    clock: 1_700_000_000_000,
  };
  const writer = new StateWriter(() => dir.commit(kept.state));
  if (dir.initial) {
    kept.registry.restore(dir.initial.credentials);
    kept.tokens.restore(dir.initial.tokens ?? []);
  }
  await dir.compact(kept.state);
  const record = (change: StateChange): void => dir.record(change);
  kept.registry.onChange(record);
  kept.tokens.onChange(record);
  onTestFinished(() => dir.close());
  return kept;
}

/** A state's content, in an order that does not depend on how it was built. */
function content(state: EmulatorState | undefined): unknown {
  return {
    credentials: [...(state?.credentials ?? [])].sort((a, b) => a.ClientId.localeCompare(b.ClientId)),
    tokens: [...(state?.tokens ?? [])].sort((a, b) => a.id.localeCompare(b.id)),
  };
}

function token(kept: Kept, expireIn = DAY): string {
  return kept.tokens.apply({ instanceId: INSTANCE, type: 'RW', resources: ['TopicA/+'], expireTime: kept.clock + expireIn }).token;
}

/** Every kind of change, each flushed on its own: register, rotate, refresh, unregister, apply, revoke, forget. */
async function everyChange(kept: Kept, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    kept.clock += 1_000;
    kept.registry.register(INSTANCE, `GID_j@@@dev-${i}`);
    if (i % 3 === 0) kept.registry.register(INSTANCE, `GID_j@@@dev-${i}`);
    if (i % 4 === 1) kept.registry.refresh(INSTANCE, `GID_j@@@dev-${i}`);
    if (i % 5 === 2) kept.registry.unregister(INSTANCE, `GID_j@@@dev-${i - 1}`);
    const t = token(kept, i % 2 === 0 ? DAY : 60_000);
    if (i % 3 === 1) kept.tokens.revoke(INSTANCE, t);
    await kept.flush();
  }
}

/** Close without compacting: the files as a kill -9 after the last flush leaves them. */
async function crash(kept: Kept): Promise<void> {
  await kept.dir.close();
}

describe('the data directory journal: replay', () => {
  it('after many changes of every kind (and compactions between them), the directory reads as the state in memory', async () => {
    const path = join(await tempDir(), 'state');
    // A small bound, so that the journal is compacted several times along the way.
    const kept = await keep(path, { compactMinBytes: 4096 });
    let changes = 0;
    kept.registry.onChange(() => changes++);
    kept.tokens.onChange(() => changes++);
    await everyChange(kept, 60);
    // Tokens past their retention are forgotten by the next ApplyToken: a token-removed change.
    kept.clock += 2 * DAY + TOKEN_RETENTION_MS;
    const before = kept.tokens.size;
    token(kept);
    expect(kept.tokens.size).toBeLessThan(before);
    await kept.flush();
    // Compacted along the way: the journal holds the changes since the last snapshot only.
    const journaled = readFrames(await readFile(join(path, JOURNAL_FILE))).payloads.length - 1;
    expect(journaled).toBeGreaterThan(0);
    expect(journaled).toBeLessThan(changes / 2);
    expect(content(await readDataDirState(path))).toEqual(content(kept.state()));
    await crash(kept);

    const warnings: string[] = [];
    const again = await keep(path, { warnings });
    expect(warnings).toEqual([]);
    expect(content(again.dir.initial)).toEqual(content(kept.state()));
    expect(again.dir.initial?.account).toEqual(kept.state().account);
  });

  it('a clean close compacts: the directory holds the snapshot alone, which an emulator without journals reads whole', async () => {
    const path = join(await tempDir(), 'state');
    const kept = await keep(path);
    await everyChange(kept, 5);
    expect((await readdir(path)).sort()).toEqual(['emulator.lock', JOURNAL_FILE, STATE_FILE]);
    await kept.dir.close(kept.state);
    expect(await readdir(path)).toEqual([STATE_FILE]);
    const snapshot = JSON.parse(await readFile(join(path, STATE_FILE), 'utf8')) as EmulatorState;
    expect(content(snapshot)).toEqual(content(kept.state()));
  });

  it('many changes arriving while a write is under way share the next one, and each flush waits for its own', async () => {
    const path = join(await tempDir(), 'state');
    const kept = await keep(path);
    const flushes = Array.from({ length: 200 }, (_, i) => {
      kept.registry.register(INSTANCE, `GID_j@@@burst-${i}`);
      return kept.flush();
    });
    await Promise.all(flushes);
    expect(content(await readDataDirState(path))).toEqual(content(kept.state()));
    // One header and 200 changes, in at most a few appends (the first flush's write, then the rest's).
    expect(readFrames(await readFile(join(path, JOURNAL_FILE))).payloads).toHaveLength(201);
  });

  it('a journal removed under a running emulator: the next change is made durable by a snapshot instead', async () => {
    const path = join(await tempDir(), 'state');
    const kept = await keep(path);
    kept.registry.register(INSTANCE, 'GID_j@@@first');
    await kept.flush();
    await rm(join(path, JOURNAL_FILE));
    kept.registry.register(INSTANCE, 'GID_j@@@second');
    await kept.flush();
    expect(content(await readDataDirState(path))).toEqual(content(kept.state()));
    kept.registry.register(INSTANCE, 'GID_j@@@third');
    await kept.flush();
    expect(content(await readDataDirState(path))).toEqual(content(kept.state()));
  });
});

/** Where a journal's record at `offset` says its write begins (journal version 2: the first field of its body). */
function writeOf(journal: Buffer, offset: number): number {
  return journal.readUInt32LE(offset + FRAME_HEADER_BYTES);
}

/** The last write of a directory's journal: the journal's bytes, where that write starts, and the state before it. */
interface LastWrite {
  readonly path: string;
  readonly journal: Buffer;
  readonly start: number;
  readonly before: unknown;
  readonly after: unknown;
  readonly secrets: string[];
}

/**
 * A directory whose journal ends with the change `last` makes (the last change it reports, so that the journal's
 * last record is of kind `op`); `last` returns the state after it when that is not the state in memory.
 */
async function endingWith(op: StateChange['op'], last: (kept: Kept) => EmulatorState | void): Promise<LastWrite> {
  const path = join(await tempDir(), op);
  const kept = await keep(path);
  await everyChange(kept, 4);
  kept.clock += 1_000;
  const before = content(kept.state());
  let seen: StateChange | undefined;
  const off = kept.tokens.onChange((change) => (seen = change));
  const offToo = kept.registry.onChange((change) => (seen = change));
  const changed = last(kept);
  off();
  offToo();
  if (!changed) expect(seen?.op).toBe(op);
  await kept.flush();
  const after = content(changed ?? kept.state());
  await crash(kept);
  const journal = await readFile(join(path, JOURNAL_FILE));
  const { offsets } = readFrames(journal);
  const secrets = kept.registry.all().map((c) => c.DeviceAccessKeySecret);
  return { path, journal, start: writeOf(journal, offsets.at(-1) ?? 0), before, after, secrets };
}

/**
 * With `journal` in place, the emulator opens the directory with one warning and the state `before`, and goes on: its
 * next change follows the records kept and reads back with no warning.
 */
async function opensAndGoesOn(path: string, journal: Buffer, before: unknown): Promise<void> {
  await writeFile(join(path, JOURNAL_FILE), journal);
  const warnings: string[] = [];
  const kept = await keep(path, { warnings });
  expect(warnings).toHaveLength(1);
  expect(content(kept.state())).toEqual(before);
  kept.registry.register(INSTANCE, 'GID_j@@@after');
  await kept.flush();
  await crash(kept);
  expect(content(await readDataDirState(path, (m) => warnings.push(m)))).toEqual(content(kept.state()));
  expect(warnings).toHaveLength(1);
}

/** Each byte of `journal` from `from` to `to` flipped in turn: EmulatorStateCorrupt saying `says`, naming no secret. */
async function everyFlipCorrupt(path: string, journal: Buffer, from: number, to: number, says: string, secrets: readonly string[] = []): Promise<void> {
  for (let at = from; at < to; at++) {
    const damaged = Buffer.from(journal);
    damaged[at] = (damaged[at] ?? 0) ^ 0x5a;
    await writeFile(join(path, JOURNAL_FILE), damaged);
    const error = await readDataDirState(path).then(() => new Error('read'), (e: unknown) => e as Error);
    expect(isApsaraMqDeviceError(error, 'EmulatorStateCorrupt'), `byte ${at}: ${error.message}`).toBe(true);
    expect(error.message, `byte ${at}`).toContain(says);
    for (const secret of secrets) expect(error.message).not.toContain(secret);
  }
}

const LAST: ReadonlyArray<[StateChange['op'], (kept: Kept) => EmulatorState | void]> = [
  ['credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last')],
  ['credential-removed', (kept) => kept.registry.unregister(INSTANCE, 'GID_j@@@dev-0')],
  ['token', (kept) => void token(kept)],
  [
    'token-removed',
    (kept) => {
      // The registry forgets a token only just before it issues another (ApplyToken), so its last change is never a
      // removal: write one as it would be, and expect the state without that token.
      const [forgotten] = kept.tokens.all();
      if (!forgotten) throw new Error('no token to forget');
      kept.dir.record({ op: 'token-removed', id: forgotten.id });
      const state = kept.state();
      return { ...state, tokens: state.tokens?.filter((t) => t.id !== forgotten.id) };
    },
  ],
];

describe('the data directory journal: a tail cut short, damage in the middle', () => {
  it.each(LAST)('a journal cut at every byte of its last write (%s) keeps every earlier write, with a warning', async (op, last) => {
    const { path, journal, start, before, after } = await endingWith(op, last);
    expect(content(await readDataDirState(path))).toEqual(after);
    for (let cut = start + 1; cut < journal.length; cut++) {
      await writeFile(join(path, JOURNAL_FILE), journal.subarray(0, cut));
      const warnings: string[] = [];
      expect(content(await readDataDirState(path, (m) => warnings.push(m))), `cut at ${cut} of ${journal.length}`).toEqual(before);
      expect(warnings, `cut at ${cut}`).toEqual([expect.stringContaining(`the last write to ${join(path, JOURNAL_FILE)}, its ${cut - start} bytes from byte ${start}, is not whole`)]);
    }
    // Cut exactly before it: nothing torn, nothing to say.
    await writeFile(join(path, JOURNAL_FILE), journal.subarray(0, start));
    const warnings: string[] = [];
    expect(content(await readDataDirState(path, (m) => warnings.push(m)))).toEqual(before);
    expect(warnings).toEqual([]);
  });

  it('a journal cut short is cut off for good when the emulator opens it: the next changes follow the whole records', async () => {
    const { path, journal, start, before } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    await opensAndGoesOn(path, journal.subarray(0, start + 5), before);
  });

  it('zeros where the last records should be (the file grew, its data never reached the disk): a torn tail', async () => {
    const { path, journal, start, before } = await endingWith('token', (kept) => void token(kept));
    const zeroed = Buffer.concat([journal.subarray(0, start), Buffer.alloc(journal.length - start + 4096)]);
    await writeFile(join(path, JOURNAL_FILE), zeroed);
    const warnings: string[] = [];
    expect(content(await readDataDirState(path, (m) => warnings.push(m)))).toEqual(before);
    expect(warnings).toHaveLength(1);
  });

  it('a byte flipped anywhere in a record of a write that another follows is EmulatorStateCorrupt, naming no secret', async () => {
    const { path, journal, start, secrets } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    const { offsets } = readFrames(journal);
    const ends = [...offsets.slice(1), journal.length];
    // The records of the write before the last, and one from the middle of the journal: all in writes another follows.
    const lastButOne = writeOf(journal, offsets.filter((o) => o < start).at(-1) ?? 0);
    const middle = Math.floor(offsets.length / 2);
    const records = offsets.flatMap((o, i) => (o >= lastButOne && o < start) || i === middle ? [[o, ends[i] ?? 0]] : []);
    expect(records.length).toBeGreaterThan(1);
    expect(records[0]?.[0]).toBeGreaterThan(0);
    for (const [from, to] of records as Array<[number, number]>) {
      await everyFlipCorrupt(path, journal, from, to, `the record at byte ${from} is damaged and a later write follows it`, secrets);
    }
  });

  it('a damaged last write (its length whole) is cut off like a torn one: it cannot be told from a cut write', async () => {
    const { path, journal, start, before } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    const damaged = Buffer.from(journal);
    damaged[damaged.length - 3] = (damaged[damaged.length - 3] ?? 0) ^ 0x01;
    await writeFile(join(path, JOURNAL_FILE), damaged);
    const warnings: string[] = [];
    expect(content(await readDataDirState(path, (m) => warnings.push(m)))).toEqual(before);
    expect(warnings).toEqual([expect.stringContaining(`from byte ${start}, is not whole`)]);
  });

  it('a record with a valid CRC that is not a change, or a journal that is not one, is EmulatorStateCorrupt', async () => {
    const { path, journal } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    const { frames } = readJournal(journal, path);
    const header = journal.subarray(0, frames.offsets[0]);
    const record = (payload: string): Buffer => Buffer.concat([header, encodeWrite([Buffer.from(payload)], header.length)]);
    const cases: Array<[string, Buffer, string]> = [
      ['an unknown change', record('{"op":"drop-table"}'), 'record 1 (byte'],
      ['a change with a field too many', record(JSON.stringify({ ...JSON.parse(String(frames.payloads[0])), extra: 1 })), 'fields other than'],
      ['a credential that is not one', record('{"op":"credential","record":{"ClientId":"nope"}}'), 'record.ClientId'],
      ['not JSON', record('{"op":}'), 'is not JSON'],
      ['another kind of file', encodeFrame('{"kind":"something-else"}'), 'it is not an emulator journal'],
      ['a newer version', encodeFrame(JSON.stringify({ kind: 'apsaramq-device-emulator-journal', version: 3, snapshot: '0'.repeat(64) })), 'version 3 is not one this emulator reads'],
    ];
    for (const [name, bytes, says] of cases) {
      await writeFile(join(path, JOURNAL_FILE), bytes);
      const error = await DataDir.open(path).then(async (d) => {
        await d.close();
        return new Error('opened');
      }, (e: unknown) => e as Error);
      expect(isApsaraMqDeviceError(error, 'EmulatorStateCorrupt'), `${name}: ${error.message}`).toBe(true);
      expect(error.message, name).toContain(says);
      // Left as it was, for the user to look at.
      expect(await readFile(join(path, JOURNAL_FILE)), name).toEqual(bytes);
    }
  });

  it('a journal without its snapshot is EmulatorStateCorrupt; one group- or world-readable is EmulatorStateInsecure; a link is refused', async () => {
    const { path, journal } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    const failure = (dir: string): Promise<Error> => DataDir.open(dir).then(async (d) => {
      await d.close();
      return new Error('opened');
    }, (e: unknown) => e as Error);

    await chmod(join(path, JOURNAL_FILE), 0o640);
    expect(isApsaraMqDeviceError(await failure(path), 'EmulatorStateInsecure')).toBe(true);
    await chmod(join(path, JOURNAL_FILE), 0o600);

    const linked = join(await tempDir(), 'linked');
    await mkdir(linked, { mode: 0o700 });
    await copyFile(join(path, STATE_FILE), join(linked, STATE_FILE));
    await symlink(join(path, JOURNAL_FILE), join(linked, JOURNAL_FILE));
    const link = await failure(linked);
    expect(isApsaraMqDeviceError(link, 'EmulatorStateCorrupt')).toBe(true);
    expect(link.message).toContain('not a regular file');

    const orphan = join(await tempDir(), 'orphan');
    await mkdir(orphan, { mode: 0o700 });
    await writeFile(join(orphan, JOURNAL_FILE), journal, { mode: 0o600 });
    const error = await failure(orphan);
    expect(isApsaraMqDeviceError(error, 'EmulatorStateCorrupt')).toBe(true);
    expect(error.message).toContain(`there is no ${STATE_FILE} for it to follow`);
    expect(await readdir(orphan)).toEqual([JOURNAL_FILE]);
  });
});

const PAGE = 4096;

/** Where each write of a journal (version 2) begins and ends, in order. */
function writesOf(journal: Buffer): Array<{ start: number; end: number }> {
  const writes: Array<{ start: number; end: number }> = [];
  // Read plainly (a record of a named write is a whole frame too); the first is the header.
  for (const offset of readFrames(journal).offsets.slice(1)) {
    const start = writeOf(journal, offset);
    if (writes.at(-1)?.start !== start) writes.push({ start, end: start + journal.readUInt32LE(offset + FRAME_HEADER_BYTES + 4) });
  }
  return writes;
}

/** A journal of several writes whose last one holds many calls' changes (group commit) and spans several pages. */
async function severalPagesLast(): Promise<{ path: string; journal: Buffer; writes: Array<{ start: number; end: number }>; before: unknown; secrets: string[] }> {
  const path = join(await tempDir(), 'pages');
  const kept = await keep(path);
  await everyChange(kept, 6);
  const before = content(kept.state());
  // Calls arriving together: their changes share one append and its fdatasync.
  await Promise.all(Array.from({ length: 40 }, (_, i) => {
    kept.registry.register(INSTANCE, `GID_j@@@page-${i}`);
    return kept.flush();
  }));
  const secrets = kept.registry.all().map((c) => c.DeviceAccessKeySecret);
  await crash(kept);
  const journal = await readFile(join(path, JOURNAL_FILE));
  const writes = writesOf(journal);
  expect(writes.length).toBeGreaterThanOrEqual(4);
  expect(writes.at(-1)?.end).toBe(journal.length);
  return { path, journal, writes, before, secrets };
}

/** The bytes of the write `[start, end)` in each 4 KiB page of the file it touches (a page may hold earlier writes too). */
function pagesOf({ start, end }: { start: number; end: number }): Array<[number, number]> {
  const pages: Array<[number, number]> = [];
  for (let page = Math.floor(start / PAGE) * PAGE; page < end; page += PAGE) pages.push([Math.max(start, page), Math.min(end, page + PAGE)]);
  return pages;
}

const FILLS: ReadonlyArray<[string, (length: number) => Buffer]> = [
  ['zeros', (length) => Buffer.alloc(length)],
  ['garbage', (length) => randomBytes(length)],
];

/** `journal` with the bytes of each of `ranges` replaced by `fill`'s. */
function overwritten(journal: Buffer, ranges: ReadonlyArray<readonly [number, number]>, fill: (length: number) => Buffer): Buffer {
  const damaged = Buffer.from(journal);
  for (const [from, to] of ranges) fill(to - from).copy(damaged, from);
  return damaged;
}

describe('the data directory journal: a power cut that left the last write\'s pages on the disk in any order', () => {
  it('any of its pages written and the others not (zeros or garbage), or the file ending after any of them: the last write is cut off whole, with one warning naming where it began', async () => {
    const { path, journal, writes, before, secrets } = await severalPagesLast();
    const last = writes.at(-1) ?? { start: 0, end: 0 };
    const pages = pagesOf(last);
    expect(pages.length).toBeGreaterThanOrEqual(3);
    for (const [fillName, fill] of FILLS) {
      for (let page = 0; page < pages.length; page++) {
        const others = pages.filter((_, i) => i !== page);
        const layouts: Array<[string, Buffer]> = [
          // Its first page missing and a later one there is what made a whole record follow a damaged one.
          [`page ${page} alone not written`, overwritten(journal, [pages[page] ?? [0, 0]], fill)],
          [`page ${page} alone written`, overwritten(journal, others, fill)],
          [`the file ending after page ${page}, the pages before it not written`, overwritten(journal, others.slice(0, page), fill).subarray(0, pages[page]?.[1])],
        ];
        for (const [layout, bytes] of layouts) {
          const name = `${fillName}, ${layout}`;
          await writeFile(join(path, JOURNAL_FILE), bytes);
          const warnings: string[] = [];
          const state = await readDataDirState(path, (m) => warnings.push(m)).catch((e: unknown) => e as Error);
          expect(content(state as EmulatorState), `${name}: ${(state as Error).message}`).toEqual(before);
          expect(warnings, name).toEqual([expect.stringContaining(`the last write to ${join(path, JOURNAL_FILE)}, its ${bytes.length - last.start} bytes from byte ${last.start}, is not whole`)]);
          for (const secret of secrets) expect(warnings.join('\n'), name).not.toContain(secret);
        }
      }
    }
  });

  it('the emulator starts from the writes before it, and goes on: its next change follows them and reads back with no warning', async () => {
    const { path, journal, writes, before } = await severalPagesLast();
    const [first] = pagesOf(writes.at(-1) ?? { start: 0, end: 0 });
    await opensAndGoesOn(path, overwritten(journal, [first ?? [0, 0]], Buffer.alloc), before);
  });

  it('damage in any earlier write is EmulatorStateCorrupt, whether the last write is whole, cut short or missing its first page', async () => {
    const { path, journal, writes, secrets } = await severalPagesLast();
    const last = writes.at(-1) ?? { start: 0, end: 0 };
    const [firstPage] = pagesOf(last);
    const lasts: Array<[string, (bytes: Buffer) => Buffer]> = [
      ['the last write whole', (bytes) => bytes],
      ['the last write cut short', (bytes) => bytes.subarray(0, last.start + 1000)],
      ['the last write missing its first page', (bytes) => overwritten(bytes, [firstPage ?? [0, 0]], Buffer.alloc)],
    ];
    for (const { start, end } of writes.slice(0, -1)) {
      const ranges: Array<[string, [number, number]]> = [
        ['all of it', [start, end]],
        ['its first bytes', [start, start + 16]],
        ['its last bytes', [end - 16, end]],
      ];
      for (const [fillName, fill] of FILLS) {
        for (const [rangeName, range] of ranges) {
          for (const [lastName, lastLayout] of lasts) {
            const name = `the write at ${start}, ${rangeName} ${fillName}; ${lastName}`;
            await writeFile(join(path, JOURNAL_FILE), lastLayout(overwritten(journal, [range], fill)));
            const error = await readDataDirState(path).then(() => new Error('read'), (e: unknown) => e as Error);
            expect(isApsaraMqDeviceError(error, 'EmulatorStateCorrupt'), `${name}: ${error.message}`).toBe(true);
            expect(error.message, name).toMatch(/the record at byte \d+ is damaged and a later write follows it/);
            for (const secret of secrets) expect(error.message, name).not.toContain(secret);
          }
        }
      }
    }
    // The header, made durable before the journal was renamed in: its damage with whole records after it.
    await writeFile(join(path, JOURNAL_FILE), overwritten(journal, [[0, 16]], Buffer.alloc));
    const error = await readDataDirState(path).then(() => new Error('read'), (e: unknown) => e as Error);
    expect(isApsaraMqDeviceError(error, 'EmulatorStateCorrupt'), error.message).toBe(true);
    expect(error.message).toContain('the record at byte 0 is damaged and whole records follow it');
  });
});

/** `journal` (version 2) as an emulator before records named their write wrote it: version 1, the bare payloads. */
function asVersion1(journal: Buffer, path: string): Buffer {
  const { header, frames } = readJournal(journal, path);
  expect(header?.version).toBe(2);
  const version1 = encodeFrame(JSON.stringify({ kind: 'apsaramq-device-emulator-journal', version: 1, snapshot: header?.snapshot }));
  return Buffer.concat([version1, ...frames.payloads.map((payload) => encodeFrame(payload))]);
}

describe('the data directory journal: a journal of version 1 (written before records named their write)', () => {
  it('reads to the same state; cut at every byte of its last record, it keeps every earlier record, with a warning', async () => {
    const { path, journal, before, after } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    const old = asVersion1(journal, path);
    await writeFile(join(path, JOURNAL_FILE), old);
    const warnings: string[] = [];
    expect(content(await readDataDirState(path, (m) => warnings.push(m)))).toEqual(after);
    expect(warnings).toEqual([]);
    const start = readFrames(old).offsets.at(-1) ?? 0;
    for (let cut = start + 1; cut < old.length; cut++) {
      await writeFile(join(path, JOURNAL_FILE), old.subarray(0, cut));
      expect(content(await readDataDirState(path, (m) => warnings.push(m))), `cut at ${cut}`).toEqual(before);
      expect(warnings.splice(0), `cut at ${cut}`).toEqual([expect.stringContaining(`the last ${cut - start} bytes of ${join(path, JOURNAL_FILE)} are not a whole record`)]);
    }
  });

  it('a byte flipped in a record with whole ones after it is EmulatorStateCorrupt (it cannot tell one write from another)', async () => {
    const { path, journal } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    const old = asVersion1(journal, path);
    const { offsets } = readFrames(old);
    const middle = offsets[Math.floor(offsets.length / 2)] ?? 0;
    const end = offsets[Math.floor(offsets.length / 2) + 1] ?? 0;
    await everyFlipCorrupt(path, old, middle, end, `the record at byte ${middle} is damaged and whole records follow it`);
  });

  it('opening it compacts it away: the next journal is version 2', async () => {
    const { path, journal, after } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    await writeFile(join(path, JOURNAL_FILE), asVersion1(journal, path));
    const kept = await keep(path);
    expect(content(kept.state())).toEqual(after);
    kept.registry.register(INSTANCE, 'GID_j@@@next');
    await kept.flush();
    await crash(kept);
    expect(readJournal(await readFile(join(path, JOURNAL_FILE)), path).header?.version).toBe(2);
    expect(content(await readDataDirState(path))).toEqual(content(kept.state()));
  });
});

/** The files of a compaction: the snapshot and journal before it, the snapshot it writes, and the state in all. */
interface Files {
  readonly oldSnapshot: Buffer;
  readonly oldJournal: Buffer;
  readonly newSnapshot: Buffer;
  readonly full: unknown;
}

describe('the data directory journal: a compaction cut short at every step', () => {
  /**
   * The files a compaction reads and writes: the old snapshot and its journal (the state before compacting), and the
   * new snapshot the compaction writes, read from a copy that compacted for real.
   */
  async function compactionFiles(): Promise<Files> {
    const path = join(await tempDir(), 'source');
    const kept = await keep(path);
    await everyChange(kept, 12);
    const full = content(kept.state());
    await crash(kept);
    const oldSnapshot = await readFile(join(path, STATE_FILE));
    const oldJournal = await readFile(join(path, JOURNAL_FILE));
    const compacted = await DataDir.open(path);
    await compacted.close(() => compacted.initial as EmulatorState);
    const newSnapshot = await readFile(join(path, STATE_FILE));
    expect(newSnapshot.equals(oldSnapshot)).toBe(false);
    return { oldSnapshot, oldJournal, newSnapshot, full };
  }

  it.each([
    ['the new snapshot still a temp file (cut before its rename)', (f: Files) => ({ [STATE_FILE]: f.oldSnapshot, [JOURNAL_FILE]: f.oldJournal, [`${STATE_FILE}.0123456789abcdef.tmp`]: f.newSnapshot }), false],
    ['the new snapshot half written as a temp file', (f: Files) => ({ [STATE_FILE]: f.oldSnapshot, [JOURNAL_FILE]: f.oldJournal, [`${STATE_FILE}.0123456789abcdef.tmp`]: f.newSnapshot.subarray(0, 100) }), false],
    ['the new snapshot renamed in, the old journal still there', (f: Files) => ({ [STATE_FILE]: f.newSnapshot, [JOURNAL_FILE]: f.oldJournal }), true],
    ['the new snapshot renamed in, the old journal cut short', (f: Files) => ({ [STATE_FILE]: f.newSnapshot, [JOURNAL_FILE]: f.oldJournal.subarray(0, f.oldJournal.length - 7) }), true],
    ['the old journal removed', (f: Files) => ({ [STATE_FILE]: f.newSnapshot }), false],
    ['a new journal still a temp file', (f: Files) => ({ [STATE_FILE]: f.newSnapshot, [`${JOURNAL_FILE}.0123456789abcdef.tmp`]: f.oldJournal.subarray(0, 90) }), false],
  ])('%s: loads to the same state, and opening compacts it to the snapshot alone', async (_name, layout, setAside) => {
    const files = await compactionFiles();
    const path = join(await tempDir(), 'crashed');
    await mkdir(path, { mode: 0o700 });
    for (const [name, bytes] of Object.entries(layout(files))) await writeFile(join(path, name), bytes, { mode: 0o600 });
    const warnings: string[] = [];
    const kept = await keep(path, { warnings });
    expect(content(kept.dir.initial)).toEqual(files.full);
    expect(warnings).toEqual(setAside ? [expect.stringContaining('follows another state.json than the one there')] : []);
    // Temp files gone, the journal compacted away.
    expect((await readdir(path)).sort()).toEqual(['emulator.lock', STATE_FILE]);
    await kept.dir.close(kept.state);
    expect(content(await readDataDirState(path))).toEqual(files.full);
  });
});

describe('the data directory journal: the lock', () => {
  it('once the lock is lost, a commit is EmulatorStateBusy and nothing more is written', async () => {
    const path = join(await tempDir(), 'state');
    let lost!: () => void;
    const gone = new Promise<void>((resolve) => (lost = resolve));
    const dir = await DataDir.open(path, { staleMs: 2_000, onLost: () => lost() });
    onTestFinished(() => dir.close());
    const registry = new CredentialRegistry({ reRegister: 'rotate', credentialQuota: Number.POSITIVE_INFINITY, now: Date.now });
    const state = (): EmulatorState => ({ instanceId: INSTANCE, credentials: registry.all() });
    await dir.compact(state);
    registry.onChange((change) => dir.record(change));
    registry.register(INSTANCE, 'GID_j@@@kept');
    await dir.commit(state);
    await rm(join(path, 'emulator.lock'), { recursive: true, force: true });
    await gone;
    const before = await readFile(join(path, JOURNAL_FILE));
    registry.register(INSTANCE, 'GID_j@@@lost');
    const error = await dir.commit(state).then(() => new Error('committed'), (e: unknown) => e as Error);
    expect(isApsaraMqDeviceError(error, 'EmulatorStateBusy')).toBe(true);
    // Closing does not compact into a directory that may be another process's now.
    await dir.close(state);
    expect(await readFile(join(path, JOURNAL_FILE))).toEqual(before);
  });
});
