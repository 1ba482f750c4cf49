import { type ChildProcess, type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { onTestFinished } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import type { CliIo } from '../../src/cli/io.js';

/** What a CLI run printed and returned. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Run the CLI in-process with captured output and the given environment (never the developer's own).
 * `interrupt` resolves the run's "Ctrl+C" promise, for long-running commands.
 */
export async function cli(args: string[], env: NodeJS.ProcessEnv = {}, interrupt?: Promise<void>, stdin?: string): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: (t) => {
      stdout += t;
    },
    stderr: (t) => {
      stderr += t;
    },
    env,
    interrupted: () => interrupt ?? new Promise<void>(() => {}),
    ...(stdin === undefined ? {} : { stdin: async () => stdin, stdinStream: () => Readable.from([stdin]) }),
  };
  const code = await runCli(args, io);
  return { code, stdout, stderr };
}

/** Path of the built CLI (npm test builds before running vitest). */
export const CLI_BIN = resolve(import.meta.dirname, '../../dist/cli/bin.js');

/** What a run of the built CLI in its own process printed, and how it exited. */
export interface BuiltCliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Run the built CLI in a child process whose environment is PATH and `env` only (never the developer's own); resolves
 * when it exits. `shellPrefix` (e.g. `ulimit -n 200 &&`) runs it through `sh` after that prefix.
 */
export function runBuiltCli(args: string[], options: { env?: NodeJS.ProcessEnv; shellPrefix?: string } = {}): Promise<BuiltCliRun> {
  const { env = {}, shellPrefix = '' } = options;
  const command = shellPrefix ? 'sh' : process.execPath;
  const argv = shellPrefix ? ['-c', `${shellPrefix} exec "${process.execPath}" "${CLI_BIN}" ${args.map((a) => `'${a}'`).join(' ')}`] : [CLI_BIN, ...args];
  const child = spawn(command, argv, { env: { PATH: process.env['PATH'], ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

/** A temporary directory removed when the calling test finishes. */
export async function tempDir(prefix = 'apsaramq-device-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  onTestFinished(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

/** A CLI child process whose first stdout line has been read; `stop` sends SIGTERM and waits for the exit code. */
export interface CliChild {
  child: ChildProcessWithoutNullStreams;
  firstLine: string;
  stderr(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Spawn the built CLI and wait for its first line on stdout (e.g. `emulator --json`). */
export async function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliChild> {
  const child = spawn(process.execPath, [CLI_BIN, ...args], { env: { PATH: process.env['PATH'], ...env }, stdio: 'pipe' });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const lines = createInterface({ input: child.stdout });
  const firstLine = await new Promise<string>((resolveLine, reject) => {
    lines.once('line', resolveLine);
    void exited.then((code) => reject(new Error(`CLI exited with ${code} before printing: ${stderr}`)));
  });
  let stopped = false;
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    if (!stopped && child.exitCode === null) {
      stopped = true;
      child.kill(signal);
    }
    return exited;
  };
  onTestFinished(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
  });
  return { child, firstLine, stderr: () => stderr, stop };
}

/** A run of the built CLI in its own process, watched as it goes. */
export interface StartedCli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when stderr first matches. */
  waitFor(pattern: RegExp): Promise<RegExpExecArray>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Start the built CLI in its own process (environment: PATH and `env` only) and watch its output: `waitFor` resolves
 * when stderr first matches, an event rather than a poll. Killed when the test finishes.
 */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}, options: { detached?: boolean } = {}): StartedCli {
  const child = spawn(process.execPath, [CLI_BIN, ...args], { env: { PATH: process.env['PATH'], ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: options.detached ?? false });
  let stdout = '';
  let stderr = '';
  const waiters: Array<{ pattern: RegExp; resolve: (m: RegExpExecArray) => void }> = [];
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
    for (const w of [...waiters]) {
      const match = w.pattern.exec(stderr);
      if (match) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(match);
      }
    }
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  onTestFinished(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exit;
  });
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    exit,
    waitFor: (pattern) =>
      new Promise((resolve, reject) => {
        const match = pattern.exec(stderr);
        if (match) resolve(match);
        else {
          waiters.push({ pattern, resolve });
          void exit.then(() => reject(new Error(`exited before stderr matched ${pattern}: ${stderr}`)));
        }
      }),
  };
}
