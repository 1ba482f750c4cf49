import { MAX_CLIENT_ID_LENGTH, assertGroupId, clientIdProblem } from '../credential.js';
import { ValidationError } from '../errors.js';
import { PROTOCOL_LEVELS, describeProtocolLevel } from '../mqtt/protocol.js';
import { optionChecks } from '../util/option-checks.js';
import { parseLocalAddresses } from './local-address.js';

/** Largest payload the service accepts (reference §5.7); larger messages are discarded. */
export const MAX_PAYLOAD_SIZE = 64 * 1024;
/** Longest topic, parent and subtopics together (reference §5.6). */
export const MAX_TOPIC_LENGTH = 64;
/** Most devices one fleet simulates (all shards together). */
export const MAX_DEVICES = 1_000_000;
/** Most shards one fleet is split into (`--shard I/N`, and `--processes` within it): what a report merge accepts. */
export const MAX_SHARDS = 10_000;
/** Bytes at the start of every payload: the send time, float64 big-endian ms since the epoch. */
export const PAYLOAD_HEADER_SIZE = 8;

/**
 * Defaults of a simulation. The CLI's no-flag run (`npm start`) is exactly these against the embedded emulator.
 */
export const SIMULATION_DEFAULTS = Object.freeze({
  devices: 200,
  groupId: 'GID_sim',
  /** Devices starting their CONNECT per second, fleet-wide; 0 = as fast as possible. */
  connectRate: 100,
  /** 0 = connect only, never publish. */
  publishIntervalMs: 1_000,
  qos: 1 as 0 | 1,
  payloadSize: 64,
  /** `%i` keeps every device on its own topic, so `subscribe` receives each message once. */
  topic: 'sim/%i',
  durationMs: 20_000,
  subscribe: false,
  /** OpenAPI calls per second while provisioning: the service's default account limit. */
  apiQps: 500,
  apiConcurrency: 64,
  /** CONNECTs waiting for their CONNACK at once; beyond this a listen backlog overflows and SYNs are retried after 1 s. */
  maxConnectsInFlight: 500,
  connectTimeoutMs: 10_000,
  /** Seconds; what the official demos use. */
  keepalive: 90,
  /** Attempts per device for a retryable connect failure (refused TCP, timeout). */
  connectAttempts: 3,
  progressIntervalMs: 1_000,
  /** Longest wait after the run for outstanding PUBACKs and deliveries. */
  drainTimeoutMs: 5_000,
  /** Longest wait after the run for the backend subscriber's backlog at the broker (backlog.ts). */
  backlogTimeoutMs: 60_000,
  /** MQTT 3.1.1, what the official demos speak. */
  protocol: 4 as 4 | 5,
  /** The raw-socket device: small enough for 10,000 per process. */
  client: 'raw' as 'raw' | 'connector',
});

/** A slice of the fleet: shard `index` (1-based) of `count`. */
export interface Shard {
  index: number;
  count: number;
}

/** Parse `I/N` (1-based, as Jest and Playwright number shards). Throws ValidationError `InvalidOption`. */
export function parseShard(text: string): Shard {
  const match = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!match) throw new ValidationError('InvalidOption', `Shard ${JSON.stringify(text)} must look like I/N, e.g. 1/4`);
  const shard = { index: Number(match[1]), count: Number(match[2]) };
  checkShard(shard);
  return shard;
}

function checkShard(shard: Shard): void {
  const ok = Number.isInteger(shard.count) && Number.isInteger(shard.index) && shard.count >= 1 && shard.index >= 1 && shard.index <= shard.count;
  if (!ok) throw new ValidationError('InvalidOption', `Shard ${shard.index}/${shard.count} must have 1 <= I <= N`);
  if (shard.count > MAX_SHARDS) throw new ValidationError('InvalidOption', `Shard ${shard.index}/${shard.count}: a fleet is split into at most ${MAX_SHARDS} shards`);
}

/**
 * The device indexes of a shard: a contiguous block, so shards are disjoint, cover the fleet, and differ in size
 * by at most one. Returns `[start, end)`.
 */
export function shardRange(devices: number, shard: Shard): [number, number] {
  checkShard(shard);
  return [Math.floor((devices * (shard.index - 1)) / shard.count), Math.floor((devices * shard.index) / shard.count)];
}

/** The ClientId of device `index` of a group: `<groupId>@@@sim-<index>`. */
export function simulatedClientId(groupId: string, index: number): string {
  return `${groupId}@@@sim-${index}`;
}

/** A parsed topic template: literal parts and placeholders. */
export type TopicTemplate = ReadonlyArray<string | { readonly field: 'clientId' | 'index' | 'group' }>;

const PLACEHOLDERS = { c: 'clientId', i: 'index', g: 'group' } as const;

/**
 * Parse a topic template: `%c` ClientId, `%i` device index, `%g` GroupId, `%%` a literal `%`.
 * Throws ValidationError `InvalidOption` for an unknown placeholder, a wildcard, or an empty template.
 */
export function parseTopicTemplate(template: string): TopicTemplate {
  if (template.length === 0) throw new ValidationError('InvalidOption', 'The topic template is empty');
  if (/[+#\0]/.test(template)) throw new ValidationError('InvalidOption', `The topic template ${JSON.stringify(template)} must not hold +, # or NUL: devices publish to it`);
  const parts: Array<string | { field: 'clientId' | 'index' | 'group' }> = [];
  let literal = '';
  for (let i = 0; i < template.length; i++) {
    const ch = template[i] as string;
    if (ch !== '%') {
      literal += ch;
      continue;
    }
    const next = template[i + 1];
    i++;
    if (next === '%') {
      literal += '%';
      continue;
    }
    const field = next === undefined ? undefined : PLACEHOLDERS[next as keyof typeof PLACEHOLDERS];
    if (!field) throw new ValidationError('InvalidOption', `The topic template ${JSON.stringify(template)} has unknown placeholder %${next ?? ''}; use %c, %i, %g or %%`);
    if (literal) parts.push(literal);
    literal = '';
    parts.push({ field });
  }
  if (literal) parts.push(literal);
  return parts;
}

/** Is the topic different for every device (it has `%c` or `%i`)? */
export function isPerDeviceTemplate(template: TopicTemplate): boolean {
  return template.some((p) => typeof p !== 'string' && p.field !== 'group');
}

/** The topic of one device. */
export function expandTopic(template: TopicTemplate, device: { clientId: string; index: number; group: string }): string {
  let topic = '';
  for (const part of template) {
    if (typeof part === 'string') topic += part;
    else if (part.field === 'clientId') topic += device.clientId;
    else if (part.field === 'index') topic += String(device.index);
    else topic += device.group;
  }
  return topic;
}

/**
 * The filter that matches every topic a template makes: each level holding a placeholder becomes `+`.
 * @throws ValidationError `InvalidOption` when the first level (the parent topic) holds one: the service refuses a
 *   wildcard parent, so no subscriber can take the fleet's messages.
 */
export function fleetFilter(template: TopicTemplate, topic: string): string {
  const levels: string[] = [''];
  for (const part of template) {
    if (typeof part !== 'string') {
      levels[levels.length - 1] = '+';
      continue;
    }
    const pieces = part.split('/');
    pieces.forEach((piece, i) => {
      if (i > 0) levels.push('');
      if (levels[levels.length - 1] !== '+') levels[levels.length - 1] += piece;
    });
  }
  if (levels[0] === '+' || levels[0] === '') {
    throw new ValidationError('InvalidOption', `The topic template ${JSON.stringify(topic)} has a placeholder in its first level: the backend subscriber that counts deliveries subscribes to <parent>/+, and the service refuses a wildcard parent topic. Start the template with a parent topic, e.g. sim/%i`);
  }
  return levels.join('/');
}

/** Options of a simulation that are plain values (see {@link SIMULATION_DEFAULTS}). */
export interface SimulationSettings {
  /** Devices in the whole fleet (all shards). @default 200 */
  devices?: number;
  /** GroupId of every simulated ClientId. @default 'GID_sim' */
  groupId?: string;
  /** CONNECTs started per second by the whole fleet, paced and jittered; each shard takes its share. 0 = as fast as possible. @default 100 */
  connectRate?: number;
  /** Milliseconds between two publishes of one device; 0 = connect only. @default 1000 */
  publishIntervalMs?: number;
  /** @default 1 */
  qos?: 0 | 1;
  /** Bytes per message, at least 8 (the send time), at most 64 KB. @default 64 */
  payloadSize?: number;
  /** Topic template: `%c` ClientId, `%i` index, `%g` GroupId. @default 'sim/%i' */
  topic?: string;
  /** How long devices publish, counted from the start of connecting (the run lasts at least until every device has tried to connect). @default 20000 */
  durationMs?: number;
  /** Each device also subscribes to its own topic, so every message comes back and end-to-end latency is measured. @default false */
  subscribe?: boolean;
  /** Simulate only this slice of the fleet (`'I/N'` or `{index, count}`, 1-based). @default the whole fleet */
  shard?: Shard | string;
  /** OpenAPI calls per second while provisioning (also the embedded emulator's limit). @default 500 */
  apiQps?: number;
  /** OpenAPI calls in flight while provisioning. @default 64 */
  apiConcurrency?: number;
  /** CONNECTs awaiting a CONNACK at once. @default 500 */
  maxConnectsInFlight?: number;
  /** @default 10000 */
  connectTimeoutMs?: number;
  /** MQTT keepalive, seconds. @default 90 */
  keepalive?: number;
  /** Attempts per device for a retryable connect failure. @default 3 */
  connectAttempts?: number;
  /** How often `onProgress` is called, ms. @default 1000 */
  progressIntervalMs?: number;
  /** Longest wait for outstanding PUBACKs and deliveries after the publishing ends, ms. @default 5000 */
  drainTimeoutMs?: number;
  /**
   * Longest wait, after the devices disconnected, while the backend subscriber's backlog at the broker drains (a game
   * day's subscriber still missing messages, which a broker that paces offline delivery may still hold), ms; what is
   * still queued then counts as `queued`, not lost. Ctrl+C (the run's `signal`) ends it. @default 60000
   */
  backlogTimeoutMs?: number;
  /**
   * Source addresses the devices connect from, spread over them in turn: a list (`'127.0.0.2,127.0.0.3'` or an
   * array) or IPv4 ranges (`'127.0.0.2-127.0.0.9'`). Each address reaches one broker port over about 28,000
   * ephemeral ports; more addresses, more devices. @default the system's choice (one address)
   */
  localAddress?: string | readonly string[];
  /**
   * Wall-clock time at which connecting starts (after provisioning), so shards on several machines start together:
   * a `Date`, epoch ms, or an ISO 8601 string with a time zone. @default as soon as provisioning is done
   */
  startAt?: Date | number | string;
  /**
   * MQTT protocol level of the devices: 4 (MQTT 3.1.1) or 5 (MQTT 5: empty property blocks, Clean Start with
   * session expiry 0; refusals are counted with their reason code, e.g. `CredentialRejected:0x86`). @default 4
   */
  protocol?: 4 | 5;
  /**
   * What each device is: `raw`, the simulator's raw-socket device (a few KB each, for scale), or `connector`, a real
   * `DeviceConnection` of the library with its defaults (reconnect backoff, outbox, credential ladder), so a game day
   * measures what users ship. @default 'raw'
   */
  client?: 'raw' | 'connector';
  /**
   * A backend subscriber, connected to the broker directly in Signature mode (the account AccessKey), counts every
   * message by the device index and sequence in its payload: delivered, lost, duplicated (the report's `delivery`).
   * Needs a payload of at least 16 bytes and a topic template whose first level is literal. @default true with a
   * scenario, else false
   */
  consumer?: boolean;
}

/** {@link SimulationSettings} validated, with every default filled in and the shard resolved. */
export interface ResolvedSettings {
  readonly devices: number;
  readonly groupId: string;
  readonly connectRate: number;
  readonly publishIntervalMs: number;
  readonly qos: 0 | 1;
  readonly payloadSize: number;
  readonly topic: string;
  readonly topicTemplate: TopicTemplate;
  readonly durationMs: number;
  readonly subscribe: boolean;
  readonly shard: Shard;
  /** Device indexes of this shard, `[start, end)`. */
  readonly range: readonly [number, number];
  /** This shard's share of the connect rate. */
  readonly shardConnectRate: number;
  readonly apiQps: number;
  readonly apiConcurrency: number;
  readonly maxConnectsInFlight: number;
  readonly connectTimeoutMs: number;
  readonly keepalive: number;
  readonly connectAttempts: number;
  readonly progressIntervalMs: number;
  readonly drainTimeoutMs: number;
  readonly backlogTimeoutMs: number;
  /** Source addresses, in order; `null` for the system's choice. */
  readonly localAddresses: readonly string[] | null;
  /** Epoch ms to start connecting at; `null` for at once. */
  readonly startAtMs: number | null;
  readonly protocol: 4 | 5;
  readonly client: 'raw' | 'connector';
  /** `undefined`: decided by the run (on with a scenario). */
  readonly consumer: boolean | undefined;
}

/** Latest `startAt` accepted, from now: far enough for any planned run, near enough to be a typo's guard. */
export const MAX_START_AT_AHEAD_MS = 7 * 86_400_000;

/**
 * Parse a start time: a Date, epoch ms, or ISO 8601 with a time zone (`2026-12-01T10:00:00Z`, `…+08:00`); a time
 * without a zone is refused, since shards on machines in different zones would start hours apart.
 * @throws ValidationError `InvalidOption`
 */
export function parseStartAt(value: Date | number | string): number {
  let ms: number;
  if (value instanceof Date) ms = value.getTime();
  else if (typeof value === 'number') ms = value;
  else {
    if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i.test(value.trim())) {
      throw new ValidationError('InvalidOption', `Option startAt (--start-at) ${JSON.stringify(value)} must be an ISO 8601 time with a time zone, e.g. 2026-12-01T10:00:00Z`);
    }
    ms = Date.parse(value.trim());
  }
  if (!Number.isFinite(ms)) throw new ValidationError('InvalidOption', `Option startAt (--start-at) ${JSON.stringify(String(value))} is not a valid time`);
  return ms;
}

/**
 * Check a start time against the wall clock: not already past (a shard launched late would not start with the
 * others), and not more than {@link MAX_START_AT_AHEAD_MS} ahead. @throws ValidationError `InvalidOption`
 */
export function checkStartAt(startAtMs: number, nowMs: number): void {
  if (startAtMs < nowMs) {
    throw new ValidationError('InvalidOption', `Option startAt (--start-at) ${new Date(startAtMs).toISOString()} is ${((nowMs - startAtMs) / 1_000).toFixed(1)} s in the past: every shard must be launched before it`);
  }
  if (startAtMs - nowMs > MAX_START_AT_AHEAD_MS) {
    throw new ValidationError('InvalidOption', `Option startAt (--start-at) ${new Date(startAtMs).toISOString()} is more than 7 days ahead`);
  }
}

const check = optionChecks();

function numberOption(name: string, value: unknown, min: number, max: number, integer: boolean): number {
  return integer ? check.integer(name, value, { min, max }) : check.number(name, value, { min, max });
}

/**
 * Validate the settings once and fill in defaults. Throws ValidationError (`InvalidOption`, `InvalidGroupId`)
 * naming the first bad option, before anything is started.
 */
export function resolveSettings(settings: SimulationSettings = {}): ResolvedSettings {
  const d = SIMULATION_DEFAULTS;
  const pick = <K extends keyof SimulationSettings & keyof typeof d>(key: K): unknown => settings[key] ?? d[key];
  const devices = numberOption('devices', pick('devices'), 1, MAX_DEVICES, true);
  const groupId = pick('groupId');
  assertGroupId(groupId);
  const longest = simulatedClientId(groupId, devices - 1);
  const problem = clientIdProblem(longest);
  if (problem) {
    throw new ValidationError('InvalidOption', `With groupId ${groupId} and ${devices} devices the ClientIds reach ${longest.length} characters (${longest}); at most ${MAX_CLIENT_ID_LENGTH} are allowed: use a shorter GroupId`);
  }
  const protocol = check.oneOf('protocol (--protocol)', pick('protocol'), PROTOCOL_LEVELS, describeProtocolLevel);
  const qos = check.oneOf('qos', pick('qos'), [0, 1] as const);
  const topic = pick('topic');
  if (typeof topic !== 'string') throw check.invalid('topic', 'a string', topic);
  const topicTemplate = parseTopicTemplate(topic);
  const subscribe = Boolean(pick('subscribe'));
  if (subscribe && !isPerDeviceTemplate(topicTemplate)) {
    // Every subscriber would receive every device's messages: N² deliveries instead of a latency measurement.
    throw new ValidationError('InvalidOption', `With subscribe the topic template must hold %c or %i, so each device subscribes to its own topic (not ${JSON.stringify(topic)})`);
  }
  const longestTopic = expandTopic(topicTemplate, { clientId: longest, index: devices - 1, group: groupId });
  if (Buffer.byteLength(longestTopic) > MAX_TOPIC_LENGTH) {
    throw new ValidationError('InvalidOption', `The topic ${JSON.stringify(longestTopic)} is longer than the service's ${MAX_TOPIC_LENGTH} characters: shorten the template`);
  }
  const shardValue = settings.shard ?? { index: 1, count: 1 };
  const shard = typeof shardValue === 'string' ? parseShard(shardValue) : { index: shardValue.index, count: shardValue.count };
  checkShard(shard);
  if (shard.count > devices) throw new ValidationError('InvalidOption', `Shard count ${shard.count} is more than the ${devices} devices`);
  const range = shardRange(devices, shard);
  const connectRate = numberOption('connectRate', pick('connectRate'), 0, 1_000_000, false);
  const client = check.oneOf('client (--client)', pick('client'), ['raw', 'connector'] as const);
  if (client === 'connector' && settings.localAddress !== undefined) {
    throw new ValidationError('InvalidOption', 'Option localAddress (--local-address) spreads raw devices over source addresses; connector devices (--client connector) connect from the address the system chooses');
  }
  return Object.freeze({
    devices,
    groupId,
    connectRate,
    publishIntervalMs: numberOption('publishIntervalMs', pick('publishIntervalMs'), 0, 3_600_000, true),
    qos,
    payloadSize: numberOption('payloadSize', pick('payloadSize'), PAYLOAD_HEADER_SIZE, MAX_PAYLOAD_SIZE, true),
    topic,
    topicTemplate,
    durationMs: numberOption('durationMs', pick('durationMs'), 0, 7 * 86_400_000, true),
    subscribe,
    shard,
    range,
    shardConnectRate: (connectRate * (range[1] - range[0])) / devices,
    apiQps: numberOption('apiQps', pick('apiQps'), 1, 1_000_000, false),
    apiConcurrency: numberOption('apiConcurrency', pick('apiConcurrency'), 1, 10_000, true),
    maxConnectsInFlight: numberOption('maxConnectsInFlight', pick('maxConnectsInFlight'), 1, 1_000_000, true),
    connectTimeoutMs: numberOption('connectTimeoutMs', pick('connectTimeoutMs'), 1, 600_000, true),
    keepalive: numberOption('keepalive', pick('keepalive'), 0, 65_535, true),
    connectAttempts: numberOption('connectAttempts', pick('connectAttempts'), 1, 100, true),
    progressIntervalMs: numberOption('progressIntervalMs', pick('progressIntervalMs'), 10, 3_600_000, true),
    drainTimeoutMs: numberOption('drainTimeoutMs', pick('drainTimeoutMs'), 0, 600_000, true),
    backlogTimeoutMs: numberOption('backlogTimeoutMs', pick('backlogTimeoutMs'), 0, 600_000, true),
    localAddresses: settings.localAddress === undefined ? null : Object.freeze(parseLocalAddresses(settings.localAddress)),
    startAtMs: settings.startAt === undefined ? null : parseStartAt(settings.startAt),
    protocol,
    client,
    consumer: settings.consumer === undefined ? undefined : check.boolean('consumer', settings.consumer),
  });
}
