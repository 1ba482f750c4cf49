// The emulator as a cluster on Redis (issue 20), against one emulator process, on this machine:
// 1. connect rate: BENCH_CONNECT_DEVICES devices connecting to one emulator process, then to a 2-process cluster
//    (`emulator --cluster 2`), the same client side both times: the fleet simulator (`simulate --processes 2`, shard I
//    on process I), as a user would load it. Goal: cluster >= 1.5x. Beside it, with no target, the same with a lean
//    client (bench/lib/connect-storm.mjs: raw sockets, CONNECT packets encoded before the clock starts, device I on
//    process I mod 2), which leaves the brokers more of the two cores: what the brokers alone gain.
// 2. message latency: QoS 1 messages paced at a steady rate, publisher and subscriber on one plain emulator (the
//    baseline), on one process of the cluster, and on two different processes of it; p50 and p99.
// 3. the fleet: `simulate --processes 2 --redis` with BENCH_CLUSTER_FLEET devices (default 20,000; 0 skips) and one
//    consumer subscribed to sim/# on the first process: does it receive every device's messages?
// 0. first, what one CONNECT costs the emulator in CPU, plain and clustered (less sensitive to a loaded machine).
// Needs redis-server on the PATH. BENCH_CONNECT_DEVICES (5,000), BENCH_ROUNDS (3), BENCH_LATENCY_MESSAGES (3,000).
// BENCH_CLUSTER_PARTS: which parts to run, comma-separated (default 0,1,2,3); `BENCH_CLUSTER_PARTS=0` measures only
// the CPU per CONNECT (and the Redis commands each costs, from INFO commandstats), in a minute or so.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import mqtt from 'mqtt';
import { signDeviceCredential, signSignature } from '../dist/index.js';
import { MemoryCredentialStore, provisionFleet } from '../dist/provisioner/index.js';
import { CLI, ROOT, lastJson, median, runNode, verdict } from './lib/child.mjs';

const DEVICES = Number(process.env.BENCH_CONNECT_DEVICES ?? 5_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const MESSAGES = Number(process.env.BENCH_LATENCY_MESSAGES ?? 3_000);
const FLEET = Number(process.env.BENCH_CLUSTER_FLEET ?? 20_000);
const PARTS = new Set((process.env.BENCH_CLUSTER_PARTS ?? '0,1,2,3').split(',').map((part) => part.trim()));
const load = () => loadavg().map((l) => l.toFixed(1)).join(' ');

/** Start the CLI (through a shell that raises the open-file limit) and read its first stdout line as JSON. */
function startCli(args) {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', 'ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"', process.execPath, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr = `${stderr}${d}`.slice(-4_000);
    });
    const exited = new Promise((r) => child.once('exit', r));
    createInterface({ input: child.stdout }).once('line', (line) => {
      resolve({
        info: JSON.parse(line),
        pid: child.pid,
        stop: async () => {
          if (child.exitCode === null) child.kill('SIGTERM');
          await exited;
        },
      });
    });
    child.once('exit', (code) => reject(new Error(`apsaramq-device ${args.join(' ')} exited with ${code}: ${stderr}`)));
  });
}

// The fleet's GroupId, and the latency pair's and the backend consumer's (the emulator refuses a GroupId not created).
const EMULATOR = ['--mqtt-port', '0', '--api-port', '0', '--no-ws', '--qps-limit', '1000000', '--groups', 'GID_sim,GID_bench,GID_backend', '--json'];

/** A redis-server of the bench's own: a cluster started without --redis starts one and stops it with itself. */
async function cluster(processes) {
  return startCli(['emulator', '--cluster', String(processes), ...EMULATOR]);
}

/** The fleet's connect rate: `simulate --processes 2` (connect only, as fast as possible) with these flags. */
async function connectRate(extra, env = {}) {
  const run = await runNode(CLI, ['simulate', '--processes', '2', '--devices', String(DEVICES), '--connect-rate', '0', '--duration', '0', '--publish-interval', '0', '--api-qps', '20000', '--api-concurrency', '128', '--max-connecting', '2000', '--json', '--no-progress', ...extra], { raiseFileLimit: true, env });
  if (run.code !== 0) throw new Error(`simulate exited with ${run.code}: ${run.stderr.slice(-2000)}`);
  const report = lastJson(run.stdout);
  if (report.connected !== DEVICES) throw new Error(`only ${report.connected} of ${DEVICES} connected`);
  return report.connectRatePerSec;
}

const STORM = join(ROOT, 'bench', 'lib', 'connect-storm.mjs');

/**
 * The lean connect rate: DEVICES devices registered through `apiEndpoint` (before the clock starts), then connected
 * by raw sockets in a process of their own (bench/lib/connect-storm.mjs), device I to `mqttUrls[I % length]`.
 */
async function stormRate(info, apiEndpoint, mqttUrls) {
  const ids = Array.from({ length: DEVICES }, (_, i) => `GID_sim@@@storm-${i}`);
  const env = { ALIBABA_CLOUD_ACCESS_KEY_ID: info.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: info.accessKeySecret };
  const fleet = await provisionFleet(ids, { endpoint: apiEndpoint, instanceId: info.instanceId, env, store: new MemoryCredentialStore(), qps: 100_000, concurrency: 64 });
  if (fleet.failed.length > 0) throw new Error(`provisioning failed for ${fleet.failed.length} devices: ${fleet.failed[0].code}`);
  const dir = await mkdtemp(join(tmpdir(), 'bench-cluster-storm-'));
  try {
    const file = join(dir, 'logins.json');
    await writeFile(file, JSON.stringify({ urls: mqttUrls, logins: ids.map((id) => signDeviceCredential(fleet.credentials.get(id))), concurrency: 2_000 }), { mode: 0o600 });
    const run = await runNode(STORM, [file], { raiseFileLimit: true });
    if (run.code !== 0) throw new Error(`connect-storm exited with ${run.code}: ${run.stderr.slice(-2000)}`);
    return lastJson(run.stdout).perSec;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** One emulator process: the lean rate, then the fleet's two shards on it (through its endpoint, with a store of the run's own). */
async function onOneProcess() {
  const lean = await (async () => {
    const one = await startCli(['emulator', '--ephemeral', ...EMULATOR]);
    try {
      return await stormRate(one.info, one.info.apiEndpoint, [one.info.mqttUrl]);
    } finally {
      await one.stop();
    }
  })();
  const one = await startCli(['emulator', '--ephemeral', ...EMULATOR]);
  const store = await mkdtemp(join(tmpdir(), 'bench-cluster-store-'));
  try {
    const { info } = one;
    return { lean, fleet: await connectRate(['--endpoint', info.apiEndpoint, '--broker-url', info.mqttUrl, '--instance-id', info.instanceId, '--store', store], { ALIBABA_CLOUD_ACCESS_KEY_ID: info.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: info.accessKeySecret }) };
  } finally {
    await one.stop();
    await rm(store, { recursive: true, force: true });
  }
}

/** Two processes of a cluster: the lean rate (device I on process I mod 2), then the fleet (shard I on process I). */
async function onCluster() {
  const lean = await (async () => {
    const two = await cluster(2);
    try {
      return await stormRate(two.info, two.info.processes[0].apiEndpoint, two.info.processes.map((p) => p.mqttUrl));
    } finally {
      await two.stop();
    }
  })();
  const two = await cluster(2);
  try {
    return { lean, fleet: await connectRate(['--redis', two.info.redisUrl]) };
  } finally {
    await two.stop();
  }
}

/** CPU time (user + system) a process has used so far, in ms (Linux: /proc/<pid>/stat, 100 ticks a second). */
function cpuMs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** A redis-server of the bench's own on a free port (for a 1-process cluster), stopped by `stop()`. */
async function startRedis() {
  const probe = createServer();
  await new Promise((r) => probe.listen(0, '127.0.0.1', r));
  const port = probe.address().port;
  await new Promise((r) => probe.close(r));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'ignore'] });
  await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => /Ready to accept connections/.test(line) && resolve());
    child.once('exit', () => reject(new Error('redis-server did not start')));
  });
  child.stdout.resume();
  const url = `redis://127.0.0.1:${port}`;
  const client = new Redis(url);
  return { url, pid: child.pid, client, stop: async () => { client.disconnect(); child.kill(); await new Promise((r) => child.once('exit', r)); } };
}

/**
 * The commands Redis ran per CONNECT and DISCONNECT (INFO commandstats since the last RESETSTAT), most first. Commands
 * a script ran count too, each as its own name: `evalsha` is one round trip, the commands after it may be its own.
 */
async function commandsPerConnect(client) {
  const rows = [...(await client.info('commandstats')).matchAll(/^cmdstat_(\S+?):calls=(\d+)/gm)].map(([, name, calls]) => [name, Number(calls) / DEVICES]).filter(([name, per]) => per >= 0.01 && name !== 'config|resetstat');
  rows.sort((a, b) => b[1] - a[1]);
  const total = rows.reduce((sum, [, per]) => sum + per, 0);
  return `${total.toFixed(2)} (${rows.map(([name, per]) => `${name} ${per.toFixed(2)}`).join(', ')})`;
}

/**
 * What one connect costs the emulator in CPU (ms per 1,000 CONNECTs and their DISCONNECTs: in all, the emulator's, and
 * its Redis's), measured on the second of two runs of one fleet (the store holds every credential by then: no API call,
 * only MQTT), so that the shared machine's load bears on the wall-clock rate, not on this.
 */
async function connectCost(emulatorArgs, redis) {
  const emulator = await startCli(['emulator', ...emulatorArgs, ...EMULATOR]);
  const store = await mkdtemp(join(tmpdir(), 'bench-cluster-store-'));
  try {
    const { info } = emulator;
    const flags = ['--endpoint', info.apiEndpoint, '--broker-url', info.mqttUrl, '--instance-id', info.instanceId, '--store', store];
    const env = { ALIBABA_CLOUD_ACCESS_KEY_ID: info.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: info.accessKeySecret };
    await connectRate(flags, env);
    await redis?.client.config('RESETSTAT');
    const before = { emulator: cpuMs(emulator.pid), redis: redis ? cpuMs(redis.pid) : 0 };
    await connectRate(flags, env);
    const emulatorMs = ((cpuMs(emulator.pid) - before.emulator) / DEVICES) * 1_000;
    const redisMs = redis ? ((cpuMs(redis.pid) - before.redis) / DEVICES) * 1_000 : 0;
    // The fleet's last DISCONNECTs may still be on their way: the commands are counted once the emulator has none left.
    while (redis && (await (await fetch(`${info.apiEndpoint}/_emulator/stats`)).json()).mqtt.connected > 0) await new Promise((r) => setTimeout(r, 100));
    return { total: emulatorMs + redisMs, emulator: emulatorMs, redis: redisMs, commands: redis ? await commandsPerConnect(redis.client) : '' };
  } finally {
    await emulator.stop();
    await rm(store, { recursive: true, force: true });
  }
}

console.log(`load average at start: ${load()}`);
if (PARTS.has('0')) {
  const redis = await startRedis();
  const plainCost = await connectCost(['--ephemeral']);
  const memberCost = await connectCost(['--redis', redis.url], redis);
  await redis.stop();
  console.log(`CPU per 1,000 connects and disconnects: one plain emulator process ${plainCost.total.toFixed(0)} ms, one process of a cluster (and its Redis) ${memberCost.total.toFixed(0)} ms (${memberCost.emulator.toFixed(0)} + ${memberCost.redis.toFixed(0)}): ${(memberCost.total / plainCost.total).toFixed(2)}x (load ${load()})`);
  console.log(`Redis commands per connect and disconnect: ${memberCost.commands}`);
}
const single = [];
const clustered = [];
for (let round = 1; PARTS.has('1') && round <= ROUNDS; round++) {
  if (round % 2) {
    single.push(await onOneProcess());
    clustered.push(await onCluster());
  } else {
    clustered.push(await onCluster());
    single.push(await onOneProcess());
  }
  const [s, c] = [single.at(-1), clustered.at(-1)];
  console.log(`round ${round}: lean CONNECTs: one emulator process ${s.lean.toFixed(0)}/s, 2-process cluster ${c.lean.toFixed(0)}/s; simulate: ${s.fleet}/s, ${c.fleet}/s (load ${load()})`);
}
if (PARTS.has('1')) {
  const of = (runs, kind) => median(runs.map((r) => r[kind]));
  console.log(`connect rate at ${DEVICES} devices (medians of ${ROUNDS}): simulate --processes 2: one process ${of(single, 'fleet').toFixed(0)}/s, 2-process cluster ${of(clustered, 'fleet').toFixed(0)}/s; lean CONNECTs: ${of(single, 'lean').toFixed(0)}/s, ${of(clustered, 'lean').toFixed(0)}/s (${(of(clustered, 'lean') / of(single, 'lean')).toFixed(2)}x, no target: the brokers alone)`);
  verdict('2-process cluster / one process connect rate (simulate --processes 2)', of(clustered, 'fleet') / of(single, 'fleet'), 1.5);
}

/** p50 and p99 of the latency of MESSAGES QoS 1 messages, paced at 1,000 a second, from `from` to `to`. */
async function latency(login, from, to) {
  const subscriber = await mqtt.connectAsync(to, { ...signSignature({ ...login, clientId: 'GID_bench@@@sub' }), protocolVersion: 4, reconnectPeriod: 0 });
  const publisher = await mqtt.connectAsync(from, { ...signSignature({ ...login, clientId: 'GID_bench@@@pub' }), protocolVersion: 4, reconnectPeriod: 0 });
  await subscriber.subscribeAsync('demo/latency', { qos: 1 });
  const samples = [];
  const done = new Promise((resolve) => {
    subscriber.on('message', (_topic, payload) => {
      samples.push(performance.now() - payload.readDoubleBE(0));
      if (samples.length === MESSAGES) resolve();
    });
  });
  const start = performance.now();
  for (let i = 0; i < MESSAGES; i++) {
    const due = start + i;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const payload = Buffer.alloc(8);
    payload.writeDoubleBE(performance.now(), 0);
    publisher.publish('demo/latency', payload, { qos: 1 });
  }
  await done;
  await Promise.all([publisher.endAsync(), subscriber.endAsync()]);
  samples.sort((a, b) => a - b);
  const at = (q) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))];
  return { p50: at(0.5), p99: at(0.99) };
}

const show = ({ p50, p99 }) => `p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`;
if (PARTS.has('2')) {
  console.log(`\nlatency of ${MESSAGES} QoS 1 messages at 1,000/s (load ${load()}):`);
  const plain = await startCli(['emulator', '--ephemeral', ...EMULATOR]);
  const within = await latency(plain.info, plain.info.mqttUrl, plain.info.mqttUrl);
  await plain.stop();
  console.log(`  one plain emulator process:             ${show(within)}`);
  const pair = await cluster(2);
  const [p1, p2] = pair.info.processes;
  const login = { instanceId: pair.info.instanceId, accessKeyId: pair.info.accessKeyId, accessKeySecret: pair.info.accessKeySecret };
  const sameProcess = await latency(login, p1.mqttUrl, p1.mqttUrl);
  const acrossProcesses = await latency(login, p1.mqttUrl, p2.mqttUrl);
  await pair.stop();
  console.log(`  cluster, publisher and subscriber on one process:  ${show(sameProcess)}`);
  console.log(`  cluster, on two processes:              ${show(acrossProcesses)}`);
  console.log(`  p99 across processes / one plain process: ${(acrossProcesses.p99 / within.p99).toFixed(2)}x; within one process of the cluster: ${(sameProcess.p99 / within.p99).toFixed(2)}x (no target: what the bus costs)`);
}

if (PARTS.has('3') && FLEET > 0) {
  const pair = await cluster(2);
  const [p1] = pair.info.processes;
  const login = { instanceId: pair.info.instanceId, accessKeyId: pair.info.accessKeyId, accessKeySecret: pair.info.accessKeySecret };
  console.log(`\nthe fleet: ${FLEET} devices, simulate --processes 2 --redis, one consumer of sim/# on process 1 (load ${load()})`);
  const consumer = await mqtt.connectAsync(p1.mqttUrl, { ...signSignature({ ...login, clientId: 'GID_backend@@@consumer' }), protocolVersion: 4, reconnectPeriod: 0 });
  const perTopic = new Map();
  let received = 0;
  let expected = Number.POSITIVE_INFINITY;
  let allIn = () => undefined;
  const arrived = new Promise((resolve) => (allIn = resolve));
  consumer.on('message', (topic) => {
    received += 1;
    perTopic.set(topic, (perTopic.get(topic) ?? 0) + 1);
    if (received >= expected) allIn();
  });
  await consumer.subscribeAsync('sim/#', { qos: 1 });
  const started = performance.now();
  const run = await runNode(CLI, ['simulate', '--processes', '2', '--redis', pair.info.redisUrl, '--devices', String(FLEET), '--connect-rate', '2000', '--duration', '60', '--publish-interval', '10000', '--qos', '1', '--api-qps', '20000', '--api-concurrency', '128', '--json', '--no-progress'], { raiseFileLimit: true });
  if (run.code !== 0) console.log(`  simulate exited with ${run.code}: ${run.stderr.slice(-1500)}`);
  const report = lastJson(run.stdout);
  // The last messages may still be on their way from process 2 when the run ends.
  expected = report.acked;
  if (received >= expected) allIn();
  await Promise.race([arrived, new Promise((r) => setTimeout(r, 10_000))]);
  await consumer.endAsync();
  console.log(`  ${report.connected} of ${FLEET} connected (${report.connectRatePerSec}/s), ${report.published} published, ${report.acked} acknowledged, e2e p99 ${report.e2eLatencyMs?.p99 ?? '-'} ms; run ${((performance.now() - started) / 1000).toFixed(0)} s`);
  console.log(`  the consumer received ${received} messages from ${perTopic.size} devices (${received === report.acked ? 'every message the fleet published' : 'NOT every message'}${perTopic.size === FLEET ? ', every device' : ''})`);
  verdict('messages the consumer received / messages the fleet had acknowledged', received / report.acked, 1);
  await pair.stop();
}
console.log(`load average at end: ${load()}`);
