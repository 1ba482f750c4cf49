// The simulator's own cost, apart from the broker: CPU seconds of the simulating process per 1,000 connects and per
// 10,000 QoS 1 publishes, against raw mqtt.js clients doing the same work in their own process, both against a real
// Mosquitto (a C broker that is not the bottleneck) whose password file holds each device's login from the
// credential store. Goal: the simulator at most 0.5x mqtt.js's CPU for each. BENCH_CPU_DEVICES (1,000),
// BENCH_CPU_SECONDS (15), BENCH_ROUNDS (3) override.
import { mkdtemp, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceCredential } from '../dist/credential.js';
import { FileCredentialStore } from '../dist/provisioner/file-store.js';
import { ROOT, lastJson, median, runNode, verdict } from './lib/child.mjs';
import { startMosquitto } from './lib/mosquitto.mjs';

const DEVICES = Number(process.env.BENCH_CPU_DEVICES ?? 1_000);
const SECONDS = Number(process.env.BENCH_CPU_SECONDS ?? 15);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
// Each device publishes every second: DEVICES messages per second once all are connected.
const INTERVAL_MS = 1_000;
const INSTANCE = 'mqtt-bench-cpu';
const lib = join(ROOT, 'bench', 'lib');

const dir = await mkdtemp(join(tmpdir(), 'apsaramq-cpu-bench-'));
try {
  // The credential store both sides read, as `provision` would have filled it.
  const store = new FileCredentialStore(join(dir, 'store'));
  const credentials = Array.from({ length: DEVICES }, (_, i) => new DeviceCredential({ clientId: `GID_cpu@@@sim-${i}`, instanceId: INSTANCE, deviceAccessKeyId: `DC.${randomBytes(8).toString('hex')}`, deviceAccessKeySecret: randomBytes(16).toString('base64') }));
  // The store syncs each file: save them 64 at a time.
  for (let i = 0; i < credentials.length; i += 64) await Promise.all(credentials.slice(i, i + 64).map((c) => store.save(c)));
  const broker = await startMosquitto(dir, credentials);
  console.log(`mosquitto (pid ${broker.pid}) at ${broker.url}, ${DEVICES} logins in its password file`);
  const args = [broker.url, join(dir, 'store'), INSTANCE, String(DEVICES), String(INTERVAL_MS), String(SECONDS)];
  const side = async (script) => {
    const run = await runNode(join(lib, script), args);
    if (run.code !== 0) throw new Error(`${script} exited with ${run.code}: ${run.stderr}`);
    const result = lastJson(run.stdout);
    if (result.connected !== DEVICES || result.acked !== result.published) throw new Error(`${script}: ${JSON.stringify(result)}`);
    return { perThousandConnects: (result.connectCpuMs / DEVICES) * 1_000, perTenThousandPublishes: (result.publishCpuMs / result.published) * 10_000, result };
  };
  const sim = [];
  const raw = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      // Alternate the order so neither side always runs on a warmer machine.
      if (round % 2) {
        raw.push(await side('cpu-raw.mjs'));
        sim.push(await side('cpu-sim.mjs'));
      } else {
        sim.push(await side('cpu-sim.mjs'));
        raw.push(await side('cpu-raw.mjs'));
      }
      const [s, r] = [sim.at(-1), raw.at(-1)];
      console.log(`round ${round}: CPU ms per 1,000 connects: simulate ${s.perThousandConnects.toFixed(0)}, mqtt.js ${r.perThousandConnects.toFixed(0)}; per 10,000 QoS 1 publishes: simulate ${s.perTenThousandPublishes.toFixed(0)} (${s.result.published} sent), mqtt.js ${r.perTenThousandPublishes.toFixed(0)} (${r.result.published} sent)`);
    }
  } finally {
    await broker.stop();
  }
  const connects = [median(sim.map((s) => s.perThousandConnects)), median(raw.map((r) => r.perThousandConnects))];
  const publishes = [median(sim.map((s) => s.perTenThousandPublishes)), median(raw.map((r) => r.perTenThousandPublishes))];
  console.log(`median of ${ROUNDS}: CPU per 1,000 connects: simulate ${(connects[0] / 1_000).toFixed(3)} s, mqtt.js ${(connects[1] / 1_000).toFixed(3)} s`);
  console.log(`median of ${ROUNDS}: CPU per 10,000 QoS 1 publishes: simulate ${(publishes[0] / 1_000).toFixed(3)} s, mqtt.js ${(publishes[1] / 1_000).toFixed(3)} s`);
  verdict('simulate / mqtt.js CPU per 1,000 connects', connects[0] / connects[1], 0.5, false);
  verdict('simulate / mqtt.js CPU per 10,000 QoS 1 publishes', publishes[0] / publishes[1], 0.5, false);
} finally {
  await rm(dir, { recursive: true, force: true });
}
