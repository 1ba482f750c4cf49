/**
 * `kickOnRevoke`: when a DeviceCredential stops authenticating (Refresh, UnRegister, a newer Register), every
 * connection that logged in with it is dropped (MQTT 5: DISCONNECT 0x87 first), not only the one registered under its
 * ClientId: a takeover's new connection has its CONNACK while the old connection's close goes on, and aedes registers
 * it only once that close has ended; and a CONNECT whose login succeeded may still be on its way to its CONNACK (aedes
 * asks the session store in between: Redis round trips, clustered), or not even authenticated by aedes yet (a turn of
 * the event loop after the login was decided). Each order is forced: the old connection's close held at its
 * unsubscribes (helpers/takeover.ts), the CONNECT held where aedes asks the store to forget the ClientId's
 * subscriptions, or where aedes asks the authenticate hook. In one process, and on a cluster's Redis with the revocation made through the same process or another.
 */
import type { Client } from 'aedes';
import type { IDisconnectPacket } from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { clientById, sessionStore } from '../../src/emulator/aedes-adapter.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import type { MqttCredentials } from '../../src/signer/mqtt.js';
import { device } from '../helpers/broker.js';
import { ANY_GROUP, callApi } from '../helpers/emulator.js';
import { connectPacket, rawLogin, rawSocket, type RawMqtt } from '../helpers/raw-mqtt.js';
import { redisAvailable, startRedis } from '../helpers/redis.js';
import { brokerEvent, holdClose } from '../helpers/takeover.js';

const OPTIONS = { env: {}, ...ANY_GROUP, wsPort: false, kickOnRevoke: true } as const satisfies EmulatorOptions;

async function startOwn(options: EmulatorOptions = {}): Promise<Emulator> {
  const e = await startEmulator({ ...OPTIONS, ...options });
  onTestFinished(() => e.close());
  return e;
}

const VERSIONS = [4, 5] as const;
type Version = (typeof VERSIONS)[number];

/** Revoke `clientId`'s credential through `api`'s OpenAPI. */
async function revoke(api: Emulator, clientId: string): Promise<void> {
  await callApi(api, 'UnRegisterDeviceCredential', { ClientId: clientId, InstanceId: api.instanceId });
}

/**
 * The connection was dropped by the time the revocation was answered (made through its own process: the kick runs
 * before the answer): nothing it sends now is answered, and an MQTT 5 connection was told why first. `before`: how
 * many packets it had received before the revocation.
 */
async function droppedAlready(raw: RawMqtt, version: Version, before: number): Promise<void> {
  raw.send({ cmd: 'pingreq' });
  await raw.next('pingresp').catch(() => undefined);
  const after = raw.received.slice(before);
  if (version === 5) expect(after[0], 'DISCONNECT first').toMatchObject({ cmd: 'disconnect', reasonCode: 0x87 });
  else expect(after, 'closed, unanswered').toEqual([]);
  await raw.closed;
}

/** The connection is dropped (a revocation made through another process reaches this one a little later). */
async function dropped(raw: RawMqtt, version: Version): Promise<void> {
  await raw.closed;
  const disconnects = raw.received.filter((p): p is IDisconnectPacket => p.cmd === 'disconnect');
  expect(disconnects.map((d) => d.reasonCode), 'told why').toEqual(version === 5 ? [0x87] : []);
}

/**
 * A connection of the device, with a subscription its close waits for, is taken over by a newer one of the same
 * credential (at the same process), whose CONNACK is out while the old close is held. The credential is revoked
 * (through `api`): the newer connection, which aedes has not registered, is dropped too.
 */
async function waitingConnectionKicked(at: Emulator, api: Emulator, clientId: string, version: Version): Promise<void> {
  const creds = await device(at, clientId);
  const { raw: first } = await rawLogin(at.mqttUrl, creds, version);
  first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'demo/old', qos: 1 }] });
  await first.next('suback');
  const old = clientById(at.broker, clientId);
  if (old === undefined) throw new Error(`${clientId} is not registered`);
  const held = holdClose(at.broker, old);
  const waitingOnBroker = brokerEvent(at, 'connackSent', clientId);
  const { raw: second, connack } = await rawLogin(at.mqttUrl, creds, version);
  expect(connack.returnCode ?? connack.reasonCode).toBe(0);
  await held.closing;
  const waiting = await waitingOnBroker;
  expect(clientById(at.broker, clientId), 'the takeover waits: the old connection still registered').toBe(old);
  const before = second.received.length;
  await revoke(api, clientId);
  if (api === at) await droppedAlready(second, version, before);
  else await dropped(second, version);
  expect(waiting.closed).toBe(true);
  held.release();
  await first.closed;
  expect(clientById(at.broker, clientId), 'nothing registered').toBeUndefined();
}

/**
 * Hold `clientId`'s next CONNECT, once its login has succeeded, where aedes asks the session store to forget the
 * ClientId's subscriptions (a clean session's CONNECT): `held` resolves then.
 */
function holdConnect(e: Emulator, clientId: string): { held: Promise<Client>; release(): void } {
  type Clean = (client: Client) => Promise<unknown>;
  const store = sessionStore(e.broker) as unknown as { cleanSubscriptions: Clean };
  const cleanSubscriptions = store.cleanSubscriptions;
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  let hold = (_client: Client): void => undefined;
  const held = new Promise<Client>((resolve) => (hold = resolve));
  store.cleanSubscriptions = async function (this: unknown, client) {
    if (client.id === clientId) {
      store.cleanSubscriptions = cleanSubscriptions;
      hold(client);
      await released;
    }
    return cleanSubscriptions.call(this, client);
  };
  onTestFinished(() => {
    release();
    if (store.cleanSubscriptions !== cleanSubscriptions) store.cleanSubscriptions = cleanSubscriptions;
  });
  return { held, release };
}

/**
 * A CONNECT of the device, held by `holdAt` at a step between its login and its CONNACK, while its credential is
 * revoked; then let go: aedes answers it (CONNACK 0), and the connection is dropped, as `check` says.
 */
async function heldConnectKicked(
  e: Emulator,
  clientId: string,
  version: Version,
  holdAt: (e: Emulator, clientId: string) => { held: Promise<unknown>; release(): void },
  check: (raw: RawMqtt, connack: unknown) => Promise<void>,
): Promise<void> {
  const creds: MqttCredentials = await device(e, clientId);
  const hold = holdAt(e, clientId);
  const raw = await rawSocket(e.mqttUrl, version);
  raw.send(connectPacket(creds, version));
  await hold.held;
  await revoke(e, clientId);
  hold.release();
  const connack = await raw.next('connack');
  expect(connack).toMatchObject(version === 5 ? { reasonCode: 0 } : { returnCode: 0 });
  await check(raw, connack);
  expect(clientById(e.broker, clientId)).toBeUndefined();
}

/** A CONNECT whose login succeeded is on its way to its CONNACK (held at aedes' session lookup) when the credential is revoked: dropped once answered. */
function connectingConnectionKicked(e: Emulator, clientId: string, version: Version): Promise<void> {
  return heldConnectKicked(e, clientId, version, holdConnect, (raw) => dropped(raw, version));
}

/**
 * Hold `clientId`'s next CONNECT once its login has been decided (the emulator's preConnect accepted the credential)
 * and before aedes asks the authenticate hook, which it does a turn of the event loop later (`setImmediate`): `held`
 * resolves then.
 */
function holdAuthenticate(e: Emulator, clientId: string): { held: Promise<void>; release(): void } {
  type Authenticate = (client: Client, username: unknown, password: unknown, done: unknown) => void;
  const broker = e.broker as unknown as { authenticate: Authenticate };
  const authenticate = broker.authenticate;
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  let hold = (): void => undefined;
  const held = new Promise<void>((resolve) => (hold = resolve));
  broker.authenticate = function (this: unknown, client, username, password, done) {
    if (client.id !== clientId) {
      authenticate.call(this, client, username, password, done);
      return;
    }
    broker.authenticate = authenticate;
    hold();
    void released.then(() => authenticate.call(this, client, username, password, done));
  };
  onTestFinished(() => {
    release();
    if (broker.authenticate !== authenticate) broker.authenticate = authenticate;
  });
  return { held, release };
}

/**
 * The credential is revoked right after a CONNECT's login was decided with it, before aedes goes on to authenticate
 * it: the connection is dropped once its CONNACK is out (it was not, when it was remembered only at authenticate).
 * What came after the CONNACK: nothing answers the PINGREQ; MQTT 5 is told why first.
 */
function decidedConnectionKicked(e: Emulator, clientId: string, version: Version): Promise<void> {
  return heldConnectKicked(e, clientId, version, holdAuthenticate, (raw, connack) => droppedAlready(raw, version, raw.received.indexOf(connack as never) + 1));
}

describe('kickOnRevoke drops every connection of the revoked credential', () => {
  it.each(VERSIONS)('MQTT %i: a connection whose takeover waits for the old connection\'s close', async (version) => {
    const e = await startOwn();
    await waitingConnectionKicked(e, e, `GID_kick@@@wait${version}`, version);
  });

  it.each(VERSIONS)('MQTT %i: a connection on its way to its CONNACK', async (version) => {
    await connectingConnectionKicked(await startOwn(), `GID_kick@@@conn${version}`, version);
  });

  it.each(VERSIONS)('MQTT %i: a connection whose login was decided, revoked before aedes authenticates it', async (version) => {
    await decidedConnectionKicked(await startOwn(), `GID_kick@@@auth${version}`, version);
  });
});

const { available, skipped } = redisAvailable();

describe.skipIf(!available)(`the same, clustered${skipped}`, () => {
  it.each(VERSIONS)('MQTT %i: a connection whose takeover waits, revoked through its own process', async (version) => {
    const { url } = await startRedis();
    const e = await startOwn({ redis: url });
    await waitingConnectionKicked(e, e, `GID_kick@@@cwait${version}`, version);
  });

  it.each(VERSIONS)('MQTT %i: a connection whose takeover waits, revoked through another process', async (version) => {
    const { url } = await startRedis();
    const a = await startOwn({ redis: url });
    const b = await startOwn({ redis: url });
    await waitingConnectionKicked(a, b, `GID_kick@@@cwait2${version}`, version);
  });

  it.each(VERSIONS)('MQTT %i: a connection on its way to its CONNACK', async (version) => {
    const { url } = await startRedis();
    await connectingConnectionKicked(await startOwn({ redis: url }), `GID_kick@@@cconn${version}`, version);
  });

  it.each(VERSIONS)('MQTT %i: a connection whose login was decided, revoked before aedes authenticates it', async (version) => {
    const { url } = await startRedis();
    await decidedConnectionKicked(await startOwn({ redis: url }), `GID_kick@@@cauth${version}`, version);
  });
});
