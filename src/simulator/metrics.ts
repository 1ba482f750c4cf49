import { type Clock, systemClock } from './clock.js';
import { encodeHistogram, newLatencyHistogram, recordMs, summarizeHistogram } from './histogram.js';
import { type BrokerLoss, type FaultReport, type LatencySummary, REPORT_FORMAT, type ReportIdentity, type SimulationReport, defaultIdentity } from './report-format.js';
import type { MessageCounts } from './ledger.js';
import { SeriesRecorder } from './series.js';

export type { LatencySummary, SimulationReport } from './report-format.js';

/** A live view of a run, for progress displays. */
export interface SimulationProgress {
  phase: 'starting' | 'provisioning' | 'waiting' | 'connecting' | 'publishing' | 'draining' | 'disconnecting' | 'done';
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

/** Events per second over a window in ms; 0 when the window is empty or has fewer than two events. */
export function ratePerSec(count: number, fromMs: number | undefined, toMsTime: number | undefined): number {
  if (fromMs === undefined || toMsTime === undefined || count < 2 || toMsTime <= fromMs) return 0;
  return Math.round((count / ((toMsTime - fromMs) / 1_000)) * 10) / 10;
}

/** Where a run's events fall in wall-clock time: its monotonic clock and the epoch time at one instant of it. */
export interface MetricsTime {
  clock: Clock;
  /** Epoch ms at `clock.now()` when the metrics were created. @default Date.now() */
  epochMs?: number;
}

/**
 * The counters of one run. Every device writes here; nothing is kept per message except histogram buckets and
 * per-second bins, so memory does not grow with the traffic.
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
  /** Credentials asked for again after a refusal (the recovery ladder). */
  credentialRefetches = 0;
  /** Epoch ms of the first CONNECT and the last first-CONNACK, and of the first and last PUBLISH. */
  firstConnectAt: number | undefined;
  lastConnackAt: number | undefined;
  firstPublishAt: number | undefined;
  lastPublishAt: number | undefined;
  readonly connectLatency = newLatencyHistogram();
  readonly e2eLatency = newLatencyHistogram();
  readonly #errors = new Map<string, number>();
  #errorTotal = 0;
  readonly #clock: Clock;
  readonly #monoOrigin: number;
  /** Epoch ms when the metrics were created: the run's start. */
  readonly startEpochMs: number;
  /** This process's RSS when the metrics (the run) started, in MB: the shard's base, for its memory per device. */
  readonly baseRssMB: number;
  readonly #series: SeriesRecorder;
  /** When (the run's clock) the last online device went offline; `undefined` while one is online, or before any was. */
  #offlineSince: number | undefined;
  /** When (the run's clock) an attempt last failed to reach the broker at all. */
  #unreachableAt: number | undefined;
  /** The run lost its broker for good (see {@link BrokerLoss}): set once, by the run. */
  brokerLost: BrokerLoss | undefined;

  constructor(time: MetricsTime = { clock: systemClock }) {
    this.#clock = time.clock;
    this.#monoOrigin = time.clock.now();
    this.startEpochMs = time.epochMs ?? Date.now();
    this.baseRssMB = Math.round((process.memoryUsage().rss / (1024 * 1024)) * 10) / 10;
    this.#series = new SeriesRecorder(this.startEpochMs);
  }

  /** Epoch ms of a time on the run's clock. */
  epochOf(monoMs: number): number {
    return this.startEpochMs + (monoMs - this.#monoOrigin);
  }

  #epochNow(): number {
    return this.epochOf(this.#clock.now());
  }

  /** Count one failure under its code. */
  error(code: string): void {
    if (UNREACHABLE.has(code)) this.#unreachableAt = this.#clock.now();
    this.#errors.set(code, (this.#errors.get(code) ?? 0) + 1);
    this.#errorTotal += 1;
    this.#series.error(code, this.#epochNow());
  }

  /** Count of one error code. */
  errorCount(code: string): number {
    return this.#errors.get(code) ?? 0;
  }

  get errorTotal(): number {
    return this.#errorTotal;
  }

  /** A CONNECT was written at `now` (the run's clock). */
  connectSent(now: number): void {
    this.firstConnectAt ??= this.epochOf(now);
  }

  /** A device's first CONNACK 0 at `now`, `latencyMs` after it opened its connection. */
  firstConnack(now: number, latencyMs: number): void {
    const at = this.epochOf(now);
    this.connected += 1;
    this.lastConnackAt = at;
    recordMs(this.connectLatency, latencyMs);
    this.#series.count('connects', at);
  }

  /** A device went online (CONNACK 0) or offline (its socket closed). */
  wentOnline(): void {
    this.online += 1;
    this.#offlineSince = undefined;
    this.#series.online(1, this.#epochNow());
  }

  wentOffline(): void {
    this.online -= 1;
    if (this.online === 0) this.#offlineSince = this.#clock.now();
    this.#series.online(-1, this.#epochNow());
  }

  /**
   * Has the run lost its broker for good, by now? Yes when devices had connected, none is online, none has been for
   * `afterMs`, and an attempt to reach the broker failed since the last one went offline (the devices were trying,
   * not refused). `undefined` otherwise.
   */
  judgeBrokerLost(afterMs: number): BrokerLoss | undefined {
    const since = this.#offlineSince;
    if (this.connected === 0 || this.online > 0 || since === undefined || this.#unreachableAt === undefined || this.#unreachableAt < since) return undefined;
    const offForMs = this.#clock.now() - since;
    if (offForMs < afterMs) return undefined;
    return {
      at: new Date(this.epochOf(since)).toISOString(),
      embeddedEmulator: false,
      cause: `No device could reach the broker for the last ${(offForMs / 1_000).toFixed(1)} s of the run: all ${this.connected} that had connected lost their sessions by ${new Date(this.epochOf(since)).toISOString()}, and every attempt since failed (${this.errorCount('BrokerUnreachable')} BrokerUnreachable, ${this.errorCount('ConnectTimeout')} ConnectTimeout in all)`,
    };
  }

  /** A device got another credential from its ladder after the broker refused its own. */
  credentialRefetched(): void {
    this.credentialRefetches += 1;
  }

  /** A PUBLISH was written at `now`. */
  publishSent(now: number): void {
    const at = this.epochOf(now);
    this.published += 1;
    this.firstPublishAt ??= at;
    this.lastPublishAt = at;
    this.#series.count('published', at);
  }

  /** A PUBACK arrived. */
  puback(): void {
    this.acked += 1;
    this.#series.count('acked', this.#epochNow());
  }

  /** A message came back `latencyMs` after it was sent; `now` when the caller has just read the clock. */
  deliveredAfter(latencyMs: number, now = this.#clock.now()): void {
    this.delivered += 1;
    recordMs(this.e2eLatency, latencyMs);
    this.#series.count('delivered', this.epochOf(now));
  }

  /**
   * The report; `elapsedMs` is the whole run. `identity` says what ran (parameters, shard); without it, the
   * default settings against the embedded emulator.
   */
  report(elapsedMs: number, identity: ReportIdentity = defaultIdentity()): SimulationReport {
    const peak = peakRssMB();
    const window = (from: number | undefined, to: number | undefined): [number, number] | null =>
      from === undefined || to === undefined ? null : [Math.round(from), Math.round(to)];
    const startedAt = new Date(this.startEpochMs).toISOString();
    return {
      format: REPORT_FORMAT,
      run: { ...identity.run, startedAt: identity.run.startedAt ?? startedAt },
      shards: [
        {
          index: identity.shard.index,
          count: identity.shard.count,
          devices: this.devices,
          connected: this.connected,
          startedAt,
          elapsedMs: Math.round(elapsedMs),
          peakRssMB: peak,
          baseRssMB: this.baseRssMB,
          host: identity.host,
          localAddresses: identity.localAddresses,
        },
      ],
      devices: this.devices,
      provisioned: this.provisioned,
      connected: this.connected,
      failedConnects: this.failedConnects,
      connectRatePerSec: ratePerSec(this.connected, this.firstConnectAt, this.lastConnackAt),
      connectLatencyMs: summarizeHistogram(this.connectLatency),
      published: this.published,
      acked: this.acked,
      delivered: this.delivered,
      publishRatePerSec: ratePerSec(this.published, this.firstPublishAt, this.lastPublishAt),
      e2eLatencyMs: summarizeHistogram(this.e2eLatency),
      errors: Object.fromEntries([...this.#errors].sort(([a], [b]) => a.localeCompare(b))),
      reconnects: this.reconnects,
      credentialRefetches: this.credentialRefetches,
      peakRssMB: peak,
      elapsedMs: Math.round(elapsedMs),
      windows: {
        connect: window(this.firstConnectAt, this.lastConnackAt),
        publish: window(this.firstPublishAt, this.lastPublishAt),
      },
      histograms: {
        connectLatencyUs: encodeHistogram(this.connectLatency),
        e2eLatencyUs: encodeHistogram(this.e2eLatency),
      },
      series: this.#series.series(this.startEpochMs + elapsedMs),
      ...(this.brokerLost === undefined ? {} : { brokerLost: this.brokerLost }),
    };
  }
}

/** Failures that mean the broker could not be reached at all (as opposed to a refusal). */
const UNREACHABLE: ReadonlySet<string> = new Set(['BrokerUnreachable', 'ConnectTimeout', 'HostNotFound']);

/** The largest RSS this process has had, in MB (from `getrusage`, so a short peak between samples is not missed). */
export function peakRssMB(): number {
  // maxRSS is in kilobytes.
  return Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10;
}

function latencyText(l: LatencySummary): string {
  return l.p50 === null ? 'n/a' : `p50 ${l.p50} ms, p95 ${l.p95} ms, p99 ${l.p99} ms, max ${l.max} ms`;
}

/** The short text summary printed on stderr at the end of a run (or of `report merge`). */
export function formatReport(report: SimulationReport): string {
  const errors = Object.entries(report.errors);
  const shards = report.shards.length === 1 && report.shards[0]?.count === 1 ? '' : `, shard${report.shards.length > 1 ? 's' : ''} ${report.shards.map((s) => `${s.index}/${s.count}`).join(', ')}`;
  return [
    ...(report.interrupted ? ['INTERRUPTED: the run was stopped before it finished; the counts below are partial'] : []),
    ...(report.brokerLost ? [`BROKER LOST: ${report.brokerLost.cause}`] : []),
    `Simulated ${report.devices} ${report.run.protocol === 5 ? 'MQTT 5 ' : ''}devices in ${(report.elapsedMs / 1_000).toFixed(1)} s (peak RSS ${report.peakRssMB} MB${shards}), started ${report.run.startedAt}`,
    `  provisioned ${report.provisioned}, connected ${report.connected}, failed connects ${report.failedConnects}, reconnects ${report.reconnects}`,
    `  connect rate ${report.connectRatePerSec}/s; connect latency ${latencyText(report.connectLatencyMs)}`,
    `  published ${report.published}, acked ${report.acked}, delivered ${report.delivered}; publish rate ${report.publishRatePerSec}/s`,
    report.run.subscribe
      ? `  end-to-end latency ${latencyText(report.e2eLatencyMs)}`
      : '  end-to-end latency not measured (devices publish without subscribing; add --subscribe to measure it)',
    `  errors: ${errors.length === 0 ? 'none' : errors.map(([code, n]) => `${code} ${n}`).join(', ')}`,
    ...gameDayLines(report),
    '',
  ].join('\n');
}

function seconds(ms: number | null): string {
  return ms === null ? 'n/a' : `${(ms / 1_000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/** Messages still held by devices not back online at the end, and still queued at the broker, when there are. */
function heldText(m: MessageCounts): string {
  const held = m.held > 0 ? `, ${m.held} held (undelivered at the end by devices still offline or awaiting their PUBACK)` : '';
  const queued = m.queued > 0 ? `, ${m.queued} queued (still in the backend subscriber's queue at the broker at the end)` : '';
  const maybe = m.maybeQueued > 0 ? `, ${m.maybeQueued} maybe queued (acknowledged, undelivered, and the broker's queue could not be read)` : '';
  return `${held}${queued}${maybe}`;
}

/** A fault's held and queued messages, when there are. */
function countText(m: MessageCounts): string {
  return `${m.held > 0 ? `, ${m.held} held` : ''}${m.queued > 0 ? `, ${m.queued} queued` : ''}${m.maybeQueued > 0 ? `, ${m.maybeQueued} maybe queued` : ''}`;
}

function messagesText(m: MessageCounts): string {
  return `${m.published} published, ${m.accepted} accepted, ${m.acked} acknowledged, ${m.delivered} delivered, ${m.lost} lost${heldText(m)}, ${m.duplicated} duplicated${m.refused > 0 ? `, ${m.refused} refused` : ''}`;
}

/**
 * The devices a fault left offline, each with what it was doing at the end; times in seconds from the start of
 * connecting, as the fault's own (its planned start plus how far after its actual start).
 */
function notHealedLines(f: FaultReport): string[] {
  const listed = f.notHealedDevices ?? [];
  if (listed.length === 0 || f.startedAt === null) return [];
  const started = Date.parse(f.startedAt);
  const at = (time: string): string => seconds(f.plannedAtMs + Date.parse(time) - started);
  const lines = listed.map((d) => {
    const tried = d.connects === 0 ? 'no CONNECT since' : `${d.connects} CONNECT${d.connects === 1 ? '' : 's'} since, none accepted (the last at ${at(d.lastConnectAt ?? d.lostAt)})`;
    const waiting = d.nextConnectAt === null ? '' : `; its backoff had it wait until ${at(d.nextConnectAt)}`;
    const held = d.held === null || d.held === 0 ? '' : `; holding ${d.held} message${d.held === 1 ? '' : 's'}`;
    return `      not healed: ${d.clientId} lost its session at ${at(d.lostAt)}, ${tried}${waiting}${held}`;
  });
  if (f.notHealed > listed.length) lines.push(`      … and ${f.notHealed - listed.length} more not healed (the report lists the first ${listed.length})`);
  return lines;
}

/** What a game day adds to the summary: the client, the backend subscriber's count, each fault. */
function gameDayLines(report: SimulationReport): string[] {
  const lines: string[] = [];
  if (report.run.client === 'connector') lines.push('  devices: the library\'s connector (--client connector)');
  if (report.credentialRefetches) lines.push(`  credentials fetched again after a refusal: ${report.credentialRefetches}`);
  if (report.delivery) lines.push(`  backend subscriber: ${messagesText(report.delivery)}`);
  const faults = report.faults ?? [];
  if (faults.length > 0) lines.push(`  game day ${JSON.stringify(report.run.scenario?.name ?? '')}, ${faults.length} fault${faults.length === 1 ? '' : 's'} (time to heal from each fault's end; a revoke's from each device's own loss):`);
  for (const f of faults) {
    const when = f.startedAt === null ? 'never started' : `at ${seconds(f.plannedAtMs)}${f.plannedForMs > 0 ? ` for ${seconds(f.plannedForMs)}` : ''}`;
    const heal = f.hit === 0 ? '' : `; heal p50 ${seconds(f.healMs.p50)}, p99 ${seconds(f.healMs.p99)}, max ${seconds(f.healMs.max)}`;
    // Devices offline when it started had no session for it to take.
    const offline = f.offlineAtStart === 0 ? '' : ` (${f.offlineAtStart} offline at its start)`;
    const errors = Object.entries(f.errors);
    lines.push(
      `    ${f.id} ${f.kind}${f.label === null ? '' : ` (${f.label})`} ${when}: hit ${f.hit} of ${f.targeted}${offline}, healed ${f.healed}, not healed ${f.notHealed}${heal}` +
        `${f.messages === null ? '' : `; messages ${f.messages.published} published, ${f.messages.lost} lost${countText(f.messages)}, ${f.messages.duplicated} duplicated`}` +
        `${errors.length === 0 ? '' : `; its own actions failed: ${errors.map(([code, n]) => `${code} ${n}`).join(', ')}`}`,
      ...notHealedLines(f),
    );
  }
  return lines;
}
