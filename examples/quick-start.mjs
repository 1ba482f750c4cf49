// The README's library quick start: nothing to connected in one call, against a local emulator.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmulator } from 'apsaramq-device/emulator';
import { FileCredentialStore, registerAndConnect } from 'apsaramq-device/provisioner';

const emulator = await startEmulator({ mqttPort: 0, apiPort: 0, wsPort: false }); // or use the real service
const storeDir = await mkdtemp(join(tmpdir(), 'quick-start-')); // a real device keeps its store in one fixed place
const device = await registerAndConnect({
  endpoint: emulator.apiEndpoint, // real service: region: 'cn-hangzhou'
  accessKeyId: emulator.accessKeyId, // real service: leave out, read from ALIBABA_CLOUD_ACCESS_KEY_ID
  accessKeySecret: emulator.accessKeySecret, // ... and ALIBABA_CLOUD_ACCESS_KEY_SECRET
  instanceId: emulator.instanceId,
  clientId: 'GID_demo@@@dev-1',
  brokerUrl: emulator.mqttUrl, // real service: leave out (<instanceId>.mqtt.aliyuncs.com:1883)
  store: new FileCredentialStore(storeDir), // registered once, not every boot
});
const received = new Promise((resolve) => device.once('message', (topic, payload) => resolve(`${topic}: ${payload}`)));
await device.subscribe('demo/#');
await device.publish('demo/hello', 'hi', { qos: 1 });
console.log(await received); // demo/hello: hi
await device.end();
await emulator.close();
await rm(storeDir, { recursive: true });
