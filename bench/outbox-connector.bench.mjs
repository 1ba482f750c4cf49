// Delivered QoS 1 messages per second THROUGH THE CONNECTOR (issue 17): one DeviceConnection publishing to Mosquitto
// (loopback, a C broker that is not the bottleneck) with the durable outbox (option `outbox`: accepted once fsync'd,
// removed on PUBACK) vs without it (the in-memory outbox), in the same run, rounds alternating. The caller keeps
// BENCH_OUTBOX_OUTSTANDING publishes outstanding (awaiting their delivery), as a gateway feeding a device would; a
// second durable mode hands messages over with enqueue() (accept-only, deliveries counted from the events).
// Goal: durable >= 0.8x in-memory (delivered msg/s, median of the rounds). CPU per message is process.cpuUsage
// (every thread: LevelDB's too).
// Env: BENCH_OUTBOX_PUBLISHES (20000), BENCH_OUTBOX_PAYLOAD (256), BENCH_OUTBOX_OUTSTANDING (1000),
// BENCH_OUTBOX_ROUNDS (5), BENCH_OUTBOX_MODES (memory,durable,enqueue).
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT, median, verdict } from './lib/child.mjs';
import { startMosquitto } from './lib/mosquitto.mjs';

const PUBLISHES = Number(process.env.BENCH_OUTBOX_PUBLISHES ?? 20_000);
const PAYLOAD = Number(process.env.BENCH_OUTBOX_PAYLOAD ?? 256);
const OUTSTANDING = Number(process.env.BENCH_OUTBOX_OUTSTANDING ?? 1000);
const ROUNDS = Number(process.env.BENCH_OUTBOX_ROUNDS ?? 5);

const dist = (path) => import(pathToFileURL(join(ROOT, 'dist', path)).href);
const { connectDevice, DeviceCredential } = await dist('index.js');
const { openOutboxStore } = await dist('outbox/index.js');

const work = mkdtempSync(join(tmpdir(), 'apsaramq-outbox-connector-bench-'));
const payload = Buffer.alloc(PAYLOAD, 0x5a);
const credential = new DeviceCredential({ clientId: 'GID_bench@@@outbox-1', instanceId: 'mqtt-bench', deviceAccessKeyId: 'DC.benchKey', deviceAccessKeySecret: 'DC.benchSecret' });
const loads = [loadavg()[0]];

/** Run `count` tasks with at most `window` outstanding. */
async function windowed(count, window, task) {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(window, count) }, worker));
}

async function measure(fn) {
  const cpu = process.cpuUsage();
  const started = performance.now();
  await fn();
  const ms = performance.now() - started;
  const used = process.cpuUsage(cpu);
  return { perSec: (PUBLISHES / ms) * 1000, cpuUs: (used.user + used.system) / PUBLISHES };
}

/** One round: a fresh connection (and, durable, a fresh store), PUBLISHES messages, all delivered. */
async function round(brokerUrl, mode, n) {
  const store = mode === 'memory' ? undefined : await openOutboxStore({ dir: join(work, `store-${mode}-${n}`), maxMessages: 10 * PUBLISHES, maxBytes: 2 ** 30 });
  const conn = await connectDevice({ credential, brokerUrl, ...(store ? { outbox: store } : {}), maxQueuedMessages: Infinity, maxQueuedBytes: Infinity });
  try {
    if (mode === 'enqueue') {
      let delivered = 0;
      let done;
      const all = new Promise((resolve) => (done = resolve));
      conn.on('delivered', () => {
        if (++delivered === PUBLISHES) done();
      });
      // The caller waits for acceptance only; OUTSTANDING bounds what is handed over and not yet accepted.
      return await measure(async () => {
        await windowed(PUBLISHES, OUTSTANDING, () => conn.enqueue('bench/outbox', payload, { qos: 1 }));
        await all;
      });
    }
    return await measure(() => windowed(PUBLISHES, OUTSTANDING, () => conn.publish('bench/outbox', payload, { qos: 1 })));
  } finally {
    await conn.end();
    await store?.close();
  }
}

const fmt = (n, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

try {
  const broker = await startMosquitto(work, [credential]);
  try {
    const modes = (process.env.BENCH_OUTBOX_MODES ?? 'memory,durable,enqueue').split(',');
    const results = Object.fromEntries(modes.map((m) => [m, []]));
    // Warm up the JIT and the broker: one discarded round of every mode, so that no mode's first measured round also
    // compiles its own code (the durable path is most of the store's code; warming only the in-memory mode, as this
    // bench did until stop 32, measured that compilation in the durable mode's first round).
    for (const mode of modes) await round(broker.url, mode, -1);
    for (let n = 0; n < ROUNDS; n++) {
      const order = n % 2 ? [...modes].reverse() : modes;
      for (const mode of order) results[mode].push(await round(broker.url, mode, n));
      loads.push(loadavg()[0]);
    }
    console.log(`${PUBLISHES} QoS 1 messages of ${PAYLOAD} bytes per round through one DeviceConnection to Mosquitto, ${OUTSTANDING} outstanding; ${ROUNDS} rounds alternating; medians:`);
    console.log('\n| Outbox | delivered msg/s (median) | rounds | CPU per message (median) | vs in-memory |\n|---|---|---|---|---|');
    const medianOf = (list, key) => median(list.map((r) => r[key]));
    const memory = results.memory ? medianOf(results.memory, 'perSec') : NaN;
    for (const mode of modes) {
      const label = { memory: 'in memory (no `outbox`)', durable: 'durable, `await publish()`', enqueue: 'durable, `enqueue()` + `delivered` events' }[mode];
      const perSec = medianOf(results[mode], 'perSec');
      console.log(`| ${label} | ${fmt(perSec)}/s | ${results[mode].map((r) => fmt(r.perSec)).join(', ')} | ${fmt(medianOf(results[mode], 'cpuUs'), 1)} µs | ${fmt(perSec / memory, 2)}x |`);
    }
    console.log(`\nload average during the run: ${loads.map((l) => l.toFixed(1)).join(', ')}`);
    if (results.durable) verdict('delivered msg/s through the connector, durable outbox (await publish) vs in-memory', medianOf(results.durable, 'perSec') / memory, 0.8);
    if (results.enqueue) verdict('delivered msg/s through the connector, durable outbox (enqueue) vs in-memory', medianOf(results.enqueue, 'perSec') / memory, 0.8);
  } finally {
    await broker.stop();
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
