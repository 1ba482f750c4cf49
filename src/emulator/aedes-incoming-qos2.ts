/**
 * The QoS 2 messages a client sent and has not released (no PUBREL yet). aedes 2.0.0-beta.1 keeps them in its session
 * store, under the ClientId and the packet id (`incomingStorePacket` once it has looked the packet id up with
 * `incomingGetPacket` and found nothing, then it routes the message; `incomingGetPacket` again for a PUBLISH repeated
 * before the PUBREL, which is then acknowledged and not routed again, MQTT-4.3.3-2; `incomingDelPacket` on the PUBREL),
 * shared by every connection of the ClientId, and deletes none at a Clean Start nor when a session ends. One of the
 * aedes-* files, the only ones that reach for aedes' internals (aedes-adapter.ts asserts the version they were checked
 * against); installed by `hardenBroker`.
 *
 * The three operations are replaced, and each connection's messages are its session's, decided at its CONNACK:
 * - a session that starts new and ends with its connection (MQTT 3.1.1's clean session; MQTT 5's Session Expiry
 *   Interval of 0 with Clean Start, or without it when the CONNACK said no session was present) has them for its
 *   connection only, in this process (no Redis round trip, clustered), and they go when it ends ({@link endConnection});
 * - any other session's are kept by session (incoming-qos2.ts, or a cluster's Redis: cluster/redis-incoming.ts): a
 *   connection resuming it (Session Present 1) goes on with its packet ids, and one starting a new session (Clean
 *   Start, or Session Present 0) discards them, MQTT-3.1.2-4. So does aedes' discarding the session, which it does by
 *   forgetting its subscriptions: at a Clean Start's CONNECT (clustered, in the command that does that anyway), and
 *   when the session ends or expires (nothing is left behind it).
 * Either kind of start discards the session the ClientId had, and the share in it of any older connection still open
 * (connections of one ClientId overlap: a takeover waits for the old connection's close; clustered, the old connection
 * is at another process, which closes it when it hears of the new one). A connection whose share is gone keeps what it
 * stores from then on as its own, so it neither hands its packet ids to the newer session (whose new message with such
 * a packet id was taken for a duplicate: acknowledged, never routed, lost) nor deletes the newer session's (whose
 * repeated PUBLISH was then routed a second time).
 */
import type { Aedes, Client } from 'aedes';
import { MemoryIncomingSessions, type IncomingSessions, type Share } from './incoming-qos2.js';

/** A packet as the three operations are given it. */
interface Identified {
  readonly messageId: number;
}

/** aedes-persistence's operations on the QoS 2 messages awaiting PUBREL (aedes-persistence-redis' are the same). */
interface IncomingStore {
  incomingStorePacket(client: Client, packet: Identified): Promise<void>;
  incomingGetPacket(client: Client, packet: Identified): Promise<unknown>;
  incomingDelPacket(client: Client, packet: Identified): Promise<void>;
  /** aedes forgets a session's subscriptions when it discards the session (a Clean Start; one that ends or expires). */
  cleanSubscriptions(client: { readonly id: string }, ...rest: unknown[]): unknown;
}

/** A connection's messages: its own (packet ids), or its share in its session's. */
interface Connection {
  /** Its own, when its session starts new and ends with it, or once its share is gone. */
  own: Set<number> | undefined;
  /** Its share in its session (whose messages are `sessions`'), when not `own`. */
  share: Share | Promise<Share | undefined> | undefined;
  /** Where its session's are. */
  readonly sessions: IncomingSessions;
  /** The connection has ended: what it stores as its own from now on is not kept. */
  ended: boolean;
}

/** Each connection answered, from its CONNACK on. */
const connections = new WeakMap<Client, Connection>();

/** The sessions of each session store (a restarted broker gets the same store again, and keeps them). */
const sessionsOf = new WeakMap<object, IncomingSessions>();

/**
 * The connection's messages. One with no CONNACK (aedes handles no PUBLISH or PUBREL before it) would have them as its
 * own.
 */
function connectionOf(client: Client, sessions: IncomingSessions): Connection {
  let connection = connections.get(client);
  if (connection === undefined) {
    connection = { own: new Set(), share: undefined, sessions, ended: false };
    connections.set(client, connection);
  }
  return connection;
}

/** The connection's share, or `undefined` once its messages are its own. */
async function shareOf(connection: Connection): Promise<Share | undefined> {
  return connection.own === undefined ? await connection.share : undefined;
}

/** The share is gone (a newer session started): what the connection stores from now on is its own. */
function detach(connection: Connection): Set<number> {
  connection.own ??= new Set();
  return connection.own;
}

/** Where the sessions' QoS 2 messages are kept, and whether persistent sessions may have any. */
export interface QoS2Sessions {
  /** The sessions (a cluster's Redis); default in memory. */
  readonly create?: () => IncomingSessions;
  /**
   * May a persistent session (one that outlives its connection) publish at QoS 2? Not while the rule refuses it
   * (`qos2PersistentSessions`, the default): its connections then have nothing to keep, and ask the sessions nothing
   * (clustered: no Redis command at their CONNACK and close, no record left behind them).
   */
  readonly persistentQos2: boolean;
}

/**
 * Keep each session's QoS 2 messages awaiting PUBREL as the module's comment says, in `create`'s sessions (a
 * cluster's Redis) or in memory, once per session store. A delete that finds nothing has nothing to do (aedes
 * 2.0.0-beta.1 deletes on a PUBREL with `.finally()`, which passes a rejection on to nobody: two PUBRELs for one packet
 * id in one read both found it, the second delete rejected, and the unhandled rejection ended the process).
 */
export function keepSessionsQos2(broker: Aedes, options: QoS2Sessions): void {
  const { create = () => new MemoryIncomingSessions(), persistentQos2 } = options;
  const store = (broker as unknown as { persistence: IncomingStore }).persistence;
  let sessions = sessionsOf.get(store);
  if (sessions === undefined) {
    sessions = create();
    sessionsOf.set(store, sessions);
    replaceOperations(store, sessions);
  }
  const of = sessions;
  // Each broker's CONNACKs (a restarted broker's too). aedes reads nothing from the client before its CONNACK is
  // written: each operation of the connection is asked after this one (on one Redis connection: in that order).
  broker.on('connackSent', (packet, client) => {
    if ((packet.returnCode ?? packet.reasonCode ?? 0) !== 0 || connections.has(client)) return;
    const connection: Connection = { own: undefined, share: undefined, sessions: of, ended: false };
    connections.set(client, connection);
    const present = packet.sessionPresent === true;
    // A connection gone before its CONNACK takes no effect (aedes-registrations.ts does not register it either).
    if (client.closed) {
      connection.own = new Set();
    } else if (!client.clean && !persistentQos2) {
      // Its QoS 2 PUBLISHes are refused (mqtt-rules.ts): it stores none. A Clean Start discarded the old session
      // already (`cleanSubscriptions`, below), and a connection of the ClientId that shares in it (MQTT 5: Session
      // Expiry Interval 0, Session Present 1) keeps its share, whose session ends with it.
      connection.own = new Set();
    } else if (client.clean && !present) {
      // aedes sets `clean` for a session that ends with the connection (MQTT 5: Session Expiry Interval 0). The session
      // the ClientId had is gone already: a Clean Start's CONNECT discarded it (`cleanSubscriptions`), and aedes answers
      // Session Present 0 to one without Clean Start when it holds no session (none, or one it discarded).
      connection.own = new Set();
    } else {
      const share = present ? of.join(client.id) : of.start(client.id);
      // A share that cannot be had (Redis gone): the connection's messages are its own.
      connection.share = share instanceof Promise ? share.catch(() => void detach(connection)) : share;
    }
  });
}

/** Nothing waits for it; a failure (Redis gone) leaves the old session's messages, as aedes did. */
function settle(work: unknown): void {
  if (work instanceof Promise) work.catch(() => undefined);
}

function replaceOperations(store: IncomingStore, sessions: IncomingSessions): void {
  // aedes discards a session by forgetting its subscriptions: on a Clean Start's CONNECT (before its CONNACK, whatever
  // becomes of the connection, as the subscriptions go anyway), and when a session ends or expires.
  const cleanSubscriptions = store.cleanSubscriptions.bind(store);
  store.cleanSubscriptions = (client, ...rest) => {
    sessions.discard(client.id);
    return cleanSubscriptions(client, ...rest);
  };
  store.incomingStorePacket = async (client, packet) => {
    const connection = connectionOf(client, sessions);
    const share = await shareOf(connection);
    if (share !== undefined && (await sessions.store(client.id, share, packet.messageId))) return;
    const own = detach(connection);
    // Stored after its connection ended (a PUBLISH read just before the close): nothing would ever release it.
    if (!connection.ended) own.add(packet.messageId);
  };
  store.incomingGetPacket = async (client, packet) => {
    const connection = connectionOf(client, sessions);
    const share = await shareOf(connection);
    const found = share === undefined ? undefined : await sessions.has(client.id, share, packet.messageId);
    // aedes asks only whether it is there (a repeated PUBLISH, a PUBREL).
    if (found ?? detach(connection).has(packet.messageId)) return { messageId: packet.messageId };
    throw new Error('no such packet');
  };
  store.incomingDelPacket = async (client, packet) => {
    const connection = connectionOf(client, sessions);
    const share = await shareOf(connection);
    if (share !== undefined && (await sessions.delete(client.id, share, packet.messageId))) return;
    detach(connection).delete(packet.messageId);
  };
}

/**
 * A connection aedes answered has ended (its socket closed): its own QoS 2 messages go with it (MQTT 3.1.1 §3.1.2.4,
 * MQTT 5 §4.1), and one it stores as its own from now on is not kept; its share in its session ends, and a session that
 * ends with its connection is discarded once no connection shares in it.
 */
export function endConnection(client: Client): void {
  const connection = connections.get(client);
  if (connection === undefined) return;
  connection.ended = true;
  connection.own?.clear();
  if (connection.own !== undefined) return;
  const { sessions } = connection;
  // `clean` now: an MQTT 5 DISCONNECT may have changed the Session Expiry Interval.
  const ends = client.clean;
  settle(shareOf(connection).then((share) => (share === undefined ? undefined : sessions.leave(client.id, share, ends))));
}
