/**
 * `kickOnRevoke`: when a DeviceCredential stops authenticating (Refresh, UnRegister, a newer Register), every
 * connection that logged in with it is dropped (MQTT 5: DISCONNECT 0x87 first), not only the one registered under its
 * ClientId: a takeover's new connection has its CONNACK while the old connection's close goes on, and aedes registers
 * it only once that close has ended; and a CONNECT whose login succeeded may still be on its way to its CONNACK (aedes
 * asks the session store in between: Redis round trips, clustered), or not even authenticated by aedes yet (a turn of
 * the event loop after the login was decided). Each order is forced: the old connection's close held at its
 * unsubscribes (helpers/takeover.ts), the CONNECT held where aedes asks the store to forget the ClientId's
 * subscriptions, or where aedes asks the authenticate hook. In one process, and on a cluster's Redis with the
 * revocation made through the same process or another.
 */
import type { IDisconnectPacket } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { clientById } from '../../src/emulator/aedes-adapter.js';
import type { Emulator, EmulatorOptions } from '../../src/emulator/index.js';
import type { MqttCredentials } from '../../src/signer/mqtt.js';
import { device } from '../helpers/broker.js';
import { ANY_GROUP, callApi, startForTest } from '../helpers/emulator.js';
import { connectPacket, rawSocket, type RawMqtt } from '../helpers/raw-mqtt.js';
import { redisAvailable, startRedis } from '../helpers/redis.js';
import { holdAuthenticate, holdConnect, waitingTakeover } from '../helpers/takeover.js';

const OPTIONS = { env: {}, ...ANY_GROUP, wsPort: false, kickOnRevoke: true } as const satisfies EmulatorOptions;

function startOwn(options: EmulatorOptions = {}): Promise<Emulator> {
  return startForTest({ ...OPTIONS, ...options });
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
  const { first, second, waiting, held } = await waitingTakeover(at, await device(at, clientId), version);
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
