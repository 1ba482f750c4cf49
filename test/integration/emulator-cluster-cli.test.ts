/**
 * The emulator cluster as users run it: `emulator --redis URL` processes of the built CLI, each its own Node process,
 * on a real Redis (Debian's redis-server on a free port); and `emulator --cluster N`, which starts them (and a
 * redis-server) itself and stops them all on Ctrl+C.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { CLI_BIN, spawnCli, startCli } from '../helpers/cli.js';
import { callApi, connackCode, connectMqtt, connectWithInbox, registerDevice } from '../helpers/emulator.js';
import { closedPort } from '../helpers/http.js';
import { alive, childProcesses } from '../helpers/processes.js';
import { redisAvailable, startRedis } from '../helpers/redis.js';

const { available, skipped } = redisAvailable();

/** What a process prints with --json: enough of an Emulator for the helpers that call its OpenAPI. */
interface Line {
  mqttUrl: string;
  apiEndpoint: string;
  instanceId: string;
  accessKeyId: string;
  accessKeySecret: string;
  cluster: { processId: string; redisUrl: string };
}

const PORTS = ['--mqtt-port', '0', '--ws-port', '0', '--api-port', '0'];
const IMMEDIATE = ['--offline-delivery', 'immediate'];

/** A port that was free a moment ago, with the one after it. */
async function twoClosedPorts(): Promise<number> {
  for (;;) {
    const first = createServer();
    await new Promise<void>((ok) => first.listen(0, '127.0.0.1', () => ok()));
    const port = (first.address() as AddressInfo).port;
    const second = createServer();
    const both = await new Promise<boolean>((ok) => {
      second.once('error', () => ok(false));
      second.listen(port + 1, '127.0.0.1', () => ok(true));
    });
    await new Promise<void>((ok) => first.close(() => ok()));
    if (both) {
      await new Promise<void>((ok) => second.close(() => ok()));
      return port;
    }
  }
}

/** An `emulator --redis` process of the built CLI, with generated keys (no account in its environment). */
async function processOn(url: string, extra: string[] = []): Promise<{ line: Line; emulator: Emulator; stop: (signal?: NodeJS.Signals) => Promise<number | null>; pid: number }> {
  const child = await spawnCli(['emulator', '--redis', url, '--json', ...PORTS, ...extra]);
  const line = JSON.parse(child.firstLine) as Line;
  return { line, emulator: line as unknown as Emulator, stop: child.stop, pid: child.child.pid as number };
}

const clients: MqttClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
});
function keep<T extends MqttClient>(client: T): T {
  clients.push(client);
  return client;
}

describe.skipIf(!available)(`emulator --redis: separate processes on one Redis are one service${skipped}`, () => {
  it('registered through A, connects at B; a demo/# subscriber on A gets every QoS 1 message published on B; a persistent subscriber of B gets its queue from A; QuerySession through A sees B\'s device; A killed and started again loses no credential', async () => {
    const redis = await startRedis();
    // Queued messages right behind the CONNACK: the cloud's pace would hold the resumed session's queue 5-10 s
    // (the pace, clustered, is emulator-cluster.test.ts's, on timers of the test's own).
    const a = await processOn(redis.url, IMMEDIATE);
    const b = await processOn(redis.url, IMMEDIATE);
    // B adopted the instance and the key pair A generated (the cluster keeps them).
    expect([b.line.instanceId, b.line.accessKeyId, b.line.accessKeySecret]).toEqual([a.line.instanceId, a.line.accessKeyId, a.line.accessKeySecret]);
    expect(a.line.cluster.redisUrl).toBe(redis.url);

    const device = await registerDevice(a.emulator, 'GID_demo@@@dev-1');
    expect(await connackCode(b.line.mqttUrl, signDeviceCredential(device))).toBe(0);

    const watcher = await registerDevice(a.emulator, 'GID_demo@@@watcher');
    const subscriber = await connectWithInbox(a.line.mqttUrl, signDeviceCredential(watcher));
    keep(subscriber.client);
    await subscriber.client.subscribeAsync('demo/#', { qos: 1 });
    const publisher = keep(await connectMqtt(b.line.mqttUrl, signDeviceCredential(device)));
    const count = 200;
    await Promise.all(Array.from({ length: count }, (_, i) => publisher.publishAsync(`demo/${i % 7}`, `m${i}`, { qos: 1 })));
    const got = new Set<string>();
    for (let i = 0; i < count; i++) got.add((await subscriber.next())[1]);
    expect(got.size).toBe(count);

    const keeper = await registerDevice(b.emulator, 'GID_demo@@@keeper');
    const first = keep(await connectMqtt(b.line.mqttUrl, signDeviceCredential(keeper), { clean: false }));
    await first.subscribeAsync('demo/held', { qos: 1 });
    await first.endAsync();
    for (let i = 0; i < 25; i++) await publisher.publishAsync('demo/held', `h${i}`, { qos: 1 });
    const back = await connectWithInbox(a.line.mqttUrl, signDeviceCredential(keeper), { clean: false });
    keep(back.client);
    expect(back.sessionPresent).toBe(true);
    for (let i = 0; i < 25; i++) expect(await back.next()).toEqual(['demo/held', `h${i}`]);

    // dev-1 is connected to B (as the publisher): A answers for it.
    const online = await callApi<{ OnlineStatus: boolean }>(a.emulator, 'QuerySessionByClientId', { ClientId: 'GID_demo@@@dev-1', InstanceId: a.line.instanceId });
    expect(online.OnlineStatus).toBe(true);

    await a.stop('SIGKILL');
    const again = await processOn(redis.url, IMMEDIATE);
    expect(again.line.accessKeySecret).toBe(a.line.accessKeySecret);
    for (const credential of [device, watcher, keeper]) expect(await connackCode(again.line.mqttUrl, signDeviceCredential(credential))).toBe(0);
    const fetched = await callApi<{ DeviceCredential: { DeviceAccessKeySecret: string } }>(again.emulator, 'GetDeviceCredential', { ClientId: 'GID_demo@@@dev-1', InstanceId: again.line.instanceId });
    expect(fetched.DeviceCredential.DeviceAccessKeySecret).toBe(device.deviceAccessKeySecret);
  });

  it('a process with other rule flags, or another instance, is refused with EmulatorClusterMismatch naming the difference', async () => {
    const redis = await startRedis();
    await processOn(redis.url);
    const flags = await startCli(['emulator', '--redis', redis.url, '--json', ...PORTS, '--max-subscriptions', '100']).exit;
    const instance = startCli(['emulator', '--redis', redis.url, '--json', ...PORTS, '--instance-id', 'mqtt-other']);
    expect(flags.code).toBe(1);
    expect((await instance.exit).code).toBe(1);
    expect(instance.stderr()).toMatch(/^EmulatorClusterMismatch: The cluster at redis:\/\/127\.0\.0\.1:\d+ serves instance mqtt-emu-[0-9a-z]{8}, not mqtt-other/);
  });

  it('says which option differs', async () => {
    const redis = await startRedis();
    await processOn(redis.url);
    const other = startCli(['emulator', '--redis', redis.url, '--json', ...PORTS, '--max-subscriptions', '100']);
    await other.exit;
    expect(other.stderr()).toMatch(/^EmulatorClusterMismatch: .*maxSubscriptions is 30 there, 100 here/);
  });

  it('a Redis that is not there fails at once with EmulatorClusterUnavailable, its password hidden', async () => {
    const port = await closedPort();
    const run = startCli(['emulator', '--redis', `redis://:s3cret-pass@127.0.0.1:${port}/2`, ...PORTS]);
    expect((await run.exit).code).toBe(1);
    expect(run.stderr()).toMatch(new RegExp(`^EmulatorClusterUnavailable: The emulator cannot reach the cluster's Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port}/2 `));
    expect(run.stderr()).not.toContain('s3cret-pass');
  });

  it('--redis with --data-dir or --ephemeral is a usage error (exit 2)', async () => {
    for (const flag of [['--data-dir', '/tmp/x'], ['--ephemeral']]) {
      const run = startCli(['emulator', '--redis', 'redis://127.0.0.1:6379', ...flag, ...PORTS]);
      expect((await run.exit).code, flag[0]).toBe(2);
      expect(run.stderr()).toContain(`${flag[0]} and --redis contradict each other`);
    }
  });

  it('without ioredis, mqemitter-redis or aedes-persistence-redis, --redis names them (MissingDependency)', async () => {
    const hook = resolve(import.meta.dirname, '../helpers/hide-packages.mjs');
    const { code, stderr } = await promisify(execFile)(process.execPath, ['--import', hook, CLI_BIN, 'emulator', '--redis', 'redis://127.0.0.1:1', ...PORTS], { env: { PATH: process.env['PATH'], APSARAMQ_TEST_HIDE_PACKAGES: 'mqemitter-redis' } }).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    expect(code).toBe(1);
    expect(stderr).toMatch(/^MissingDependency: The emulator's redis option \(emulator --redis, --cluster\) needs the package mqemitter-redis, which is not installed .* npm install ioredis@\^5\.6\.1 mqemitter-redis@~7\.2\.1 aedes-persistence-redis@~11\.2\.2\n$/);
  });
});

describe.skipIf(!available)(`emulator --cluster N${skipped}`, () => {
  it('starts N processes and a redis-server, prints every endpoint on one line, serves as one, and leaves no process after Ctrl+C', async () => {
    const run = startCli(['emulator', '--cluster', '2', '--json'], {}, { detached: true });
    const line = await new Promise<string>((resolveLine, reject) => {
      run.child.stdout?.on('data', () => {
        const first = run.stdout().split('\n')[0];
        if (run.stdout().includes('\n') && first) resolveLine(first);
      });
      void run.exit.then(() => reject(new Error(`exited before its line: ${run.stderr()}`)));
    });
    const cluster = JSON.parse(line) as { redisUrl: string; redisStarted: boolean; instanceId: string; accessKeyId: string; accessKeySecret: string; processes: Array<{ processId: string; mqttUrl: string; apiEndpoint: string }> };
    expect(cluster.redisStarted).toBe(true);
    expect(cluster.processes).toHaveLength(2);
    const [one, two] = cluster.processes as unknown as [{ mqttUrl: string; apiEndpoint: string }, { mqttUrl: string; apiEndpoint: string }];
    expect(new Set([one.mqttUrl, two.mqttUrl]).size).toBe(2);
    const first = { ...cluster, apiEndpoint: one.apiEndpoint } as unknown as Emulator;
    const credential = await registerDevice(first, 'GID_demo@@@c-1');
    expect(await connackCode(two.mqttUrl, signDeviceCredential(credential))).toBe(0);

    const parent = run.child.pid as number;
    const children = [...childProcesses(parent, 'emulator'), ...childProcesses(parent, 'redis-server')];
    expect(children).toHaveLength(3);
    process.kill(parent, 'SIGINT');
    expect((await run.exit).code).toBe(0);
    for (const pid of children) expect(alive(pid), `pid ${pid}`).toBe(false);
  });

  it('a cluster whose parent is killed (SIGKILL) stops by itself: its processes and its redis-server go too', async () => {
    const run = startCli(['emulator', '--cluster', '2', '--json', '--no-ws'], {}, { detached: true });
    const line = await new Promise<string>((resolveLine, reject) => {
      run.child.stdout?.on('data', () => {
        if (run.stdout().includes('\n')) resolveLine(run.stdout().split('\n')[0] as string);
      });
      void run.exit.then(() => reject(new Error(`exited before its line: ${run.stderr()}`)));
    });
    const cluster = JSON.parse(line) as { redisUrl: string; processes: Array<{ mqttUrl: string }> };
    // A connection to each of them closes when it goes: an event, not a poll of the process table.
    const sockets = await Promise.all([cluster.redisUrl, ...cluster.processes.map((p) => p.mqttUrl)].map(async (url) => {
      const socket = connect(Number(new URL(url).port), '127.0.0.1');
      socket.on('error', () => undefined);
      await once(socket, 'connect');
      return socket;
    }));
    const ends = sockets.map((socket) => once(socket, 'close'));
    process.kill(run.child.pid as number, 'SIGKILL');
    await Promise.all(ends);
  });

  it('--cluster on a given --redis starts no redis-server and takes the given ports plus each index', async () => {
    const redis = await startRedis();
    const base = await twoClosedPorts();
    const run = startCli(['emulator', '--cluster', '2', '--redis', redis.url, '--json', '--mqtt-port', String(base), '--no-ws', '--api-port', '0'], {}, { detached: true });
    const line = await new Promise<string>((resolveLine, reject) => {
      run.child.stdout?.on('data', () => {
        if (run.stdout().includes('\n')) resolveLine(run.stdout().split('\n')[0] as string);
      });
      void run.exit.then(() => reject(new Error(`exited before its line: ${run.stderr()}`)));
    });
    const cluster = JSON.parse(line) as { redisStarted: boolean; processes: Array<{ mqttUrl: string; wsUrl: string | null }> };
    expect(cluster.redisStarted).toBe(false);
    expect(cluster.processes.map((p) => p.mqttUrl)).toEqual([`mqtt://127.0.0.1:${base}`, `mqtt://127.0.0.1:${base + 1}`]);
    expect(cluster.processes.map((p) => p.wsUrl)).toEqual([null, null]);
    expect(childProcesses(run.child.pid as number, 'redis-server')).toEqual([]);
    process.kill(run.child.pid as number, 'SIGTERM');
    expect((await run.exit).code).toBe(0);
  });
});
