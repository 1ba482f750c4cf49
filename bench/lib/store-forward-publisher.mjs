// The device of the store-and-forward runs in library mode (bench/lib/store-forward.mjs): one device with a durable
// outbox (dist/), publishing QoS 1 messages at a steady rate whether it is connected or not (enqueueDurable), and
// connecting until it is. One line per fact on stdout, for the orchestrator that kills it:
//   R <recovery json>    what opening the outbox found (possible duplicates after a kill -9)
//   H <n>                message n is being handed over (said first: a kill after it does not make it expected)
//   A <n>                message n is accepted (on disk)
//   F <n> <code>         message n was refused
//   D <n> <0|1>          message n was delivered (PUBACK); 1: possibly a duplicate
//   X <n> <reason>       message n was dropped
//   C                    connected
//   E                    every message handed over
//   M <n> <rss> <heap>   memory (MiB) after n messages, with config.memoryEvery (rate 0: as fast as accepted)
// Usage: node store-forward-publisher.mjs '<json config>'
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './child.mjs';

const config = JSON.parse(process.argv[2]);
const dist = (path) => import(pathToFileURL(join(ROOT, 'dist', path)).href);
const { connectDevice, enqueueDurable, DeviceCredential } = await dist('index.js');
const { openOutboxStore } = await dist('outbox/index.js');
const say = (line) => process.stdout.write(`${line}\n`);

const store = await openOutboxStore({ dir: config.dir, ...config.store });
say(`R ${JSON.stringify(store.recovery)}`);
store.on('drop', (drop) => say(`X ${drop.id} ${drop.reason}`));
store.on('warning', (warning) => process.stderr.write(`warning: ${warning.code}: ${warning.message}\n`));
const credential = DeviceCredential.fromWire(config.credential);

void (async () => {
  // A device that boots while the uplink is down: connectDevice fails until the broker answers; its messages are
  // accepted all the same (enqueueDurable) and sent once it is connected.
  for (;;) {
    try {
      const conn = await connectDevice({ credential, brokerUrl: config.brokerUrl, outbox: store, reconnect: { minDelayMs: 100, maxDelayMs: 1000 }, connectTimeoutMs: 2000 });
      conn.on('delivered', (report) => say(`D ${report.id} ${report.possibleDuplicate ? 1 : 0}`));
      conn.on('error', (error) => process.stderr.write(`error: ${error.code}: ${error.message}\n`));
      say('C');
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
})();

/** The payload of message n: `sf-<n>`, padded to `payloadBytes` when asked (random bytes: LevelDB compresses). */
const payloadOf = (n) => {
  const text = `sf-${n}`;
  return config.payloadBytes ? `${text}|${randomBytes(config.payloadBytes).toString('base64').slice(0, Math.max(0, config.payloadBytes - text.length - 1))}` : text;
};

/** Memory in MiB after a full collection (run with --expose-gc): M <n> <rss> <heapUsed>. */
const memory = (n) => {
  globalThis.gc?.();
  const { rss, heapUsed } = process.memoryUsage();
  say(`M ${n} ${(rss / 2 ** 20).toFixed(1)} ${(heapUsed / 2 ** 20).toFixed(1)}`);
};

const hand = (n) => {
  say(`H ${n}`);
  return enqueueDurable(store, credential.clientId, config.topic, payloadOf(n), { id: String(n) }).then(
    () => say(`A ${n}`),
    (error) => say(`F ${n} ${error.code}`),
  );
};

const started = performance.now();
if (config.rate > 0) {
  for (let i = 0; i < config.count; i++) {
    const due = started + (i * 1000) / config.rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    void hand(config.start + i);
  }
} else {
  // As fast as the outbox accepts, 100 waiting at a time (the caller holds nothing more); memory every `memoryEvery`.
  let next = 0;
  const worker = async () => {
    while (next < config.count) {
      const i = next++;
      await hand(config.start + i);
      if (config.memoryEvery && (i + 1) % config.memoryEvery === 0) memory(i + 1);
    }
  };
  await Promise.all(Array.from({ length: 100 }, worker));
}
say('E');
