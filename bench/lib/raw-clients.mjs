// The connect benchmark's baseline client: a plain script of raw mqtt.js clients, one per device, all started at
// once. Prints {"devices", "connected", "failed", "connectRatePerSec"}, the rate counted like the simulator's:
// from the first CONNECT to the last CONNACK. Usage: node raw-clients.mjs <brokerUrl> <devices>
import mqtt from 'mqtt';
import { credentialsFor } from './hmac-broker.mjs';

const [url, countText] = process.argv.slice(2);
const devices = Number(countText);
const clients = [];
let connected = 0;
let failed = 0;
let last = 0;
// mqtt.js writes CONNECT into the socket inside mqtt.connect(), so the first CONNECT is sent here.
const first = performance.now();
await new Promise((resolve) => {
  const settle = () => {
    if (connected + failed === devices) resolve();
  };
  for (let i = 0; i < devices; i++) {
    const client = mqtt.connect(url, { ...credentialsFor(`GID_bench@@@raw-${i}`), protocolVersion: 4, keepalive: 90, reconnectPeriod: 0, connectTimeout: 30_000 });
    clients.push(client);
    client.once('connect', () => {
      connected += 1;
      last = performance.now();
      settle();
    });
    client.once('error', () => {
      failed += 1;
      settle();
    });
  }
});
const connectRatePerSec = Math.round((connected / ((last - first) / 1_000)) * 10) / 10;
await Promise.all(clients.map((c) => c.endAsync().catch(() => undefined)));
console.log(JSON.stringify({ devices, connected, failed, connectRatePerSec }));
