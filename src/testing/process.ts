import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import { redact } from '../credential.js';
import { ApsaraMqDeviceError, LOCAL_ERROR_CATALOG, ValidationError } from '../errors.js';

/** Options of {@link startEmulatorProcess}. */
export interface EmulatorProcessOptions {
  /**
   * More flags of `apsaramq-device emulator` (see its `--help`), e.g. `['--kick-on-revoke']` or
   * `['--fault-rate', '0.1']`. Ports default to free ones and the state to memory (`--ephemeral`).
   */
  args?: readonly string[];
  /** The emulated instance id. @default a generated `mqtt-test-<hex>` */
  instanceId?: string;
  /** Time allowed for the process to print its ready line. @default 15000 */
  startTimeoutMs?: number;
}

/** An emulator running in its own process (the `apsaramq-device emulator` command). */
export interface EmulatorProcess {
  readonly mqttUrl: string;
  readonly wsUrl: string | undefined;
  readonly apiEndpoint: string;
  readonly instanceId: string;
  readonly accessKeyId: string;
  readonly accessKeySecret: string;
  readonly pid: number;
  /** SIGTERM, then wait for the exit (SIGKILL after 5 s); resolves with the exit code. Idempotent. */
  stop(): Promise<number | null>;
}

/** The executable of this package, next to this module in dist/ (or built from the sources under a test runner). */
function cliScript(): string {
  const here = fileURLToPath(import.meta.url);
  return here.endsWith('.ts') ? fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url)) : fileURLToPath(new URL('../cli/bin.js', import.meta.url));
}

/**
 * Start `apsaramq-device emulator --json` in a child process, on free ports with generated account keys, and resolve
 * once it printed its ready line. For suites whose tests run in another process (another Node version, another
 * language: they can also run the command themselves, see the README), or that want the broker off their event loop.
 *
 * The ready line is one JSON object on stdout: `{"mqttUrl", "wsUrl", "apiEndpoint", "instanceId", "accessKeyId",
 * "accessKeySecret": null, "accessKeySource": "environment"}` (the secret is not echoed because it came from the
 * environment; this function set it and returns it).
 *
 * @throws ApsaraMqDeviceError `EmulatorFailed` when the process exits or stays silent before it is ready.
 */
export function startEmulatorProcess(options: EmulatorProcessOptions = {}): Promise<EmulatorProcess> {
  const startTimeoutMs = options.startTimeoutMs ?? 15_000;
  if (!Number.isFinite(startTimeoutMs) || startTimeoutMs <= 0) throw new ValidationError('InvalidOption', `Option startTimeoutMs must be a positive number of ms, not ${String(startTimeoutMs)}`);
  const instanceId = options.instanceId ?? `mqtt-test-${randomBytes(4).toString('hex')}`;
  const accessKeyId = `LTAItest${randomBytes(8).toString('hex')}`;
  const accessKeySecret = randomBytes(20).toString('base64url');
  const args = [cliScript(), 'emulator', '--json', '--ephemeral', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', '--instance-id', instanceId, ...(options.args ?? [])];
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env['PATH'] ?? '', ALIBABA_CLOUD_ACCESS_KEY_ID: accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: accessKeySecret },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4_000);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let stopping: Promise<number | null> | undefined;
  const stop = (): Promise<number | null> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        const code = await exited;
        clearTimeout(timer);
        return code;
      }
      return child.exitCode;
    })();
    return stopping;
  };

  return new Promise<EmulatorProcess>((resolve, reject) => {
    let buffered = '';
    const fail = (why: string): void => {
      clearTimeout(timer);
      void stop();
      const { retryable, remedy } = LOCAL_ERROR_CATALOG.EmulatorFailed;
      reject(new ApsaraMqDeviceError('EmulatorFailed', `The emulator process ${why}${stderr ? `: ${stderr.trim()}` : ''}. ${remedy}`, { retryable, remedy }));
    };
    const timer = setTimeout(() => fail(`printed no ready line within ${startTimeoutMs} ms`), startTimeoutMs);
    const onExit = (code: number | null): void => fail(`exited with ${code} before it was ready`);
    child.once('exit', onExit);
    child.once('error', (error) => fail(`could not start (${error.message})`));
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString();
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      child.stdout.off('data', onData);
      child.off('exit', onExit);
      clearTimeout(timer);
      let ready: { mqttUrl: string; wsUrl?: string; apiEndpoint: string; instanceId: string; accessKeyId: string };
      try {
        ready = JSON.parse(buffered.slice(0, newline)) as typeof ready;
      } catch {
        fail(`printed something that is not its ready line (${buffered.slice(0, 200)})`);
        return;
      }
      child.stdout.resume(); // whatever it prints later must not fill the pipe
      resolve(describeProcess({ ...ready, accessKeySecret, pid: child.pid ?? -1, stop }));
    };
    child.stdout.on('data', onData);
  });
}

/** The handed-out object: the secret redacted from `util.inspect` and `JSON.stringify`. */
function describeProcess(fields: Omit<EmulatorProcess, 'wsUrl'> & { wsUrl?: string | undefined }): EmulatorProcess {
  const result: EmulatorProcess = { wsUrl: undefined, ...fields };
  const shown = (): Record<string, unknown> => {
    const { stop: _stop, ...rest } = result;
    return { ...rest, accessKeySecret: redact(result.accessKeySecret) };
  };
  Object.defineProperties(result, {
    toJSON: { value: shown, enumerable: false },
    [inspect.custom]: { value: () => `EmulatorProcess ${inspect(shown())}`, enumerable: false },
  });
  return Object.freeze(result);
}
