/**
 * `--fail-on` thresholds: a small grammar that turns a report into an exit code. A threshold is `METRIC OP VALUE`,
 * e.g. `lost>0`, `heal.p99>30s`, `errors>0`, `duplicates>10`, `errors.ConnectionLost>=100`; several are given as
 * several flags or a comma list, and the run fails when any holds.
 *
 * - Counts: `lost`, `held` (undelivered, still held by their devices at the end), `queued` (undelivered, still in the
 *   backend subscriber's queue at the broker at the end), `maybe-queued` (acknowledged, undelivered, and that queue
 *   could not be read), `delivered`, `accepted`, `refused`,
 *   `duplicates` (receptions beyond the first), `duplicated` (messages received more than once) of the backend
 *   subscriber; `published`, `acked`, `reconnects`,
 *   `failed-connects`, `connected`, `errors` (all codes) or `errors.CODE` (that code, and its reason-coded forms such
 *   as `PublishRejected:0x87`); `hit`, `offline-at-start` (targeted devices a fault found offline and did
 *   not hit) and `not-healed` (all faults together).
 * - Times, with a unit (`ms`, `s` or `m`; no unit is ms): `heal.p50`, `heal.p95`, `heal.p99`, `heal.max` (all faults'
 *   devices together), `connect.…` and `e2e.…` (the latencies, same percentiles).
 * - Comparators: `>`, `>=`, `<`, `<=`, `=` (or `==`), `!=`.
 */
import { ValidationError } from '../errors.js';
import { SimulatorError } from './errors.js';
import { addHistograms, decodeHistogram, summarizeHistogram } from './histogram.js';
import type { LatencySummary, SimulationReport } from './report-format.js';

/** A parsed threshold. */
export interface Threshold {
  /** As written (trimmed). */
  readonly text: string;
  readonly metric: string;
  readonly op: '>' | '>=' | '<' | '<=' | '=' | '!=';
  /** For a time, in ms. */
  readonly value: number;
  readonly time: boolean;
}

const COUNTS = ['lost', 'held', 'queued', 'maybe-queued', 'delivered', 'accepted', 'refused', 'duplicates', 'duplicated', 'published', 'acked', 'reconnects', 'failed-connects', 'connected', 'errors', 'hit', 'offline-at-start', 'not-healed'] as const;
const TIMES = ['heal', 'connect', 'e2e'] as const;
const PERCENTILES = ['p50', 'p95', 'p99', 'max'] as const;
const UNITS: Readonly<Record<string, number>> = { '': 1, ms: 1, s: 1_000, m: 60_000 };

/** The metrics a threshold may name, for messages. */
export const FAIL_ON_METRICS = `${COUNTS.join(', ')}, errors.CODE, ${TIMES.map((t) => `${t}.p50|p95|p99|max`).join(', ')}`;

/**
 * Parse thresholds, each text a threshold or a comma list of them.
 * @throws ValidationError `InvalidOption` naming `flag` and the threshold that does not parse.
 */
export function parseThresholds(texts: readonly string[], flag = '--fail-on'): Threshold[] {
  const out: Threshold[] = [];
  for (const text of texts.flatMap((t) => t.split(','))) {
    const trimmed = text.trim();
    if (trimmed === '') continue;
    const match = /^([A-Za-z][\w.:-]*)\s*(>=|<=|!=|==|=|>|<)\s*(\d+(?:\.\d+)?)\s*([a-z]*)$/.exec(trimmed);
    const bad = (why: string): never => {
      throw new ValidationError('InvalidOption', `${flag} ${JSON.stringify(trimmed)} ${why}. A threshold is METRIC OP VALUE (e.g. lost>0, heal.p99>30s, errors.ConnectionLost>=100); metrics: ${FAIL_ON_METRICS}`);
    };
    if (!match) return bad('does not parse');
    const [, metric = '', op = '', number = '', unit = ''] = match;
    const [head = '', tail] = metric.split(/\.(.*)/s);
    const time = (TIMES as readonly string[]).includes(head);
    if (time) {
      if (!(PERCENTILES as readonly string[]).includes(tail ?? '')) bad(`names ${metric}: a time is ${head}.p50, ${head}.p95, ${head}.p99 or ${head}.max`);
      if (!Object.hasOwn(UNITS, unit)) bad(`has the unit ${JSON.stringify(unit)}: a time is in ms, s or m`);
    } else {
      const known = (COUNTS as readonly string[]).includes(metric) || (head === 'errors' && tail !== undefined && /^[A-Za-z][\w.:-]*$/.test(tail));
      if (!known) bad(`names the metric ${JSON.stringify(metric)}, which is not one`);
      if (unit !== '') bad(`gives a unit to ${metric}, a count`);
    }
    out.push({ text: trimmed, metric, op: (op === '==' ? '=' : op) as Threshold['op'], value: Number(number) * (UNITS[unit] ?? 1), time });
  }
  if (out.length === 0) throw new ValidationError('InvalidOption', `${flag} is empty: give a threshold such as lost>0`);
  return out;
}

/** Does a threshold need a backend subscriber (a scenario, or `consumer`)? */
export function needsConsumer(threshold: Threshold): boolean {
  return ['lost', 'held', 'queued', 'maybe-queued', 'delivered', 'accepted', 'refused', 'duplicates', 'duplicated'].includes(threshold.metric);
}

/** Does a threshold need a scenario? */
export function needsScenario(threshold: Threshold): boolean {
  return ['hit', 'offline-at-start', 'not-healed'].includes(threshold.metric) || threshold.metric.startsWith('heal.');
}

/** Every fault's heal times together. */
function healOf(report: SimulationReport): LatencySummary {
  return summarizeHistogram(addHistograms((report.faults ?? []).map((f) => decodeHistogram(f.healUs))));
}

/** The value a threshold's metric has in a report (ms for times), or `undefined` when the report has none. */
export function metricValue(report: SimulationReport, metric: string): number | undefined {
  const [head = '', tail = ''] = metric.split(/\.(.*)/s);
  const delivery = report.delivery;
  switch (head) {
    case 'maybe-queued':
      return delivery?.maybeQueued;
    case 'lost':
    case 'held':
    case 'queued':
    case 'delivered':
    case 'accepted':
    case 'refused':
    case 'duplicates':
    case 'duplicated':
      return delivery?.[head];
    case 'published':
    case 'acked':
    case 'reconnects':
    case 'connected':
      return report[head];
    case 'failed-connects':
      return report.failedConnects;
    case 'hit':
      return report.faults?.reduce((n, f) => n + f.hit, 0);
    case 'offline-at-start':
      return report.faults?.reduce((n, f) => n + f.offlineAtStart, 0);
    case 'not-healed':
      return report.faults?.reduce((n, f) => n + f.notHealed, 0);
    case 'errors': {
      const entries = Object.entries(report.errors);
      if (tail === '') return entries.reduce((n, [, v]) => n + v, 0);
      return entries.filter(([code]) => code === tail || code.startsWith(`${tail}:`)).reduce((n, [, v]) => n + v, 0);
    }
    case 'heal':
    case 'connect':
    case 'e2e': {
      if (head === 'heal' && report.faults === undefined) return undefined;
      const summary = head === 'heal' ? healOf(report) : head === 'connect' ? report.connectLatencyMs : report.e2eLatencyMs;
      // No device to heal is a heal time of nothing; an unmeasured latency is not a value.
      return summary[tail as keyof LatencySummary] ?? (head === 'heal' ? 0 : undefined);
    }
    default:
      return undefined;
  }
}

function holds(value: number, op: Threshold['op'], limit: number): boolean {
  switch (op) {
    case '>':
      return value > limit;
    case '>=':
      return value >= limit;
    case '<':
      return value < limit;
    case '<=':
      return value <= limit;
    case '=':
      return value === limit;
    case '!=':
      return value !== limit;
  }
}

function shown(value: number, time: boolean): string {
  if (!time) return String(value);
  return value >= 1_000 ? `${Math.round(value) / 1_000} s` : `${value} ms`;
}

/**
 * The thresholds a report crosses, as the error a run ends with; `undefined` when none holds. A threshold whose
 * metric the report does not have (`lost` without a backend subscriber, `heal.p99` without a scenario) is crossed:
 * it asked for something the run cannot show.
 */
export function checkThresholds(report: SimulationReport, thresholds: readonly Threshold[]): SimulatorError | undefined {
  const crossed: string[] = [];
  for (const t of thresholds) {
    const value = metricValue(report, t.metric);
    if (value === undefined) {
      crossed.push(`${t.text}: the report has no ${t.metric} (${needsScenario(t) ? 'no scenario was played' : needsConsumer(t) ? 'no backend subscriber counted deliveries' : 'nothing was measured'})`);
    } else if (holds(value, t.op, t.value)) {
      crossed.push(`${t.text}: ${t.metric} is ${shown(value, t.time)}`);
    }
  }
  if (crossed.length === 0) return undefined;
  return new SimulatorError('ThresholdExceeded', `--fail-on: ${crossed.join('; ')}`);
}
