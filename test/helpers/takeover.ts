/**
 * Takeovers and CONNECTs made to happen in a chosen order: an old connection's close held open where aedes' close waits
 * (its unsubscribes), a CONNECT held between its login and its CONNACK, and the events aedes emits for one ClientId's
 * connections. Shared by the emulator's takeover, kick and disconnect tests.
 */
import type { Aedes, Client } from 'aedes';
import { expect, onTestFinished } from 'vitest';
import { clientById, sessionStore } from '../../src/emulator/aedes-adapter.js';
import type { Emulator } from '../../src/emulator/index.js';
import type { MqttCredentials } from '../../src/signer/mqtt.js';
import { rawLogin, type RawMqtt } from './raw-mqtt.js';

/**
 * Resolves with the broker's client of the next connection of `clientId` aedes emits `event` for: `client` once it
 * registers it, `connackSent` once it answered its CONNECT, `clientReady` once its CONNECT is handled through.
 */
export function brokerEvent(e: Emulator, event: 'client' | 'connackSent' | 'clientReady', clientId: string): Promise<Client> {
  const broker = e.broker as unknown as NodeJS.EventEmitter;
  return new Promise((resolve) => {
    const listener = (...args: unknown[]): void => {
      const client = args[event === 'connackSent' ? 1 : 0] as Client;
      if (client.id !== clientId) return;
      broker.off(event, listener);
      resolve(client);
    };
    broker.on(event, listener);
  });
}

/** An old connection's close, held open where aedes' close waits: at the connection's unsubscribes. */
export interface HeldClose {
  /** Resolves once aedes' close of the connection has begun and each of its unsubscribes is held. */
  readonly closing: Promise<void>;
  /** Let the close end: aedes ends it within this call (its unsubscribes call back synchronously, then it finishes). */
  release(): void;
}

/**
 * Hold aedes' close of `client` (which must have subscriptions) until {@link HeldClose.release}: aedes 2.0.0-beta.1
 * ends a close once the broker's `unsubscribe` of each of the connection's subscriptions has called back, and then
 * unregisters the connection (or not: whichever connection its ClientId is registered to then decides), and only then
 * destroys its socket.
 */
export function holdClose(broker: Aedes, client: Client): HeldClose {
  type Unsubscribe = (topic: string, func: unknown, done: (error?: Error) => void) => void;
  const inner = broker as unknown as { unsubscribe: Unsubscribe };
  const subscriptions = (client as unknown as { subscriptions: Record<string, { func: unknown }> }).subscriptions;
  const funcs = new Set(Object.values(subscriptions).map((sub) => sub.func));
  expect(funcs.size, 'a connection with subscriptions (its close waits for them)').toBeGreaterThan(0);
  const unsubscribe = inner.unsubscribe;
  const held: (() => void)[] = [];
  let released = false;
  let allHeld = (): void => undefined;
  const closing = new Promise<void>((resolve) => {
    allHeld = resolve;
  });
  const holding: Unsubscribe = function (this: unknown, topic, func, done) {
    if (released || !client.closed || !funcs.has(func)) {
      unsubscribe.call(this, topic, func, done);
      return;
    }
    unsubscribe.call(this, topic, func, (error) => {
      held.push(() => done(error));
      if (held.length === funcs.size) allHeld();
    });
  };
  inner.unsubscribe = holding;
  const release = (): void => {
    released = true;
    if (inner.unsubscribe === holding) inner.unsubscribe = unsubscribe;
    for (const done of held.splice(0)) done();
  };
  onTestFinished(release);
  return { closing, release };
}

/** A CONNECT held between its login and its CONNACK. */
export interface HeldConnect {
  /** Resolves with the broker's client once the CONNECT is held. */
  readonly held: Promise<Client>;
  /** Let aedes go on with it. */
  release(): void;
  /**
   * Resolves once aedes, let go on, has reached the step after the hold: what it does there (registering, answering),
   * it does within that call.
   */
  readonly resumed: Promise<void>;
}

/**
 * Hold `clientId`'s next clean-session CONNECT, once its login has succeeded, where aedes asks the session store to
 * forget the ClientId's subscriptions (clustered, a Redis round trip). `resumed` resolves once aedes, let go on,
 * has handed the connection over to be registered (its `registerClient`, right before it writes the CONNACK; a
 * connection closed meanwhile too).
 */
export function holdConnect(e: Emulator, clientId: string): HeldConnect {
  type Clean = (client: Client) => Promise<unknown>;
  const store = sessionStore(e.broker) as unknown as { cleanSubscriptions: Clean };
  const inner = e.broker as unknown as { registerClient(client: Client): void };
  const cleanSubscriptions = store.cleanSubscriptions;
  const registerClient = inner.registerClient;
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  let hold = (_client: Client): void => undefined;
  const held = new Promise<Client>((resolve) => (hold = resolve));
  let registered = (): void => undefined;
  const resumed = new Promise<void>((resolve) => (registered = resolve));
  const holding: Clean = async function (this: unknown, client) {
    if (client.id === clientId) {
      store.cleanSubscriptions = cleanSubscriptions;
      hold(client);
      await released;
    }
    return cleanSubscriptions.call(this, client);
  };
  const registeringOne = function (this: unknown, client: Client): void {
    if (client.id === clientId) inner.registerClient = registerClient;
    registerClient.call(this, client);
    if (client.id === clientId) registered();
  };
  store.cleanSubscriptions = holding;
  inner.registerClient = registeringOne;
  onTestFinished(() => {
    release();
    if (store.cleanSubscriptions === holding) store.cleanSubscriptions = cleanSubscriptions;
    if (inner.registerClient === registeringOne) inner.registerClient = registerClient;
  });
  return { held, release, resumed };
}

/**
 * Hold `clientId`'s next CONNECT once its login has been decided (the emulator's preConnect accepted the credential)
 * and before aedes asks the authenticate hook, which it does a turn of the event loop later (`setImmediate`).
 * `resumed` resolves once the hook, let go on, has answered: aedes goes on from that answer within the call (and
 * stops there for a connection closed meanwhile).
 */
export function holdAuthenticate(e: Emulator, clientId: string): HeldConnect {
  type Authenticate = (client: Client, username: unknown, password: unknown, done: unknown) => void;
  const broker = e.broker as unknown as { authenticate: Authenticate };
  const authenticate = broker.authenticate;
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  let hold = (_client: Client): void => undefined;
  const held = new Promise<Client>((resolve) => (hold = resolve));
  let answered = (): void => undefined;
  const resumed = new Promise<void>((resolve) => (answered = resolve));
  broker.authenticate = function (this: unknown, client, username, password, done) {
    if (client.id !== clientId) {
      authenticate.call(this, client, username, password, done);
      return;
    }
    broker.authenticate = authenticate;
    hold(client);
    void released.then(() => {
      authenticate.call(this, client, username, password, done);
      answered();
    });
  };
  onTestFinished(() => {
    release();
    if (broker.authenticate !== authenticate) broker.authenticate = authenticate;
  });
  return { held, release, resumed };
}

/** A takeover that waits: the old connection's close held, the newer connection answered and not yet registered. */
export interface WaitingTakeover {
  /** The old connection (with a subscription its close waits for) and the broker's client of it. */
  readonly first: RawMqtt;
  readonly old: Client;
  /** The newer connection, with its CONNACK 0, and the broker's client of it. */
  readonly second: RawMqtt;
  readonly waiting: Client;
  /** The old connection's close, held. */
  readonly held: HeldClose;
}

/**
 * Connect `credentials` to `e` (subscribed, so that its close waits), then again with the same ClientId: the newer
 * connection's CONNACK is out while the old connection's close is held, and the old one is still the one registered.
 */
export async function waitingTakeover(e: Emulator, credentials: MqttCredentials, version: 4 | 5): Promise<WaitingTakeover> {
  const { clientId } = credentials;
  const { raw: first } = await rawLogin(e.mqttUrl, credentials, version);
  first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'demo/old', qos: 1 }] });
  await first.next('suback');
  const old = clientById(e.broker, clientId);
  if (old === undefined) throw new Error(`${clientId} is not registered`);
  const held = holdClose(e.broker, old);
  const waitingOnBroker = brokerEvent(e, 'connackSent', clientId);
  const { raw: second, connack } = await rawLogin(e.mqttUrl, credentials, version);
  expect(connack.returnCode ?? connack.reasonCode).toBe(0);
  await held.closing;
  const waiting = await waitingOnBroker;
  expect(clientById(e.broker, clientId), 'the takeover waits: the old connection still registered').toBe(old);
  return { first, old, second, waiting, held };
}

/** The ClientIds the emulator reports connected (its `clientConnected` event) from now to the end of the test. */
export function reportedConnected(e: Emulator): readonly string[] {
  const reported: string[] = [];
  const onConnected = (id: string): void => {
    reported.push(id);
  };
  e.events.on('clientConnected', onConnected);
  onTestFinished(() => {
    e.events.off('clientConnected', onConnected);
  });
  return reported;
}
