/**
 * Takeovers made to happen in a chosen order: an old connection's close held open where aedes' close waits (its
 * unsubscribes), and the events aedes emits for one ClientId's connections. Shared by the emulator's takeover tests.
 */
import type { Aedes, Client } from 'aedes';
import { expect, onTestFinished } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';

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
