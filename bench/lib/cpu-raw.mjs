// The baseline of the CPU benchmark: raw mqtt.js clients doing the simulator's work against the same broker, with
// the same credentials: connect every device (all at once), then publish a 64-byte QoS 1 message carrying its send
// time from each every <publishIntervalMs> (random first phase) for the rest of <seconds>, and wait for every PUBACK.
// Usage: node cpu-raw.mjs <brokerUrl> <storeDir> <instanceId> <devices> <publishIntervalMs> <seconds>
import mqtt from 'mqtt';
import { FileCredentialStore } from '../../dist/provisioner/file-store.js';
import { signDeviceCredential } from '../../dist/signer/mqtt.js';

const [brokerUrl, storeDir, instanceId, devicesText, intervalText, secondsText] = process.argv.slice(2);
const devices = Number(devicesText);
const interval = Number(intervalText);
const store = new FileCredentialStore(storeDir);
const logins = [];
for (let i = 0; i < devices; i++) logins.push(signDeviceCredential(await store.load(instanceId, `GID_cpu@@@sim-${i}`)));
const cpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1_000;
};

const started = performance.now();
const connectStart = cpuMs();
const clients = [];
let failed = 0;
await new Promise((resolve) => {
  let settled = 0;
  const settle = () => {
    if (++settled === devices) resolve();
  };
  for (const login of logins) {
    const client = mqtt.connect(brokerUrl, { ...login, protocolVersion: 4, keepalive: 90, clean: true, reconnectPeriod: 0, connectTimeout: 30_000 });
    clients.push(client);
    client.once('connect', settle);
    client.once('error', () => {
      failed += 1;
      settle();
    });
  }
});
const connectCpuMs = cpuMs() - connectStart;

const publishStart = cpuMs();
const payload = Buffer.alloc(64);
let published = 0;
let acked = 0;
const endAt = started + Number(secondsText) * 1_000;
await new Promise((resolve) => {
  let running = clients.length;
  const maybeDone = () => {
    if (running === 0 && acked === published) resolve();
  };
  clients.forEach((client, i) => {
    const tick = () => {
      if (performance.now() >= endAt) {
        running -= 1;
        maybeDone();
        return;
      }
      setTimeout(tick, interval);
      payload.writeDoubleBE(performance.now(), 0);
      published += 1;
      client.publish(`cpu/raw-${i}`, payload, { qos: 1 }, () => {
        acked += 1;
        maybeDone();
      });
    };
    setTimeout(tick, Math.random() * interval);
  });
});
const publishCpuMs = cpuMs() - publishStart;
await Promise.all(clients.map((c) => c.endAsync().catch(() => undefined)));
console.log(JSON.stringify({ connectCpuMs, connected: devices - failed, publishCpuMs, published, acked, failedConnects: failed }));
