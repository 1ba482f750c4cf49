import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';

/** Percentiles of a latency, in milliseconds (microsecond resolution); all `null` when nothing was measured. */
export interface LatencySummary {
  p50: number | null;
  p95: number | null;
  p99: number | null;
  max: number | null;
}

/** The result of a simulation run (what `--json` prints). Counts are of this process's shard. */
export interface SimulationReport {
  /** Devices this run simulated (its shard of the fleet). */
  devices: number;
  /** Devices that had a credential (from the store or the OpenAPI). */
  provisioned: number;
  /** Devices that got a CONNACK 0 at least once. */
  connected: number;
  /** Provisioned devices that tried and never connected. */
  failedConnects: number;
  /** `connected` divided by the time from the first CONNECT sent to the last first-CONNACK received. */
  connectRatePerSec: number;
  /** From opening the TCP connection to CONNACK 0. */
  connectLatencyMs: LatencySummary;
  /** PUBLISH packets written. */
  published: number;
  /** PUBACKs received (QoS 1). */
  acked: number;
  /** Messages received back by subscribing devices. */
  delivered: number;
  /** `published` divided by the time from the first to the last publish. */
  publishRatePerSec: number;
  /** From the send time in the payload to its arrival at the subscriber. */
  e2eLatencyMs: LatencySummary;
  /** Failures by error code (one device may count several times, once per attempt). */
  errors: Record<string, number>;
  /** Sessions re-established after the broker dropped them. */
  reconnects: number;
  /** Largest resident set size of this process (not of an embedded emulator, which runs in its own process). */
  peakRssMB: number;
  /** The whole run: target start, provisioning, connecting, publishing, draining and disconnecting. */
  elapsedMs: number;
}

/** A live view of a run, for progress displays. */
export interface SimulationProgress {
  phase: 'starting' | 'provisioning' | 'connecting' | 'publishing' | 'draining' | 'disconnecting' | 'done';
  devices: number;
  provisioned: number;
  /** Connected right now. */
  online: number;
  failedConnects: number;
  published: number;
  delivered: number;
  /** Sum of all error counts. */
  errors: number;
  /** Messages published per second since the previous progress call. */
  messagesPerSec: number;
  elapsedMs: number;
}

function newHistogram(): RecordableHistogram {
  return createHistogram({ lowest: 1, highest: 3_600_000_000, figures: 3 });
}

function toMs(micros: number): number {
  return Math.round(micros) / 1_000;
}

/** p50/p95/p99/max of a histogram of microseconds, in ms. */
export function summarize(histogram: RecordableHistogram): LatencySummary {
  if (histogram.count === 0) return { p50: null, p95: null, p99: null, max: null };
  return {
    p50: toMs(histogram.percentile(50)),
    p95: toMs(histogram.percentile(95)),
    p99: toMs(histogram.percentile(99)),
    max: toMs(histogram.max),
  };
}

/** Events per second over a window in ms; 0 when the window is empty or has fewer than two events. */
export function ratePerSec(count: number, fromMs: number | undefined, toMsTime: number | undefined): number {
  if (fromMs === undefined || toMsTime === undefined || count < 2 || toMsTime <= fromMs) return 0;
  return Math.round((count / ((toMsTime - fromMs) / 1_000)) * 10) / 10;
}

/**
 * The counters of one run. Every device writes here; nothing is kept per message except histogram buckets, so
 * memory does not grow with the run's length.
 */
export class SimulationMetrics {
  devices = 0;
  provisioned = 0;
  connected = 0;
  online = 0;
  failedConnects = 0;
  published = 0;
  acked = 0;
  delivered = 0;
  reconnects = 0;
  firstConnectAt: number | undefined;
  lastConnackAt: number | undefined;
  firstPublishAt: number | undefined;
  lastPublishAt: number | undefined;
  readonly connectLatency = newHistogram();
  readonly e2eLatency = newHistogram();
  readonly #errors = new Map<string, number>();
  #errorTotal = 0;

  /** Count one failure under its code. */
  error(code: string): void {
    this.#errors.set(code, (this.#errors.get(code) ?? 0) + 1);
    this.#errorTotal += 1;
  }

  /** Count of one error code. */
  errorCount(code: string): number {
    return this.#errors.get(code) ?? 0;
  }

  get errorTotal(): number {
    return this.#errorTotal;
  }

  /** A CONNECT was written at `now`. */
  connectSent(now: number): void {
    this.firstConnectAt ??= now;
  }

  /** A device's first CONNACK 0, `latencyMs` after it opened its connection. */
  firstConnack(now: number, latencyMs: number): void {
    this.connected += 1;
    this.lastConnackAt = now;
    this.connectLatency.record(Math.max(1, Math.round(latencyMs * 1_000)));
  }

  /** A PUBLISH was written at `now`. */
  publishSent(now: number): void {
    this.published += 1;
    this.firstPublishAt ??= now;
    this.lastPublishAt = now;
  }

  /** A message came back `latencyMs` after it was sent. */
  deliveredAfter(latencyMs: number): void {
    this.delivered += 1;
    this.e2eLatency.record(Math.max(1, Math.round(latencyMs * 1_000)));
  }

  /** The report; `elapsedMs` is the whole run. */
  report(elapsedMs: number): SimulationReport {
    return {
      devices: this.devices,
      provisioned: this.provisioned,
      connected: this.connected,
      failedConnects: this.failedConnects,
      connectRatePerSec: ratePerSec(this.connected, this.firstConnectAt, this.lastConnackAt),
      connectLatencyMs: summarize(this.connectLatency),
      published: this.published,
      acked: this.acked,
      delivered: this.delivered,
      publishRatePerSec: ratePerSec(this.published, this.firstPublishAt, this.lastPublishAt),
      e2eLatencyMs: summarize(this.e2eLatency),
      errors: Object.fromEntries([...this.#errors].sort(([a], [b]) => a.localeCompare(b))),
      reconnects: this.reconnects,
      peakRssMB: peakRssMB(),
      elapsedMs: Math.round(elapsedMs),
    };
  }
}

/** The largest RSS this process has had, in MB (from `getrusage`, so a short peak between samples is not missed). */
export function peakRssMB(): number {
  // maxRSS is in kilobytes.
  return Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10;
}

function latencyText(l: LatencySummary): string {
  return l.p50 === null ? 'n/a' : `p50 ${l.p50} ms, p95 ${l.p95} ms, p99 ${l.p99} ms, max ${l.max} ms`;
}

/** The short text summary printed on stderr at the end of a run. */
export function formatReport(report: SimulationReport): string {
  const errors = Object.entries(report.errors);
  return [
    `Simulated ${report.devices} devices in ${(report.elapsedMs / 1_000).toFixed(1)} s (peak RSS ${report.peakRssMB} MB)`,
    `  provisioned ${report.provisioned}, connected ${report.connected}, failed connects ${report.failedConnects}, reconnects ${report.reconnects}`,
    `  connect rate ${report.connectRatePerSec}/s; connect latency ${latencyText(report.connectLatencyMs)}`,
    `  published ${report.published}, acked ${report.acked}, delivered ${report.delivered}; publish rate ${report.publishRatePerSec}/s`,
    `  end-to-end latency ${latencyText(report.e2eLatencyMs)}`,
    `  errors: ${errors.length === 0 ? 'none' : errors.map(([code, n]) => `${code} ${n}`).join(', ')}`,
    '',
  ].join('\n');
}
