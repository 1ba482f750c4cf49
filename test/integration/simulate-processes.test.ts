import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { decodeHistogram } from '../../src/simulator/histogram.js';
import { ephemeralPortRange } from '../../src/simulator/local-address.js';
import type { SimulationReport } from '../../src/simulator/report-format.js';
import { cli, startCli, tempDir } from '../helpers/cli.js';
import { alive } from '../helpers/processes.js';
import { useEmulator } from '../helpers/emulator.js';

/** The shard processes' pids, from the line the parent prints when it has started them. */
const PIDS = /simulate: 2 shard processes \(pids (\d+), (\d+)\)/;

describe('simulate --processes (built CLI, real shard processes)', () => {
  it('two processes, each with its own embedded emulator, give one merged report of the whole fleet', async () => {
    const dir = await tempDir();
    const file = join(dir, 'run.json');
    const run = startCli(['simulate', '--processes', '2', '--devices', '40', '--subscribe', '--duration', '2', '--publish-interval', '200', '--connect-rate', '0', '--report', file, '--json']);
    const [, a, b] = await run.waitFor(PIDS);
    const { code } = await run.exit;
    expect(code, run.stderr()).toBe(0);
    const report = JSON.parse(run.stdout()) as SimulationReport;
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(report);
    expect(report).toMatchObject({ devices: 40, provisioned: 40, connected: 40, failedConnects: 0, errors: {} });
    expect(report.interrupted).toBeUndefined();
    // The user's flags reached every shard (the parent rebuilt them).
    expect(report.run).toMatchObject({ devices: 40, subscribe: true, durationMs: 2_000, publishIntervalMs: 200, connectRate: 0 });
    expect(report.run.target.kind).toBe('embedded-emulator');
    expect(report.shards.map((s) => `${s.index}/${s.count}:${s.devices}:${s.connected}`)).toEqual(['1/2:20:20', '2/2:20:20']);
    expect(new Set(report.shards.map((s) => s.host)).size).toBe(1);
    for (const shard of report.shards) {
      expect(shard.baseRssMB).toBeGreaterThan(0);
      expect(shard.peakRssMB).toBeGreaterThanOrEqual(shard.baseRssMB as number);
    }
    expect(report.published).toBeGreaterThan(0);
    expect(report.delivered).toBe(report.published);
    expect(report.acked).toBe(report.published);
    // Both shards' samples are in the merged histograms.
    expect(decodeHistogram(report.histograms.connectLatencyUs).totalCount).toBe(40);
    expect(decodeHistogram(report.histograms.e2eLatencyUs).totalCount).toBe(report.delivered);
    // Only the parent's own lines on stderr: its pids line and no shard's summary.
    expect(run.stderr()).not.toMatch(/Simulated 20/);
    for (const pid of [a, b]) expect(alive(Number(pid))).toBe(false);
  });

  describe('against one emulator (--endpoint)', () => {
    const emulator = useEmulator({ qpsLimit: 10_000 });

    it.skipIf(process.platform !== 'linux')('refuses, before any API call, shards that fit one by one but not together in the source ports toward one broker', async () => {
      const emu = emulator();
      const dir = await tempDir();
      const ports = ephemeralPortRange();
      const devices = (ports?.count ?? 28_232) + 2;
      const env = { ALIBABA_CLOUD_ACCESS_KEY_ID: emu.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: emu.accessKeySecret };
      const target = ['--endpoint', emu.apiEndpoint, '--instance-id', emu.instanceId, '--broker-url', emu.mqttUrl, '--store', join(dir, 'store')];
      // Half of the fleet per shard fits; the whole fleet from one source address does not.
      const run = await cli(['simulate', '--devices', String(devices), '--processes', '2', '--no-progress', ...target], env);
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(new RegExp(`^AddressSpaceTooSmall: ${devices} devices from one source address toward 127\\.0\\.0\\.1:\\d+ need ${devices} source ports`, 'm'));
      expect(run.stderr).not.toMatch(/shard processes/);
      expect(emu.stats().actions['GetDeviceCredential']).toBeUndefined();
    });

    it('the shards start connecting together, after the slowest has provisioned', async () => {
      const dir = await tempDir();
      const emu = emulator();
      const env = { ALIBABA_CLOUD_ACCESS_KEY_ID: emu.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: emu.accessKeySecret };
      const target = ['--endpoint', emu.apiEndpoint, '--instance-id', emu.instanceId, '--broker-url', emu.mqttUrl, '--store', join(dir, 'store')];
      const common = ['--devices', '40', '--group-id', 'GID_together', '--connect-rate', '0', '--publish-interval', '0', '--duration', '0', '--no-progress'];
      // Shard 1's devices are in the store already: it provisions at once. Shard 2's 20 are registered at 3 calls/s,
      // more than 6 s. Without a barrier shard 1 would connect that much earlier than shard 2.
      const first = await cli(['simulate', ...common, '--shard', '1/2', ...target], env);
      expect(first.code, first.stderr).toBe(0);
      const started = Date.now();
      const run = startCli(['simulate', ...common, '--processes', '2', '--api-qps', '3', '--api-concurrency', '1', '--json', ...target], env);
      const { code } = await run.exit;
      expect(code, run.stderr()).toBe(0);
      const report = JSON.parse(run.stdout()) as SimulationReport;
      expect(report).toMatchObject({ devices: 40, connected: 40, failedConnects: 0 });
      expect(report.run.target.kind).toBe('broker');
      const [firstConnect, lastConnack] = report.windows.connect as [number, number];
      // Nobody connected before shard 2's provisioning could have ended (19 intervals of 1/3 s after the start).
      expect(firstConnect - started).toBeGreaterThanOrEqual(6_000);
      // And all 40 connected within a span shorter than that head start.
      expect(lastConnack - firstConnect).toBeLessThan(4_500);
    });

    it('a shard that is killed fails the run with ShardFailed naming it; the other is stopped; nothing is left running', async () => {
      const emu = emulator();
      const dir = await tempDir();
      const env = { ALIBABA_CLOUD_ACCESS_KEY_ID: emu.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: emu.accessKeySecret };
      const run = startCli(
        ['simulate', '--processes', '2', '--devices', '20', '--group-id', 'GID_killed', '--duration', '60', '--publish-interval', '1000', '--endpoint', emu.apiEndpoint,
          '--instance-id', emu.instanceId, '--broker-url', emu.mqttUrl, '--store', join(dir, 'store')],
        env,
      );
      const [, a, b] = await run.waitFor(PIDS);
      process.kill(Number(b), 'SIGKILL');
      const { code } = await run.exit;
      expect(code).toBe(1);
      expect(run.stderr()).toMatch(new RegExp(`^ShardFailed: Shard 2/2 \\(pid ${b}\\) was killed by SIGKILL without writing its report`, 'm'));
      expect(run.stdout()).toBe('');
      for (const pid of [a, b]) expect(alive(Number(pid))).toBe(false);
    });
  });

  it('--shard I/N with --processes n: the processes split slice I (shards of N*n), and report merge joins the slices', async () => {
    const dir = await tempDir();
    const halves = ['1/2', '2/2'].map((slice, k) => {
      const file = join(dir, `half-${k + 1}.json`);
      const run = startCli(['simulate', '--processes', '2', '--shard', slice, '--devices', '26', '--duration', '1', '--publish-interval', '200', '--connect-rate', '0', '--report', file, '--no-progress']);
      return { run, file };
    });
    for (const { run } of halves) expect((await run.exit).code, run.stderr()).toBe(0);
    const [first, second] = await Promise.all(halves.map(async ({ file }) => JSON.parse(await readFile(file, 'utf8')) as SimulationReport));
    // 26 devices: slice 1/2 is devices 0-12, split into 0-5 and 6-12 (floor(26*k/4)); slice 2/2 is 13-18 and 19-25.
    expect(first?.shards.map((s) => `${s.index}/${s.count}:${s.devices}`)).toEqual(['1/4:6', '2/4:7']);
    expect(second?.shards.map((s) => `${s.index}/${s.count}:${s.devices}`)).toEqual(['3/4:6', '4/4:7']);
    expect(first).toMatchObject({ devices: 13, connected: 13, failedConnects: 0 });
    // One slice alone is not the fleet: merging it without the other is refused, naming what is missing.
    const alone = startCli(['report', 'merge', halves[0]?.file as string]);
    expect((await alone.exit).code).toBe(1);
    expect(alone.stderr()).toMatch(/^ReportMismatch: Shards 3\/4, 4\/4 of the run are missing/m);
    const merged = startCli(['report', 'merge', ...halves.map((h) => h.file), '--json']);
    expect((await merged.exit).code, merged.stderr()).toBe(0);
    const fleet = JSON.parse(merged.stdout()) as SimulationReport;
    expect(fleet).toMatchObject({ devices: 26, provisioned: 26, connected: 26, failedConnects: 0 });
    expect(fleet.shards.map((s) => `${s.index}/${s.count}`)).toEqual(['1/4', '2/4', '3/4', '4/4']);
    expect(decodeHistogram(fleet.histograms.connectLatencyUs).totalCount).toBe(26);
  });

  it('--processes usage errors (exit 2), before anything starts', async () => {
    const slice = await cli(['simulate', '--processes', '3', '--shard', '1/2', '--devices', '4']);
    expect(slice.code).toBe(2);
    expect(slice.stderr).toMatch(/^InvalidOption: --processes 3 is more than the 2 devices of --shard 1\/2/);
    const more = await cli(['simulate', '--processes', '3', '--devices', '2']);
    expect(more.code).toBe(2);
    expect(more.stderr).toMatch(/^InvalidOption: --processes 3 is more than --devices 2/);
    const range = await cli(['simulate', '--processes', '65']);
    expect(range.code).toBe(2);
    expect(range.stderr).toMatch(/^InvalidOption: --processes 65 is invalid: --processes must be from 1 to 64/);
    const past = await cli(['simulate', '--processes', '2', '--start-at', '2020-01-01T00:00:00Z']);
    expect(past.code).toBe(2);
    expect(past.stderr).toMatch(/--start-at/);
  });

  it.each([
    ['SIGTERM to the parent alone', 'SIGTERM', 143, false],
    ['Ctrl+C (SIGINT to the process group)', 'SIGINT', 130, true],
  ] as const)('%s (%s) stops every shard, merges their reports marked interrupted, exit %i', async (_name, signal, exitCode, group) => {
    const dir = await tempDir();
    const file = join(dir, 'run.json');
    const run = startCli(['simulate', '--processes', '2', '--devices', '20', '--duration', '120', '--publish-interval', '500', '--connect-rate', '0', '--report', file], {}, { detached: group });
    const [, a, b] = await run.waitFor(PIDS);
    await run.waitFor(/simulate publishing: 20\/20/);
    process.kill(group ? -(run.child.pid as number) : (run.child.pid as number), signal);
    const { code } = await run.exit;
    expect(code, run.stderr()).toBe(exitCode);
    expect(run.stderr()).toMatch(/^Interrupted: 20 of 20 devices had connected when the run was stopped; .* is marked "interrupted"/m);
    expect(run.stdout()).toMatch(/^INTERRUPTED: /);
    const report = JSON.parse(await readFile(file, 'utf8')) as SimulationReport;
    expect(report.interrupted).toBe(true);
    expect(report.shards.map((s) => `${s.index}/${s.count}`)).toEqual(['1/2', '2/2']);
    expect(report.connected).toBe(20);
    // Stopped long before the 120 s: the shards' runs ended when told.
    expect(report.elapsedMs).toBeLessThan(120_000);
    for (const pid of [a, b]) expect(alive(Number(pid))).toBe(false);
  });

  it('a second SIGTERM exits the parent at once and still removes its directory of shard reports', async () => {
    const tmp = await tempDir();
    const run = startCli(['simulate', '--processes', '2', '--devices', '10', '--duration', '120', '--publish-interval', '500', '--connect-rate', '0', '--no-progress'], { TMPDIR: tmp });
    const [, a, b] = await run.waitFor(PIDS);
    // The shards stop by themselves once their parent is gone (their IPC channel closes); this only makes sure.
    onTestFinished(() => {
      for (const pid of [a, b]) if (alive(Number(pid))) process.kill(Number(pid), 'SIGKILL');
    });
    expect((await readdir(tmp)).filter((name) => name.startsWith('apsaramq-device-processes-'))).toHaveLength(1);
    process.kill(run.child.pid as number, 'SIGTERM');
    // The second signal once the first was taken (two at once would arrive as one), while the shards wind down.
    await run.waitFor(/^simulate: stopping 2 shard processes \(SIGTERM\); a second signal exits at once$/m);
    process.kill(run.child.pid as number, 'SIGTERM');
    const { code } = await run.exit;
    expect(code).toBe(143);
    expect(run.stderr()).not.toMatch(/^Interrupted: /m);
    expect((await readdir(tmp)).filter((name) => name.startsWith('apsaramq-device-processes-'))).toEqual([]);
  });
});
