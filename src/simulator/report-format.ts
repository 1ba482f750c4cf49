import { hostname } from 'node:os';
import { VERSION } from '../version.js';
import type { EmulatorDelta } from './emulator-controls.js';
import type { RelayStats } from './fault-relay.js';
import type { MessageCounts } from './ledger.js';
import { type ResolvedSettings, resolveSettings } from './options.js';
import type { ScenarioIdentity } from './scenario.js';
import type { ReportSeries } from './series.js';

/** The `format` of every report this version writes; `report merge` reads only this one. */
export const REPORT_FORMAT = 'apsaramq-device/simulation-report@1';

/** Percentiles of a latency, in milliseconds (microsecond resolution); all `null` when nothing was measured. */
export interface LatencySummary {
  p50: number | null;
  p95: number | null;
  p99: number | null;
  max: number | null;
}

/** What a run was: enough to tell two saved reports apart and to refuse merging shards of different runs. */
export interface RunParameters {
  /** apsaramq-device version that ran it. */
  version: string;
  /** Wall-clock start of the run (of the earliest shard, in a merged report), ISO 8601. */
  startedAt: string;
  /** The `--start-at` every shard waited for before connecting, ISO 8601; `null` when none. */
  startAt: string | null;
  /** Devices in the whole fleet (all shards). */
  devices: number;
  groupId: string;
  /** CONNECTs per second, fleet-wide (0 = as fast as possible). */
  connectRate: number;
  publishIntervalMs: number;
  qos: 0 | 1;
  payloadSize: number;
  /** The topic template. */
  topic: string;
  durationMs: number;
  subscribe: boolean;
  keepalive: number;
  connectAttempts: number;
  connectTimeoutMs: number;
  /** MQTT protocol level of the devices: 4 (3.1.1) or 5 (MQTT 5). */
  protocol: 4 | 5;
  /** What it ran against: an emulator the run started itself (one per shard), or a broker given by URL. */
  target: { kind: 'embedded-emulator' | 'broker'; brokerUrl: string | null; instanceId: string | null };
  /**
   * What the devices were: `raw` (the simulator's raw-socket device, the default) or `connector` (each a real
   * `DeviceConnection` of the library). Absent in reports of versions before it was recorded (they were `raw`).
   */
  client?: SimulatedClient;
  /** A backend subscriber counted deliveries, losses and duplicates (`delivery`). Absent: no (older versions). */
  consumer?: boolean;
  /** The game-day scenario the run played (`--scenario`), or `null`. Absent: none (older versions). */
  scenario?: ScenarioIdentity | null;
}

/** What the simulated devices are: the raw-socket device, or the library's connector. */
export type SimulatedClient = 'raw' | 'connector';

/**
 * One fault a game day played (one occurrence: a restart with `count: 3` is three), in this report's shards: when it
 * started and ended, the devices it hit and how long each took to heal (from the fault's end to its first CONNACK 0
 * after its last loss), and what became of the messages of the devices it was aimed at.
 */
export interface FaultReport {
  /** `3` for the scenario's third fault, `3.2` for its second occurrence. */
  id: string;
  kind: string;
  label: string | null;
  /** Position of its fault in `run.scenario.faults` (0-based). */
  fault: number;
  /** When it was planned, ms from the start of connecting, and how long it lasts as planned. */
  plannedAtMs: number;
  plannedForMs: number;
  /** When it started and ended (the earliest start and latest end of the shards); `null` when it never started. */
  startedAt: string | null;
  endedAt: string | null;
  /** Devices it was aimed at. */
  targeted: number;
  /** Of those, devices that lost their session during it. */
  hit: number;
  /**
   * Of those, devices already offline when it started (not yet connected, or not back from an earlier fault) that it
   * did not hit: it had no session of theirs to take. `hit + offlineAtStart` is at most `targeted`; the rest were
   * online and kept their session. A report of an older version without it reads as 0.
   */
  offlineAtStart: number;
  /** Devices it hit that were back online by the end of the run, and those that were not. */
  healed: number;
  notHealed: number;
  /**
   * The first devices not healed (10, by fleet index; a merge keeps the first 10 of its shards'), each with what it
   * was doing at the end. Absent in reports of older versions.
   */
  notHealedDevices?: NotHealedDevice[];
  /** Time to heal of the healed devices, from the fault's end. */
  healMs: LatencySummary;
  /** The same, lossless: HdrHistogram compressed Base64 (V2) of microseconds. */
  healUs: string;
  /**
   * The targeted devices' messages from the fault's start (those still in flight then included) until each healed
   * (to the end of the run for a device not healed), or until the fault's window closed for devices it did not hit;
   * `null` without a backend subscriber.
   */
  messages: MessageCounts | null;
  /** Failures of the fault's own actions (a revoke call that failed, a control the emulator refused), by code. */
  errors: Record<string, number>;
}

/**
 * A device a fault hit that was not back online by the end of the run, and why: how many CONNECTs it tried since its
 * loss, and whether its reconnect backoff still had it waiting (the connector's grows to 60 s, with full jitter).
 */
export interface NotHealedDevice {
  clientId: string;
  /** Its fleet index. */
  index: number;
  /** When it lost its session. */
  lostAt: string;
  /** CONNECTs it started since, none accepted (the last may still have been awaiting its CONNACK at the end). */
  connects: number;
  /** When it started the last of them; `null`: none. */
  lastConnectAt: string | null;
  /** When its backoff would have let it try again, when it was waiting at the end (later than the end); `null`: it was not. */
  nextConnectAt: string | null;
  /** Messages it still held at the end, undelivered (its `messages.held` share); `null` without a backend subscriber. */
  held: number | null;
}

/** What became of every message of the run, by the backend subscriber's count (see `MessageLedger`). */
export interface DeliveryReport extends MessageCounts {
  /** Messages the backend subscriber received that name no message of these devices (another run's, another shard's). */
  foreign: number;
}

/** One shard of a report (a run not split into shards is shard 1 of 1). */
export interface ShardRecord {
  /** 1-based. */
  index: number;
  count: number;
  devices: number;
  connected: number;
  /** Wall-clock start of this shard's process run, ISO 8601. */
  startedAt: string;
  elapsedMs: number;
  /** Largest RSS of this shard's process. */
  peakRssMB: number;
  /**
   * RSS of this shard's process when its run started (before its emulator, provisioning and devices), so
   * `peakRssMB - baseRssMB` is what the run added. Absent in reports of versions before it was recorded.
   */
  baseRssMB?: number;
  /** Host name of the machine that ran it. */
  host: string;
  /** Source addresses its devices used (`--local-address`), `null` for the system's choice. */
  localAddresses: string[] | null;
}

/**
 * The result of a simulation run (what `--json` prints and `--report` writes), or of several shards merged by
 * `report merge` (then the counts are the fleet's, and `shards` lists every shard).
 */
export interface SimulationReport {
  /** {@link REPORT_FORMAT}. */
  format: string;
  run: RunParameters;
  shards: ShardRecord[];
  /** Devices this report covers (its shards of the fleet). */
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
  /** Largest resident set size of this process (of the largest shard's process, merged); an embedded emulator runs in its own process and is not counted. */
  peakRssMB: number;
  /** The whole run: target start, provisioning, connecting, publishing, draining and disconnecting (merged: earliest start to latest end). */
  elapsedMs: number;
  /** Epoch ms of the first CONNECT and the last first CONNACK, and of the first and last PUBLISH; `null` when none. */
  windows: { connect: [number, number] | null; publish: [number, number] | null };
  /** The latency distributions, lossless: HdrHistogram compressed Base64 (V2) of microseconds. */
  histograms: { connectLatencyUs: string; e2eLatencyUs: string };
  /** Per-second counters on wall-clock seconds. */
  series: ReportSeries;
  /** Present and true when the run was stopped by SIGINT/SIGTERM before it finished (its counts are partial). */
  interrupted?: boolean;
  /**
   * Present when the run lost its broker for good (see {@link BrokerLoss}); the run then fails. In a merged report,
   * the earliest loss of its shards.
   */
  brokerLost?: BrokerLoss;
  /** Credentials devices asked for again after the broker refused theirs (the recovery ladder), all devices together. */
  credentialRefetches?: number;
  /** A game day (`--scenario`): every fault played, in order of start. */
  faults?: FaultReport[];
  /** With a backend subscriber: what became of every message. */
  delivery?: DeliveryReport;
  /**
   * Against an emulator: what changed in its stats during the run (OpenAPI calls by action, refusals by the broker's
   * rules). Merged: added for embedded emulators (one per shard), the largest of each for a shared one.
   */
  emulator?: EmulatorDelta;
  /** With network faults: what the fault relay did. */
  relay?: RelayStats;
}

/**
 * A broker lost for good during a run: the embedded emulator's process exited (the run stops at once), or, against a
 * broker given by URL, no device was online and none could reach it for the last `BROKER_LOST_MS` of the publishing
 * phase.
 */
export interface BrokerLoss {
  /** When: the emulator's exit, or the moment the last device went offline; ISO 8601. */
  at: string;
  /** True when it was the run's own embedded emulator (whose process exited). */
  embeddedEmulator: boolean;
  /** What happened, in words (the run's error message). */
  cause: string;
}

/** Who made a report: the run's parameters and this process's shard. */
export interface ReportIdentity {
  run: Omit<RunParameters, 'startedAt'> & { startedAt?: string };
  shard: { index: number; count: number };
  host: string;
  localAddresses: string[] | null;
}

/** What a run's target looks like in its report: the broker's scheme, host and port only (never a login). */
export function describeTarget(target: { brokerUrl: string; provisioner: { instanceId?: string } } | undefined): RunParameters['target'] {
  if (!target) return { kind: 'embedded-emulator', brokerUrl: null, instanceId: null };
  let brokerUrl: string;
  try {
    const url = new URL(target.brokerUrl);
    brokerUrl = `${url.protocol}//${url.host}`;
  } catch {
    brokerUrl = '(unparsable)';
  }
  return { kind: 'broker', brokerUrl, instanceId: target.provisioner.instanceId ?? null };
}

/** The identity of a run from its resolved settings. */
export function runIdentity(
  settings: ResolvedSettings,
  target: RunParameters['target'],
  extra: { startAt?: string | null; localAddresses?: string[] | null; client?: SimulatedClient; consumer?: boolean; scenario?: ScenarioIdentity | null } = {},
): ReportIdentity {
  return {
    run: {
      version: VERSION,
      startAt: extra.startAt ?? null,
      devices: settings.devices,
      groupId: settings.groupId,
      connectRate: settings.connectRate,
      publishIntervalMs: settings.publishIntervalMs,
      qos: settings.qos,
      payloadSize: settings.payloadSize,
      topic: settings.topic,
      durationMs: settings.durationMs,
      subscribe: settings.subscribe,
      keepalive: settings.keepalive,
      connectAttempts: settings.connectAttempts,
      connectTimeoutMs: settings.connectTimeoutMs,
      protocol: settings.protocol,
      target,
      client: extra.client ?? 'raw',
      consumer: extra.consumer ?? false,
      scenario: extra.scenario ?? null,
    },
    shard: { index: settings.shard.index, count: settings.shard.count },
    host: hostname(),
    localAddresses: extra.localAddresses ?? null,
  };
}

/** The identity of the default settings against the embedded emulator (for metrics built outside a run). */
export function defaultIdentity(): ReportIdentity {
  return runIdentity(resolveSettings({}), describeTarget(undefined));
}
