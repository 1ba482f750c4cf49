/**
 * What a connection of a ClientId may do while the close of the ClientId's older connection has not ended: the newer
 * connection has its CONNACK (aedes writes it without waiting for a takeover), so it publishes and is sent to, and the
 * older one's own state must neither stand in its way nor take it along when it goes.
 *
 * - QoS 2: aedes keeps a QoS 2 PUBLISH waiting for its PUBREL under the ClientId and its packet id. A clean session's
 *   such messages go when its connection ends (client-guards.ts); the older connection's, found by a newer session's
 *   PUBLISH with the same packet id, made aedes take the new message for a duplicate (acknowledged, never routed);
 *   and the older one's cleanup, keyed by ClientId, deleted the newer one's, whose repeated PUBLISH (MQTT-4.3.3-2:
 *   acknowledged, not delivered again) was then delivered a second time.
 * - P2P: the newer connection is reached by P2P from its CONNACK on, not from the end of the takeover.
 * - A CONNECT whose socket closes after its login succeeded and before aedes registers it (aedes asks the session
 *   store in between: Redis round trips, clustered) is not registered, counted, nor let take the older connection over.
 *
 * Each order is forced by holding the old connection's close at its unsubscribes (helpers/takeover.ts), in one
 * process, on a cluster of one process on Redis, and (QoS 2) with the old connection at one process of a cluster and
 * the new one at another.
 */
import { once } from 'node:events';
import type { Client } from 'aedes';
import { describe, expect, it, onTestFinished } from 'vitest';
import { clientById, sessionStore } from '../../src/emulator/aedes-adapter.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { accountLogin } from '../helpers/broker.js';
import { ANY_GROUP, clientLeaves, connectMqtt, connectWithInbox, type InboxClient } from '../helpers/emulator.js';
import { connectPacket, rawLogin, rawSocket, type RawMqtt } from '../helpers/raw-mqtt.js';
import { redisAvailable, startRedis } from '../helpers/redis.js';
import { brokerEvent, holdClose, holdConnect, reportedConnected, type HeldClose } from '../helpers/takeover.js';

/** Payloads over this are discarded by the broker (acknowledged as usual, never stored nor routed). */
const MAX_PAYLOAD = 64;
const OPTIONS = { env: {}, ...ANY_GROUP, wsPort: false, maxPayloadBytes: MAX_PAYLOAD } as const satisfies EmulatorOptions;

async function startOwn(options: EmulatorOptions = {}): Promise<Emulator> {
  const e = await startEmulator({ ...OPTIONS, ...options });
  onTestFinished(() => e.close());
  return e;
}

/**
 * Connect a subscriber of `topic`, ended when the test ends. At QoS 1, so that it hears messages in the order the
 * broker sends them: mqtt.js hands a QoS 2 message on only at its PUBREL, which the broker sends once the subscriber's
 * PUBREC is back, so a QoS 1 message the broker sent in between is handed on first (it was, once in a CI run, clustered).
 */
async function watcher(e: Emulator, clientId: string, topic: string): Promise<InboxClient> {
  const inbox = await connectWithInbox(e.mqttUrl, accountLogin(e, clientId));
  onTestFinished(() => inbox.client.endAsync(true));
  await inbox.client.subscribeAsync(topic, { qos: 1 });
  return inbox;
}

/** The broker's client registered under `clientId` now (the test fails if there is none). */
function registeredNow(e: Emulator, clientId: string): Client {
  const client = clientById(e.broker, clientId);
  if (client === undefined) throw new Error(`${clientId} is not registered`);
  return client;
}

/** Send a QoS 2 PUBLISH with packet id 7 on `demo/q2` and wait for its PUBREC. */
async function publishQos2(raw: RawMqtt, payload: string | Buffer, dup = false): Promise<void> {
  raw.send({ cmd: 'publish', topic: 'demo/q2', payload: Buffer.from(payload), qos: 2, messageId: 7, retain: false, dup });
  await raw.next('pubrec');
}

/** Release packet id 7, then publish `after` at QoS 1: what the watcher gets next tells what came before it. */
async function releaseThenMark(raw: RawMqtt): Promise<void> {
  raw.send({ cmd: 'pubrel', messageId: 7 });
  await raw.next('pubcomp');
  raw.send({ cmd: 'publish', topic: 'demo/q2', payload: Buffer.from('after'), qos: 1, messageId: 8, retain: false, dup: false });
  await raw.next('puback');
}

/**
 * How the connections of a scenario log in: MQTT 3.1.1 with a clean session, or MQTT 5 with Clean Start 0 and no
 * Session Expiry Interval (0: the session ends with the connection), which aedes answers with Session Present 0 when
 * it holds no session of the ClientId: a new session too.
 */
const LOGINS = {
  'MQTT 3.1.1, clean': { version: 4, extra: {} },
  'MQTT 5, Clean Start 0, Session Expiry 0': { version: 5, extra: { clean: false } },
} as const satisfies Record<string, { version: 4 | 5; extra: { clean?: boolean } }>;
type Login = (typeof LOGINS)[keyof typeof LOGINS];

/** Log a raw connection of `clientId` in at `e`; its CONNACK must say that no session was present. */
async function newSession(e: Emulator, clientId: string, login: Login): Promise<RawMqtt> {
  const { raw, connack } = await rawLogin(e.mqttUrl, accountLogin(e, clientId), login.version, login.extra);
  expect(connack.sessionPresent, 'a new session').toBe(false);
  return raw;
}

/** An old connection of `clientId` at `e` (raw, a new session), with a subscription its close waits for. */
async function oldConnection(e: Emulator, clientId: string, login: Login): Promise<{ raw: RawMqtt; onBroker: Client }> {
  const raw = await newSession(e, clientId, login);
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'demo/old', qos: 1 }] });
  await raw.next('suback');
  return { raw, onBroker: registeredNow(e, clientId) };
}

/** A newer connection of `clientId`, at `e`: it takes the old one over, whose close `held` holds (resolves once it does). */
async function takeOver(e: Emulator, clientId: string, held: HeldClose, login: Login): Promise<RawMqtt> {
  const raw = await newSession(e, clientId, login);
  await held.closing;
  return raw;
}

/**
 * The old connection has a QoS 2 message unreleased (packet id 7); while its close is held, the newer connection
 * (at `next`: the same broker, or another process of the cluster) sends a new QoS 2 message with packet id 7. It is
 * a message of a new session, to be delivered, not a duplicate of the old one.
 */
async function newerMessageWhileOldCloses(old: Emulator, next: Emulator, clientId: string, login: Login = LOGINS['MQTT 3.1.1, clean']): Promise<void> {
  const watching = await watcher(old, `${clientId}-watcher`, 'demo/q2');
  const first = await oldConnection(old, clientId, login);
  await publishQos2(first.raw, 'old');
  expect(await watching.next()).toEqual(['demo/q2', 'old']);
  const held = holdClose(old.broker, first.onBroker);
  const second = await takeOver(next, clientId, held, login);
  await publishQos2(second, 'new');
  await releaseThenMark(second);
  expect(await watching.next(), 'the new message delivered').toEqual(['demo/q2', 'new']);
  expect(await watching.next()).toEqual(['demo/q2', 'after']);
  held.release();
}

/**
 * Resolves once every delete of `client`'s QoS 2 messages asked of `e`'s session store so far has ended (clustered,
 * a Redis round trip): with what runs on its socket's close, its session's cleanup is then done.
 */
function storeDeletesOf(e: Emulator, client: Client): () => Promise<void> {
  const store = sessionStore(e.broker);
  const incomingDelPacket = store.incomingDelPacket;
  const asked: Promise<unknown>[] = [];
  store.incomingDelPacket = function (this: unknown, of, packet) {
    const deleting = incomingDelPacket.call(this, of, packet);
    if (of === client) asked.push(deleting.catch(() => undefined));
    return deleting;
  };
  onTestFinished(() => {
    store.incomingDelPacket = incomingDelPacket;
  });
  return async () => {
    await Promise.all(asked);
  };
}

/**
 * The old connection's QoS 2 message with packet id 7 was never stored (its payload too large: discarded, acknowledged
 * as usual), and never released. The newer connection stores its own message with packet id 7; then the old close
 * ends and its clean session's cleanup runs. The newer one's repeated PUBLISH (the same packet id, before its PUBREL)
 * is acknowledged and not delivered again (MQTT-4.3.3-2): the old cleanup left the newer one's message alone.
 */
async function oldCleanupAfterNewerStored(old: Emulator, next: Emulator, clientId: string, login: Login = LOGINS['MQTT 3.1.1, clean']): Promise<void> {
  const watching = await watcher(old, `${clientId}-watcher`, 'demo/q2');
  const first = await oldConnection(old, clientId, login);
  await publishQos2(first.raw, Buffer.alloc(MAX_PAYLOAD + 1, 0x61));
  const deleted = storeDeletesOf(old, first.onBroker);
  const held = holdClose(old.broker, first.onBroker);
  const second = await takeOver(next, clientId, held, login);
  await publishQos2(second, 'new');
  expect(await watching.next()).toEqual(['demo/q2', 'new']);
  // The cleanup runs on the socket's close, which aedes' close ends with (the emulator listens from the CONNACK on,
  // before this test does).
  const oldClosed = once(first.onBroker.conn, 'close');
  held.release();
  await oldClosed;
  await deleted();
  await publishQos2(second, 'new', true);
  await releaseThenMark(second);
  expect(await watching.next(), 'the repeated PUBLISH not delivered again').toEqual(['demo/q2', 'after']);
}

/**
 * A session resumed (MQTT 5 Clean Start 0 answered with Session Present 1: aedes holds subscriptions of the ClientId)
 * that ends with its connection goes on with the packet ids of the connection it took over: the newer connection's
 * repeat of the old one's unreleased PUBLISH, while the old close waits, is acknowledged and not delivered again
 * (MQTT-4.3.3-2). Its QoS 2 messages are the session store's, not the connection's.
 */
async function resumedSessionGoesOn(e: Emulator, clientId: string): Promise<void> {
  const watching = await watcher(e, `${clientId}-watcher`, 'demo/q2');
  const resume = { clean: false } as const;
  // A persistent session first: its stored subscription is the session a later Clean Start 0 resumes.
  const persistent = await rawLogin(e.mqttUrl, accountLogin(e, clientId), 5, { clean: false, properties: { sessionExpiryInterval: 3600 } });
  persistent.raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'demo/old', qos: 1 }] });
  await persistent.raw.next('suback');
  const left = clientLeaves(e, clientId);
  persistent.raw.send({ cmd: 'disconnect' });
  await left;
  const first = await rawLogin(e.mqttUrl, accountLogin(e, clientId), 5, resume);
  expect(first.connack.sessionPresent, 'the session resumed').toBe(true);
  await publishQos2(first.raw, 'old');
  expect(await watching.next()).toEqual(['demo/q2', 'old']);
  const held = holdClose(e.broker, registeredNow(e, clientId));
  const second = await rawLogin(e.mqttUrl, accountLogin(e, clientId), 5, resume);
  expect(second.connack.sessionPresent, 'the session resumed again').toBe(true);
  await held.closing;
  await publishQos2(second.raw, 'old', true);
  await releaseThenMark(second.raw);
  expect(await watching.next(), 'the repeated PUBLISH not delivered again').toEqual(['demo/q2', 'after']);
  held.release();
}

/**
 * A CONNECT whose socket closes after its login, before aedes registers it: aedes registered it all the same, closed
 * (its close had found nothing registered to unregister), so it stayed counted (`stats().mqtt.connected`, the
 * `clientConnected` event with no `clientDisconnected`) and online until its ClientId connected again; and it took
 * the ClientId's older, live connection over (`older`), leaving no live connection registered.
 */
async function closedBeforeRegistered(e: Emulator, clientId: string, older: boolean): Promise<void> {
  let olderOnBroker: Client | undefined;
  if (older) {
    const client = await connectMqtt(e.mqttUrl, accountLogin(e, clientId));
    onTestFinished(() => client.endAsync(true));
    olderOnBroker = registeredNow(e, clientId);
  }
  const connected = e.stats().mqtt.connected;
  const reported = reportedConnected(e);
  const hold = holdConnect(e, clientId);
  const raw = await rawSocket(e.mqttUrl);
  raw.send(connectPacket(accountLogin(e, clientId)));
  const onBroker = await hold.held;
  const closed = once(onBroker.conn, 'close');
  raw.socket.destroy();
  await closed;
  expect(onBroker.closed, "aedes' close of it has begun").toBe(true);
  hold.release();
  await hold.resumed;
  expect(clientById(e.broker, clientId), 'the registered connection').toBe(olderOnBroker);
  expect(olderOnBroker?.closed ?? false, 'the older connection taken over').toBe(false);
  expect(e.stats().mqtt.connected).toBe(connected);
  expect(reported, 'clientConnected events').toEqual([]);
  if (e.cluster !== undefined) {
    const stats = (await (await fetch(`${e.apiEndpoint}/_emulator/stats`)).json()) as { cluster: { online: number } };
    expect(stats.cluster.online, 'counted by the cluster').toBe(connected);
  }
}

const VERSIONS = [4, 5] as const;

/**
 * `seen` resolves once `e`'s broker has handed a message on `topic` to its listeners: a publisher's messages reach the
 * broker's bus in the order sent (clustered: on one Redis connection, and back on one), and mqemitter hands a message
 * to all its listeners at once, so every message the same publisher sent before it has been handed to its own by then.
 */
async function heard(e: Emulator, topic: string): Promise<{ readonly seen: Promise<void> }> {
  let resolve = (): void => undefined;
  const seen = new Promise<void>((r) => (resolve = r));
  const listener = (_packet: unknown, done: () => void): void => {
    resolve();
    done();
  };
  await new Promise<void>((subscribed) => e.broker.subscribe(topic, listener, subscribed));
  onTestFinished(() => new Promise<void>((unsubscribed) => e.broker.unsubscribe(topic, listener, unsubscribed)));
  return { seen };
}

/** Whether the old connection's socket is still open while its close is held, or closed by the client meanwhile. */
const OLD_SOCKET = ['open', 'closed'] as const;

/**
 * A P2P message published while a takeover waits for the old connection's close reaches the new connection, which
 * has its CONNACK, though aedes has not registered it yet: whether the old connection's socket is still open, or the
 * client has closed it (as a client may once told it was taken over) and only aedes' close of it goes on.
 */
async function p2pWhileTakeoverWaits(e: Emulator, clientId: string, version: (typeof VERSIONS)[number], oldSocket: (typeof OLD_SOCKET)[number]): Promise<void> {
  const sender = await connectMqtt(e.mqttUrl, accountLogin(e, `${clientId}-sender`));
  onTestFinished(() => sender.endAsync(true));
  const first = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: version });
  onTestFinished(() => first.endAsync(true));
  await first.subscribeAsync('demo/old', { qos: 1 });
  const old = registeredNow(e, clientId);
  const held = holdClose(e.broker, old);
  const waitingOnBroker = brokerEvent(e, 'connackSent', clientId);
  const second = await connectWithInbox(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: version });
  onTestFinished(() => second.client.endAsync(true));
  await held.closing;
  const waiting = await waitingOnBroker;
  expect(clientById(e.broker, clientId) === waiting, 'still waiting for the old close').toBe(false);
  if (oldSocket === 'closed') {
    const closed = once(old.conn, 'close');
    first.stream.destroy();
    await closed;
  }
  const marked = await heard(e, 'demo/marker');
  const p2p = `demo/p2p/${clientId}`;
  await sender.publishAsync(p2p, 'while waiting', { qos: 1 });
  await sender.publishAsync('demo/marker', 'm', { qos: 1 });
  await marked.seen;
  const registered = brokerEvent(e, 'client', clientId);
  held.release();
  expect(await registered).toBe(waiting);
  await sender.publishAsync(p2p, 'after', { qos: 1 });
  expect(await second.next(), 'the message sent while the takeover waited').toEqual([p2p, 'while waiting']);
  expect(await second.next()).toEqual([p2p, 'after']);
}

/** Each MQTT version with each state of the old socket. */
const P2P_CASES = VERSIONS.flatMap((version) => OLD_SOCKET.map((oldSocket) => [version, oldSocket] as const));

describe('a clean session\'s QoS 2 messages, when connections of its ClientId overlap', () => {
  it('a newer connection\'s message with the packet id of the old one\'s unreleased message, while the old close waits: delivered', async () => {
    const e = await startOwn();
    await newerMessageWhileOldCloses(e, e, 'GID_gap@@@dup');
  });

  it('the old connection\'s cleanup, ending after the newer one stored a message with the same packet id, leaves it', async () => {
    const e = await startOwn();
    await oldCleanupAfterNewerStored(e, e, 'GID_gap@@@late');
  });

  // MQTT 5 Clean Start 0 without a Session Expiry Interval, answered Session Present 0: a new session that ends with
  // its connection, as a clean one. Its QoS 2 messages were kept under the ClientId (for a session it was taken to
  // resume): the newer message was taken for the old one's duplicate (lost), and the old cleanup deleted the newer one's.
  it('MQTT 5, Clean Start 0, Session Expiry 0, no session present: the newer message delivered', async () => {
    const e = await startOwn();
    await newerMessageWhileOldCloses(e, e, 'GID_gap@@@dup5', LOGINS['MQTT 5, Clean Start 0, Session Expiry 0']);
  });

  it('MQTT 5, Clean Start 0, Session Expiry 0, no session present: the newer message left alone by the old cleanup', async () => {
    const e = await startOwn();
    await oldCleanupAfterNewerStored(e, e, 'GID_gap@@@late5', LOGINS['MQTT 5, Clean Start 0, Session Expiry 0']);
  });

  it('MQTT 5, Clean Start 0, Session Expiry 0, a session present: the newer connection goes on with the old one\'s packet ids', async () => {
    await resumedSessionGoesOn(await startOwn(), 'GID_gap@@@resumed');
  });
});

describe('a CONNECT whose socket closes after its login, before aedes registers it', () => {
  it.each([false, true])('is neither registered nor counted, and takes no older connection over (an older one: %s)', async (older) => {
    await closedBeforeRegistered(await startOwn(), `GID_gap@@@gone${String(older)}`, older);
  });
});

describe('a P2P message while a takeover waits for the old connection\'s close', () => {
  it.each(P2P_CASES)('reaches the new connection (MQTT %i, the old socket %s)', async (version, oldSocket) => {
    await p2pWhileTakeoverWaits(await startOwn(), `GID_gap@@@p2p${version}${oldSocket}`, version, oldSocket);
  });
});

const { available, skipped } = redisAvailable();

describe.skipIf(!available)(`the same, clustered${skipped}`, () => {
  const QOS2 = [
    ['the newer message, with the packet id of the old one\'s unreleased message, delivered', newerMessageWhileOldCloses, 'dup'],
    ['the newer message left alone by the old cleanup', oldCleanupAfterNewerStored, 'late'],
  ] as const;

  it.each(QOS2)('one process: %s', async (_title, scenario, name) => {
    const { url } = await startRedis();
    const e = await startOwn({ redis: url });
    await scenario(e, e, `GID_gap@@@${name}1`);
  });

  it.each(QOS2)('the old connection at one process, the newer one at another: %s', async (_title, scenario, name) => {
    const { url } = await startRedis();
    const a = await startOwn({ redis: url });
    const b = await startOwn({ redis: url });
    await scenario(a, b, `GID_gap@@@${name}2`);
  });

  it.each(QOS2)('MQTT 5, Clean Start 0, Session Expiry 0, no session present, at two processes: %s', async (_title, scenario, name) => {
    const { url } = await startRedis();
    const a = await startOwn({ redis: url });
    const b = await startOwn({ redis: url });
    await scenario(a, b, `GID_gap@@@${name}5`, LOGINS['MQTT 5, Clean Start 0, Session Expiry 0']);
  });

  it('MQTT 5, Clean Start 0, Session Expiry 0, a session present, one process: the newer connection goes on with the old one\'s packet ids', async () => {
    const { url } = await startRedis();
    await resumedSessionGoesOn(await startOwn({ redis: url }), 'GID_gap@@@resumedc');
  });

  it.each([false, true])('one process: a CONNECT whose socket closes before aedes registers it is neither registered nor counted, and takes no older connection over (an older one: %s)', async (older) => {
    const { url } = await startRedis();
    await closedBeforeRegistered(await startOwn({ redis: url }), `GID_gap@@@gonec${String(older)}`, older);
  });

  it.each(P2P_CASES)('one process: a P2P message while a takeover waits reaches the new connection (MQTT %i, the old socket %s)', async (version, oldSocket) => {
    const { url } = await startRedis();
    await p2pWhileTakeoverWaits(await startOwn({ redis: url }), `GID_gap@@@p2pc${version}${oldSocket}`, version, oldSocket);
  });
});
