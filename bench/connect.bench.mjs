// Connect rate of `apsaramq-device simulate` (embedded emulator in its own process) against a plain script of raw
// mqtt.js clients hitting a plain aedes with the same HMAC check (broker and clients in separate processes), same
// device count, as fast as possible. Both count from the first CONNECT sent to the last CONNACK received.
// Target: simulator >= 0.8x the raw baseline at 5,000 devices. BENCH_CONNECT_DEVICES and BENCH_ROUNDS override.
import { join } from 'node:path';
import { CLI, ROOT, lastJson, median, runNode, startNode, verdict } from './lib/child.mjs';

const DEVICES = Number(process.env.BENCH_CONNECT_DEVICES ?? 5_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const lib = join(ROOT, 'bench', 'lib');

async function baseline() {
  const broker = await startNode(join(lib, 'hmac-broker.mjs'));
  try {
    const run = await runNode(join(lib, 'raw-clients.mjs'), [broker.info.url, String(DEVICES)]);
    if (run.code !== 0) throw new Error(`raw clients failed: ${run.stderr}`);
    const result = lastJson(run.stdout);
    if (result.connected !== DEVICES) throw new Error(`raw clients: only ${result.connected} of ${DEVICES} connected`);
    return result.connectRatePerSec;
  } finally {
    await broker.stop();
  }
}

async function simulator() {
  // Provisioning is not part of the connect window; a high API rate only keeps the bench short.
  const run = await runNode(CLI, [
    'simulate', '--devices', String(DEVICES), '--connect-rate', '0', '--duration', '0', '--publish-interval', '0',
    '--api-qps', '20000', '--api-concurrency', '128', '--json', '--no-progress',
  ]);
  if (run.code !== 0) throw new Error(`simulate exited with ${run.code}: ${run.stderr}`);
  const report = lastJson(run.stdout);
  return report.connectRatePerSec;
}

const raw = [];
const sim = [];
for (let round = 1; round <= ROUNDS; round++) {
  // Alternate the order so neither side always runs on a warmer machine.
  if (round % 2) {
    raw.push(await baseline());
    sim.push(await simulator());
  } else {
    sim.push(await simulator());
    raw.push(await baseline());
  }
  console.log(`round ${round}: raw mqtt.js ${raw.at(-1)}/s, simulate ${sim.at(-1)}/s`);
}
console.log(`connect rate at ${DEVICES} devices (median of ${ROUNDS}): raw mqtt.js + plain aedes ${median(raw).toFixed(0)}/s, simulate + emulator ${median(sim).toFixed(0)}/s`);
verdict('simulate / raw mqtt.js connect rate', median(sim) / median(raw), 0.8);
