/**
 * Merging the reports of a run's shards into the fleet's report: counts and per-second series are added, and latency
 * histograms are added bucket by bucket, so the fleet's percentiles are exactly those one process would have
 * measured over all the devices. Every report is checked against its schema first (report-check.ts), and the
 * merge's own size (shards, series span, error codes) is bounded before anything is allocated.
 */
import { SimulatorError } from './errors.js';
import { type Histogram, addHistograms, decodeHistogram, encodeHistogram, summarizeHistogram } from './histogram.js';
import { ratePerSec } from './metrics.js';
import { REPORT_LIMITS, invalidReport, parseReport } from './report-check.js';
import { REPORT_FORMAT, type RunParameters, type ShardRecord, type SimulationReport } from './report-format.js';
import { type ReportSeries, addSeries } from './series.js';

export { REPORT_LIMITS, parseReport };

/**
 * The parameters that make two shards part of the same run: every one must be equal to merge. Tuning that does not
 * change what is measured (API rate, connects in flight, source addresses) may differ from machine to machine.
 */
export const RUN_IDENTITY_KEYS = Object.freeze([
  'version', 'startAt', 'devices', 'groupId', 'connectRate', 'publishIntervalMs', 'qos', 'payloadSize', 'topic', 'durationMs',
  'subscribe', 'keepalive', 'connectAttempts', 'connectTimeoutMs', 'protocol', 'target',
] as const satisfies ReadonlyArray<keyof RunParameters>);

/** Options of {@link mergeReports}. */
export interface MergeReportsOptions {
  /** Names of the reports (file names) for error messages, in the same order. */
  sources?: readonly string[];
  /** Merge even when some shards of the run are missing (the report then covers only the shards given). @default false */
  partial?: boolean;
}

function shardName(s: { index: number; count: number }): string {
  return `${s.index}/${s.count}`;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Merge the reports of a run's shards (or already merged reports of disjoint shards) into the fleet's report:
 * counts, errors and per-second series added, latency histograms added (so the percentiles are exact), rates over
 * the fleet's connect and publish windows, the largest shard RSS, and the time from the earliest start to the latest
 * end. One report comes back as it went in. Every report is checked first ({@link parseReport}); the merge takes
 * memory in proportion to the reports, plus its series, which {@link REPORT_LIMITS} bound.
 *
 * @throws InvalidReportError `InvalidReport` naming the field of a report that is not one this version can merge,
 *   or the merged report's field that would exceed {@link REPORT_LIMITS}.
 * @throws SimulatorError `ReportMismatch` naming what differs when the reports are not of one run (different
 *   parameters, different shard counts, a shard given twice, series further apart than a run lasts, or, unless
 *   `partial`, a missing shard).
 */
export function mergeReports(reports: readonly SimulationReport[], options: MergeReportsOptions = {}): SimulationReport {
  const name = (i: number): string => options.sources?.[i] ?? `report ${i + 1}`;
  reports.forEach((report, i) => parseReport(report, name(i)));
  const first = reports[0];
  if (!first) throw new SimulatorError('ReportMismatch', 'There is no report to merge');
  for (let i = 1; i < reports.length; i++) {
    const other = reports[i] as SimulationReport;
    const differences = RUN_IDENTITY_KEYS.filter((key) => !same(first.run[key], other.run[key])).map(
      (key) => `${key} is ${JSON.stringify(first.run[key])} in ${name(0)} but ${JSON.stringify(other.run[key])} in ${name(i)}`,
    );
    if (differences.length > 0) throw new SimulatorError('ReportMismatch', `These reports are not of the same run: ${differences.join('; ')}`);
  }
  const owner = new Map<number, number>();
  const count = first.shards[0]?.count ?? 1;
  reports.forEach((report, i) => {
    for (const shard of report.shards) {
      if (shard.count !== count) {
        throw new SimulatorError('ReportMismatch', `These reports are not of the same run: ${name(i)} holds shard ${shardName(shard)} but ${name(0)} is split into ${count} shards`);
      }
      const seen = owner.get(shard.index);
      if (seen !== undefined) {
        throw new SimulatorError('ReportMismatch', `Shard ${shardName(shard)} is in both ${name(seen)} and ${name(i)}: merge each shard once`);
      }
      owner.set(shard.index, i);
    }
  });
  if (!options.partial) {
    // `count` is bounded by the schema (REPORT_LIMITS.maxShards).
    const missing = Array.from({ length: count }, (_, k) => k + 1).filter((index) => !owner.has(index));
    if (missing.length > 0) {
      throw new SimulatorError('ReportMismatch', `Shard${missing.length > 1 ? 's' : ''} ${missing.map((index) => `${index}/${count}`).join(', ')} of the run ${missing.length > 1 ? 'are' : 'is'} missing (pass partial / --partial to merge only the shards given)`);
    }
  }
  if (reports.length === 1) return first;
  checkMergedSeries(reports, name);

  const merged = 'the merged report';
  const sum = (field: (typeof COUNTS)[number]): number => {
    let total = 0;
    for (const report of reports) total += report[field];
    if (!Number.isSafeInteger(total)) throw invalidReport(merged, field, `adds up past ${Number.MAX_SAFE_INTEGER}`);
    return total;
  };
  const connect = mergeWindow(reports.map((r) => r.windows.connect));
  const publish = mergeWindow(reports.map((r) => r.windows.publish));
  const connectLatency = addHistograms(reports.map((r) => decodeHistogram(r.histograms.connectLatencyUs)));
  const e2eLatency = addHistograms(reports.map((r) => decodeHistogram(r.histograms.e2eLatencyUs)));
  const shards: ShardRecord[] = reports.flatMap((r) => r.shards).sort((a, b) => a.index - b.index);
  let start = Number.POSITIVE_INFINITY;
  let end = Number.NEGATIVE_INFINITY;
  for (const shard of shards) {
    const at = Date.parse(shard.startedAt);
    start = Math.min(start, at);
    end = Math.max(end, at + shard.elapsedMs);
  }
  // Codes are data: a Map, so that `constructor` or `__proto__` add up as plain codes (Object.fromEntries then
  // makes each an own property).
  const errors = new Map<string, number>();
  for (const report of reports) for (const [code, n] of Object.entries(report.errors)) errors.set(code, (errors.get(code) ?? 0) + n);
  for (const [code, n] of errors) if (!Number.isSafeInteger(n)) throw invalidReport(merged, `errors[${JSON.stringify(code)}]`, `adds up past ${Number.MAX_SAFE_INTEGER}`);
  let peakRssMB = 0;
  for (const report of reports) peakRssMB = Math.max(peakRssMB, report.peakRssMB);
  const lost = reports.map((r) => r.brokerLost).filter((l) => l !== undefined).sort((a, b) => Date.parse(a.at) - Date.parse(b.at))[0];
  const connected = sum('connected');
  const published = sum('published');
  return {
    format: REPORT_FORMAT,
    run: { ...first.run, startedAt: new Date(start).toISOString() },
    shards,
    devices: sum('devices'),
    provisioned: sum('provisioned'),
    connected,
    failedConnects: sum('failedConnects'),
    connectRatePerSec: ratePerSec(connected, connect?.[0], connect?.[1]),
    connectLatencyMs: summarizeHistogram(connectLatency),
    published,
    acked: sum('acked'),
    delivered: sum('delivered'),
    publishRatePerSec: ratePerSec(published, publish?.[0], publish?.[1]),
    e2eLatencyMs: summarizeHistogram(e2eLatency),
    errors: Object.fromEntries([...errors].sort(([a], [b]) => a.localeCompare(b))),
    reconnects: sum('reconnects'),
    peakRssMB,
    elapsedMs: end - start,
    windows: { connect, publish },
    histograms: { connectLatencyUs: encodeHistogram(connectLatency), e2eLatencyUs: encodeHistogram(e2eLatency) },
    series: addSeries(reports.map((r) => r.series)),
    // A shard stopped early makes the fleet's numbers partial: the merged report says so too.
    ...(reports.some((r) => r.interrupted) ? { interrupted: true } : {}),
    // A shard that lost its broker (or embedded emulator) for good fails the fleet's run: the earliest loss.
    ...(lost === undefined ? {} : { brokerLost: lost }),
  };
}

/** The counts a merge adds up. */
const COUNTS = ['devices', 'provisioned', 'connected', 'failedConnects', 'published', 'acked', 'delivered', 'reconnects'] as const;

/**
 * The merged series must be one run's: bins of one length, a span no longer than a run lasts, and a size within
 * {@link REPORT_LIMITS}, known before a bin of it is allocated.
 * @throws SimulatorError `ReportMismatch` (intervals, span); InvalidReportError `InvalidReport` (size).
 */
function checkMergedSeries(reports: readonly SimulationReport[], name: (i: number) => string): void {
  const { intervalMs } = (reports[0] as SimulationReport).series;
  let startMs = Number.POSITIVE_INFINITY;
  let endMs = Number.NEGATIVE_INFINITY;
  let earliest = 0;
  let latest = 0;
  const codes = new Set<string>();
  reports.forEach((report, i) => {
    const { series } = report;
    if (series.intervalMs !== intervalMs) {
      throw new SimulatorError('ReportMismatch', `These reports are not of the same run: series.intervalMs is ${intervalMs} in ${name(0)} but ${series.intervalMs} in ${name(i)}`);
    }
    if (series.startMs < startMs) [startMs, earliest] = [series.startMs, i];
    const seriesEnd = series.startMs + series.connected.length * intervalMs;
    if (seriesEnd > endMs) [endMs, latest] = [seriesEnd, i];
    for (const code of Object.keys(series.errors)) codes.add(code);
  });
  if (endMs - startMs > REPORT_LIMITS.maxRunSpanMs) {
    const days = (ms: number): string => `${Math.round((ms / 86_400_000) * 10) / 10} days`;
    throw new SimulatorError(
      'ReportMismatch',
      `These reports are not of the same run: series.startMs of ${name(earliest)} (${new Date(startMs).toISOString()}) and the end of the series of ${name(latest)} (${new Date(endMs).toISOString()}) are ${days(endMs - startMs)} apart, more than the ${days(REPORT_LIMITS.maxRunSpanMs)} a run lasts at most`,
    );
  }
  const merged = 'the merged report';
  if (codes.size > REPORT_LIMITS.maxErrorCodes) throw invalidReport(merged, 'series.errors', `would hold ${codes.size} error codes, more than the ${REPORT_LIMITS.maxErrorCodes} a report may`);
  const values = (5 + codes.size) * ((endMs - startMs) / intervalMs);
  if (values > REPORT_LIMITS.maxSeriesValues) throw invalidReport(merged, 'series', `would hold ${values} numbers, more than the ${REPORT_LIMITS.maxSeriesValues} a report may`);
}

function mergeWindow(windows: ReadonlyArray<[number, number] | null>): [number, number] | null {
  let merged: [number, number] | null = null;
  for (const w of windows) if (w !== null) merged = merged === null ? [w[0], w[1]] : [Math.min(merged[0], w[0]), Math.max(merged[1], w[1])];
  return merged;
}

/** The latency histograms of a report, decoded. */
export function reportHistograms(report: SimulationReport): { connectLatencyUs: Histogram; e2eLatencyUs: Histogram } {
  return { connectLatencyUs: decodeHistogram(report.histograms.connectLatencyUs), e2eLatencyUs: decodeHistogram(report.histograms.e2eLatencyUs) };
}

export type { ReportSeries };
