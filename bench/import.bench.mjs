// What a device pays to load the library (issue 8): the time and memory of importing the device entry
// (`apsaramq-device`, dist/index.js) against importing mqtt.js alone (the floor: a device needs an MQTT client) and
// against importing the package root as it was before the split by role (it loaded aedes, ws's server, pop-core).
// Each import runs in a fresh Node process; rounds interleave the three, and medians are compared.
// Target: device entry <= 1.10x mqtt.js alone, in time and in RSS. Also against the device entry before store and
// forward (issue 17, `BEFORE_STORE_FORWARD`): a device that does not use a durable outbox must pay nothing more
// (<= 1.05x). BENCH_ROUNDS overrides the number of rounds.
// mqtt.js is a CommonJS package: import() of it costs about twice its require() (the ES module loader scans its
// sources for named exports first), and the device entry loads it with require() (src/connector/mqtt-client.ts). So
// the floor is also measured as require('mqtt'), the cheapest way to have an MQTT client: the device entry against it
// is what the library itself adds.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { BEFORE_SPLIT, BEFORE_STORE_FORWARD, baselineCheckout } from './lib/baseline.mjs';
import { ROOT, median, verdict } from './lib/child.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 21);
const before = baselineCheckout(BEFORE_SPLIT);
const beforeStoreForward = baselineCheckout(BEFORE_STORE_FORWARD);

const subjects = {
  'mqtt.js alone': `import('mqtt')`,
  "mqtt.js alone, require('mqtt')": `createRequire(${JSON.stringify(join(ROOT, 'package.json'))})('mqtt')`,
  'device entry (now)': `import(${JSON.stringify(join(ROOT, 'dist', 'index.js'))})`,
  [`package root before the split (${BEFORE_SPLIT})`]: `import(${JSON.stringify(join(before, 'dist', 'index.js'))})`,
  [`device entry before store and forward (${BEFORE_STORE_FORWARD})`]: `import(${JSON.stringify(join(beforeStoreForward, 'dist', 'index.js'))})`,
};

// One measurement: a fresh process imports the subject; it reports the import's duration and the RSS it added.
function measure(expression) {
  const script = `
    import { createRequire } from 'node:module';
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    await ${expression};
    const ms = performance.now() - t0;
    console.log(JSON.stringify({ ms, rssMiB: (process.memoryUsage().rss - rss0) / 2 ** 20 }));`;
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' }));
}

const samples = Object.fromEntries(Object.keys(subjects).map((k) => [k, { ms: [], rssMiB: [] }]));
for (const expression of Object.values(subjects)) measure(expression); // warm the file system cache
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, expression] of Object.entries(subjects)) {
    const { ms, rssMiB } = measure(expression);
    samples[name].ms.push(ms);
    samples[name].rssMiB.push(rssMiB);
  }
}

console.log(`${ROUNDS} rounds, medians (each import in a fresh process):`);
console.log('| Import | Time (ms) | RSS added (MiB) |\n|---|---|---|');
const medians = {};
for (const [name, s] of Object.entries(samples)) {
  medians[name] = { ms: median(s.ms), rssMiB: median(s.rssMiB) };
  console.log(`| ${name} | ${medians[name].ms.toFixed(1)} | ${medians[name].rssMiB.toFixed(1)} |`);
}
const [floor, required, now, old, previous] = Object.keys(subjects).map((k) => medians[k]);
console.log(`device entry vs require('mqtt') alone (what the library adds to the cheapest MQTT client): time ${(now.ms / required.ms).toFixed(2)}x, RSS ${(now.rssMiB / required.rssMiB).toFixed(2)}x`);
console.log(`device entry vs package root before the split: time ${(now.ms / old.ms).toFixed(2)}x, RSS ${(now.rssMiB / old.rssMiB).toFixed(2)}x`);
verdict('device entry time / mqtt.js alone', now.ms / floor.ms, 1.1, false);
verdict('device entry RSS / mqtt.js alone', now.rssMiB / floor.rssMiB, 1.1, false);
verdict(`device entry time / device entry before store and forward (${BEFORE_STORE_FORWARD})`, now.ms / previous.ms, 1.05, false);
verdict(`device entry RSS / device entry before store and forward (${BEFORE_STORE_FORWARD})`, now.rssMiB / previous.rssMiB, 1.05, false);
