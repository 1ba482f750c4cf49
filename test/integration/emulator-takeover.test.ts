/**
 * A ClientId that connects again while its old connection is still there, or still closing: the broker must end
 * up with the new connection registered under the ClientId (the one QuerySession, the disconnect control, P2P
 * routing and the next takeover find), and counted once.
 *
 * aedes 2.0.0-beta.1's close of a connection unregisters whatever connection its ClientId is registered to at the
 * end of that close, which waits a turn of the event loop (a Redis round trip, clustered) for the connection's
 * unsubscribes: a new connection of the ClientId registered within that turn was unregistered in its place. Which
 * turn a real socket's close lands in is timing, so the test that shows it drops the old socket exactly when aedes
 * registers the new connection ({@link dropOldAtRegistration}).
 *
 * The same holds whichever order the closes end in, and for three CONNECTs of one ClientId: the old close held open
 * until the test lets it end (`holdClose`, helpers/takeover.ts), a newer connection that leaves first, or a third
 * CONNECT that comes while the second waits for the first's close, must leave the newest connection alone registered,
 * each connection counted out once (the `connected` statistic and its gauge), and the ClientId offline once the last
 * one has gone.
 * A cluster of one process on Redis shares the path (its clients have no P2P subscription, so the old one subscribes).
 */
import { once } from 'node:events';
import type { Aedes, Client } from 'aedes';
import { Redis } from 'ioredis';
import type { MqttClient } from 'mqtt';
import { describe, expect, it, onTestFinished } from 'vitest';
import { clientById } from '../../src/emulator/aedes-adapter.js';
import { takeoverChannel } from '../../src/emulator/cluster/keys.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { accountLogin, ended } from '../helpers/broker.js';
import { ANY_GROUP, callApi, clientLeaves, connectMqtt, connectWithInbox, subscribed, useEmulator, type InboxClient } from '../helpers/emulator.js';
import { rawLogin, type RawMqtt } from '../helpers/raw-mqtt.js';
import { redisAvailable, startRedis, type TestRedis } from '../helpers/redis.js';
import { brokerEvent, holdClose, type HeldClose } from '../helpers/takeover.js';

const VERSIONS = [4, 5] as const;
type Version = (typeof VERSIONS)[number];

/** Resolves with the broker's client of the next connection of `clientId` that aedes registers. */
function registered(e: Emulator, clientId: string): Promise<Client> {
  return brokerEvent(e, 'client', clientId);
}

/** QuerySessionByClientId's answer. */
async function online(e: Emulator, clientId: string): Promise<boolean> {
  const body = await callApi<{ OnlineStatus: boolean }>(e, 'QuerySessionByClientId', { ClientId: clientId, InstanceId: e.instanceId });
  return body.OnlineStatus;
}

/** Connect `clientId` (ended when the test ends), collecting its messages. */
async function device(e: Emulator, clientId: string, version: Version): Promise<InboxClient> {
  const inbox = await connectWithInbox(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: version });
  onTestFinished(() => inbox.client.endAsync(true));
  return inbox;
}

/**
 * The old connection of the next ClientId aedes registers again drops (its socket closes, as a device's does on a
 * network cut) at the instant aedes registers the new one: aedes' own close listener runs first, then the
 * registration, inside the turn that the old connection's close waits for its unsubscribes.
 */
function dropOldAtRegistration(broker: Aedes): void {
  const inner = broker as unknown as { registerClient(client: Client): void };
  const register = inner.registerClient;
  inner.registerClient = function (this: Aedes, client: Client): void {
    const old = clientById(broker, client.id);
    if (old === undefined) {
      register.call(this, client);
      return;
    }
    inner.registerClient = register;
    old.conn.once('close', () => register.call(this, client));
    old.conn.destroy();
  };
}

/**
 * What every takeover must leave: `next` registered and counted once, reached by a P2P message and by its
 * subscription, online until it leaves, and itself taken over by the next connection of its ClientId.
 */
async function expectTakenOver(e: Emulator, clientId: string, version: Version, next: InboxClient, nextOnBroker: Client): Promise<void> {
  expect(clientById(e.broker, clientId) === nextOnBroker, 'the new connection registered under its ClientId').toBe(true);
  expect(e.broker.connectedClients).toBe(1);
  expect(await online(e, clientId)).toBe(true);

  const sender = await connectMqtt(e.mqttUrl, accountLogin(e, `${clientId}-sender`), { protocolVersion: version });
  onTestFinished(() => sender.endAsync(true));
  const subscribing = subscribed(e, clientId, 'demo/t');
  await next.client.subscribeAsync('demo/t', { qos: 1 });
  await subscribing;
  await sender.publishAsync(`demo/p2p/${clientId}`, 'p2p', { qos: 1 });
  expect(await next.next()).toEqual([`demo/p2p/${clientId}`, 'p2p']);
  await sender.publishAsync('demo/t', 'subscribed', { qos: 1 });
  expect(await next.next()).toEqual(['demo/t', 'subscribed']);

  // The next takeover ends it (MQTT-3.1.4-2); then the ClientId goes offline when its last connection leaves.
  const nextEnded = ended(next.client);
  const nextLeaves = clientLeaves(e, clientId);
  const last = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: version });
  await nextEnded;
  await nextLeaves;
  expect(e.broker.connectedClients).toBe(2);
  const lastLeaves = clientLeaves(e, clientId);
  await last.endAsync();
  await lastLeaves;
  expect(await online(e, clientId)).toBe(false);
  expect(clientById(e.broker, clientId)).toBeUndefined();
  expect(e.broker.connectedClients).toBe(1);
}

describe('a ClientId connecting again while its old connection is there or closing', () => {
  const emu = useEmulator({ wsPort: false });

  it.each(VERSIONS)('a takeover: the new connection is the registered one, reached, online, counted once (MQTT %i)', async (version) => {
    const e = emu();
    const clientId = `GID_take@@@over${version}`;
    const old: MqttClient = (await device(e, clientId, version)).client;
    const oldEnded = ended(old);
    const oldLeaves = clientLeaves(e, clientId);
    const onBroker = registered(e, clientId);
    const next = await device(e, clientId, version);
    const { disconnect } = await oldEnded;
    await oldLeaves;
    // MQTT 5: the old connection is told why (0x8E Session taken over).
    expect(disconnect?.reasonCode).toBe(version === 5 ? 0x8e : undefined);
    await expectTakenOver(e, clientId, version, next, await onBroker);
  });

  it.each(VERSIONS)('a reconnect at the instant the old socket dropped: the new connection stays registered (MQTT %i)', async (version) => {
    const e = emu();
    const clientId = `GID_take@@@drop${version}`;
    const old = (await device(e, clientId, version)).client;
    const oldEnded = ended(old);
    const oldLeaves = clientLeaves(e, clientId);
    const onBroker = registered(e, clientId);
    dropOldAtRegistration(e.broker);
    const next = await device(e, clientId, version);
    await oldEnded;
    await oldLeaves;
    await expectTakenOver(e, clientId, version, next, await onBroker);
  });
});

/** The broker's client registered under `clientId` now (the test fails if there is none). */
function registeredNow(e: Emulator, clientId: string): Client {
  const client = clientById(e.broker, clientId);
  if (client === undefined) throw new Error(`${clientId} is not registered`);
  return client;
}

/** How often the emulator reported `clientId` connected and gone (its `clientConnected` / `clientDisconnected`). */
function reports(e: Emulator, clientId: string): { connected: number; disconnected: number } {
  const counts = { connected: 0, disconnected: 0 };
  const connected = (id: string): void => {
    if (id === clientId) counts.connected++;
  };
  const disconnected = (id: string): void => {
    if (id === clientId) counts.disconnected++;
  };
  e.events.on('clientConnected', connected);
  e.events.on('clientDisconnected', disconnected);
  onTestFinished(() => {
    e.events.off('clientConnected', connected);
    e.events.off('clientDisconnected', disconnected);
  });
  return counts;
}

/** The `apsaramq_emulator_connected_clients` gauge of GET /metrics. */
async function connectedGauge(e: Emulator): Promise<number> {
  const text = await (await fetch(`${e.apiEndpoint}/metrics`)).text();
  const value = /^apsaramq_emulator_connected_clients (\d+)$/m.exec(text)?.[1];
  if (value === undefined) throw new Error(`no connected gauge in:\n${text}`);
  return Number(value);
}

/** Nothing left of `clientId`: unregistered, offline, and no connection counted (none other is connected). */
async function expectNoneLeft(e: Emulator, clientId: string): Promise<void> {
  expect(clientById(e.broker, clientId)).toBeUndefined();
  expect(e.broker.connectedClients).toBe(0);
  expect(e.stats().mqtt.connected).toBe(0);
  expect(await connectedGauge(e)).toBe(0);
  expect(await online(e, clientId)).toBe(false);
}

/** What {@link firstConnection} connected. */
interface FirstConnection {
  /** Resolves when its connection has closed. */
  readonly ended: ReturnType<typeof ended>;
  /** The broker's client of it. */
  readonly onBroker: Client;
  /** Its close, held once it begins. */
  readonly held: HeldClose;
  /** What the emulator reported of the ClientId from before it connected. */
  readonly told: ReturnType<typeof reports>;
}

/**
 * Connect `clientId` with a subscription of its own, whose unsubscribe its close waits for (clustered, a client has no
 * P2P subscription), that close to be held ({@link holdClose}).
 */
async function firstConnection(e: Emulator, clientId: string, version: Version, extra: Parameters<typeof connectMqtt>[2] = {}): Promise<FirstConnection> {
  const told = reports(e, clientId);
  const client = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: version, ...extra });
  onTestFinished(() => client.endAsync(true));
  await client.subscribeAsync('demo/old', { qos: 1 });
  const onBroker = registeredNow(e, clientId);
  return { ended: ended(client), onBroker, held: holdClose(e.broker, onBroker), told };
}

/**
 * The old connection is still closing (its socket dropped, its close held) when the newer one registers, and the
 * newer one leaves first: once the old close ends, with nothing registered under the ClientId, both are counted out.
 */
async function newerLeavesFirst(e: Emulator, clientId: string, version: Version): Promise<void> {
  const { onBroker: old, held, told } = await firstConnection(e, clientId, version);
  old.conn.destroy();
  await held.closing;
  const onBroker = registered(e, clientId);
  const next = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: version });
  onTestFinished(() => next.endAsync(true));
  expect(clientById(e.broker, clientId) === (await onBroker), 'the newer connection registered').toBe(true);
  const nextLeaves = clientLeaves(e, clientId);
  await next.endAsync();
  await nextLeaves;
  held.release();
  await expectNoneLeft(e, clientId);
  expect(told).toEqual({ connected: 2, disconnected: 2 });
}

/**
 * A second CONNECT takes the first connection over and waits for its close; a third comes meanwhile. The third is the
 * one registered once the first's close ends; the second is taken over (told so over MQTT 5) and closed; the first
 * is closed. Then everything a takeover must leave ({@link expectTakenOver}).
 */
async function thirdConnectWhileWaiting(e: Emulator, clientId: string, version: Version): Promise<void> {
  const { ended: firstEnded, held, told } = await firstConnection(e, clientId, version);
  // Connected (`connected` set) before it is taken over, so that an MQTT 5 one is told why.
  const secondReady = brokerEvent(e, 'clientReady', clientId);
  // Its CONNACK comes at once (aedes answers before the takeover it started has ended).
  const second = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: version });
  onTestFinished(() => second.endAsync(true));
  const secondEnded = ended(second);
  await held.closing;
  await secondReady;
  const onBroker = registered(e, clientId);
  const third = await device(e, clientId, version);
  held.release();
  const thirdOnBroker = await onBroker;
  expect(clientById(e.broker, clientId) === thirdOnBroker, 'the third connection registered').toBe(true);
  expect(e.broker.connectedClients).toBe(1);
  // MQTT 5: each connection taken over is told why (0x8E Session taken over).
  expect((await secondEnded).disconnect?.reasonCode).toBe(version === 5 ? 0x8e : undefined);
  expect((await firstEnded).disconnect?.reasonCode).toBe(version === 5 ? 0x8e : undefined);
  await expectTakenOver(e, clientId, version, third, thirdOnBroker);
  // The second was never registered, so never reported connected: the first, the third and the last were, and left.
  expect(told).toEqual({ connected: 3, disconnected: 3 });
}

/**
 * A second CONNECT takes the first connection over and waits for its close, and closes itself before that close ends:
 * it is never registered (nor counted, nor reported connected), and the first is counted out once.
 */
async function waitingLeavesFirst(e: Emulator, clientId: string, version: Version): Promise<void> {
  const { ended: firstEnded, held, told } = await firstConnection(e, clientId, version);
  const secondOnBroker = brokerEvent(e, 'connackSent', clientId);
  const second = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: version });
  await held.closing;
  const waiting = await secondOnBroker;
  const waitingClosed = once(waiting.conn, 'close');
  await second.endAsync();
  await waitingClosed;
  expect(waiting.closed, "aedes' close of the second connection has run").toBe(true);
  // The first connection, still closing, is the only one counted.
  expect(e.broker.connectedClients).toBe(1);
  held.release();
  await firstEnded;
  await expectNoneLeft(e, clientId);
  expect(told).toEqual({ connected: 1, disconnected: 1 });
}

/** Send a QoS 2 PUBLISH (packet id 7) on `demo/q2` and wait for its PUBREC. */
async function publishQos2(raw: RawMqtt, payload: string): Promise<void> {
  raw.send({ cmd: 'publish', topic: 'demo/q2', payload: Buffer.from(payload), qos: 2, messageId: 7, retain: false, dup: false });
  await raw.next('pubrec');
}

/**
 * A connection whose takeover waits got its CONNACK, so it may publish; it closes before the takeover ends, with a
 * QoS 2 message unreleased (no PUBREL), and is never registered. Its clean session still ends with it: the next
 * session's QoS 2 message with the same packet id is delivered, not taken for a duplicate of that one.
 */
async function waitingCleanSessionEnds(e: Emulator, clientId: string): Promise<void> {
  const watcher = await device(e, `${clientId}-watcher`, 4);
  await watcher.client.subscribeAsync('demo/q2', { qos: 2 });
  const { ended: firstEnded, held } = await firstConnection(e, clientId, 4);
  const waitingOnBroker = brokerEvent(e, 'connackSent', clientId);
  const { raw: second } = await rawLogin(e.mqttUrl, accountLogin(e, clientId));
  await held.closing;
  const waiting = await waitingOnBroker;
  await publishQos2(second, 'first');
  expect(await watcher.next()).toEqual(['demo/q2', 'first']);
  const waitingClosed = once(waiting.conn, 'close');
  second.socket.destroy();
  await second.closed;
  await waitingClosed;
  held.release();
  await firstEnded;
  expect(clientById(e.broker, clientId)).toBeUndefined();
  const { raw: next } = await rawLogin(e.mqttUrl, accountLogin(e, clientId));
  await publishQos2(next, 'second');
  next.send({ cmd: 'pubrel', messageId: 7 });
  await next.next('pubcomp');
  expect(await watcher.next()).toEqual(['demo/q2', 'second']);
}

describe('closes ending in any order, and three CONNECTs of one ClientId', () => {
  const emu = useEmulator({ wsPort: false }, 'test');

  it.each(VERSIONS)('the newer connection leaves before the old one\'s close ends: each counted out once, the ClientId offline (MQTT %i)', async (version) => {
    await newerLeavesFirst(emu(), `GID_take@@@first${version}`, version);
  });

  it.each(VERSIONS)('a third CONNECT while a takeover waits for the old close: it takes the waiting one over, and alone stays (MQTT %i)', async (version) => {
    await thirdConnectWhileWaiting(emu(), `GID_take@@@third${version}`, version);
  });

  it.each(VERSIONS)('a connection whose takeover waits closes first: never registered, the old one counted out once (MQTT %i)', async (version) => {
    await waitingLeavesFirst(emu(), `GID_take@@@wait${version}`, version);
  });

  it('a connection whose takeover waits, with a QoS 2 message unreleased, closes first: its clean session ends with it', async () => {
    await waitingCleanSessionEnds(emu(), 'GID_take@@@waitq2');
  });
});

describe('a Token-mode connection whose takeover waits', () => {
  const emu = useEmulator({ wsPort: false }, 'test');

  it('closes first, never registered: its token session ends with it (its token revoked: no notice, no tokenInvalid)', async () => {
    const e = emu();
    const clientId = 'GID_take@@@waittoken';
    const expireTime = Date.now() + 10 * 60_000;
    const { Token: token } = await callApi<{ Token: string }>(e, 'ApplyToken', { Resources: 'demo/in', InstanceId: e.instanceId, ExpireTime: String(expireTime), Actions: 'R' });
    const { ended: firstEnded, held } = await firstConnection(e, clientId, 4);
    const waitingOnBroker = brokerEvent(e, 'connackSent', clientId);
    const { raw: second, connack } = await rawLogin(e.mqttUrl, { clientId, username: `Token|${e.accessKeyId}|${e.instanceId}`, password: `R|${token}` });
    expect(connack.returnCode).toBe(0);
    await held.closing;
    const waiting = await waitingOnBroker;
    const waitingClosed = once(waiting.conn, 'close');
    second.socket.destroy();
    await Promise.all([second.closed, waitingClosed]);
    held.release();
    await firstEnded;
    await expectNoneLeft(e, clientId);
    // A session still live (its expiry timer armed too) would be told its token was revoked, and counted.
    await callApi(e, 'RevokeToken', { Token: token, InstanceId: e.instanceId });
    expect(e.stats().mqtt.rules['tokenInvalid']).toBeUndefined();
  });
});

/** An MQTT 5 persistent session with a delayed will: its connection's close arms both aedes timers of the ClientId. */
const SESSION = {
  protocolVersion: 5,
  clean: false,
  properties: { sessionExpiryInterval: 600 },
  will: { topic: 'demo/will', payload: Buffer.from('gone'), qos: 1, retain: false, properties: { willDelayInterval: 600 } },
} as const;

/** aedes' own timers of each ClientId: its session's expiry and its delayed will, armed when a connection closes. */
function timers(e: Emulator): { expiringSessions: Map<string, unknown>; delayedWills: Map<string, unknown> } {
  return e.broker as unknown as { expiringSessions: Map<string, unknown>; delayedWills: Map<string, unknown> };
}

describe('an MQTT 5 session\'s timers (its expiry, a delayed will) when connections of its ClientId overlap', () => {
  const emu = useEmulator({ wsPort: false, willMessages: 'allow' });

  it('the old connection arms no session expiry and no delayed will: the session goes on in the new connection', async () => {
    const e = emu();
    const clientId = 'GID_take@@@timers';
    const old = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), SESSION);
    onTestFinished(() => old.endAsync(true));
    const oldLeaves = clientLeaves(e, clientId);
    dropOldAtRegistration(e.broker);
    const next = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), SESSION);
    onTestFinished(() => next.endAsync(true));
    await oldLeaves;
    expect(timers(e).expiringSessions.has(clientId)).toBe(false);
    expect(timers(e).delayedWills.has(clientId)).toBe(false);
    expect(await online(e, clientId)).toBe(true);
  });

  it('the newer connection closed first: the old close, ending last, leaves the timers the newer one armed', async () => {
    const e = emu();
    const clientId = 'GID_take@@@timers-last';
    const { onBroker: old, held } = await firstConnection(e, clientId, 5, SESSION);
    old.conn.destroy();
    await held.closing;
    const next = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), SESSION);
    onTestFinished(() => next.endAsync(true));
    const nextLeaves = clientLeaves(e, clientId);
    registeredNow(e, clientId).conn.destroy();
    await nextLeaves;
    const { expiringSessions, delayedWills } = timers(e);
    const [expiry, will] = [expiringSessions.get(clientId), delayedWills.get(clientId)];
    expect(expiry).toBeDefined();
    expect(will).toBeDefined();
    held.release();
    // Not replaced by timers of the old connection (which would run from now, with the old connection's will).
    expect(expiringSessions.get(clientId)).toBe(expiry);
    expect(delayedWills.get(clientId)).toBe(will);
  });

  it.each(['before', 'after'] as const)('a connection that closes while its takeover waits, its close ending %s the old one\'s: its session expiry and delayed will are armed', async (order) => {
    const e = emu();
    const clientId = `GID_take@@@timers-wait-${order}`;
    const { held } = await firstConnection(e, clientId, 5, SESSION);
    const secondOnBroker = brokerEvent(e, 'connackSent', clientId);
    const second = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), SESSION);
    onTestFinished(() => second.endAsync(true));
    await held.closing;
    // It resumed the session, subscriptions included: its close waits for their unsubscribes, held too.
    const waiting = await secondOnBroker;
    const waitingHeld = holdClose(e.broker, waiting);
    waiting.conn.destroy();
    await waitingHeld.closing;
    if (order === 'before') {
      waitingHeld.release();
      held.release();
    } else {
      held.release();
      waitingHeld.release();
    }
    expect(timers(e).expiringSessions.has(clientId)).toBe(true);
    expect(timers(e).delayedWills.has(clientId)).toBe(true);
    expect(clientById(e.broker, clientId)).toBeUndefined();
    expect(await online(e, clientId)).toBe(false);
  });
});

const { available, skipped } = redisAvailable();

describe.skipIf(!available)(`the same, clustered (one process on Redis)${skipped}`, () => {
  /** A cluster of one: aedes on mqemitter-redis, whose unsubscribes call back once Redis answers. */
  async function member(): Promise<Emulator & { readonly redis: TestRedis }> {
    const redis = await startRedis();
    const emulator = await startEmulator({ env: {}, ...ANY_GROUP, wsPort: false, redis: redis.url } satisfies EmulatorOptions);
    onTestFinished(() => emulator.close());
    return Object.assign(emulator, { redis });
  }

  it.each(VERSIONS)('the newer connection leaves first (MQTT %i)', async (version) => {
    await newerLeavesFirst(await member(), `GID_take@@@first${version}`, version);
  });

  it.each(VERSIONS)('a third CONNECT while a takeover waits (MQTT %i)', async (version) => {
    await thirdConnectWhileWaiting(await member(), `GID_take@@@third${version}`, version);
  });

  it.each(VERSIONS)('a connection whose takeover waits closes first (MQTT %i)', async (version) => {
    await waitingLeavesFirst(await member(), `GID_take@@@wait${version}`, version);
  });

  // aedes forgets a connection whose close has begun when a second takeover notice from another process names it
  // (its `deleteClient`, MQTT 3.1.1: an MQTT 5 one is still being told why then). Its close, ending after a new
  // connection here registered, then counted it out a second time: the count said 0 with that connection open.
  it('a second takeover notice while the connection closes, then a connection here: the old one counted out once, the new one counted', async () => {
    const e = await member();
    const clientId = 'GID_take@@@notices';
    const { held, told } = await firstConnection(e, clientId, 4);
    // Heard after aedes' own listener of the notices has handled each (mqemitter calls a topic's listeners in order).
    const heard = new Promise<void>((resolve) => {
      let notices = 0;
      e.broker.subscribe('$SYS/+/new/clients', (packet, done) => {
        if (packet.topic === '$SYS/another-process/new/clients' && packet.payload.toString() === clientId && ++notices === 2) resolve();
        done();
      }, () => undefined);
    });
    const watcher = new Redis(e.redis.url);
    onTestFinished(() => watcher.disconnect());
    await watcher.publish(takeoverChannel(0), JSON.stringify({ b: 'another-process', c: [clientId, clientId] }));
    await heard;
    await held.closing;
    expect(clientById(e.broker, clientId), 'forgotten on the second notice').toBeUndefined();
    expect(told).toEqual({ connected: 1, disconnected: 1 });
    expect(e.broker.connectedClients).toBe(0);
    const onBroker = registered(e, clientId);
    await device(e, clientId, 4);
    const here = await onBroker;
    held.release();
    expect(clientById(e.broker, clientId) === here, 'the connection here registered').toBe(true);
    expect(e.broker.connectedClients).toBe(1);
    expect(e.stats().mqtt.connected).toBe(1);
    expect(await online(e, clientId)).toBe(true);
    expect(told).toEqual({ connected: 2, disconnected: 1 });
  });

  // Another process's takeover notice while a takeover waits here: the connection waiting is older than the one that
  // process took the session to, so it is taken over too, never registered (registered, it would announce itself and
  // close the newer one there; closed first, it was registered closed: counted and online for good).
  it.each(['closes', 'stays open'] as const)('another process takes the ClientId over while a takeover waits here, and the waiting connection %s: never registered, nothing left', async (then) => {
    const e = await member();
    const clientId = `GID_take@@@elsewhere-${then === 'closes' ? 'closes' : 'open'}`;
    const { ended: firstEnded, held, told } = await firstConnection(e, clientId, 5);
    const waitingOnBroker = brokerEvent(e, 'connackSent', clientId);
    const second = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: 5 });
    onTestFinished(() => second.endAsync(true));
    const secondEnded = ended(second);
    await held.closing;
    const waiting = await waitingOnBroker;
    const waitingClosed = once(waiting.conn, 'close');
    const heard = new Promise<void>((resolve) => {
      e.broker.subscribe('$SYS/+/new/clients', (packet, done) => {
        if (packet.topic === '$SYS/another-process/new/clients' && packet.payload.toString() === clientId) resolve();
        done();
      }, () => undefined);
    });
    const watcher = new Redis(e.redis.url);
    onTestFinished(() => watcher.disconnect());
    await watcher.publish(takeoverChannel(0), JSON.stringify({ b: 'another-process', c: [clientId] }));
    await heard;
    if (then === 'closes') await second.endAsync();
    else expect((await secondEnded).disconnect?.reasonCode, 'told it was taken over').toBe(0x8e);
    await waitingClosed;
    held.release();
    await firstEnded;
    expect(clientById(e.broker, clientId)).toBeUndefined();
    expect(e.broker.connectedClients).toBe(0);
    expect(e.stats().mqtt.connected).toBe(0);
    expect(await online(e, clientId)).toBe(false);
    expect(told).toEqual({ connected: 1, disconnected: 1 });
  });
});
