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
import { type DeliveryReport, type FaultReport, REPORT_FORMAT, type RunParameters, type ShardRecord, type SimulationReport } from './report-format.js';
import type { EmulatorDelta } from './emulator-controls.js';
import type { RelayStats } from './fault-relay.js';
import { NOT_HEALED_LISTED } from './heal.js';
import type { MessageCounts } from './ledger.js';
import { type ReportSeries, addSeries } from './series.js';

export { REPORT_LIMITS, parseReport };

/**
 * The parameters that make two shards part of the same run: every one must be equal to merge. Tuning that does not
 * change what is measured (API rate, connects in flight, source addresses) may differ from machine to machine.
 */
export const RUN_IDENTITY_KEYS = Object.freeze([
  'version', 'startAt', 'devices', 'groupId', 'connectRate', 'publishIntervalMs', 'qos', 'payloadSize', 'topic', 'durationMs',
  'subscribe', 'keepalive', 'connectAttempts', 'connectTimeoutMs', 'protocol', 'target', 'client', 'consumer', 'scenario',
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
  const errors = addCodes(reports.map((r) => r.errors));
  for (const [code, n] of Object.entries(errors)) if (!Number.isSafeInteger(n)) throw invalidReport(merged, `errors[${JSON.stringify(code)}]`, `adds up past ${Number.MAX_SAFE_INTEGER}`);
  let peakRssMB = 0;
  for (const report of reports) peakRssMB = Math.max(peakRssMB, report.peakRssMB);
  const lost = reports.map((r) => r.brokerLost).filter((l) => l !== undefined).sort((a, b) => Date.parse(a.at) - Date.parse(b.at))[0];
  const connected = sum('connected');
  const published = sum('published');
  const faults = mergeFaults(reports, name);
  const delivery = addCounts(reports.map((r) => r.delivery), merged, 'delivery');
  const relay = addCounts(reports.map((r) => r.relay), merged, 'relay');
  const emulator = mergeEmulator(reports.map((r) => r.emulator), first.run.target.kind === 'broker');
  const refetches = reports.some((r) => r.credentialRefetches !== undefined) ? addCounts(reports.map((r) => ({ credentialRefetches: r.credentialRefetches ?? 0 })), merged, '')?.credentialRefetches : undefined;
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
    errors,
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
    ...(refetches === undefined ? {} : { credentialRefetches: refetches }),
    ...(faults === undefined ? {} : { faults }),
    ...(delivery === undefined ? {} : { delivery }),
    ...(emulator === undefined ? {} : { emulator }),
    ...(relay === undefined ? {} : { relay }),
  };
}

/**
 * Add up objects of counts field by field (the shards' `delivery`, `relay`); `undefined` when none has one.
 * @throws InvalidReportError when a sum passes the largest safe integer.
 */
function addCounts<T extends object>(items: ReadonlyArray<T | undefined>, merged: string, path: string): T | undefined {
  const present = items.filter((item): item is T => item !== undefined);
  if (present.length === 0) return undefined;
  const total: Record<string, number> = {};
  for (const item of present) {
    for (const [key, n] of Object.entries(item as Record<string, number>)) {
      const value = (total[key] ?? 0) + n;
      if (!Number.isSafeInteger(value)) throw invalidReport(merged, path === '' ? key : `${path}.${key}`, `adds up past ${Number.MAX_SAFE_INTEGER}`);
      total[key] = value;
    }
  }
  return total as T;
}

/**
 * Codes with their counts added, sorted. Codes are data: a Map, so that `constructor` or `__proto__` add up as plain
 * codes (Object.fromEntries then makes each an own property).
 */
function addCodes(all: ReadonlyArray<Record<string, number>>, combine: (a: number, b: number) => number = (a, b) => a + b): Record<string, number> {
  const codes = new Map<string, number>();
  for (const errors of all) for (const [code, n] of Object.entries(errors)) codes.set(code, codes.has(code) ? combine(codes.get(code) as number, n) : n);
  return Object.fromEntries([...codes].sort(([a], [b]) => a.localeCompare(b)));
}

/**
 * The faults of the shards, one by one: every shard of a run played the same timeline, so each lists the same faults
 * (same id, kind and plan); their devices and heal times are added, the earliest start and latest end kept.
 * @throws SimulatorError `ReportMismatch` when the shards' fault lists differ.
 */
function mergeFaults(reports: readonly SimulationReport[], name: (i: number) => string): FaultReport[] | undefined {
  const first = reports[0]?.faults;
  const identity = (f: FaultReport): string => JSON.stringify([f.id, f.kind, f.label, f.fault, f.plannedAtMs, f.plannedForMs]);
  reports.forEach((report, i) => {
    const faults = report.faults;
    const same = faults === undefined ? first === undefined : first !== undefined && faults.length === first.length && faults.every((f, k) => identity(f) === identity(first[k] as FaultReport));
    if (!same) throw new SimulatorError('ReportMismatch', `These reports are not of the same run: the faults of ${name(i)} are not those of ${name(0)} (every shard of a game day plays one timeline)`);
  });
  if (first === undefined) return undefined;
  return first.map((fault, k) => {
    const all = reports.map((r) => (r.faults as FaultReport[])[k] as FaultReport);
    const times = (pick: (f: FaultReport) => string | null, earliest: boolean): string | null => {
      const ms = all.map(pick).filter((t): t is string => t !== null).map((t) => Date.parse(t));
      return ms.length === 0 ? null : new Date(earliest ? Math.min(...ms) : Math.max(...ms)).toISOString();
    };
    const heal = addHistograms(all.map((f) => decodeHistogram(f.healUs)));
    const count = (pick: (f: FaultReport) => number): number => all.reduce((n, f) => n + pick(f), 0);
    const messages = all.every((f) => f.messages === null) ? null : (addCounts(all.map((f) => f.messages ?? undefined), 'the merged report', `faults[${k}].messages`) as MessageCounts);
    return {
      ...fault,
      startedAt: times((f) => f.startedAt, true),
      endedAt: times((f) => f.endedAt, false),
      targeted: count((f) => f.targeted),
      hit: count((f) => f.hit),
      offlineAtStart: count((f) => f.offlineAtStart),
      healed: count((f) => f.healed),
      notHealed: count((f) => f.notHealed),
      // Each shard listed its first; the fleet's first are among them.
      ...(all.some((f) => f.notHealedDevices !== undefined)
        ? { notHealedDevices: all.flatMap((f) => f.notHealedDevices ?? []).sort((a, b) => a.index - b.index).slice(0, NOT_HEALED_LISTED) }
        : {}),
      healMs: summarizeHistogram(heal),
      healUs: encodeHistogram(heal),
      messages,
      errors: addCodes(all.map((f) => f.errors)),
    };
  });
}

/**
 * The emulator's stats over the run: each embedded emulator saw only its shard, so theirs add up; a shared one was
 * seen by every shard, so the largest of each count is kept (the shards' windows differ by moments).
 */
function mergeEmulator(all: ReadonlyArray<EmulatorDelta | undefined>, shared: boolean): EmulatorDelta | undefined {
  const present = all.filter((e): e is EmulatorDelta => e !== undefined);
  if (present.length === 0) return undefined;
  const combine = shared ? (a: number, b: number): number => Math.max(a, b) : (a: number, b: number): number => a + b;
  const actions: EmulatorDelta['actions'] = {};
  const names = new Set(present.flatMap((e) => Object.keys(e.actions)));
  for (const action of [...names].sort()) {
    const of = present.map((e) => (Object.hasOwn(e.actions, action) ? e.actions[action] : undefined)).filter((a) => a !== undefined);
    actions[action] = { ok: of.map((a) => a.ok).reduce(combine, 0), errors: addCodes(of.map((a) => a.errors), combine) };
  }
  return { actions, rules: addCodes(present.map((e) => e.rules), combine) };
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
