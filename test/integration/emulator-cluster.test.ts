/**
 * The emulator as a cluster (the `redis` option): two emulators in this process on one real Redis (Debian's
 * redis-server, started on a free port) are one logical service. The processes-of-their-own version of the main
 * scenario is test/integration/emulator-cluster-cli.test.ts; this file checks each rule and control clustered.
 */
import { once } from 'node:events';
import type { MqttClient } from 'mqtt';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import { connectDevice } from '../../src/connector/connect.js';
import { DeviceCredential } from '../../src/credential.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { KEYS, takeoverChannel } from '../../src/emulator/cluster/keys.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { apiFailure, callApi, clientLeaves, connackCode, connectMqtt, connectWithInbox, registerDevice, signedCall, commonParams } from '../helpers/emulator.js';
import { accountLogin, ended } from '../helpers/broker.js';
import { expectCloudPace, manualTimers } from '../helpers/manual-timers.js';
import { connectPacket, inbox, rawLogin, rawSocket, received, roundTrip } from '../helpers/raw-mqtt.js';
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

/** Offline messages right behind the CONNACK, for the tests of what a queue holds rather than of its pace. */
const IMMEDIATE = { offlineDelivery: 'immediate' } as const satisfies EmulatorOptions;

/** A persistent session on `emulator`, subscribed to `topic` at QoS 1, that has left: what is published to it is queued. */
async function subscribedAndGone(emulator: Emulator, credential: DeviceCredential, topic: string): Promise<void> {
  const first = keep(await connectMqtt(emulator.mqttUrl, signDeviceCredential(credential), { clean: false }));
  await first.subscribeAsync(topic, { qos: 1 });
  const left = clientLeaves(emulator, credential.clientId);
  await first.endAsync();
  await left;
}

/** Resolves when the client's connection closes. */
function closing(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.once('close', () => resolve()));
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

  // Immediate: what these queue tests check is what the cluster holds, not the cloud's pace (tested below with the pace's timers).
  it('a persistent subscriber of B that disconnects gets its queued messages from A', async () => {
    const redis = await startRedis();
    const a = await member(redis, IMMEDIATE);
    const b = await member(redis, IMMEDIATE);
    const sub = await registerDevice(a, 'GID_demo@@@keeper');
    const pub = await registerDevice(a, 'GID_demo@@@sender');
    await subscribedAndGone(b, sub, 'demo/queued');
    const publisher = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(pub)));
    for (let i = 0; i < 10; i++) await publisher.publishAsync('demo/queued', `q${i}`, { qos: 1 });
    const back = await connectWithInbox(a.mqttUrl, signDeviceCredential(sub), { clean: false });
    keep(back.client);
    expect(back.sessionPresent).toBe(true);
    for (let i = 0; i < 10; i++) expect(await back.next()).toEqual(['demo/queued', `q${i}`]);
  });

  it('a QoS 1 PUBLISH is acknowledged once it is queued for the offline sessions and routed: a session resuming right after the PUBACK gets it from its queue, once', async () => {
    const redis = await startRedis();
    const a = await member(redis, IMMEDIATE);
    const b = await member(redis, IMMEDIATE);
    const sub = await registerDevice(a, 'GID_demo@@@resumer');
    await subscribedAndGone(b, sub, 'demo/acked');
    // A's queueing of the message waits until the test lets it go (aedes calls its store's enqueue when it routes).
    const store = (a.broker as unknown as { persistence: { outgoingEnqueueCombi(...args: unknown[]): Promise<unknown> } }).persistence;
    const enqueue = store.outgoingEnqueueCombi.bind(store);
    let queueing!: () => void;
    const asked = new Promise<void>((resolve) => (queueing = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    store.outgoingEnqueueCombi = async (...args) => {
      queueing();
      await released;
      return enqueue(...args);
    };
    const { raw } = await rawLogin(a.mqttUrl, accountLogin(a, 'GID_demo@@@acker'));
    raw.send({ cmd: 'publish', topic: 'demo/acked', payload: Buffer.from('held'), qos: 1, messageId: 7, retain: false, dup: false });
    await asked;
    // Everything A wrote before its PINGRESP has arrived: no PUBACK while the message is not queued.
    await roundTrip(raw);
    expect(raw.received.map((packet) => packet.cmd)).not.toContain('puback');
    release();
    expect(await raw.next('puback')).toMatchObject({ messageId: 7 });
    // Resumed at B right after the PUBACK: the message comes from the queue, and only from there.
    const back = await connectWithInbox(b.mqttUrl, signDeviceCredential(sub), { clean: false });
    keep(back.client);
    expect(back.sessionPresent).toBe(true);
    expect(await back.next()).toEqual(['demo/acked', 'held']);
    raw.send({ cmd: 'publish', topic: 'demo/acked', payload: Buffer.from('live'), qos: 1, messageId: 8, retain: false, dup: false });
    expect(await back.next()).toEqual(['demo/acked', 'live']);
  });

  it('a takeover across processes: the same ClientId connecting at B closes its older connection at A, and back again', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    const credential = await registerDevice(a, 'GID_demo@@@twice');
    const first = keep(await connectMqtt(a.mqttUrl, signDeviceCredential(credential)));
    const firstClosed = closing(first);
    const second = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(credential)));
    await firstClosed;
    const secondClosed = closing(second);
    const third = keep(await connectMqtt(a.mqttUrl, signDeviceCredential(credential)));
    await secondClosed;
    // The newest session is the one that stays, and the cluster counts it once.
    const check = await connectWithInbox(b.mqttUrl, signDeviceCredential(await registerDevice(b, 'GID_demo@@@checker')));
    keep(check.client);
    await third.subscribeAsync('demo/alive', { qos: 1 });
    const echo = new Promise<string>((resolve) => third.once('message', (_topic, payload) => resolve(payload.toString())));
    await check.client.publishAsync('demo/alive', 'still here', { qos: 1 });
    expect(await echo).toBe('still here');
    const stats = (await (await fetch(`${b.apiEndpoint}/_emulator/stats`)).json()) as { cluster: { online: number } };
    expect(stats.cluster.online).toBe(2);
  });

  // MQTT-3.1.4-3: the server tells an MQTT 5 connection it ends for a takeover (DISCONNECT 0x8E, Session taken over);
  // MQTT 3.1.1 has no server DISCONNECT. A CONNECT at another process ends the old connection as one at A itself does.
  it.each([4, 5] as const)('a takeover from another process tells the old connection what one from the same process does (MQTT %i): DISCONNECT 0x8E over MQTT 5, a plain close over 3.1.1', async (version) => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    for (const [where, at] of [['same process', a], ['another process', b]] as const) {
      const clientId = `GID_demo@@@told-${version}-${where === 'same process' ? 'local' : 'remote'}`;
      const old = keep(await connectMqtt(a.mqttUrl, accountLogin(a, clientId), { protocolVersion: version }));
      const oldEnded = ended(old);
      keep(await connectMqtt(at.mqttUrl, accountLogin(at, clientId), { protocolVersion: version }));
      const { disconnect } = await oldEnded;
      expect(disconnect?.reasonCode, where).toBe(version === 5 ? 0x8e : undefined);
    }
  });

  it('the connector (MQTT 5) reports a takeover from another process as confirmed, as one from the same process', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    for (const [where, at] of [['same process', a], ['another process', b]] as const) {
      const credential = await registerDevice(a, `GID_demo@@@twin-${where === 'same process' ? 'local' : 'remote'}`);
      // The long wait after a takeover keeps the connector from taking the session back while the test runs.
      const conn = await connectDevice({ credential, brokerUrl: a.mqttUrl, protocolVersion: 5, takeover: { minDelayMs: 60_000, maxDelayMs: 60_000 } });
      onTestFinished(() => conn.end(true));
      const events: string[] = [];
      conn.on('offline', () => events.push('offline'));
      conn.on('takeover', ({ confirmed, inARow }) => events.push(`takeover confirmed=${confirmed} inARow=${inARow}`));
      // A silent close would be followed by a reconnect, with no takeover (a single one is not even suspected).
      const reconnecting = once(conn, 'reconnecting');
      keep(await connectMqtt(at.mqttUrl, signDeviceCredential(credential), { protocolVersion: 5 }));
      await reconnecting;
      expect(events, where).toEqual(['offline', 'takeover confirmed=true inARow=1']);
    }
  });

  it('a clean session at B replaces a persistent one made at A: its stored subscription and queued messages are dropped', async () => {
    const redis = await startRedis();
    const a = await member(redis, IMMEDIATE);
    const b = await member(redis, IMMEDIATE);
    const device = await registerDevice(a, 'GID_demo@@@fresh');
    const feeder = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(await registerDevice(a, 'GID_demo@@@feeder'))));
    const persistent = keep(await connectMqtt(a.mqttUrl, signDeviceCredential(device), { clean: false }));
    await persistent.subscribeAsync('demo/held', { qos: 1 });
    const left = clientLeaves(a, 'GID_demo@@@fresh');
    await persistent.endAsync();
    await left;
    for (let i = 0; i < 3; i++) await feeder.publishAsync('demo/held', `h${i}`, { qos: 1 });
    const queuedStats = async (): Promise<number> => ((await (await fetch(`${a.apiEndpoint}/_emulator/stats`)).json()) as { mqtt: { queues: { messages: number } } }).mqtt.queues.messages;
    expect(await queuedStats()).toBe(3);
    // aedes drops a clean session's queue message by message after its CONNACK; Redis says when the queue is gone.
    const watcher = new Redis(redis.url);
    onTestFinished(() => watcher.disconnect());
    await watcher.config('SET', 'notify-keyspace-events', 'Kg');
    await watcher.subscribe(`__keyspace@0__:${KEYS.queue('GID_demo@@@fresh')}`);
    const dropped = new Promise<void>((resolve) => watcher.on('message', (_channel: string, event: string) => event === 'del' && resolve()));
    const clean = await connectWithInbox(b.mqttUrl, signDeviceCredential(device), { clean: true });
    expect(clean.sessionPresent).toBe(false);
    await dropped;
    await clean.client.endAsync();
    expect(await queuedStats()).toBe(0);
    // Back persistent at A: no session, nothing queued, and demo/held no longer subscribed (a message to it would come
    // before the marker published after it).
    const back = await connectWithInbox(a.mqttUrl, signDeviceCredential(device), { clean: false });
    keep(back.client);
    expect(back.sessionPresent).toBe(false);
    await back.client.subscribeAsync('demo/marker', { qos: 1 });
    await feeder.publishAsync('demo/held', 'late', { qos: 1 });
    await feeder.publishAsync('demo/marker', 'first', { qos: 1 });
    expect(await back.next()).toEqual(['demo/marker', 'first']);
  });

  it('P2P through one inbox per process: CONNECTs add no SUBSCRIBE, a message reaches its addressee on the process it moved to, and no other client', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    const stats = new Redis(redis.url);
    onTestFinished(() => stats.disconnect());
    const subscribes = async (): Promise<number> => Number(/cmdstat_subscribe:calls=(\d+)/.exec(await stats.info('commandstats'))?.[1] ?? 0);
    const sender = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(await registerDevice(a, 'GID_demo@@@sender'))));
    const xCredential = await registerDevice(a, 'GID_demo@@@x');
    const x = await connectWithInbox(a.mqttUrl, signDeviceCredential(xCredential));
    keep(x.client);
    const y = await connectWithInbox(a.mqttUrl, signDeviceCredential(await registerDevice(a, 'GID_demo@@@y')));
    keep(y.client);
    const before = await subscribes();
    for (let i = 0; i < 5; i++) keep(await connectMqtt(i % 2 ? a.mqttUrl : b.mqttUrl, signDeviceCredential(await registerDevice(a, `GID_demo@@@more-${i}`))));
    expect(await subscribes()).toBe(before);
    await sender.publishAsync('demo/p2p/GID_demo@@@x', 'to x', { qos: 1 });
    await sender.publishAsync('demo/p2p/GID_demo@@@y', 'to y', { qos: 1 });
    expect(await x.next()).toEqual(['demo/p2p/GID_demo@@@x', 'to x']);
    expect(await y.next()).toEqual(['demo/p2p/GID_demo@@@y', 'to y']);
    // x moves to B (its connection at A is taken over): P2P messages follow it there.
    const movedAway = closing(x.client);
    const moved = await connectWithInbox(b.mqttUrl, signDeviceCredential(xCredential));
    keep(moved.client);
    await movedAway;
    await sender.publishAsync('demo/p2p/GID_demo@@@x', 'to x at B', { qos: 1 });
    await sender.publishAsync('demo/p2p/GID_demo@@@y', 'to y again', { qos: 1 });
    expect(await moved.next()).toEqual(['demo/p2p/GID_demo@@@x', 'to x at B']);
    expect(await y.next()).toEqual(['demo/p2p/GID_demo@@@y', 'to y again']);
  });

  it('a client is counted before its CONNACK: a P2P message sent the moment it is connected reaches it, on a process it is the first client of', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    const sender = keep(await connectMqtt(a.mqttUrl, accountLogin(a, 'GID_demo@@@sender')));
    // A clean session: a P2P message that no process takes is not queued anywhere, it is lost.
    const first = await connectWithInbox(b.mqttUrl, accountLogin(b, 'GID_demo@@@newcomer'));
    keep(first.client);
    await sender.publishAsync('demo/p2p/GID_demo@@@newcomer', 'at once', { qos: 1 });
    expect(await first.next()).toEqual(['demo/p2p/GID_demo@@@newcomer', 'at once']);
  });

  it('a CONNACK waits until the cluster counts its client: none comes while the count is on its way to Redis; it comes once Redis holds it', async () => {
    const redis = await startRedis();
    const b = await member(redis);
    const watcher = new Redis(redis.url);
    onTestFinished(() => watcher.disconnect());
    const presence = KEYS.presence(b.cluster?.processId ?? '');
    const counted = (): Promise<number> => watcher.hexists(presence, 'GID_demo@@@waiting');
    // B's count of GID_demo@@@waiting is held back on its way to Redis until the test lets it go; nothing else is.
    const send = Redis.prototype.sendCommand;
    let onItsWay: () => void = () => undefined;
    const sent = new Promise<void>((resolve) => (onItsWay = resolve));
    let letGo: () => void = () => undefined;
    const heldBack = new Promise<void>((resolve) => (letGo = resolve));
    const spy = vi.spyOn(Redis.prototype, 'sendCommand').mockImplementation(function (this: Redis, ...args: Parameters<Redis['sendCommand']>) {
      const command = args[0] as unknown as { name: string; args: unknown[] };
      const words = command.args.map(String);
      if (command.name !== 'evalsha' || !words.includes(presence) || !words.includes('GID_demo@@@waiting')) return send.apply(this, args);
      onItsWay();
      void heldBack.then(() => send.apply(this, args));
      return (args[0] as unknown as { promise: Promise<unknown> }).promise;
    });
    onTestFinished(() => spy.mockRestore());
    const { raw: other } = await rawLogin(b.mqttUrl, accountLogin(b, 'GID_demo@@@other'));
    const waiting = await rawSocket(b.mqttUrl);
    waiting.send(connectPacket(accountLogin(b, 'GID_demo@@@waiting')));
    await sent;
    // B wrote what it wrote to the new connection before it read this PINGREQ: that has arrived by the PINGRESP.
    await roundTrip(other);
    expect(waiting.received.map((packet) => packet.cmd)).toEqual([]);
    expect(await counted()).toBe(0);
    letGo();
    expect(await waiting.next('connack')).toMatchObject({ returnCode: 0 });
    expect(await counted()).toBe(1);
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

  it.each([
    ['sliding-window', 'Throttling.User'],
    ['token-bucket', 'ok'],
  ] as const)('the account rate limit is the cluster\'s (%s): calls through A and B count together', async (rateLimitMode, halfASecondLater) => {
    const redis = await startRedis();
    let clock = 0;
    const a = await member(redis, { qpsLimit: 3, rateLimitMode, rateClock: () => clock });
    const b = await member(redis, { qpsLimit: 3, rateLimitMode, rateClock: () => clock });
    const list = (e: Emulator): Promise<string> => callApi(e, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_demo', PageSize: '10' }).then(() => 'ok', (error: { code: string }) => error.code);
    expect([await list(a), await list(b), await list(a), await list(b)]).toEqual(['ok', 'ok', 'ok', 'Throttling.User']);
    // Half a second on: the window still holds the three calls; the bucket has refilled one and a half.
    clock += 500;
    expect(await list(a)).toBe(halfASecondLater);
    clock += 1_000;
    expect(await list(b)).toBe('ok');
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

  it.each(['ended at A', 'still open at A (taken over)'])("an MQTT 5 session %s and resumed at B is B's: A's expiry of it does not wipe it from the cluster", async (how) => {
    const redis = await startRedis();
    const a = await member(redis, IMMEDIATE);
    const b = await member(redis, IMMEDIATE);
    const mover = await registerDevice(a, 'GID_demo@@@mover');
    const control = await registerDevice(a, 'GID_demo@@@control');
    const feeder = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(await registerDevice(a, 'GID_demo@@@feeder'))));
    const v5 = (expiry: number) => ({ protocolVersion: 5 as const, clean: false, properties: { sessionExpiryInterval: expiry } });
    // The mover's session ends at A with a 1 s expiry (or is taken over from there), and resumes at B at once.
    const first = await connectMqtt(a.mqttUrl, signDeviceCredential(mover), v5(1));
    await first.subscribeAsync('demo/moved', { qos: 1 });
    const moverLeft = clientLeaves(a, 'GID_demo@@@mover');
    if (how === 'ended at A') await first.endAsync();
    else keep(first);
    const resumed = await connectWithInbox(b.mqttUrl, signDeviceCredential(mover), v5(60));
    keep(resumed.client);
    expect(resumed.sessionPresent).toBe(true);
    await moverLeft;
    // A control session ends at A with the same expiry, armed after the mover's: once A has wiped it (its queue
    // deleted in Redis), the mover's expiry at A, had it been left running, has run out too.
    const watcher = new Redis(redis.url);
    onTestFinished(() => watcher.disconnect());
    await watcher.config('SET', 'notify-keyspace-events', 'Kg');
    await watcher.subscribe(`__keyspace@0__:${KEYS.queue('GID_demo@@@control')}`);
    const controlWiped = new Promise<void>((resolve) => watcher.on('message', (_channel: string, event: string) => event === 'del' && resolve()));
    const second = await connectMqtt(a.mqttUrl, signDeviceCredential(control), v5(1));
    await second.subscribeAsync('demo/control', { qos: 1 });
    const controlLeft = clientLeaves(a, 'GID_demo@@@control');
    await second.endAsync();
    await controlLeft;
    await feeder.publishAsync('demo/control', 'queued for the control', { qos: 1 });
    await controlWiped;
    // The mover's session is whole: live at B, and, gone offline there, its subscription still queues for it.
    await feeder.publishAsync('demo/moved', 'live', { qos: 1 });
    expect(await resumed.next()).toEqual(['demo/moved', 'live']);
    const moverLeftB = clientLeaves(b, 'GID_demo@@@mover');
    await resumed.client.endAsync();
    await moverLeftB;
    await feeder.publishAsync('demo/moved', 'queued', { qos: 1 });
    const back = await connectWithInbox(b.mqttUrl, signDeviceCredential(mover), v5(60));
    keep(back.client);
    expect(back.sessionPresent).toBe(true);
    expect(await back.next()).toEqual(['demo/moved', 'queued']);
  });

  // Found in review: one takeover notice naming a ClientId twice (it connected twice at another process within one
  // batch) made aedes forget its connection here without a 'clientDisconnect': the cluster went on counting it online.
  // It still does over MQTT 3.1.1 (the first notice's close has begun when the second comes); an MQTT 5 connection is
  // still being told why (DISCONNECT 0x8E) then, and the second notice's close ends with the first's: one DISCONNECT.
  it.each([
    { name: 'MQTT 5', options: { protocolVersion: 5, properties: { sessionExpiryInterval: 60 } }, told: [0x8e] },
    { name: 'MQTT 3.1.1', options: { protocolVersion: 4 }, told: [] },
  ] as const)('a connection closed by two takeover notices at once is no longer counted online ($name)', async ({ options, told }) => {
    const redis = await startRedis();
    const a = await member(redis);
    const device = await connectMqtt(a.mqttUrl, signDeviceCredential(await registerDevice(a, 'GID_demo@@@twice')), options);
    const disconnects: (number | undefined)[] = [];
    device.on('disconnect', (packet) => disconnects.push(packet.reasonCode));
    await device.subscribeAsync('demo/any', { qos: 1 });
    const watcher = new Redis(redis.url);
    onTestFinished(() => watcher.disconnect());
    const presence = KEYS.presence(a.cluster?.processId ?? '');
    expect(await watcher.hget(presence, 'GID_demo@@@twice')).toBe('1');
    // Ready before it subscribes: ioredis sends its ready check (INFO) once connected, which a connection already
    // subscribing is refused; it then reconnects, and the keyspace events in between are lost.
    const listener = watcher.duplicate({ lazyConnect: true });
    onTestFinished(() => listener.disconnect());
    await listener.connect();
    await watcher.config('SET', 'notify-keyspace-events', 'Kh');
    await listener.subscribe(`__keyspace@0__:${presence}`);
    // Settles once the presence hash changes and no longer counts the ClientId.
    const uncounted = new Promise<void>((resolve) => listener.on('message', () => void watcher.hget(presence, 'GID_demo@@@twice').then((n) => n === null && resolve())));
    const closed = closing(device);
    await watcher.publish(takeoverChannel(0), JSON.stringify({ b: 'another-process', c: ['GID_demo@@@twice', 'GID_demo@@@twice'] }));
    await closed;
    await uncounted;
    expect(disconnects).toEqual(told);
    const query = (await callApi(a, 'QuerySessionByClientId', { ClientId: 'GID_demo@@@twice', InstanceId: a.instanceId })) as { OnlineStatus: boolean };
    expect(query.OnlineStatus).toBe(false);
  });

  // Wills allowed, a takeover ends a connection that has one. MQTT 3.1.1 publishes it whenever the server closes the
  // connection other than on a DISCONNECT, a takeover included; MQTT 5 too, unless a Will Delay Interval runs and a new
  // connection for the ClientId opens before it has elapsed (MQTT-3.1.2-8), as a takeover's does (a clean start too).
  // A takeover from another process (aedes at A closes the connection on B's notice) does what one at A itself does.
  const session5 = { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 600 } } as const;
  it.each([
    { name: 'MQTT 3.1.1: published', options: { protocolVersion: 4 }, willDelay: 0, clean: false, published: true },
    { name: 'MQTT 5 without a Will Delay Interval: published', options: { protocolVersion: 5 }, willDelay: 0, clean: false, published: true },
    { name: 'MQTT 5 with a Will Delay Interval, the session resumed: not published, nor left pending', options: session5, willDelay: 600, clean: false, published: false },
    { name: 'MQTT 5 with a Will Delay Interval, a clean start: not published, nor left pending', options: session5, willDelay: 600, clean: true, published: false },
  ] as const)('a will on a takeover, from the same process or another: $name', async ({ options, willDelay, clean, published }) => {
    const redis = await startRedis();
    const a = await member(redis, { willMessages: 'allow' });
    const b = await member(redis, { willMessages: 'allow' });
    const watcher = await connectWithInbox(a.mqttUrl, accountLogin(a, 'GID_demo@@@watcher'));
    keep(watcher.client);
    await watcher.client.subscribeAsync('demo/will/#', { qos: 1 });
    for (const [where, at] of [['same process', a], ['another process', b]] as const) {
      const clientId = `GID_demo@@@${where === 'same process' ? 'local' : 'remote'}`;
      const will = { topic: `demo/will/${clientId}`, payload: Buffer.from('gone'), qos: 1, retain: false, ...(willDelay > 0 ? { properties: { willDelayInterval: willDelay } } : {}) } as const;
      const old = keep(await connectMqtt(a.mqttUrl, accountLogin(a, clientId), { ...options, will }));
      const oldClosed = closing(old);
      const left = clientLeaves(a, clientId);
      keep(await connectMqtt(at.mqttUrl, accountLogin(at, clientId), { ...options, clean }));
      await oldClosed;
      await left;
      // A will published as the connection closed comes before a message published after it.
      await watcher.client.publishAsync('demo/will/marker', where, { qos: 1 });
      const before: string[] = [];
      for (let message = await watcher.next(); message[0] !== 'demo/will/marker'; message = await watcher.next()) before.push(message[0]);
      expect(before, where).toEqual(published ? [will.topic] : []);
      // Nor is one left to A's timer (aedes' delayed wills), to be published once the delay has run out.
      expect((a.broker as unknown as { delayedWills: Map<string, unknown> }).delayedWills.has(clientId), where).toBe(false);
    }
  });

  it('restart is per process: B restarts its broker, its persistent session and queue are kept (in Redis), A serves on', async () => {
    const redis = await startRedis();
    const a = await member(redis, IMMEDIATE);
    const b = await member(redis, IMMEDIATE);
    const sub = await registerDevice(a, 'GID_demo@@@restarted');
    const pub = await registerDevice(a, 'GID_demo@@@steady');
    const first = keep(await connectMqtt(b.mqttUrl, signDeviceCredential(sub), { clean: false }));
    await first.subscribeAsync('demo/r', { qos: 1 });
    const publisher = keep(await connectMqtt(a.mqttUrl, signDeviceCredential(pub)));
    const dropped = new Promise<void>((resolve) => first.once('close', () => resolve()));
    await b.restart();
    await dropped;
    // Once the restart resolves, the cluster no longer counts the clients the restart dropped.
    const status = await callApi<{ OnlineStatus: boolean }>(a, 'QuerySessionByClientId', { ClientId: 'GID_demo@@@restarted', InstanceId: a.instanceId });
    expect(status.OnlineStatus).toBe(false);
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
    // The same statistics as Prometheus text (GET /metrics): read from Redis too, where the cluster keeps them.
    const metrics = await fetch(`${a.apiEndpoint}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^apsaramq_emulator_\w+/m);
  });

  it('with its Redis gone, a process answers InternalError and CONNACK 3 (server unavailable), and stays up', async () => {
    const redis = await startRedis();
    const errors: string[] = [];
    const a = await member(redis, { logger: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: (m) => errors.push(m) } });
    const credential = await registerDevice(a, 'GID_demo@@@orphan');
    await redis.stop();
    expect((await apiFailure(registerDevice(a, 'GID_demo@@@later'))).code).toBe('InternalError');
    // A scrape says why it has no statistics (503), and the process stays up.
    expect((await fetch(`${a.apiEndpoint}/metrics`)).status).toBe(503);
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

describe.skipIf(!available)(`the emulator's cloud rules, limits and controls, clustered${skipped}`, () => {
  it('GroupIds are the cluster\'s: through either process a GroupId not created is PermissionCheckFailed (a change through the log too) and CONNACK 2; a process with other groups is refused', async () => {
    const redis = await startRedis();
    const a = await member(redis, { groups: ['GID_fleet'] });
    const b = await member(redis, { groups: ['GID_fleet'] });
    const credential = await registerDevice(a, 'GID_fleet@@@d1');
    expect(await connackCode(b.mqttUrl, signDeviceCredential(credential))).toBe(0);
    for (const [e, action] of [[b, 'RegisterDeviceCredential'], [a, 'UnRegisterDeviceCredential'], [b, 'GetDeviceCredential']] as const) {
      const refused = await apiFailure(callApi(e, action, { ClientId: 'GID_demo@@@d2', InstanceId: e.instanceId }));
      expect([action, refused.code, refused.entry.response.statusCode]).toEqual([action, 'PermissionCheckFailed', 400]);
      expect(refused.data['Message']).toContain('GroupId GID_demo was not created on instance');
    }
    expect(await connackCode(b.mqttUrl, accountLogin(b, 'GID_demo@@@d2'))).toBe(2);
    expect(await connackCode(a.mqttUrl, accountLogin(a, 'GID_fleet@@@d3'))).toBe(0);
    await expect(startEmulator({ env: {}, redis: redis.url, groups: ['GID_other'] })).rejects.toMatchObject({ code: 'EmulatorClusterMismatch', message: expect.stringMatching(/groups is \["GID_fleet"\] there, \["GID_other"\] here/) });
  });

  it('another InstanceId answers the unknownInstanceCode through every process, a change through the log included; the GET rule is every process\'s', async () => {
    const redis = await startRedis();
    const a = await member(redis, { unknownInstanceCode: 'MqttInstanceNotFound' });
    const b = await member(redis, { unknownInstanceCode: 'MqttInstanceNotFound' });
    const other = { ClientId: 'GID_demo@@@dev', InstanceId: 'mqtt-cn-notmine' };
    for (const [e, action] of [[b, 'RegisterDeviceCredential'], [a, 'RefreshDeviceCredential'], [a, 'GetDeviceCredential']] as const) {
      const refused = await apiFailure(callApi(e, action, other));
      expect([action, refused.code, refused.entry.response.statusCode]).toEqual([action, 'MqttInstanceNotFound', 400]);
    }
    // A GET of a POST-only action: 404 InvalidAction.NotFound, and nothing registered anywhere.
    const get = await apiFailure(callApi(b, 'RegisterDeviceCredential', { ClientId: 'GID_demo@@@dev', InstanceId: b.instanceId }, 'GET'));
    expect([get.code, get.entry.response.statusCode]).toEqual(['InvalidAction.NotFound', 404]);
    expect((await apiFailure(callApi(a, 'GetDeviceCredential', { ClientId: 'GID_demo@@@dev', InstanceId: a.instanceId }))).code).toBe('DeviceCredentialNotFound');
  });

  it('revokedCredentialRefusal: not-authorized: a credential revoked through A is CONNACK 5 at B, and at a process that joined after the revocation', async () => {
    const redis = await startRedis();
    const options = { revokedCredentialRefusal: 'not-authorized' } as const;
    const a = await member(redis, options);
    const b = await member(redis, options);
    const old = await registerDevice(a, 'GID_demo@@@rotated');
    const fresh = DeviceCredential.fromWire(await callApi(b, 'RefreshDeviceCredential', { ClientId: 'GID_demo@@@rotated', InstanceId: b.instanceId }));
    expect(await connackCode(b.mqttUrl, signDeviceCredential(old))).toBe(5);
    expect(await connackCode(a.mqttUrl, signDeviceCredential(fresh))).toBe(0);
    const later = await member(redis, options);
    expect(await connackCode(later.mqttUrl, signDeviceCredential(old))).toBe(5);
    expect(await connackCode(later.mqttUrl, signDeviceCredential(fresh))).toBe(0);
  });

  it('the fault burst is the cluster\'s: started through A, B\'s calls fail with its codes; ended through B\'s HTTP control; run out on the shared clock', async () => {
    const redis = await startRedis();
    let clock = 0;
    const a = await member(redis, { rateClock: () => clock });
    const b = await member(redis, { rateClock: () => clock });
    const get = (e: Emulator): Promise<string> => callApi(e, 'GetDeviceCredential', { ClientId: 'GID_demo@@@none', InstanceId: e.instanceId }).then(() => 'ok', (error: { code: string }) => error.code);
    await a.faultBurst({ rate: 1, codes: ['Throttling.User'], forMs: 60_000 });
    expect([await get(b), await get(a), await get(b)]).toEqual(['Throttling.User', 'Throttling.User', 'Throttling.User']);
    const ended = await fetch(`${b.apiEndpoint}/_emulator/faults`, { method: 'POST', body: JSON.stringify({ rate: 0, codes: 'Throttling.User', forMs: 0 }) });
    expect(ended.status).toBe(200);
    expect([await get(a), await get(b)]).toEqual(['DeviceCredentialNotFound', 'DeviceCredentialNotFound']);
    await b.faultBurst({ rate: 1, codes: ['InternalError'], forMs: 1_000 });
    expect(await get(a)).toBe('InternalError');
    clock += 1_000;
    expect([await get(a), await get(b)]).toEqual(['DeviceCredentialNotFound', 'DeviceCredentialNotFound']);
    // Checked before anything reaches Redis, as in one process.
    expect(() => a.faultBurst({ rate: 2, codes: ['InternalError'], forMs: 1 })).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
  });

  it('restart {downMs} takes down only the process asked, for its downtime: A keeps its clients and takes new ones, B refuses CONNECTs', async () => {
    const redis = await startRedis();
    const a = await member(redis);
    const b = await member(redis);
    const creds = signDeviceCredential(await registerDevice(a, 'GID_demo@@@steady'));
    const onA = keep(await connectMqtt(a.mqttUrl, creds));
    let aDropped = false;
    onA.once('close', () => (aDropped = true));
    const onB = keep(await connectMqtt(b.mqttUrl, accountLogin(b, 'GID_demo@@@moved')));
    const bDropped = new Promise<void>((resolve) => onB.once('close', () => resolve()));
    const restarting = b.restart({ downMs: 60_000 });
    await bDropped;
    // No event says when the closed broker's listeners are gone: try until a CONNECT is refused (it is for 60 s).
    await vi.waitFor(async () => expect(await connackCode(b.mqttUrl, creds, { connectTimeout: 1_000 }).catch((error: NodeJS.ErrnoException) => error.code)).toBe('ECONNREFUSED'), { timeout: 30_000, interval: 100 });
    expect(await connackCode(a.mqttUrl, accountLogin(a, 'GID_demo@@@newcomer'))).toBe(0);
    await onA.publishAsync('demo/still', 'up', { qos: 1 });
    expect(aDropped).toBe(false);
    await Promise.all([restarting, b.close()]);
  });

  it('offline messages at the cloud\'s pace: queued while the session was on B, resumed at A after A\'s detection delay, in batches of 30 read from Redis', async () => {
    const redis = await startRedis();
    const timersA = manualTimers();
    const timersB = manualTimers();
    const a = await member(redis, { offlineTimers: timersA, random: () => 0 });
    const b = await member(redis, { offlineTimers: timersB });
    const session = { clean: false } as const;
    const first = await rawLogin(b.mqttUrl, accountLogin(b, 'GID_demo@@@paced'), 4, session);
    first.raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'demo/q', qos: 1 }] });
    await first.raw.next('suback');
    const gone = once(b.events, 'clientDisconnected');
    first.raw.socket.destroy();
    await gone;
    const publisher = keep(await connectMqtt(b.mqttUrl, accountLogin(b, 'GID_demo@@@pacer')));
    for (let i = 0; i < 40; i++) await publisher.publishAsync('demo/q', `m${i}`, { qos: 1 });

    const { raw, connack } = await rawLogin(a.mqttUrl, accountLogin(a, 'GID_demo@@@paced'), 4, session);
    expect(connack.sessionPresent).toBe(true);
    await expectCloudPace(raw, timersA, 5_000);
    expect(timersB.pending).toBe(0);
  });

  it('the queue bounds are the cluster\'s: maxOfflineMessages counts what publishers on A and B queued, the oldest dropped first', async () => {
    const redis = await startRedis();
    const options = { ...IMMEDIATE, maxOfflineMessages: 5 } as const;
    const a = await member(redis, options);
    const b = await member(redis, options);
    const sub = await registerDevice(a, 'GID_demo@@@bounded');
    const first = keep(await connectMqtt(a.mqttUrl, signDeviceCredential(sub), { clean: false }));
    await first.subscribeAsync('demo/b', { qos: 1 });
    // Gone from A before anything is published: a session still online there would take messages in flight.
    const gone = once(a.events, 'clientDisconnected');
    await first.endAsync();
    await gone;
    const onA = keep(await connectMqtt(a.mqttUrl, accountLogin(a, 'GID_demo@@@pa')));
    const onB = keep(await connectMqtt(b.mqttUrl, accountLogin(b, 'GID_demo@@@pb')));
    // aedes acknowledges a QoS 1 PUBLISH before it queues it: two processes' queueing may cross. Each is awaited
    // (its 'published' follows the queueing), so that "oldest" is the order of publishing.
    for (let i = 0; i < 8; i++) {
      const [e, publisher] = i % 2 === 0 ? [a, onA] : [b, onB];
      const queued = once(e.events, 'published');
      await publisher.publishAsync('demo/b', `b${i}`, { qos: 1 });
      await queued;
    }
    const stats = (await (await fetch(`${b.apiEndpoint}/_emulator/stats`)).json()) as { mqtt: { queues: { messages: number; sessions: number } } };
    expect(stats.mqtt.queues).toMatchObject({ sessions: 1, messages: 5 });
    const { raw } = await rawLogin(b.mqttUrl, signDeviceCredential(sub), 4, { clean: false });
    await received(raw, 5);
    await roundTrip(raw);
    expect(inbox(raw).publishes().map((p) => p.payload.toString())).toEqual(['b3', 'b4', 'b5', 'b6', 'b7']);
  });
});

