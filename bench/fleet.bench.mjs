// A large fleet on one machine. (1) One run of BENCH_FLEET_DEVICES (50,000) devices against the embedded emulator
// (in its own process), 1,000 connects/s, a QoS 1 message per device every 5 s, spread over two source addresses
// (--local-address): 0 failed connects and at most 8 KB of RSS per simulated device (peak RSS of the run, provisioning
// included, minus the RSS before it), against raw mqtt.js clients holding sessions to a plain aedes (the baseline, in
// the same run). (2) BENCH_FLEET_TOTAL (100,000) devices as shards of one run, one after another on this machine,
// each with its own embedded emulator, merged by `report merge` into one report with 0 failed connects.
//
// Every device holds a socket in the simulator and one in the emulator process: each process needs an open-file
// limit above its device count. The bench raises the soft limit to the hard limit; when the hard limit is below the
// device count it says so and runs the largest fleet per process that fits (shards of that size for the total).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT, lastJson, runNode, startNode, verdict } from './lib/child.mjs';

const DEVICES = Number(process.env.BENCH_FLEET_DEVICES ?? 50_000);
const TOTAL = Number(process.env.BENCH_FLEET_TOTAL ?? 100_000);
const SECONDS = Number(process.env.BENCH_FLEET_SECONDS ?? 30);
const SOURCES = process.env.BENCH_FLEET_SOURCES ?? '127.0.0.2-127.0.0.3';
/** Sockets and files a Node process holds besides its devices' sockets. */
const RESERVED = 500;
const lib = join(ROOT, 'bench', 'lib');
const shell = (command) => execFileSync('sh', ['-c', command], { encoding: 'utf8' }).trim();

const hard = shell('ulimit -Hn');
const hardLimit = hard === 'unlimited' ? Number.POSITIVE_INFINITY : Number(hard);
const nrOpen = Number(readFileSync('/proc/sys/fs/nr_open', 'utf8'));
const fits = Math.floor((Math.min(hardLimit, nrOpen) - RESERVED) / 1_000) * 1_000;
const perProcess = Math.min(DEVICES, fits);
console.log(`open files: soft ${shell('ulimit -n')}, hard ${hard}, fs.nr_open ${nrOpen}; raised to the hard limit for every process below`);
if (perProcess < DEVICES) {
  console.log(`LIMIT: ${DEVICES} devices need ${DEVICES}+ sockets in the simulator and as many in the emulator process, but the hard open-file limit is ${hard} (raising it needs CAP_SYS_RESOURCE, which this environment lacks): running ${perProcess} devices per process instead`);
}
const load = () => loadavg().map((n) => n.toFixed(2)).join(' ');
console.log(`load average at start: ${load()}`);

/** `node <args>` with the open-file limit raised to the hard limit (a fork inherits it: the emulator process too). */
const raised = (script, args, options = {}) => runNode(script, args, { ...options, raiseFileLimit: true });

// (1) One run.
const single = await raised(join(lib, 'memory-run.mjs'), [String(perProcess), String(SECONDS)], { echo: 'fleet', nodeArgs: ['--expose-gc'], env: { BENCH_LOCAL_ADDRESS: SOURCES } });
if (single.code !== 0) throw new Error(`fleet run failed (${single.code}): ${single.stderr}`);
const run = lastJson(single.stdout);
const { report } = run;
console.log(`one run: ${perProcess} devices over ${SOURCES}, ${SECONDS} s: connected ${report.connected}, failed connects ${report.failedConnects}, errors ${JSON.stringify(report.errors)}, published ${report.published}, acked ${report.acked}, connect rate ${report.connectRatePerSec}/s, connect p50 ${report.connectLatencyMs.p50} ms p99 ${report.connectLatencyMs.p99} ms, elapsed ${(report.elapsedMs / 1_000).toFixed(1)} s`);
console.log(`simulator RSS: ${run.baseRssMB} MB before, ${run.allConnectedRssMB} MB with all connected, ${run.peakRssMB} MB peak -> ${run.perDeviceKB} KB per device (peak), ${run.perDeviceAllConnectedKB} KB (all connected); load average ${load()}`);

// Its baseline: raw mqtt.js clients holding as many sessions.
const broker = await startNode(join(lib, 'hmac-broker.mjs'), [], {}, { raiseFileLimit: true });
let baseline;
try {
  const raw = await raised(join(lib, 'raw-memory.mjs'), [broker.info.url, String(perProcess)], { nodeArgs: ['--expose-gc'] });
  if (raw.code !== 0) throw new Error(`raw mqtt.js memory run failed: ${raw.stderr}`);
  baseline = lastJson(raw.stdout);
} finally {
  await broker.stop();
}
console.log(`baseline: ${baseline.connected} raw mqtt.js clients -> ${baseline.perClientKB} KB per client (peak), ${baseline.perClientHeldKB} KB (held); simulated device / mqtt.js client: ${(run.perDeviceKB / baseline.perClientKB).toFixed(2)}`);
const singleOk = report.connected === perProcess && report.failedConnects === 0;
console.log(`${perProcess} devices in one run, 0 failed connects: ${singleOk ? 'PASS' : 'FAIL'}`);
if (!singleOk) process.exitCode = 1;
verdict('KB of RSS per simulated device', run.perDeviceKB, 8, false);

// (2) The total as shards, one after another, merged.
const shards = Math.ceil(TOTAL / perProcess);
const dir = await mkdtemp(join(tmpdir(), 'apsaramq-fleet-bench-'));
try {
  const files = [];
  for (let i = 1; i <= shards; i++) {
    const file = join(dir, `shard${i}.json`);
    // The connect rate is fleet-wide and each shard takes its share: 1,000/s per shard.
    const shard = await raised(CLI, [
      'simulate', '--devices', String(TOTAL), '--shard', `${i}/${shards}`, '--connect-rate', String(1_000 * shards), '--duration', String(SECONDS),
      '--publish-interval', '5000', '--local-address', SOURCES, '--api-qps', '20000', '--api-concurrency', '128', '--no-progress', '--report', file,
    ], { echo: `shard ${i}/${shards}` });
    if (shard.code !== 0) throw new Error(`shard ${i}/${shards} exited with ${shard.code}: ${shard.stderr.slice(-2_000)}`);
    const r = JSON.parse(await readFile(file, 'utf8'));
    console.log(`shard ${i}/${shards}: ${r.devices} devices, connected ${r.connected}, failed ${r.failedConnects}, peak RSS ${r.peakRssMB} MB, connect p99 ${r.connectLatencyMs.p99} ms, load average ${load()}`);
    files.push(file);
  }
  const merged = await runNode(CLI, ['report', 'merge', ...files, '--json', '--output', join(ROOT, 'tmp', 'fleet-100k.json'), '--html', join(ROOT, 'tmp', 'fleet-100k.html')]);
  if (merged.code !== 0) throw new Error(`report merge exited with ${merged.code}: ${merged.stderr}`);
  const fleet = lastJson(merged.stdout);
  console.log(merged.stderr.trim());
  console.log(`merged: ${fleet.devices} devices in ${fleet.shards.length} shards, connected ${fleet.connected}, failed connects ${fleet.failedConnects}, published ${fleet.published}, acked ${fleet.acked}, connect p50 ${fleet.connectLatencyMs.p50} ms p99 ${fleet.connectLatencyMs.p99} ms max ${fleet.connectLatencyMs.max} ms, largest shard peak RSS ${fleet.peakRssMB} MB (tmp/fleet-100k.html)`);
  const totalOk = fleet.devices === TOTAL && fleet.connected === TOTAL && fleet.failedConnects === 0;
  console.log(`${TOTAL} devices as ${shards} merged shards, 0 failed connects: ${totalOk ? 'PASS' : 'FAIL'}`);
  if (!totalOk) process.exitCode = 1;
} finally {
  await rm(dir, { recursive: true, force: true });
}
console.log(`load average at end: ${load()}`);
