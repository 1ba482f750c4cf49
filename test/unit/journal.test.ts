import { execFileSync } from 'node:child_process';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { FileCredentialStore, RegistrationJournal } from '../../src/provisioner/index.js';
import { JOURNAL_DIR_NAME } from '../../src/provisioner/journal.js';
import { tempDir } from '../helpers/cli.js';

const CLIENT = 'GID_test@@@dev-1';
const POSIX = process.platform !== 'win32';

describe('RegistrationJournal', () => {
  it('records, reports and clears an entry per ClientId', async () => {
    const journal = new RegistrationJournal(join(await tempDir(), 'j'));
    expect(await journal.has(CLIENT)).toBe(false);
    await journal.record(CLIENT);
    expect(await journal.has(CLIENT)).toBe(true);
    expect(await journal.has('GID_test@@@dev-2')).toBe(false);
    expect(JSON.parse(await readFile(join(journal.dir, `${CLIENT}.register`), 'utf8'))).toMatchObject({ clientId: CLIENT, pid: process.pid });
    await journal.record(CLIENT); // recording again (a reconciled Register) is fine
    await journal.clear(CLIENT);
    expect(await journal.has(CLIENT)).toBe(false);
    await journal.clear(CLIENT); // nothing to clear is not an error
    expect(await readdir(journal.dir)).toEqual([]);
  });

  it.skipIf(!POSIX)('keeps its directory 0700 and its entries 0600', async () => {
    const journal = new RegistrationJournal(join(await tempDir(), 'a', 'b'));
    await journal.record(CLIENT);
    expect((await stat(journal.dir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(journal.dir, `${CLIENT}.register`))).mode & 0o777).toBe(0o600);
  });

  it('lives in the instance directory of a file store, where the store never reads it as a credential', async () => {
    const root = await tempDir();
    const journal = RegistrationJournal.forStore(root, 'mqtt-cn-test');
    expect(journal.dir).toBe(join(root, 'mqtt-cn-test', JOURNAL_DIR_NAME));
    await journal.record(CLIENT);
    expect(await new FileCredentialStore(root).load('mqtt-cn-test', CLIENT)).toBeUndefined();
  });

  it('refuses ClientIds that could escape its directory, before any I/O', async () => {
    const journal = new RegistrationJournal(join(await tempDir(), 'j'));
    await expect(journal.record('../../etc/passwd')).rejects.toMatchObject({ code: 'InvalidClientId' });
    await expect(journal.has('GID_test@@@../x')).rejects.toMatchObject({ code: 'InvalidClientId' });
    expect(() => new RegistrationJournal('')).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
  });

  it('reports a journal path it cannot write as StoreIOError', async () => {
    const root = await tempDir();
    await writeFile(join(root, 'file'), 'not a directory');
    const journal = new RegistrationJournal(join(root, 'file', 'j'));
    await expect(journal.record(CLIENT)).rejects.toMatchObject({ code: 'StoreIOError' });
  });

  it('says when a Register was sent and until when it could land', async () => {
    const journal = new RegistrationJournal(join(await tempDir(), 'j'));
    const before = Date.now();
    await journal.record(CLIENT, 5_000);
    const after = Date.now();
    const entry = await journal.entry(CLIENT);
    // `at` is stored as an ISO date: whole milliseconds, between the two readings of the clock.
    expect(entry?.at).toBeGreaterThanOrEqual(before);
    expect(entry?.at).toBeLessThanOrEqual(after);
    expect(entry?.settledAt).toBe((entry?.at ?? 0) + 5_000);
    expect(await journal.entry('GID_test@@@dev-2')).toBeUndefined();
  });

  it('keeps the window of an entry read in the millisecond it was written', async () => {
    const journal = new RegistrationJournal(join(await tempDir(), 'j'));
    // The clock does not move: record() and entry() read the same millisecond, as they do on a fast disk.
    vi.useFakeTimers({ toFake: ['Date'], now: Date.parse('2030-01-02T03:04:05.678Z') });
    onTestFinished(() => {
      vi.useRealTimers();
    });
    await journal.record(CLIENT, 5_000);
    expect(await journal.entry(CLIENT)).toEqual({ at: Date.parse('2030-01-02T03:04:05.678Z'), settledAt: Date.parse('2030-01-02T03:04:10.678Z') });
  });

  it('gives a window only with a sending time it can read', async () => {
    const journal = new RegistrationJournal(join(await tempDir(), 'j'));
    await journal.record(CLIENT);
    const file = join(journal.dir, `${CLIENT}.register`);
    await writeFile(file, '{"at": "not a date", "settledAt": 1}', { mode: 0o600 });
    const before = Date.now();
    const unread = await journal.entry(CLIENT);
    expect(unread?.at).toBeGreaterThanOrEqual(before);
    expect(unread).not.toHaveProperty('settledAt');
    await writeFile(file, '{"at": "2030-01-02T03:04:05.678Z"}', { mode: 0o600 }); // no window: an older format
    expect(await journal.entry(CLIENT)).toEqual({ at: Date.parse('2030-01-02T03:04:05.678Z') });
  });

  it('an entry it cannot read counts as sent now, with no window of its own (the reader waits its own)', async () => {
    const journal = new RegistrationJournal(join(await tempDir(), 'j'));
    await journal.record(CLIENT);
    await writeFile(join(journal.dir, `${CLIENT}.register`), '{"clientId": "GID_te', { mode: 0o600 });
    const before = Date.now();
    const entry = await journal.entry(CLIENT);
    expect(entry?.at).toBeGreaterThanOrEqual(before);
    expect(entry).not.toHaveProperty('settledAt');
  });

  it.skipIf(!POSIX)('a FIFO in place of an entry is refused at once, for reading and for writing', async () => {
    const journal = new RegistrationJournal(join(await tempDir(), 'j'));
    await journal.record('GID_test@@@dev-2'); // makes the directory
    execFileSync('mkfifo', ['-m', '600', join(journal.dir, `${CLIENT}.register`)]);
    await expect(journal.entry(CLIENT)).rejects.toMatchObject({ code: 'StoreCorrupt' });
    // O_NONBLOCK: opening a FIFO without a reader for writing fails (ENXIO) instead of waiting for one.
    await expect(journal.record(CLIENT)).rejects.toMatchObject({ code: 'StoreIOError' });
  });
});
