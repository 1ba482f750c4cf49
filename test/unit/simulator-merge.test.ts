import { createHistogram } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { LOCAL_ERROR_CATALOG } from '../../src/errors.js';
import { ManualClock } from '../../src/simulator/clock.js';
import { decodeHistogram, newLatencyHistogram, recordMs, summarizeHistogram } from '../../src/simulator/histogram.js';
import { SimulationMetrics } from '../../src/simulator/metrics.js';
import { resolveSettings, shardRange } from '../../src/simulator/options.js';
import { describeTarget, runIdentity, type SimulationReport } from '../../src/simulator/report-format.js';
import { mergeReports, parseReport } from '../../src/simulator/report.js';

/** A seeded generator (Park-Miller), so every run of the test sees the same fleet. */
function seeded(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 16_807) % 2_147_483_647) / 2_147_483_647;
}

type Event =
  | { at: number; device: number; kind: 'connectSent' }
  | { at: number; device: number; kind: 'connack'; latencyMs: number }
  | { at: number; device: number; kind: 'offline' | 'publish' | 'puback' }
  | { at: number; device: number; kind: 'delivered'; latencyMs: number }
  | { at: number; device: number; kind: 'error'; code: string };

const DEVICES = 3_000;
/** Not on a whole second, so binning on wall-clock seconds is exercised. */
const EPOCH = Date.UTC(2026, 10, 28, 12, 0, 0) + 337;
const END_MS = 40_000;

/** A fleet's events in time order (epoch ms): connects with heavy-tailed latencies, publishes, deliveries, errors. */
function fleetEvents(): Event[] {
  const random = seeded(42);
  const events: Event[] = [];
  for (let device = 0; device < DEVICES; device++) {
    const sent = EPOCH + 50 + random() * 10_000;
    // Mostly a few ms, with a long tail up to seconds: every decade of the histogram gets samples.
    const latencyMs = 0.2 + Math.exp(random() * 8) / 3;
    events.push({ at: sent, device, kind: 'connectSent' }, { at: sent + latencyMs, device, kind: 'connack', latencyMs });
    if (random() < 0.02) events.push({ at: sent + latencyMs + random() * 1_000, device, kind: 'error', code: random() < 0.5 ? 'ConnectTimeout' : 'ConnectionLost' });
    for (let t = sent + latencyMs + random() * 2_000; t < EPOCH + 30_000; t += 2_000) {
      const e2e = 0.05 + Math.exp(random() * 6) / 10;
      events.push({ at: t, device, kind: 'publish' }, { at: t + e2e / 2, device, kind: 'puback' }, { at: t + e2e, device, kind: 'delivered', latencyMs: e2e });
    }
    events.push({ at: EPOCH + 31_000 + random() * 500, device, kind: 'offline' });
  }
  return events.sort((a, b) => a.at - b.at);
}

/** Feed events into metrics whose clock starts at `epochMs`. */
function record(events: readonly Event[], epochMs: number): SimulationMetrics {
  const clock = new ManualClock(0);
  const metrics = new SimulationMetrics({ clock, epochMs });
  const at = (e: Event): number => {
    clock.advance(e.at - epochMs - clock.now());
    return clock.now();
  };
  for (const e of events) {
    const now = at(e);
    switch (e.kind) {
      case 'connectSent': metrics.connectSent(now); break;
      case 'connack': metrics.firstConnack(now, e.latencyMs); metrics.wentOnline(); break;
      case 'offline': metrics.wentOffline(); break;
      case 'publish': metrics.publishSent(now); break;
      case 'puback': metrics.puback(); break;
      case 'delivered': metrics.deliveredAfter(e.latencyMs); break;
      case 'error': metrics.error(e.code); break;
    }
  }
  clock.advance(END_MS - clock.now() - (epochMs - EPOCH));
  return metrics;
}

function reportOf(metrics: SimulationMetrics, shard: string, devices: number, settings: Parameters<typeof resolveSettings>[0] = {}): SimulationReport {
  metrics.devices = devices;
  metrics.provisioned = devices;
  const identity = runIdentity(resolveSettings({ devices: DEVICES, ...settings, shard }), describeTarget(undefined));
  const report = metrics.report(END_MS - (metrics.startEpochMs - EPOCH), identity);
  // What `report merge` reads: the report as saved in a file.
  return parseReport(JSON.parse(JSON.stringify(report)), `shard ${shard}`);
}

/** Shard reports of the fleet: each shard records only its devices, and starts its clock at its own time. */
function shardReports(events: readonly Event[], count: number, settings: Parameters<typeof resolveSettings>[0] = {}): SimulationReport[] {
  return Array.from({ length: count }, (_, k) => {
    const [start, end] = shardRange(DEVICES, { index: k + 1, count });
    // Shards on different machines start a little apart.
    const own = record(events.filter((e) => e.device >= start && e.device < end), EPOCH + k * 13);
    return reportOf(own, `${k + 1}/${count}`, end - start, settings);
  });
}

describe('latency histograms', () => {
  it('give the percentiles of HdrHistogram_c (node:perf_hooks) for the same samples', () => {
    const random = seeded(7);
    const ours = newLatencyHistogram();
    const oracle = createHistogram({ lowest: 1, highest: 3_600_000_000, figures: 3 });
    for (let i = 0; i < 50_000; i++) {
      const ms = Math.exp(random() * 12) / 100;
      recordMs(ours, ms);
      oracle.record(Math.max(1, Math.round(ms * 1_000)));
    }
    const summary = summarizeHistogram(ours);
    expect(summary).toEqual({
      p50: oracle.percentile(50) / 1_000,
      p95: oracle.percentile(95) / 1_000,
      p99: oracle.percentile(99) / 1_000,
      max: oracle.max / 1_000,
    });
  });
});

describe('mergeReports', () => {
  const events = fleetEvents();
  const single = reportOf(record(events, EPOCH), '1/1', DEVICES);

  for (const count of [2, 3, 7]) {
    it(`on ${count} shards gives exactly the percentiles, counts and series of one run over the same devices`, () => {
      const merged = mergeReports(shardReports(events, count));
      expect(merged.connectLatencyMs).toEqual(single.connectLatencyMs);
      expect(merged.e2eLatencyMs).toEqual(single.e2eLatencyMs);
      // Every percentile, not only the summary's: the histograms are the same bucket for bucket.
      const a = decodeHistogram(merged.histograms.e2eLatencyUs);
      const b = decodeHistogram(single.histograms.e2eLatencyUs);
      expect(a.totalCount).toBe(b.totalCount);
      for (let p = 0; p <= 100; p += 0.5) expect(a.getValueAtPercentile(p), `p${p}`).toBe(b.getValueAtPercentile(p));
      for (const key of ['devices', 'provisioned', 'connected', 'published', 'acked', 'delivered', 'errors', 'connectRatePerSec', 'publishRatePerSec', 'windows', 'series'] as const) {
        expect(merged[key], key).toEqual(single[key]);
      }
      expect(merged.shards.map((s) => `${s.index}/${s.count}`)).toEqual(Array.from({ length: count }, (_, k) => `${k + 1}/${count}`));
    });
  }

  it('bins the series on wall-clock seconds, as counted by hand from the events', () => {
    const firstBin = Math.floor(EPOCH / 1_000);
    const expected = new Array<number>(single.series.connected.length).fill(0);
    for (const e of events) if (e.kind === 'publish') expected[Math.floor(e.at / 1_000) - firstBin] = (expected[Math.floor(e.at / 1_000) - firstBin] ?? 0) + 1;
    expect(single.series.startMs).toBe(firstBin * 1_000);
    expect(single.series.published).toEqual(expected);
    const online = new Array<number>(expected.length).fill(0);
    let now = 0;
    let next = 0;
    const changes = events.filter((e) => e.kind === 'connack' || e.kind === 'offline');
    for (let bin = 0; bin < online.length; bin++) {
      while (next < changes.length && Math.floor((changes[next] as Event).at / 1_000) - firstBin <= bin) now += (changes[next++] as Event).kind === 'connack' ? 1 : -1;
      online[bin] = now;
    }
    expect(single.series.connected).toEqual(online);
    expect(Math.max(...single.series.connected)).toBe(DEVICES);
    expect(single.series.connected.at(-1)).toBe(0);
  });

  it('marks the fleet interrupted when one shard was, and only then', () => {
    const [one, two] = shardReports(events, 2) as [SimulationReport, SimulationReport];
    expect(mergeReports([one, two]).interrupted).toBeUndefined();
    expect(mergeReports([one, { ...two, interrupted: true }]).interrupted).toBe(true);
  });

  it('merges an already merged report with the remaining shards', () => {
    const [one, two, three] = shardReports(events, 3) as [SimulationReport, SimulationReport, SimulationReport];
    const merged = mergeReports([mergeReports([one, two], { partial: true }), three]);
    expect(merged.connectLatencyMs).toEqual(single.connectLatencyMs);
    expect(merged.series).toEqual(single.series);
  });

  it('refuses reports of different runs, naming the parameter and both files', () => {
    const [one] = shardReports(events, 2);
    const [, two] = shardReports(events, 2, { durationMs: 30_000 });
    expect(() => mergeReports([one as SimulationReport, two as SimulationReport], { sources: ['a.json', 'b.json'] })).toThrow(
      expect.objectContaining({ name: 'SimulatorError', code: 'ReportMismatch', message: expect.stringMatching(/durationMs is 20000 in a\.json but 30000 in b\.json/) }),
    );
  });

  it('refuses shards of MQTT 3.1.1 and MQTT 5 devices, naming protocol', () => {
    const [one] = shardReports(events, 2, { protocol: 4 });
    const [, two] = shardReports(events, 2, { protocol: 5 });
    expect((two as SimulationReport).run.protocol).toBe(5);
    expect(() => mergeReports([one as SimulationReport, two as SimulationReport], { sources: ['v4.json', 'v5.json'] })).toThrow(
      expect.objectContaining({ code: 'ReportMismatch', message: 'These reports are not of the same run: protocol is 4 in v4.json but 5 in v5.json. ' + LOCAL_ERROR_CATALOG.ReportMismatch.remedy }),
    );
  });

  it('refuses a shard given twice, a missing shard (unless partial) and different shard counts', () => {
    const [one, two] = shardReports(events, 2) as [SimulationReport, SimulationReport];
    expect(() => mergeReports([one, one], { sources: ['a.json', 'b.json'] })).toThrow(/Shard 1\/2 is in both a\.json and b\.json/);
    expect(() => mergeReports([two])).toThrow(expect.objectContaining({ code: 'ReportMismatch', message: expect.stringMatching(/Shard 1\/2 of the run is missing/) }));
    expect(mergeReports([two], { partial: true }).devices).toBe(two.devices);
    const [third] = shardReports(events, 3);
    expect(() => mergeReports([one, third as SimulationReport])).toThrow(/split into 2 shards/);
  });

  it('refuses what is not a report of this format with InvalidReport', () => {
    expect(() => parseReport([], 'x.json')).toThrow(expect.objectContaining({ code: 'InvalidReport', message: expect.stringMatching(/x\.json .*not a JSON object/) }));
    const { format: _format, ...old } = single;
    expect(() => parseReport(old, 'old.json')).toThrow(/no "format"/);
    expect(() => parseReport({ ...single, histograms: { ...single.histograms, e2eLatencyUs: 'nope' } }, 'bad.json')).toThrow(/histograms\.e2eLatencyUs/);
    expect(() => parseReport({ ...single, series: { ...single.series, acked: [1] } }, 'bad.json')).toThrow(/series\.acked/);
    expect(() => parseReport({ ...single, windows: { connect: [1] } }, 'bad.json')).toThrow(/"windows"/);
  });
});
