// A large fleet on one machine. (1) One run of BENCH_FLEET_DEVICES (50,000) devices against the embedded emulator,
// 1,000 connects/s, a QoS 1 message per device every 5 s, spread over three source addresses (--local-address), as ONE
// command: `simulate --processes P`, P shard processes started together, each with its own embedded emulator
// process, their reports merged by the parent. Goals: 0 failed connects and at most 8 KB of RSS per simulated
// device: the sum over the shard processes of (peak RSS of the run, provisioning included, minus the RSS when the
// run started), divided by the devices; against raw mqtt.js clients holding sessions to a plain aedes (the baseline,
// in the same run, as many clients as one shard holds). (2) BENCH_FLEET_TOTAL (100,000) devices as slices of (1)'s
// size (two halves of 50,000: `--shard I/2 --processes P`), one after another on this machine, merged by
// `report merge` into one report with 0 failed connects.
//
// Every device holds a socket in its simulator process and one in that shard's emulator process: each process needs
// an open-file limit above its device count. The bench raises the soft limit to the hard limit and gives each
// process the largest share that fits (P = ceil(devices / what fits), 3 for 50,000 under a 20,000 hard limit).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT, lastJson, runNode, startNode, verdict } from './lib/child.mjs';

const DEVICES = Number(process.env.BENCH_FLEET_DEVICES ?? 50_000);
const TOTAL = Number(process.env.BENCH_FLEET_TOTAL ?? 100_000);
const CONNECT_RATE = 1_000;
// Long enough that the last device, connecting at 1,000/s, still publishes for 10 s.
const secondsFor = (devices) => Number(process.env.BENCH_FLEET_SECONDS ?? Math.max(30, Math.ceil(devices / CONNECT_RATE) + 10));
const SECONDS = secondsFor(DEVICES);
// Three addresses: the shard processes share each address's ephemeral port range (about 28,000 ports).
const SOURCES = process.env.BENCH_FLEET_SOURCES ?? '127.0.0.2-127.0.0.4';
/** Sockets and files a Node process holds besides its devices' sockets. */
const RESERVED = 500;
const MB = 1024 * 1024;
const lib = join(ROOT, 'bench', 'lib');
const shell = (command) => execFileSync('sh', ['-c', command], { encoding: 'utf8' }).trim();

const hard = shell('ulimit -Hn');
const hardLimit = hard === 'unlimited' ? Number.POSITIVE_INFINITY : Number(hard);
const nrOpen = Number(readFileSync('/proc/sys/fs/nr_open', 'utf8'));
// BENCH_FLEET_PER_PROCESS lowers it (to try the bench quickly with small numbers).
const fits = Math.min(Number(process.env.BENCH_FLEET_PER_PROCESS ?? Number.POSITIVE_INFINITY), Math.floor((Math.min(hardLimit, nrOpen) - RESERVED) / 1_000) * 1_000);
const processes = Math.ceil(DEVICES / fits);
const perProcess = Math.min(DEVICES, fits);
console.log(`open files: soft ${shell('ulimit -n')}, hard ${hard}, fs.nr_open ${nrOpen}; raised to the hard limit for every process below; up to ${fits} devices per process`);
const load = () => loadavg().map((n) => n.toFixed(2)).join(' ');
console.log(`load average at start: ${load()}`);

/** `node <args>` with the open-file limit raised to the hard limit (children inherit it: the shards and their emulators too). */
const raised = (script, args, options = {}) => runNode(script, args, { ...options, raiseFileLimit: true });

// (1) One run, one command, `processes` shard processes.
const dir1 = await mkdtemp(join(tmpdir(), 'apsaramq-fleet-bench-'));
let report;
try {
  const file = join(dir1, 'run.json');
  const started = Date.now();
  const single = await raised(CLI, [
    'simulate', '--devices', String(DEVICES), '--processes', String(processes), '--connect-rate', String(CONNECT_RATE), '--duration', String(SECONDS),
    '--publish-interval', '5000', '--local-address', SOURCES, '--api-qps', '20000', '--api-concurrency', '128', '--report', file,
  ], { echo: 'fleet' });
  console.log(`wall time of the command: ${((Date.now() - started) / 1_000).toFixed(1)} s; load average ${load()}`);
  if (single.code !== 0 && single.code !== 1) throw new Error(`fleet run failed (${single.code}): ${single.stderr.slice(-2_000)}`);
  report = JSON.parse(await readFile(file, 'utf8'));
} finally {
  await rm(dir1, { recursive: true, force: true });
}
const grown = report.shards.map((s) => ({ index: s.index, devices: s.devices, baseRssMB: s.baseRssMB, peakRssMB: s.peakRssMB, grownMB: +(s.peakRssMB - s.baseRssMB).toFixed(1) }));
const perDeviceKB = (grown.reduce((total, s) => total + s.grownMB, 0) * MB) / DEVICES / 1024;
console.log(`one run: ${DEVICES} devices in ${processes} processes over ${SOURCES}, ${SECONDS} s: connected ${report.connected}, failed connects ${report.failedConnects}, errors ${JSON.stringify(report.errors)}, published ${report.published}, acked ${report.acked}, connect rate ${report.connectRatePerSec}/s, connect p50 ${report.connectLatencyMs.p50} ms p99 ${report.connectLatencyMs.p99} ms max ${report.connectLatencyMs.max} ms, elapsed ${(report.elapsedMs / 1_000).toFixed(1)} s`);
for (const s of report.shards) console.log(`  shard ${s.index}/${s.count}: ${s.devices} devices, connected ${s.connected}, started ${s.startedAt}, ${(s.elapsedMs / 1_000).toFixed(1)} s, RSS ${s.baseRssMB} MB at the start, ${s.peakRssMB} MB peak`);
console.log(`simulator RSS: sum over shards of (peak - start) = ${grown.reduce((t, s) => t + s.grownMB, 0).toFixed(1)} MB -> ${perDeviceKB.toFixed(1)} KB per device`);

// Its baseline: raw mqtt.js clients holding as many sessions.
const broker = await startNode(join(lib, 'hmac-broker.mjs'), [], {}, { raiseFileLimit: true });
let baseline;
try {
  const raw = await raised(join(lib, 'raw-memory.mjs'), [broker.info.url, String(Math.ceil(DEVICES / processes))], { nodeArgs: ['--expose-gc'] });
  if (raw.code !== 0) throw new Error(`raw mqtt.js memory run failed: ${raw.stderr}`);
  baseline = lastJson(raw.stdout);
} finally {
  await broker.stop();
}
console.log(`baseline: ${baseline.connected} raw mqtt.js clients -> ${baseline.perClientKB} KB per client (peak), ${baseline.perClientHeldKB} KB (held); simulated device / mqtt.js client: ${(perDeviceKB / baseline.perClientKB).toFixed(2)}`);
const singleOk = report.devices === DEVICES && report.connected === DEVICES && report.failedConnects === 0;
console.log(`${DEVICES} devices in one run (${processes} processes), 0 failed connects: ${singleOk ? 'PASS' : 'FAIL'}`);
if (!singleOk) process.exitCode = 1;
verdict('KB of RSS per simulated device', perDeviceKB, 8, false);

// (2) The total as slices of DEVICES devices (two halves of 50,000), one after another, each one `--processes` run,
// merged by `report merge`.
const slices = Math.ceil(TOTAL / DEVICES);
const dir = await mkdtemp(join(tmpdir(), 'apsaramq-fleet-bench-'));
try {
  const files = [];
  for (let i = 1; i <= slices; i++) {
    const file = join(dir, `slice${i}.json`);
    // The connect rate is fleet-wide and each slice takes its share: 1,000/s per slice, as in (1).
    const slice = await raised(CLI, [
      'simulate', '--devices', String(TOTAL), '--shard', `${i}/${slices}`, '--processes', String(processes), '--connect-rate', String(CONNECT_RATE * slices),
      '--duration', String(SECONDS), '--publish-interval', '5000', '--local-address', SOURCES, '--api-qps', '20000', '--api-concurrency', '128', '--no-progress',
      '--report', file,
    ], { echo: `slice ${i}/${slices}` });
    if (slice.code !== 0 && slice.code !== 1) throw new Error(`slice ${i}/${slices} exited with ${slice.code}: ${slice.stderr.slice(-2_000)}`);
    const r = JSON.parse(await readFile(file, 'utf8'));
    console.log(`slice ${i}/${slices} (${processes} processes): ${r.devices} devices, connected ${r.connected}, failed ${r.failedConnects}, errors ${JSON.stringify(r.errors)}, largest shard peak RSS ${r.peakRssMB} MB, connect p99 ${r.connectLatencyMs.p99} ms, load average ${load()}`);
    files.push(file);
  }
  await mkdir(join(ROOT, 'tmp'), { recursive: true });
  const merged = await runNode(CLI, ['report', 'merge', ...files, '--json', '--output', join(ROOT, 'tmp', 'fleet-100k.json'), '--html', join(ROOT, 'tmp', 'fleet-100k.html')]);
  if (merged.code !== 0) throw new Error(`report merge exited with ${merged.code}: ${merged.stderr}`);
  const fleet = lastJson(merged.stdout);
  console.log(merged.stderr.trim());
  console.log(`merged: ${fleet.devices} devices in ${fleet.shards.length} shards, connected ${fleet.connected}, failed connects ${fleet.failedConnects}, published ${fleet.published}, acked ${fleet.acked}, connect p50 ${fleet.connectLatencyMs.p50} ms p99 ${fleet.connectLatencyMs.p99} ms max ${fleet.connectLatencyMs.max} ms, largest shard peak RSS ${fleet.peakRssMB} MB (tmp/fleet-100k.html)`);
  const totalOk = fleet.devices === TOTAL && fleet.connected === TOTAL && fleet.failedConnects === 0;
  console.log(`${TOTAL} devices as ${slices} merged slices of ${DEVICES} (${fleet.shards.length} shards), 0 failed connects: ${totalOk ? 'PASS' : 'FAIL'}`);
  if (!totalOk) process.exitCode = 1;
} finally {
  await rm(dir, { recursive: true, force: true });
}
console.log(`load average at end: ${load()}`);
