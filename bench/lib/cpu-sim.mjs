// The simulator side of the CPU benchmark: runSimulation against a broker URL, credentials from a file store (no
// API call), measuring this process's CPU time (user + system) while connecting and while publishing.
// Usage: node cpu-sim.mjs <brokerUrl> <storeDir> <instanceId> <devices> <publishIntervalMs> <seconds>
// Prints {"connectCpuMs", "connected", "publishCpuMs", "published", "acked", "failedConnects", "errors"}.
import { runSimulation } from '../../dist/simulator/run.js';
import { FileCredentialStore } from '../../dist/provisioner/file-store.js';

const [brokerUrl, storeDir, instanceId, devicesText, intervalText, secondsText] = process.argv.slice(2);
const devices = Number(devicesText);
const cpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1_000;
};
const at = {};
const report = await runSimulation({
  target: {
    brokerUrl,
    strategy: 'get-first',
    // Every credential is in the store: the OpenAPI is never called.
    provisioner: { instanceId, endpoint: 'http://127.0.0.1:9', accessKeyId: 'unused', accessKeySecret: 'unused', store: new FileCredentialStore(storeDir) },
  },
  devices,
  groupId: 'GID_cpu',
  topic: 'cpu/%i',
  connectRate: 0,
  qos: 1,
  payloadSize: 64,
  publishIntervalMs: Number(intervalText),
  durationMs: Number(secondsText) * 1_000,
  progressIntervalMs: 3_600_000,
  // Phase changes are reported synchronously as they happen: CPU time is read at each.
  onProgress: (p) => {
    at[p.phase] ??= cpuMs();
  },
});
console.log(JSON.stringify({
  connectCpuMs: at.publishing - at.connecting,
  connected: report.connected,
  publishCpuMs: at.disconnecting - at.publishing,
  published: report.published,
  acked: report.acked,
  failedConnects: report.failedConnects,
  errors: report.errors,
}));
