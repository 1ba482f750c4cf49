// The simulator process of the memory benchmark: an embedded emulator in its own process, then runSimulation in
// this one, sampling this process's RSS. Prints one JSON line. Usage: node memory-run.mjs <devices> <seconds>
import { setTimeout as sleep } from 'node:timers/promises';
import { runSimulation } from '../../dist/simulator/run.js';
import { startEmulatorProcess } from '../../dist/simulator/target.js';

const devices = Number(process.argv[2] ?? 10_000);
const seconds = Number(process.argv[3] ?? 30);
const publishIntervalMs = Number(process.env.BENCH_PUBLISH_INTERVAL_MS ?? 5_000);
const connectRate = Number(process.env.BENCH_CONNECT_RATE ?? 1_000);
const MB = 1024 * 1024;

const emulator = await startEmulatorProcess({ qpsLimit: 1_000_000 });
const settle = async () => {
  globalThis.gc?.();
  await sleep(200);
  globalThis.gc?.();
};
await settle();
const baseRss = process.memoryUsage().rss;
let allConnectedRss = 0;
let sampledPeak = 0;
const report = await runSimulation({
  target: emulator.target,
  devices,
  connectRate,
  durationMs: seconds * 1_000,
  publishIntervalMs,
  qos: 1,
  subscribe: process.env.BENCH_SUBSCRIBE === '1',
  ...(process.env.BENCH_LOCAL_ADDRESS ? { localAddress: process.env.BENCH_LOCAL_ADDRESS } : {}),
  apiQps: 20_000,
  apiConcurrency: 128,
  progressIntervalMs: 1_000,
  onProgress: (p) => {
    const rss = process.memoryUsage().rss;
    sampledPeak = Math.max(sampledPeak, rss);
    if (p.online === devices) allConnectedRss = Math.max(allConnectedRss, rss);
    if (p.elapsedMs % 5_000 < 1_000) process.stderr.write(`${p.phase} ${p.online}/${devices} online, ${p.messagesPerSec} msg/s, rss ${(rss / MB).toFixed(0)} MB\n`);
  },
});
await emulator.close();
console.log(JSON.stringify({
  devices,
  baseRssMB: +(baseRss / MB).toFixed(1),
  allConnectedRssMB: +(allConnectedRss / MB).toFixed(1),
  peakRssMB: report.peakRssMB,
  // Conservative: the process's peak (getrusage) over the whole run, provisioning included, minus the RSS before it.
  perDeviceKB: +(((report.peakRssMB * MB - baseRss) / devices) / 1024).toFixed(1),
  perDeviceAllConnectedKB: +(((allConnectedRss - baseRss) / devices) / 1024).toFixed(1),
  report,
}));
