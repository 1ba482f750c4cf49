/**
 * The emulator as a cluster (the `redis` option): two emulators in this process on one real Redis (Debian's
 * redis-server, started on a free port) are one logical service. The processes-of-their-own version of the main
 * scenario is test/integration/emulator-cluster-cli.test.ts; this file checks each rule and control clustered.
 */
import { once } from 'node:events';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { apiFailure, callApi, connackCode, connectMqtt, connectWithInbox, registerDevice, signedCall, commonParams } from '../helpers/emulator.js';
import { redisAvailable, startRedis, type TestRedis } from '../helpers/redis.js';

const { available, skipped } = redisAvailable();

const started: Emulator[] = [];
const clients: MqttClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
  await Promise.all(started.splice(0).map((e) => e.close()));
});

async function member(redis: TestRedis, options: EmulatorOptions = {}): Promise<Emulator> {
  const emulator = await startEmulator({ env: {}, redis: redis.url, ...options });
  started.push(emulator);
  return emulator;
}

function keep(client: MqttClient): MqttClient {
  clients.push(client);
  return client;
}

describe.skipIf(!available)(`emulator cluster on Redis${skipped}`, () => {
  it('two emulators share the instance, the account and the credentials: registered through A, a device logs in at B', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    expect(b.instanceId).toBe(a.instanceId);
    expect(b.accessKeyId).toBe(a.accessKeyId);
    expect(b.accessKeySecret).toBe(a.accessKeySecret);
    expect(a.cluster?.processId).not.toBe(b.cluster?.processId);
    const credential = await registerDevice(a, 'GID_demo@@@dev-1');
    expect(await connackCode(b.mqttUrl, signDeviceCredential(credential))).toBe(0);
    // GetDeviceCredential through B answers what A registered.
    const got = await callApi<{ DeviceCredential: { DeviceAccessKeyId: string } }>(b, 'GetDeviceCredential', { ClientId: 'GID_demo@@@dev-1', InstanceId: b.instanceId });
    expect(got.DeviceCredential.DeviceAccessKeyId).toBe(credential.deviceAccessKeyId);
  });

  it('a revocation through one process applies at every broker at once, and kickOnRevoke drops the session where it is', async () => {
    const redis = await startRedis();
    const a = await member(redis, { kickOnRevoke: true });
    const b = await member(redis, { kickOnRevoke: true });
    const credential = await registerDevice(a, 'GID_demo@@@dev-2');
    const device = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(credential)));
    const closed = new Promise<void>((resolve) => device.once('close', () => resolve()));
    await callApi(a, 'UnRegisterDeviceCredential', { ClientId: 'GID_demo@@@dev-2', InstanceId: a.instanceId });
    await closed;
    expect(await connackCode(b.mqttUrl, signDeviceCredential(credential))).toBe(4);
  });

  it('a subscriber on A gets every QoS 1 message published on B, P2P included', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    const sub = await registerDevice(a, 'GID_demo@@@sub');
    const pub = await registerDevice(b, 'GID_demo@@@pub');
    const subscriber = await connectWithInbox(a.mqttUrl, signDeviceCredential(sub));
    keep(subscriber.client);
    await subscriber.client.subscribeAsync('demo/#', { qos: 1 });
    const publisher = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(pub)));
    for (let i = 0; i < 20; i++) await publisher.publishAsync('demo/x', `m${i}`, { qos: 1 });
    for (let i = 0; i < 20; i++) expect(await subscriber.next()).toEqual(['demo/x', `m${i}`]);
    await publisher.publishAsync('demo/p2p/GID_demo@@@sub', 'direct', { qos: 1 });
    expect(await subscriber.next()).toEqual(['demo/p2p/GID_demo@@@sub', 'direct']);
  });

  it('with retained messages and wills allowed (lenient), they are the cluster\'s: retained on B is replayed on A, a will of a client cut on B reaches A', async () => {
    const redis = await startRedis();
    const a = await member(redis, { lenient: true });
    const b = await member(redis, { lenient: true });
    const keeper = await registerDevice(a, 'GID_demo@@@keeper');
    const watcher = await registerDevice(a, 'GID_demo@@@watcher');
    const dying = await registerDevice(a, 'GID_demo@@@dying');
    const publisher = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(keeper)));
    await publisher.publishAsync('demo/state', 'on', { qos: 1, retain: true });
    const subscriber = await connectWithInbox(a.mqttUrl, signDeviceCredential(watcher));
    keep(subscriber.client);
    await subscriber.client.subscribeAsync('demo/#', { qos: 1 });
    expect(await subscriber.next()).toEqual(['demo/state', 'on']);
    keep(await connectMqtt(b.mqttUrl, signDeviceCredential(dying), { will: { topic: 'demo/gone', payload: Buffer.from('dying left'), qos: 1, retain: false } }));
    expect(b.disconnect('GID_demo@@@dying')).toBe(true);
    expect(await subscriber.next()).toEqual(['demo/gone', 'dying left']);
  });

  it('a persistent subscriber of B that disconnects gets its queued messages from A', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    const sub = await registerDevice(a, 'GID_demo@@@keeper');
    const pub = await registerDevice(a, 'GID_demo@@@sender');
    const first = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(sub), { clean: false }));
    await first.subscribeAsync('demo/queued', { qos: 1 });
    await first.endAsync();
    const publisher = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(pub)));
    for (let i = 0; i < 10; i++) await publisher.publishAsync('demo/queued', `q${i}`, { qos: 1 });
    const back = await connectWithInbox(a.mqttUrl, signDeviceCredential(sub), { clean: false });
    keep(back.client);
    expect(back.sessionPresent).toBe(true);
    for (let i = 0; i < 10; i++) expect(await back.next()).toEqual(['demo/queued', `q${i}`]);
  });

  it('QuerySession through A reports a device connected to B, and not once it left', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    const credential = await registerDevice(a, 'GID_demo@@@dev-3');
    const device = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(credential)));
    const query = (): Promise<{ OnlineStatus: boolean }> => callApi(a, 'QuerySessionByClientId', { ClientId: 'GID_demo@@@dev-3', InstanceId: a.instanceId });
    expect((await query()).OnlineStatus).toBe(true);
    const left = once(b.events, 'clientDisconnected');
    await device.endAsync();
    await left;
    expect((await query()).OnlineStatus).toBe(false);
  });

  it('a nonce used through A is refused through B', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    const params = commonParams(a, 'ListDeviceCredentialClientId', { InstanceId: a.instanceId, GroupId: 'GID_demo', PageSize: '10' });
    expect((await signedCall(a, params)).status).toBe(200);
    const replay = await signedCall(b, params);
    expect(replay.body).toMatchObject({ Code: 'SignatureNonceUsed' });
  });

  it('the account rate limit is the cluster\'s: calls through A and B share one bucket', async () => {
    const redis = await startRedis();
    let clock = 0;
    const a = await member(redis, { qpsLimit: 3, rateClock: () => clock });
    const b = await member(redis, { qpsLimit: 3, rateClock: () => clock });
    const list = (e: Emulator): Promise<unknown> => callApi(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_demo', PageSize: '10' });
    await list(a);
    await list(b);
    await list(a);
    expect((await apiFailure(list(b))).code).toBe('Throttling.User');
    clock += 1_000;
    await list(b);
  });

  it('failNext through one process fails the next call through another', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    await a.failNext('RegisterDeviceCredential', 'SystemOverFlow', 2);
    expect((await apiFailure(registerDevice(b, 'GID_demo@@@f1'))).code).toBe('SystemOverFlow');
    expect((await apiFailure(registerDevice(a, 'GID_demo@@@f1'))).code).toBe('SystemOverFlow');
    await registerDevice(b, 'GID_demo@@@f1');
  });

  it('Token mode: a token applied through A logs in at B; RevokeToken through A ends the session on B with its notice', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    const { Token: token } = await callApi<{ Token: string }>(a, 'ApplyToken', { Resources: 'demo/#', InstanceId: a.instanceId, ExpireTime: String(Date.now() + 600_000), Actions: 'R' });
    const reader = await connectWithInbox(b.mqttUrl, { clientId: 'GID_demo@@@reader', username: `Token|${b.accessKeyId}|${b.instanceId}`, password: `R|${token}` });
    keep(reader.client);
    const closed = new Promise<void>((resolve) => reader.client.once('close', () => resolve()));
    const valid = await callApi<{ TokenStatus: boolean }>(b, 'QueryToken', { Token: token, InstanceId: b.instanceId });
    expect(valid.TokenStatus).toBe(true);
    await callApi(a, 'RevokeToken', { Token: token, InstanceId: a.instanceId });
    expect(await reader.next()).toEqual(['$SYS/tokenInvalidNotice', '{"code":3,"type":"R"}']);
    await closed;
  });

  it('restart is per process: B restarts its broker, its persistent session and queue are kept (in Redis), A serves on', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    const sub = await registerDevice(a, 'GID_demo@@@restarted');
    const pub = await registerDevice(a, 'GID_demo@@@steady');
    const first = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(sub), { clean: false }));
    await first.subscribeAsync('demo/r', { qos: 1 });
    const publisher = keep(await connectMqtt(a.mqttUrl, signDeviceCredential(pub)));
    const dropped = new Promise<void>((resolve) => first.once('close', () => resolve()));
    await b.restart();
    await dropped;
    for (let i = 0; i < 5; i++) await publisher.publishAsync('demo/r', `r${i}`, { qos: 1 });
    const back = await connectWithInbox(b.mqttUrl, signDeviceCredential(sub), { clean: false });
    keep(back.client);
    expect(back.sessionPresent).toBe(true);
    for (let i = 0; i < 5; i++) expect(await back.next()).toEqual(['demo/r', `r${i}`]);
    // disconnect is per process too: A does not hold that session.
    expect(a.disconnect('GID_demo@@@restarted')).toBe(false);
    expect(b.disconnect('GID_demo@@@restarted')).toBe(true);
  });

  it('GET /_emulator/stats: this process\'s counters, the cluster\'s processes, clients and queues', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    const credential = await registerDevice(a, 'GID_demo@@@counted');
    keep(await connectMqtt(b.mqttUrl, signDeviceCredential(credential)));
    const stats = (await (await fetch(`${a.apiEndpoint}/_emulator/stats`)).json()) as { actions: Record<string, { ok: number }>; mqtt: { connected: number }; cluster: { processId: string; processes: number; online: number } };
    expect(stats.cluster).toEqual({ processId: a.cluster?.processId, processes: 2, online: 1 });
    expect(stats.mqtt.connected).toBe(0);
    expect(stats.actions['RegisterDeviceCredential']?.ok).toBe(1);
    expect(await a.cluster?.processes()).toEqual(expect.arrayContaining([expect.objectContaining({ id: b.cluster?.processId, mqttUrl: b.mqttUrl, apiEndpoint: b.apiEndpoint })]));
  });

  it('with its Redis gone, a process answers InternalError and CONNACK 3 (server unavailable), and stays up', async () => {
    const redis = await startRedis();
    const errors: string[] = [];
    const a = await member(redis, { logger: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: (m) => errors.push(m) } });
    const credential = await registerDevice(a, 'GID_demo@@@orphan');
    await redis.stop();
    expect((await apiFailure(registerDevice(a, 'GID_demo@@@later'))).code).toBe('InternalError');
    expect(await connackCode(a.mqttUrl, signDeviceCredential(credential))).toBe(3);
    expect(errors.join('\n')).toMatch(/Emulator cluster \(redis:\/\/127\.0\.0\.1:\d+\)/);
  });

  it('restarting a process loses no credential: a new process finds every one', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const credentials = await Promise.all(['r1', 'r2', 'r3'].map((d) => registerDevice(a, `GID_demo@@@${d}`)));
    await a.close();
    started.splice(started.indexOf(a), 1);
    const again = await member(redis);
    expect(again.instanceId).toBe(a.instanceId);
    for (const credential of credentials) expect(await connackCode(again.mqttUrl, signDeviceCredential(credential))).toBe(0);
  });
});
