#!/usr/bin/env node
// npm run report:demo [-- <dir>]: what the HTML report looks like, for people. Runs a small fleet as two shards
// (two processes of the built CLI, each with its own embedded emulator, started together with --start-at), merges
// their reports with `report merge`, and takes a screenshot of the HTML report in headless Chromium (Debian's
// chromium; CHROMIUM_PATH overrides). Writes shard1.json, shard2.json, fleet.json, fleet.html and fleet.png.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'dist', 'cli', 'bin.js');
const out = resolve(process.argv[2] ?? join(root, 'tmp', 'report-demo'));
const browserPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
if (!existsSync(cli)) throw new Error('Run npm run build first (npm run report:demo does)');
if (!existsSync(browserPath)) throw new Error(`${browserPath} is missing: apt-get install chromium (or set CHROMIUM_PATH)`);
await mkdir(out, { recursive: true });

function run(args) {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('error', fail);
    child.once('exit', (code) => (code === 0 ? done() : fail(new Error(`apsaramq-device ${args.slice(0, 2).join(' ')} exited with ${code}`))));
  });
}

const startAt = new Date(Date.now() + 8_000).toISOString();
const common = ['simulate', '--devices', '600', '--connect-rate', '60', '--duration', '20', '--publish-interval', '1000', '--subscribe', '--start-at', startAt, '--no-progress'];
console.log(`two shards of 600 devices, connecting from ${startAt}…`);
await Promise.all([1, 2].map((i) => run([...common, '--shard', `${i}/2`, '--report', join(out, `shard${i}.json`)])));
await run(['report', 'merge', join(out, 'shard1.json'), join(out, 'shard2.json'), '--output', join(out, 'fleet.json'), '--html', join(out, 'fleet.html')]);

const profile = await mkdtemp(join(tmpdir(), 'apsaramq-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: browserPath,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1200, height: 900 },
});
try {
  const page = await browser.newPage();
  await page.goto(pathToFileURL(join(out, 'fleet.html')).href);
  await page.waitForFunction(() => window.simulationReport?.ready === true);
  await page.screenshot({ path: join(out, 'fleet.png'), fullPage: true });
} finally {
  await browser.close();
  await rm(profile, { recursive: true, force: true });
}
console.log(`report: ${join(out, 'fleet.html')}\nscreenshot: ${join(out, 'fleet.png')}`);
