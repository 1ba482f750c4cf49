// The README's gateway example: 20 devices in one process, paced, on one durable outbox, with metrics.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmulator } from 'apsaramq-device/emulator';
import { Gateway, storeCredentials } from 'apsaramq-device/gateway';
import { openOutboxStore } from 'apsaramq-device/outbox';
import { FileCredentialStore, Provisioner } from 'apsaramq-device/provisioner';

const emulator = await startEmulator({ mqttPort: 0, apiPort: 0, wsPort: false }); // or use the real service
const dir = await mkdtemp(join(tmpdir(), 'gateway-')); // a real gateway: /var/lib/<name>
const store = new FileCredentialStore(join(dir, 'credentials'));
const outbox = await openOutboxStore({ dir: join(dir, 'outbox') }); // one per process, for every device
const gateway = new Gateway({
  outbox,
  credentials: storeCredentials({
    instanceId: emulator.instanceId,
    store, // devices registered before connect from here, without the OpenAPI
    // made on first need only: a device not in the store is registered at the account's pace
    registrar: () => new Provisioner({ instanceId: emulator.instanceId, endpoint: emulator.apiEndpoint, accessKeyId: emulator.accessKeyId, accessKeySecret: emulator.accessKeySecret, store }),
  }),
  connect: { brokerUrl: emulator.mqttUrl }, // real service: leave out
  connectRate: 50, // CONNECTs per second: at start, after an outage, after a broker restart
});
for (let i = 1; i <= 20; i++) gateway.add(`GID_demo@@@sensor-${i}`);
const metrics = await gateway.metrics(); // needs prom-client; serve metrics.text() at /metrics
gateway.on('dropped', ({ clientId, reason }) => console.error(`dropped: ${clientId} ${reason}`));
const allOnline = new Promise((resolve) => gateway.on('device', () => gateway.counts.states.online === 20 && resolve()));
gateway.start();
await allOnline;
let delivered = 0;
const allDelivered = new Promise((resolve) => gateway.on('delivered', () => ++delivered === 20 && resolve()));
for (const clientId of gateway.clientIds) await gateway.publish(clientId, 'demo/telemetry', '21.5'); // on disk when it resolves
await allDelivered;
console.log((await metrics.text()).split('\n').filter((line) => /^apsaramq_device_(devices\{state="online"\}|publishes_delivered_total) /.test(line)).join('\n'));
await gateway.close({ deadlineMs: 10_000 }); // what is not delivered by then stays on disk for the next run
await outbox.close();
await emulator.close();
await rm(dir, { recursive: true });
