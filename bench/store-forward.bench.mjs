// Store and forward at the issue's scale (issue 17): 10,000 QoS 1 messages at 500/s from one device through a 30 s
// outage (a relay that cuts every connection and refuses new ones), three broker restarts (persistent Mosquitto) and
// a kill -9 of the publishing process restarted on the same outbox; an independent mosquitto_sub on the broker
// receives them. Once with the library (connectDevice + enqueueDurable), once with the `gateway` command. Pass: every
// accepted message received (0 lost), and each duplicate the publisher sent is one it reported as possibly twice.
// Env: BENCH_SF_MESSAGES (10000), BENCH_SF_RATE (500), BENCH_SF_OUTAGE_MS (30000), BENCH_SF_MODES (library,cli).
import { loadavg } from 'node:os';
import { verdict } from './lib/child.mjs';
import { runStoreForward } from './lib/store-forward.mjs';

const MESSAGES = Number(process.env.BENCH_SF_MESSAGES ?? 10_000);
const RATE = Number(process.env.BENCH_SF_RATE ?? 500);
const OUTAGE_MS = Number(process.env.BENCH_SF_OUTAGE_MS ?? 30_000);
const MODES = (process.env.BENCH_SF_MODES ?? 'library,cli').split(',');
const PUBLISHING_MS = (MESSAGES / RATE) * 1000;

// The outage starts a fifth of the way in and outlasts the publishing; a restart before it, one in it, one after it;
// the kill -9 in the middle of the outage, while the backlog is on disk.
const scenario = {
  messages: MESSAGES,
  rate: RATE,
  outage: { at: PUBLISHING_MS / 5, ms: OUTAGE_MS },
  restarts: [PUBLISHING_MS / 10, PUBLISHING_MS / 5 + OUTAGE_MS / 3, PUBLISHING_MS / 5 + OUTAGE_MS + 2000],
  kill: PUBLISHING_MS / 5 + OUTAGE_MS / 2,
  deadlineMs: 180_000,
  log: (line) => process.stderr.write(`  | ${line}\n`),
};

console.log(
  `${MESSAGES} QoS 1 messages at ${RATE}/s; outage ${OUTAGE_MS / 1000} s from ${(scenario.outage.at / 1000).toFixed(1)} s; broker restarts at ${scenario.restarts.map((t) => (t / 1000).toFixed(1)).join(', ')} s; kill -9 at ${(scenario.kill / 1000).toFixed(1)} s`,
);
console.log('\n| Publisher | handed over | accepted | received (unique) | lost | duplicates at the subscriber: sent twice by the publisher / by the broker | reported possibly twice | out of order | run |\n|---|---|---|---|---|---|---|---|---|');
const loads = [loadavg()[0]];
let allPass = true;
for (const mode of MODES) {
  const r = await runStoreForward({ mode, ...scenario });
  loads.push(loadavg()[0]);
  console.log(
    `| ${mode === 'cli' ? '`gateway` command' : 'library (enqueueDurable)'} | ${r.handed} | ${r.accepted} | ${r.receivedUnique} | **${r.lost}** | ${r.publisherDuplicates} / ${r.brokerDuplicates} | ${r.reportedPossibleDuplicates} | ${r.outOfOrder} | ${r.seconds.toFixed(1)} s |`,
  );
  if (r.lost > 0) console.log(`  lost ids (first 20): ${r.lostIds.join(', ')}`);
  if (mode === 'cli') console.log(`  gateway exit ${JSON.stringify(r.gatewayExit)}; ${r.gatewaySummary.replace(/\n/g, ' / ')}`);
  allPass = verdict(`${mode}: messages lost (accepted, never received)`, r.lost, 0, false) && allPass;
  allPass = verdict(`${mode}: duplicates the publisher sent beyond those it reported`, Math.max(0, r.publisherDuplicates - r.reportedPossibleDuplicates), 0, false) && allPass;
}
console.log(`\nload average during the run: ${loads.map((l) => l.toFixed(1)).join(', ')}`);
