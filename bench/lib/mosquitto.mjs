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
 * FileCredentialStore) and of `logins` ({ username, password }, e.g. a subscriber's). Returns its URL, port, stop()
 * and start() (again, on the same port: a broker restart). With `anonymous`, no password file: any client may
 * connect. With `persistence`, sessions and queued QoS 1 messages are saved in `dir` when it stops and restored when
 * it starts again (and queues are unbounded: a subscriber away during a restart misses nothing).
 */
export async function startMosquitto(dir, credentials, { anonymous = false, persistence = false, logins = [] } = {}) {
  const passwd = join(dir, 'passwd');
  if (!anonymous) {
    const lines = credentials.map((credential) => {
      const { username, password } = signDeviceCredential(credential);
      return `${username}:${password}`;
    });
    for (const login of logins) lines.push(`${login.username}:${login.password}`);
    await writeFile(passwd, `${lines.join('\n')}\n`, { mode: 0o600 });
    // Hash every plain-text password in place.
    await run('mosquitto_passwd', ['-U', passwd]);
  }
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  const auth = anonymous ? ['allow_anonymous true'] : ['allow_anonymous false', `password_file ${passwd}`];
  const keep = persistence ? ['persistence true', `persistence_location ${dir}/`, 'max_queued_messages 0', 'max_inflight_messages 0'] : ['persistence false'];
  await writeFile(conf, [`user ${userInfo().username}`, `listener ${port} 127.0.0.1`, ...auth, ...keep, 'max_connections -1', 'log_dest stderr', ''].join('\n'));
  let broker;
  let exited;
  const start = async () => {
    broker = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    const child = broker;
    exited = new Promise((resolve) => child.once('exit', resolve));
    let log = '';
    await new Promise((resolve, reject) => {
      const lines = createInterface({ input: child.stderr });
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
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`mosquitto exited with ${code} before it was running:\n${log}`)));
    });
  };
  await start();
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    get pid() {
      return broker.pid;
    },
    start,
    stop: async () => {
      // Mosquitto 2.0 sets its run flag after logging "running": a SIGTERM that lands in between is lost. Say it again
      // until it exits (a clean stop: it saves its sessions when persistent).
      const child = broker;
      let timer;
      const again = () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        timer = setTimeout(again, 500);
      };
      again();
      await exited;
      clearTimeout(timer);
    },
  };
}
