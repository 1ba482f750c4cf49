// One side of the gateway benchmark, in its own process: hold <devices> devices connected to <brokerUrl> (the
// plain HMAC-checking aedes), then send <messages> QoS 1 messages spread over them and wait for every PUBACK.
// <mode> is `gateway` (the library Gateway: one durable outbox in a temporary directory, paced connects),
// `connector` (one connectDevice per device, no outbox: what the gateway costs without its disk) or `mqtt` (one bare
// mqtt.js client per device, the baseline). Prints one JSON line: RSS per device (right after connecting, and settled:
// after compacting full GCs), CPU of the publishes: of a first round of <messages> (cold: the process's first
// publishes, its JIT compiling the code of that path as it goes) and of a second round of as many (warm: the steady
// state of a gateway that has been running).
// Usage: node --expose-gc gateway-run.mjs <mode> <brokerUrl> <devices> <messages>
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import mqtt from 'mqtt';
import { connectDevice } from '../../dist/connector/connect.js';
import { DeviceCredential } from '../../dist/credential.js';
import { Gateway } from '../../dist/gateway/index.js';
import { openOutboxStore } from '../../dist/outbox/index.js';
import { INSTANCE_ID, credentialsFor, deviceSecret } from './hmac-broker.mjs';

const [mode, url, devicesText, messagesText] = process.argv.slice(2);
const devices = Number(devicesText);
const messages = Number(messagesText);
const ids = Array.from({ length: devices }, (_, i) => `GID_bench@@@gw-${i}`);
const payload = Buffer.alloc(64, 'x');
const cpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1_000;
};
const settle = async () => {
  globalThis.gc?.();
  await sleep(300);
  globalThis.gc?.();
};

let publishAll;
let closeAll;
const dir = await mkdtemp(join(tmpdir(), 'gateway-bench-'));
await settle();
let baseRss;
let connectMs;
if (mode === 'gateway') {
  const outbox = await openOutboxStore({ dir, maxMessages: 1_000_000, maxBytes: 1024 ** 3 });
  await settle();
  baseRss = process.memoryUsage().rss;
  const credentials = new Map(ids.map((clientId) => [clientId, new DeviceCredential({ clientId, instanceId: INSTANCE_ID, deviceAccessKeyId: `DC.${clientId}`, deviceAccessKeySecret: deviceSecret(clientId) })]));
  const gateway = new Gateway({ outbox, credentials: (clientId) => async () => credentials.get(clientId), connect: { brokerUrl: url, keepalive: 90, connectTimeoutMs: 30_000 }, connectRate: 2_000 });
  for (const clientId of ids) gateway.add(clientId);
  const started = performance.now();
  const online = new Promise((resolve) => gateway.on('device', () => gateway.counts.states.online === devices && resolve()));
  gateway.start();
  await online;
  connectMs = performance.now() - started;
  credentials.clear(); // the connections hold theirs; the map was the test's
  publishAll = async () => {
    let delivered = 0;
    const done = new Promise((resolve) => {
      const listener = () => {
        if (++delivered < messages) return;
        gateway.off('delivered', listener);
        resolve();
      };
      gateway.on('delivered', listener);
    });
    // At most 1,000 accepts outstanding, as the gateway command reads stdin.
    for (let start = 0; start < messages; start += 1_000) {
      await Promise.all(Array.from({ length: Math.min(1_000, messages - start) }, (_, k) => gateway.publish(ids[(start + k) % devices], 'demo/bench', payload)));
    }
    await done;
  };
  closeAll = async () => {
    await gateway.close({ deadlineMs: 5_000 });
    await outbox.close();
  };
} else if (mode === 'connector') {
  baseRss = process.memoryUsage().rss;
  const connections = [];
  const started = performance.now();
  for (let start = 0; start < devices; start += 500) {
    connections.push(
      ...(await Promise.all(
        ids.slice(start, start + 500).map((clientId) =>
          connectDevice({ credential: new DeviceCredential({ clientId, instanceId: INSTANCE_ID, deviceAccessKeyId: `DC.${clientId}`, deviceAccessKeySecret: deviceSecret(clientId) }), brokerUrl: url, keepalive: 90, connectTimeoutMs: 30_000 }),
        ),
      )),
    );
  }
  connectMs = performance.now() - started;
  publishAll = async () => {
    for (let start = 0; start < messages; start += 1_000) {
      await Promise.all(Array.from({ length: Math.min(1_000, messages - start) }, (_, k) => connections[(start + k) % devices].publish('demo/bench', payload, { qos: 1 })));
    }
  };
  closeAll = () => Promise.all(connections.map((c) => c.end()));
} else {
  baseRss = process.memoryUsage().rss;
  const clients = [];
  const started = performance.now();
  // In batches of 500 (the baseline measures clients, not a connect storm; the gateway paces at 2,000/s).
  for (let start = 0; start < devices; start += 500) {
    await Promise.all(
      ids.slice(start, start + 500).map((clientId) => {
        const client = mqtt.connect(url, { ...credentialsFor(clientId), protocolVersion: 4, keepalive: 90, reconnectPeriod: 0, connectTimeout: 30_000 });
        clients.push(client);
        return new Promise((resolve, reject) => {
          client.once('connect', resolve);
          client.once('error', reject);
        });
      }),
    );
  }
  connectMs = performance.now() - started;
  publishAll = async () => {
    for (let start = 0; start < messages; start += 1_000) {
      await Promise.all(Array.from({ length: Math.min(1_000, messages - start) }, (_, k) => clients[(start + k) % devices].publishAsync('demo/bench', payload, { qos: 1 })));
    }
  };
  closeAll = () => Promise.all(clients.map((c) => c.endAsync().catch(() => undefined)));
}
await settle();
const heldRss = process.memoryUsage().rss;
// Settled: the same full GCs, compacting every page, as V8's memory reducer does by itself some 8 to 20 s after the
// process goes idle. Right after connecting, old space is fragmented by what the connect phase left (devices wait for
// their pacer slot), and that figure moves with the connect rate more than with what a device holds.
// V8 gives the freed pages back to the system on a thread of its own: the figure is read after a pause.
const settledRssNow = async () => {
  setFlagsFromString('--compact-on-every-full-gc');
  globalThis.gc?.();
  globalThis.gc?.();
  setFlagsFromString('--no-compact-on-every-full-gc');
  await sleep(300);
  return process.memoryUsage().rss;
};
const settledRss = await settledRssNow();
/** One round of publishes: its CPU (every thread) and wall time. */
const round = async () => {
  const cpuBefore = cpuMs();
  const started = performance.now();
  await publishAll();
  return { cpu: cpuMs() - cpuBefore, ms: performance.now() - started };
};
const cold = await round();
await settle();
const warm = await round();
// And once every device has published (what its connection keeps from then on), settled the same way.
const publishedRss = await settledRssNow();
await closeAll();
await rm(dir, { recursive: true, force: true });
console.log(JSON.stringify({
  mode,
  devices,
  messages,
  connectSeconds: +(connectMs / 1000).toFixed(2),
  perDeviceKB: +((heldRss - baseRss) / devices / 1024).toFixed(1),
  settledPerDeviceKB: +((settledRss - baseRss) / devices / 1024).toFixed(1),
  publishedPerDeviceKB: +((publishedRss - baseRss) / devices / 1024).toFixed(1),
  coldPublishCpuMsPer10k: +((cold.cpu * 10_000) / messages).toFixed(0),
  publishCpuMsPer10k: +((warm.cpu * 10_000) / messages).toFixed(0),
  publishesPerSecond: Math.round(messages / (warm.ms / 1000)),
}));
