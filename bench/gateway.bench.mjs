// The gateway (issue 18) against bare mqtt.js, each in its own process, against the same plain HMAC-checking aedes
// in a third: RSS per device held connected (goal <= 1.1x a bare mqtt.js client per device), and CPU per 10,000
// QoS 1 publishes spread over the devices until every PUBACK (goal <= 1.0x the same mqtt.js clients). The
// gateway's publishes are durable (accepted = fsync'd to its outbox, group commit; removed on PUBACK): the mqtt.js
// baseline keeps nothing on disk; the connector alone (connectDevice per device, no outbox) is the third line, to
// tell the connection's cost from the disk's. Each side runs RUNS times, alternating, and the medians are compared.
// RSS per device is measured twice: right after connecting, and settled (after full GCs that compact every page, as
// V8's memory reducer does by itself once the process is idle); the goal is judged on the settled figure, the other is
// printed beside it. The CPU is measured over two rounds of BENCH_GATEWAY_MESSAGES in each process: the first (cold:
// the process's first publishes, which also pay for compiling that path's code, once per process) and the second
// (warm: the steady state of a running gateway); the goal is judged on the warm round, the cold ratio is printed
// beside it. BENCH_GATEWAY_DEVICES (default 10,000, the size: about a minute on a 2-core machine),
// BENCH_GATEWAY_MESSAGES (10,000), BENCH_GATEWAY_RUNS (5) override.
import { join } from 'node:path';
import { ROOT, lastJson, median, runNode, startNode, verdict } from './lib/child.mjs';

const DEVICES = Number(process.env.BENCH_GATEWAY_DEVICES ?? 10_000);
const MESSAGES = Number(process.env.BENCH_GATEWAY_MESSAGES ?? 10_000);
const RUNS = Number(process.env.BENCH_GATEWAY_RUNS ?? 5);
const lib = join(ROOT, 'bench', 'lib');

const broker = await startNode(join(lib, 'hmac-broker.mjs'), [], {}, { raiseFileLimit: true });
const results = { gateway: [], connector: [], mqtt: [] };
try {
  for (let run = 0; run < RUNS; run++) {
    for (const mode of run % 2 === 0 ? ['mqtt', 'connector', 'gateway'] : ['gateway', 'connector', 'mqtt']) {
      const child = await runNode(join(lib, 'gateway-run.mjs'), [mode, broker.info.url, String(DEVICES), String(MESSAGES)], { nodeArgs: ['--expose-gc'], raiseFileLimit: true, echo: mode });
      if (child.code !== 0) throw new Error(`${mode} run failed (${child.code}): ${child.stderr}`);
      const result = lastJson(child.stdout);
      results[mode].push(result);
      console.log(`${mode.padEnd(9)} run ${run + 1}: ${DEVICES} devices connected in ${result.connectSeconds} s, RSS per device ${result.settledPerDeviceKB} KB settled (${result.perDeviceKB} KB right after connecting, ${result.publishedPerDeviceKB} KB settled after publishing); ${MESSAGES} QoS 1 publishes: ${result.publishCpuMsPer10k} ms CPU per 10,000 warm (${result.coldPublishCpuMsPer10k} cold), ${result.publishesPerSecond}/s`);
    }
  }
} finally {
  await broker.stop();
}
const med = (mode, key) => median(results[mode].map((r) => r[key]));
const memory = med('gateway', 'settledPerDeviceKB') / med('mqtt', 'settledPerDeviceKB');
const cpu = med('gateway', 'publishCpuMsPer10k') / med('mqtt', 'publishCpuMsPer10k');
for (const mode of ['gateway', 'connector', 'mqtt']) console.log(`median ${mode}: RSS per device ${med(mode, 'settledPerDeviceKB')} KB settled (${med(mode, 'perDeviceKB')} KB right after connecting, ${med(mode, 'publishedPerDeviceKB')} KB settled after publishing), ${med(mode, 'publishCpuMsPer10k')} ms CPU per 10,000 QoS 1 publishes warm (${med(mode, 'coldPublishCpuMsPer10k')} cold)`);
console.log(`right after connecting, gateway / mqtt.js RSS per device: ${(med('gateway', 'perDeviceKB') / med('mqtt', 'perDeviceKB')).toFixed(2)}; settled after publishing: ${(med('gateway', 'publishedPerDeviceKB') / med('mqtt', 'publishedPerDeviceKB')).toFixed(2)}`);
console.log(`connector (no outbox) / mqtt.js: ${(med('connector', 'settledPerDeviceKB') / med('mqtt', 'settledPerDeviceKB')).toFixed(2)} RSS per device settled, ${(med('connector', 'publishCpuMsPer10k') / med('mqtt', 'publishCpuMsPer10k')).toFixed(2)} CPU per publish`);
verdict('gateway / mqtt.js RSS per device (settled)', memory, 1.1, false);
console.log(`cold (each process's first ${MESSAGES} publishes), gateway / mqtt.js CPU: ${(med('gateway', 'coldPublishCpuMsPer10k') / med('mqtt', 'coldPublishCpuMsPer10k')).toFixed(2)}; connector / mqtt.js: ${(med('connector', 'coldPublishCpuMsPer10k') / med('mqtt', 'coldPublishCpuMsPer10k')).toFixed(2)}`);
verdict('gateway / mqtt.js CPU per 10,000 QoS 1 publishes, warm (durable vs in memory)', cpu, 1.0, false);
