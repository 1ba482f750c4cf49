import { describe, expect, it } from 'vitest';
import { SimulationMetrics, formatReport, ratePerSec, type SimulationReport } from '../../src/simulator/metrics.js';
import { simulationFailure } from '../../src/simulator/run.js';

const REPORT_FIELDS = [
  'devices', 'provisioned', 'connected', 'failedConnects', 'connectRatePerSec', 'connectLatencyMs', 'published', 'acked',
  'delivered', 'publishRatePerSec', 'e2eLatencyMs', 'errors', 'reconnects', 'peakRssMB', 'elapsedMs',
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
    expect(text).toMatch(/end-to-end latency n\/a/);
  });

  it('is undefined when every device connected', () => {
    expect(simulationFailure({ ...base, devices: 2, provisioned: 2, connected: 2 })).toBeUndefined();
  });

  it('names failed connects and unprovisioned devices', () => {
    const failure = simulationFailure({ ...base, devices: 5, provisioned: 4, connected: 3, failedConnects: 1 });
    expect(failure?.code).toBe('SimulationFailed');
    expect(failure?.message).toMatch(/3 of 5 devices connected \(1 not provisioned, 1 failed to connect\)/);
  });

  it('says TooManyOpenFiles, with the remedy, when the open-file limit was hit', () => {
    const failure = simulationFailure({ ...base, devices: 5, provisioned: 5, connected: 2, failedConnects: 3, errors: { TooManyOpenFiles: 1 } });
    expect(failure?.code).toBe('TooManyOpenFiles');
    expect(failure?.message).toMatch(/ulimit -n/);
  });
});
