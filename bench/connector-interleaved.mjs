// Child of connector.bench.mjs: both builds of the library in one process, opening sessions in alternating batches
// against one broker, so that both see the same machine (the team's VM is shared, and its load moves by a factor of
// two within a minute). Prints one JSON line: per build, the sessions opened, the wall time and the CPU time spent
// opening them. Each batch is closed before the next one opens.
// Usage: node connector-interleaved.mjs <current dist> <baseline dist> <credentials.json> <broker URL> <rounds> <batch>
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

const [currentDist, baselineDist, credentialsFile, brokerUrl, roundsArg, batchArg] = process.argv.slice(2);
const rounds = Number(roundsArg ?? 5);
const batch = Number(batchArg ?? 100);
const libraries = {
  current: await import(pathToFileURL(join(currentDist, 'index.js')).href),
  baseline: await import(pathToFileURL(join(baselineDist, 'index.js')).href),
};
const wires = JSON.parse(readFileSync(credentialsFile, 'utf8'));
const credentials = Object.fromEntries(Object.entries(libraries).map(([side, lib]) => [side, wires.map((wire) => lib.DeviceCredential.fromWire(wire))]));
const totals = { current: { sessions: 0, wallMs: 0, cpuUs: 0 }, baseline: { sessions: 0, wallMs: 0, cpuUs: 0 } };

async function openBatch(side, from) {
  const slice = credentials[side].slice(from, from + batch);
  const started = performance.now();
  const cpuStarted = process.cpuUsage();
  const sessions = await Promise.all(slice.map((credential) => libraries[side].connectDevice({ credential, brokerUrl })));
  const cpu = process.cpuUsage(cpuStarted);
  totals[side].wallMs += performance.now() - started;
  totals[side].cpuUs += cpu.user + cpu.system;
  totals[side].sessions += sessions.length;
  await Promise.all(sessions.map((s) => s.end(true)));
}

// One unmeasured pass each: the first sessions pay for the JIT compiling each library.
for (const side of ['current', 'baseline']) await Promise.all(credentials[side].slice(0, batch).map((credential) => libraries[side].connectDevice({ credential, brokerUrl }).then((s) => s.end(true))));
for (let round = 0; round < rounds; round++) {
  for (let from = 0; from < wires.length; from += batch) {
    const order = (round + from / batch) % 2 ? ['current', 'baseline'] : ['baseline', 'current'];
    for (const side of order) await openBatch(side, from);
  }
}
console.log(JSON.stringify(totals));
