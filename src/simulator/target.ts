import { fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import { redact } from '../credential.js';
import type { Emulator, EmulatorOptions } from '../emulator/index.js';
import { MemoryCredentialStore } from '../provisioner/memory-store.js';
import type { ProvisionerOptions, ProvisionStrategy } from '../provisioner/provisioner.js';
import type { EmulatorProcessMessage } from './emulator-process.js';
import { SimulatorError } from './errors.js';

/** What a simulation runs against: a broker, and an OpenAPI to provision the devices' credentials. */
export interface SimulationTarget {
  /** `mqtt://host:port` or `mqtts://host:port`. */
  brokerUrl: string;
  /** How to reach the OpenAPI (endpoint or region, account keys or `env`, store); the instance is required. */
  provisioner: ProvisionerOptions;
  /** `get-first` for a real instance (never re-register a ClientId that has a credential); `register-first` for a fresh emulator. @default 'get-first' */
  strategy?: ProvisionStrategy;
  /** CA certificate(s) for an mqtts:// broker. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Verify the broker's TLS certificate. @default true */
  rejectUnauthorized?: boolean;
}

/**
 * What an emulator needs for the backend subscriber of a game day (consumer.ts), the measuring instrument: its
 * persistent session is not bounded, so a message the broker took is never dropped while it reconnects, and what
 * queued for it while it was offline (a broker restart drops it like every client, and the devices may be back and
 * publishing before it is) comes back at once rather than at the cloud's offline pace: a first batch 5 to 10 s after
 * its reconnect, then 30 every 5 s (`offlineDelivery: 'paced'`, the emulator's default), most of which would come
 * after the run's drain: the run would wait for them (backlog.ts) and count those still queued then as queued. The
 * devices' sessions are clean: nothing of theirs queues. The embedded emulator (emulator-process.ts) runs with these;
 * an emulator a game day is pointed at should too (the run warns when it does not).
 */
export const GAME_DAY_EMULATOR_OPTIONS = Object.freeze({
  maxOfflineMessages: Number.POSITIVE_INFINITY,
  maxOfflineBytes: Number.POSITIVE_INFINITY,
  offlineDelivery: 'immediate',
} as const satisfies EmulatorOptions);

/**
 * A target for an emulator that is already running (in this process, or any that prints its endpoints):
 * credentials are kept in memory and registered straight away, since the emulator starts empty.
 */
export function emulatorTarget(emulator: Pick<Emulator, 'mqttUrl' | 'apiEndpoint' | 'instanceId' | 'accessKeyId' | 'accessKeySecret'>): SimulationTarget {
  const provisioner: ProvisionerOptions = {
    instanceId: emulator.instanceId,
    endpoint: emulator.apiEndpoint,
    accessKeyId: emulator.accessKeyId,
    accessKeySecret: emulator.accessKeySecret,
    store: new MemoryCredentialStore(),
  };
  // Logs and util.inspect of a target must not show the secret; non-enumerable, so spreading the options (as the
  // provisioner does) does not carry these along.
  const shown = (): Record<string, unknown> => ({ ...provisioner, accessKeySecret: redact(emulator.accessKeySecret) });
  Object.defineProperties(provisioner, {
    toJSON: { value: shown, enumerable: false },
    [inspect.custom]: { value: () => `ProvisionerOptions ${inspect(shown())}`, enumerable: false },
  });
  return { brokerUrl: emulator.mqttUrl, strategy: 'register-first', provisioner };
}

/** An emulator running in a child process. */
export interface EmulatorProcess {
  readonly target: SimulationTarget;
  readonly pid: number | undefined;
  /**
   * Settles, with what happened (`exited on signal SIGKILL`), when the process exits without having been asked to
   * close: the emulator is gone for good. Never settles otherwise.
   */
  readonly lost: Promise<string>;
  /** Close the emulator and wait for its process to exit (killed after 5 s). Idempotent. */
  close(): Promise<void>;
}

/**
 * The built emulator-process script next to this module. When this module runs from the TypeScript sources (under
 * vitest), the built copy in `dist/` is used: Node 20 cannot run `.ts` in a child process.
 */
export function emulatorProcessScript(): string {
  const here = fileURLToPath(import.meta.url);
  const sibling = join(dirname(here), 'emulator-process.js');
  if (existsSync(sibling)) return sibling;
  const built = join(dirname(here), '..', '..', 'dist', 'simulator', 'emulator-process.js');
  if (existsSync(built)) return built;
  throw new SimulatorError('EmulatorFailed', `Cannot find the emulator process script ${sibling}`);
}

/**
 * Start an emulator in its own Node process, so the broker's work does not share the simulator's event loop and
 * its memory is not counted as the simulator's. Its OpenAPI allows `qpsLimit` calls per second; `parentTopics` and
 * `groups` exist on its instance. With `redis` it joins the cluster on that Redis (its state, sessions and messages
 * are the cluster's).
 * @throws SimulatorError `EmulatorFailed`
 */
export function startEmulatorProcess(options: { qpsLimit?: number; parentTopics?: readonly string[] | '*'; groups?: readonly string[]; redis?: string } = {}): Promise<EmulatorProcess> {
  const script = emulatorProcessScript();
  const child = fork(script, [], {
    // Only what the emulator needs: never the user's account keys.
    env: {
      PATH: process.env['PATH'] ?? '',
      APSARAMQ_SIM_QPS_LIMIT: String(options.qpsLimit ?? 500),
      ...(options.parentTopics === undefined ? {} : { APSARAMQ_SIM_PARENT_TOPICS: options.parentTopics === '*' ? '*' : options.parentTopics.join(',') }),
      ...(options.groups === undefined ? {} : { APSARAMQ_SIM_GROUPS: options.groups.join(',') }),
      // A member of the cluster on this Redis (the emulator's redis option), not an emulator of its own.
      ...(options.redis === undefined ? {} : { APSARAMQ_SIM_REDIS: options.redis }),
    },
    execArgv: [],
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-2_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let closing: Promise<void> | undefined;
  let ready = false;
  const lost = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => {
      if (ready && closing === undefined) resolve(`exited ${signal ? `on signal ${signal}` : `with code ${code}`}${stderr ? ` (its stderr ends with: ${stderr.trim().slice(-500)})` : ''}`);
    });
  });
  const close = (): Promise<void> => {
    closing ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        if (child.connected) child.send({ type: 'close' });
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
    })();
    return closing;
  };
  return new Promise<EmulatorProcess>((resolve, reject) => {
    const fail = (why: string): void => {
      if (ready) return;
      ready = true;
      void close();
      reject(new SimulatorError('EmulatorFailed', `The embedded emulator ${why}${stderr ? `: ${stderr.trim()}` : ''}`));
    };
    child.once('error', (error) => fail(`could not start (${error.message})`));
    child.once('exit', (code, signal) => fail(`exited with ${code ?? signal} before it was ready`));
    child.once('message', (message: EmulatorProcessMessage) => {
      if (message.type !== 'ready') {
        fail(`failed: ${message.message}`);
        return;
      }
      ready = true;
      resolve({ target: emulatorTarget(message), pid: child.pid, lost, close });
    });
  });
}
