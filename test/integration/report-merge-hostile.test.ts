/**
 * `report merge` against reports that were tampered with (issue 24): each hostile report is built from a real small
 * report of a real run, written to a file, and merged by the built CLI in its own process with a small heap, so that
 * a merge that allocated out of proportion to its files would abort there (exit 134), not pass.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { mergeReports } from '../../src/simulator/report.js';
import type { SimulationReport } from '../../src/simulator/report-format.js';
import { REPORT_LIMITS } from '../../src/simulator/report-check.js';
import { runSimulation } from '../../src/simulator/run.js';
import { emulatorTarget } from '../../src/simulator/target.js';
import { type BuiltCliRun, runBuiltCli, tempDir } from '../helpers/cli.js';
import { useEmulator } from '../helpers/emulator.js';

/** Far more than these files need (the largest, 200,000 shard records, is 50 MB); far less than the old failures took (8 GB for shards[0].count = 1e9, 3.7 GB for --html of a shard a year off). */
const HEAP = { NODE_OPTIONS: '--max-old-space-size=512' };

const YEAR_MS = 365 * 86_400_000;

describe('report merge: hostile reports are refused or merged, in memory bounded by their size', () => {
  const emulator = useEmulator({ qpsLimit: 10_000 });
  let shards: [SimulationReport, SimulationReport];

  beforeAll(async () => {
    // A real run, in two shards of two devices, with one error counted in each shard.
    const target = emulatorTarget(emulator());
    const run = (shard: string): Promise<SimulationReport> =>
      runSimulation({ target, devices: 4, shard, groupId: 'GID_hostile', connectRate: 0, durationMs: 0, publishIntervalMs: 0, apiQps: 10_000 });
    shards = [await run('1/2'), await run('2/2')];
  });

  /** A copy of a shard's report, changed by `change`. */
  function tampered(index: 0 | 1, change: (report: SimulationReport & Record<string, unknown>) => void): SimulationReport {
    const copy = structuredClone(shards[index]) as SimulationReport & Record<string, unknown>;
    change(copy);
    return copy;
  }

  /** Write the reports (as JSON text, or text as it is) and merge them with the built CLI. */
  async function merge(reports: ReadonlyArray<SimulationReport | string>, extra: string[] = []): Promise<BuiltCliRun & { files: string[] }> {
    const dir = await tempDir();
    const files = await Promise.all(
      reports.map(async (report, i) => {
        const file = join(dir, `shard${i + 1}.json`);
        await writeFile(file, typeof report === 'string' ? report : JSON.stringify(report));
        return file;
      }),
    );
    const run = await runBuiltCli(['report', 'merge', ...files, ...extra.map((a) => (a === '<dir>' ? dir : a))], { env: HEAP });
    return { ...run, files };
  }

  /** The CLI refused the report with InvalidReport naming `field` (exit 2, as its other input errors), on one line. */
  function refused(run: BuiltCliRun, field: string, why: RegExp): void {
    expect(run.code, run.stderr).toBe(2);
    expect(run.stdout).toBe('');
    const line = run.stderr.trim();
    expect(line.split('\n')).toHaveLength(1);
    expect(line).toMatch(/^InvalidReport: \S+shard\d\.json is not a simulation report this version can read: /);
    expect(line).toContain(` ${field} `);
    expect(line).toMatch(why);
  }

  it('the two real shards merge (the baseline of every case below)', async () => {
    const run = await merge(shards, ['--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ devices: 4, connected: 4, shards: [{ index: 1 }, { index: 2 }] });
  });

  it('shards[0].count = 1e9 (aborted V8 with a heap out of memory): InvalidReport naming shards[0].count', async () => {
    refused(await merge([tampered(0, (r) => ((r.shards[0] as { count: number }).count = 1e9)), shards[1]]), 'shards[0].count', /must be an integer from 1 to 4, not 1000000000\./);
  });

  it('one shard shifted by a year (took 3.7 GB for --html, then Invalid string length): ReportMismatch naming series.startMs', async () => {
    const shifted = tampered(1, (r) => (r.series.startMs += YEAR_MS));
    const run = await merge([shards[0], shifted], ['--html', '<dir>/run.html']);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stderr.trim()).toMatch(/^ReportMismatch: These reports are not of the same run: series\.startMs of \S+shard1\.json .* are 36\d(\.\d)? days apart, more than the 31 days a run lasts at most/);
  });

  it('200,000 shard records (UnknownError before): InvalidReport naming shards', async () => {
    const many = tampered(0, (r) => {
      const [one] = r.shards;
      r.shards = Array.from({ length: 200_000 }, (_, i) => ({ ...(one as SimulationReport['shards'][number]), index: i + 1, count: 200_000 }));
    });
    refused(await merge([many, shards[1]]), 'shards', new RegExp(`holds 200000 items, more than the ${REPORT_LIMITS.maxShards} a report may\\.`));
  });

  it('a 200,000-deep run.target (UnknownError before): InvalidReport naming where it nests too deep', async () => {
    const text = JSON.stringify(shards[0]).replace('"target":{', `"target":{"deep":${'{"x":'.repeat(200_000)}1${'}'.repeat(200_000)},`);
    refused(await merge([text, shards[1]]), 'run.target.deep.x.x.x.x.x', /nests deeper than the 8 levels a report has\./);
  });

  it('series.intervalMs 0 (UnknownError before): InvalidReport naming series.intervalMs', async () => {
    refused(await merge([tampered(0, (r) => (r.series.intervalMs = 0)), shards[1]]), 'series.intervalMs', /must be an integer from 1 to \d+, not 0\./);
  });

  it.each([
    ['negative', '-3', /must be an integer of 0 or more, not -3\./],
    ['fractional', '2.5', /must be an integer of 0 or more, not 2\.5\./],
    ['1e309 (Infinity once parsed)', '1e309', /must be an integer of 0 or more, not Infinity\./],
  ])('a %s count (merged silently before): InvalidReport naming it', async (_what, literal, why) => {
    const text = JSON.stringify(shards[0]).replace(/"published":\d+/, `"published":${literal}`);
    refused(await merge([text, shards[1]]), 'published', why);
    const inSeries = JSON.stringify(shards[0]).replace(/"acked":\[\d+/, `"acked":[${literal}`);
    refused(await merge([inSeries, shards[1]]), 'series.acked[0]', why);
  });

  it('error codes named constructor and __proto__ (became "function Object() { [native code] }22", or vanished): merged as plain codes', async () => {
    // JSON.parse makes "__proto__" an own key, as a report read from a file has it.
    const first = tampered(0, (r) => (r.errors = JSON.parse('{"constructor": 22, "__proto__": 5}') as Record<string, number>));
    const second = tampered(1, (r) => (r.errors = JSON.parse('{"__proto__": 1, "toString": 3}') as Record<string, number>));
    const run = await merge([first, second], ['--json']);
    expect(run.code, run.stderr).toBe(0);
    const merged = JSON.parse(run.stdout) as SimulationReport;
    expect(Object.entries(merged.errors)).toEqual([['__proto__', 6], ['constructor', 22], ['toString', 3]]);
    expect(Object.getPrototypeOf(merged.errors)).toBe(Object.prototype);
    // The library's merge, in this process, the same.
    const inProcess = mergeReports([JSON.parse(JSON.stringify(first)) as SimulationReport, JSON.parse(JSON.stringify(second)) as SimulationReport]);
    expect(JSON.parse(JSON.stringify(inProcess.errors))).toEqual(JSON.parse('{"__proto__": 6, "constructor": 22, "toString": 3}'));
  });
});
