/**
 * The QoS 2 messages a client sent and has not released (no PUBREL yet), as aedes 2.0.0-beta.1 keeps them: in its
 * session store, under the ClientId and the packet id (`incomingStorePacket` once it has looked the packet id up with
 * `incomingGetPacket` and found nothing, then it routes the message; `incomingGetPacket` again for a PUBLISH repeated
 * before the PUBREL, which is then acknowledged and not routed again, MQTT-4.3.3-2; `incomingDelPacket` on the PUBREL).
 * One of the aedes-* files, the only ones that reach for aedes' internals (aedes-adapter.ts asserts the version they
 * were checked against); installed by `hardenBroker`.
 *
 * A session that starts new and ends with its connection (MQTT 3.1.1's clean session; MQTT 5's Session Expiry Interval
 * of 0 with Clean Start, or without it when the CONNACK said no session was present) has these messages for its
 * connection only. Kept under the ClientId, they were shared by every connection of the ClientId, and connections of
 * one ClientId overlap (a takeover waits for the old connection's close; clustered, the old connection is at another
 * process, which closes it when it hears of the new one): a newer session's QoS 2 message with the packet id of an
 * unreleased one of the old connection was taken for a duplicate (acknowledged, never routed: lost), and the old
 * connection's cleanup when it ended (keyed by ClientId) deleted the newer one's, whose repeated PUBLISH was then
 * routed a second time. Here such a session's are kept by connection, in this process (nothing outside the connection
 * ever reads them: clustered, no Redis round trip either), and go when it ends ({@link endCleanSession}). Any other
 * session's stay in the session store under the ClientId.
 */
import type { Aedes, Client } from 'aedes';

/** A packet as the three operations are given it. */
interface Identified {
  readonly messageId: number;
}

/** aedes-persistence's operations on the QoS 2 messages awaiting PUBREL (aedes-persistence-redis' are the same). */
interface IncomingStore {
  incomingStorePacket(client: Client, packet: Identified): Promise<void>;
  incomingGetPacket(client: Client, packet: Identified): Promise<unknown>;
  incomingDelPacket(client: Client, packet: Identified): Promise<void>;
  [PATCHED]?: true;
}

/** Marks a session store already patched (a restarted broker gets the same store again). */
const PATCHED = Symbol('apsaramq-device: incoming QoS 2 messages kept per connection');

/** A connection's own unreleased QoS 2 messages (their packet ids); `ended` once the connection has. */
interface Own {
  readonly messageIds: Set<number>;
  ended: boolean;
}

/** By connection: its own messages, or `null` for a session whose messages are the session store's. */
const owners = new WeakMap<Client, Own | null>();

/** Sessions of the store's (resumed, or not ending with the connection) whose connection has ended. */
const endedInStore = new WeakSet<Client>();

/** Connections whose CONNACK said a session was present (MQTT 5 Clean Start 0: a session resumed). */
const resumed = new WeakSet<Client>();

/**
 * The connection's own messages, if its session is one that starts new and ends with it (decided once per connection,
 * after its CONNACK: aedes handles no PUBLISH or PUBREL before).
 */
function ownOf(client: Client): Own | undefined {
  let own = owners.get(client);
  if (own === undefined) {
    // aedes sets `clean` from the CONNECT (a session that ends with the connection) and `_cleanStart` from its flag.
    // Clean Start 0 with no session present (aedes' CONNACK says Session Present 0, as it found no stored
    // subscriptions) starts a new session all the same: the client is told it has none to go on with (MQTT 5
    // §3.2.2.1.1), and the packet ids an overlapping connection of the ClientId left unreleased are not its own.
    const flags = client as unknown as { clean?: boolean; _cleanStart?: boolean };
    const isNew = flags._cleanStart === true || !resumed.has(client);
    own = flags.clean === true && isNew ? { messageIds: new Set(), ended: false } : null;
    owners.set(client, own);
  }
  return own ?? undefined;
}

/**
 * Keep a clean session's QoS 2 messages awaiting PUBREL by connection (see the module's comment), and make the store's
 * own operations safe for the others:
 * - aedes 2.0.0-beta.1 deletes a QoS 2 message on its PUBREL with `.finally()`, which passes a rejection on to nobody:
 *   two PUBRELs for one packet id in one read both find it, the second delete rejects ("no such packet"), and the
 *   unhandled rejection ends the process. A delete that finds nothing has nothing left to do.
 * - A session of the store's that ends with its connection (MQTT 5: no Clean Start, a session present, a Session
 *   Expiry Interval of 0) has its messages deleted when it ends ({@link endCleanSession}); one aedes stores only after
 *   that (the lookup before it is a Redis round trip, clustered: a PUBLISH read just before the socket closed) is
 *   deleted as it lands.
 */
export function keepCleanSessionsQos2(broker: Aedes): void {
  // Each broker's CONNACKs (a restarted broker's too, with the store already patched).
  broker.on('connackSent', (packet, client) => {
    if (packet.sessionPresent === true) resumed.add(client);
  });
  const store = (broker as unknown as { persistence: IncomingStore }).persistence;
  if (store[PATCHED]) return;
  const storePacket = store.incomingStorePacket.bind(store);
  const getPacket = store.incomingGetPacket.bind(store);
  const delPacket = store.incomingDelPacket.bind(store);
  store.incomingStorePacket = async (client, packet) => {
    const own = ownOf(client);
    if (own !== undefined) {
      // Stored after its connection ended (a PUBLISH read just before the close): nothing would ever release it.
      if (!own.ended) own.messageIds.add(packet.messageId);
      return;
    }
    await storePacket(client, packet);
    if (endedInStore.has(client)) await store.incomingDelPacket(client, packet);
  };
  store.incomingGetPacket = async (client, packet) => {
    const own = ownOf(client);
    if (own === undefined) return getPacket(client, packet);
    // aedes asks only whether it is there (a repeated PUBLISH, a PUBREL).
    if (!own.messageIds.has(packet.messageId)) throw new Error('no such packet');
    return { messageId: packet.messageId };
  };
  store.incomingDelPacket = async (client, packet) => {
    const own = ownOf(client);
    if (own !== undefined) own.messageIds.delete(packet.messageId);
    else await delPacket(client, packet).catch(() => undefined);
  };
  store[PATCHED] = true;
}

/**
 * End a clean session's QoS 2 messages waiting for their PUBREL with its connection (MQTT 3.1.1 §3.1.2.4, MQTT 5
 * §4.1): the connection's own go, and one stored for it from now on is not kept. A session that ends with its
 * connection but whose messages are the store's (it resumed a session: its packet ids are the session's) has those of
 * `messageIds` deleted from the store, and any the store gets for it from now on. A packet id that was not stored (a
 * refused PUBLISH) is not there to delete: no error.
 */
export function endCleanSession(broker: Aedes, client: Client, messageIds: readonly number[]): void {
  const own = ownOf(client);
  if (own !== undefined) {
    own.ended = true;
    own.messageIds.clear();
    return;
  }
  endedInStore.add(client);
  const store = (broker as unknown as { persistence: IncomingStore }).persistence;
  for (const messageId of messageIds) store.incomingDelPacket(client, { messageId }).catch(() => undefined);
}
