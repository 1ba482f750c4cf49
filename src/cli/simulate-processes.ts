/**
 * `simulate --processes <n>`: one run spread over n local processes of this CLI, each an ordinary shard
 * (`--shard k/n`) with its own embedded emulator (or the same `--endpoint`), so that no process holds more than its
 * share of sockets and the run uses more than one core. The parent starts them, holds them at a barrier until every
 * one is provisioned, sends them all the word to connect at once, shows one progress for the fleet, and merges their
 * reports. Both sides of that conversation live here: the parent ({@link runInProcesses}) and the shard process
 * ({@link shardChildHooks}), which talk over Node's IPC channel.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SimulatorError } from '../simulator/errors.js';
import type { Shard as FleetSlice } from '../simulator/options.js';
import type { SimulationProgress } from '../simulator/metrics.js';
import type { SimulationReport } from '../simulator/report-format.js';
import type { CliIo } from './io.js';
import { loadReports } from './roles.js';

/** Set in a shard process's environment by the parent: the process talks to it over IPC. */
export const SHARD_CHILD_ENV = 'APSARAMQ_DEVICE_SIMULATE_SHARD';

/** Messages of a shard process to its parent. */
type ChildMessage = { type: 'provisioned' } | { type: 'progress'; progress: SimulationProgress } | { type: 'warning'; message: string };
/** The parent's word to start connecting. */
type ParentMessage = { type: 'go' };

/** How much of a failed shard's stderr the error quotes. */
const STDERR_TAIL = 2_000;
/** A shard told to stop that has not exited after this long is killed (it is stuck; its report is lost). */
const STOP_GRACE_MS = 30_000;
/** The order of the phases, so the fleet's phase is that of its slowest shard. */
const PHASES: ReadonlyArray<SimulationProgress['phase']> = ['starting', 'provisioning', 'waiting', 'connecting', 'publishing', 'draining', 'disconnecting', 'done'];

/** What a `--processes` run needs from the command. */
export interface ProcessesOptions {
  processes: number;
  /**
   * The slice of the fleet the processes share (`--shard I/N`): they run shards (I-1)*n+1 to I*n of N*n, which make up
   * exactly slice I (shard ranges are floor-based), and the merged report is that slice's. Absent: the whole fleet.
   */
  shard?: FleetSlice;
  /** The flags for every shard process (the user's, without --processes/--report/--html/--json/--progress). */
  args: readonly string[];
  /** Arguments before `simulate` (the program's own, e.g. --verbose). */
  globalArgs?: readonly string[];
  /** With `--start-at` the shards wait for that time themselves: no barrier. */
  barrier: boolean;
  io: CliIo;
  /** The fleet's progress, summed over the shards. */
  onProgress?: (progress: SimulationProgress) => void;
  /** A shard's warning, once per distinct text. */
  onWarning: (message: string) => void;
  /** Settles when the user interrupts (SIGINT, SIGTERM): forwarded to every shard. */
  interrupted: Promise<NodeJS.Signals | void>;
}

interface Shard {
  index: number;
  /** Its `--shard` value, e.g. `2/3` (or `5/6` for the second process of `--shard 2/2 --processes 3`). */
  label: string;
  child: ChildProcess;
  reportFile: string;
  provisioned: boolean;
  exited: boolean;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: string;
  progress: SimulationProgress | undefined;
}

/** The built CLI's executable script (this module is dist/cli/simulate-processes.js; the bin is beside it). */
function cliScript(): string {
  return fileURLToPath(new URL('./bin.js', import.meta.url));
}

/**
 * Run the shards, wait for every one to exit, and merge their reports.
 * @throws SimulatorError `ShardFailed` when a shard process ends without its report (the others are stopped first).
 */
export async function runInProcesses(options: ProcessesOptions): Promise<SimulationReport> {
  const { processes, io } = options;
  const dir = await mkdtemp(join(tmpdir(), 'apsaramq-device-processes-'));
  // A second Ctrl+C exits the process at once, past the finally below: the shards' reports must not stay behind.
  const removeDir = (): void => rmSync(dir, { recursive: true, force: true });
  process.once('exit', removeDir);
  const shards: Shard[] = [];
  let interruptedBy: NodeJS.Signals | undefined;
  let failed: Shard | undefined;
  let lost = false;
  let stopping = false;
  let released = false;
  const warned = new Set<string>();
  const killTimers: NodeJS.Timeout[] = [];

  const stopAll = (signal: NodeJS.Signals): void => {
    stopping = true;
    for (const shard of shards) {
      if (shard.exited) continue;
      shard.child.kill(signal);
      const timer = setTimeout(() => {
        if (!shard.exited) shard.child.kill('SIGKILL');
      }, STOP_GRACE_MS);
      timer.unref();
      killTimers.push(timer);
    }
  };
  const release = (): void => {
    // Every shard is provisioned (or gone): all start connecting now.
    if (released || stopping || !options.barrier) return;
    if (!shards.every((s) => s.provisioned || s.exited)) return;
    released = true;
    for (const shard of shards) if (!shard.exited && shard.child.connected) shard.child.send({ type: 'go' } satisfies ParentMessage);
  };
  const fleetProgress = (): void => {
    if (!options.onProgress) return;
    const known = shards.map((s) => s.progress).filter((p): p is SimulationProgress => p !== undefined);
    if (known.length === 0) return;
    const sum = (pick: (p: SimulationProgress) => number): number => known.reduce((total, p) => total + pick(p), 0);
    const slowest = known.length < shards.length ? 0 : Math.min(...known.map((p) => PHASES.indexOf(p.phase)));
    options.onProgress({
      phase: PHASES[slowest] ?? 'starting',
      devices: sum((p) => p.devices),
      provisioned: sum((p) => p.provisioned),
      online: sum((p) => p.online),
      failedConnects: sum((p) => p.failedConnects),
      published: sum((p) => p.published),
      delivered: sum((p) => p.delivered),
      errors: sum((p) => p.errors),
      messagesPerSec: sum((p) => p.messagesPerSec),
      elapsedMs: Math.max(...known.map((p) => p.elapsedMs)),
    });
  };

  try {
    const outer = options.shard ?? { index: 1, count: 1 };
    for (let index = 1; index <= processes; index++) {
      const reportFile = join(dir, `${index}.json`);
      const label = `${(outer.index - 1) * processes + index}/${outer.count * processes}`;
      const child = spawn(
        process.execPath,
        [cliScript(), ...(options.globalArgs ?? []), 'simulate', ...options.args, '--shard', label, '--report', reportFile, '--no-progress'],
        {
          env: { ...io.env, [SHARD_CHILD_ENV]: '1' },
          stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
          // Its own process group: a Ctrl+C reaches the parent alone, which forwards it once (a shard that got it
          // twice would exit at once, without its report). A shard whose parent dies sees its IPC channel close and
          // stops by itself.
          detached: true,
        },
      );
      const shard: Shard = {
        index,
        label,
        child,
        reportFile,
        provisioned: false,
        exited: false,
        exit: new Promise((resolve) => {
          child.once('exit', (code, signal) => resolve({ code, signal }));
          // A process that could not be spawned at all never emits 'exit'.
          child.once('error', () => {
            if (child.pid === undefined) resolve({ code: null, signal: null });
          });
        }),
        stderr: '',
        progress: undefined,
      };
      shards.push(shard);
      // A shard's summary on stdout is not wanted (its report is), but the pipe must be read.
      child.stdout?.resume();
      child.stderr?.on('data', (chunk: Buffer) => {
        shard.stderr = (shard.stderr + chunk.toString()).slice(-STDERR_TAIL);
      });
      child.on('error', (error) => {
        shard.stderr = `${shard.stderr}${error.message}\n`.slice(-STDERR_TAIL);
      });
      child.on('message', (message: ChildMessage) => {
        if (message.type === 'provisioned') {
          shard.provisioned = true;
          release();
        } else if (message.type === 'progress') {
          shard.progress = message.progress;
          fleetProgress();
        } else if (message.type === 'warning') {
          if (warned.has(message.message)) return;
          warned.add(message.message);
          options.onWarning(message.message);
        }
      });
      void shard.exit.then(async ({ code }) => {
        shard.exited = true;
        if (!existsSync(shard.reportFile) && failed === undefined && !stopping) {
          failed = shard;
          stopAll('SIGTERM');
        } else if (code !== 0 && !stopping && (await lostBroker(shard.reportFile))) {
          // Its broker (its embedded emulator) is gone for good: the fleet's run has failed, the others stop now.
          lost = true;
          stopAll('SIGTERM');
        }
        release();
      });
    }
    const against = options.args.includes('--endpoint') || options.args.includes('--region') ? '' : options.args.includes('--redis') ? ', on the emulator cluster of --redis' : ', each with its own embedded emulator';
    io.stderr(`simulate: ${processes} shard processes (pids ${shards.map((s) => s.child.pid ?? '?').join(', ')})${against}\n`);
    void options.interrupted.then((signal) => {
      if (failed !== undefined) return;
      interruptedBy = signal ?? 'SIGINT';
      // Winding down n shards (and their emulators) takes a moment: say so, and how to cut it short.
      io.stderr(`simulate: stopping ${processes} shard processes (${interruptedBy}); a second signal exits at once\n`);
      stopAll(interruptedBy);
    });

    const exits = await Promise.all(shards.map((s) => s.exit));
    if (failed !== undefined) {
      const exit = exits[failed.index - 1];
      const how = exit?.signal ? `was killed by ${exit.signal}` : `exited with code ${exit?.code ?? '?'}`;
      const tail = failed.stderr.trim();
      throw new SimulatorError(
        'ShardFailed',
        `Shard ${failed.label} (pid ${failed.child.pid ?? '?'}) ${how} without writing its report${released || !options.barrier ? '' : ', before every shard was provisioned'}; the other shards were stopped${tail ? `. Its stderr ends with: ${tail}` : ''}`,
      );
    }
    const { mergeReports, readReportFile } = await loadReports('simulate');
    const present = shards.filter((s) => existsSync(s.reportFile));
    const reports = await Promise.all(present.map((s) => readReportFile(s.reportFile)));
    const report = mergeReports(reports, { sources: present.map((s) => `shard ${s.label}`), partial: interruptedBy !== undefined || lost || options.shard !== undefined });
    return report;
  } finally {
    for (const timer of killTimers) clearTimeout(timer);
    // Nothing is left running, whichever way this ended.
    for (const shard of shards) if (!shard.exited) shard.child.kill('SIGKILL');
    await Promise.all(shards.map((s) => s.exit));
    await rm(dir, { recursive: true, force: true });
    process.off('exit', removeDir);
  }
}

/** Does a shard's report say its broker was lost for good (`brokerLost`)? False for a report that cannot be read. */
async function lostBroker(file: string): Promise<boolean> {
  try {
    return (JSON.parse(await readFile(file, 'utf8')) as { brokerLost?: unknown }).brokerLost !== undefined;
  } catch {
    return false;
  }
}

/**
 * The shard process's side: progress and warnings to the parent, and the barrier before connecting. A parent that
 * goes away (its IPC channel closes) stops the run like an interrupt. `undefined` when this process is not a shard
 * of a `--processes` run.
 */
export function shardChildHooks(
  env: NodeJS.ProcessEnv,
  stop: AbortController,
): { beforeConnect: () => Promise<void>; onProgress: (p: SimulationProgress) => void; onWarning: (message: string) => void; done: () => void } | undefined {
  if (env[SHARD_CHILD_ENV] !== '1' || typeof process.send !== 'function') return undefined;
  const send = (message: ChildMessage): void => {
    if (process.connected) process.send?.(message);
  };
  const onDisconnect = (): void => stop.abort();
  process.once('disconnect', onDisconnect);
  return {
    beforeConnect: () =>
      new Promise<void>((resolve) => {
        const settle = (): void => {
          process.off('message', onMessage);
          stop.signal.removeEventListener('abort', settle);
          resolve();
        };
        const onMessage = (message: ParentMessage): void => {
          if (message.type === 'go') settle();
        };
        if (stop.signal.aborted || !process.connected) {
          resolve();
          return;
        }
        process.on('message', onMessage);
        stop.signal.addEventListener('abort', settle, { once: true });
        send({ type: 'provisioned' });
      }),
    onProgress: (progress) => send({ type: 'progress', progress }),
    onWarning: (message) => send({ type: 'warning', message }),
    // The IPC channel would keep this process alive after its run.
    done: () => {
      process.off('disconnect', onDisconnect);
      if (process.connected) process.disconnect();
    },
  };
}
