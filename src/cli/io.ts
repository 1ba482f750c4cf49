import { randomBytes } from 'node:crypto';
import { constants, fstatSync } from 'node:fs';
import { access, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { ApsaraMqDeviceError, LOCAL_ERROR_CATALOG, ValidationError } from '../errors.js';
import { type Logger, silentLogger } from '../util/logger.js';

/** What a CLI command talks to; the real process, or a capture in tests. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  env: NodeJS.ProcessEnv;
  /** Is stderr a terminal (so progress can be a live bar rather than a line every few seconds)? */
  stderrIsTTY?: boolean;
  /** The terminal's width, when stderr is one. */
  columns?: () => number | undefined;
  /** Resolves when the user asks the command to stop: with the signal (SIGINT, SIGTERM), when known. */
  interrupted(): Promise<NodeJS.Signals | void>;
  /** All of standard input, for flags that read from it (`--token -`). */
  stdin?: () => Promise<string>;
  /** Standard input as a stream, for a command that reads it as it comes (`gateway`: one message per line). */
  stdinStream?: () => NodeJS.ReadableStream;
  /** The exit code a command chose without failing (e.g. `status` when a device is offline); 0 when unset. */
  exitCode?: number;
  /**
   * Resolves when stdout's reader is gone (`… | head -1` has read what it wanted: EPIPE). What is written to stdout
   * afterwards is dropped; a command that would print forever (`connect --subscribe`) stops, quietly.
   */
  stdoutClosed?: () => Promise<void>;
  /**
   * The permission bits of stdout when it is a regular file (`register … > dev-1.json`), so that a command printing
   * a secret can say the file is readable by others; `undefined` for a terminal or a pipe.
   */
  stdoutFileMode?: () => number | undefined;
  /**
   * Calls `listener` on each SIGHUP (a long-running command re-reads its files: `gateway --devices`); returns what
   * stops listening. Without it, SIGHUP is not listened to.
   */
  onHangup?: (listener: () => void) => () => void;
}

/** The real process. */
export function processIo(): CliIo {
  const stdoutGone = closedOnEpipe(process.stdout);
  const stderrGone = closedOnEpipe(process.stderr);
  return {
    stdout: (t) => void (stdoutGone.closed || process.stdout.write(t)),
    stderr: (t) => void (stderrGone.closed || process.stderr.write(t)),
    stdoutClosed: () => stdoutGone.promise,
    stdoutFileMode: () => {
      try {
        const info = fstatSync(1);
        return info.isFile() ? info.mode & 0o777 : undefined;
      } catch {
        return undefined;
      }
    },
    env: process.env,
    stderrIsTTY: process.stderr.isTTY === true,
    columns: () => process.stderr.columns,
    stdin: async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks).toString('utf8');
    },
    stdinStream: () => process.stdin,
    interrupted: () => firstSignal(),
    onHangup: (listener) => {
      process.on('SIGHUP', listener);
      return () => void process.off('SIGHUP', listener);
    },
  };
}

/**
 * Watch a standard stream for EPIPE (its reader exited): from then on it counts as closed, and the error, which
 * would otherwise end the process with a stack trace, is the end of the output, not a failure.
 */
function closedOnEpipe(stream: NodeJS.WriteStream): { readonly closed: boolean; readonly promise: Promise<void> } {
  let resolve: () => void = () => {};
  const state = { closed: false, promise: new Promise<void>((r) => (resolve = r)) };
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    state.closed = true;
    resolve();
  });
  return state;
}

let signalled: Promise<NodeJS.Signals> | undefined;

/**
 * The first SIGINT or SIGTERM the process gets. The listeners stay for the life of the process (the CLI's), so that
 * a library that re-raises a signal when it believes nobody else listens (signal-exit, under proper-lockfile) does
 * not kill the process while the command is winding down; a second signal exits at once.
 */
function firstSignal(): Promise<NodeJS.Signals> {
  signalled ??= new Promise<NodeJS.Signals>((resolve) => {
    let first: NodeJS.Signals | undefined;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (first === undefined) {
        first = signal;
        resolve(signal);
      } else {
        process.exit(interruptedExitCode(signal));
      }
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  return signalled;
}

/** The exit code of a command stopped by a signal: 128 + its number (130 for SIGINT, 143 for SIGTERM). */
export function interruptedExitCode(signal: NodeJS.Signals | void): number {
  return signal === 'SIGTERM' ? 143 : 130;
}

/**
 * A long command stopped by the user: it has printed what was done and how to resume; the process exits with
 * {@link interruptedExitCode}. Not an error line: the summary already said it all.
 */
export class Interrupted extends Error {
  override readonly name = 'Interrupted';
  readonly exitCode: number;
  constructor(signal: NodeJS.Signals | void) {
    super(`interrupted by ${signal ?? 'SIGINT'}`);
    this.exitCode = interruptedExitCode(signal);
  }
}

/** Codes of {@link UsageError}. */
export type UsageErrorCode = 'InvalidOption' | 'MissingOption' | 'ConflictingOptions' | 'UnknownCommand';

/**
 * A command line that can never work (exit code 2), said in the user's terms: the flags, not the library's option
 * names. Printed as `<code>: <message>`.
 */
export class UsageError extends ApsaraMqDeviceError {
  declare readonly code: UsageErrorCode;
  constructor(message: string, code: UsageErrorCode = 'InvalidOption') {
    const { retryable, remedy } = LOCAL_ERROR_CATALOG[code];
    super(code, message, { retryable, remedy });
    this.name = 'UsageError';
  }
}

/** Refuse two flags given together that cannot both apply. */
export function conflicting(a: string, b: string, why = ''): UsageError {
  return new UsageError(`${a} and ${b} cannot be used together${why ? `: ${why}` : ''}`, 'ConflictingOptions');
}

/** Commander argument parser for a whole number in a range. */
export function intArg(name: string, min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    if (!/^-?\d+$/.test(value.trim())) throw new InvalidArgumentError(`${name} must be a whole number.`);
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`${name} must be from ${min} to ${max}.`);
    return n;
  };
}

/** Commander argument parser for one of a few words. */
export function choiceArg<T extends string>(name: string, choices: readonly T[]): (value: string) => T {
  return (value: string) => {
    if (!(choices as readonly string[]).includes(value)) throw new InvalidArgumentError(`${name} must be one of ${choices.join(', ')}.`);
    return value as T;
  };
}

/** A logger writing to stderr when --verbose is on. */
export function cliLogger(io: CliIo, verbose: boolean): Logger {
  if (!verbose) return silentLogger;
  const line = (level: string) => (message: string, fields?: Record<string, unknown>) =>
    io.stderr(`${level} ${message}${fields && Object.keys(fields).length ? ` ${JSON.stringify(fields)}` : ''}\n`);
  return { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
}

/**
 * An output file must be one that can be written: not a directory (nor a path ending in /), in a directory that
 * exists and is writable. Checked before the work whose result it keeps: a typo must not lose that result.
 * @throws UsageError `InvalidOption` naming the flag.
 */
export async function checkOutputFile(flag: string, file: string, example = 'out.json'): Promise<void> {
  const isDirectory = /[/\\]$/.test(file) || (await stat(file).then((s) => s.isDirectory(), () => false));
  if (isDirectory) throw new UsageError(`${flag} ${file} is a directory: give the file to write, e.g. ${join(file, example)}`);
  const dir = dirname(resolve(file));
  try {
    await access(dir, constants.W_OK);
  } catch (error) {
    const why = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : 'is not writable';
    throw new UsageError(`${flag} ${file}: the directory ${dir} ${why}`);
  }
}

/**
 * Write a file that holds a secret: created with mode 600 next to `file`, then renamed over it, so the file is whole
 * and never readable by others, also when it replaces one that was.
 */
export async function writePrivateFile(file: string, text: string): Promise<void> {
  const temp = join(dirname(resolve(file)), `.${basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(temp, text, { mode: 0o600, flag: 'wx' });
    await rename(temp, file);
  } catch (error) {
    await rm(temp, { force: true }).catch(() => undefined);
    throw error;
  }
}

/**
 * A `--start-at` for `--help` examples that works when copied: the next whole hour at least ten minutes from now
 * (a start time must not be past, nor more than 7 days ahead).
 */
export function exampleStartAt(now = Date.now()): string {
  const hour = 3_600_000;
  return new Date(Math.ceil((now + 10 * 60_000) / hour) * hour).toISOString().replace('.000Z', 'Z');
}

/** JSON on one line, newline-terminated. */
export function jsonLine(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}

/** The `--ca FILE` of a command: its bytes, or undefined without the flag; a file that cannot be read is InvalidOption. */
export async function readCaFlag(file: string | undefined): Promise<Buffer | undefined> {
  if (file === undefined) return undefined;
  return readFile(file).catch(() => {
    throw new ValidationError('InvalidOption', `Cannot read --ca file ${file}`);
  });
}
