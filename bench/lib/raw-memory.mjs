// The memory benchmark's baseline: RSS growth of a process holding N raw mqtt.js clients connected to the plain
// HMAC-checking aedes. Usage: node raw-memory.mjs <brokerUrl> <devices>. Prints one JSON line.
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import { credentialsFor } from './hmac-broker.mjs';

const [url, countText] = process.argv.slice(2);
const devices = Number(countText);
const MB = 1024 * 1024;
globalThis.gc?.();
await sleep(200);
const baseRss = process.memoryUsage().rss;
const clients = [];
let connected = 0;
// In batches, like the simulator's in-flight cap, so the baseline measures clients, not a connect storm.
for (let start = 0; start < devices; start += 500) {
  await Promise.all(Array.from({ length: Math.min(500, devices - start) }, (_, k) => {
    const client = mqtt.connect(url, { ...credentialsFor(`GID_bench@@@mem-${start + k}`), protocolVersion: 4, keepalive: 90, reconnectPeriod: 0, connectTimeout: 30_000 });
    clients.push(client);
    return new Promise((resolve) => {
      client.once('connect', () => {
        connected += 1;
        resolve();
      });
      client.once('error', resolve);
    });
  }));
}
await sleep(500);
const heldRss = process.memoryUsage().rss;
const peakRssMB = process.resourceUsage().maxRSS / 1024;
await Promise.all(clients.map((c) => c.endAsync().catch(() => undefined)));
console.log(JSON.stringify({
  devices,
  connected,
  perClientKB: +(((peakRssMB * MB - baseRss) / devices) / 1024).toFixed(1),
  perClientHeldKB: +(((heldRss - baseRss) / devices) / 1024).toFixed(1),
}));
