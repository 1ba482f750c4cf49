/**
 * Metrics: the gateway's (prom-client, an optional peer) after real connects and deliveries against the emulator,
 * the typed error without prom-client, and the emulator's own statistics as Prometheus text at GET /metrics.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Gateway } from '../../src/gateway/gateway.js';
import { GATEWAY_METRIC_NAMES } from '../../src/gateway/metrics.js';
import { prometheusText } from '../../src/emulator/prometheus.js';
import { openOutboxStore } from '../../src/outbox/index.js';
import { tempDir } from '../helpers/cli.js';
import { registerDevice, useEmulator } from '../helpers/emulator.js';
import { REPO_ROOT } from '../helpers/package.js';

const run = promisify(execFile);
const emulator = useEmulator();

/** The value of one series of a Prometheus text, e.g. `name{a="x",b="y"}` (labels in any order); undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const key = (s: string): string => {
    const brace = s.indexOf('{');
    return brace < 0 ? s : `${s.slice(0, brace)}{${s.slice(brace + 1, -1).split(',').sort().join(',')}}`;
  };
  const wanted = key(series);
  const line = text.split('\n').find((l) => !l.startsWith('#') && key(l.slice(0, l.lastIndexOf(' '))) === wanted);
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Every line is a comment or `name{labels} value`: what a Prometheus scraper parses. */
function wellFormed(text: string): void {
  for (const line of text.trimEnd().split("\n").filter((l) => l !== "")) {
    expect(line).toMatch(/^(# (HELP|TYPE) [a-z_:][a-z0-9_:]* .+|[a-z_:][a-z0-9_:]*(\{([a-z_][a-z0-9_]*="([^"\\\n]|\\["\\n])*",?)*\})? (-?[0-9.e+-]+|\+Inf|NaN))$/);
  }
}

describe('gateway metrics', () => {
  it('count devices by state, connects by outcome, publishes, the outbox and the latencies, under apsaramq_device_', async () => {
    const e = emulator();
    const ids = ['GID_met@@@a', 'GID_met@@@b', 'GID_met@@@c'];
    const credentials = new Map(await Promise.all(ids.map(async (id) => [id, await registerDevice(e, id)] as const)));
    const outbox = await openOutboxStore({ dir: await tempDir('metrics-') });
    onTestFinished(() => outbox.close());
    const g = new Gateway({ outbox, credentials: (id) => async () => credentials.get(id) as never, connect: { brokerUrl: e.mqttUrl }, connectRate: 1000 });
    onTestFinished(() => g.close({ deadlineMs: 0 }));
    const metrics = await g.metrics({ labels: { gateway: 'line-3' } });
    expect(await g.metrics()).toBe(metrics);
    for (const id of ids) g.add(id);
    const allOnline = new Promise<void>((resolve) => g.on('device', () => g.counts.states.online === 3 && resolve()));
    g.start();
    await allOnline;
    let delivered = 0;
    const deliveredAll = new Promise<void>((resolve) => g.on('delivered', () => ++delivered === 4 && resolve()));
    for (let i = 0; i < 4; i++) await g.publish(ids[i % 3] as string, 'demo/met', `m${i}`);
    await deliveredAll;
    await outbox.flush();

    const text = await metrics.text();
    wellFormed(text);
    expect(metrics.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const name of GATEWAY_METRIC_NAMES) expect(text, name).toContain(`# TYPE ${name} `);
    expect(sample(text, 'apsaramq_device_devices{state="online",gateway="line-3"}')).toBe(3);
    expect(sample(text, 'apsaramq_device_devices{state="backing_off",gateway="line-3"}')).toBe(0);
    expect(sample(text, 'apsaramq_device_connects_total{outcome="accepted",gateway="line-3"}')).toBe(3);
    expect(sample(text, 'apsaramq_device_reconnects_total{outcome="accepted",gateway="line-3"}')).toBe(0);
    expect(sample(text, 'apsaramq_device_publishes_accepted_total{gateway="line-3"}')).toBe(4);
    expect(sample(text, 'apsaramq_device_publishes_delivered_total{gateway="line-3"}')).toBe(4);
    expect(sample(text, 'apsaramq_device_publishes_dropped_total{reason="expired",gateway="line-3"}')).toBe(0);
    expect(sample(text, 'apsaramq_device_outbox_messages{gateway="line-3"}')).toBe(0);
    expect(sample(text, 'apsaramq_device_connect_duration_seconds_count{outcome="accepted",kind="first",gateway="line-3"}')).toBe(3);
    expect(sample(text, 'apsaramq_device_delivery_duration_seconds_count{gateway="line-3"}')).toBe(4);

    // A reconnect after the broker dropped a device.
    const back = new Promise<void>((resolve) => g.on('connect', ({ reconnect }) => reconnect && resolve()));
    e.disconnect('GID_met@@@a');
    await back;
    expect(sample(await metrics.text(), 'apsaramq_device_reconnects_total{outcome="accepted",gateway="line-3"}')).toBe(1);
  });

  it('register into the application\'s own prom-client registry', async () => {
    const outbox = await openOutboxStore({ dir: await tempDir('metrics-') });
    onTestFinished(() => outbox.close());
    const g = new Gateway({ outbox, credentials: () => async () => undefined as never, connect: {} });
    onTestFinished(() => g.close());
    const registry = new Registry();
    const metrics = await g.metrics({ registry });
    expect(metrics.registry).toBe(registry);
    expect(await registry.metrics()).toContain('apsaramq_device_devices{state="online"} 0');
  });

  it('without prom-client, metrics() rejects with MissingDependency naming the package; the gateway itself works without it', async () => {
    // prom-client hidden from the resolver, as in a project that did not install the optional peer.
    const hook = `data:text/javascript,${encodeURIComponent(
      "export async function resolve(s, c, next) { if (s === 'prom-client') { const e = new Error('Cannot find package prom-client'); e.code = 'ERR_MODULE_NOT_FOUND'; throw e; } return next(s, c); }",
    )}`;
    const script = `
      import { register } from 'node:module';
      register(${JSON.stringify(hook)});
      const { Gateway } = await import(${JSON.stringify(join(REPO_ROOT, 'dist/gateway/index.js'))});
      const outbox = { on() {}, off() {}, stats: () => ({ messages: 0, bytes: 0 }), device: () => ({ messages: 0, bytes: 0 }) };
      const g = new Gateway({ outbox, credentials: () => undefined, connect: {} });
      g.add('GID_x@@@y');
      try { await g.metrics(); console.log('no error'); } catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message, remedy: e.remedy })); }
      await g.close();`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO_ROOT });
    expect(JSON.parse(stdout)).toEqual({
      name: 'ConfigurationError',
      code: 'MissingDependency',
      message: expect.stringContaining('npm install prom-client'),
      remedy: expect.stringContaining('npm install prom-client'),
    });
  });
});

describe('the emulator serves its statistics as Prometheus text at GET /metrics', () => {
  it('connected clients, accepted CONNECTs, CONNACK codes, OpenAPI calls by action and code; an RPC call on /metrics stays an RPC call', async () => {
    const e = emulator();
    const before = await (await fetch(`${e.apiEndpoint}/metrics`)).text();
    const accepted = sample(before, 'apsaramq_emulator_connects_accepted_total') ?? 0;
    await registerDevice(e, 'GID_met@@@scraped');
    const response = await fetch(`${e.apiEndpoint}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const text = await response.text();
    wellFormed(text);
    expect(sample(text, 'apsaramq_emulator_connected_clients')).toBe(e.stats().mqtt.connected);
    expect(sample(text, 'apsaramq_emulator_connects_accepted_total')).toBe(accepted);
    expect(sample(text, 'apsaramq_emulator_api_calls_total{action="RegisterDeviceCredential",code="ok"}')).toBeGreaterThanOrEqual(1);
    // With an Action, /metrics is the API's path like any other (the real gateway ignores the path).
    const rpc = await fetch(`${e.apiEndpoint}/metrics?Action=ListGroupId&Format=JSON`);
    expect(rpc.headers.get('content-type')).toMatch(/json/);
  });

  it('escapes label values as the text format requires', () => {
    const text = prometheusText({ actions: { 'a"b\\c\nd': { ok: 1, errors: {} } }, mqtt: { connected: 0, connacks: { '0': 2 }, rules: {}, queues: { sessions: 0, messages: 0, bytes: 0, largestMessages: 0, largestBytes: 0 } } });
    expect(text).toContain('apsaramq_emulator_api_calls_total{action="a\\"b\\\\c\\nd",code="ok"} 1');
    expect(text).toContain('apsaramq_emulator_connects_accepted_total 2');
    wellFormed(text);
  });
});
