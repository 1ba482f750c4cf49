/**
 * A simulation whose broker is gone for good fails, naming the cause (issue 24): the embedded emulator SIGKILLed in
 * the middle of a run (one process, and one shard of `--processes 2`). Before, the run waited out its duration and
 * exited 0 with `connected 300, failedConnects 0`. Runs last 600 s unless the loss stops them: the tests end only if
 * it does. Linux: the emulator's pid is read from /proc.
 */
import { describe, expect, it } from 'vitest';
import { BROKER_LOST_MS, runSimulation, simulationFailure } from '../../src/simulator/run.js';
import { emulatorTarget } from '../../src/simulator/target.js';
import { startCli } from '../helpers/cli.js';
import { useEmulator } from '../helpers/emulator.js';
import { alive, childProcesses } from '../helpers/processes.js';

/** The embedded emulator's process: the one child of `parent` running the emulator-process script. */
function embeddedEmulator(parent: number): number {
  const found = childProcesses(parent, 'emulator-process.js');
  expect(found, `children of ${parent} running the embedded emulator`).toHaveLength(1);
  return found[0] as number;
}

const LONG_RUN = ['--duration', '600', '--publish-interval', '500', '--connect-rate', '0'];

describe.skipIf(process.platform !== 'linux')('simulate when its embedded emulator dies mid-run', () => {
  it('runSimulation stops at once and its report says the broker is lost; the verdict is EmulatorFailed', async () => {
    let killed: number | undefined;
    const report = await runSimulation({
      devices: 10,
      durationMs: 600_000,
      publishIntervalMs: 200,
      connectRate: 0,
      onProgress: (p) => {
        if (killed === undefined && p.phase === 'publishing') {
          killed = embeddedEmulator(process.pid);
          process.kill(killed, 'SIGKILL');
        }
      },
    });
    expect(killed).toBeDefined();
    expect(report.brokerLost).toEqual({ at: expect.any(String), embeddedEmulator: true, cause: expect.stringMatching(new RegExp(`^The embedded emulator \\(pid ${killed}\\) exited on signal SIGKILL [\\d.]+ s into the run, after 10 of 10 devices had connected: the run was stopped$`)) });
    expect(report.connected).toBe(10);
    expect(simulationFailure(report)).toMatchObject({ code: 'EmulatorFailed', retryable: false });
  });

  it('one process: exits 1, its last line EmulatorFailed naming the emulator and SIGKILL; the summary is printed', async () => {
    const run = startCli(['simulate', '--devices', '20', ...LONG_RUN]);
    await run.waitFor(/^simulate publishing/m);
    const emulator = embeddedEmulator(run.child.pid as number);
    process.kill(emulator, 'SIGKILL');
    const { code } = await run.exit;
    expect(code, run.stderr()).toBe(1);
    const last = run.stderr().trim().split('\n').at(-1);
    expect(last).toMatch(new RegExp(`^EmulatorFailed: The embedded emulator \\(pid ${emulator}\\) exited on signal SIGKILL [\\d.]+ s into the run, after 20 of 20 devices had connected: the run was stopped\\. `));
    expect(run.stdout()).toMatch(/connected 20, failed connects 0/);
  });

  it('--processes 2: the shard whose emulator died stops, the other is stopped, the run exits 1 with EmulatorFailed naming the shard', async () => {
    const run = startCli(['simulate', '--processes', '2', '--devices', '20', ...LONG_RUN]);
    const [, first, second] = await run.waitFor(/simulate: 2 shard processes \(pids (\d+), (\d+)\)/);
    await run.waitFor(/^simulate publishing/m);
    const emulator = embeddedEmulator(Number(second));
    process.kill(emulator, 'SIGKILL');
    const { code } = await run.exit;
    expect(code, run.stderr()).toBe(1);
    const last = run.stderr().trim().split('\n').at(-1);
    expect(last).toMatch(new RegExp(`^EmulatorFailed: The embedded emulator of shard 2/2 \\(pid ${emulator}\\) exited on signal SIGKILL [\\d.]+ s into the run, after 10 of 10 devices had connected: the run was stopped\\. `));
    for (const pid of [first, second, emulator]) expect(alive(Number(pid))).toBe(false);
  });
});

describe('simulate when a broker given by URL goes away for good', () => {
  const emulator = useEmulator({ qpsLimit: 10_000 }, 'test');

  it(`no device online, and none able to reach it, for the last ${BROKER_LOST_MS / 1_000} s of the run: BrokerLost`, async () => {
    let closing: Promise<void> | undefined;
    const report = await runSimulation({
      target: emulatorTarget(emulator()),
      devices: 10,
      // Long enough past the loss (at the start of publishing) for the devices to have tried and failed for BROKER_LOST_MS.
      durationMs: BROKER_LOST_MS + 3_000,
      publishIntervalMs: 200,
      connectRate: 0,
      apiQps: 10_000,
      onProgress: (p) => {
        if (closing === undefined && p.phase === 'publishing') closing = emulator().close();
      },
    });
    await closing;
    expect(report.brokerLost).toEqual({ at: expect.any(String), embeddedEmulator: false, cause: expect.stringMatching(/^No device could reach the broker for the last [\d.]+ s of the run: all 10 that had connected lost their sessions by \S+, and every attempt since failed \(\d+ BrokerUnreachable, \d+ ConnectTimeout in all\)$/) });
    expect(report.errors['BrokerUnreachable']).toBeGreaterThan(0);
    expect(simulationFailure(report)).toMatchObject({ code: 'BrokerLost', retryable: true });
  });
});
