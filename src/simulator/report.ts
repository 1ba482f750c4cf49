/**
 * Reading saved reports and merging the reports of a run's shards into the fleet's report: counts and per-second
 * series are added, and latency histograms are added bucket by bucket, so the fleet's percentiles are exactly
 * those one process would have measured over all the devices.
 */
import { SimulatorError } from './errors.js';
import { type Histogram, addHistograms, decodeHistogram, encodeHistogram, summarizeHistogram } from './histogram.js';
import { ratePerSec } from './metrics.js';
import { REPORT_FORMAT, type RunParameters, type ShardRecord, type SimulationReport } from './report-format.js';
import { type ReportSeries, addSeries } from './series.js';

/**
 * The parameters that make two shards part of the same run: every one must be equal to merge. Tuning that does not
 * change what is measured (API rate, connects in flight, source addresses) may differ from machine to machine.
 */
export const RUN_IDENTITY_KEYS = Object.freeze([
  'version', 'startAt', 'devices', 'groupId', 'connectRate', 'publishIntervalMs', 'qos', 'payloadSize', 'topic', 'durationMs',
  'subscribe', 'keepalive', 'connectAttempts', 'connectTimeoutMs', 'protocol', 'target',
] as const satisfies ReadonlyArray<keyof RunParameters>);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const NUMBER_FIELDS = ['devices', 'provisioned', 'connected', 'failedConnects', 'published', 'acked', 'delivered', 'reconnects', 'peakRssMB', 'elapsedMs'] as const;

/**
 * Check that a parsed JSON value is a report this version can merge (its format, fields, histograms and series);
 * returns it typed. `source` names it in errors (a file name).
 * @throws SimulatorError `InvalidReport`
 */
export function parseReport(value: unknown, source = 'the report'): SimulationReport {
  const bad = (why: string): SimulatorError => new SimulatorError('InvalidReport', `${source} is not a simulation report this version can read: ${why}`);
  if (!isRecord(value)) throw bad('not a JSON object');
  if (value['format'] !== REPORT_FORMAT) {
    throw bad(value['format'] === undefined ? 'it has no "format" (written by an older version, without histograms?)' : `format ${JSON.stringify(value['format'])}, expected ${JSON.stringify(REPORT_FORMAT)}`);
  }
  for (const field of NUMBER_FIELDS) if (typeof value[field] !== 'number') throw bad(`"${field}" is not a number`);
  const run = value['run'];
  if (!isRecord(run) || typeof run['startedAt'] !== 'string' || typeof run['devices'] !== 'number' || !isRecord(run['target'])) throw bad('"run" is missing or incomplete');
  const shards = value['shards'];
  if (!Array.isArray(shards) || shards.length === 0 || !shards.every((s) => isRecord(s) && Number.isInteger(s['index']) && Number.isInteger(s['count']) && typeof s['startedAt'] === 'string')) {
    throw bad('"shards" is missing or incomplete');
  }
  const histograms = value['histograms'];
  if (!isRecord(histograms) || typeof histograms['connectLatencyUs'] !== 'string' || typeof histograms['e2eLatencyUs'] !== 'string') throw bad('"histograms" is missing');
  for (const name of ['connectLatencyUs', 'e2eLatencyUs'] as const) {
    try {
      decodeHistogram(histograms[name] as string);
    } catch (error) {
      throw bad(`histograms.${name} is not an HdrHistogram encoding (${error instanceof Error ? error.message : String(error)})`);
    }
  }
  const windows = value['windows'];
  const isWindow = (w: unknown): boolean => w === null || (Array.isArray(w) && w.length === 2 && w.every((n) => typeof n === 'number'));
  if (!isRecord(windows) || !isWindow(windows['connect']) || !isWindow(windows['publish'])) throw bad('"windows" is missing or not [first, last] pairs');
  const series = value['series'];
  const arrays = ['connected', 'connects', 'published', 'acked', 'delivered'] as const;
  if (!isRecord(series) || typeof series['startMs'] !== 'number' || typeof series['intervalMs'] !== 'number' || !isRecord(series['errors'])) throw bad('"series" is missing');
  const length = (series['connected'] as unknown[] | undefined)?.length;
  for (const name of arrays) {
    const values = series[name];
    if (!Array.isArray(values) || values.length !== length || !values.every((n) => typeof n === 'number')) throw bad(`series.${name} is not an array of numbers as long as series.connected`);
  }
  return value as unknown as SimulationReport;
}

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
 * end. One report comes back as it went in.
 *
 * @throws SimulatorError `ReportMismatch` naming what differs when the reports are not of one run (different
 *   parameters, different shard counts, a shard given twice, or, unless `partial`, a missing shard).
 */
export function mergeReports(reports: readonly SimulationReport[], options: MergeReportsOptions = {}): SimulationReport {
  const name = (i: number): string => options.sources?.[i] ?? `report ${i + 1}`;
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
    const missing = Array.from({ length: count }, (_, k) => k + 1).filter((index) => !owner.has(index));
    if (missing.length > 0) {
      throw new SimulatorError('ReportMismatch', `Shard${missing.length > 1 ? 's' : ''} ${missing.map((index) => `${index}/${count}`).join(', ')} of the run ${missing.length > 1 ? 'are' : 'is'} missing (pass partial / --partial to merge only the shards given)`);
    }
  }
  if (reports.length === 1) return first;

  const sum = (pick: (r: SimulationReport) => number): number => reports.reduce((total, r) => total + pick(r), 0);
  const connect = mergeWindow(reports.map((r) => r.windows.connect));
  const publish = mergeWindow(reports.map((r) => r.windows.publish));
  const connectLatency = addHistograms(reports.map((r) => decodeHistogram(r.histograms.connectLatencyUs)));
  const e2eLatency = addHistograms(reports.map((r) => decodeHistogram(r.histograms.e2eLatencyUs)));
  const shards: ShardRecord[] = reports.flatMap((r) => r.shards).sort((a, b) => a.index - b.index);
  const starts = shards.map((s) => Date.parse(s.startedAt));
  const start = Math.min(...starts);
  const end = Math.max(...shards.map((s, i) => (starts[i] as number) + s.elapsedMs));
  const errors: Record<string, number> = {};
  for (const report of reports) for (const [code, n] of Object.entries(report.errors)) errors[code] = (errors[code] ?? 0) + n;
  const connected = sum((r) => r.connected);
  const published = sum((r) => r.published);
  return {
    format: REPORT_FORMAT,
    run: { ...first.run, startedAt: new Date(start).toISOString() },
    shards,
    devices: sum((r) => r.devices),
    provisioned: sum((r) => r.provisioned),
    connected,
    failedConnects: sum((r) => r.failedConnects),
    connectRatePerSec: ratePerSec(connected, connect?.[0], connect?.[1]),
    connectLatencyMs: summarizeHistogram(connectLatency),
    published,
    acked: sum((r) => r.acked),
    delivered: sum((r) => r.delivered),
    publishRatePerSec: ratePerSec(published, publish?.[0], publish?.[1]),
    e2eLatencyMs: summarizeHistogram(e2eLatency),
    errors: Object.fromEntries(Object.entries(errors).sort(([a], [b]) => a.localeCompare(b))),
    reconnects: sum((r) => r.reconnects),
    peakRssMB: Math.max(...reports.map((r) => r.peakRssMB)),
    elapsedMs: end - start,
    windows: { connect, publish },
    histograms: { connectLatencyUs: encodeHistogram(connectLatency), e2eLatencyUs: encodeHistogram(e2eLatency) },
    series: addSeries(reports.map((r) => r.series)),
    // A shard stopped early makes the fleet's numbers partial: the merged report says so too.
    ...(reports.some((r) => r.interrupted) ? { interrupted: true } : {}),
  };
}

function mergeWindow(windows: ReadonlyArray<[number, number] | null>): [number, number] | null {
  const present = windows.filter((w): w is [number, number] => w !== null);
  if (present.length === 0) return null;
  return [Math.min(...present.map((w) => w[0])), Math.max(...present.map((w) => w[1]))];
}

/** The latency histograms of a report, decoded. */
export function reportHistograms(report: SimulationReport): { connectLatencyUs: Histogram; e2eLatencyUs: Histogram } {
  return { connectLatencyUs: decodeHistogram(report.histograms.connectLatencyUs), e2eLatencyUs: decodeHistogram(report.histograms.e2eLatencyUs) };
}

export type { ReportSeries };
