import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { type Socket, connect as netConnect, createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { decodeHistogram } from '../../src/simulator/histogram.js';
import { ephemeralPortRange } from '../../src/simulator/local-address.js';
import { runSimulation } from '../../src/simulator/run.js';
import { emulatorTarget } from '../../src/simulator/target.js';
import type { SimulationReport } from '../../src/simulator/report-format.js';
import { type BuiltCliRun, cli, runBuiltCli, tempDir } from '../helpers/cli.js';
import { useEmulator } from '../helpers/emulator.js';

describe('shards of one run, started together and merged (built CLI, one process per shard)', () => {
  const emulator = useEmulator({ qpsLimit: 10_000 });

  it('two shards with --start-at connect no earlier than it, and report merge gives the fleet', async () => {
    const dir = await tempDir();
    const emu = emulator();
    const keys = { ALIBABA_CLOUD_ACCESS_KEY_ID: emu.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: emu.accessKeySecret };
    // Far enough ahead for both processes to start and provision 12 devices each on a busy machine.
    const startAt = new Date(Date.now() + 6_000);
    const shard = (i: number): Promise<BuiltCliRun> =>
      runBuiltCli(
        [
          'simulate', '--devices', '24', '--group-id', 'GID_merge', '--shard', `${i}/2`, '--start-at', startAt.toISOString(), '--duration', '2',
          '--publish-interval', '200', '--subscribe', '--connect-rate', '0', '--no-progress', '--report', join(dir, `shard${i}.json`),
          '--endpoint', emu.apiEndpoint, '--instance-id', emu.instanceId, '--broker-url', emu.mqttUrl, '--store', join(dir, `store${i}`),
        ],
        { env: keys },
      );
    const runs = await Promise.all([shard(1), shard(2)]);
    for (const run of runs) expect(run.code, run.stderr).toBe(0);
    const shards = await Promise.all([1, 2].map(async (i) => JSON.parse(await readFile(join(dir, `shard${i}.json`), 'utf8')) as SimulationReport));
    for (const report of shards) {
      expect(report.run.startAt).toBe(startAt.toISOString());
      // Nothing connected before the agreed time.
      expect((report.windows.connect as [number, number])[0]).toBeGreaterThanOrEqual(startAt.getTime());
      expect(report.connected).toBe(12);
    }

    const html = join(dir, 'fleet.html');
    const output = join(dir, 'fleet.json');
    const merged = await runBuiltCli(['report', 'merge', join(dir, 'shard1.json'), join(dir, 'shard2.json'), '--json', '--html', html, '--output', output]);
    expect(merged.code, merged.stderr).toBe(0);
    expect(merged.stderr).toBe('');
    const summary = await runBuiltCli(['report', 'merge', join(dir, 'shard1.json'), join(dir, 'shard2.json')]);
    expect(summary.stdout).toMatch(/^Simulated 24 devices in .* shards 1\/2, 2\/2\), started /m);
    const fleet = JSON.parse(merged.stdout) as SimulationReport;
    expect(JSON.parse(await readFile(output, 'utf8'))).toEqual(fleet);
    expect(fleet).toMatchObject({ devices: 24, provisioned: 24, connected: 24, failedConnects: 0, errors: {} });
    expect(fleet.published).toBe(shards[0]!.published + shards[1]!.published);
    expect(fleet.delivered).toBe(fleet.published);
    expect(fleet.shards.map((s) => `${s.index}/${s.count}`)).toEqual(['1/2', '2/2']);
    // The fleet's histograms hold every shard's samples, and the series add up to the totals.
    expect(decodeHistogram(fleet.histograms.connectLatencyUs).totalCount).toBe(24);
    expect(decodeHistogram(fleet.histograms.e2eLatencyUs).totalCount).toBe(fleet.delivered);
    const total = (values: number[]): number => values.reduce((a, b) => a + b, 0);
    expect(total(fleet.series.connects)).toBe(24);
    expect(total(fleet.series.published)).toBe(fleet.published);
    expect(Math.max(...fleet.series.connected)).toBe(24);
    expect(fleet.connectLatencyMs.p99).toBeGreaterThanOrEqual(Math.min(shards[0]!.connectLatencyMs.p99!, shards[1]!.connectLatencyMs.p99!));
    expect(fleet.connectLatencyMs.max).toBe(Math.max(shards[0]!.connectLatencyMs.max!, shards[1]!.connectLatencyMs.max!));
    expect(await readFile(html, 'utf8')).toMatch(/^<!doctype html>/);

    // A report of another run (here: another duration) is refused, naming the difference.
    const other = { ...shards[1]!, run: { ...shards[1]!.run, durationMs: 9_000 } };
    await writeFile(join(dir, 'other.json'), JSON.stringify(other));
    const refused = await runBuiltCli(['report', 'merge', join(dir, 'shard1.json'), join(dir, 'other.json')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^ReportMismatch: These reports are not of the same run: durationMs is 2000 in .*shard1\.json but 9000 in .*other\.json/m);
    const missing = await runBuiltCli(['report', 'merge', join(dir, 'shard2.json')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^ReportMismatch: Shard 1\/2 of the run is missing/m);
    const unreadable = await runBuiltCli(['report', 'merge', join(dir, 'nope.json')]);
    expect(unreadable.stderr).toMatch(/^InvalidReport: Cannot read the report .*nope\.json \(ENOENT\)/m);
  });
});

describe('--local-address', () => {
  const emulator = useEmulator({ qpsLimit: 10_000 });

  /** A TCP relay in front of the broker that records the source address of every connection it accepts. */
  async function recordingRelay(brokerUrl: string): Promise<{ url: string; sources: string[] }> {
    const broker = new URL(brokerUrl);
    const sources: string[] = [];
    const sockets = new Set<Socket>();
    const server = createServer((client) => {
      sources.push(client.remoteAddress ?? '?');
      const upstream = netConnect(Number(broker.port), broker.hostname);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('error', () => s.destroy());
        s.on('close', () => sockets.delete(s));
      }
      client.pipe(upstream).pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    onTestFinished(async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    });
    const { port } = server.address() as { port: number };
    return { url: `mqtt://127.0.0.1:${port}`, sources };
  }

  it.skipIf(process.platform !== 'linux')('spreads the devices over the source addresses in turn (seen by the broker side)', async () => {
    const emu = emulator();
    const relay = await recordingRelay(emu.mqttUrl);
    const target = { ...emulatorTarget(emu), brokerUrl: relay.url };
    const report = await runSimulation({ target, devices: 8, groupId: 'GID_src', localAddress: '127.0.0.2-127.0.0.5', durationMs: 0, publishIntervalMs: 0, connectRate: 0, apiQps: 10_000 });
    expect(report).toMatchObject({ connected: 8, failedConnects: 0 });
    expect(relay.sources.sort()).toEqual(['127.0.0.2', '127.0.0.2', '127.0.0.3', '127.0.0.3', '127.0.0.4', '127.0.0.4', '127.0.0.5', '127.0.0.5']);
    expect(report.shards[0]?.localAddresses).toEqual(['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5']);
  });

  it.skipIf(process.platform !== 'linux')('refuses, before starting anything, a fleet larger than its source ports (AddressSpaceTooSmall, exit 1)', async () => {
    const ports = ephemeralPortRange();
    const devices = (ports?.count ?? 28_232) * 2 + 1;
    const run = await cli(['simulate', '--devices', String(devices), '--local-address', '127.0.0.2-127.0.0.3', '--no-progress']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^AddressSpaceTooSmall: ${devices} devices over 2 source addresses make ${Math.ceil(devices / 2)} connections per address .*at least 3 source addresses`, 'm'));
    expect(run.stderr).not.toMatch(/provision/);
  });

  it('refuses an address that is not on this machine (exit 2)', async () => {
    const run = await cli(['simulate', '--devices', '2', '--local-address', '192.0.2.55', '--no-progress']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^InvalidOption: Option --local-address: 192\.0\.2\.55 is not an address of this machine/m);
  });
});

describe('simulate --start-at', () => {
  it('refuses a --start-at in the past, naming it', async () => {
    const run = await cli(['simulate', '--start-at', '2020-01-01T00:00:00Z', '--no-progress']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/Option --start-at 2020-01-01T00:00:00\.000Z is .* s in the past/);
  });
});
