/**
 * Per-second time series of a run, binned on whole seconds of wall-clock time (Unix epoch), so that the series of
 * shards that ran at the same time line up bin for bin and add up exactly, whichever machine each ran on.
 */

/** Length of one bin of the series. */
export const SERIES_INTERVAL_MS = 1_000;

/** The counters of a run per interval. Every array has the same length; bin `k` covers `[startMs + k·intervalMs, startMs + (k+1)·intervalMs)`. */
export interface ReportSeries {
  /** Epoch milliseconds of the first bin's start (a whole second). */
  startMs: number;
  /** @default 1000 */
  intervalMs: number;
  /** Devices connected at the end of each bin. */
  connected: number[];
  /** Devices that got their first CONNACK 0 in the bin (the connect rate, per second). */
  connects: number[];
  /** PUBLISH packets written in the bin. */
  published: number[];
  /** PUBACKs received in the bin. */
  acked: number[];
  /** Messages received back in the bin. */
  delivered: number[];
  /** Failures in the bin, by error code. */
  errors: Record<string, number[]>;
}

type Counter = 'connects' | 'published' | 'acked' | 'delivered';

/** Collects a {@link ReportSeries} as events happen; memory grows with the run's length, not its traffic. */
export class SeriesRecorder {
  readonly #startBin: number;
  readonly #counts: Record<Counter, number[]> = { connects: [], published: [], acked: [], delivered: [] };
  /** Change of the connected count per bin; the gauge is their running sum. */
  readonly #onlineDelta: number[] = [];
  readonly #errors = new Map<string, number[]>();
  #bins = 0;

  /** `startEpochMs`: the wall-clock time of the run's start. */
  constructor(startEpochMs: number) {
    this.#startBin = Math.floor(startEpochMs / SERIES_INTERVAL_MS);
  }

  #bin(epochMs: number): number {
    const bin = Math.max(0, Math.floor(epochMs / SERIES_INTERVAL_MS) - this.#startBin);
    if (bin >= this.#bins) this.#bins = bin + 1;
    return bin;
  }

  count(counter: Counter, epochMs: number): void {
    const bin = this.#bin(epochMs);
    const values = this.#counts[counter];
    values[bin] = (values[bin] ?? 0) + 1;
  }

  online(delta: 1 | -1, epochMs: number): void {
    const bin = this.#bin(epochMs);
    this.#onlineDelta[bin] = (this.#onlineDelta[bin] ?? 0) + delta;
  }

  error(code: string, epochMs: number): void {
    const bin = this.#bin(epochMs);
    let values = this.#errors.get(code);
    if (!values) {
      values = [];
      this.#errors.set(code, values);
    }
    values[bin] = (values[bin] ?? 0) + 1;
  }

  /** The series up to `endEpochMs` (at least one bin), holes filled with 0. */
  series(endEpochMs: number): ReportSeries {
    this.#bin(endEpochMs);
    const length = this.#bins;
    const dense = (values: number[]): number[] => Array.from({ length }, (_, i) => values[i] ?? 0);
    let online = 0;
    const connected = Array.from({ length }, (_, i) => (online += this.#onlineDelta[i] ?? 0));
    const errors: Record<string, number[]> = {};
    for (const code of [...this.#errors.keys()].sort()) errors[code] = dense(this.#errors.get(code) as number[]);
    return {
      startMs: this.#startBin * SERIES_INTERVAL_MS,
      intervalMs: SERIES_INTERVAL_MS,
      connected,
      connects: dense(this.#counts.connects),
      published: dense(this.#counts.published),
      acked: dense(this.#counts.acked),
      delivered: dense(this.#counts.delivered),
      errors,
    };
  }
}

/**
 * The sum of several series bin by bin, aligned on wall-clock time: exactly the series one process would have
 * recorded for all their devices. A bin outside a series counts as 0 for it (its devices were not connected then).
 * @throws RangeError when the intervals differ or a start is not on the interval's grid.
 */
export function addSeries(all: readonly ReportSeries[]): ReportSeries {
  const first = all[0];
  if (!first) throw new RangeError('addSeries needs at least one series');
  const intervalMs = first.intervalMs;
  let startMs = Number.POSITIVE_INFINITY;
  let endMs = Number.NEGATIVE_INFINITY;
  const codes = new Set<string>();
  for (const s of all) {
    if (s.intervalMs !== intervalMs || s.startMs % intervalMs !== 0) throw new RangeError(`Series intervals differ (${s.intervalMs} ms, start ${s.startMs}) and cannot be added`);
    startMs = Math.min(startMs, s.startMs);
    endMs = Math.max(endMs, s.startMs + s.connected.length * intervalMs);
    for (const code of Object.keys(s.errors)) codes.add(code);
  }
  const length = (endMs - startMs) / intervalMs;
  const sum = (pick: (s: ReportSeries) => number[] | undefined): number[] => {
    const out = new Array<number>(length).fill(0);
    for (const s of all) {
      const values = pick(s);
      if (!values) continue;
      const offset = (s.startMs - startMs) / intervalMs;
      for (let i = 0; i < values.length; i++) out[offset + i] = (out[offset + i] as number) + (values[i] as number);
    }
    return out;
  };
  return {
    startMs,
    intervalMs,
    connected: sum((s) => s.connected),
    connects: sum((s) => s.connects),
    published: sum((s) => s.published),
    acked: sum((s) => s.acked),
    delivered: sum((s) => s.delivered),
    // Own codes only: a series without `constructor` must not add up Object's.
    errors: Object.fromEntries([...codes].sort().map((code) => [code, sum((s) => (Object.hasOwn(s.errors, code) ? s.errors[code] : undefined))])),
  };
}
