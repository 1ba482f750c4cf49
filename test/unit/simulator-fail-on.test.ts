import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/simulator/clock.js';
import { checkThresholds, metricValue, needsConsumer, needsScenario, parseThresholds } from '../../src/simulator/fail-on.js';
import { encodeHistogram, newLatencyHistogram, recordMs } from '../../src/simulator/histogram.js';
import { SimulationMetrics } from '../../src/simulator/metrics.js';
import type { FaultReport, SimulationReport } from '../../src/simulator/report-format.js';

function healUs(...ms: number[]): string {
  const h = newLatencyHistogram();
  for (const v of ms) recordMs(h, v);
  return encodeHistogram(h);
}

function fault(id: string, heal: number[], notHealed = 0): FaultReport {
  return {
    id, kind: 'partition', label: null, fault: 0, plannedAtMs: 1_000, plannedForMs: 2_000, startedAt: null, endedAt: null,
    targeted: 10, hit: heal.length + notHealed, offlineAtStart: 10 - heal.length - notHealed, healed: heal.length, notHealed,
    healMs: { p50: null, p95: null, p99: null, max: null }, healUs: healUs(...heal), messages: null, errors: {},
  };
}

function report(extra: Partial<SimulationReport> = {}): SimulationReport {
  const metrics = new SimulationMetrics({ clock: new ManualClock(0), epochMs: 0 });
  metrics.error('ConnectionLost');
  metrics.error('PublishRejected:0x87');
  metrics.error('PublishRejected:0x97');
  return { ...metrics.report(1_000), ...extra };
}

describe('--fail-on thresholds', () => {
  it('parse: metric, comparator, value with a unit for times; several in one comma list', () => {
    expect(parseThresholds(['lost>0, heal.p99>30s', 'errors.ConnectionLost>=100', 'e2e.max<=250ms', 'connect.p50 != 2m', 'duplicates==3'])).toEqual([
      { text: 'lost>0', metric: 'lost', op: '>', value: 0, time: false },
      { text: 'heal.p99>30s', metric: 'heal.p99', op: '>', value: 30_000, time: true },
      { text: 'errors.ConnectionLost>=100', metric: 'errors.ConnectionLost', op: '>=', value: 100, time: false },
      { text: 'e2e.max<=250ms', metric: 'e2e.max', op: '<=', value: 250, time: true },
      { text: 'connect.p50 != 2m', metric: 'connect.p50', op: '!=', value: 120_000, time: true },
      { text: 'duplicates==3', metric: 'duplicates', op: '=', value: 3, time: false },
    ]);
  });

  it('a threshold that does not parse is InvalidOption naming the flag and the threshold', () => {
    for (const [text, why] of [
      ['lost', 'does not parse'],
      ['lost>>0', 'does not parse'],
      ['lots>0', 'names the metric "lots", which is not one'],
      ['heal.p42>1s', 'names heal.p42: a time is heal.p50, heal.p95, heal.p99 or heal.max'],
      ['heal.p99>1h', 'has the unit "h": a time is in ms, s or m'],
      ['lost>3s', 'gives a unit to lost, a count'],
    ] as const) {
      expect(() => parseThresholds([text], '--fail-on'), text).toThrow(expect.objectContaining({ code: 'InvalidOption', message: expect.stringContaining(`--fail-on ${JSON.stringify(text)} ${why}`) }));
    }
    expect(() => parseThresholds([' , '])).toThrow(/--fail-on is empty/);
  });

  it('reads each metric from the report: errors by code with their reason-coded forms, heal over every fault', () => {
    const r = report({ faults: [fault('1', [100, 200]), fault('2', [5_000], 2)] });
    expect(metricValue(r, 'errors')).toBe(3);
    expect(metricValue(r, 'errors.PublishRejected')).toBe(2);
    expect(metricValue(r, 'errors.PublishRejected:0x97')).toBe(1);
    expect(metricValue(r, 'not-healed')).toBe(2);
    expect(metricValue(r, 'hit')).toBe(5);
    expect(metricValue(r, 'offline-at-start')).toBe(15);
    expect(parseThresholds(['offline-at-start>0']).map((t) => [t.metric, needsScenario(t)])).toEqual([['offline-at-start', true]]);
    expect(metricValue(r, 'heal.max')).toBeCloseTo(5_000, -1);
    expect(metricValue(r, 'lost')).toBeUndefined();
    expect(metricValue(r, 'held')).toBeUndefined();
    const delivered = report({ delivery: { published: 14, accepted: 14, acked: 12, delivered: 7, lost: 1, held: 2, queued: 3, maybeQueued: 1, duplicated: 0, duplicates: 0, refused: 0, foreign: 0 } });
    expect(['lost', 'held', 'queued', 'maybe-queued'].map((m) => metricValue(delivered, m))).toEqual([1, 2, 3, 1]);
    expect(parseThresholds(['held>0'])).toEqual([{ text: 'held>0', metric: 'held', op: '>', value: 0, time: false }]);
    expect(parseThresholds(['queued>0,maybe-queued>=1']).map((t) => [t.metric, needsConsumer(t)])).toEqual([['queued', true], ['maybe-queued', true]]);
    expect(checkThresholds(delivered, parseThresholds(['queued>2']))?.message).toMatch(/^--fail-on: queued>2: queued is 3\b/);
    expect(metricValue(r, 'queued')).toBeUndefined();
    expect(metricValue(report({ faults: [fault('1', [])] }), 'heal.p99')).toBe(0);
  });

  it('a run crossing thresholds fails with ThresholdExceeded naming each with its value; one it cannot show fails too', () => {
    const r = report({ faults: [fault('1', [45_000])], delivery: { published: 10, accepted: 10, acked: 8, delivered: 8, lost: 2, held: 0, queued: 0, maybeQueued: 0, duplicated: 0, duplicates: 0, refused: 0, foreign: 0 } });
    expect(checkThresholds(r, parseThresholds(['lost>5,heal.p99>60s,duplicates>0']))).toBeUndefined();
    const failure = checkThresholds(r, parseThresholds(['lost>0', 'heal.p99>30s', 'e2e.p99>1s']));
    expect(failure).toMatchObject({ code: 'ThresholdExceeded', retryable: false });
    expect(failure?.message).toMatch(/^--fail-on: lost>0: lost is 2; heal\.p99>30s: heal\.p99 is 45\.0\d* s; e2e\.p99>1s: the report has no e2e\.p99 \(nothing was measured\)\. /);
    expect(checkThresholds(report(), parseThresholds(['lost>0']))?.message).toMatch(/lost>0: the report has no lost \(no backend subscriber counted deliveries\)/);
  });
});
