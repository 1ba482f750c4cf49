/**
 * The data directory's journal (state.journal beside the state.json snapshot): replay, a tail cut short at every byte,
 * damage in the middle, and every point at which a compaction can be cut short, on real files in temp dirs.
 */
import { chmod, copyFile, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DataDir, JOURNAL_FILE, readDataDirState, STATE_FILE, StateWriter, type EmulatorState, type StateChange } from '../../src/emulator/data-dir.js';
import { encodeFrame, readFrames } from '../../src/emulator/journal.js';
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

/** The last record of a directory's journal: its bytes, where it starts, and the state before it. */
interface LastRecord {
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
async function endingWith(op: StateChange['op'], last: (kept: Kept) => EmulatorState | void): Promise<LastRecord> {
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
  const frames = readFrames(journal);
  const secrets = kept.registry.all().map((c) => c.DeviceAccessKeySecret);
  return { path, journal, start: frames.offsets.at(-1) ?? 0, before, after, secrets };
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
  it.each(LAST)('a journal cut at every byte of its last record (%s) keeps every earlier record, with a warning', async (op, last) => {
    const { path, journal, start, before, after } = await endingWith(op, last);
    expect(content(await readDataDirState(path))).toEqual(after);
    for (let cut = start + 1; cut < journal.length; cut++) {
      await writeFile(join(path, JOURNAL_FILE), journal.subarray(0, cut));
      const warnings: string[] = [];
      expect(content(await readDataDirState(path, (m) => warnings.push(m))), `cut at ${cut} of ${journal.length}`).toEqual(before);
      expect(warnings, `cut at ${cut}`).toEqual([expect.stringContaining(`the last ${cut - start} bytes of ${join(path, JOURNAL_FILE)} are not a whole record`)]);
    }
    // Cut exactly before it: nothing torn, nothing to say.
    await writeFile(join(path, JOURNAL_FILE), journal.subarray(0, start));
    const warnings: string[] = [];
    expect(content(await readDataDirState(path, (m) => warnings.push(m)))).toEqual(before);
    expect(warnings).toEqual([]);
  });

  it('a journal cut short is cut off for good when the emulator opens it: the next changes follow the whole records', async () => {
    const { path, journal, start, before } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    await writeFile(join(path, JOURNAL_FILE), journal.subarray(0, start + 5));
    const warnings: string[] = [];
    const kept = await keep(path, { warnings });
    expect(warnings).toHaveLength(1);
    expect(content(kept.state())).toEqual(before);
    kept.registry.register(INSTANCE, 'GID_j@@@after');
    await kept.flush();
    await crash(kept);
    const again = await readDataDirState(path, (m) => warnings.push(m));
    expect(content(again)).toEqual(content(kept.state()));
    expect(warnings).toHaveLength(1);
  });

  it('zeros where the last records should be (the file grew, its data never reached the disk): a torn tail', async () => {
    const { path, journal, start, before } = await endingWith('token', (kept) => void token(kept));
    const zeroed = Buffer.concat([journal.subarray(0, start), Buffer.alloc(journal.length - start + 4096)]);
    await writeFile(join(path, JOURNAL_FILE), zeroed);
    const warnings: string[] = [];
    expect(content(await readDataDirState(path, (m) => warnings.push(m)))).toEqual(before);
    expect(warnings).toHaveLength(1);
  });

  it('a byte flipped anywhere in a record with whole ones after it is EmulatorStateCorrupt, naming no secret', async () => {
    const { path, journal, secrets } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    const { offsets } = readFrames(journal);
    const middle = offsets[Math.floor(offsets.length / 2)] ?? 0;
    const end = offsets[Math.floor(offsets.length / 2) + 1] ?? 0;
    expect(middle).toBeGreaterThan(0);
    for (let at = middle; at < end; at++) {
      const damaged = Buffer.from(journal);
      damaged[at] = (damaged[at] ?? 0) ^ 0x5a;
      await writeFile(join(path, JOURNAL_FILE), damaged);
      const error = await readDataDirState(path).then(() => new Error('read'), (e: unknown) => e as Error);
      expect(isApsaraMqDeviceError(error, 'EmulatorStateCorrupt'), `byte ${at}: ${error.message}`).toBe(true);
      expect(error.message).toContain(`the record at byte ${middle} is damaged and whole records follow it`);
      for (const secret of secrets) expect(error.message).not.toContain(secret);
    }
  });

  it('a damaged last record (its length whole) is cut off like a torn one: it cannot be told from a cut write', async () => {
    const { path, journal, before } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    const damaged = Buffer.from(journal);
    damaged[damaged.length - 3] = (damaged[damaged.length - 3] ?? 0) ^ 0x01;
    await writeFile(join(path, JOURNAL_FILE), damaged);
    const warnings: string[] = [];
    expect(content(await readDataDirState(path, (m) => warnings.push(m)))).toEqual(before);
    expect(warnings).toHaveLength(1);
  });

  it('a record with a valid CRC that is not a change, or a journal that is not one, is EmulatorStateCorrupt', async () => {
    const { path, journal } = await endingWith('credential', (kept) => void kept.registry.register(INSTANCE, 'GID_j@@@last'));
    const { offsets, payloads } = readFrames(journal);
    const header = journal.subarray(0, offsets[1]);
    const cases: Array<[string, Buffer, string]> = [
      ['an unknown change', Buffer.concat([header, encodeFrame('{"op":"drop-table"}')]), 'record 1 (byte'],
      ['a change with a field too many', Buffer.concat([header, encodeFrame(JSON.stringify({ ...JSON.parse(String(payloads[1])), extra: 1 }))]), 'fields other than'],
      ['a credential that is not one', Buffer.concat([header, encodeFrame('{"op":"credential","record":{"ClientId":"nope"}}')]), 'record.ClientId'],
      ['not JSON', Buffer.concat([header, encodeFrame('{"op":')]), 'is not JSON'],
      ['another kind of file', encodeFrame('{"kind":"something-else"}'), 'it is not an emulator journal'],
      ['a newer version', encodeFrame(JSON.stringify({ kind: 'apsaramq-device-emulator-journal', version: 2, snapshot: '0'.repeat(64) })), 'version 2 is not 1'],
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
