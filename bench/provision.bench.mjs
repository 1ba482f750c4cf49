// Fleet provisioning (issue #3): the real CLI (`node dist/cli/bin.js provision`) against an emulator started here
// with qpsLimit 200 and faultRate 0.2. Checks the acceptance criteria and prints the figures for BENCHMARKS.md:
//   A. 1,000 devices, get-first, --qps 200: 0 failed, exactly 1,000 successful Registers (one of them made by
//      "someone else" before the run, whose device must keep its DeviceAccessKeyId), at most 1% of responses
//      throttled by the emulator's rate limit, elapsed within 1.25x of (API calls / 200) s.
//   B. The same command again with the same store: 0 API calls.
//   C. register-first, SIGKILLed mid-run, then run again: every device provisioned, exactly one successful Register
//      per device.
// BENCH_PROVISION_DEVICES overrides the fleet size. Exit code 1 when a criterion fails.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmulator } from '../dist/emulator/index.js';
import { OpenApiClient } from '../dist/provisioner/index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist', 'cli', 'bin.js');
const DEVICES = Number(process.env.BENCH_PROVISION_DEVICES ?? 1_000);
const QPS = 200;
const FAULT_RATE = 0.2;
const GROUP = 'GID_bench';

let failures = 0;
function check(what, ok, detail) {
  console.log(`${ok ? 'PASS' : 'FAIL'}  ${what}: ${detail}`);
  if (!ok) failures += 1;
}

/** Run the CLI to completion (async: the emulator lives in this process and must keep answering). */
function provision(emulator, store, extra = []) {
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'provision', ...commonArgs(emulator, store), ...extra], { env: cliEnv(emulator), maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const line = stdout.trim().split('\n').pop() ?? '';
      resolve({ code: error ? error.code : 0, summary: line ? JSON.parse(line) : undefined, stderr, wallMs: performance.now() - started });
    });
  });
}

function commonArgs(emulator, store) {
  return ['--endpoint', emulator.apiEndpoint, '--instance-id', emulator.instanceId, '--group-id', GROUP, '--count', String(DEVICES), '--qps', String(QPS), '--store', store, '--json'];
}

function cliEnv(emulator) {
  return { ...process.env, ALIBABA_CLOUD_ACCESS_KEY_ID: emulator.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: emulator.accessKeySecret };
}

function totals(emulator) {
  let responses = 0;
  let rateLimited = 0;
  let injected = 0;
  for (const { ok, errors } of Object.values(emulator.stats().actions)) {
    responses += ok;
    for (const [code, n] of Object.entries(errors)) {
      responses += n;
      if (code === 'Throttling.User') rateLimited += n;
      else if (code === 'SystemOverFlow' || code === 'InternalError') injected += n;
    }
  }
  return { responses, rateLimited, injected, registers: emulator.stats().actions.RegisterDeviceCredential?.ok ?? 0 };
}

async function scenarioAB() {
  const emulator = await startEmulator({ env: {}, qpsLimit: QPS, faultRate: FAULT_RATE, groups: [GROUP] });
  const store = await mkdtemp(join(tmpdir(), 'bench-provision-'));
  try {
    // "Someone else" registers one device of the fleet first, through its own client (no faults for this one call).
    const other = new OpenApiClient({ endpoint: emulator.apiEndpoint, accessKeyId: emulator.accessKeyId, accessKeySecret: emulator.accessKeySecret, retry: {} });
    const taken = `${GROUP}@@@dev-${Math.floor(DEVICES / 2)}`;
    const before = (await other.registerDeviceCredential(emulator.instanceId, taken)).credential;
    const registersBefore = totals(emulator).registers;

    const a = await provision(emulator, store);
    const s = a.summary;
    const t = totals(emulator);
    console.log(`A: ${JSON.stringify({ ...s, failed: s.failed.length })}`);
    console.log(`A: emulator: ${t.responses} responses, ${t.injected} injected faults, ${t.rateLimited} Throttling.User, ${t.registers} successful Registers`);
    check('A exit code 0, nothing failed', a.code === 0 && s.failed.length === 0 && s.provisioned === DEVICES, `exit ${a.code}, provisioned ${s.provisioned}, failed ${s.failed.length}`);
    check('A exactly one successful Register per device (emulator)', t.registers === DEVICES, `${t.registers} (${registersBefore} before the run by someone else, ${s.registered} by the run)`);
    const throttledShare = t.rateLimited / t.responses;
    check('A at most 1% of responses throttled by the rate limit', throttledShare <= 0.01, `${(throttledShare * 100).toFixed(2)}% (${t.rateLimited}/${t.responses}); the CLI counted ${s.throttled} throttling answers incl. injected SystemOverFlow`);
    const ideal = (s.apiCalls / QPS) * 1000;
    const ratio = s.elapsedMs / ideal;
    check('A elapsed within 1.25x of apiCalls/qps', ratio <= 1.25, `${(s.elapsedMs / 1000).toFixed(2)} s for ${s.apiCalls} calls (${s.retries} retries) = ${ratio.toFixed(3)}x of ${(ideal / 1000).toFixed(2)} s`);
    console.log(`A: wall clock of the whole CLI process (Node start-up included): ${(a.wallMs / 1000).toFixed(2)} s = ${(a.wallMs / ideal).toFixed(3)}x`);
    const after = (await other.getDeviceCredential(emulator.instanceId, taken)).credential;
    check('A device registered by someone else keeps its credential', after.deviceAccessKeyId === before.deviceAccessKeyId && s.fetched >= 1, `${taken}: same DeviceAccessKeyId ${after.deviceAccessKeyId === before.deviceAccessKeyId}`);
    other.close();

    const callsBefore = totals(emulator).responses;
    const b = await provision(emulator, store);
    check('B second run with the same store makes 0 API calls', b.code === 0 && b.summary.apiCalls === 0 && totals(emulator).responses === callsBefore && b.summary.fromStore === DEVICES, `apiCalls ${b.summary.apiCalls}, fromStore ${b.summary.fromStore}, ${(b.summary.elapsedMs / 1000).toFixed(2)} s`);
  } finally {
    await emulator.close();
    await rm(store, { recursive: true, force: true });
  }
}

async function scenarioC() {
  const emulator = await startEmulator({ env: {}, qpsLimit: QPS, faultRate: FAULT_RATE, groups: [GROUP] });
  const store = await mkdtemp(join(tmpdir(), 'bench-provision-'));
  try {
    const child = spawn(process.execPath, [CLI, 'provision', ...commonArgs(emulator, store), '--strategy', 'register-first'], { env: cliEnv(emulator), stdio: 'ignore' });
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
    // Kill it once about a third of the fleet is registered, in the middle of the Register stream.
    while (totals(emulator).registers < DEVICES / 3) await new Promise((resolve) => setTimeout(resolve, 10));
    child.kill('SIGKILL');
    const how = await exited;
    const killedAt = totals(emulator).registers;
    const again = await provision(emulator, store, ['--strategy', 'register-first']);
    const s = again.summary;
    const t = totals(emulator);
    console.log(`C: killed (${how}) after ${killedAt} Registers; rerun: ${JSON.stringify({ ...s, failed: s.failed.length })}`);
    check('C every device provisioned after the rerun', again.code === 0 && s.provisioned === DEVICES && s.failed.length === 0, `provisioned ${s.provisioned}, from store ${s.fromStore}, fetched (journal) ${s.fetched}, registered ${s.registered}`);
    check('C exactly one successful Register per device (emulator)', t.registers === DEVICES, `${t.registers}`);
  } finally {
    await emulator.close();
    await rm(store, { recursive: true, force: true });
  }
}

await scenarioAB();
await scenarioC();
process.exitCode = failures > 0 ? 1 : 0;
