/**
 * What a person sees when the address is dead or wrong, or when they press Ctrl+C: the real executable as a child
 * process; one line that starts with a code and names the flag, within seconds; an interrupted run that says how to
 * resume and exits 130 (SIGINT) or 143 (SIGTERM).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { describe, expect, it, onTestFinished } from 'vitest';
import { startEmulator } from '../../src/emulator/index.js';
import { CLI_BIN, tempDir } from '../helpers/cli.js';
import { closedPort, startApiProxy } from '../helpers/http.js';
import { ANY_GROUP } from '../helpers/emulator.js';

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Run the CLI; `whileRunning` may signal it. Resolves when it exits. */
function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  whileRunning?: (kill: (signal: NodeJS.Signals) => number, stderrMatches: (pattern: RegExp) => Promise<void>) => Promise<void>,
): Promise<Finished> {
  const started = performance.now();
  const child = spawn(process.execPath, [CLI_BIN, ...args], { env: { PATH: process.env['PATH'], ...env }, stdio: 'pipe' });
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const watchers: { pattern: RegExp; resolve: () => void }[] = [];
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    for (const w of [...watchers]) {
      if (w.pattern.test(stderr)) {
        watchers.splice(watchers.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  const stderrMatches = (pattern: RegExp): Promise<void> =>
    pattern.test(stderr) ? Promise.resolve() : new Promise((resolve) => watchers.push({ pattern, resolve }));
  let killedAt = 0;
  const kill = (signal: NodeJS.Signals): number => {
    killedAt = performance.now();
    child.kill(signal);
    return killedAt;
  };
  void whileRunning?.(kill, stderrMatches);
  return once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null, stdout, stderr, ms: performance.now() - (killedAt || started) }));
}

const KEYS = { ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIfailfast', ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'fail-fast-secret' };

describe('a dead or wrong endpoint fails fast, naming it', () => {
  it('provision against a closed port: ConnectionRefused, "is the emulator running?", no API call counted', async () => {
    const endpoint = `http://127.0.0.1:${await closedPort()}`;
    const run = await runCli(['provision', '--endpoint', endpoint, '--instance-id', 'mqtt-x', '--group-id', 'GID_ff', '--count', '500', '--store', await tempDir()], KEYS);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`ConnectionRefused: Nothing answers at ${endpoint}. Is the emulator running? Start it with apsaramq-device emulator, or fix --endpoint.\n`);
    expect(run.stdout).toBe('');
    // Generous: the point is seconds, not the 56 s of retries a fleet used to spend.
    expect(run.ms).toBeLessThan(10_000);
  });

  it('provision pointed at the MQTT port: the port does not speak HTTP', async () => {
    const emu = await startEmulator({ env: KEYS, ...ANY_GROUP, wsPort: false });
    onTestFinished(() => emu.close());
    const endpoint = emu.mqttUrl.replace('mqtt://', 'http://');
    const run = await runCli(['provision', '--endpoint', endpoint, '--instance-id', emu.instanceId, '--group-id', 'GID_ff', '--count', '5', '--store', await tempDir()], KEYS);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^NetworkError: .* did not answer HTTP .*is it the MQTT port\? --endpoint takes the OpenAPI URL/);
    expect(emu.stats().actions).toEqual({});
  });
});

describe('Ctrl+C and SIGTERM stop a long command at once, and say how to resume', () => {
  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('provision interrupted by %s exits %i with a summary and a resume hint; the rerun finishes the fleet', async (signal, exitCode) => {
    const emu = await startEmulator({ env: KEYS, ...ANY_GROUP, wsPort: false, latencyMs: { min: 100, max: 200 } });
    onTestFinished(() => emu.close());
    const proxy = await startApiProxy(emu.apiEndpoint);
    const store = await tempDir();
    const args = ['provision', '--endpoint', proxy.url, '--instance-id', emu.instanceId, '--group-id', 'GID_int', '--count', '200', '--concurrency', '4', '--store', store, '--json'];
    const run = await runCli(args, KEYS, async (kill) => {
      await proxy.answered('RegisterDeviceCredential', 4);
      kill(signal);
    });
    expect([run.code, run.signal]).toEqual([exitCode, null]);
    expect(run.ms).toBeLessThan(5_000); // "within a second" on an idle machine; generous on a shared one
    const summary = JSON.parse(run.stdout) as { provisioned: number; requested: number; interrupted: boolean; failed: unknown[]; notProvisioned: number };
    expect(summary).toMatchObject({ requested: 200, interrupted: true, failed: [] });
    expect(summary.provisioned).toBeLessThan(200);
    expect(summary.provisioned + summary.notProvisioned).toBe(200);
    expect(run.stderr).toContain(`Interrupted: ${summary.provisioned} of 200 devices provisioned, ${200 - summary.provisioned} not yet. Run the same command again to resume`);
    // The last progress line says the run stopped, at what was really done (not the aborted devices counted as "done").
    const last = run.stderr.split('\n').filter((line) => line.startsWith('provision: ')).at(-1) ?? '';
    expect(last).toMatch(new RegExp(`^provision: ${summary.provisioned}/200 \\d+% \\S+ stopped `));

    const rerun = await runCli(args.map((a) => (a === '4' ? '16' : a)), KEYS);
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(JSON.parse(rerun.stdout)).toMatchObject({ provisioned: 200, fromStore: summary.provisioned });
    // Resuming never registers a device twice: the ones whose Register was answered as the signal came are fetched.
    expect(emu.stats().actions['RegisterDeviceCredential']?.ok).toBe(200);
  });
});

describe('simulate fails before the run, not after it', () => {
  it('a --report in a directory that does not exist is refused at once (exit 2)', async () => {
    const run = await runCli(['simulate', '--devices', '5', '--report', '/nonexistent-dir/r.json'], {});
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^InvalidOption: --report \/nonexistent-dir\/r\.json: the directory \/nonexistent-dir does not exist; see apsaramq-device simulate --help\n$/);
  });

  it('--instance-id without --broker-url names the host it would try and the flag to pass', async () => {
    const emu = await startEmulator({ env: KEYS, ...ANY_GROUP, wsPort: false });
    onTestFinished(() => emu.close());
    const run = await runCli(['simulate', '--endpoint', emu.apiEndpoint, '--instance-id', 'mqtt-demo', '--devices', '90', '--store', await tempDir(), '--no-progress'], KEYS);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^HostNotFound: The broker host mqtt-demo\.mqtt\.aliyuncs\.com does not resolve \(\w+\): that is the default for --instance-id mqtt-demo; against an emulator pass --broker-url/);
    expect(emu.stats().actions['RegisterDeviceCredential']).toBeUndefined(); // nothing provisioned for nothing
  });

  it('Ctrl+C during a run: exit 130, the summary and the report say it was interrupted', async () => {
    const dir = await tempDir();
    const report = `${dir}/report.json`;
    const run = await runCli(['simulate', '--devices', '20', '--duration', '60', '--connect-rate', '0', '--report', report], {}, async (kill, stderrMatches) => {
      // The first progress line of the publishing phase: every device is connected and the run is under way.
      await stderrMatches(/^simulate publishing: /m);
      kill('SIGINT');
    });
    expect(run.code).toBe(130);
    expect(run.stderr).toContain('Interrupted: ');
    // The embedded emulator used no store: nothing is said about one.
    expect(run.stderr).not.toContain('store');
    expect(run.stderr.split('\n').filter((line) => line.startsWith('simulate publishing: ')).at(-1)).toMatch(/ stopped /);
    expect(run.stdout).toMatch(/^INTERRUPTED: the run was stopped before it finished/);
    const saved = JSON.parse(await readFile(report, 'utf8')) as { interrupted?: boolean };
    expect(saved.interrupted).toBe(true);
  });
});
