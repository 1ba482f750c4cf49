import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { once } from 'node:events';
import { type AddressInfo, type Socket, connect as netConnect, createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DeviceCredential } from '../../src/credential.js';
import { runSimulation, type SimulationOptions, type SimulationProgress } from '../../src/simulator/index.js';
import { emulatorTarget } from '../../src/simulator/target.js';
import { cli, runBuiltCli, tempDir } from '../helpers/cli.js';
import { useEmulator } from '../helpers/emulator.js';

describe('runSimulation against an emulator started by the test', () => {
  const emulator = useEmulator({ qpsLimit: 10_000 });
  /** Options every run here shares: this emulator, connects and API calls as fast as it takes them. */
  const fast = (): SimulationOptions => ({ target: emulatorTarget(emulator()), connectRate: 0, apiQps: 10_000 });

  it('provisions, connects, publishes, receives its own messages back and reports it all', async () => {
    const phases: SimulationProgress['phase'][] = [];
    const report = await runSimulation({
      ...fast(),
      devices: 20,
      durationMs: 2_000,
      publishIntervalMs: 200,
      subscribe: true,
      progressIntervalMs: 100,
      onProgress: (p) => {
        if (phases.at(-1) !== p.phase) phases.push(p.phase);
      },
    });
    expect(report).toMatchObject({ devices: 20, provisioned: 20, connected: 20, failedConnects: 0, errors: {}, reconnects: 0 });
    expect(report.published).toBeGreaterThan(0);
    expect(report.acked).toBe(report.published);
    expect(report.delivered).toBe(report.published);
    for (const latency of [report.connectLatencyMs, report.e2eLatencyMs]) {
      expect(latency.p50).not.toBeNull();
      expect(latency.p50 as number).toBeLessThanOrEqual(latency.p95 as number);
      expect(latency.p95 as number).toBeLessThanOrEqual(latency.p99 as number);
      expect(latency.p99 as number).toBeLessThanOrEqual(latency.max as number);
    }
    expect(report.connectRatePerSec).toBeGreaterThan(0);
    expect(report.publishRatePerSec).toBeGreaterThan(0);
    expect(report.peakRssMB).toBeGreaterThan(0);
    expect(phases).toEqual(['starting', 'provisioning', 'connecting', 'publishing', 'draining', 'disconnecting', 'done']);
    // Every device disconnected cleanly: CONNACK 0 for each, and nobody is left connected.
    expect(emulator().stats().mqtt.connacks['0']).toBe(20);
    expect(emulator().stats().mqtt.connected).toBe(0);
  });

  it('two shards of one fleet simulate disjoint devices that together are the fleet', async () => {
    const target = emulatorTarget(emulator());
    const common = { ...fast(), target, devices: 7, durationMs: 0, publishIntervalMs: 0, groupId: 'GID_shard' };
    const first = await runSimulation({ ...common, shard: '1/2' });
    const second = await runSimulation({ ...common, shard: '2/2' });
    expect(first.connected + second.connected).toBe(7);
    expect(first.devices).toBe(3);
    expect(second.devices).toBe(4);
    // The shared in-memory store now holds each ClientId once: the two shards registered different devices.
    const store = target.provisioner.store as unknown as { size: number };
    expect(store.size).toBe(7);
  });

  it('counts a refused credential under CredentialRejected, as a failed connect', async () => {
    const target = emulatorTarget(emulator());
    const id = 'GID_bad@@@sim-0';
    const wrong = new DeviceCredential({ clientId: id, instanceId: emulator().instanceId, deviceAccessKeyId: 'DC.nope', deviceAccessKeySecret: 'wrong-secret-0000' });
    await target.provisioner.store?.save(wrong);
    const report = await runSimulation({ target, devices: 1, groupId: 'GID_bad', durationMs: 0, publishIntervalMs: 0, apiQps: 10_000 });
    expect(report).toMatchObject({ provisioned: 1, connected: 0, failedConnects: 1, reconnects: 0 });
    expect(report.errors).toEqual({ CredentialRejected: 1 });
  });

  it('reconnects a device whose session the broker dropped, and counts it', async () => {
    const controller = new AbortController();
    let kicked = false;
    const report = await runSimulation({
      ...fast(),
      devices: 3,
      durationMs: 600_000,
      publishIntervalMs: 50,
      groupId: 'GID_kick',
      progressIntervalMs: 20,
      signal: controller.signal,
      onProgress: (p) => {
        if (!kicked && p.online === 3) {
          kicked = true;
          expect(emulator().disconnect('GID_kick@@@sim-1')).toBe(true);
        } else if (kicked && p.errors >= 1 && p.online === 3) {
          // The loss is counted when the socket closes, so errors >= 1 with all online means it came back.
          controller.abort();
        }
      },
    });
    expect(report.reconnects).toBe(1);
    expect(report.errors).toEqual({ ConnectionLost: 1 });
    expect(report).toMatchObject({ connected: 3, failedConnects: 0 });
  });

  it('stops early and still reports when its signal aborts', async () => {
    const controller = new AbortController();
    const running = runSimulation({
      ...fast(),
      devices: 5,
      durationMs: 600_000,
      groupId: 'GID_abort',
      progressIntervalMs: 50,
      onProgress: (p) => {
        if (p.online === 5) controller.abort();
      },
      signal: controller.signal,
    });
    const report = await running;
    expect(report.connected).toBe(5);
    expect(emulator().stats().mqtt.connected).toBe(0);
  });

  it('a reconnect still in flight when the run ends is not counted as an error (only the loss that caused it)', async () => {
    // A relay that passes the first session through, drops it right after the CONNACK, and then accepts every
    // later connection without ever answering it: the device's reconnect is still waiting when the run ends.
    const broker = new URL(emulator().mqttUrl);
    const sockets = new Set<Socket>();
    let first = true;
    const relay = createServer((client) => {
      sockets.add(client);
      client.on('error', () => client.destroy());
      client.on('close', () => sockets.delete(client));
      if (!first) return;
      first = false;
      const upstream = netConnect(Number(broker.port), broker.hostname);
      sockets.add(upstream);
      upstream.on('error', () => upstream.destroy());
      client.pipe(upstream);
      upstream.once('data', (connack: Buffer) => {
        upstream.destroy();
        client.end(connack);
      });
    });
    relay.listen(0, '127.0.0.1');
    await once(relay, 'listening');
    onTestFinished(async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => relay.close(resolve));
    });
    const { port } = relay.address() as AddressInfo;
    const target = { ...emulatorTarget(emulator()), brokerUrl: `mqtt://127.0.0.1:${port}` };
    // The first reconnect comes within 500 ms of the loss (full jitter); the run lasts well past that.
    const report = await runSimulation({ target, connectRate: 0, apiQps: 10_000, devices: 1, groupId: 'GID_cut', durationMs: 1_500, publishIntervalMs: 0 });
    expect(report).toMatchObject({ connected: 1, failedConnects: 0, reconnects: 0 });
    expect(report.errors).toEqual({ ConnectionLost: 1 });
  });
});

describe('runSimulation over TLS', () => {
  const fixtures = join(import.meta.dirname, '../../fixtures/tls');
  const emulator = useEmulator({
    qpsLimit: 10_000,
    tls: { cert: readFileSync(join(fixtures, 'server.pem'), 'utf8'), key: readFileSync(join(fixtures, 'server-key.pem'), 'utf8') },
  });

  it('connects every device to an mqtts:// broker verified against the given CA', async () => {
    const emu = emulator();
    const target = { ...emulatorTarget(emu), brokerUrl: emu.mqttsUrl as string, ca: readFileSync(join(fixtures, 'ca.pem'), 'utf8') };
    const report = await runSimulation({ target, devices: 5, durationMs: 500, connectRate: 0, publishIntervalMs: 100, subscribe: true, apiQps: 10_000 });
    expect(report).toMatchObject({ connected: 5, failedConnects: 0, errors: {} });
    expect(report.delivered).toBe(report.published);
  });
});

describe('apsaramq-device simulate (built CLI, embedded emulator in its own process)', () => {
  it('publishes under the parent topic of its --topic on the embedded emulator (which refuses parents never created)', async () => {
    const run = await runBuiltCli(['simulate', '--devices', '5', '--duration', '1', '--topic', 'load/%i', '--connect-rate', '0', '--publish-interval', '200', '--json', '--no-progress']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(report).toMatchObject({ devices: 5, connected: 5, errors: {}, reconnects: 0 });
    expect(report['published']).toBeGreaterThan(0);
  });

  it('runs 20 devices for 2 s with --subscribe and prints the JSON report', async () => {
    const dir = await tempDir();
    const reportFile = join(dir, 'report.json');
    const run = await runBuiltCli(['simulate', '--devices', '20', '--duration', '2', '--subscribe', '--connect-rate', '0', '--publish-interval', '250', '--json', '--report', reportFile]);
    // Not a TTY: progress comes as plain lines, the last of each phase with its final count.
    expect(run.stderr).toMatch(/^simulate provisioning: 20\/20 100% .* · 0 errors$/m);
    expect(run.stderr).toMatch(/^simulate publishing: 20\/20 100% .* · 20 online · \d+ msg\/s · \d+ published · 0 errors$/m);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(report).toMatchObject({ devices: 20, provisioned: 20, connected: 20, failedConnects: 0, errors: {} });
    expect(report['delivered']).toBe(report['published']);
    expect(JSON.parse(await readFile(reportFile, 'utf8'))).toEqual(report);
  });

});

describe('apsaramq-device simulate against a running emulator (--endpoint)', () => {
  // In this process, so only the CLI child runs under the low open-file limit.
  const emulator = useEmulator({ qpsLimit: 10_000 });

  it('keeps credentials in --store, so a second run registers nothing', async () => {
    const dir = await tempDir();
    const emu = emulator();
    const args = [
      'simulate', '--devices', '10', '--group-id', 'GID_store', '--duration', '1', '--connect-rate', '0', '--no-progress', '--json',
      '--endpoint', emu.apiEndpoint, '--instance-id', emu.instanceId, '--broker-url', emu.mqttUrl, '--store', dir,
    ];
    const keys = { ALIBABA_CLOUD_ACCESS_KEY_ID: emu.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: emu.accessKeySecret };
    const first = await runBuiltCli(args, { env: keys });
    expect(first.code).toBe(0);
    const registered = emu.stats().actions['RegisterDeviceCredential']?.ok;
    expect(registered).toBe(10);
    const second = await runBuiltCli(args, { env: keys });
    expect(second.code).toBe(0);
    expect(JSON.parse(second.stdout)).toMatchObject({ provisioned: 10, connected: 10 });
    expect(emu.stats().actions['RegisterDeviceCredential']?.ok).toBe(registered);
  });

  it('fails with TooManyOpenFiles (exit 1), not a crash, when the open-file limit is too low', async () => {
    const dir = await tempDir();
    const emu = emulator();
    const run = await runBuiltCli(
      [
        'simulate', '--devices', '300', '--duration', '1', '--connect-rate', '0', '--publish-interval', '0', '--no-progress',
        '--endpoint', emu.apiEndpoint, '--instance-id', emu.instanceId, '--broker-url', emu.mqttUrl, '--store', dir,
        '--api-qps', '5000', '--api-concurrency', '8',
      ],
      { shellPrefix: 'ulimit -n 200 &&', env: { ALIBABA_CLOUD_ACCESS_KEY_ID: emu.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: emu.accessKeySecret } },
    );
    expect(run.stderr).toMatch(/^warning: 300 devices need about/m);
    expect(run.stderr).toMatch(/^TooManyOpenFiles: .*ulimit -n/m);
    expect(run.code).toBe(1);
  });
});

describe('apsaramq-device simulate flag validation (exit 2)', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['payload over 64 KB', ['--payload-size', '65537'], /--payload-size must be from 8 to 65536/],
    ['ClientIds over 64 characters', ['--group-id', `GID_${'x'.repeat(56)}`, '--devices', '100'], /64 are allowed/],
    ['a bad GroupId', ['--group-id', 'nogroup'], /GroupId/],
    ['a bad shard', ['--shard', '3/2'], /Shard 3\/2/],
    ['QoS 2', ['--qos', '2'], /--qos must be from 0 to 1/],
    ['an unknown placeholder', ['--topic', 'a/%z'], /%z/],
    ['subscribe on a shared topic', ['--subscribe', '--topic', 'all'], /%c or %i/],
    ['a broker URL without an endpoint', ['--broker-url', 'mqtt://127.0.0.1:1883'], /--broker-url needs --endpoint or --region/],
    ['an endpoint without an instance', ['--endpoint', 'http://127.0.0.1:1'], /--instance-id/],
    ['a WebSocket transport', ['--transport', 'ws'], /--transport must be one of tcp, tls/],
  ];
  for (const [what, args, message] of cases) {
    it(`rejects ${what}`, async () => {
      const run = await cli(['simulate', ...args]);
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(message);
    });
  }

  it('documents its defaults in --help', async () => {
    const run = await cli(['simulate', '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/Defaults: 200 devices, 20 s/);
    expect(run.stdout).toMatch(/--connect-rate <r>/);
  });
});
