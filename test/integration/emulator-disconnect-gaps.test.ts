/**
 * `disconnect(clientId)` (and `POST /_emulator/disconnect`) cuts every connection of the ClientId, not only the one
 * registered under it: a takeover's new connection has its CONNACK while the old connection's close goes on, and aedes
 * registers it only once that close has ended; and a CONNECT whose login was decided is answered only after aedes
 * authenticated it (a turn of the event loop later) and asked the session store (Redis round trips, clustered). Once
 * `disconnect` has returned, none of them is connected, and none comes up: a CONNECT on its way gets no CONNACK. Each
 * order is forced: the old connection's close held at its unsubscribes, the CONNECT held where aedes asks the store
 * to forget the ClientId's subscriptions, or where aedes asks the authenticate hook (helpers/takeover.ts), and,
 * clustered, while its login waits for the cluster's credentials (the cluster's Redis stopped). In one process and on
 * a cluster's Redis.
 */
import type { Client } from 'aedes';
import { describe, expect, it, onTestFinished } from 'vitest';
import { clientById } from '../../src/emulator/aedes-adapter.js';
import type { Emulator, EmulatorOptions } from '../../src/emulator/index.js';
import { device } from '../helpers/broker.js';
import { ANY_GROUP, startForTest } from '../helpers/emulator.js';
import { connectPacket, rawSocket } from '../helpers/raw-mqtt.js';
import { redisAvailable, startRedis, type TestRedis } from '../helpers/redis.js';
import { holdAuthenticate, holdConnect, reportedConnected, waitingTakeover, type HeldConnect } from '../helpers/takeover.js';

const OPTIONS = { env: {}, ...ANY_GROUP, wsPort: false } as const satisfies EmulatorOptions;

function startOwn(options: EmulatorOptions = {}): Promise<Emulator> {
  return startForTest({ ...OPTIONS, ...options });
}

const VERSIONS = [4, 5] as const;
type Version = (typeof VERSIONS)[number];

/**
 * A connection of the device, with a subscription its close waits for, is taken over by a newer one, whose CONNACK is
 * out while the old close is held: `disconnect` cuts both (the newer one, which aedes has not registered, included),
 * without a DISCONNECT, and neither is registered once the old close ends.
 */
async function waitingConnectionCut(e: Emulator, clientId: string, version: Version): Promise<void> {
  const { first, old, second, waiting, held } = await waitingTakeover(e, await device(e, clientId), version);
  const before = second.received.length;

  const dropped = e.disconnect(clientId);
  expect(waiting.conn.destroyed, 'the waiting connection cut at once').toBe(true);
  expect(old.conn.destroyed, 'the old one too').toBe(true);
  expect(dropped, 'a connection was connected').toBe(true);
  await second.closed;
  expect(second.received.slice(before), 'a network cut: no DISCONNECT').toEqual([]);
  held.release();
  await first.closed;
  expect(clientById(e.broker, clientId), 'nothing registered').toBeUndefined();
  expect(e.stats().mqtt.connected).toBe(0);
  expect(e.disconnect(clientId), 'nothing left').toBe(false);
}

/**
 * A CONNECT of the device, held by `holdAt` between its login and its CONNACK, when `disconnect` is called: its socket
 * is cut at once, and aedes, let go on, answers nothing, registers nothing and reports nothing connected. `counted`:
 * the CONNACKs the stats count for it (one decided before the hold is counted, though never written). `disconnect`:
 * the method, or the HTTP control.
 */
async function heldConnectCut(
  e: Emulator,
  clientId: string,
  version: Version,
  holdAt: (e: Emulator, clientId: string) => HeldConnect,
  counted: Record<string, number>,
  disconnect: (e: Emulator, clientId: string) => boolean | Promise<boolean> = (emulator, id) => emulator.disconnect(id),
): Promise<void> {
  const creds = await device(e, clientId);
  const reported = reportedConnected(e);
  const hold = holdAt(e, clientId);
  const raw = await rawSocket(e.mqttUrl, version);
  raw.send(connectPacket(creds, version));
  const onBroker = await hold.held;
  const dropped = await disconnect(e, clientId);
  expect(onBroker.conn.destroyed, 'cut by the time disconnect answered').toBe(true);
  expect(dropped, 'a CONNECT on its way').toBe(true);
  await raw.closed;
  hold.release();
  await hold.resumed;
  expect(raw.received, 'no CONNACK').toEqual([]);
  expect(clientById(e.broker, clientId), 'nothing registered').toBeUndefined();
  expect(reported, 'clientConnected events').toEqual([]);
  expect(e.stats().mqtt.connected).toBe(0);
  expect(e.stats().mqtt.connacks).toEqual(counted);
  expect(e.disconnect(clientId), 'nothing left').toBe(false);
}

describe('disconnect(clientId) cuts every connection of the ClientId', () => {
  it.each(VERSIONS)('MQTT %i: a connection whose takeover waits for the old connection\'s close', async (version) => {
    await waitingConnectionCut(await startOwn(), `GID_cut@@@wait${version}`, version);
  });

  it.each(VERSIONS)('MQTT %i: a CONNECT on its way to its CONNACK (aedes asks the session store)', async (version) => {
    await heldConnectCut(await startOwn(), `GID_cut@@@conn${version}`, version, holdConnect, { 0: 1 });
  });

  it.each(VERSIONS)('MQTT %i: a CONNECT whose login was decided, before aedes authenticates it', async (version) => {
    await heldConnectCut(await startOwn(), `GID_cut@@@auth${version}`, version, holdAuthenticate, {});
  });
});

/** `POST /_emulator/disconnect`: its `disconnected`. */
async function disconnectOverHttp(e: Emulator, clientId: string): Promise<boolean> {
  const response = await fetch(new URL('/_emulator/disconnect', e.apiEndpoint), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ clientId }) });
  expect(response.status).toBe(200);
  return ((await response.json()) as { disconnected: boolean }).disconnected;
}

describe('POST /_emulator/disconnect the same', () => {
  it.each(VERSIONS)('MQTT %i: a CONNECT on its way to its CONNACK', async (version) => {
    await heldConnectCut(await startOwn(), `GID_cut@@@http${version}`, version, holdConnect, { 0: 1 }, disconnectOverHttp);
  });
});

const { available, skipped } = redisAvailable();

/**
 * Clustered, hold `clientId`'s next CONNECT while its login is being decided: the emulator's preConnect waits for the
 * cluster's credentials (a read of the cluster's Redis), and `redis` is stopped (SIGSTOP) until released. `held`
 * resolves once preConnect has been asked; `resumed` once, Redis let go on (SIGCONT), the authenticate hook has
 * answered (aedes stops there for a connection closed meanwhile).
 */
function holdLogin(redis: TestRedis): (e: Emulator, clientId: string) => HeldConnect {
  return (e, clientId) => {
    type Hook = (client: Client, ...rest: unknown[]) => void;
    const broker = e.broker as unknown as { preConnect: Hook; authenticate: Hook };
    const { preConnect, authenticate } = broker;
    const pid = redis.pid ?? 0;
    let stopped = true;
    process.kill(pid, 'SIGSTOP');
    const release = (): void => {
      if (stopped) process.kill(pid, 'SIGCONT');
      stopped = false;
    };
    onTestFinished(() => {
      release();
      broker.preConnect = preConnect;
      broker.authenticate = authenticate;
    });
    let hold = (_client: Client): void => undefined;
    const held = new Promise<Client>((resolve) => (hold = resolve));
    let answered = (): void => undefined;
    const resumed = new Promise<void>((resolve) => (answered = resolve));
    broker.preConnect = function (this: unknown, client, ...rest) {
      preConnect.call(this, client, ...rest);
      if ((rest[0] as { clientId: string }).clientId === clientId) hold(client);
    };
    broker.authenticate = function (this: unknown, client, ...rest) {
      authenticate.call(this, client, ...rest);
      if (client.id === clientId) answered();
    };
    return { held, release, resumed };
  };
}

describe.skipIf(!available)(`the same, clustered${skipped}`, () => {
  it.each(VERSIONS)('MQTT %i: a CONNECT whose login waits for the cluster\'s credentials', async (version) => {
    const redis = await startRedis();
    await heldConnectCut(await startOwn({ redis: redis.url }), `GID_cut@@@csync${version}`, version, holdLogin(redis), {});
  });

  it.each(VERSIONS)('MQTT %i: a connection whose takeover waits for the old connection\'s close', async (version) => {
    const { url } = await startRedis();
    await waitingConnectionCut(await startOwn({ redis: url }), `GID_cut@@@cwait${version}`, version);
  });

  it.each(VERSIONS)('MQTT %i: a CONNECT on its way to its CONNACK (aedes asks the session store)', async (version) => {
    const { url } = await startRedis();
    await heldConnectCut(await startOwn({ redis: url }), `GID_cut@@@cconn${version}`, version, holdConnect, { 0: 1 });
  });

  it.each(VERSIONS)('MQTT %i: a CONNECT whose login was decided, before aedes authenticates it', async (version) => {
    const { url } = await startRedis();
    await heldConnectCut(await startOwn({ redis: url }), `GID_cut@@@cauth${version}`, version, holdAuthenticate, {});
  });
});
