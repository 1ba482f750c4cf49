/**
 * Game days (issue 19), at CI scale against a real emulator: a fleet of raw-socket devices and one of the library's
 * connector devices through a broker restart and a partition (every device back online, the time to heal reported per
 * fault; the raw devices' loss reported, the connector's none); devices a restart leaves offline at the end (named,
 * what they hold held, not lost); 20 credentials revoked while the OpenAPI throttles (those 20 back after their
 * ladder, one Register each at the emulator); and the CLI's exit codes.
 *
 * Jitter is fixed (`random: () => 0.1`): reconnects are then a tenth of their backoff's cap, so every device is back
 * well before the run ends, whatever the machine's load. The CLI's runs (`--processes`) cannot fix it: the
 * connector's backoff doubles from 1 s with full jitter, so a device whose first CONNECTs met the broker still down
 * (a restart a loaded machine slows) may wait 16 s and more, past the end of a short run. They assert what holds
 * whatever each device drew: the merge, the judging, nothing lost.
 */
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openOutboxStore } from '../../src/outbox/index.js';
import { formatReport } from '../../src/simulator/metrics.js';
import { runSimulation, simulationFailure, type SimulationOptions } from '../../src/simulator/run.js';
import { parseScenario } from '../../src/simulator/scenario.js';
import type { FaultReport, SimulationReport } from '../../src/simulator/report-format.js';
import { GAME_DAY_EMULATOR_OPTIONS, emulatorTarget } from '../../src/simulator/target.js';
import { cli, runBuiltCli } from '../helpers/cli.js';
import { useEmulator } from '../helpers/emulator.js';

const OUTAGES = parseScenario({
  name: 'outages',
  faults: [
    { at: 2, kind: 'broker-restart', down: 1, label: 'restart' },
    { at: 5, kind: 'partition', share: 0.5, for: 2, label: 'uplink down' },
  ],
});

function fault(report: SimulationReport, id: string): FaultReport {
  const found = report.faults?.find((f) => f.id === id);
  if (!found) throw new Error(`no fault ${id} in ${JSON.stringify(report.faults?.map((f) => f.id))}`);
  return found;
}

/**
 * The fault knocked offline every device of its `targeted` it found online, and every one it hit is back. A device
 * still on its first CONNECT when it started (on a loaded machine, the whole fleet is not always connected by 2 s; an
 * earlier restart then fails that CONNECT) had no session for it to take: offline at its start, not hit.
 */
function expectHitAndHealed(f: FaultReport, targeted: number): void {
  expect(f).toMatchObject({ targeted, notHealed: 0, errors: {} });
  expect(f.hit).toBeGreaterThan(0);
  expect(f.hit + f.offlineAtStart).toBe(targeted);
  expect(f.healed).toBe(f.hit);
}

describe('game days against an emulator', () => {
  // As the embedded emulator runs (target.ts): the backend subscriber's backlog after the broker restart comes at
  // once. At the emulator's default (the cloud's pace) it came 5 to 10 s after its reconnect, 30 every 5 s: when the
  // devices were back and publishing before it (a loaded machine), the run ended with 50 to 70 of their messages still
  // queued for it, counted lost.
  const emulator = useEmulator({ qpsLimit: 10_000, ...GAME_DAY_EMULATOR_OPTIONS });

  const common = (groupId: string): SimulationOptions => ({
    target: emulatorTarget(emulator()),
    groupId,
    devices: 40,
    connectRate: 0,
    apiQps: 10_000,
    publishIntervalMs: 200,
    durationMs: 14_000,
    random: () => 0.1,
  });

  it.each([
    ['raw', 'GID_gdraw'],
    ['connector', 'GID_gdcon'],
  ] as const)('%s devices through a broker restart and a partition: every device hit is back, its time to heal reported', async (client, groupId) => {
    const report = await runSimulation({ ...common(groupId), client, scenario: OUTAGES });
    expect(report.run).toMatchObject({ client, consumer: true, scenario: { name: 'outages', seed: 1 } });
    const restart = fault(report, '1');
    const partition = fault(report, '2');
    expect(restart).toMatchObject({ kind: 'broker-restart', label: 'restart' });
    expectHitAndHealed(restart, 40);
    expect(partition).toMatchObject({ kind: 'partition', label: 'uplink down' });
    expectHitAndHealed(partition, 20);
    for (const f of [restart, partition]) {
      expect(Date.parse(f.endedAt as string)).toBeGreaterThanOrEqual(Date.parse(f.startedAt as string));
      expect(f.healMs.p50 as number).toBeLessThanOrEqual(f.healMs.p99 as number);
      expect(f.healMs.p99 as number).toBeLessThanOrEqual(f.healMs.max as number);
    }
    // The partition reset its devices' connections through the relay: the live ones (each a hit), and any CONNECT in
    // flight (a device offline at its start).
    expect(report.relay?.dropped).toBeGreaterThanOrEqual(partition.hit);
    expect(report.relay?.dropped).toBeLessThanOrEqual(20);
    const delivery = report.delivery;
    if (!delivery) throw new Error('no delivery count');
    expect(delivery.delivered + delivery.lost + delivery.held).toBe(delivery.accepted);
    expect(delivery.foreign).toBe(0);
    if (client === 'raw') {
      // A device without an outbox drops what it is handed while offline: the loss is there, and it is the faults'.
      expect(delivery.lost).toBeGreaterThan(0);
      expect((restart.messages?.lost ?? 0) + (partition.messages?.lost ?? 0)).toBeGreaterThanOrEqual(delivery.lost);
    } else {
      // The connector's outbox holds them and sends them after the reconnect.
      expect(delivery.lost).toBe(0);
      expect(delivery.refused).toBe(0);
    }
    expect(simulationFailure(report)).toBeUndefined();
  }, 60_000);

  it('connector devices with a durable outbox through a broker restart and a partition: every message accepted on disk, none lost', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'apsaramq-gameday-outbox-'));
    try {
      const store = await openOutboxStore({ dir });
      let report: SimulationReport;
      try {
        report = await runSimulation({ ...common('GID_gddur'), client: 'connector', scenario: OUTAGES, outbox: store });
      } finally {
        await store.close();
      }
      expect(fault(report, '1')).toMatchObject({ kind: 'broker-restart', notHealedDevices: [] });
      expectHitAndHealed(fault(report, '1'), 40);
      expect(fault(report, '2')).toMatchObject({ kind: 'partition', notHealedDevices: [] });
      expectHitAndHealed(fault(report, '2'), 20);
      const delivery = report.delivery;
      if (!delivery) throw new Error('no delivery count');
      expect(delivery.accepted).toBeGreaterThan(0);
      expect(delivery).toMatchObject({ lost: 0, held: 0, refused: 0, foreign: 0 });
      expect(delivery.delivered).toBe(delivery.accepted);
      // The devices' messages went through the store: each one accepted on disk, and each one removed on its PUBACK.
      const stats = store.stats();
      expect(stats.accepted).toBe(delivery.accepted);
      expect(stats.delivered).toBe(delivery.accepted);
      expect(stats.messages).toBe(0);
      expect(simulationFailure(report)).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('connector devices a restart leaves offline at the end: not healed, each named with its CONNECTs and its backoff; what they hold is held, not lost', async () => {
    // Jitter 0.99: after its loss (1 s) a device tries at about 2 s, 4 s and 8 s, all refused (the broker is down
    // until 10 s), then its backoff makes it wait until about 16 s, after the run's end (14 s, no drain).
    const scenario = parseScenario({ name: 'long-restart', faults: [{ at: 1, kind: 'broker-restart', down: 9 }] });
    const report = await runSimulation({ ...common('GID_gdoff'), devices: 4, durationMs: 14_000, drainTimeoutMs: 0, random: () => 0.99, client: 'connector', scenario });
    const restart = fault(report, '1');
    expect(restart).toMatchObject({ hit: 4, healed: 0, notHealed: 4 });
    const listed = restart.notHealedDevices ?? [];
    expect(listed.map((d) => d.clientId)).toEqual([0, 1, 2, 3].map((i) => `GID_gdoff@@@sim-${i}`));
    for (const d of listed) {
      const [lost, last, next] = [d.lostAt, d.lastConnectAt, d.nextConnectAt].map((t) => Date.parse(t as string));
      expect(lost).toBeGreaterThanOrEqual(Date.parse(restart.startedAt as string));
      expect(d.connects).toBe(3);
      expect(last).toBeLessThan(Date.parse(restart.endedAt as string));
      expect(next).toBeGreaterThan(Date.parse(report.run.startedAt) + report.elapsedMs);
      expect(d.held).toBeGreaterThan(0);
    }
    // Everything they were handed since is still in their outboxes: held, none lost, and it is the fault's.
    const delivery = report.delivery;
    if (!delivery) throw new Error('no delivery count');
    expect(delivery).toMatchObject({ lost: 0, refused: 0, foreign: 0 });
    expect(delivery.held).toBe(listed.reduce((n, d) => n + (d.held as number), 0));
    expect(delivery.delivered + delivery.held).toBe(delivery.accepted);
    expect(restart.messages).toMatchObject({ lost: 0, held: delivery.held });
    // Each lost its session, none came back.
    expect(report.errors['ConnectionLost']).toBe(4);
    expect(report.reconnects).toBe(0);
  }, 60_000);

  it('a partition while the broker is down finds its devices offline: offline at its start, none hit, said in the summary', async () => {
    // The broker is down from 1 s to 6 s: whatever the machine's load, no device is online at 3 s.
    const scenario = parseScenario({
      name: 'cut while down',
      faults: [
        { at: 1, kind: 'broker-restart', down: 5 },
        { at: 3, kind: 'partition', devices: [0, 1], for: 1 },
      ],
    });
    const report = await runSimulation({ ...common('GID_gdcut'), devices: 4, durationMs: 9_000, scenario });
    expect(fault(report, '2')).toMatchObject({ kind: 'partition', targeted: 2, hit: 0, offlineAtStart: 2, healed: 0, notHealed: 0 });
    const restart = fault(report, '1');
    expect(restart.hit + restart.offlineAtStart).toBe(4);
    expect(formatReport(report)).toContain('    2 partition at 3.00 s for 1.00 s: hit 0 of 2 (2 offline at its start), healed 0, not healed 0;');
  }, 60_000);

  it('an outbox is for connector devices only: refused with raw ones, before anything starts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'apsaramq-gameday-outbox-'));
    const store = await openOutboxStore({ dir });
    try {
      await expect(runSimulation({ ...common('GID_gdrawdur'), client: 'raw', outbox: store })).rejects.toMatchObject({
        code: 'InvalidOption',
        message: expect.stringMatching(/^Option outbox is the durable outbox of the library's devices: pass client: 'connector'/),
      });
      expect(store.stats().accepted).toBe(0);
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it.each([
    ['raw', 'GID_gdrev'],
    ['connector', 'GID_gdrevc'],
  ] as const)('%s devices: 20 credentials revoked while the OpenAPI throttles come back after their ladder, one Register or Get each', async (client, groupId) => {
    const scenario = parseScenario({
      name: 'rotation',
      faults: [
        { at: 1, kind: 'api-faults', rate: 0.3, codes: ['Throttling.User', 'InternalError'], for: 4 },
        { at: 2, kind: 'revoke', mode: 'refresh', devices: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] },
        { at: 2, kind: 'revoke', mode: 'unregister', devices: [10, 11, 12, 13, 14, 15, 16, 17, 18, 19] },
      ],
    });
    const report = await runSimulation({ ...common(groupId), devices: 30, durationMs: 12_000, client, scenario });
    for (const id of ['2', '3']) {
      expect(fault(report, id).kind).toBe('revoke');
      expectHitAndHealed(fault(report, id), 10);
    }
    const actions = report.emulator?.actions ?? {};
    // The operator's calls: 10 refreshed, 10 unregistered.
    expect(actions['RefreshDeviceCredential']?.ok).toBe(10);
    expect(actions['UnRegisterDeviceCredential']?.ok).toBe(10);
    // The devices' ladder: a Get that finds the refreshed key (10) or nothing (10), then a Register for those 10 only.
    expect(actions['RegisterDeviceCredential']?.ok).toBe(10);
    expect(actions['GetDeviceCredential']?.ok).toBe(10);
    expect(actions['GetDeviceCredential']?.errors['DeviceCredentialNotFound']).toBe(10);
    expect(report.credentialRefetches).toBe(20);
    expect(report.delivery?.foreign).toBe(0);
  }, 60_000);
});

describe('simulate: exit codes that mean something', () => {
  const emulator = useEmulator({ qpsLimit: 10_000 });
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'apsaramq-gameday-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const against = (): { args: string[]; env: NodeJS.ProcessEnv } => {
    const e = emulator();
    return {
      args: ['--endpoint', e.apiEndpoint, '--instance-id', e.instanceId, '--broker-url', e.mqttUrl, '--store', join(dir, 'store'), '--connect-rate', '0', '--no-progress'],
      env: { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret },
    };
  };

  it('a run whose every publish is refused exits 1, the cause on its last line', async () => {
    const { args, env } = against();
    const run = await cli(['simulate', '--devices', '5', '--duration', '2', '--publish-interval', '200', '--topic', 'nope/%i', ...args], env);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stderr.trim().split('\n').at(-1)).toMatch(/^NothingPublished: No message got through: \d+ PUBLISH sent, 0 acknowledged; PublishRejected by the parentTopic rule \(\d+ times\): the parent topic "nope" does not exist on the instance/);
  }, 30_000);

  it('--fail-on: a threshold crossed exits 1 naming it and its value; one that holds exits 0', async () => {
    const { args, env } = against();
    const common = ['simulate', '--devices', '5', '--duration', '1', '--publish-interval', '200', '--consumer', ...args];
    const failing = await cli([...common, '--fail-on', 'delivered>0', '--fail-on', 'lost>100'], env);
    expect(failing.code, failing.stderr).toBe(1);
    expect(failing.stderr.trim().split('\n').at(-1)).toMatch(/^ThresholdExceeded: --fail-on: delivered>0: delivered is \d+\. /);
    expect(failing.stdout).toMatch(/backend subscriber: \d+ published, \d+ accepted, \d+ acknowledged, \d+ delivered, 0 lost/);
    const passing = await cli([...common, '--fail-on', 'lost>0,duplicates>0,errors>0'], env);
    expect(passing.code, passing.stderr).toBe(0);
  }, 30_000);

  it('refuses, before anything starts, a scenario that cannot be played, a threshold that does not parse or cannot be measured, and --outbox without --client connector', async () => {
    const file = join(dir, 'bad.json');
    await writeFile(file, JSON.stringify({ faults: [{ at: 1, kind: 'partition', for: 3, shares: 0.5 }] }));
    const bad = await cli(['simulate', '--scenario', file], {});
    expect(bad).toMatchObject({ code: 2, stdout: '' });
    expect(bad.stderr).toMatch(new RegExp(`^InvalidScenario: ${file.replace(/[.\\/]/g, '\\$&')} is not a scenario this version can play: faults\\[0\\]\\.shares is not a field of a partition fault`));
    const late = join(dir, 'late.json');
    await writeFile(late, JSON.stringify({ faults: [{ at: 15, kind: 'partition', for: 10 }] }));
    expect((await cli(['simulate', '--scenario', late, '--duration', '20'], {})).stderr).toMatch(/faults\[0\]\.for makes the fault end 25 s after the start of connecting, after the run's 20 s \(--duration\)/);
    expect(await cli(['simulate', '--fail-on', 'lost>>0'], {})).toMatchObject({ code: 2, stderr: expect.stringMatching(/^InvalidOption: --fail-on "lost>>0" does not parse\. A threshold is METRIC OP VALUE/) });
    expect(await cli(['simulate', '--fail-on', 'lost>0'], {})).toMatchObject({ code: 2, stderr: expect.stringMatching(/^InvalidOption: --fail-on lost>0 needs the backend subscriber that counts deliveries: add --consumer/) });
    expect(await cli(['simulate', '--fail-on', 'heal.p99>30s'], {})).toMatchObject({ code: 2, stderr: expect.stringMatching(/^InvalidOption: --fail-on heal\.p99>30s needs a game day: add --scenario FILE/) });
    expect(await cli(['simulate', '--outbox', join(dir, 'outbox')], {})).toMatchObject({ code: 2, stderr: expect.stringMatching(/^InvalidOption: --outbox .* is the durable outbox of the library's devices: add --client connector/) });
    expect(await cli(['simulate', '--client', 'mosquitto'], {})).toMatchObject({ code: 2, stderr: expect.stringMatching(/--client/) });
  });

  it('--scenario with --processes 2: one merged report holds every fault once, with both shards\' devices, and --fail-on judges it', async () => {
    const file = join(dir, 'restart.json');
    await writeFile(file, JSON.stringify({ name: 'restart', faults: [{ at: 2, kind: 'broker-restart', down: 1 }] }));
    const reportFile = join(dir, 'merged.json');
    // hit<11 holds for each shard (10 devices each) and not for the fleet (20, less any still on its first CONNECT at
    // 2 s): the merged report is judged.
    const run = await runBuiltCli(['simulate', '--processes', '2', '--devices', '20', '--duration', '12', '--publish-interval', '200', '--connect-rate', '0', '--scenario', file, '--client', 'connector', '--report', reportFile, '--fail-on', 'lost>0,hit<11', '--no-progress']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(await readFile(reportFile, 'utf8')) as SimulationReport;
    expect(report.shards.map((s) => `${s.index}/${s.count}`)).toEqual(['1/2', '2/2']);
    expect(report.faults).toHaveLength(1);
    const [restart] = report.faults as NonNullable<SimulationReport['faults']>;
    expect(restart).toMatchObject({ id: '1', kind: 'broker-restart', targeted: 20 });
    const { hit, offlineAtStart, healed, notHealed } = restart as FaultReport;
    expect(hit + offlineAtStart).toBe(20);
    // Healed or not by the end, as each device's backoff drew (see the top of the file): each not healed is named.
    expect(healed + notHealed).toBe(hit);
    expect(restart?.notHealedDevices?.map((d) => d.clientId)).toHaveLength(notHealed);
    expect(report.delivery?.lost).toBe(0);
    const offline = offlineAtStart === 0 ? '' : ` \\(${offlineAtStart} offline at its start\\)`;
    expect(run.stdout).toMatch(new RegExp(` {4}1 broker-restart at 2\\.00 s for 1\\.00 s: hit ${hit} of 20${offline}, healed ${healed}, not healed ${notHealed}; heal p50 [\\d.]+ s`));
    expect(run.stdout.match(/^ {6}not healed: GID_sim@@@sim-\d+ lost its session at /gm) ?? []).toHaveLength(notHealed);
  }, 90_000);

  it('--client connector --outbox DIR with --processes 2: each shard keeps its own store in DIR/shard-<i>, and nothing is lost', async () => {
    const file = join(dir, 'restart-outbox.json');
    await writeFile(file, JSON.stringify({ name: 'restart', faults: [{ at: 2, kind: 'broker-restart', down: 1 }] }));
    const outbox = join(dir, 'outbox');
    const reportFile = join(dir, 'outbox.json');
    const run = await runBuiltCli(['simulate', '--processes', '2', '--devices', '10', '--duration', '10', '--publish-interval', '200', '--connect-rate', '0', '--scenario', file, '--client', 'connector', '--outbox', outbox, '--report', reportFile, '--fail-on', 'lost>0', '--no-progress']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(await readFile(reportFile, 'utf8')) as SimulationReport;
    const restart = report.faults?.[0] as FaultReport;
    expect(restart).toMatchObject({ kind: 'broker-restart', targeted: 10 });
    expect(restart.hit + restart.offlineAtStart).toBe(10);
    const delivery = report.delivery;
    if (!delivery) throw new Error('no delivery count');
    expect(delivery.accepted).toBeGreaterThan(0);
    expect(delivery.lost).toBe(0);
    // One store per shard process, each closed (a second open would be refused while its process held it), keeping
    // exactly what the broker did not acknowledge: what a device still offline at the end held (see the top of the
    // file), nothing once every device is back and drained.
    expect((await readdir(outbox)).sort()).toEqual(['shard-1', 'shard-2']);
    let kept = 0;
    for (const shard of ['shard-1', 'shard-2']) {
      const store = await openOutboxStore({ dir: join(outbox, shard) });
      try {
        expect(store.recovery.uncleanShutdown).toBe(false);
        kept += store.stats().messages;
      } finally {
        await store.close();
      }
    }
    expect(kept).toBe(delivery.accepted - delivery.acked);
    expect(kept).toBeGreaterThanOrEqual(delivery.held);
  }, 90_000);

  it('--outbox with --processes 2: what each shard\'s store keeps at the end is said on the parent\'s stderr, with the count on disk', async () => {
    // Latency of a minute over the last 3 s: what the devices publish then is never acknowledged within the run.
    const file = join(dir, 'slow-end.json');
    await writeFile(file, JSON.stringify({ name: 'slow end', faults: [{ at: 2, kind: 'latency', ms: 60_000, for: 3 }] }));
    const outbox = join(dir, 'outbox-kept');
    const run = await runBuiltCli(['simulate', '--processes', '2', '--devices', '4', '--duration', '5', '--publish-interval', '200', '--connect-rate', '0', '--scenario', file, '--client', 'connector', '--outbox', outbox, '--no-progress']);
    expect(run.code, run.stderr).toBe(0);
    for (const shard of ['shard-1', 'shard-2']) {
      const store = await openOutboxStore({ dir: join(outbox, shard) });
      let kept: number;
      try {
        kept = store.stats().messages;
      } finally {
        await store.close();
      }
      expect(kept, shard).toBeGreaterThan(0);
      expect(run.stderr).toContain(`--outbox ${join(outbox, shard)} keeps ${kept} messages the devices had not delivered when the run ended`);
    }
  }, 60_000);

  it('--processes passes --no-consumer on to its shards: no backend subscriber in any', async () => {
    const file = join(dir, 'cut.json');
    await writeFile(file, JSON.stringify({ faults: [{ at: 1, kind: 'partition', share: 0.5, for: 1 }] }));
    const reportFile = join(dir, 'no-consumer.json');
    const run = await runBuiltCli(['simulate', '--processes', '2', '--devices', '4', '--duration', '4', '--publish-interval', '500', '--connect-rate', '0', '--scenario', file, '--no-consumer', '--report', reportFile, '--no-progress']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(await readFile(reportFile, 'utf8')) as SimulationReport;
    expect(report.run.consumer).toBe(false);
    expect(report.delivery).toBeUndefined();
    expect(report.faults?.[0]).toMatchObject({ kind: 'partition', targeted: 2, messages: null });
  }, 60_000);
});
