// Child of connector.bench.mjs: opens N connectDevice() sessions from one build of the library (its dist/ is the
// first argument) against one broker, as fast as `concurrency` CONNECTs in flight allow, and prints one JSON line:
// the connect rate (first CONNECT started to last CONNACK), the CPU time spent per session, and the RSS (and heap)
// growth per open session (after a forced GC).
// Usage: node --expose-gc connector-sessions.mjs <dist dir> <credentials.json> <broker URL> <concurrency>
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

const [dist, credentialsFile, brokerUrl, concurrencyArg] = process.argv.slice(2);
const concurrency = Number(concurrencyArg ?? 200);
const { connectDevice, DeviceCredential } = await import(pathToFileURL(join(dist, 'index.js')).href);
const credentials = JSON.parse(readFileSync(credentialsFile, 'utf8')).map((wire) => DeviceCredential.fromWire(wire));

const settle = () => new Promise((resolve) => setImmediate(resolve));
async function rssAfterGc() {
  for (let i = 0; i < 3; i++) {
    globalThis.gc?.();
    await settle();
  }
  return process.memoryUsage();
}

// Optional warm-up (BENCH_CONNECTOR_WARMUP sessions opened and closed first, not measured): separates the JIT's
// first compilation of the connector's code from the steady cost per session.
const warmup = Number(process.env.BENCH_CONNECTOR_WARMUP ?? 0);
for (let i = 0; i < warmup; i += concurrency) {
  const batch = credentials.slice(i % credentials.length, (i % credentials.length) + Math.min(concurrency, warmup - i));
  const opened = await Promise.all(batch.map((credential) => connectDevice({ credential, brokerUrl })));
  await Promise.all(opened.map((s) => s.end(true)));
}

const before = await rssAfterGc();
const sessions = [];
let failed = 0;
let next = 0;
const started = performance.now();
const cpuStarted = process.cpuUsage();
async function worker() {
  while (next < credentials.length) {
    const credential = credentials[next++];
    try {
      sessions.push(await connectDevice({ credential, brokerUrl }));
    } catch {
      failed += 1;
    }
  }
}
await Promise.all(Array.from({ length: concurrency }, worker));
const elapsedMs = performance.now() - started;
const cpu = process.cpuUsage(cpuStarted);
const after = await rssAfterGc();
const connected = sessions.length;
console.log(
  JSON.stringify({
    connected,
    failed,
    elapsedMs: Math.round(elapsedMs),
    connectRatePerSec: Math.round((connected / elapsedMs) * 1000),
    rssPerSessionKB: Number(((after.rss - before.rss) / connected / 1024).toFixed(2)),
    heapPerSessionKB: Number(((after.heapUsed - before.heapUsed) / connected / 1024).toFixed(2)),
    // CPU time of this process per session opened: less sensitive than the rate to other load on the machine.
    cpuPerSessionUs: Math.round((cpu.user + cpu.system) / connected),
  }),
);
await Promise.all(sessions.map((s) => s.end(true)));
