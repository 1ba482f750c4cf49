/**
 * The data directory's lock (issue 24): proper-lockfile's lock, taken over only when provably stale, and every
 * take-over under a second lock. Before, a stale lock was taken over by read, unlink, open('wx'), so that one
 * starter could unlink another's fresh lock: two emulators ran on one directory in 13 of 25 rounds. Real processes
 * of the built package (`npm test` builds dist/ first), started together and killed with SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { watch } from 'node:fs';
import { mkdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it, onTestFinished } from 'vitest';
import { LOCK_FILE, LOCK_STALE_MS, takeLock } from '../../src/emulator/data-dir-lock.js';
import { startEmulator, type Emulator } from '../../src/emulator/index.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { OpenApiClient } from '../../src/provisioner/index.js';
import { tempDir } from '../helpers/cli.js';
import { REPO_ROOT } from '../helpers/package.js';

/** What a starter process says: it won the directory, or the error it got. */
type Verdict = { won: true; pid: number } | { won: false; code: string; message: string };

/**
 * A process of the built package that loads the emulator, waits for "go" on stdin (so that several start at the same
 * moment), starts one on `dir`, prints its verdict as one JSON line, and (if it won) holds the directory until its
 * stdin ends (HOLD=forever: until it is killed).
 */
const STARTER = `
  import { createInterface } from 'node:readline';
  const { startEmulator } = await import(${JSON.stringify(join(REPO_ROOT, 'dist/emulator/index.js'))});
  const lines = createInterface({ input: process.stdin });
  const wait = process.env.WAIT_FOR_GO === '1';
  if (wait) await new Promise((resolve) => lines.once('line', resolve));
  try {
    const e = await startEmulator({ env: {}, dataDir: process.env.DATA_DIR, mqttPort: 0, wsPort: false, apiPort: 0 });
    console.log(JSON.stringify({ won: true, pid: process.pid }));
    if (process.env.HOLD !== 'forever') lines.once('close', () => e.close().then(() => process.exit(0)));
  } catch (error) {
    console.log(JSON.stringify({ won: false, code: error.code, message: error.message }));
    process.exit(3);
  }`;

interface Starter {
  readonly child: ChildProcess;
  readonly verdict: Promise<Verdict>;
}

/** Spawn a starter on `dir` (its process is killed when the test ends). */
function starter(dir: string, waitForGo: boolean, command: { file: string; args: string[] } = { file: process.execPath, args: ['--input-type=module', '-e', STARTER] }): Starter {
  const env = { ...process.env, DATA_DIR: dir, WAIT_FOR_GO: waitForGo ? '1' : '0', STARTER, HOLD: command.file === process.execPath ? 'stdin' : 'forever' };
  const child = spawn(command.file, command.args, { env, stdio: ['pipe', 'pipe', 'inherit'] });
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const verdict = new Promise<Verdict>((resolve, reject) => {
    lines.once('line', (line) => resolve(JSON.parse(line) as Verdict));
    child.once('exit', (code, signal) => reject(new Error(`starter exited (${code ?? signal}) without a verdict`)));
  });
  return { child, verdict };
}

/** Start `count` starters on `dir` at the same moment; resolves with their verdicts. */
async function race(dir: string, count: number): Promise<{ verdicts: Verdict[]; starters: Starter[] }> {
  const starters = Array.from({ length: count }, () => starter(dir, true));
  // Every one has loaded the package and waits on its stdin; "go" to all at once.
  await Promise.all(starters.map(({ child }) => once(child, 'spawn')));
  for (const { child } of starters) child.stdin?.write('go\n');
  return { verdicts: await Promise.all(starters.map((s) => s.verdict)), starters };
}

/** A process that took the lock of `dir`, then was killed with SIGKILL (and reaped): its lock is left behind. */
async function killedOwner(dir: string): Promise<number> {
  const owner = starter(dir, false);
  const verdict = await owner.verdict;
  if (!verdict.won) throw new Error(`the owner did not win: ${verdict.message}`);
  owner.child.kill('SIGKILL');
  await once(owner.child, 'exit');
  return verdict.pid;
}

/** Stop the winner of a race and wait for it to exit; the losers have exited already. */
async function stop(winner: Starter): Promise<void> {
  winner.child.stdin?.end();
  const [code] = (await once(winner.child, 'exit')) as [number | null];
  expect(code).toBe(0);
}

async function startHere(dir: string): Promise<Emulator> {
  const e = await startEmulator({ env: {}, dataDir: dir, wsPort: false });
  onTestFinished(() => e.close());
  return e;
}

async function startFailure(dir: string): Promise<Error> {
  const error = await startEmulator({ env: {}, dataDir: dir, wsPort: false }).then(
    async (e) => {
      await e.close();
      throw new Error('expected startEmulator to fail');
    },
    (e: unknown) => e as Error,
  );
  return error;
}

function outcome(verdicts: readonly Verdict[]): { winners: number; busy: number; other: string[] } {
  return {
    winners: verdicts.filter((v) => v.won).length,
    busy: verdicts.filter((v) => !v.won && v.code === 'EmulatorStateBusy').length,
    other: verdicts.flatMap((v) => (!v.won && v.code !== 'EmulatorStateBusy' ? [`${v.code}: ${v.message}`] : [])),
  };
}

describe('the data directory lock', () => {
  it('racing starters on a new directory: exactly one wins, the others are EmulatorStateBusy', async () => {
    const dir = join(await tempDir(), 'state');
    const { verdicts, starters } = await race(dir, 6);
    expect(outcome(verdicts)).toEqual({ winners: 1, busy: 5, other: [] });
    const winner = starters[verdicts.findIndex((v) => v.won)] as Starter;
    for (const v of verdicts) if (!v.won) expect(v.message).toContain(`in use by process ${(verdicts.find((w) => w.won) as { pid: number }).pid}`);
    await stop(winner);
  }, 60_000);

  it('racing starters on a stale lock (its owner SIGKILLed): exactly one takes it over', async () => {
    const dir = join(await tempDir(), 'state');
    for (let round = 0; round < 3; round++) {
      await killedOwner(dir);
      const { verdicts, starters } = await race(dir, 5);
      expect(outcome(verdicts), `round ${round}`).toEqual({ winners: 1, busy: 4, other: [] });
      await stop(starters[verdicts.findIndex((v) => v.won)] as Starter);
    }
  }, 120_000);

  it('racing starters in one process on a stale lock: exactly one takes it over', async () => {
    // The interleaving that let two starters win before: each judged the dead owner's lock stale, and the later one
    // removed the lock the earlier one had just made. In one process the starters' file operations interleave at
    // every await, which makes that interleaving likely rather than rare.
    const dir = join(await tempDir(), 'state');
    for (let round = 0; round < 10; round++) {
      await killedOwner(dir);
      const results = await Promise.allSettled(Array.from({ length: 6 }, () => startEmulator({ env: {}, dataDir: dir, wsPort: false })));
      const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
      await Promise.all(won.map((e) => e.close()));
      expect(won, `round ${round}`).toHaveLength(1);
      expect(refused.every((error) => isApsaraMqDeviceError(error, 'EmulatorStateBusy')), refused.map((e) => e.message).join('; ')).toBe(true);
    }
  }, 60_000);

  it("a SIGKILLed owner's lock is taken over at once, and the state is there", async () => {
    const dir = join(await tempDir(), 'state');
    const first = await startHere(dir);
    const instanceId = first.instanceId;
    await first.close();
    const dead = await killedOwner(dir);
    expect(await readFile(join(dir, LOCK_FILE, 'owner'), 'utf8')).toContain(`"pid":${dead}`);
    const second = await startHere(dir);
    expect(second.instanceId).toBe(instanceId);
  }, 60_000);

  it.runIf(process.platform === 'linux')('an owner killed but not yet reaped (a zombie) holds nothing: the restart right after kill -9 takes over', async () => {
    const dir = join(await tempDir(), 'state');
    // sh starts the owner, then becomes `sleep`, which never reaps it: killed, the owner stays a zombie. Only the
    // owner holds our end of the pipe (sleep's stdout is /dev/null), so the pipe closes when it dies.
    const script = `${JSON.stringify(process.execPath)} --input-type=module -e "$STARTER" & exec sleep 120 > /dev/null`;
    const parent = starter(dir, false, { file: '/bin/sh', args: ['-c', script] });
    const verdict = await parent.verdict;
    if (!verdict.won) throw new Error(verdict.message);
    process.kill(verdict.pid, 'SIGKILL');
    await once(parent.child.stdout as NodeJS.ReadableStream, 'end');
    // The pipe closes while the kernel is still tearing the process down (its files are closed before it becomes a
    // zombie): a moment later it is one. No event tells of that for a process that is not our child (nothing can wait
    // for it), so /proc is read until it says so, a few milliseconds at most.
    const stateOf = async () => (await readFile(`/proc/${verdict.pid}/stat`, 'utf8')).split(') ')[1]?.[0];
    let state = await stateOf();
    for (let tries = 0; state !== 'Z' && tries < 400; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      state = await stateOf();
    }
    expect(state, 'the owner is a zombie').toBe('Z');
    const e = await startHere(dir);
    expect(e.dataDir).toBe(dir);
  }, 60_000);

  it('a live owner keeps its lock however old its mtime (a stalled process is not robbed); a lock without an owner is taken over only once stale', async () => {
    const dir = join(await tempDir(), 'state');
    const live = starter(dir, false);
    const verdict = await live.verdict;
    if (!verdict.won) throw new Error(verdict.message);
    const old = new Date(Date.now() - 10 * LOCK_STALE_MS);
    await utimes(join(dir, LOCK_FILE), old, old);
    const busy = await startFailure(dir);
    expect(isApsaraMqDeviceError(busy, 'EmulatorStateBusy')).toBe(true);
    expect(busy.message).toContain(`in use by process ${verdict.pid}`);
    live.child.stdin?.end();
    await once(live.child, 'exit');

    // A starter killed between making the lock and writing its owner: fresh, it is someone's; stale, nobody's.
    const ownerless = join(await tempDir(), 'ownerless');
    await mkdir(join(ownerless, LOCK_FILE), { recursive: true, mode: 0o700 });
    const fresh = await startFailure(ownerless);
    expect(isApsaraMqDeviceError(fresh, 'EmulatorStateBusy')).toBe(true);
    expect(fresh.message).toContain('in use by another process');
    await utimes(join(ownerless, LOCK_FILE), old, old);
    await startHere(ownerless);
  }, 60_000);

  it("an earlier version's lock file naming a process on this host is judged by that process", async () => {
    const dir = join(await tempDir(), 'state');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(join(dir, LOCK_FILE), `${process.ppid}\n`, { mode: 0o600 });
    const busy = await startFailure(dir);
    expect(busy.message).toContain(`in use by process ${process.ppid}`);
  });

  // proper-lockfile's smallest stale time: its refresh comes after half of it. Before the fix, writing the owner file
  // changed the lock's mtime, and the first refresh declared the lock lost: every emulator on a data directory lost
  // its lock 5 s after it started, and every Register after that answered InternalError.
  const STALE_MS = 2_000;

  it('a held lock stays held across its refreshes (the owner file inside does not make it look taken over)', async () => {
    const dir = await tempDir();
    // Settles on the first refresh (proper-lockfile sets the lock's mtime: a change of `emulator.lock` in `dir`), or
    // on the loss it would report instead.
    let settle!: (verdict: string) => void;
    const verdict = new Promise<string>((resolve) => (settle = resolve));
    const held = await takeLock(dir, { staleMs: STALE_MS, onLost: (reason) => settle(`lost: ${reason.message}`) });
    onTestFinished(() => held.release());
    const watcher = watch(dir, (_event, name) => name === LOCK_FILE && settle('refreshed'));
    onTestFinished(() => watcher.close());
    expect(await verdict).toBe('refreshed');
    expect(held.compromised()).toBe(false);
  });

  it('a lock removed while held is reported once, and marked lost', async () => {
    const dir = await tempDir();
    const held = await takeLock(dir, { staleMs: STALE_MS, onLost: (reason) => lost(reason) });
    let lost!: (reason: Error) => void;
    const reported = new Promise<Error>((resolve) => (lost = resolve));
    await rm(join(dir, LOCK_FILE), { recursive: true, force: true });
    expect((await reported as NodeJS.ErrnoException).code).toBe('ECOMPROMISED');
    expect(held.compromised()).toBe(true);
    await held.release();
  });

  it('a failure of the emulator itself (its state cannot be saved) answers InternalError and is logged, once', async () => {
    const dir = join(await tempDir(), 'state');
    const errors: string[] = [];
    const e = await startEmulator({ env: {}, dataDir: dir, wsPort: false, logger: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: (m) => errors.push(m) } });
    onTestFinished(() => e.close());
    const client = new OpenApiClient({ endpoint: e.apiEndpoint, env: { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret }, retry: false });
    await client.registerDeviceCredential(e.instanceId, 'GID_demo@@@kept');
    // The directory gone (as root, a permission would not stop the write): the next save cannot open its temp file.
    await rm(dir, { recursive: true, force: true });
    for (const device of ['GID_demo@@@lost-1', 'GID_demo@@@lost-2']) {
      const failure = await client.registerDeviceCredential(e.instanceId, device).then(() => undefined, (error: unknown) => error);
      expect(isApsaraMqDeviceError(failure, 'InternalError')).toBe(true);
    }
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^OpenAPI call answered InternalError \(a failure of the emulator, said once\): .*state/);
  });
});
