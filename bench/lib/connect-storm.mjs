// A lean CONNECT load: raw TCP sockets, each sending one CONNECT packet encoded before the clock starts and waiting
// for its CONNACK, so that what a connect-rate benchmark measures is the broker, not its clients. mqtt.js clients
// (`simulate`) spend about as much CPU per CONNECT as the broker does, and on a machine of two cores they share the
// cores with the brokers they measure. Every connection is a real MQTT 3.1.1 session with a real device login,
// checked by the emulator as any other; the sockets stay open until `close()`.
import { connect } from 'node:net';
import mqttPacket from 'mqtt-packet';

/** The CONNECT packet of one login (`{ clientId, username, password }`), MQTT 3.1.1, clean session. */
export function connectPacket(login, keepalive = 60) {
  return mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive, clientId: login.clientId, username: login.username, password: Buffer.from(login.password) });
}

/**
 * Connect every login, at most `concurrency` CONNECTs waiting for their CONNACK at a time; login `i` goes to
 * `urls[i % urls.length]`. Resolves with `{ perSec, ms, sockets, close }` once every CONNACK is in (the rate runs
 * from the first connect to the last CONNACK); rejects on the first refusal (a CONNACK code other than 0), a socket
 * error or a close before the CONNACK.
 */
export async function connectStorm(urls, logins, { concurrency = 500 } = {}) {
  const targets = urls.map((url) => {
    const { hostname, port } = new URL(url);
    return { host: hostname, port: Number(port) };
  });
  const packets = logins.map((login) => connectPacket(login));
  const sockets = [];
  let next = 0;
  let failed;
  const one = (i) =>
    new Promise((resolve, reject) => {
      const socket = connect(targets[i % targets.length]);
      sockets.push(socket);
      socket.setNoDelay(true);
      let answer = Buffer.alloc(0);
      const fail = (why) => reject(new Error(`${logins[i].clientId}: ${why}`));
      socket.once('error', (error) => fail(error.message));
      socket.once('close', () => fail('closed before its CONNACK'));
      socket.on('data', (chunk) => {
        answer = answer.length === 0 ? chunk : Buffer.concat([answer, chunk]);
        if (answer.length < 4) return;
        socket.removeAllListeners('data');
        socket.removeAllListeners('close');
        socket.removeAllListeners('error');
        socket.on('error', () => undefined);
        // Whatever the broker sends later (nothing: no subscription) is read and dropped.
        socket.resume();
        if (answer[0] !== 0x20 || answer[3] !== 0) fail(`CONNACK ${answer.subarray(0, 4).toString('hex')}`);
        else resolve();
      });
      socket.write(packets[i]);
    });
  const worker = async () => {
    while (next < packets.length && !failed) {
      try {
        await one(next++);
      } catch (error) {
        failed ??= error;
      }
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, packets.length) }, worker));
  const ms = performance.now() - started;
  const close = async () => {
    const disconnect = Buffer.from([0xe0, 0x00]);
    await Promise.all(
      sockets.map(
        (socket) =>
          new Promise((resolve) => {
            if (socket.destroyed) return resolve();
            socket.once('close', resolve);
            socket.end(disconnect);
          }),
      ),
    );
  };
  if (failed) {
    await close();
    throw failed;
  }
  return { perSec: (packets.length / ms) * 1_000, ms, close };
}

// As a script (`node connect-storm.mjs FILE`, FILE a JSON of { urls, logins, concurrency }): in a process of its own
// (its own open-file limit and CPU), print `{ perSec, ms, cpuMs }` on stdout, then close every socket and exit.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const { readFileSync } = await import('node:fs');
  const { urls, logins, concurrency } = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  const cpu = process.cpuUsage();
  const storm = await connectStorm(urls, logins, { concurrency });
  const used = process.cpuUsage(cpu);
  console.log(JSON.stringify({ perSec: storm.perSec, ms: storm.ms, cpuMs: (used.user + used.system) / 1_000 }));
  await storm.close();
}
