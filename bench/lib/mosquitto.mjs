// A real Mosquitto broker for the CPU benchmark: a broker that is not the bottleneck (C, one process), with a
// password file written from a credential store: each device's MQTT username and password, as the library's signer
// computes them, hashed by mosquitto_passwd -U. Resolves once Mosquitto prints its "running" line on stderr.
import { execFile, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { signDeviceCredential } from '../../dist/signer/mqtt.js';

const run = promisify(execFile);

/** A port nothing listens on right now (Mosquitto takes no port 0). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Start Mosquitto in `dir` with a password file of these credentials (DeviceCredential objects, e.g. loaded from a
 * FileCredentialStore). Returns its URL and stop(). With `anonymous`, no password file: any client may connect.
 */
export async function startMosquitto(dir, credentials, { anonymous = false } = {}) {
  const passwd = join(dir, 'passwd');
  if (!anonymous) {
    const lines = credentials.map((credential) => {
      const { username, password } = signDeviceCredential(credential);
      return `${username}:${password}`;
    });
    await writeFile(passwd, `${lines.join('\n')}\n`, { mode: 0o600 });
    // Hash every plain-text password in place.
    await run('mosquitto_passwd', ['-U', passwd]);
  }
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  const auth = anonymous ? ['allow_anonymous true'] : ['allow_anonymous false', `password_file ${passwd}`];
  await writeFile(conf, [`user ${userInfo().username}`, `listener ${port} 127.0.0.1`, ...auth, 'persistence false', 'max_connections -1', 'log_dest stderr', ''].join('\n'));
  const broker = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((resolve) => broker.once('exit', resolve));
  let log = '';
  await new Promise((resolve, reject) => {
    const lines = createInterface({ input: broker.stderr });
    let running = false;
    lines.on('line', (line) => {
      // Keep reading (a full stderr pipe would stall the broker), keep only what comes before it runs.
      if (running) return;
      log += `${line}\n`;
      if (/ running$/.test(line)) {
        running = true;
        resolve();
      }
    });
    broker.once('error', reject);
    broker.once('exit', (code) => reject(new Error(`mosquitto exited with ${code} before it was running:\n${log}`)));
  });
  return {
    url: `mqtt://127.0.0.1:${port}`,
    pid: broker.pid,
    stop: async () => {
      if (broker.exitCode === null) broker.kill('SIGTERM');
      await exited;
    },
  };
}
