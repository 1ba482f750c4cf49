import { describe, expect, it } from 'vitest';
import { SimulationMetrics, formatReport, ratePerSec, type SimulationReport } from '../../src/simulator/metrics.js';
import type { FaultReport } from '../../src/simulator/report-format.js';
import { simulationFailure } from '../../src/simulator/run.js';

const REPORT_FIELDS = [
  'devices', 'provisioned', 'connected', 'failedConnects', 'connectRatePerSec', 'connectLatencyMs', 'published', 'acked',
  'delivered', 'publishRatePerSec', 'e2eLatencyMs', 'errors', 'reconnects', 'credentialRefetches', 'peakRssMB', 'elapsedMs',
  'format', 'run', 'shards', 'windows', 'histograms', 'series',
];

describe('SimulationMetrics.report', () => {
  it('has exactly the documented fields', () => {
    const report = new SimulationMetrics().report(0);
    expect(Object.keys(report).sort()).toEqual([...REPORT_FIELDS].sort());
    expect(Object.keys(report.connectLatencyMs).sort()).toEqual(['max', 'p50', 'p95', 'p99']);
    expect(report.e2eLatencyMs).toEqual({ p50: null, p95: null, p99: null, max: null });
  });

  it('takes percentiles from the histograms, in ms', () => {
    const metrics = new SimulationMetrics();
    metrics.devices = 100;
    metrics.provisioned = 100;
    for (let i = 1; i <= 100; i++) {
      metrics.connectSent(1_000 + i);
      metrics.firstConnack(1_000 + i * 10, i);
    }
    const report = metrics.report(5_000);
    expect(report.connected).toBe(100);
    // HdrHistogram keeps 3 significant figures.
    expect(report.connectLatencyMs.p50).toBeCloseTo(50, 0);
    expect(report.connectLatencyMs.p95).toBeCloseTo(95, 0);
    expect(report.connectLatencyMs.p99).toBeCloseTo(99, 0);
    expect(report.connectLatencyMs.max).toBeCloseTo(100, 0);
    // From the first CONNECT (1001) to the last CONNACK (2000): 100 devices in 0.999 s.
    expect(report.connectRatePerSec).toBeCloseTo(100.1, 1);
    expect(report.elapsedMs).toBe(5_000);
  });

  it('counts publishes, acks, deliveries and errors by code', () => {
    const metrics = new SimulationMetrics();
    metrics.publishSent(0);
    metrics.publishSent(500);
    metrics.publishSent(1_000);
    metrics.acked = 3;
    metrics.deliveredAfter(2.5);
    metrics.error('ConnectTimeout');
    metrics.error('ConnectTimeout');
    metrics.error('BrokerUnreachable');
    const report = metrics.report(1_000);
    expect(report).toMatchObject({ published: 3, acked: 3, delivered: 1, publishRatePerSec: 3, errors: { BrokerUnreachable: 1, ConnectTimeout: 2 } });
    expect(report.e2eLatencyMs.p50).toBeCloseTo(2.5, 2);
    expect(metrics.errorTotal).toBe(3);
  });

  it('reports a rate of 0 when there is no window', () => {
    expect(ratePerSec(1, 0, 10)).toBe(0);
    expect(ratePerSec(10, undefined, 10)).toBe(0);
    expect(ratePerSec(10, 5, 5)).toBe(0);
  });
});

describe('formatReport and simulationFailure', () => {
  const base: SimulationReport = new SimulationMetrics().report(1_234);

  it('summarises a run in a few lines', () => {
    const text = formatReport({ ...base, devices: 3, provisioned: 3, connected: 3, errors: { ConnectTimeout: 1 } });
    expect(text).toMatch(/Simulated 3 devices in 1\.2 s/);
    expect(text).toMatch(/errors: ConnectTimeout 1/);
    // The run did not subscribe: the line says why there is no end-to-end latency, and how to get one.
    expect(text).toMatch(/end-to-end latency not measured \(devices publish without subscribing; add --subscribe to measure it\)/);
    expect(formatReport({ ...base, run: { ...base.run, subscribe: true } })).toMatch(/end-to-end latency n\/a/);
    expect(formatReport({ ...base, interrupted: true })).toMatch(/^INTERRUPTED: the run was stopped before it finished/);
  });

  it('is undefined when every device connected', () => {
    expect(simulationFailure({ ...base, devices: 2, provisioned: 2, connected: 2 })).toBeUndefined();
  });

  it('names failed connects and unprovisioned devices', () => {
    const failure = simulationFailure({ ...base, devices: 5, provisioned: 4, connected: 3, failedConnects: 1 });
    expect(failure?.code).toBe('SimulationFailed');
    expect(failure?.message).toMatch(/3 of 5 devices connected \(1 not provisioned, 1 failed to connect\)/);
  });

  it('NothingPublished when devices published and no message got through, naming what the broker did instead', () => {
    const connected = { ...base, devices: 2, provisioned: 2, connected: 2, published: 98, acked: 0, reconnects: 216, errors: { ConnectionLost: 229 } };
    const failure = simulationFailure({ ...connected, run: { ...base.run, topic: 'nope/%i' }, emulator: { actions: {}, rules: { parentTopic: 98 } } });
    expect(failure).toMatchObject({ code: 'NothingPublished', retryable: false });
    expect(failure?.message).toMatch(/^No message got through: 98 PUBLISH sent, 0 acknowledged; PublishRejected by the parentTopic rule \(98 times\): the parent topic "nope" does not exist on the instance \(create it, or start the emulator with --parent-topics nope\); the broker closed the session after publishing \(ConnectionLost 229, reconnects 216; over MQTT 3\.1\.1 that is how a broker refuses a message\)\. /);
    // MQTT 5 says so itself.
    expect(simulationFailure({ ...connected, errors: { 'PublishRejected:0x87': 98 } })?.message).toMatch(/the broker refused them \(PublishRejected:0x87 98\)/);
    // With a backend subscriber, QoS 0 too: nothing delivered.
    const qos0 = { ...connected, acked: 0, run: { ...base.run, qos: 0 as const }, delivery: { published: 9, accepted: 9, acked: 0, delivered: 0, lost: 9, held: 0, queued: 0, maybeQueued: 0, duplicated: 0, duplicates: 0, refused: 0, foreign: 0 } };
    expect(simulationFailure(qos0)?.message).toMatch(/^No message got through: 9 accepted, 0 delivered to the backend subscriber/);
    // Some got through, the run did not publish, or it was interrupted: not this failure.
    expect(simulationFailure({ ...connected, acked: 1 })).toBeUndefined();
    expect(simulationFailure({ ...connected, run: { ...base.run, publishIntervalMs: 0 } })).toBeUndefined();
    expect(simulationFailure({ ...connected, interrupted: true })).toBeUndefined();
  });

  it('the summary of a game day: the client, the backend subscriber\'s count, each fault with its time to heal', () => {
    const text = formatReport({
      ...base,
      run: { ...base.run, client: 'connector', scenario: { name: 'storm', seed: 1, faults: [] } },
      credentialRefetches: 20,
      delivery: { published: 100, accepted: 99, acked: 98, delivered: 97, lost: 2, held: 0, queued: 0, maybeQueued: 0, duplicated: 1, duplicates: 1, refused: 1, foreign: 0 },
      faults: [{
        id: '1', kind: 'revoke', label: 'rotated', fault: 0, plannedAtMs: 12_000, plannedForMs: 0, startedAt: base.run.startedAt, endedAt: base.run.startedAt,
        targeted: 20, hit: 20, offlineAtStart: 0, healed: 19, notHealed: 1, healMs: { p50: 310, p95: 900, p99: 1_200, max: 1_250 }, healUs: '',
        messages: { published: 40, accepted: 40, acked: 38, delivered: 38, lost: 2, held: 0, queued: 0, maybeQueued: 0, duplicated: 0, duplicates: 0, refused: 0 }, errors: { 'Throttling.User': 3 },
      }],
    });
    expect(text).toContain("  devices: the library's connector (--client connector)\n");
    expect(text).toContain('  credentials fetched again after a refusal: 20\n');
    expect(text).toContain('  backend subscriber: 100 published, 99 accepted, 98 acknowledged, 97 delivered, 2 lost, 1 duplicated, 1 refused\n');
    expect(text).toContain('  game day "storm", 1 fault (time to heal from each fault\'s end; a revoke\'s from each device\'s own loss):\n');
    expect(text).toContain('    1 revoke (rotated) at 12.0 s: hit 20 of 20, healed 19, not healed 1; heal p50 0.31 s, p99 1.20 s, max 1.25 s; messages 40 published, 2 lost, 0 duplicated; its own actions failed: Throttling.User 3\n');
  });

  it('the summary of a fault that left devices offline: each one named with what it did since its loss, and what it held', () => {
    const start = Date.parse(base.run.startedAt);
    const at = (ms: number): string => new Date(start + ms).toISOString();
    const fault: FaultReport = {
      id: '1', kind: 'broker-restart', label: null, fault: 0, plannedAtMs: 2_000, plannedForMs: 1_000, startedAt: at(10), endedAt: at(1_020),
      targeted: 20, hit: 17, offlineAtStart: 3, healed: 15, notHealed: 2, healMs: { p50: 800, p95: 3_000, p99: 3_500, max: 3_500 }, healUs: '',
      notHealedDevices: [
        { clientId: 'GID_sim@@@sim-7', index: 7, lostAt: at(20), connects: 4, lastConnectAt: at(1_900), nextConnectAt: at(17_430), held: 50 },
        { clientId: 'GID_sim@@@sim-9', index: 9, lostAt: at(20), connects: 0, lastConnectAt: null, nextConnectAt: null, held: null },
      ],
      messages: { published: 300, accepted: 300, acked: 250, delivered: 250, lost: 0, held: 50, queued: 0, maybeQueued: 0, duplicated: 0, duplicates: 0, refused: 0 }, errors: {},
    };
    const text = formatReport({
      ...base,
      run: { ...base.run, client: 'connector', scenario: { name: 'restart', seed: 1, faults: [] } },
      delivery: { published: 1_200, accepted: 1_200, acked: 1_150, delivered: 1_150, lost: 0, held: 50, queued: 0, maybeQueued: 0, duplicated: 0, duplicates: 0, refused: 0, foreign: 0 },
      faults: [fault],
    });
    expect(text).toContain('  backend subscriber: 1200 published, 1200 accepted, 1150 acknowledged, 1150 delivered, 0 lost, 50 held (undelivered at the end by devices still offline or awaiting their PUBACK), 0 duplicated\n');
    expect(text).toContain('messages 300 published, 0 lost, 50 held, 0 duplicated\n');
    // Devices offline when it started (still on their first CONNECT, say): said beside the hit, only when there are some.
    expect(text).toContain(': hit 17 of 20 (3 offline at its start), healed 15, not healed 2; heal p50 0.80 s');
    // Times from the start of connecting, as the fault's own "at 2.00 s".
    expect(text).toContain('      not healed: GID_sim@@@sim-7 lost its session at 2.01 s, 4 CONNECTs since, none accepted (the last at 3.89 s); its backoff had it wait until 19.4 s; holding 50 messages\n');
    expect(text).toContain('      not healed: GID_sim@@@sim-9 lost its session at 2.01 s, no CONNECT since\n');
    const more = formatReport({ ...base, faults: [{ ...fault, notHealed: 12 }] });
    expect(more).toContain('      … and 10 more not healed (the report lists the first 2)\n');
    // The subscriber's backlog still at the broker at the end: queued (or maybe queued), beside held, not lost.
    const backlog = formatReport({
      ...base,
      delivery: { published: 1_200, accepted: 1_200, acked: 1_200, delivered: 1_000, lost: 0, held: 0, queued: 150, maybeQueued: 50, duplicated: 0, duplicates: 0, refused: 0, foreign: 0 },
      faults: [{ ...fault, messages: { ...fault.messages as NonNullable<FaultReport['messages']>, held: 0, queued: 40, maybeQueued: 10 } }],
    });
    expect(backlog).toContain('  backend subscriber: 1200 published, 1200 accepted, 1200 acknowledged, 1000 delivered, 0 lost, 150 queued (still in the backend subscriber\'s queue at the broker at the end), 50 maybe queued (acknowledged, undelivered, and the broker\'s queue could not be read), 0 duplicated\n');
    expect(backlog).toContain('messages 300 published, 0 lost, 40 queued, 10 maybe queued, 0 duplicated\n');
  });

  it('says TooManyOpenFiles, with the remedy, when the open-file limit was hit', () => {
    const failure = simulationFailure({ ...base, devices: 5, provisioned: 5, connected: 2, failedConnects: 3, errors: { TooManyOpenFiles: 1 } });
    expect(failure?.code).toBe('TooManyOpenFiles');
    expect(failure?.message).toMatch(/ulimit -n/);
  });
});
