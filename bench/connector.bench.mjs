// The rebuilt connector against the one it replaced (main at 30b045d), same run, same machine: N connectDevice()
// sessions from a child process per build, against one emulator in its own process. Measures the connect rate
// (first CONNECT to last CONNACK, at most BENCH_CONNECTOR_CONCURRENCY CONNECTs in flight) and the RSS growth per open
// session. Target: no regression past 5% (rate >= 0.95x, RSS per session <= 1.05x). The baseline is checked out
// into a temporary git worktree, built with this checkout's node_modules, and removed afterwards.
// BENCH_CONNECTOR_SESSIONS (2000), BENCH_CONNECTOR_CONCURRENCY (200), BENCH_ROUNDS (5) and BENCH_BASELINE (30b045d)
// override.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT, lastJson, median, runNode, startNode, verdict } from './lib/child.mjs';

const SESSIONS = Number(process.env.BENCH_CONNECTOR_SESSIONS ?? 2_000);
const CONCURRENCY = Number(process.env.BENCH_CONNECTOR_CONCURRENCY ?? 200);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const BASELINE = process.env.BENCH_BASELINE ?? '30b045d';
const child = join(ROOT, 'bench', 'connector-sessions.mjs');

/** Check out and build the baseline; returns its dist/ and a cleanup. */
function buildBaseline() {
  const dir = mkdtempSync(join(tmpdir(), `apsaramq-device-baseline-${BASELINE}-`));
  rmSync(dir, { recursive: true });
  execFileSync('git', ['worktree', 'add', '--detach', dir, BASELINE], { cwd: ROOT, stdio: 'ignore' });
  const cleanup = () => execFileSync('git', ['worktree', 'remove', '--force', dir], { cwd: ROOT, stdio: 'ignore' });
  try {
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: dir, stdio: 'inherit' });
  } catch (error) {
    cleanup();
    throw error;
  }
  return { dist: join(dir, 'dist'), cleanup };
}

async function sessions(dist, credentialsFile, brokerUrl) {
  const run = await runNode(child, [dist, credentialsFile, brokerUrl, String(CONCURRENCY)], { nodeArgs: ['--expose-gc'] });
  if (run.code !== 0) throw new Error(`sessions child failed: ${run.stderr}`);
  const result = lastJson(run.stdout);
  if (result.connected !== SESSIONS) throw new Error(`only ${result.connected} of ${SESSIONS} connected (${result.failed} failed)`);
  return result;
}

const baseline = buildBaseline();
const emulator = await startNode(CLI, ['emulator', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', '--json']);
const work = mkdtempSync(join(tmpdir(), 'connector-bench-'));
try {
  const { apiEndpoint, instanceId, accessKeyId, accessKeySecret, mqttUrl } = emulator.info;
  const store = join(work, 'store');
  const provision = await runNode(CLI, ['provision', '--endpoint', apiEndpoint, '--instance-id', instanceId, '--group-id', 'GID_bench', '--count', String(SESSIONS), '--store', store, '--qps', '20000', '--concurrency', '128', '--json'], {
    env: { ALIBABA_CLOUD_ACCESS_KEY_ID: accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: accessKeySecret },
  });
  if (provision.code !== 0) throw new Error(`provision failed: ${provision.stderr}`);
  const dir = join(store, instanceId);
  const credentials = readdirSync(dir).filter((f) => f.endsWith('.json') && f.startsWith('GID_')).map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')));
  const credentialsFile = join(work, 'credentials.json');
  writeFileSync(credentialsFile, JSON.stringify(credentials), { mode: 0o600 });

  const results = { current: [], baseline: [] };
  const loads = [];
  for (let round = 1; round <= ROUNDS; round++) {
    // Alternate the order so neither side always runs on a warmer machine.
    const order = round % 2 ? ['current', 'baseline'] : ['baseline', 'current'];
    for (const side of order) {
      loads.push(loadavg()[0]);
      results[side].push(await sessions(side === 'current' ? join(ROOT, 'dist') : baseline.dist, credentialsFile, mqttUrl));
    }
    const [c, b] = [results.current.at(-1), results.baseline.at(-1)];
    console.log(`round ${round}: rebuilt ${c.connectRatePerSec}/s ${c.cpuPerSessionUs} µs CPU ${c.rssPerSessionKB} KB/session, ${BASELINE} ${b.connectRatePerSec}/s ${b.cpuPerSessionUs} µs CPU ${b.rssPerSessionKB} KB/session`);
  }
  const rate = (side) => median(results[side].map((r) => r.connectRatePerSec));
  const rss = (side) => median(results[side].map((r) => r.rssPerSessionKB));
  const heap = (side) => median(results[side].map((r) => r.heapPerSessionKB));
  const cpu = (side) => median(results[side].map((r) => r.cpuPerSessionUs));
  console.log(`${SESSIONS} sessions, ${CONCURRENCY} CONNECTs in flight, median of ${ROUNDS}: rebuilt ${rate('current')}/s, ${rss('current')} KB RSS (${heap('current')} KB heap) per session; ${BASELINE} ${rate('baseline')}/s, ${rss('baseline')} KB RSS (${heap('baseline')} KB heap) per session; CPU per session ${cpu('current')} µs vs ${cpu('baseline')} µs; load average ${Math.min(...loads).toFixed(2)} to ${Math.max(...loads).toFixed(2)}`);
  verdict(`connect rate, rebuilt / ${BASELINE}`, rate('current') / rate('baseline'), 0.95);
  verdict(`RSS per session, rebuilt / ${BASELINE}`, rss('current') / rss('baseline'), 1.05, false);
  console.log(`CPU per session, rebuilt / ${BASELINE}: ${(cpu('current') / cpu('baseline')).toFixed(2)} (context: the rate is wall-clock and moves with the machine's load)`);
} finally {
  await emulator.stop();
  rmSync(work, { recursive: true, force: true });
  baseline.cleanup();
}
