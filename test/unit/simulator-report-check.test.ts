import { deflateSync } from 'node:zlib';
import { build, encodeIntoCompressedBase64 } from 'hdr-histogram-js';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import { ManualClock } from '../../src/simulator/clock.js';
import { InvalidReportError } from '../../src/simulator/errors.js';
import { encodeHistogram, histogramEncodingProblem, newLatencyHistogram, recordMs, summarizeHistogram } from '../../src/simulator/histogram.js';
import { SimulationMetrics } from '../../src/simulator/metrics.js';
import { parseShard, resolveSettings } from '../../src/simulator/options.js';
import { REPORT_LIMITS, parseReport } from '../../src/simulator/report-check.js';
import { type FaultReport, type NotHealedDevice, describeTarget, runIdentity, type SimulationReport } from '../../src/simulator/report-format.js';
import { mergeReports } from '../../src/simulator/report.js';

const EPOCH = Date.UTC(2026, 0, 1);

/** The report of shard `index` of 2, written by the simulator's own metrics: two devices, one error each. */
function shardReport(index: 1 | 2): SimulationReport & Record<string, unknown> {
  const clock = new ManualClock(0);
  const metrics = new SimulationMetrics({ clock, epochMs: EPOCH });
  metrics.devices = 2;
  metrics.provisioned = 2;
  metrics.connectSent(0);
  clock.advance(5);
  metrics.firstConnack(5, 5);
  metrics.wentOnline();
  clock.advance(1_000);
  metrics.error('ConnectionLost');
  clock.advance(2_000);
  return metrics.report(3_005, runIdentity(resolveSettings({ devices: 4, shard: `${index}/2` }), describeTarget(undefined))) as SimulationReport & Record<string, unknown>;
}

/** The InvalidReportError of `fn`, whose field must be `field`. */
function refusal(fn: () => unknown, field: string | undefined): InvalidReportError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidReportError);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ code: 'InvalidReport', retryable: false, field });
    return error as InvalidReportError;
  }
  throw new Error('accepted');
}

/** A compressed V2 HdrHistogram encoding with this header and these ZigZag LEB128 words (one byte each here). */
function encoding(header: { figures: number; lowest: bigint; highest: bigint }, words: number[]): string {
  const raw = Buffer.alloc(40 + words.length);
  raw.writeInt32BE(0x1c849313, 0);
  raw.writeInt32BE(words.length, 4);
  raw.writeInt32BE(1, 8);
  raw.writeInt32BE(header.figures, 12);
  raw.writeBigInt64BE(header.lowest, 16);
  raw.writeBigInt64BE(header.highest, 24);
  raw.writeDoubleBE(1, 32);
  Buffer.from(words).copy(raw, 40);
  return packed(deflateSync(raw));
}

function packed(compressed: Buffer): string {
  const head = Buffer.alloc(8);
  head.writeInt32BE(0x1c849314, 0);
  head.writeInt32BE(compressed.length, 4);
  return Buffer.concat([head, compressed]).toString('base64');
}

const OURS = { figures: 3, lowest: 1n, highest: 3_600_000_000n };

describe('parseReport: the schema of a report, with its bounds', () => {
  it('accepts what the simulator writes, and names a field that is wrong by its path', () => {
    const report = shardReport(1);
    expect(parseReport(report)).toBe(report);
    refusal(() => parseReport({ ...report, devices: undefined }, 'r.json'), 'devices');
    expect(refusal(() => parseReport({ ...report, acked: -1 }, 'r.json'), 'acked').message).toBe('r.json is not a simulation report this version can read: acked must be an integer of 0 or more, not -1');
    refusal(() => parseReport({ ...report, elapsedMs: Number.NaN }), 'elapsedMs');
    refusal(() => parseReport({ ...report, connectLatencyMs: { ...report.connectLatencyMs, p99: -2 } }), 'connectLatencyMs.p99');
    refusal(() => parseReport({ ...report, run: { ...report.run, protocol: 6 } }), 'run.protocol');
    refusal(() => parseReport({ ...report, run: { ...report.run, startedAt: 'yesterday' } }), 'run.startedAt');
    refusal(() => parseReport({ ...report, shards: [{ ...report.shards[0], host: 7 }] }), 'shards[0].host');
    refusal(() => parseReport({ ...report, brokerLost: { at: 'now', cause: 'x', embeddedEmulator: true } }), 'brokerLost.at');
  });

  it('one report holds shards of one split, each once, no more than its run has devices', () => {
    const report = shardReport(1);
    const [one] = report.shards as [SimulationReport['shards'][number]];
    refusal(() => parseReport({ ...report, shards: [one, { ...one }] }), 'shards[1].index');
    refusal(() => parseReport({ ...report, shards: [one, { ...one, index: 2, count: 3 }] }), 'shards[1].count');
    refusal(() => parseReport({ ...report, shards: [{ ...one, count: 5 }] }), 'shards[0].count');
    refusal(() => parseReport({ ...report, shards: [] }), 'shards');
    expect(() => parseShard(`1/${REPORT_LIMITS.maxShards + 1}`)).toThrow(/at most 10000 shards/);
  });

  it('bounds strings, keys, nesting and error codes', () => {
    const report = shardReport(1);
    refusal(() => parseReport({ ...report, run: { ...report.run, groupId: 'G'.repeat(REPORT_LIMITS.maxStringChars + 1) } }), 'run.groupId');
    refusal(() => parseReport({ ...report, extra: [[[[[[[[1]]]]]]]] }), 'extra[0][0][0][0][0][0][0]');
    const codes = Object.fromEntries(Array.from({ length: REPORT_LIMITS.maxErrorCodes + 1 }, (_, i) => [`Code${i}`, 1]));
    refusal(() => parseReport({ ...report, errors: codes }), 'errors');
    refusal(() => parseReport({ ...report, errors: { [`C${'x'.repeat(REPORT_LIMITS.maxStringChars)}`]: 1 } }), 'errors');
  });

  it('a series on its interval grid, rows as long as each other, within the span and size a run can have', () => {
    const report = shardReport(1);
    const { series } = report;
    refusal(() => parseReport({ ...report, series: { ...series, startMs: series.startMs + 1 } }), 'series.startMs');
    refusal(() => parseReport({ ...report, series: { ...series, intervalMs: 0.5 } }), 'series.intervalMs');
    refusal(() => parseReport({ ...report, series: { ...series, acked: [...series.acked, 0] } }), 'series.acked');
    refusal(() => parseReport({ ...report, series: { ...series, errors: { ConnectionLost: series.connected.map(() => 1.5) } } }), 'series.errors.ConnectionLost[0]');
    const tooLong = new Array<number>(REPORT_LIMITS.maxRunSpanMs / 1_000 + 1).fill(0);
    refusal(() => parseReport({ ...report, series: { ...series, connected: tooLong } }), 'series.connected');
    // Within the span, but with enough error rows to pass the size bound.
    const long = new Array<number>(REPORT_LIMITS.maxRunSpanMs / 1_000).fill(0);
    const rows = Object.fromEntries(Array.from({ length: 2 }, (_, i) => [`Code${i}`, long]));
    const big = { ...series, connected: long, connects: long, published: long, acked: long, delivered: long, errors: rows };
    expect((5 + 2) * long.length).toBeGreaterThan(REPORT_LIMITS.maxSeriesValues);
    refusal(() => parseReport({ ...report, series: big }), 'series');
  });
});

describe('histograms: checked before the library decodes them', () => {
  it('a real encoding passes', () => {
    const h = newLatencyHistogram();
    for (const ms of [0.2, 3, 40, 900, 3_600_000]) recordMs(h, ms);
    expect(histogramEncodingProblem(encodeIntoCompressedBase64(h))).toBeUndefined();
  });

  it('another range (which the decoder would allocate whole), a counts payload that overruns its buckets, an inflate bomb', () => {
    const wide = build({ lowestDiscernibleValue: 1, highestTrackableValue: 2 ** 50, numberOfSignificantValueDigits: 5, bitBucketSize: 64, useWebAssembly: false });
    expect(histogramEncodingProblem(encodeIntoCompressedBase64(wide))).toMatch(/covers 1 to 1125899906842624 at 5 figures/);
    // ZigZag -64 (0x7f) skips 64 empty buckets; 400 of them skip 25,600, past 23,552.
    expect(histogramEncodingProblem(encoding(OURS, new Array<number>(400).fill(0x7f)))).toMatch(/fill more than its 23552 buckets/);
    expect(histogramEncodingProblem(packed(deflateSync(Buffer.alloc(50 * 1024 * 1024))))).toMatch(/inflate past the size of a full histogram/);
    expect(histogramEncodingProblem('x'.repeat(300 * 1024))).toMatch(/characters, more than/);
    expect(histogramEncodingProblem('nope')).toMatch(/not a compressed V2 encoding/);
    const report = shardReport(1);
    refusal(() => parseReport({ ...report, histograms: { ...report.histograms, connectLatencyUs: encodeIntoCompressedBase64(wide) } }), 'histograms.connectLatencyUs');
  });
});

describe('mergeReports: checks every report and bounds the merge before allocating it', () => {
  it('merges the two shards; refuses a tampered one by its source and field', () => {
    const [one, two] = [shardReport(1), shardReport(2)];
    expect(mergeReports([one, two])).toMatchObject({ devices: 4, connected: 2, errors: { ConnectionLost: 2 } });
    const error = refusal(() => mergeReports([one, { ...two, reconnects: 0.5 }], { sources: ['a.json', 'b.json'] }), 'reconnects');
    expect(error.source).toBe('b.json');
  });

  it('series of different intervals are not of one run; error codes past the bound together are refused', () => {
    const [one, two] = [shardReport(1), shardReport(2)];
    expect(() => mergeReports([one, { ...two, series: { ...two.series, intervalMs: 500, startMs: two.series.startMs } }])).toThrow(expect.objectContaining({ code: 'ReportMismatch', message: expect.stringMatching(/series\.intervalMs is 1000 in report 1 but 500 in report 2/) }));
    const half = REPORT_LIMITS.maxErrorCodes / 2 + 1;
    const codes = (prefix: string): Record<string, number[]> => Object.fromEntries(Array.from({ length: half }, (_, i) => [`${prefix}${i}`, one.series.connected.map(() => 0)]));
    const error = refusal(() => mergeReports([{ ...one, series: { ...one.series, errors: codes('A') } }, { ...two, series: { ...two.series, errors: codes('B') } }]), 'series.errors');
    expect(error.source).toBe('the merged report');
  });

  it('counts that add up past 2^53 are refused, not rounded', () => {
    const [one, two] = [shardReport(1), shardReport(2)];
    refusal(() => mergeReports([{ ...one, published: Number.MAX_SAFE_INTEGER }, { ...two, published: 1 }]), 'published');
  });
});

/** Shard `index` of a game day: one fault, the backend subscriber's count, the emulator's stats, the relay's. */
function gameDayShard(index: 1 | 2, heal: number[], emulatorOk = 1): SimulationReport & Record<string, unknown> {
  const report = shardReport(index);
  const histogram = newLatencyHistogram();
  for (const ms of heal) recordMs(histogram, ms);
  const at = new Date(EPOCH + 1_000 + index).toISOString();
  return {
    ...report,
    run: { ...report.run, client: 'connector', consumer: true, scenario: { name: 'x', seed: 1, faults: [{ kind: 'partition', at: 1, for: 2, devices: { list: [0, 'GID_sim@@@sim-3'] } }] } },
    credentialRefetches: index,
    faults: [{
      id: '1', kind: 'partition', label: null, fault: 0, plannedAtMs: 1_000, plannedForMs: 2_000, startedAt: at, endedAt: at,
      targeted: 2, hit: heal.length, offlineAtStart: 2 - heal.length, healed: heal.length, notHealed: 0, healMs: summarizeHistogram(histogram), healUs: encodeHistogram(histogram),
      messages: { published: 4, accepted: 4, acked: 3, delivered: 3, lost: 1, held: 0, queued: 0, maybeQueued: 0, duplicated: 0, duplicates: 0, refused: 0 }, errors: { ControlFailed: 1 },
    }],
    delivery: { published: 10, accepted: 10, acked: 9, delivered: 9, lost: 1, held: 0, queued: 0, maybeQueued: 0, duplicated: 1, duplicates: 2, refused: 0, foreign: index },
    emulator: { actions: { RegisterDeviceCredential: { ok: emulatorOk, errors: { 'Throttling.User': 1 } } }, rules: { parentTopic: 1 } },
    relay: { relayed: 5, dropped: 1, refused: 2 },
  };
}

describe('a game day\'s report: checked, then merged fault by fault', () => {
  it('accepts what a game day writes, and names its fields at fault', () => {
    expect(parseReport(gameDayShard(1, [100]))).toBeDefined();
    const good = gameDayShard(1, [100]);
    const fault = (good.faults as object[])[0] as Record<string, unknown>;
    refusal(() => parseReport({ ...good, faults: [{ ...fault, kind: 'earthquake' }] }), 'faults[0].kind');
    refusal(() => parseReport({ ...good, faults: [{ ...fault, hit: -1 }] }), 'faults[0].hit');
    refusal(() => parseReport({ ...good, faults: [{ ...fault, offlineAtStart: 0.5 }] }), 'faults[0].offlineAtStart');
    refusal(() => parseReport({ ...good, faults: [{ ...fault, healUs: 'x'.repeat(2_000) }] }), 'faults[0].healUs');
    refusal(() => parseReport({ ...good, faults: [{ ...fault, messages: { published: 1 } }] }), 'faults[0].messages.accepted');
    refusal(() => parseReport({ ...good, delivery: { ...(good.delivery as object), lost: 'none' } }), 'delivery.lost');
    refusal(() => parseReport({ ...good, emulator: { actions: { A: { ok: 1, errors: { X: 1.5 } } }, rules: {} } }), 'emulator.actions.A.errors.X');
    refusal(() => parseReport({ ...good, run: { ...good.run, client: 'mosquitto' } }), 'run.client');
    refusal(() => parseReport({ ...good, faults: Array.from({ length: REPORT_LIMITS.maxFaults + 1 }, () => fault) }), 'faults');
  });

  it('merges the shards: devices and messages added, heal histograms added, the earliest start and latest end', () => {
    const merged = mergeReports([gameDayShard(1, [100, 200]), gameDayShard(2, [5_000])]);
    const [fault] = merged.faults ?? [];
    expect(fault).toMatchObject({ id: '1', targeted: 4, hit: 3, offlineAtStart: 1, healed: 3, notHealed: 0, errors: { ControlFailed: 2 }, startedAt: new Date(EPOCH + 1_001).toISOString(), endedAt: new Date(EPOCH + 1_002).toISOString() });
    expect(fault?.messages).toEqual({ published: 8, accepted: 8, acked: 6, delivered: 6, lost: 2, held: 0, queued: 0, maybeQueued: 0, duplicated: 0, duplicates: 0, refused: 0 });
    expect(fault?.healMs.max).toBeCloseTo(5_000, -1);
    expect(fault?.healMs.p50).toBeCloseTo(200, 0);
    expect(merged.delivery).toEqual({ published: 20, accepted: 20, acked: 18, delivered: 18, lost: 2, held: 0, queued: 0, maybeQueued: 0, duplicated: 2, duplicates: 4, refused: 0, foreign: 3 });
    expect(merged.relay).toEqual({ relayed: 10, dropped: 2, refused: 4 });
    expect(merged.credentialRefetches).toBe(3);
    // Each shard's own embedded emulator: added.
    expect(merged.emulator).toEqual({ actions: { RegisterDeviceCredential: { ok: 2, errors: { 'Throttling.User': 2 } } }, rules: { parentTopic: 2 } });
    // A shard's report written before offlineAtStart was counted: 0, and it merges with a newer one.
    const { offlineAtStart: _offline, ...olderFault } = (gameDayShard(2, [5_000]).faults as FaultReport[])[0] as FaultReport;
    const older = JSON.parse(JSON.stringify({ ...gameDayShard(2, [5_000]), faults: [olderFault] })) as SimulationReport;
    expect(parseReport(older).faults?.[0]?.offlineAtStart).toBe(0);
    expect(mergeReports([gameDayShard(1, [100]), older]).faults?.[0]).toMatchObject({ targeted: 4, hit: 2, offlineAtStart: 1 });
  });

  it('lists the devices not healed: checked field by field, merged as the fleet\'s first 10 by index; an older report without held reads as 0', () => {
    const notHealed = (index: number): NotHealedDevice => ({
      clientId: `GID_sim@@@sim-${index}`, index, lostAt: new Date(EPOCH + 2_000).toISOString(), connects: 4,
      lastConnectAt: new Date(EPOCH + 3_900).toISOString(), nextConnectAt: new Date(EPOCH + 19_400).toISOString(), held: 50,
    });
    const shard = (index: 1 | 2, devices: number[]): SimulationReport => {
      const r = gameDayShard(index, []);
      const [f] = r.faults as FaultReport[];
      return { ...r, faults: [{ ...(f as FaultReport), hit: devices.length, notHealed: devices.length, notHealedDevices: devices.map(notHealed) }] };
    };
    // Shard 1 has devices 0-9 of 20, shard 2 devices 10-19: each lists its own.
    const merged = mergeReports([shard(2, [10, 11, 12]), shard(1, [1, 3, 5, 7, 9, 2, 4, 6, 8])]);
    expect(merged.faults?.[0]?.notHealed).toBe(12);
    expect(merged.faults?.[0]?.notHealedDevices?.map((d) => d.index)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(merged.faults?.[0]?.notHealedDevices?.[0]).toEqual(notHealed(1));
    const good = shard(1, [3]);
    const fault = (good.faults as FaultReport[])[0] as FaultReport;
    const listed = (change: Record<string, unknown>): SimulationReport => ({ ...good, faults: [{ ...fault, notHealedDevices: [{ ...notHealed(3), ...change } as NotHealedDevice] }] });
    expect(parseReport(listed({ lastConnectAt: null, nextConnectAt: null, held: null }))).toBeDefined();
    refusal(() => parseReport(listed({ lostAt: 'yesterday' })), 'faults[0].notHealedDevices[0].lostAt');
    refusal(() => parseReport(listed({ connects: -1 })), 'faults[0].notHealedDevices[0].connects');
    refusal(() => parseReport(listed({ held: '50' })), 'faults[0].notHealedDevices[0].held');
    refusal(() => parseReport({ ...good, faults: [{ ...fault, notHealedDevices: Array.from({ length: REPORT_LIMITS.maxListedDevices + 1 }, () => notHealed(3)) }] }), 'faults[0].notHealedDevices');
    // Written before held, queued and maybeQueued were counted apart (they were in lost then): 0, and it merges with a newer one.
    const { held: _held, queued: _queued, maybeQueued: _maybe, ...olderDelivery } = good.delivery as NonNullable<SimulationReport['delivery']>;
    const older = JSON.parse(JSON.stringify({ ...gameDayShard(2, []), delivery: olderDelivery })) as SimulationReport;
    expect(parseReport(older).delivery).toMatchObject({ held: 0, queued: 0, maybeQueued: 0 });
    expect(mergeReports([good, older]).delivery).toMatchObject({ lost: 2, held: 0, queued: 0, maybeQueued: 0 });
    refusal(() => parseReport({ ...good, delivery: { ...(good.delivery as object), held: -3 } }), 'delivery.held');
    refusal(() => parseReport({ ...good, delivery: { ...(good.delivery as object), queued: 1.5 } }), 'delivery.queued');
  });

  it('one emulator shared by the shards is counted once (the largest of each count), not once per shard', () => {
    const shared = (index: 1 | 2, ok: number): SimulationReport => {
      const r = gameDayShard(index, [], ok);
      return { ...r, run: { ...r.run, target: { kind: 'broker', brokerUrl: 'mqtt://127.0.0.1:1883', instanceId: 'mqtt-x' } } };
    };
    expect(mergeReports([shared(1, 20), shared(2, 18)]).emulator?.actions).toEqual({ RegisterDeviceCredential: { ok: 20, errors: { 'Throttling.User': 1 } } });
  });

  it('shards of different scenarios, or whose fault lists differ, are not of one run', () => {
    const [one, two] = [gameDayShard(1, []), gameDayShard(2, [])];
    expect(() => mergeReports([one, { ...two, run: { ...two.run, scenario: null } }])).toThrow(expect.objectContaining({ code: 'ReportMismatch', message: expect.stringMatching(/scenario is .* in report 1 but null in report 2/) }));
    expect(() => mergeReports([one, { ...two, faults: [] }])).toThrow(expect.objectContaining({ code: 'ReportMismatch', message: expect.stringMatching(/the faults of report 2 are not those of report 1/) }));
  });
});
