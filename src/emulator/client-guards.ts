/**
 * Guards fitted to every aedes client as it is created, so that one hostile or slow client cannot take the broker
 * down or hold up the others. They reach into aedes' client object (fields it does not declare); aedes is pinned to
 * an exact version for that reason, and test/integration/emulator-hostile.test.ts checks each guard.
 */
import type { Client } from 'aedes';

/** A delivery function of an aedes client: write `packet` to the client, then call `done`. */
type Deliver = (packet: { readonly payload?: { readonly length: number }; readonly topic?: string }, done: () => void) => void;

/** A packet as mqtt-packet parses it, as far as the guards look at it. */
interface ParsedPacket {
  cmd: string;
  messageId?: number;
  qos?: number;
  topic?: string;
  payload?: { length: number };
  subscriptions?: { topic: string }[];
  properties?: unknown;
}

/** The fields of an aedes client the guards use. */
interface ClientInternals {
  subscriptions: Record<string, unknown>;
  duplicates: Record<string, unknown>;
  deliver0: Deliver;
  deliverQoS: Deliver;
  /** The client's mqtt-packet parser; aedes handles each packet in a 'packet' listener. */
  _parser: NodeJS.EventEmitter;
}

/** The fields of an aedes broker the guards use. */
interface BrokerInternals {
  clients: Record<string, Client | undefined>;
  brokers: Record<string, number | undefined>;
  persistence: { incomingDelPacket(client: unknown, packet: unknown): Promise<unknown>; [PATCHED]?: true };
}

/** Marks a session store whose incomingDelPacket was made safe (a restarted broker gets the same store again). */
const PATCHED = Symbol('apsaramq-device: incomingDelPacket never rejects');

/**
 * Make aedes survive what a client can send it. Its maps keyed by strings from the wire (ClientIds, topic filters,
 * broker ids) are re-created without a prototype:
 * aedes 2.0.0-beta.1 keeps them in plain objects, so a filter named `constructor` or `__proto__` reads back as an
 * inherited function: UNSUBSCRIBE `constructor` made aedes hand `undefined` to mqemitter, whose assertion then
 * killed the whole process (the fix of GHSA-52qw-whmv-87c5 is in aedes 1.2.0, not in this beta).
 */
export function hardenBroker(broker: unknown): void {
  const internals = broker as BrokerInternals;
  internals.clients = Object.assign(Object.create(null) as Record<string, Client | undefined>, internals.clients);
  internals.brokers = Object.assign(Object.create(null) as Record<string, number | undefined>, internals.brokers);
  // aedes 2.0.0-beta.1 deletes a QoS 2 message on its PUBREL with `.finally()`, which passes a rejection on to
  // nobody: two PUBRELs for one packet id in one read both find it, the second delete rejects ("no such packet"),
  // and the unhandled rejection ends the process. A delete that finds nothing has nothing left to do.
  const store = internals.persistence;
  if (store[PATCHED]) return;
  const incomingDelPacket = store.incomingDelPacket.bind(store);
  store.incomingDelPacket = (client, packet) => incomingDelPacket(client, packet).catch(() => undefined);
  store[PATCHED] = true;
}

/** What to do when a client cannot keep up: it is given, already cut off, to this function. */
export type SlowConsumerHandler = (client: Client, queuedBytes: number) => void;

/** What to do with a client that sent a SUBSCRIBE aedes cannot survive (it was not handed to aedes). */
export type UnsafeSubscribeHandler = (client: Client) => void;

/** What {@link guardClient} reports to. */
export interface GuardHandlers {
  readonly onSlow: SlowConsumerHandler;
  readonly onUnsafeSubscribe: UnsafeSubscribeHandler;
  /** The QoS 2 messages a client sent and never released (PUBREL) hold more than `maxQueuedBytes`. */
  readonly onUnreleased: (client: Client, bytes: number) => void;
}

/** What the broker can ask a guarded client. */
export interface GuardedClient {
  /** Packet ids of the inbound QoS 2 messages still awaiting their PUBREL. */
  unreleased(): number[];
}

/**
 * Would aedes 2.0.0-beta.1 crash on this SUBSCRIBE? With two filters or more it de-duplicates them through a plain
 * object, where a filter named `__proto__` replaces the object's prototype: the loop that follows then reads the
 * prototype's fields as filters, and for MQTT 5 `undefined.startsWith` throws out of the socket's read handler,
 * ending the process (found by test/integration/emulator-mqtt-fuzz.test.ts).
 */
function crashesAedes(packet: ParsedPacket): boolean {
  const subscriptions = packet.subscriptions ?? [];
  return packet.cmd === 'subscribe' && subscriptions.length > 1 && subscriptions.some((sub) => sub.topic === '__proto__');
}

/**
 * Fit a new client (before it subscribes to anything: aedes picks the delivery function at subscription time):
 * - null-prototype `subscriptions` and `duplicates` maps, see {@link hardenBroker}, and no SUBSCRIBE that would
 *   crash aedes, see {@link crashesAedes};
 * - a bound on the QoS 2 messages a client sends and never releases: aedes stores each one until its PUBREL, under
 *   the ClientId, for good (aedes 1.2.0 caps their number; this beta does not);
 * - deliveries that never hold up the broker. aedes' delivery functions call back only once the client's socket
 *   has taken the packet, and its message bus (mqemitter) lets only 100 deliveries be in flight at once: a single
 *   subscriber that stops reading held every other client's messages back until the drain timeout, while the
 *   messages piled up in memory. Here the bus is called back at once, and a client whose outgoing buffer holds
 *   more than `maxQueuedBytes` is disconnected instead of being written to.
 */
export function guardClient(client: Client, maxQueuedBytes: number, handlers: GuardHandlers): GuardedClient {
  const { onSlow, onUnsafeSubscribe, onUnreleased } = handlers;
  const internals = client as unknown as ClientInternals;
  internals.subscriptions = Object.create(null) as Record<string, unknown>;
  internals.duplicates = Object.create(null) as Record<string, unknown>;
  // Inbound QoS 2 messages awaiting their PUBREL: bytes by packet id.
  const unreleased = new Map<number, number>();
  let unreleasedBytes = 0;
  let overflowed = false;
  // Ahead of aedes' own listener, which handles the packet right after.
  internals._parser.prependListener('packet', (packet: ParsedPacket) => {
    if (crashesAedes(packet)) {
      // Emptied: an empty SUBSCRIBE without a packet id makes aedes do nothing and answer nothing.
      packet.subscriptions = [];
      delete packet.messageId;
      delete packet.properties;
      onUnsafeSubscribe(client);
    } else if (packet.cmd === 'publish' && packet.qos === 2 && packet.messageId !== undefined) {
      const bytes = (packet.payload?.length ?? 0) + (packet.topic?.length ?? 0) + PUBLISH_OVERHEAD;
      unreleasedBytes += bytes - (unreleased.get(packet.messageId) ?? 0);
      unreleased.set(packet.messageId, bytes);
      if (unreleasedBytes > maxQueuedBytes && !overflowed) {
        overflowed = true;
        onUnreleased(client, unreleasedBytes);
      }
    } else if (packet.cmd === 'pubrel' && packet.messageId !== undefined) {
      unreleasedBytes -= unreleased.get(packet.messageId) ?? 0;
      unreleased.delete(packet.messageId);
    }
  });
  let cut = false;
  // Bytes handed to aedes that it has not written yet: it writes on the next turn of the event loop.
  let handedOver = 0;
  // `done` is always called back on a later turn, never synchronously: a synchronous callback lets mqemitter drain
  // its queue recursively, which is how aedes ran out of stack.
  const bounded = (deliver: Deliver): Deliver => (packet, done) => {
    if (cut) {
      setImmediate(done);
      return;
    }
    const size = (packet.payload?.length ?? 0) + (packet.topic?.length ?? 0) + PUBLISH_OVERHEAD;
    const queued = client.conn.writableLength + handedOver + size;
    if (queued > maxQueuedBytes) {
      cut = true;
      client.conn.destroy();
      onSlow(client, queued);
      setImmediate(done);
      return;
    }
    handedOver += size;
    deliver(packet, noop);
    // One callback per delivery. It runs after aedes' own setImmediate for it, which has written the packet by then
    // (a QoS > 0 delivery to a persistent session is written once its persistence answers: there the count is
    // released a little early, and the bound is approximate).
    setImmediate(() => {
      handedOver -= size;
      done();
    });
  };
  internals.deliver0 = bounded(internals.deliver0);
  internals.deliverQoS = bounded(internals.deliverQoS);
  return { unreleased: () => [...unreleased.keys()] };
}

function noop(): void {}

/** A PUBLISH's bytes besides its topic and payload: fixed header, lengths, packet id (MQTT 5 properties aside). */
const PUBLISH_OVERHEAD = 9;
