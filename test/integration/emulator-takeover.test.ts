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
 */
import type { Aedes, Client } from 'aedes';
import type { MqttClient } from 'mqtt';
import { describe, expect, it, onTestFinished } from 'vitest';
import { clientById } from '../../src/emulator/aedes-adapter.js';
import type { Emulator } from '../../src/emulator/index.js';
import { accountLogin, ended } from '../helpers/broker.js';
import { callApi, clientLeaves, connectMqtt, connectWithInbox, subscribed, useEmulator, type InboxClient } from '../helpers/emulator.js';

const VERSIONS = [4, 5] as const;
type Version = (typeof VERSIONS)[number];

/** Resolves with the broker's client of the next connection of `clientId` that aedes registers. */
function registered(e: Emulator, clientId: string): Promise<Client> {
  return new Promise((resolve) => {
    const listener = (client: Client): void => {
      if (client.id !== clientId) return;
      e.broker.off('client', listener);
      resolve(client);
    };
    e.broker.on('client', listener);
  });
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

describe('an MQTT 5 session whose old connection closes after the new one registered', () => {
  const emu = useEmulator({ wsPort: false, willMessages: 'allow' });

  it('the old connection arms no session expiry and no delayed will: the session goes on in the new connection', async () => {
    const e = emu();
    const clientId = 'GID_take@@@timers';
    const session = {
      clean: false,
      properties: { sessionExpiryInterval: 600 },
      will: { topic: 'demo/will', payload: Buffer.from('gone'), qos: 1 as const, retain: false, properties: { willDelayInterval: 600 } },
    };
    const old = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: 5, ...session });
    onTestFinished(() => old.endAsync(true));
    const oldLeaves = clientLeaves(e, clientId);
    dropOldAtRegistration(e.broker);
    const next = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: 5, ...session });
    onTestFinished(() => next.endAsync(true));
    await oldLeaves;
    // aedes' own timers of the ClientId: its session's expiry and its delayed will, armed when a connection closes.
    const timers = e.broker as unknown as { expiringSessions: Map<string, unknown>; delayedWills: Map<string, unknown> };
    expect(timers.expiringSessions.has(clientId)).toBe(false);
    expect(timers.delayedWills.has(clientId)).toBe(false);
    expect(await online(e, clientId)).toBe(true);
  });
});
