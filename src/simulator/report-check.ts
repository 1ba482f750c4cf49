/**
 * The schema of a saved simulation report, checked before anything reads it deeply or merges it: a report comes
 * from a file, and a file can hold anything. Every field is checked for its type and its bounds, so that merging
 * costs memory in proportion to the reports given and nothing in them can reach a prototype, a huge allocation, a
 * deep recursion or an endless loop. A field that is wrong is named by its path (`shards[0].count`).
 */
import { MAX_LOCAL_ADDRESSES } from './local-address.js';
import { InvalidReportError } from './errors.js';
import { histogramEncodingProblem } from './histogram.js';
import { MAX_DEVICES, MAX_SHARDS } from './options.js';
import { REPORT_FORMAT, type SimulationReport } from './report-format.js';
import { FAULT_KINDS, SCENARIO_LIMITS } from './scenario.js';

/**
 * The bounds of a report, and of a merge of reports. Each is far above what a run of this version writes, and low
 * enough that a report cannot make `report merge` (or `mergeReports`) use memory out of proportion to its files.
 */
export const REPORT_LIMITS = Object.freeze({
  /** Shards of one run: `--shard I/N` takes N up to this (and `--processes` splits within it). */
  maxShards: MAX_SHARDS,
  /**
   * Longest span of a run's per-second series, from the first bin of its earliest shard to the last bin of its
   * latest: 31 days. A run lasts at most `startAt` (7 days ahead) + provisioning + `durationMs` (7 days) + the drain;
   * shards further apart than this are not one run.
   */
  maxRunSpanMs: 31 * 86_400_000,
  /** Distinct error codes in one report, and in a merge. */
  maxErrorCodes: 256,
  /**
   * Numbers in the per-second series of one report, and of a merge (5 counters plus one row per error code, bin by
   * bin): 16,000,000, about 128 MB. A 7-day run of 1-s bins with its 5 counters and 20 error codes holds 15.1 million.
   */
  maxSeriesValues: 16_000_000,
  /** Characters of any string but the histograms (names, times, addresses, error codes). */
  maxStringChars: 1_024,
  /**
   * Nesting of objects and arrays (a report's deepest field, a listed device of a scenario's fault,
   * `run.scenario.faults[i].devices.list[j]`, is at 6).
   */
  maxDepth: 8,
  /** Faults a game day plays (occurrences, each a `faults[i]`), as a scenario expands to at most. */
  maxFaults: SCENARIO_LIMITS.maxOccurrences,
  /** OpenAPI actions in an `emulator` block (the emulator implements a dozen, plus `(none)` and `(unknown)`). */
  maxActions: 64,
  /** Devices a fault's `notHealedDevices` lists (a run lists 10). */
  maxListedDevices: 100,
});

/** The report at fault, named by its `source` and the path of the field. */
export function invalidReport(source: string, field: string | undefined, why: string): InvalidReportError {
  return new InvalidReportError(`${source} is not a simulation report this version can read: ${field === undefined ? why : `${field} ${why}`}`, {
    source,
    ...(field === undefined ? {} : { field }),
  });
}

type Fail = (field: string | undefined, why: string) => never;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `a.b`, `a[3]`, `errors["x y"]`. */
function childPath(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent}[${key}]`;
  const name = /^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key);
  if (parent === '') return name;
  return name.startsWith('"') ? `${parent}[${name}]` : `${parent}.${name}`;
}

interface Frame {
  readonly value: unknown;
  readonly depth: number;
  readonly path: () => string;
}

/**
 * Walk the whole value without recursion: no nesting deeper than {@link REPORT_LIMITS}`.maxDepth`, no string (or
 * key) longer than `maxStringChars` except the two histogram encodings, which have their own bound. Paths are built
 * only for a field at fault.
 */
function checkShape(root: unknown, fail: Fail): void {
  const stack: Frame[] = [{ value: root, depth: 0, path: () => '' }];
  for (let frame = stack.pop(); frame !== undefined; frame = stack.pop()) {
    const { value, depth, path } = frame;
    if (typeof value === 'string') {
      const histogram = (depth === 2 && /^histograms\.\w+$/.test(path())) || (depth === 3 && /^faults\[\d+\]\.healUs$/.test(path()));
      if (!histogram && value.length > REPORT_LIMITS.maxStringChars) fail(path(), `is a string of ${value.length} characters, more than the ${REPORT_LIMITS.maxStringChars} a report holds`);
      continue;
    }
    if (typeof value !== 'object' || value === null) continue;
    if (depth >= REPORT_LIMITS.maxDepth) fail(path(), `nests deeper than the ${REPORT_LIMITS.maxDepth} levels a report has`);
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const item: unknown = value[i];
        // Numbers are most of a report: checked by the schema below, not stacked here.
        if (typeof item === 'object' || typeof item === 'string') stack.push({ value: item, depth: depth + 1, path: () => childPath(path(), i) });
      }
      continue;
    }
    for (const key of Object.keys(value)) {
      if (key.length > REPORT_LIMITS.maxStringChars) fail(path(), `has a key of ${key.length} characters`);
      stack.push({ value: (value as Record<string, unknown>)[key], depth: depth + 1, path: () => childPath(path(), key) });
    }
  }
}

/** The checks of one report's fields, each failing with the field's path. */
function fieldChecks(fail: Fail) {
  /** A field that is not `what` it must be: missing, or something else. */
  const expected = (path: string, what: string, value: unknown): never => fail(path, value === undefined ? `is missing (${what})` : `must be ${what}, not ${shown(value)}`);
  const record = (path: string, value: unknown): Record<string, unknown> => (isRecord(value) ? value : expected(path, 'an object', value));
  /** A whole number from `min` (default 0) to `max` (default the largest safe integer). */
  const count = (path: string, value: unknown, max = Number.MAX_SAFE_INTEGER, min = 0): number => {
    if (Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max) return value as number;
    return expected(path, `an integer ${max === Number.MAX_SAFE_INTEGER ? `of ${min} or more` : `from ${min} to ${max}`}`, value);
  };
  const amount = (path: string, value: unknown): number =>
    typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : expected(path, 'a finite number of 0 or more', value);
  const text = (path: string, value: unknown): string => (typeof value === 'string' ? value : expected(path, 'a string', value));
  const time = (path: string, value: unknown): string => (typeof value === 'string' && Number.isFinite(Date.parse(value)) ? value : expected(path, 'an ISO 8601 time', value));
  const orNull = <T>(check: (path: string, value: unknown) => T) => (path: string, value: unknown): T | null => (value === null ? null : check(path, value));
  const oneOf = <T>(path: string, value: unknown, allowed: readonly T[]): T => (allowed.includes(value as T) ? (value as T) : expected(path, allowed.map((a) => JSON.stringify(a)).join(' or '), value));
  const list = (path: string, value: unknown, max: number): unknown[] => {
    if (!Array.isArray(value)) return expected(path, 'an array', value);
    if (value.length > max) fail(path, `holds ${value.length} items, more than the ${max} a report may`);
    return value;
  };
  return { record, count, amount, text, time, orNull, oneOf, list };
}

/** A value as a message shows it: short, typed. */
function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value);
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

const COUNT_FIELDS = ['devices', 'provisioned', 'connected', 'failedConnects', 'published', 'acked', 'delivered', 'reconnects'] as const;
/** The counts of a message ledger (`delivery`, and each fault's `messages`). */
export const MESSAGE_COUNTS = ['published', 'accepted', 'acked', 'delivered', 'lost', 'duplicated', 'duplicates', 'refused'] as const;
/** Message counts a report of an older version lacks: read as 0 (`held`, `queued`, `maybeQueued`: an older version counted them as lost). */
const LATER_MESSAGE_COUNTS = ['held', 'queued', 'maybeQueued'] as const;
const AMOUNT_FIELDS = ['peakRssMB', 'elapsedMs', 'connectRatePerSec', 'publishRatePerSec'] as const;
const SERIES_COUNTERS = ['connected', 'connects', 'published', 'acked', 'delivered'] as const;

/**
 * Check that a parsed JSON value is a report this version can read and merge, against its schema and
 * {@link REPORT_LIMITS}; returns it typed. `source` names it in errors (a file name).
 * @throws InvalidReportError `InvalidReport` naming the field at fault.
 */
export function parseReport(value: unknown, source = 'the report'): SimulationReport {
  const fail: Fail = (field, why) => {
    throw invalidReport(source, field, why);
  };
  if (!isRecord(value)) return fail(undefined, 'not a JSON object');
  if (value['format'] !== REPORT_FORMAT) {
    fail(undefined, value['format'] === undefined ? 'it has no "format" (written by an older version, without histograms?)' : `format ${shown(value['format'])}, expected ${JSON.stringify(REPORT_FORMAT)}`);
  }
  checkShape(value, fail);
  const c = fieldChecks(fail);
  for (const field of COUNT_FIELDS) c.count(field, value[field]);
  for (const field of AMOUNT_FIELDS) c.amount(field, value[field]);
  for (const field of ['connectLatencyMs', 'e2eLatencyMs'] as const) {
    const latency = c.record(field, value[field]);
    for (const p of ['p50', 'p95', 'p99', 'max'] as const) c.orNull(c.amount)(`${field}.${p}`, latency[p]);
  }
  if (value['interrupted'] !== undefined) c.oneOf('interrupted', value['interrupted'], [true, false]);
  if (value['brokerLost'] !== undefined) {
    const lost = c.record('brokerLost', value['brokerLost']);
    c.time('brokerLost.at', lost['at']);
    c.text('brokerLost.cause', lost['cause']);
    c.oneOf('brokerLost.embeddedEmulator', lost['embeddedEmulator'], [true, false]);
  }
  checkCodes(c, fail, 'errors', value['errors']);
  if (value['credentialRefetches'] !== undefined) c.count('credentialRefetches', value['credentialRefetches']);
  checkGameDay(c, fail, value);

  const run = checkRun(c, value['run']);
  checkShards(c, fail, value['shards'], run.devices);
  const windows = c.record('windows', value['windows']);
  for (const name of ['connect', 'publish'] as const) {
    const w = windows[name];
    const ok = w === null || (Array.isArray(w) && w.length === 2 && w.every((n) => typeof n === 'number' && Number.isFinite(n)) && (w[0] as number) <= (w[1] as number));
    if (!ok) fail(`windows.${name}`, 'must be null or [first, last] epoch ms (the "windows" of the first and last connect and publish)');
  }
  const histograms = c.record('histograms', value['histograms']);
  for (const name of ['connectLatencyUs', 'e2eLatencyUs'] as const) {
    const problem = histogramEncodingProblem(c.text(`histograms.${name}`, histograms[name]));
    if (problem !== undefined) fail(`histograms.${name}`, `is not an HdrHistogram encoding of the simulator's latencies (${problem})`);
  }
  checkSeries(c, fail, value['series']);
  return value as unknown as SimulationReport;
}

type Checks = ReturnType<typeof fieldChecks>;

function checkRun(c: Checks, value: unknown): { devices: number } {
  const run = c.record('run', value);
  c.time('run.startedAt', run['startedAt']);
  c.orNull(c.time)('run.startAt', run['startAt']);
  c.text('run.version', run['version']);
  c.text('run.groupId', run['groupId']);
  c.text('run.topic', run['topic']);
  const devices = c.count('run.devices', run['devices'], MAX_DEVICES, 1);
  c.amount('run.connectRate', run['connectRate']);
  for (const field of ['publishIntervalMs', 'payloadSize', 'durationMs', 'keepalive', 'connectAttempts', 'connectTimeoutMs'] as const) c.count(`run.${field}`, run[field]);
  c.oneOf('run.qos', run['qos'], [0, 1]);
  c.oneOf('run.protocol', run['protocol'], [4, 5]);
  c.oneOf('run.subscribe', run['subscribe'], [true, false]);
  const target = c.record('run.target', run['target']);
  c.oneOf('run.target.kind', target['kind'], ['embedded-emulator', 'broker']);
  c.orNull(c.text)('run.target.brokerUrl', target['brokerUrl']);
  c.orNull(c.text)('run.target.instanceId', target['instanceId']);
  if (run['client'] !== undefined) c.oneOf('run.client', run['client'], ['raw', 'connector']);
  if (run['consumer'] !== undefined) c.oneOf('run.consumer', run['consumer'], [true, false]);
  if (run['scenario'] !== undefined && run['scenario'] !== null) {
    const scenario = c.record('run.scenario', run['scenario']);
    c.text('run.scenario.name', scenario['name']);
    c.count('run.scenario.seed', scenario['seed'], 0xffffffff);
    c.list('run.scenario.faults', scenario['faults'], SCENARIO_LIMITS.maxFaults).forEach((fault, i) => {
      const f = c.record(`run.scenario.faults[${i}]`, fault);
      c.oneOf(`run.scenario.faults[${i}].kind`, f['kind'], FAULT_KINDS);
      c.amount(`run.scenario.faults[${i}].at`, f['at']);
      const devices = f['devices'];
      if (devices !== undefined && c.record(`run.scenario.faults[${i}].devices`, devices)['list'] !== undefined) {
        c.list(`run.scenario.faults[${i}].devices.list`, (devices as Record<string, unknown>)['list'], SCENARIO_LIMITS.maxListedDevices);
      }
    });
  }
  return { devices };
}

/** Error codes with their counts (`errors`, a fault's `errors`), bounded in number. */
function checkCodes(c: Checks, fail: Fail, path: string, value: unknown): void {
  const errors = c.record(path, value);
  const codes = Object.keys(errors);
  if (codes.length > REPORT_LIMITS.maxErrorCodes) fail(path, `holds ${codes.length} error codes, more than the ${REPORT_LIMITS.maxErrorCodes} a report may`);
  for (const code of codes) c.count(childPath(path, code), errors[code]);
}

/** What a game day adds: `faults`, `delivery`, `emulator`, `relay` (each absent when the run had none). */
function checkGameDay(c: Checks, fail: Fail, value: Record<string, unknown>): void {
  const messages = (path: string, item: unknown): void => {
    const counts = c.record(path, item);
    for (const field of MESSAGE_COUNTS) c.count(`${path}.${field}`, counts[field]);
    for (const field of LATER_MESSAGE_COUNTS) {
      if (counts[field] === undefined) counts[field] = 0;
      else c.count(`${path}.${field}`, counts[field]);
    }
  };
  if (value['faults'] !== undefined) {
    c.list('faults', value['faults'], REPORT_LIMITS.maxFaults).forEach((item, i) => {
      const at = `faults[${i}]`;
      const fault = c.record(at, item);
      c.text(`${at}.id`, fault['id']);
      c.oneOf(`${at}.kind`, fault['kind'], FAULT_KINDS);
      c.orNull(c.text)(`${at}.label`, fault['label']);
      c.count(`${at}.fault`, fault['fault'], SCENARIO_LIMITS.maxFaults - 1);
      for (const field of ['plannedAtMs', 'plannedForMs'] as const) c.count(`${at}.${field}`, fault[field], REPORT_LIMITS.maxRunSpanMs);
      for (const field of ['startedAt', 'endedAt'] as const) c.orNull(c.time)(`${at}.${field}`, fault[field]);
      for (const field of ['targeted', 'hit', 'healed', 'notHealed'] as const) c.count(`${at}.${field}`, fault[field], MAX_DEVICES);
      // Written before it was counted: 0 (its devices were then neither hit nor told apart).
      if (fault['offlineAtStart'] === undefined) fault['offlineAtStart'] = 0;
      else c.count(`${at}.offlineAtStart`, fault['offlineAtStart'], MAX_DEVICES);
      if (fault['notHealedDevices'] !== undefined) {
        c.list(`${at}.notHealedDevices`, fault['notHealedDevices'], REPORT_LIMITS.maxListedDevices).forEach((entry, j) => {
          const path = `${at}.notHealedDevices[${j}]`;
          const device = c.record(path, entry);
          c.text(`${path}.clientId`, device['clientId']);
          c.count(`${path}.index`, device['index'], MAX_DEVICES - 1);
          c.time(`${path}.lostAt`, device['lostAt']);
          c.count(`${path}.connects`, device['connects']);
          for (const field of ['lastConnectAt', 'nextConnectAt'] as const) c.orNull(c.time)(`${path}.${field}`, device[field]);
          c.orNull(c.count)(`${path}.held`, device['held']);
        });
      }
      const heal = c.record(`${at}.healMs`, fault['healMs']);
      for (const p of ['p50', 'p95', 'p99', 'max'] as const) c.orNull(c.amount)(`${at}.healMs.${p}`, heal[p]);
      const problem = histogramEncodingProblem(c.text(`${at}.healUs`, fault['healUs']));
      if (problem !== undefined) fail(`${at}.healUs`, `is not an HdrHistogram encoding of the simulator's latencies (${problem})`);
      if (fault['messages'] !== null) messages(`${at}.messages`, fault['messages']);
      checkCodes(c, fail, `${at}.errors`, fault['errors']);
    });
  }
  if (value['delivery'] !== undefined) {
    messages('delivery', value['delivery']);
    c.count('delivery.foreign', (value['delivery'] as Record<string, unknown>)['foreign']);
  }
  if (value['emulator'] !== undefined) {
    const emulator = c.record('emulator', value['emulator']);
    const actions = c.record('emulator.actions', emulator['actions']);
    const names = Object.keys(actions);
    if (names.length > REPORT_LIMITS.maxActions) fail('emulator.actions', `holds ${names.length} actions, more than the ${REPORT_LIMITS.maxActions} a report may`);
    for (const name of names) {
      const path = childPath('emulator.actions', name);
      const action = c.record(path, actions[name]);
      c.count(`${path}.ok`, action['ok']);
      checkCodes(c, fail, `${path}.errors`, action['errors']);
    }
    checkCodes(c, fail, 'emulator.rules', emulator['rules']);
  }
  if (value['relay'] !== undefined) {
    const relay = c.record('relay', value['relay']);
    for (const field of ['relayed', 'dropped', 'refused'] as const) c.count(`relay.${field}`, relay[field]);
  }
}

function checkShards(c: Checks, fail: Fail, value: unknown, devices: number): void {
  const shards = c.list('shards', value, REPORT_LIMITS.maxShards);
  if (shards.length === 0) fail('shards', 'is empty');
  const seen = new Map<number, number>();
  let count: number | undefined;
  shards.forEach((item, i) => {
    const at = `shards[${i}]`;
    const shard = c.record(at, item);
    const of = c.count(`${at}.count`, shard['count'], Math.min(REPORT_LIMITS.maxShards, devices), 1);
    if (count !== undefined && of !== count) fail(`${at}.count`, `is ${of}, but shards[0].count is ${count}: one report holds shards of one split`);
    count = of;
    const index = c.count(`${at}.index`, shard['index'], of, 1);
    const twice = seen.get(index);
    if (twice !== undefined) fail(`${at}.index`, `is ${index}, as shards[${twice}].index is: each shard once`);
    seen.set(index, i);
    c.count(`${at}.devices`, shard['devices'], devices);
    c.count(`${at}.connected`, shard['connected'], devices);
    c.time(`${at}.startedAt`, shard['startedAt']);
    c.amount(`${at}.elapsedMs`, shard['elapsedMs']);
    c.amount(`${at}.peakRssMB`, shard['peakRssMB']);
    if (shard['baseRssMB'] !== undefined) c.amount(`${at}.baseRssMB`, shard['baseRssMB']);
    c.text(`${at}.host`, shard['host']);
    if (shard['localAddresses'] !== null) {
      c.list(`${at}.localAddresses`, shard['localAddresses'], MAX_LOCAL_ADDRESSES).forEach((a, k) => c.text(`${at}.localAddresses[${k}]`, a));
    }
  });
}

function checkSeries(c: Checks, fail: Fail, value: unknown): void {
  const series = c.record('series', value);
  const intervalMs = c.count('series.intervalMs', series['intervalMs'], REPORT_LIMITS.maxRunSpanMs, 1);
  const startMs = c.count('series.startMs', series['startMs']);
  if (startMs % intervalMs !== 0) fail('series.startMs', `must be a whole number of series.intervalMs (${intervalMs}), not ${startMs}`);
  const errors = c.record('series.errors', series['errors']);
  const codes = Object.keys(errors);
  if (codes.length > REPORT_LIMITS.maxErrorCodes) fail('series.errors', `holds ${codes.length} error codes, more than the ${REPORT_LIMITS.maxErrorCodes} a report may`);
  const bins = Math.floor(REPORT_LIMITS.maxRunSpanMs / intervalMs);
  const length = c.list('series.connected', series['connected'], bins).length;
  if (length === 0) fail('series.connected', 'is empty');
  if ((SERIES_COUNTERS.length + codes.length) * length > REPORT_LIMITS.maxSeriesValues) {
    fail('series', `holds ${(SERIES_COUNTERS.length + codes.length) * length} numbers, more than the ${REPORT_LIMITS.maxSeriesValues} a report may`);
  }
  const row = (path: string, values: unknown): void => {
    const items = c.list(path, values, bins);
    if (items.length !== length) fail(path, `holds ${items.length} bins, but series.connected holds ${length}`);
    for (let i = 0; i < items.length; i++) c.count(`${path}[${i}]`, items[i]);
  };
  for (const name of SERIES_COUNTERS) row(`series.${name}`, series[name]);
  for (const code of codes) row(childPath('series.errors', code), errors[code]);
}
