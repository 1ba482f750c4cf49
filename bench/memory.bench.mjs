// Memory per simulated device: RSS growth of the simulator process (the broker runs in its own process) during a
// full run of 10,000 devices for 30 s (provision, connect at 1,000/s, a QoS 1 message per device every 5 s), which
// must also end with 0 failed connects. Baseline in the same run: RSS growth per raw mqtt.js client holding a
// connection to a plain aedes. Target: <= 40 KB per device. BENCH_MEMORY_DEVICES, BENCH_MEMORY_SECONDS override.
import { join } from 'node:path';
import { ROOT, lastJson, runNode, startNode, verdict } from './lib/child.mjs';

const DEVICES = Number(process.env.BENCH_MEMORY_DEVICES ?? 10_000);
const SECONDS = Number(process.env.BENCH_MEMORY_SECONDS ?? 30);
const lib = join(ROOT, 'bench', 'lib');

// --expose-gc: both processes collect garbage before their baseline RSS is read.
const sim = await runNode(join(lib, 'memory-run.mjs'), [String(DEVICES), String(SECONDS)], { echo: 'simulate', nodeArgs: ['--expose-gc'] });
if (sim.code !== 0) throw new Error(`memory run failed (${sim.code}): ${sim.stderr}`);
const result = lastJson(sim.stdout);
const { report } = result;
console.log(`simulator: ${DEVICES} devices for ${SECONDS} s: connected ${report.connected}, failed connects ${report.failedConnects}, published ${report.published}, acked ${report.acked}, errors ${JSON.stringify(report.errors)}, connect rate ${report.connectRatePerSec}/s, connect p99 ${report.connectLatencyMs.p99} ms, elapsed ${(report.elapsedMs / 1_000).toFixed(1)} s`);
console.log(`simulator RSS: ${result.baseRssMB} MB before, ${result.allConnectedRssMB} MB with all connected, ${result.peakRssMB} MB peak -> ${result.perDeviceKB} KB per device (peak), ${result.perDeviceAllConnectedKB} KB (all connected)`);

const broker = await startNode(join(lib, 'hmac-broker.mjs'));
let raw;
try {
  const run = await runNode(join(lib, 'raw-memory.mjs'), [broker.info.url, String(DEVICES)], { nodeArgs: ['--expose-gc'] });
  if (run.code !== 0) throw new Error(`raw mqtt.js memory run failed: ${run.stderr}`);
  raw = lastJson(run.stdout);
} finally {
  await broker.stop();
}
console.log(`baseline: ${raw.connected} raw mqtt.js clients -> ${raw.perClientKB} KB per client (peak), ${raw.perClientHeldKB} KB (held)`);
console.log(`simulated device / mqtt.js client memory: ${(result.perDeviceKB / raw.perClientKB).toFixed(2)}`);

const connectedAll = report.connected === DEVICES && report.failedConnects === 0;
console.log(`${DEVICES} devices, ${SECONDS} s run, 0 failed connects: ${connectedAll ? 'PASS' : 'FAIL'}`);
if (!connectedAll) process.exitCode = 1;
verdict('KB of RSS per simulated device', result.perDeviceKB, 40, false);
