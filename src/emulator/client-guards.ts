/**
 * Guards fitted to every aedes client as it is created, so that one hostile or slow client cannot take the broker
 * down or hold up the others. They reach into aedes' client object (fields it does not declare); aedes is pinned to
 * an exact version for that reason, and test/integration/emulator-hostile.test.ts checks each guard.
 */
import type { Client } from 'aedes';

/** A delivery function of an aedes client: write `packet` to the client, then call `done`. */
type Deliver = (packet: { readonly payload?: { readonly length: number }; readonly topic?: string }, done: () => void) => void;

/** The fields of an aedes client the guards use. */
interface ClientInternals {
  subscriptions: Record<string, unknown>;
  duplicates: Record<string, unknown>;
  deliver0: Deliver;
  deliverQoS: Deliver;
}

/** The fields of an aedes broker the guards use. */
interface BrokerInternals {
  clients: Record<string, Client | undefined>;
  brokers: Record<string, number | undefined>;
}

/**
 * Re-create aedes' maps keyed by strings from the wire (ClientIds, topic filters, broker ids) without a prototype.
 * aedes 2.0.0-beta.1 keeps them in plain objects, so a filter named `constructor` or `__proto__` reads back as an
 * inherited function: UNSUBSCRIBE `constructor` made aedes hand `undefined` to mqemitter, whose assertion then
 * killed the whole process (the fix of GHSA-52qw-whmv-87c5 is in aedes 1.2.0, not in this beta).
 */
export function hardenBroker(broker: unknown): void {
  const internals = broker as BrokerInternals;
  internals.clients = Object.assign(Object.create(null) as Record<string, Client | undefined>, internals.clients);
  internals.brokers = Object.assign(Object.create(null) as Record<string, number | undefined>, internals.brokers);
}

/** What to do when a client cannot keep up: it is given, already cut off, to this function. */
export type SlowConsumerHandler = (client: Client, queuedBytes: number) => void;

/**
 * Fit a new client (before it subscribes to anything: aedes picks the delivery function at subscription time):
 * - null-prototype `subscriptions` and `duplicates` maps, see {@link hardenBroker};
 * - deliveries that never hold up the broker. aedes' delivery functions call back only once the client's socket
 *   has taken the packet, and its message bus (mqemitter) lets only 100 deliveries be in flight at once: a single
 *   subscriber that stops reading held every other client's messages back until the drain timeout, while the
 *   messages piled up in memory. Here the bus is called back at once, and a client whose outgoing buffer holds
 *   more than `maxQueuedBytes` is disconnected instead of being written to.
 */
export function guardClient(client: Client, maxQueuedBytes: number, onSlow: SlowConsumerHandler): void {
  const internals = client as unknown as ClientInternals;
  internals.subscriptions = Object.create(null) as Record<string, unknown>;
  internals.duplicates = Object.create(null) as Record<string, unknown>;
  let cut = false;
  const bounded = (deliver: Deliver): Deliver => (packet, done) => {
    // Called back on the next turn, not synchronously: a synchronous callback lets mqemitter drain its queue
    // recursively, which is how aedes ran out of stack.
    setImmediate(done);
    if (cut) return;
    const queued = client.conn.writableLength;
    if (queued > maxQueuedBytes) {
      cut = true;
      client.conn.destroy();
      onSlow(client, queued);
      return;
    }
    deliver(packet, noop);
  };
  internals.deliver0 = bounded(internals.deliver0);
  internals.deliverQoS = bounded(internals.deliverQoS);
}

function noop(): void {}
