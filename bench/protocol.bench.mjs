// MQTT 5 devices beside MQTT 3.1.1 (context, not a goal): the connect rate of `simulate --protocol 5` against
// `--protocol 4` (the baseline), same command and fleet, each run with its own embedded emulator. Rounds alternate
// which protocol goes first, so that a change of the machine's load falls on both; the ratio is of the medians.
// BENCH_PROTOCOL_DEVICES (5,000) and BENCH_PROTOCOL_ROUNDS (3) change the size.
import { loadavg } from 'node:os';
import { CLI, lastJson, median, runNode } from './lib/child.mjs';

const DEVICES = Number(process.env.BENCH_PROTOCOL_DEVICES ?? 5_000);
const ROUNDS = Number(process.env.BENCH_PROTOCOL_ROUNDS ?? 3);
const load = () => loadavg().map((n) => n.toFixed(2)).join(' ');

/** One run of the fleet at `protocol`; its report. */
async function run(protocol) {
  const args = ['simulate', '--protocol', String(protocol), '--devices', String(DEVICES), '--connect-rate', '0', '--duration', '0', '--publish-interval', '0', '--api-qps', '20000', '--api-concurrency', '128', '--no-progress', '--json'];
  const result = await runNode(CLI, args, { raiseFileLimit: true });
  if (result.code !== 0) throw new Error(`simulate --protocol ${protocol} exited with ${result.code}: ${result.stderr.slice(-2_000)}`);
  return lastJson(result.stdout);
}

console.log(`${DEVICES} devices, ${ROUNDS} rounds, load average at start: ${load()}`);
const rates = { 4: [], 5: [] };
for (let round = 0; round < ROUNDS; round++) {
  for (const protocol of round % 2 === 0 ? [4, 5] : [5, 4]) {
    const report = await run(protocol);
    rates[protocol].push(report.connectRatePerSec);
    console.log(`round ${round + 1}, MQTT ${protocol === 5 ? '5' : '3.1.1'}: connected ${report.connected}, failed ${report.failedConnects}, ${report.connectRatePerSec}/s, connect p99 ${report.connectLatencyMs.p99} ms, peak RSS ${report.peakRssMB} MB, load ${load()}`);
  }
}
const ratio = median(rates[5]) / median(rates[4]);
console.log(`connect rate, median: MQTT 5 ${median(rates[5]).toFixed(0)}/s, MQTT 3.1.1 ${median(rates[4]).toFixed(0)}/s: ${ratio.toFixed(2)}x (context, no goal)`);
