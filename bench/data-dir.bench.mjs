// What the emulator's data directory costs a fleet: RegisterDeviceCredential calls per second against the real CLI
// (`node dist/cli/bin.js emulator`, its own process) with `--data-dir` and with `--ephemeral`, in alternating
// rounds of the same run, as a ratio. The client is this process: BENCH_DATA_DIR_CONCURRENCY (default 16) calls in
// flight, signed by the library's OpenApiClient, no retries. Before anything is timed, every answered Register of a
// data-dir round is checked to be in the directory after the emulator stopped.
//   BENCH_DATA_DIR_DEVICES    devices per round (default 10,000)
//   BENCH_DATA_DIR_ROUNDS     rounds of each kind (default 3)
//   BENCH_DATA_DIR_CLI        another build's bin.js to measure, default ours
//   BENCH_DATA_DIR_BASELINE   a second build's bin.js (e.g. main's, to measure what a change bought): a third kind of
//                             round, --data-dir on that build, in the same alternation
// Exit code 1 when a round loses an answered Register or a call fails.
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDataDirState } from '../dist/emulator/data-dir.js';
import { OpenApiClient } from '../dist/provisioner/index.js';
import { CLI, startNode } from './lib/child.mjs';

const DEVICES = Number(process.env.BENCH_DATA_DIR_DEVICES ?? 10_000);
const CONCURRENCY = Number(process.env.BENCH_DATA_DIR_CONCURRENCY ?? 16);
const ROUNDS = Number(process.env.BENCH_DATA_DIR_ROUNDS ?? 3);
const BIN = process.env.BENCH_DATA_DIR_CLI ?? CLI;
const BASELINE = process.env.BENCH_DATA_DIR_BASELINE;
const GROUP = 'GID_bench';
const KEYS = { ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIbenchdatadir', ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'bench-data-dir-secret' };

let failures = 0;

/** One round: a fresh emulator of `bin` (state in `dir`, or in memory), DEVICES Registers, CONCURRENCY at a time. */
async function round(bin, dir) {
  const state = dir ? ['--data-dir', dir] : ['--ephemeral'];
  const emulator = await startNode(bin, ['emulator', ...state, '--instance-id', 'mqtt-bench', '--mqtt-port', '0', '--no-ws', '--api-port', '0', '--qps-limit', '1000000', '--groups', '*', '--json'], KEYS);
  const client = new OpenApiClient({ endpoint: emulator.info.apiEndpoint, env: KEYS, retry: false, qps: 1_000_000, concurrency: CONCURRENCY });
  const issued = new Map();
  let next = 0;
  const started = performance.now();
  try {
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < DEVICES) {
        const clientId = `${GROUP}@@@dev-${next++}`;
        const { credential } = await client.registerDeviceCredential('mqtt-bench', clientId);
        issued.set(clientId, credential.deviceAccessKeyId);
      }
    }));
  } catch (error) {
    failures++;
    console.log(`FAIL  a Register failed: ${error.message}`);
  }
  const ms = performance.now() - started;
  client.close();
  await emulator.stop();
  if (dir) {
    const kept = new Map((await readDataDirState(dir))?.credentials.map((c) => [c.ClientId, c.DeviceAccessKeyId]) ?? []);
    const lost = [...issued].filter(([clientId, keyId]) => kept.get(clientId) !== keyId).length;
    if (lost > 0) {
      failures++;
      console.log(`FAIL  ${lost} answered Registers are not in the data directory`);
    }
  }
  return ms;
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const root = await mkdtemp(join(tmpdir(), 'bench-data-dir-'));
const kinds = [
  { name: '--ephemeral', bin: BIN, dir: false },
  { name: '--data-dir', bin: BIN, dir: true },
  ...(BASELINE ? [{ name: '--data-dir (baseline build)', bin: BASELINE, dir: true }] : []),
];
const times = new Map(kinds.map((k) => [k.name, []]));
const seconds = (ms) => `${(ms / 1000).toFixed(2)} s (${Math.round(DEVICES / (ms / 1000))}/s)`;
try {
  console.log(`${DEVICES} Registers per round, ${CONCURRENCY} in flight, emulator ${BIN}${BASELINE ? `, baseline ${BASELINE}` : ''}; load average before: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  for (let i = 0; i < ROUNDS; i++) {
    // Alternating, so that a burst of load from other work on the machine falls on every kind alike.
    const row = [];
    for (const [k, kind] of kinds.entries()) {
      const ms = await round(kind.bin, kind.dir ? join(root, `round-${i}-${k}`) : undefined);
      times.get(kind.name).push(ms);
      row.push(`${kind.name} ${seconds(ms)}`);
    }
    console.log(`round ${i + 1}: ${row.join(', ')}; load ${loadavg()[0].toFixed(2)}`);
  }
  const base = median(times.get('--ephemeral'));
  for (const kind of kinds) {
    const m = median(times.get(kind.name));
    console.log(`median ${kind.name}: ${seconds(m)}, ${(m / base).toFixed(2)}x the time of --ephemeral`);
  }
} finally {
  await rm(root, { recursive: true, force: true });
}
process.exitCode = failures > 0 ? 1 : 0;
