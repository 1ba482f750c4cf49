// The rebuilt connector against the one it replaced (main at 30b045d), same run, same machine, one emulator in its own
// process, N provisioned devices. Two measurements:
// - connect rate and CPU per session: both builds loaded in one child process (connector-interleaved.mjs), opening
//   sessions in alternating batches of BENCH_CONNECTOR_BATCH, so both see the same load on a shared machine;
// - RSS per open session: one child process per build (connector-sessions.mjs) holding N sessions, RSS (and heap)
//   growth after a forced GC, median of BENCH_ROUNDS processes per build, alternating which build goes first.
// Target: no regression past 5% (rate >= 0.95x, RSS per session <= 1.05x). The baseline is checked out into a
// temporary git worktree, built with this checkout's node_modules, and removed afterwards.
// BENCH_CONNECTOR_SESSIONS (2000), BENCH_CONNECTOR_BATCH (100), BENCH_ROUNDS (5), BENCH_BASELINE (30b045d) override.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT, lastJson, median, runNode, startNode, verdict } from './lib/child.mjs';

const SESSIONS = Number(process.env.BENCH_CONNECTOR_SESSIONS ?? 2_000);
const CONCURRENCY = Number(process.env.BENCH_CONNECTOR_CONCURRENCY ?? 200);
const BATCH = Number(process.env.BENCH_CONNECTOR_BATCH ?? 100);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const BASELINE = process.env.BENCH_BASELINE ?? '30b045d';
const child = join(ROOT, 'bench', 'connector-sessions.mjs');
const interleaved = join(ROOT, 'bench', 'connector-interleaved.mjs');

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
const emulator = await startNode(CLI, ['emulator', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', '--groups', 'GID_bench', '--json']);
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

  // 1. Connect rate and CPU, interleaved in one process.
  const loads = [loadavg()[0]];
  const rate = await runNode(interleaved, [join(ROOT, 'dist'), baseline.dist, credentialsFile, mqttUrl, String(ROUNDS), String(BATCH)]);
  if (rate.code !== 0) throw new Error(`interleaved child failed: ${rate.stderr}`);
  const totals = lastJson(rate.stdout);
  loads.push(loadavg()[0]);
  const perSec = (side) => (totals[side].sessions / totals[side].wallMs) * 1000;
  const cpuUs = (side) => totals[side].cpuUs / totals[side].sessions;
  console.log(
    `connect, interleaved batches of ${BATCH}, ${totals.current.sessions} sessions per build: rebuilt ${perSec('current').toFixed(0)}/s, ${cpuUs('current').toFixed(0)} µs CPU per session; ${BASELINE} ${perSec('baseline').toFixed(0)}/s, ${cpuUs('baseline').toFixed(0)} µs CPU per session`,
  );

  // 2. RSS per open session, one process per build holding all N.
  const results = { current: [], baseline: [] };
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 ? ['current', 'baseline'] : ['baseline', 'current'];
    for (const side of order) {
      loads.push(loadavg()[0]);
      results[side].push(await sessions(side === 'current' ? join(ROOT, 'dist') : baseline.dist, credentialsFile, mqttUrl));
    }
    const [c, b] = [results.current.at(-1), results.baseline.at(-1)];
    console.log(`memory round ${round}: rebuilt ${c.rssPerSessionKB} KB RSS, ${c.heapPerSessionKB} KB heap per session (opened at ${c.connectRatePerSec}/s); ${BASELINE} ${b.rssPerSessionKB} KB RSS, ${b.heapPerSessionKB} KB heap (${b.connectRatePerSec}/s)`);
  }
  const rss = (side) => median(results[side].map((r) => r.rssPerSessionKB));
  const heap = (side) => median(results[side].map((r) => r.heapPerSessionKB));
  const coldRate = (side) => median(results[side].map((r) => r.connectRatePerSec));
  console.log(
    `${SESSIONS} sessions held open, median of ${ROUNDS} processes per build: rebuilt ${rss('current')} KB RSS (${heap('current')} KB heap) per session, ${BASELINE} ${rss('baseline')} KB RSS (${heap('baseline')} KB heap); connect rate of those cold processes (JIT included, ${CONCURRENCY} CONNECTs in flight): rebuilt ${coldRate('current')}/s, ${BASELINE} ${coldRate('baseline')}/s; load average ${Math.min(...loads).toFixed(2)} to ${Math.max(...loads).toFixed(2)}`,
  );
  verdict(`connect rate (interleaved), rebuilt / ${BASELINE}`, perSec('current') / perSec('baseline'), 0.95);
  console.log(`CPU per session (interleaved), rebuilt / ${BASELINE}: ${(cpuUs('current') / cpuUs('baseline')).toFixed(2)}`);
  verdict(`RSS per session, rebuilt / ${BASELINE}`, rss('current') / rss('baseline'), 1.05, false);
} finally {
  await emulator.stop();
  rmSync(work, { recursive: true, force: true });
  baseline.cleanup();
}
