/**
 * The HTML report in a real browser: Debian's Chromium, headless, driven by playwright-core. `.ci/run` installs
 * chromium and sets APSARAMQ_REQUIRE_INTEROP=1, so in CI a missing browser fails the run instead of skipping it.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type BrowserContext, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceCredential } from '../../src/credential.js';
import { renderReportHtml } from '../../src/simulator/html.js';
import { runSimulation } from '../../src/simulator/run.js';
import { parseScenario } from '../../src/simulator/scenario.js';
import { mergeReports } from '../../src/simulator/report.js';
import { emulatorTarget } from '../../src/simulator/target.js';
import type { SimulationReport } from '../../src/simulator/report-format.js';
import { tempDir } from '../helpers/cli.js';
import { useEmulator } from '../helpers/emulator.js';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const available = existsSync(CHROMIUM);
if (process.env['APSARAMQ_REQUIRE_INTEROP'] === '1' && !available) throw new Error(`APSARAMQ_REQUIRE_INTEROP=1 but ${CHROMIUM} is missing (apt-get install chromium)`);
const reason = available ? '' : ` (skipped: ${CHROMIUM} is missing; apt-get install chromium)`;

/** The page's colours of the series the test looks for (see PAGE_SCRIPT's COLORS). */
const BLUE = [0x1f, 0x77, 0xb4];
/** delivered/s, drawn last over published/s and acked/s (equal when every message comes back). */
const ORANGE = [0xff, 0x7f, 0x0e];
const GREEN = [0x2c, 0xa0, 0x2c];
/** The colour faults are marked in on every time chart (see PAGE_SCRIPT's FAULT). */
const MAGENTA = [0xe7, 0x29, 0x8a];

interface PageResult {
  consoleErrors: string[];
  foreignRequests: string[];
  charts: string[];
  /** Per chart id: pixels of the canvas drawn in the given colour, and pixels that are not blank at all. */
  pixels: Record<string, { colour: number; drawn: number }>;
  notes: string[];
  /** The faults table, row by row (the header first). */
  faultRows: string[][];
}

/**
 * Runs in the page (as source text: this file is not compiled against the DOM): per chart, counts the canvas pixels
 * drawn in the series' colour and the pixels that are not blank.
 */
const IN_PAGE = `(wanted) => {
  const charts = Object.keys(window.simulationReport.charts).sort();
  const pixels = {};
  for (const id of charts) {
    const canvas = window.simulationReport.charts[id].root.querySelector('canvas');
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const [r, g, b] = wanted[id] || [0, 0, 0];
    let colour = 0;
    let drawn = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] > 0) drawn += 1;
      if (Math.abs(data[i] - r) < 12 && Math.abs(data[i + 1] - g) < 12 && Math.abs(data[i + 2] - b) < 12 && data[i + 3] > 200) colour += 1;
    }
    pixels[id] = { colour, drawn };
  }
  const notes = [...document.querySelectorAll('.empty')].map((e) => e.textContent || '');
  const faultRows = [...document.querySelectorAll('#table-faults tr')].map((tr) => [...tr.children].map((td) => td.textContent));
  return { charts, pixels, notes, faultRows };
}`;

describe.skipIf(!available)(`the HTML report in headless Chromium${reason}`, () => {
  const emulator = useEmulator({ qpsLimit: 10_000 });
  let browser: BrowserContext;
  let profile: string;

  beforeAll(async () => {
    profile = await mkdtemp(join(tmpdir(), 'apsaramq-chromium-'));
    // A persistent context, so the profile is a new empty --user-data-dir of our own (removed afterwards).
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1200, height: 900 },
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  async function open(report: SimulationReport, colours: Record<string, number[]>): Promise<PageResult> {
    const file = join(await tempDir(), 'report.html');
    await writeFile(file, renderReportHtml(report));
    const page = await browser.newPage();
    const consoleErrors: string[] = [];
    const foreignRequests: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') consoleErrors.push(message.text());
    });
    page.on('pageerror', (error) => consoleErrors.push(error.message));
    page.on('request', (request) => {
      if (!/^(file|data):/.test(request.url())) foreignRequests.push(request.url());
    });
    try {
      await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
      await page.waitForFunction('window.simulationReport && window.simulationReport.ready === true', undefined, { timeout: 20_000 });
      const inPage = (await page.evaluate(`(${IN_PAGE})(${JSON.stringify(colours)})`)) as Omit<PageResult, 'consoleErrors' | 'foreignRequests'>;
      return { consoleErrors, foreignRequests, ...inPage };
    } finally {
      await page.close();
    }
  }

  it('draws every chart of a run with subscribers and errors, offline, with no console error', async () => {
    const target = emulatorTarget(emulator());
    // One device with a wrong credential: its refusals are the errors over time.
    const wrong = new DeviceCredential({ clientId: 'GID_html@@@sim-0', instanceId: emulator().instanceId, deviceAccessKeyId: 'DC.nope', deviceAccessKeySecret: 'wrong-secret-0000' });
    await target.provisioner.store?.save(wrong);
    const report = await runSimulation({ target, devices: 30, groupId: 'GID_html', durationMs: 3_000, publishIntervalMs: 100, subscribe: true, connectRate: 20, apiQps: 10_000 });
    expect(report).toMatchObject({ connected: 29, errors: { CredentialRejected: 1 } });
    const result = await open(report, {
      'chart-connected': BLUE,
      'chart-rates': ORANGE,
      'chart-errors': BLUE,
      'chart-connect-latency': BLUE,
      'chart-e2e-latency': GREEN,
    });
    expect(result.consoleErrors).toEqual([]);
    expect(result.foreignRequests).toEqual([]);
    expect(result.charts).toEqual(['chart-connect-latency', 'chart-connected', 'chart-e2e-latency', 'chart-errors', 'chart-rates']);
    for (const [id, { colour, drawn }] of Object.entries(result.pixels)) {
      // Axes and grid alone would not have the series' colour: the line itself was drawn.
      expect(colour, `${id}: pixels of its series colour`).toBeGreaterThan(20);
      expect(drawn, `${id}: non-blank pixels`).toBeGreaterThan(colour);
    }
    expect(result.notes).toEqual([]);
  }, 60_000);

  it('shows a note instead of an empty latency chart when nothing was measured, still without errors', async () => {
    const report = await runSimulation({ target: emulatorTarget(emulator()), devices: 5, groupId: 'GID_html2', durationMs: 0, publishIntervalMs: 0, connectRate: 0, apiQps: 10_000 });
    const result = await open(report, { 'chart-connected': BLUE, 'chart-connect-latency': BLUE });
    expect(result.consoleErrors).toEqual([]);
    expect(result.charts).toEqual(['chart-connect-latency', 'chart-connected', 'chart-errors', 'chart-rates']);
    expect(result.pixels['chart-connected']?.colour).toBeGreaterThan(5);
    expect(result.pixels['chart-connect-latency']?.colour).toBeGreaterThan(5);
    expect(result.notes).toEqual(['No samples: run with --subscribe to measure end-to-end latency.']);
  }, 60_000);

  it('marks every fault of a game day on every time chart, lists them, and draws the time to heal; merged shards too', async () => {
    const scenario = parseScenario({ name: 'marks', faults: [{ at: 1, kind: 'partition', share: 0.5, for: 1, label: 'cut' }, { at: 3, kind: 'broker-restart' }] });
    const common = { target: emulatorTarget(emulator()), devices: 20, groupId: 'GID_htmlgd', durationMs: 8_000, publishIntervalMs: 200, connectRate: 0, apiQps: 10_000, scenario, random: () => 0.1 };
    // Both shards at once against the one emulator: shard 1 restarts it, and the restart hits shard 2's devices too.
    const shards = await Promise.all([runSimulation({ ...common, shard: '1/2' }), runSimulation({ ...common, shard: '2/2' })]);
    const report = mergeReports(shards);
    // Each fault knocked offline every device it found online; one still on its first CONNECT when a fault started (a
    // loaded machine) is offline at its start, not hit. Every device hit is back.
    const faults = report.faults ?? [];
    expect(faults.map((f) => [f.id, f.kind, f.targeted, f.hit + f.offlineAtStart, f.notHealed])).toEqual([['1', 'partition', 10, 10, 0], ['2', 'broker-restart', 20, 20, 0]]);
    for (const f of faults) expect(f.healed).toBe(f.hit);
    const counts = (f: (typeof faults)[number] | undefined): string[] => (f ? [f.targeted, f.hit, f.offlineAtStart, f.healed, f.notHealed].map(String) : []);
    const result = await open(report, { 'chart-connected': MAGENTA, 'chart-rates': MAGENTA, 'chart-errors': MAGENTA, 'chart-heal-latency': MAGENTA });
    expect(result.consoleErrors).toEqual([]);
    expect(result.foreignRequests).toEqual([]);
    expect(result.charts).toEqual(['chart-connect-latency', 'chart-connected', 'chart-errors', 'chart-heal-latency', 'chart-rates']);
    expect(result.notes).toEqual(['No samples: run with --subscribe to measure end-to-end latency.']);
    for (const id of ['chart-connected', 'chart-rates', 'chart-errors', 'chart-heal-latency']) {
      // A line and a label per fault (and the heal curve): far more than anti-aliasing of other colours would give.
      expect(result.pixels[id]?.colour, `${id}: pixels in the faults' colour`).toBeGreaterThan(100);
    }
    expect(result.faultRows.map((row) => row.slice(0, 2).concat(row.slice(4, 9)))).toEqual([
      ['fault', 'kind', 'aimed at', 'hit', 'offline at its start', 'healed', 'not healed'],
      ['1', 'partition (cut)', ...counts(faults[0])],
      ['2', 'broker-restart', ...counts(faults[1])],
    ]);
  }, 90_000);
});
