/**
 * Game-day scenarios: a timeline of faults played against a simulated fleet (`simulate --scenario FILE`). A scenario
 * is read from JSON (or YAML, with the optional `yaml` package), checked field by field before anything starts (a
 * field at fault is named by its path, `faults[2].share`), then resolved against the run: its times against the
 * duration, its devices against the fleet, and each fault expanded into the occurrences the run plays (a
 * `broker-restart` with `count: 3` is three).
 *
 * Devices are chosen by a seeded hash of (fault, device index), so a fault hits the same devices of the fleet
 * whether the run is one process or split into shards, and from one run to the next.
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { API_ERROR_CATALOG, ConfigurationError } from '../errors.js';
import { InvalidScenarioError } from './errors.js';
import { simulatedClientId } from './options.js';

/** The fault kinds a scenario may hold. */
export const FAULT_KINDS = ['broker-restart', 'partition', 'latency', 'bandwidth', 'revoke', 'api-faults', 'token-revoke'] as const;
/** One of {@link FAULT_KINDS}. */
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Kinds that act on the broker or OpenAPI of an emulator (its `/_emulator/*` controls, or its credentials). */
export const EMULATOR_KINDS: ReadonlySet<FaultKind> = new Set(['broker-restart', 'revoke', 'api-faults']);
/** Kinds played by the fault relay between the devices and the broker. */
export const NETWORK_KINDS: ReadonlySet<FaultKind> = new Set(['partition', 'latency', 'bandwidth']);

/** Bounds of a scenario: generous for any game day, small enough that a typo cannot start an endless run. */
export const SCENARIO_LIMITS = Object.freeze({
  /** Faults in one scenario (before a restart's `count` expands it). */
  maxFaults: 100,
  /** Occurrences once expanded. */
  maxOccurrences: 1_000,
  /** Devices listed by index or ClientId in one fault. */
  maxListedDevices: 100_000,
  /** Largest time in a scenario, seconds: 7 days, the longest run. */
  maxSeconds: 7 * 86_400,
  /** Largest added latency, ms each way. */
  maxLatencyMs: 60_000,
  /** Largest scenario file, bytes. */
  maxFileBytes: 4 * 1024 * 1024,
});

/** Which devices a fault hits: all of them, a share, a count, or a list of indexes or ClientIds. */
export type DeviceTarget =
  | { readonly all: true }
  | { readonly share: number }
  | { readonly count: number }
  | { readonly list: ReadonlyArray<number | string> };

/** A fault as the scenario gives it, checked, with defaults filled in; times in seconds. */
export type FaultSpec =
  | { readonly kind: 'broker-restart'; readonly at: number; readonly count: number; readonly every: number; readonly down: number; readonly label?: string }
  | { readonly kind: 'partition'; readonly at: number; readonly for: number; readonly devices: DeviceTarget; readonly label?: string }
  | { readonly kind: 'latency'; readonly at: number; readonly for: number; readonly ms: number; readonly devices: DeviceTarget; readonly label?: string }
  | { readonly kind: 'bandwidth'; readonly at: number; readonly for: number; readonly bytesPerSec: number; readonly devices: DeviceTarget; readonly label?: string }
  | { readonly kind: 'revoke'; readonly at: number; readonly mode: 'refresh' | 'unregister'; readonly kick: boolean; readonly devices: DeviceTarget; readonly label?: string }
  | { readonly kind: 'api-faults'; readonly at: number; readonly for: number; readonly rate: number; readonly codes: readonly string[]; readonly label?: string };

/** A checked scenario. */
export interface Scenario {
  /** Its name (the file's base name when it gives none). */
  readonly name: string;
  readonly description: string | undefined;
  /** Seed of the device choice. @default 1 */
  readonly seed: number;
  readonly faults: readonly FaultSpec[];
}

/** What a report says of the scenario a run played: enough to tell runs apart and to refuse merging others. */
export interface ScenarioIdentity {
  name: string;
  seed: number;
  /** The faults as checked (defaults filled in), in the scenario's order. */
  faults: unknown[];
}

const KIND_FIELDS: Readonly<Record<Exclude<FaultKind, 'token-revoke'>, readonly string[]>> = {
  'broker-restart': ['count', 'every', 'down'],
  partition: ['for', 'share', 'devices'],
  latency: ['for', 'ms', 'share', 'devices'],
  bandwidth: ['for', 'bytesPerSec', 'share', 'devices'],
  revoke: ['mode', 'kick', 'share', 'devices'],
  'api-faults': ['for', 'rate', 'codes'],
};
const COMMON_FIELDS = ['at', 'kind', 'label'];
const DEFAULT_API_FAULT_CODES = Object.freeze(['Throttling.User', 'InternalError']);

type Fail = (field: string | undefined, why: string) => never;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value);
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

/** The checks of one scenario's fields, each failing with the field's path. */
function fieldChecks(fail: Fail) {
  const expected = (path: string, what: string, value: unknown): never => fail(path, value === undefined ? `is missing (${what})` : `must be ${what}, not ${shown(value)}`);
  const seconds = (path: string, value: unknown, min: 0, positive = false): number => {
    const ok = typeof value === 'number' && Number.isFinite(value) && (positive ? value > min : value >= min) && value <= SCENARIO_LIMITS.maxSeconds;
    return ok ? value : expected(path, `a number of seconds, ${positive ? 'above 0' : '0 or more'} (at most ${SCENARIO_LIMITS.maxSeconds})`, value);
  };
  const integer = (path: string, value: unknown, min: number, max: number): number =>
    Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max ? (value as number) : expected(path, `an integer from ${min} to ${max}`, value);
  const share = (path: string, value: unknown): number =>
    typeof value === 'number' && Number.isFinite(value) && value > 0 && value <= 1 ? value : expected(path, 'a share of the devices above 0 and at most 1 (0.5 is half)', value);
  return { expected, seconds, integer, share };
}

/**
 * Check a parsed scenario (JSON or YAML) and fill in its defaults. `source` names it in errors (a file name); its base
 * name is the scenario's name when it has none.
 * @throws InvalidScenarioError `InvalidScenario` naming the field at fault.
 */
export function parseScenario(value: unknown, source = 'the scenario'): Scenario {
  const fail: Fail = (field, why) => {
    throw invalidScenario(source, field, why);
  };
  const c = fieldChecks(fail);
  if (!isRecord(value)) return fail(undefined, 'is not an object with "faults" (a JSON or YAML object)');
  for (const key of Object.keys(value)) {
    if (!['name', 'description', 'seed', 'faults'].includes(key)) fail(key, 'is not a field of a scenario (it has name, description, seed, faults)');
  }
  const name = value['name'] ?? source.replace(/^.*[\\/]/, '').replace(/\.(json|ya?ml)$/i, '');
  if (typeof name !== 'string' || name.length === 0 || name.length > 200) c.expected('name', 'a string of 1 to 200 characters', name);
  const description = value['description'];
  if (description !== undefined && (typeof description !== 'string' || description.length > 4_000)) c.expected('description', 'a string of at most 4000 characters', description);
  const seed = value['seed'] === undefined ? 1 : c.integer('seed', value['seed'], 0, 0xffffffff);
  const faults = value['faults'];
  if (!Array.isArray(faults)) return c.expected('faults', 'an array of faults, each with "at" and "kind"', faults);
  if (faults.length === 0) fail('faults', 'is empty: a scenario plays at least one fault');
  if (faults.length > SCENARIO_LIMITS.maxFaults) fail('faults', `holds ${faults.length} faults, more than the ${SCENARIO_LIMITS.maxFaults} a scenario may`);
  return Object.freeze({
    name: name as string,
    description: description as string | undefined,
    seed,
    faults: Object.freeze(faults.map((fault, i) => parseFault(fault, `faults[${i}]`, c, fail))),
  });
}

function parseFault(value: unknown, at: string, c: ReturnType<typeof fieldChecks>, fail: Fail): FaultSpec {
  if (!isRecord(value)) return c.expected(at, 'an object with "at" and "kind"', value);
  const kind = value['kind'];
  if (kind === 'token-revoke') {
    fail(`${at}.kind`, 'token-revoke needs Token-mode devices, and the simulator runs devices that log in with device credentials (Token mode is not simulated): use revoke, which refreshes or unregisters device credentials');
  }
  if (typeof kind !== 'string' || !Object.hasOwn(KIND_FIELDS, kind)) return c.expected(`${at}.kind`, `one of ${FAULT_KINDS.join(', ')}`, kind);
  const k = kind as keyof typeof KIND_FIELDS;
  const allowed = [...COMMON_FIELDS, ...KIND_FIELDS[k]];
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) fail(`${at}.${key}`, `is not a field of a ${k} fault (it has ${allowed.join(', ')})`);
  }
  const start = c.seconds(`${at}.at`, value['at'], 0);
  const label = value['label'];
  if (label !== undefined && (typeof label !== 'string' || label.length === 0 || label.length > 100)) c.expected(`${at}.label`, 'a string of 1 to 100 characters', label);
  const common = { at: start, ...(label === undefined ? {} : { label: label as string }) };
  const duration = (): number => c.seconds(`${at}.for`, value['for'], 0, true);
  switch (k) {
    case 'broker-restart': {
      const count = value['count'] === undefined ? 1 : c.integer(`${at}.count`, value['count'], 1, SCENARIO_LIMITS.maxOccurrences);
      const down = value['down'] === undefined ? 0 : c.seconds(`${at}.down`, value['down'], 0);
      if (down > 600) fail(`${at}.down`, `is ${down} s; a restart is down for at most 600 s (the emulator's bound)`);
      let every = 0;
      if (count > 1) {
        every = c.seconds(`${at}.every`, value['every'], 0, true);
        if (every <= down) fail(`${at}.every`, `is ${every} s, not more than down (${down} s): each restart must be back up before the next`);
      } else if (value['every'] !== undefined) {
        every = c.seconds(`${at}.every`, value['every'], 0, true);
      }
      return { kind: k, ...common, count, every, down };
    }
    case 'partition':
      return { kind: k, ...common, for: duration(), devices: parseTarget(value, at, c, fail, true) };
    case 'latency':
      return { kind: k, ...common, for: duration(), ms: c.integer(`${at}.ms`, value['ms'], 1, SCENARIO_LIMITS.maxLatencyMs), devices: parseTarget(value, at, c, fail, true) };
    case 'bandwidth':
      return { kind: k, ...common, for: duration(), bytesPerSec: c.integer(`${at}.bytesPerSec`, value['bytesPerSec'], 1, 1_000_000_000), devices: parseTarget(value, at, c, fail, true) };
    case 'revoke': {
      const mode = value['mode'] ?? 'refresh';
      if (mode !== 'refresh' && mode !== 'unregister') c.expected(`${at}.mode`, '"refresh" (a new key pair: the devices Get it) or "unregister" (no credential: the devices Register)', mode);
      const kick = value['kick'] ?? true;
      if (typeof kick !== 'boolean') c.expected(`${at}.kick`, 'true (drop the sessions now, as the emulator can) or false (the devices find out at their next connect)', kick);
      return { kind: k, ...common, mode: mode as 'refresh' | 'unregister', kick: kick as boolean, devices: parseTarget(value, at, c, fail, false) };
    }
    case 'api-faults': {
      const rate = value['rate'];
      if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0 || rate > 1) c.expected(`${at}.rate`, 'the share of OpenAPI calls that fail, above 0 and at most 1', rate);
      const codes = value['codes'] ?? DEFAULT_API_FAULT_CODES;
      if (!Array.isArray(codes) || codes.length === 0 || codes.length > 20) return c.expected(`${at}.codes`, 'a list of 1 to 20 OpenAPI error codes (e.g. ["Throttling.User", "InternalError"])', codes);
      codes.forEach((code: unknown, i) => {
        if (typeof code !== 'string' || !Object.hasOwn(API_ERROR_CATALOG, code)) c.expected(`${at}.codes[${i}]`, 'an OpenAPI error code of the catalog (such as Throttling.User, SystemOverFlow, InternalError)', code);
      });
      return { kind: k, ...common, for: duration(), rate: rate as number, codes: Object.freeze([...(codes as string[])]) };
    }
  }
}

function parseTarget(value: Record<string, unknown>, at: string, c: ReturnType<typeof fieldChecks>, fail: Fail, allByDefault: boolean): DeviceTarget {
  const share = value['share'];
  const devices = value['devices'];
  if (share !== undefined && devices !== undefined) fail(`${at}.share`, 'and devices are both given: a fault hits a share of the devices or the devices listed, not both');
  if (share !== undefined) return { share: c.share(`${at}.share`, share) };
  if (devices === undefined) {
    if (allByDefault) return { all: true };
    return fail(`${at}.devices`, 'is missing (how many devices: a count such as 20, a list of indexes or ClientIds, or share instead)');
  }
  if (typeof devices === 'number') return { count: c.integer(`${at}.devices`, devices, 1, 1_000_000) };
  if (!Array.isArray(devices) || devices.length === 0) return c.expected(`${at}.devices`, 'a count of devices, or a non-empty list of device indexes or ClientIds', devices);
  if (devices.length > SCENARIO_LIMITS.maxListedDevices) fail(`${at}.devices`, `lists ${devices.length} devices, more than the ${SCENARIO_LIMITS.maxListedDevices} a fault may (use share or a count)`);
  devices.forEach((d: unknown, i) => {
    if (!(typeof d === 'string' && d.length > 0 && d.length <= 64) && !(Number.isSafeInteger(d) && (d as number) >= 0)) {
      c.expected(`${at}.devices[${i}]`, 'a device index (0 or more) or a ClientId', d);
    }
  });
  return { list: Object.freeze([...(devices as Array<number | string>)]) };
}

/** The scenario at fault. */
export function invalidScenario(source: string, field: string | undefined, why: string): InvalidScenarioError {
  return new InvalidScenarioError(`${source} is not a scenario this version can play: ${field === undefined ? why : `${field} ${why}`}`, {
    source,
    ...(field === undefined ? {} : { field }),
  });
}

/**
 * Read a scenario file: JSON, or YAML for a name ending in `.yaml`/`.yml` (with the optional package `yaml`).
 * @throws InvalidScenarioError `InvalidScenario`; ConfigurationError `MissingDependency` for YAML without `yaml`.
 */
export async function readScenarioFile(file: string): Promise<Scenario> {
  let text: string;
  try {
    const bytes = await readFile(file);
    if (bytes.length > SCENARIO_LIMITS.maxFileBytes) throw invalidScenario(file, undefined, `is ${bytes.length} bytes, more than the ${SCENARIO_LIMITS.maxFileBytes} a scenario file may be`);
    text = bytes.toString('utf8');
  } catch (error) {
    if (error instanceof InvalidScenarioError) throw error;
    throw invalidScenario(file, undefined, `cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  const yaml = /^\.ya?ml$/i.test(extname(file));
  let value: unknown;
  try {
    value = yaml ? (await loadYaml()).parse(text, { maxAliasCount: 100 }) : JSON.parse(text);
  } catch (error) {
    if (error instanceof ConfigurationError) throw error;
    throw invalidScenario(file, undefined, `is not ${yaml ? 'YAML' : 'JSON'} (${error instanceof Error ? error.message.split('\n')[0] : String(error)})`);
  }
  return parseScenario(value, file);
}

async function loadYaml(): Promise<typeof import('yaml')> {
  try {
    return await import('yaml');
  } catch {
    const remedy = 'Install it next to apsaramq-device (npm install yaml), or write the scenario as JSON';
    throw new ConfigurationError('MissingDependency', `A YAML scenario needs the package yaml, which is not installed (an optional peer dependency of apsaramq-device). ${remedy}`, remedy);
  }
}

/** What the report keeps of a scenario: name, seed and the checked faults. */
export function scenarioIdentity(scenario: Scenario): ScenarioIdentity {
  return { name: scenario.name, seed: scenario.seed, faults: JSON.parse(JSON.stringify(scenario.faults)) as unknown[] };
}

/** One occurrence of a fault the run plays: a restart of `count: 3` is three. Times in ms from the start of connecting. */
export interface FaultPlan {
  /** `3` for `faults[2]` (1-based), `3.2` for its second occurrence. */
  readonly id: string;
  /** Position of its fault in the scenario (0-based). */
  readonly fault: number;
  readonly kind: Exclude<FaultKind, 'token-revoke'>;
  readonly label: string | undefined;
  readonly atMs: number;
  /** How long it lasts as planned (a restart: its downtime; a revoke: 0). */
  readonly forMs: number;
  readonly spec: FaultSpec;
  /** The fleet indexes it hits (sorted), or `all`. */
  readonly devices: Uint32Array | 'all';
}

/** What a scenario is resolved against. */
export interface ScenarioRun {
  devices: number;
  durationMs: number;
  groupId: string;
}

/**
 * Resolve a scenario against a run: each fault within the duration, its devices within the fleet, occurrences
 * expanded and sorted by start.
 * @throws InvalidScenarioError `InvalidScenario` naming the field (`source` names the scenario).
 */
export function planScenario(scenario: Scenario, run: ScenarioRun, source = scenario.name): FaultPlan[] {
  const fail: Fail = (field, why) => {
    throw invalidScenario(source, field, why);
  };
  const plans: FaultPlan[] = [];
  scenario.faults.forEach((spec, position) => {
    const at = `faults[${position}]`;
    const ends = spec.kind === 'broker-restart' ? spec.at + (spec.count - 1) * spec.every + spec.down : spec.at + ('for' in spec ? spec.for : 0);
    if (ends * 1_000 > run.durationMs) {
      fail(spec.kind === 'broker-restart' || !('for' in spec) ? `${at}.at` : `${at}.for`, `makes the fault end ${ends} s after the start of connecting, after the run's ${run.durationMs / 1_000} s (--duration): lengthen the run or move the fault`);
    }
    const devices = 'devices' in spec ? chooseDevices(spec.devices, run, scenario.seed, position, `${at}.${'share' in spec.devices ? 'share' : 'devices'}`, fail) : 'all';
    const count = spec.kind === 'broker-restart' ? spec.count : 1;
    for (let k = 0; k < count; k++) {
      const every = spec.kind === 'broker-restart' ? spec.every : 0;
      plans.push({
        id: count > 1 ? `${position + 1}.${k + 1}` : String(position + 1),
        fault: position,
        kind: spec.kind,
        label: spec.label,
        atMs: Math.round((spec.at + k * every) * 1_000),
        forMs: Math.round((spec.kind === 'broker-restart' ? spec.down : 'for' in spec ? spec.for : 0) * 1_000),
        spec,
        devices,
      });
    }
  });
  if (plans.length > SCENARIO_LIMITS.maxOccurrences) fail('faults', `expand to ${plans.length} occurrences, more than the ${SCENARIO_LIMITS.maxOccurrences} a run plays`);
  return plans.sort((a, b) => a.atMs - b.atMs || a.fault - b.fault);
}

/** 32-bit mix of (seed, fault, index): the device choice, the same in every shard and every run. */
function mix(seed: number, fault: number, index: number): number {
  let h = (seed ^ Math.imul(fault + 1, 0x9e3779b1) ^ Math.imul(index, 0x85ebca77)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Indexes fit below 2^20 (MAX_DEVICES is 1,000,000): a hash and its index share one exact float64. */
const INDEX_BITS = 2 ** 20;

function chooseDevices(target: DeviceTarget, run: ScenarioRun, seed: number, fault: number, field: string, fail: Fail): Uint32Array | 'all' {
  if ('all' in target) return 'all';
  if ('list' in target) {
    const indexes = target.list.map((d, i) => {
      const index = typeof d === 'number' ? d : indexOfClientId(d, run.groupId);
      if (index === undefined) fail(`${field}[${i}]`, `${JSON.stringify(d)} is not a ClientId of this run's devices (${simulatedClientId(run.groupId, 0)} to ${simulatedClientId(run.groupId, run.devices - 1)})`);
      if ((index as number) >= run.devices) fail(`${field}[${i}]`, `is device ${index}, but the fleet has devices 0 to ${run.devices - 1}`);
      return index as number;
    });
    return Uint32Array.from(new Set(indexes)).sort();
  }
  const count = 'share' in target ? Math.max(1, Math.round(target.share * run.devices)) : target.count;
  if (count > run.devices) fail(field, `is ${count} devices, but the fleet has ${run.devices}`);
  if (count === run.devices) return 'all';
  // The `count` smallest hashes: exact, and the same whichever shard computes it.
  const keys = new Float64Array(run.devices);
  for (let i = 0; i < run.devices; i++) keys[i] = mix(seed, fault, i) * INDEX_BITS + i;
  keys.sort();
  const chosen = new Uint32Array(count);
  for (let k = 0; k < count; k++) chosen[k] = (keys[k] as number) % INDEX_BITS;
  return chosen.sort();
}

function indexOfClientId(clientId: string, groupId: string): number | undefined {
  const prefix = simulatedClientId(groupId, 0).replace(/0$/, '');
  if (!clientId.startsWith(prefix)) return undefined;
  const rest = clientId.slice(prefix.length);
  return /^(0|[1-9]\d{0,6})$/.test(rest) ? Number(rest) : undefined;
}

/** Does a plan hit fleet device `index`? */
export function hits(plan: Pick<FaultPlan, 'devices'>, index: number): boolean {
  if (plan.devices === 'all') return true;
  // Binary search of the sorted indexes.
  let lo = 0;
  let hi = plan.devices.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const value = plan.devices[mid] as number;
    if (value === index) return true;
    if (value < index) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

/** The fleet indexes of a plan within a shard's range `[start, end)`. */
export function devicesInRange(plan: Pick<FaultPlan, 'devices'>, start: number, end: number): number[] {
  if (plan.devices === 'all') return Array.from({ length: end - start }, (_, i) => start + i);
  return [...plan.devices].filter((i) => i >= start && i < end);
}
