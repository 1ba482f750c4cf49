/**
 * A CONNECT that starts a new session discards any session the ClientId had (MQTT-3.1.2-4: Clean Start; MQTT 3.1.1
 * §3.1.2.4: clean session), and with it the QoS 2 messages that session received and never had released (PUBLISH
 * received, PUBREL not yet). aedes 2.0.0-beta.1 keeps those under the ClientId and the packet id until their PUBREL and
 * deletes nothing at a Clean Start: a later session's new QoS 2 message with such a packet id was taken for a
 * duplicate (acknowledged, never routed: lost). A session resumed (Session Present 1) goes on with its packet ids: a
 * PUBLISH it repeats before its PUBREL is acknowledged and not delivered again (MQTT-4.3.3-2), and its PUBREL releases
 * it. A session aedes answers with Session Present 0 is a new one too, whatever the CONNECT asked: the client is told
 * it has no session to go on with (MQTT 5 §3.2.2.1.1), and may use any packet id.
 *
 * QoS 2 in a persistent session is refused by default (as the service does): these tests allow it
 * (`qos2PersistentSessions: 'allow'`). In one process, and on a cluster's Redis with each connection at another process;
 * there also what it costs Redis: a clean session's CONNECT no command of its own, a persistent session no record while
 * QoS 2 is refused there, and an expired session leaves none.
 */
import type { Client } from 'aedes';
import { Redis } from 'ioredis';
import type { IConnectPacket } from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { clientById, sessionStore } from '../../src/emulator/aedes-adapter.js';
import { KEYS } from '../../src/emulator/cluster/keys.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { accountLogin } from '../helpers/broker.js';
import { ANY_GROUP, clientLeaves, connectWithInbox, type InboxClient } from '../helpers/emulator.js';
import { rawLogin, type RawMqtt } from '../helpers/raw-mqtt.js';
import { redisAvailable, startRedis } from '../helpers/redis.js';
import { brokerEvent, holdClose } from '../helpers/takeover.js';

const OPTIONS = { env: {}, ...ANY_GROUP, wsPort: false, qos2PersistentSessions: 'allow' } as const satisfies EmulatorOptions;

async function startOwn(options: EmulatorOptions = {}): Promise<Emulator> {
  const e = await startEmulator({ ...OPTIONS, ...options });
  onTestFinished(() => e.close());
  return e;
}

/** How a connection logs in. */
interface Login {
  readonly version: 4 | 5;
  readonly extra: Partial<IConnectPacket>;
}

const HOUR = { sessionExpiryInterval: 3600 };
const V4_PERSISTENT: Login = { version: 4, extra: { clean: false } };
const V4_CLEAN: Login = { version: 4, extra: { clean: true } };
/** MQTT 5 Clean Start 1, a session that outlives the connection. */
const V5_START_KEEP: Login = { version: 5, extra: { clean: true, properties: HOUR } };
/** MQTT 5 Clean Start 1, a session that ends with the connection. */
const V5_START_ENDS: Login = { version: 5, extra: { clean: true } };
/** MQTT 5 Clean Start 0, a session that outlives the connection. */
const V5_RESUME_KEEP: Login = { version: 5, extra: { clean: false, properties: HOUR } };

/** A subscriber of `demo/q2` at QoS 1 (mqtt.js hands a QoS 2 message on only at its PUBREL: a QoS 1 one keeps the order). */
async function watcher(e: Emulator, clientId: string): Promise<InboxClient> {
  const inbox = await connectWithInbox(e.mqttUrl, accountLogin(e, clientId));
  onTestFinished(() => inbox.client.endAsync(true));
  await inbox.client.subscribeAsync('demo/q2', { qos: 1 });
  return inbox;
}

/** Log in; the CONNACK's Session Present must be `present`. */
async function login(e: Emulator, clientId: string, how: Login, present: boolean): Promise<RawMqtt> {
  const { raw, connack } = await rawLogin(e.mqttUrl, accountLogin(e, clientId), how.version, how.extra);
  expect(connack.returnCode ?? connack.reasonCode, 'accepted').toBe(0);
  expect(connack.sessionPresent, 'Session Present').toBe(present);
  return raw;
}

/** Send a QoS 2 PUBLISH with packet id `id` on `demo/q2` and wait for its PUBREC. */
async function publishQos2(raw: RawMqtt, payload: string, id = 7, dup = false): Promise<void> {
  raw.send({ cmd: 'publish', topic: 'demo/q2', payload: Buffer.from(payload), qos: 2, messageId: id, retain: false, dup });
  await raw.next('pubrec');
}

/** Release packet id `id`, then publish `after` at QoS 1: what the watcher gets next tells what came before it. */
async function releaseThenMark(raw: RawMqtt, id = 7): Promise<void> {
  raw.send({ cmd: 'pubrel', messageId: id });
  await raw.next('pubcomp');
  raw.send({ cmd: 'publish', topic: 'demo/q2', payload: Buffer.from('after'), qos: 1, messageId: id + 1, retain: false, dup: false });
  await raw.next('puback');
}

/** DISCONNECT, and wait until the broker has let the connection go. */
async function leave(e: Emulator, clientId: string, raw: RawMqtt): Promise<void> {
  const left = clientLeaves(e, clientId);
  raw.send({ cmd: 'disconnect' });
  await Promise.all([left, raw.closed]);
}

/** A subscription of the session's, kept with it. */
async function subscribeKept(raw: RawMqtt): Promise<void> {
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'demo/kept', qos: 1 }] });
  await raw.next('suback');
}

/** A sequence of sessions of one ClientId: the first leaves a QoS 2 message (packet id 7) unreleased. */
interface Sequence {
  readonly first: Login;
  /** A session in between, which connects and leaves. */
  readonly between?: Login;
  readonly last: Login;
  /** Session Present of the last CONNACK. */
  readonly present: boolean;
}

/** New sessions, after the first: the last one's message with packet id 7 is a new message. */
const NEW_SESSIONS: Readonly<Record<string, Sequence>> = {
  'MQTT 3.1.1: a persistent session, a clean one, then a persistent one': { first: V4_PERSISTENT, between: V4_CLEAN, last: V4_PERSISTENT, present: false },
  'MQTT 3.1.1: a persistent session, then a clean one': { first: V4_PERSISTENT, last: V4_CLEAN, present: false },
  'MQTT 5: Clean Start 1 with a Session Expiry Interval, twice': { first: V5_START_KEEP, last: V5_START_KEEP, present: false },
  'MQTT 5: a persistent session, a Clean Start 1 one that ends with its connection, then Clean Start 0': { first: V5_START_KEEP, between: V5_START_ENDS, last: V5_RESUME_KEEP, present: false },
};

/** Resumed sessions: the last one goes on with the first one's packet ids. */
const RESUMED: Readonly<Record<string, Sequence>> = {
  'MQTT 3.1.1: a persistent session resumed': { first: V4_PERSISTENT, last: V4_PERSISTENT, present: true },
  'MQTT 5: Clean Start 0, Session Present 1': { first: V5_START_KEEP, last: V5_RESUME_KEEP, present: true },
};

/** The first session, at `at`: a QoS 2 message with packet id 7 delivered and never released, then it leaves. */
async function firstSession(at: Emulator, clientId: string, s: Sequence, watching: InboxClient): Promise<void> {
  const first = await login(at, clientId, s.first, false);
  await subscribeKept(first);
  await publishQos2(first, 'old');
  expect(await watching.next()).toEqual(['demo/q2', 'old']);
  await leave(at, clientId, first);
  if (s.between) await leave(at, clientId, await login(at, clientId, s.between, false));
}

/** A new session's QoS 2 message with the packet id the first one left unreleased is delivered. */
async function newSessionDelivers(first: Emulator, last: Emulator, clientId: string, s: Sequence): Promise<void> {
  const watching = await watcher(first, `${clientId}-w`);
  await firstSession(first, clientId, s, watching);
  const raw = await login(last, clientId, s.last, s.present);
  await publishQos2(raw, 'new');
  await releaseThenMark(raw);
  expect(await watching.next(), 'the new message delivered').toEqual(['demo/q2', 'new']);
  expect(await watching.next()).toEqual(['demo/q2', 'after']);
}

/**
 * A resumed session's repeat of the unreleased PUBLISH (DUP) is acknowledged and not delivered again; its PUBREL
 * releases it, and the packet id then names a new message.
 */
async function resumedSessionGoesOn(first: Emulator, last: Emulator, clientId: string, s: Sequence): Promise<void> {
  const watching = await watcher(first, `${clientId}-w`);
  await firstSession(first, clientId, s, watching);
  const raw = await login(last, clientId, s.last, s.present);
  await publishQos2(raw, 'old', 7, true);
  await releaseThenMark(raw);
  expect(await watching.next(), 'the repeated PUBLISH not delivered again').toEqual(['demo/q2', 'after']);
  await publishQos2(raw, 'next');
  await releaseThenMark(raw);
  expect(await watching.next(), 'released: packet id 7 names a new message').toEqual(['demo/q2', 'next']);
  expect(await watching.next()).toEqual(['demo/q2', 'after']);
}

/**
 * Hold `clientId`'s next QoS 2 message where aedes stores it (after its lookup): `held` resolves then; the store goes
 * on at `release`.
 */
function holdStore(e: Emulator, clientId: string): { held: Promise<void>; release(): void } {
  type Store = (client: Client, packet: { messageId: number }) => Promise<void>;
  const store = sessionStore(e.broker) as unknown as { incomingStorePacket: Store };
  const incomingStorePacket = store.incomingStorePacket;
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  let hold = (): void => undefined;
  const held = new Promise<void>((resolve) => (hold = resolve));
  store.incomingStorePacket = async function (this: unknown, client, packet) {
    if (client.id === clientId) {
      store.incomingStorePacket = incomingStorePacket;
      hold();
      await released;
    }
    return incomingStorePacket.call(this, client, packet);
  };
  onTestFinished(() => {
    release();
    if (store.incomingStorePacket !== incomingStorePacket) store.incomingStorePacket = incomingStorePacket;
  });
  return { held, release };
}

/**
 * The ClientId's persistent session is still connected (at `old`), its close held, when a CONNECT with Clean Start
 * (at `next`) takes it over: the old connection has a QoS 2 message with packet id 7 unreleased, and one with packet id
 * 9 whose store aedes makes only after the Clean Start (`late`). The new session's messages with both packet ids are
 * delivered.
 */
async function cleanStartTakesOver(old: Emulator, next: Emulator, clientId: string, how: Login): Promise<void> {
  const watching = await watcher(old, `${clientId}-w`);
  const first = await login(old, clientId, V5_START_KEEP, false);
  await subscribeKept(first);
  await publishQos2(first, 'old');
  expect(await watching.next()).toEqual(['demo/q2', 'old']);
  const onBroker = await registered(old, clientId);
  const late = holdStore(old, clientId);
  first.send({ cmd: 'publish', topic: 'demo/q2', payload: Buffer.from('late'), qos: 2, messageId: 9, retain: false, dup: false });
  await late.held;
  const held = holdClose(old.broker, onBroker);
  const raw = await login(next, clientId, how, false);
  await held.closing;
  late.release();
  expect(await watching.next(), 'the old connection\'s late message, routed once stored').toEqual(['demo/q2', 'late']);
  await publishQos2(raw, 'new');
  await releaseThenMark(raw);
  expect(await watching.next(), 'the new message with packet id 7 delivered').toEqual(['demo/q2', 'new']);
  expect(await watching.next()).toEqual(['demo/q2', 'after']);
  await publishQos2(raw, 'new 9', 9);
  await releaseThenMark(raw, 9);
  expect(await watching.next(), 'the new message with packet id 9 delivered').toEqual(['demo/q2', 'new 9']);
  expect(await watching.next()).toEqual(['demo/q2', 'after']);
  held.release();
}

/** The broker's client of `clientId`'s connection, once registered. */
async function registered(e: Emulator, clientId: string): Promise<Client> {
  return clientById(e.broker, clientId) ?? brokerEvent(e, 'client', clientId);
}

const TAKEOVERS = { 'MQTT 5 Clean Start 1, a Session Expiry Interval': V5_START_KEEP, 'MQTT 3.1.1, clean': V4_CLEAN } as const;

describe('a Clean Start discards the unreleased QoS 2 messages of the ClientId\'s session', () => {
  it.each(Object.entries(NEW_SESSIONS))('%s: the new message with the old one\'s packet id is delivered', async (_title, s) => {
    const e = await startOwn();
    await newSessionDelivers(e, e, `GID_cs@@@n${Object.keys(NEW_SESSIONS).indexOf(_title)}`, s);
  });

  it.each(Object.entries(RESUMED))('%s: the repeated PUBLISH is not delivered again, and its PUBREL releases it', async (_title, s) => {
    const e = await startOwn();
    await resumedSessionGoesOn(e, e, `GID_cs@@@r${Object.keys(RESUMED).indexOf(_title)}`, s);
  });

  it.each(Object.entries(TAKEOVERS))('taking a live persistent session over (%s): the new messages are delivered', async (title, how) => {
    const e = await startOwn();
    await cleanStartTakesOver(e, e, `GID_cs@@@t${title.length}`, how);
  });
});

const { available, skipped } = redisAvailable();

describe.skipIf(!available)(`the same, clustered, each session at another process${skipped}`, () => {
  async function twoProcesses(): Promise<[Emulator, Emulator]> {
    const { url } = await startRedis();
    return [await startOwn({ redis: url }), await startOwn({ redis: url })];
  }

  it.each(Object.entries(NEW_SESSIONS))('%s: the new message is delivered', async (title, s) => {
    const [a, b] = await twoProcesses();
    await newSessionDelivers(a, b, `GID_cs@@@cn${Object.keys(NEW_SESSIONS).indexOf(title)}`, s);
  });

  it.each(Object.entries(RESUMED))('%s: the repeated PUBLISH is not delivered again, and its PUBREL releases it', async (title, s) => {
    const [a, b] = await twoProcesses();
    await resumedSessionGoesOn(a, b, `GID_cs@@@cr${Object.keys(RESUMED).indexOf(title)}`, s);
  });

  it.each(Object.entries(TAKEOVERS))('taking a live persistent session over (%s): the new messages are delivered', async (title, how) => {
    const [a, b] = await twoProcesses();
    await cleanStartTakesOver(a, b, `GID_cs@@@ct${title.length}`, how);
  });

  it('a clean session\'s CONNECT sends Redis nothing of its own to discard the old session\'s record: it goes in the check aedes\' Clean Start makes anyway', async () => {
    const { url } = await startRedis();
    const e = await startOwn({ redis: url });
    const r = new Redis(url);
    onTestFinished(() => r.disconnect());
    const monitor = await r.monitor();
    onTestFinished(() => monitor.disconnect());
    // Each command sent (not run by a script) that names a record, and not the ClientId's subscriptions (aedes' check).
    const alone: string[][] = [];
    const marker = `marker-${Date.now()}`;
    const seen = new Promise<void>((resolve) => {
      monitor.on('monitor', (_time: string, args: string[], source: string) => {
        if (args.includes(marker)) resolve();
        if (source.startsWith('lua')) return;
        if (args.some((a) => a.startsWith(KEYS.incoming(''))) && !args.some((a) => a.startsWith('client:'))) alone.push(args);
      });
    });
    for (const [i, how] of [V4_CLEAN, V5_START_ENDS].entries()) {
      const clientId = `GID_cs@@@cc${i}`;
      await leave(e, clientId, await login(e, clientId, how, false));
    }
    // Everything the emulator sent has reached Redis (and the monitor) before this.
    await r.echo(marker);
    await seen;
    expect(alone, 'commands of their own').toEqual([]);
  });

  it.each(Object.entries({ 'MQTT 3.1.1': V4_PERSISTENT, 'MQTT 5': V5_START_KEEP }))('with QoS 2 refused in persistent sessions (the default), a persistent session (%s) has no record', async (_title, how) => {
    const { url } = await startRedis();
    const e = await startOwn({ redis: url, qos2PersistentSessions: 'refuse' });
    const r = new Redis(url);
    onTestFinished(() => r.disconnect());
    const clientId = `GID_cs@@@cref${how.version}`;
    const raw = await login(e, clientId, how, false);
    raw.send({ cmd: 'pingreq' });
    await raw.next('pingresp');
    await leave(e, clientId, raw);
    await leave(e, clientId, await login(e, clientId, { ...how, extra: { ...how.extra, clean: false } }, true));
    expect(await r.exists(KEYS.incoming(clientId)), 'a record of the session in Redis').toBe(0);
  });

  it('an MQTT 5 session that expires leaves no record in Redis', async () => {
    const { url } = await startRedis();
    const e = await startOwn({ redis: url });
    const clientId = 'GID_cs@@@cexp';
    const watching = await watcher(e, `${clientId}-w`);
    const raw = await login(e, clientId, { version: 5, extra: { clean: true, properties: { sessionExpiryInterval: 1 } } }, false);
    await publishQos2(raw, 'unreleased');
    expect(await watching.next()).toEqual(['demo/q2', 'unreleased']);
    const r = new Redis(url);
    onTestFinished(() => r.disconnect());
    expect(await r.exists(KEYS.incoming(clientId)), 'the session\'s record, while it lasts').toBe(1);
    // aedes wipes an expired session by forgetting its subscriptions: wait for that to be done.
    const store = sessionStore(e.broker) as unknown as { cleanSubscriptions(client: Client): Promise<unknown> };
    const cleanSubscriptions = store.cleanSubscriptions;
    onTestFinished(() => void (store.cleanSubscriptions = cleanSubscriptions));
    const wiped = new Promise<unknown>((resolve) => {
      store.cleanSubscriptions = function (this: unknown, client) {
        const done = cleanSubscriptions.call(this, client);
        if (client.id === clientId) resolve(done);
        return done;
      };
    });
    const broker = e.broker as unknown as NodeJS.EventEmitter;
    const expired = new Promise<void>((resolve) => {
      broker.on('sessionExpired', (client: Client) => {
        if (client.id === clientId) resolve();
      });
    });
    await leave(e, clientId, raw);
    await expired;
    await wiped;
    expect(await r.exists(KEYS.incoming(clientId)), 'the record, once the session expired').toBe(0);
  });

  it('one process: taking a live persistent session over with Clean Start: the new messages are delivered', async () => {
    const { url } = await startRedis();
    const e = await startOwn({ redis: url });
    await cleanStartTakesOver(e, e, 'GID_cs@@@c1', V5_START_KEEP);
  });
});
