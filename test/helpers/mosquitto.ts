/**
 * Debian's Mosquitto in tests: whether it is installed (and, in CI, that it must be), and a broker of a test's own
 * with a password file (and an ACL when given), started and stopped by the test. The one place that knows how to run
 * it, for the connector's, the simulator's and the emulator's interop tests.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { onTestFinished } from 'vitest';
import { MOSQUITTO } from './bin.js';
import { tempDir } from './cli.js';
import { closedPort } from './http.js';

export { MOSQUITTO };

/** The Debian package of each program. */
const PACKAGE: Readonly<Record<keyof typeof MOSQUITTO, string>> = { mosquitto: 'mosquitto', passwd: 'mosquitto', pub: 'mosquitto-clients', sub: 'mosquitto-clients' };

/**
 * Are these Mosquitto programs installed? `.ci/run` sets APSARAMQ_REQUIRE_INTEROP=1, and then a missing one fails the
 * run at once instead of skipping its tests. `skipped` is the text a describe title gets when they are not.
 */
export function mosquittoPrograms(programs: ReadonlyArray<keyof typeof MOSQUITTO>): { available: boolean; skipped: string } {
  const packages = [...new Set(programs.map((p) => PACKAGE[p]))].join(' ');
  const available = programs.every((p) => MOSQUITTO[p].startsWith('/'));
  if (process.env['APSARAMQ_REQUIRE_INTEROP'] === '1' && !available) throw new Error(`APSARAMQ_REQUIRE_INTEROP=1 but ${packages} is not installed (apt-get install ${packages})`);
  return { available, skipped: available ? '' : ` (skipped: the Debian package${packages.includes(' ') ? 's' : ''} ${packages} not installed)` };
}

/** A Mosquitto broker of a test's own: `stop()` and `start()` stop it and start it again on the same port. */
export interface Mosquitto {
  readonly url: string;
  readonly port: number;
  /** What it has logged so far (every connection: `log_type all`). */
  log(): string;
  stop(): Promise<void>;
  start(): Promise<void>;
}

/**
 * Start Mosquitto on 127.0.0.1 with a password file holding these logins (username and password, e.g. a
 * `signDeviceCredential` result) and an ACL when given; anonymous clients are refused. Resolves when it logs that it
 * is running (its "running" line on stderr): nothing polls its port. Stopped when the test finishes.
 */
export async function startMosquitto(logins: ReadonlyArray<{ username: string; password: string }>, acl?: string): Promise<Mosquitto> {
  const dir = await tempDir('mosquitto-');
  const passwd = join(dir, 'passwd');
  await writeFile(passwd, logins.map((l) => `${l.username}:${l.password}\n`).join(''), { mode: 0o600 });
  await promisify(execFile)(MOSQUITTO.passwd, ['-U', passwd]); // hash the plain-text passwords in place
  // Mosquitto cannot listen on port 0; a port that was free a moment ago will do.
  const port = await closedPort();
  const conf = join(dir, 'mosquitto.conf');
  const lines = [`user ${userInfo().username}`, `listener ${port} 127.0.0.1`, 'allow_anonymous false', `password_file ${passwd}`, 'persistence false', 'log_dest stderr', 'log_type all'];
  if (acl !== undefined) {
    await writeFile(join(dir, 'acl'), acl);
    lines.push(`acl_file ${join(dir, 'acl')}`);
  }
  await writeFile(conf, `${lines.join('\n')}\n`);
  let log = '';
  let broker: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    const child = spawn(MOSQUITTO.mosquitto, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    broker = child;
    await new Promise<void>((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`mosquitto exited with ${code} before running:\n${log}`));
      child.once('exit', onExit);
      createInterface({ input: child.stderr! }).on('line', (line) => {
        log += `${line}\n`;
        if (/ running$/.test(line)) {
          child.off('exit', onExit);
          resolve();
        }
      });
    });
  };
  const stop = async (): Promise<void> => {
    const child = broker;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  };
  onTestFinished(stop);
  await start();
  return { url: `mqtt://127.0.0.1:${port}`, port, log: () => log, stop, start };
}
