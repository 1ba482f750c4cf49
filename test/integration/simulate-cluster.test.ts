/**
 * `simulate --redis`: one fleet through one logical broker, the emulator cluster on a real Redis. Against a running
 * cluster (two `emulator --redis` processes of the built CLI) with a backend consumer subscribed to the whole fleet
 * on one of them; and as an embedded cluster (each shard's emulator process joins it). `--shard auto/N` from
 * JOB_COMPLETION_INDEX, as a Kubernetes Indexed Job sets it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { signSignature } from '../../src/signer/mqtt.js';
import { cli, runBuiltCli, spawnCli, tempDir } from '../helpers/cli.js';
import { connectMqtt } from '../helpers/emulator.js';
import { redisAvailable, startRedis } from '../helpers/redis.js';

const { available, skipped } = redisAvailable();
const PORTS = ['--mqtt-port', '0', '--ws-port', '0', '--api-port', '0'];

interface Report {
  devices: number;
  connected: number;
  published: number;
  acked: number;
  shards: Array<{ index: number; count: number }>;
  run: { target: { kind: string; brokerUrl: string | null; instanceId: string | null } };
}

describe.skipIf(!available)(`simulate --redis: one fleet, one logical broker${skipped}`, () => {
  it('--processes 2 against a running cluster: shard I on process I; a consumer subscribed to sim/# on one process receives every device\'s messages', async () => {
    const redis = await startRedis();
    const a = await spawnCli(['emulator', '--redis', redis.url, '--json', ...PORTS]);
    const b = await spawnCli(['emulator', '--redis', redis.url, '--json', ...PORTS]);
    const cluster = JSON.parse(a.firstLine) as { mqttUrl: string; instanceId: string; accessKeyId: string; accessKeySecret: string };
    // A backend consumer (the account's Signature mode) on process A only.
    const consumer = await connectMqtt(cluster.mqttUrl, signSignature({ ...cluster, clientId: 'GID_demo@@@backend-consumer' }));
    const perTopic = new Map<string, number>();
    let received = 0;
    let expected = Number.POSITIVE_INFINITY;
    let allIn: () => void = () => undefined;
    const arrived = new Promise<void>((resolve) => (allIn = resolve));
    consumer.on('message', (topic) => {
      perTopic.set(topic, (perTopic.get(topic) ?? 0) + 1);
      if (++received >= expected) allIn();
    });
    await consumer.subscribeAsync('sim/#', { qos: 1 });
    const dir = await tempDir('sim-cluster-');
    const devices = 200;
    const run = await runBuiltCli(['simulate', '--processes', '2', '--redis', redis.url, '--devices', String(devices), '--duration', '3', '--publish-interval', '1000', '--qos', '1', '--connect-rate', '0', '--no-progress', '--report', join(dir, 'fleet.json')]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain('on the emulator cluster of --redis');
    const report = JSON.parse(await readFile(join(dir, 'fleet.json'), 'utf8')) as Report;
    expect(report.connected).toBe(devices);
    expect(report.acked).toBe(report.published);
    expect(report.run.target).toEqual({ kind: 'broker', brokerUrl: redis.url, instanceId: cluster.instanceId });
    // Every device's messages reached the consumer, whichever process the device was connected to: as many as the
    // broker acknowledged (the last ones may still be on their way from the other process when the run ends).
    expected = report.acked;
    if (received >= expected) allIn();
    await arrived;
    expect(received).toBe(report.acked);
    expect(perTopic.size).toBe(devices);
    await consumer.endAsync();
    // Each process served its shard: both have had clients.
    const stats = await Promise.all([a, b].map(async (p) => (await (await fetch(`${(JSON.parse(p.firstLine) as { apiEndpoint: string }).apiEndpoint}/_emulator/stats`)).json()) as { mqtt: { connacks: Record<string, number> } }));
    for (const s of stats) expect(s.mqtt.connacks['0']).toBeGreaterThanOrEqual(devices / 2);
  });

  it('--processes 2 with no cluster running: each shard\'s emulator process joins the one on --redis (one instance, one log of every Register)', async () => {
    const redis = await startRedis();
    const devices = 60;
    const run = await runBuiltCli(['simulate', '--processes', '2', '--redis', redis.url, '--devices', String(devices), '--duration', '1', '--publish-interval', '500', '--connect-rate', '0', '--no-progress', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as Report;
    expect(report.connected).toBe(devices);
    const client = new Redis(redis.url);
    try {
      expect(await client.xlen('apsaramq-device:log')).toBe(devices);
      expect(await client.hget('apsaramq-device:identity', 'instanceId')).toBe(report.run.target.instanceId);
      // Both embedded processes left when the run ended.
      expect(await client.zcard('apsaramq-device:processes')).toBe(0);
    } finally {
      client.disconnect();
    }
  });
});

describe('simulate --shard auto/N (a Kubernetes Indexed Job)', () => {
  it('takes its shard from JOB_COMPLETION_INDEX + 1', async () => {
    const run = await cli(['simulate', '--shard', 'auto/4', '--devices', '8', '--duration', '0', '--publish-interval', '0', '--no-progress', '--json'], { JOB_COMPLETION_INDEX: '2' });
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as Report;
    expect(report.shards).toEqual([expect.objectContaining({ index: 3, count: 4 })]);
    expect(report.devices).toBe(2);
    expect(report.connected).toBe(2);
  });

  it('is a usage error (exit 2) without the variable, with one that is not a number, or out of range', async () => {
    const cases: Array<[NodeJS.ProcessEnv, RegExp]> = [
      [{}, /--shard auto\/4 takes its index from JOB_COMPLETION_INDEX, which is not set: a Kubernetes Indexed Job \(completionMode: Indexed\) sets it/],
      [{ JOB_COMPLETION_INDEX: 'one' }, /JOB_COMPLETION_INDEX is "one", not a whole number/],
      [{ JOB_COMPLETION_INDEX: '4' }, /JOB_COMPLETION_INDEX is 4, but a Job of 4 completions has indexes 0 to 3/],
    ];
    for (const [env, message] of cases) {
      const run = await cli(['simulate', '--shard', 'auto/4', '--no-progress'], env);
      expect(run.code, JSON.stringify(env)).toBe(2);
      expect(run.stderr).toMatch(message);
    }
  });

  it('--redis with --endpoint, or a --redis that is not a Redis URL, is a usage error', async () => {
    const both = await cli(['simulate', '--redis', 'redis://127.0.0.1:6379', '--endpoint', 'http://127.0.0.1:1', '--instance-id', 'mqtt-x', '--no-progress']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--redis and --endpoint contradict each other');
    const bad = await cli(['simulate', '--redis', 'http://127.0.0.1:6379', '--no-progress']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--redis must be a redis:// or rediss:// URL');
  });
});
