#!/usr/bin/env node
// Issue 18's "Done when", by hand (minutes; not part of `npm run bench`): DEVICES devices in one `gateway` process
// against the emulator in its own process. The broker's view of the connect rate is scraped from the emulator's
// GET /metrics once a second (apsaramq_emulator_connects_accepted_total), as Prometheus would; the gateway's
// /metrics must show every device online. Then MESSAGES messages go in on stdin, half of them while the emulator
// emulator's broker is down (POST /_emulator/restart {"downMs"}: the broker and its listeners close, every
// connection is dropped, CONNECTs are refused meanwhile, then it listens again on the same ports): every device must
// return at the pace, and every message reported accepted must be reported delivered (none lost from the outbox).
// The emulator is ephemeral: with --data-dir it writes its whole state on every registration, which makes
// registering 10,000 devices take many minutes; a process restart would then forget them, hence the broker restart.
// Last, SIGHUP with a --devices file that drops 100 devices and adds 100 others: the broker must see exactly 100
// CONNECTs, still DEVICES clients connected, and the gateway no reconnect (no other session touched).
// Usage: node bench/gateway-fleet-run.mjs [devices=10000] [connectRate=500] [messages=10000] [downSeconds=10]
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI } from './lib/child.mjs';

const [devices = 10_000, rate = 500, messages = 10_000, downSeconds = 10] = process.argv.slice(2).map(Number);
const KEYS = { ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIfleetrun', ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'fleet-run-secret' };
const INSTANCE = 'mqtt-fleet-run';
const dir = await mkdtemp(join(tmpdir(), 'gateway-fleet-'));
const log = (text) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${text}`);

async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}
const mqttPort = await freePort();
const apiPort = await freePort();
const api = `http://127.0.0.1:${apiPort}`;

function node(args, { stdin = 'ignore', env = {} } = {}) {
  const child = spawn('/bin/sh', ['-c', 'ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"', process.execPath, CLI, ...args], { stdio: [stdin, 'pipe', 'pipe'], env: { PATH: process.env.PATH, ...KEYS, ...env } });
  child.stderrText = '';
  child.stderr.on('data', (d) => (child.stderrText += d));
  return child;
}

async function startEmulator() {
  for (;;) {
    try {
      return await startEmulatorOnce();
    } catch (error) {
      // The data directory's lock of the process just stopped is taken over once stale (10 s).
      if (!/EmulatorStateBusy/.test(error.message)) throw error;
      await sleep(1000);
    }
  }
}

async function startEmulatorOnce() {
  const child = node(['emulator', '--mqtt-port', String(mqttPort), '--api-port', String(apiPort), '--no-ws', '--instance-id', INSTANCE, '--ephemeral', '--groups', '*', '--qps-limit', '5000']);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the emulator exited: ${child.stderrText}`);
    try {
      if ((await fetch(`${api}/metrics`)).ok) return child;
    } catch {
      await sleep(100);
    }
  }
}

async function scrape(url) {
  const text = await (await fetch(url)).text();
  const value = (series) => Number(text.split('\n').find((l) => l.startsWith(`${series} `))?.split(' ')[1] ?? Number.NaN);
  return value;
}

/**
 * Sample the broker's accepted-CONNECT counter about once a second until `until()`; returns the rate of each
 * interval (CONNECTs over the interval's own length, so a slow scrape does not read as a slow broker).
 */
async function brokerRate(until) {
  const rates = [];
  let total = 0;
  let last = { t: performance.now(), n: (await scrape(`${api}/metrics`))('apsaramq_emulator_connects_accepted_total') };
  for (;;) {
    await sleep(1000);
    const now = { t: performance.now(), n: (await scrape(`${api}/metrics`))('apsaramq_emulator_connects_accepted_total') };
    rates.push(Math.round(((now.n - last.n) * 1000) / (now.t - last.t)));
    total += now.n - last.n;
    last = now;
    if (await until()) return { rates, total };
  }
}

function summary({ rates, total }, label) {
  // Whole intervals only: the first and the last of a wave are partial.
  const whole = rates.slice(1, -1).filter((d) => d > 0);
  const mean = whole.reduce((a, b) => a + b, 0) / Math.max(1, whole.length);
  const worst = Math.max(...whole.map((d) => Math.abs(d - rate) / rate));
  log(`${label}: broker saw ${total} CONNECTs in ${rates.length} s; per second ${JSON.stringify(rates)}; whole seconds: mean ${mean.toFixed(1)}/s (${((mean / rate - 1) * 100).toFixed(1)}% from ${rate}/s), min ${Math.min(...whole)}, max ${Math.max(...whole)}, worst second ${(worst * 100).toFixed(1)}% off`);
  return { seconds: rates.length, perSecond: rates, mean, worst };
}

let emulator = await startEmulator();
log(`emulator on mqtt://127.0.0.1:${mqttPort}, ${api}; provisioning ${devices} devices`);
const ids = Array.from({ length: devices }, (_, i) => `GID_fleet@@@dev-${i}`);
const HUP = 100;
const provision = node(['provision', '--instance-id', INSTANCE, '--group-id', 'GID_fleet', '--count', String(devices + HUP), '--qps', '4000', '--concurrency', '128', '--strategy', 'register-first', '--store', join(dir, 'store'), '--endpoint', api, '--json']);
const [provisionCode] = await once(provision, 'exit');
if (provisionCode !== 0) throw new Error(`provision failed: ${provision.stderrText}`);
await writeFile(join(dir, 'devices.txt'), `${ids.join('\n')}\n`);

const gateway = node(
  ['gateway', '--devices', join(dir, 'devices.txt'), '--outbox', join(dir, 'outbox'), '--store', join(dir, 'store'), '--instance-id', INSTANCE, '--broker-url', `mqtt://127.0.0.1:${mqttPort}`, '--connect-rate', String(rate), '--metrics-port', '0', '--drain-timeout-ms', '30000'],
  { stdin: 'pipe', env: { ALIBABA_CLOUD_ACCESS_KEY_ID: '', ALIBABA_CLOUD_ACCESS_KEY_SECRET: '' } },
);
const reports = { accepted: 0, delivered: 0, dropped: 0, errors: 0 };
createInterface({ input: gateway.stdout }).on('line', (line) => {
  const r = JSON.parse(line);
  if (r.accepted) reports.accepted += 1;
  else if (r.delivered) reports.delivered += 1;
  else if (r.dropped) reports.dropped += 1;
  else if (r.error) reports.errors += 1;
});
let metricsUrl;
while (!(metricsUrl = /^metrics: (\S+)$/m.exec(gateway.stderrText)?.[1])) await sleep(100);
const online = async () => (await scrape(metricsUrl))('apsaramq_device_devices{state="online"}');
const started = performance.now();
const first = summary(await brokerRate(async () => (await online()) === devices), 'start');
log(`gateway /metrics: apsaramq_device_devices{state="online"} ${await online()} after ${((performance.now() - started) / 1000).toFixed(1)} s; gateway RSS ${(Number((await import('node:fs')).readFileSync(`/proc/${gateway.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)?.[1]) / 1024).toFixed(0)} MB`);

const line = (i) => `${JSON.stringify({ id: `m-${i}`, clientId: ids[i % devices], topic: 'demo/fleet', payload: `reading ${i}` })}\n`;
for (let i = 0; i < messages / 2; i++) gateway.stdin.write(line(i));
while (reports.accepted < messages / 2) await sleep(100);
log(`${reports.accepted} accepted, ${reports.delivered} delivered before the broker restarts`);
const restart = fetch(`${api}/_emulator/restart`, { method: 'POST', body: JSON.stringify({ downMs: downSeconds * 1000 }) });
await sleep(200);
log(`broker down for ${downSeconds} s; ${messages / 2} more messages meanwhile`);
for (let i = messages / 2; i < messages; i++) gateway.stdin.write(line(i));
if (!(await restart).ok) throw new Error('POST /_emulator/restart failed');
const restarted = performance.now();
log(`broker listening again (same ports); ${reports.delivered} delivered so far`);
const second = summary(await brokerRate(async () => (await online()) === devices), 'after the restart');
log(`all ${await online()} back online ${((performance.now() - restarted) / 1000).toFixed(1)} s after the restart`);
while (reports.delivered < reports.accepted && performance.now() - restarted < 300_000) await sleep(200);
const gm = await scrape(metricsUrl);
log(`messages: ${reports.accepted} accepted, ${reports.delivered} delivered, ${reports.dropped} dropped, ${reports.errors} error lines; lost ${reports.accepted - reports.delivered - reports.dropped}; outbox now ${gm('apsaramq_device_outbox_messages')} messages; reconnects accepted ${gm('apsaramq_device_reconnects_total{outcome="accepted"}')}, failed ${gm('apsaramq_device_reconnects_total{outcome="failed"}')}`);
const emu = await scrape(`${api}/metrics`);
const connectsBefore = emu('apsaramq_emulator_connects_accepted_total');
const reconnectsBefore = gm('apsaramq_device_reconnects_total{outcome="accepted"}');
const hupIds = [...ids.slice(HUP), ...Array.from({ length: HUP }, (_, i) => `GID_fleet@@@dev-${devices + i}`)];
await writeFile(join(dir, 'devices.txt'), `${hupIds.join('\n')}\n`);
gateway.kill('SIGHUP');
while (!/^removed: /m.test(gateway.stderrText)) await sleep(100);
while ((await online()) !== devices) await sleep(100);
await sleep(1000);
const emuAfter = await scrape(`${api}/metrics`);
const hup = {
  connects: emuAfter('apsaramq_emulator_connects_accepted_total') - connectsBefore,
  connected: emuAfter('apsaramq_emulator_connected_clients'),
  reconnects: (await scrape(metricsUrl))('apsaramq_device_reconnects_total{outcome="accepted"}') - reconnectsBefore,
};
log(`SIGHUP (-${HUP} +${HUP}): ${/^reloaded .*$/m.exec(gateway.stderrText)?.[0]}; the broker saw ${hup.connects} CONNECTs, ${hup.connected} clients connected; the gateway's reconnects +${hup.reconnects}`);
gateway.stdin.end();
const [gatewayCode] = await once(gateway, 'exit');
log(`gateway exited ${gatewayCode}: ${gateway.stderrText.trim().split('\n').at(-1)}`);
emulator.kill('SIGTERM');
await once(emulator, 'exit');
await rm(dir, { recursive: true, force: true });
console.log(JSON.stringify({ devices, rate, messages, downSeconds, start: { seconds: first.seconds, mean: first.mean, worst: first.worst }, restart: { seconds: second.seconds, mean: second.mean, worst: second.worst }, ...reports, hup }));
