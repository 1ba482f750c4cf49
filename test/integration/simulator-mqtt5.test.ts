/**
 * MQTT 5 devices (`simulate --protocol 5`): the simulator's own MQTT 5 packets against the emulator's aedes 2 broker,
 * in this process (where the broker shows each client's protocol level) and through the CLI, with refusals counted
 * under their v5 reason codes.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Client } from 'aedes';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DeviceCredential } from '../../src/credential.js';
import { runSimulation, type SimulationOptions } from '../../src/simulator/index.js';
import { emulatorTarget } from '../../src/simulator/target.js';
import type { SimulationReport } from '../../src/simulator/report-format.js';
import type { Emulator } from '../../src/emulator/index.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { mosquittoPrograms, startMosquitto } from '../helpers/mosquitto.js';
import { cli, runBuiltCli, tempDir } from '../helpers/cli.js';
import { registerDevice, useEmulator } from '../helpers/emulator.js';

// Like the interop files: CI (APSARAMQ_REQUIRE_INTEROP=1) must have Mosquitto; elsewhere its test says it skipped.
const { available: mosquittoInstalled, skipped } = mosquittoPrograms(['mosquitto', 'passwd']);

/** The protocol level of every client the broker accepts from now until the end of the test. */
function protocolLevels(emulator: Emulator): number[] {
  const levels: number[] = [];
  const onClient = (client: Client): void => {
    levels.push((client as Client & { version: number }).version);
  };
  emulator.broker.on('client', onClient);
  onTestFinished(() => {
    emulator.broker.off('client', onClient);
  });
  return levels;
}

function expectOrderedLatency(latency: SimulationReport['e2eLatencyMs']): void {
  expect(latency.p50).not.toBeNull();
  expect(latency.p50 as number).toBeLessThanOrEqual(latency.p99 as number);
  expect(latency.p99 as number).toBeLessThanOrEqual(latency.max as number);
}

describe('runSimulation with protocol 5 against an emulator started by the test', () => {
  const emulator = useEmulator({ qpsLimit: 10_000 });
  const fast = (groupId: string): SimulationOptions => ({ target: emulatorTarget(emulator()), groupId, connectRate: 0, apiQps: 10_000, protocol: 5 });

  it('connects MQTT 5 clients, publishes QoS 1 and gets every message back, with end-to-end latency', async () => {
    const levels = protocolLevels(emulator());
    const report = await runSimulation({ ...fast('GID_v5q1'), devices: 20, durationMs: 2_000, publishIntervalMs: 200, qos: 1, subscribe: true });
    expect(levels).toEqual(Array.from({ length: 20 }, () => 5));
    expect(report).toMatchObject({ devices: 20, provisioned: 20, connected: 20, failedConnects: 0, errors: {}, reconnects: 0 });
    expect(report.run.protocol).toBe(5);
    expect(report.published).toBeGreaterThan(0);
    expect(report.acked).toBe(report.published);
    expect(report.delivered).toBe(report.published);
    expectOrderedLatency(report.connectLatencyMs);
    expectOrderedLatency(report.e2eLatencyMs);
    // Every device said DISCONNECT (reason 0) and left: nobody is still connected.
    expect(emulator().stats().mqtt.connected).toBe(0);
  });

  it('publishes QoS 0 (no PUBACK) and still gets every message back', async () => {
    const report = await runSimulation({ ...fast('GID_v5q0'), devices: 10, durationMs: 1_500, publishIntervalMs: 200, qos: 0, subscribe: true });
    expect(report).toMatchObject({ connected: 10, failedConnects: 0, errors: {}, acked: 0 });
    expect(report.published).toBeGreaterThan(0);
    expect(report.delivered).toBe(report.published);
    expectOrderedLatency(report.e2eLatencyMs);
  });

  it('counts a refused credential under CredentialRejected with the v5 reason code, and shows the broker\'s Reason String', async () => {
    const target = emulatorTarget(emulator());
    const wrong = new DeviceCredential({ clientId: 'GID_v5bad@@@sim-0', instanceId: emulator().instanceId, deviceAccessKeyId: 'DC.nope', deviceAccessKeySecret: 'wrong-secret-0000' });
    await target.provisioner.store?.save(wrong);
    const warnings: string[] = [];
    const report = await runSimulation({ target, groupId: 'GID_v5bad', devices: 1, durationMs: 0, publishIntervalMs: 0, connectRate: 0, apiQps: 10_000, protocol: 5, onWarning: (m) => warnings.push(m) });
    expect(report).toMatchObject({ provisioned: 1, connected: 0, failedConnects: 1, reconnects: 0 });
    // 0x86 Bad User Name or Password: the emulator's answer for a key it cannot verify (3.1.1's CONNACK 4).
    expect(report.errors).toEqual({ 'CredentialRejected:0x86': 1 });
    expect(emulator().stats().mqtt.connacks['0x86']).toBeGreaterThanOrEqual(1);
    expect(warnings).toEqual([expect.stringMatching(/^The broker's reason for CredentialRejected:0x86 \(shown once per code\): ".+"$/)]);
  });
});

describe('runSimulation with protocol 5 against an emulator whose parent topics exclude the run\'s topic', () => {
  const emulator = useEmulator({ qpsLimit: 10_000, parentTopics: ['other'] });
  const fast = (groupId: string): SimulationOptions => ({ target: emulatorTarget(emulator()), groupId, connectRate: 0, apiQps: 10_000, protocol: 5 });

  it('a SUBSCRIBE refused by DISCONNECT 0x87 fails the connect as SubscribeRejected:0x87, once per device', async () => {
    const warnings: string[] = [];
    const report = await runSimulation({ ...fast('GID_v5sub'), devices: 4, durationMs: 500, publishIntervalMs: 100, subscribe: true, onWarning: (m) => warnings.push(m) });
    // Connected (CONNACK 0), then refused: the same accounting as a 3.1.1 SUBACK 0x80.
    expect(report).toMatchObject({ connected: 4, failedConnects: 4, published: 0, reconnects: 0 });
    expect(report.errors).toEqual({ 'SubscribeRejected:0x87': 4 });
    expect(warnings).toEqual([expect.stringMatching(/^The broker's reason for SubscribeRejected:0x87 .*parent topic 'sim'/)]);
  });

  it('a PUBLISH refused by DISCONNECT 0x87 counts PublishRejected:0x87 and the device does not reconnect to repeat it', async () => {
    const report = await runSimulation({ ...fast('GID_v5pub'), devices: 4, durationMs: 2_000, publishIntervalMs: 500, qos: 0 });
    expect(report).toMatchObject({ connected: 4, failedConnects: 0, reconnects: 0 });
    // One refusal per device, then nothing: the broker said why, and the same message would be refused again.
    expect(report.published).toBeGreaterThanOrEqual(4);
    expect(report.errors).toEqual({ 'PublishRejected:0x87': 4 });
  });

  it('3.1.1 devices, told nothing, lose the session and come back to be refused again (the contrast)', async () => {
    const report = await runSimulation({ ...fast('GID_v4pub'), protocol: 4, devices: 2, durationMs: 1_500, publishIntervalMs: 100, qos: 0 });
    expect(report.connected).toBe(2);
    expect(report.errors['ConnectionLost']).toBeGreaterThanOrEqual(2);
    expect(Object.keys(report.errors)).toEqual(['ConnectionLost']);
  });
});

describe('runSimulation with protocol 5 against an emulator that caps Keep Alive at 1 s', () => {
  const emulator = useEmulator({ qpsLimit: 10_000, maxKeepAliveSeconds: 1 });

  it('obeys the CONNACK\'s Server Keep Alive: idle devices ping often enough to stay connected', async () => {
    // Connect only, keepalive 90 s asked: the broker answers Server Keep Alive 1 and drops a client silent for 1.5 s.
    const report = await runSimulation({ target: emulatorTarget(emulator()), groupId: 'GID_v5ka', connectRate: 0, apiQps: 10_000, protocol: 5, devices: 3, durationMs: 3_000, publishIntervalMs: 0, keepalive: 90 });
    expect(report).toMatchObject({ connected: 3, failedConnects: 0, errors: {}, reconnects: 0 });
  });

  it('3.1.1 devices cannot be told, and are dropped (the contrast that shows the cap is enforced)', async () => {
    const report = await runSimulation({ target: emulatorTarget(emulator()), groupId: 'GID_v4ka', connectRate: 0, apiQps: 10_000, protocol: 4, devices: 3, durationMs: 3_000, publishIntervalMs: 0, keepalive: 90 });
    expect(report.connected).toBe(3);
    expect(report.errors['ConnectionLost']).toBeGreaterThanOrEqual(3);
  });
});

describe('apsaramq-device simulate --protocol 5', () => {
  it('runs against the embedded emulator (built CLI): QoS 1 with --subscribe, every message back, 0 errors', async () => {
    const dir = await tempDir();
    const reportFile = join(dir, 'v5.json');
    const run = await runBuiltCli(['simulate', '--protocol', '5', '--devices', '20', '--duration', '2', '--subscribe', '--connect-rate', '0', '--publish-interval', '250', '--no-progress', '--report', reportFile]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^Simulated 20 MQTT 5 devices in /m);
    expect(run.stdout).toMatch(/^ {2}errors: none$/m);
    const report = JSON.parse(await readFile(reportFile, 'utf8')) as SimulationReport;
    expect(report.run).toMatchObject({ protocol: 5, qos: 1, subscribe: true, target: { kind: 'embedded-emulator' } });
    expect(report).toMatchObject({ devices: 20, connected: 20, failedConnects: 0, errors: {} });
    expect(report.published).toBeGreaterThan(0);
    expect(report.acked).toBe(report.published);
    expect(report.delivered).toBe(report.published);
    expectOrderedLatency(report.e2eLatencyMs);
  });

  describe('against a running emulator (--endpoint) whose parent topics exclude the run\'s', () => {
    const emulator = useEmulator({ qpsLimit: 10_000, parentTopics: ['other'] });

    it('fails (exit 1) with the v5 reason code in the report\'s errors and the broker\'s words on stderr', async () => {
      const emu = emulator();
      const dir = await tempDir();
      const run = await cli(
        [
          'simulate', '--protocol', '5', '--devices', '3', '--group-id', 'GID_v5cli', '--duration', '1', '--subscribe', '--connect-rate', '0', '--json', '--no-progress',
          '--endpoint', emu.apiEndpoint, '--instance-id', emu.instanceId, '--broker-url', emu.mqttUrl, '--store', dir,
        ],
        { ALIBABA_CLOUD_ACCESS_KEY_ID: emu.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: emu.accessKeySecret },
      );
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/^warning: The broker's reason for SubscribeRejected:0x87 \(shown once per code\): ".*parent topic 'sim'.*"$/m);
      expect(run.stderr).toMatch(/^SimulationFailed: 3 of 3 devices connected \(0 not provisioned, 3 failed to connect\)/m);
      const report = JSON.parse(run.stdout) as SimulationReport;
      expect(report.run).toMatchObject({ protocol: 5, target: { kind: 'broker', instanceId: emu.instanceId } });
      expect(report.errors).toEqual({ 'SubscribeRejected:0x87': 3 });
    });
  });

  it('report merge refuses an MQTT 3.1.1 shard and an MQTT 5 shard of otherwise the same run, naming protocol', async () => {
    const dir = await tempDir();
    const shard = (index: number, protocol: number): Promise<{ code: number | null; stderr: string }> =>
      runBuiltCli(['simulate', '--devices', '4', '--shard', `${index}/2`, '--protocol', String(protocol), '--duration', '0', '--publish-interval', '0', '--connect-rate', '0', '--no-progress', '--report', join(dir, `s${index}.json`)]);
    const [first, second] = await Promise.all([shard(1, 4), shard(2, 5)]);
    expect(first.code, first.stderr).toBe(0);
    expect(second.code, second.stderr).toBe(0);
    const merge = await cli(['report', 'merge', join(dir, 's1.json'), join(dir, 's2.json')]);
    expect(merge.code).toBe(1);
    expect(merge.stderr).toMatch(/^ReportMismatch: These reports are not of the same run: .*protocol is 4 in .*s1\.json but 5 in .*s2\.json/m);
  });

  it('refuses a protocol level other than 4 or 5 (exit 2)', async () => {
    const run = await cli(['simulate', '--protocol', '3']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--protocol must be one of 4, 5/);
  });
});

describe.skipIf(!mosquittoInstalled)(`runSimulation with protocol 5 against Mosquitto, an independent MQTT 5 broker${skipped}`, () => {
  const emulator = useEmulator({ qpsLimit: 10_000 });

  it('Mosquitto accepts the devices as MQTT 5 clients, acknowledges and delivers every message', async () => {
    // The emulator registers the credentials (its OpenAPI); Mosquitto gets their logins in its password file.
    const target = emulatorTarget(emulator());
    const logins = [];
    for (let i = 0; i < 5; i++) {
      const credential = await registerDevice(emulator(), `GID_mosq@@@sim-${i}`);
      await target.provisioner.store?.save(credential);
      logins.push(signDeviceCredential(credential));
    }
    const broker = await startMosquitto(logins);
    const report = await runSimulation({
      target: { ...target, brokerUrl: broker.url, strategy: 'get-first' },
      groupId: 'GID_mosq', devices: 5, connectRate: 0, apiQps: 10_000, protocol: 5, qos: 1, subscribe: true, durationMs: 1_500, publishIntervalMs: 100,
    });
    expect(report).toMatchObject({ connected: 5, failedConnects: 0, errors: {}, reconnects: 0 });
    expect(report.published).toBeGreaterThan(0);
    expect(report.acked).toBe(report.published);
    expect(report.delivered).toBe(report.published);
    // Mosquitto's own account of each login: protocol level 5 (p5), clean start (c1), keepalive 90 (k90).
    const logged = broker.log().match(/New client connected from \S+ as GID_mosq@@@sim-\d \(p5, c1, k90, u'DeviceCredential\|/g) ?? [];
    expect(logged).toHaveLength(5);
  });
});
