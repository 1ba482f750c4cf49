/**
 * The persistent sessions' outgoing queues, put in place of aedes' own. aedes 2.0.0-beta.1 keeps each session's QoS
 * 1/2 messages in its session store's outgoing queue, without a bound, and reads that queue back in two places of its
 * own: a resuming session's CONNECT (handlers/connect.js `emptyQueue`) and the wipe of an ended session
 * (`_wipeSession`). This module replaces the store's outgoing operations by bounded ones (session-queues.ts, or a
 * cluster's in Redis), paces a resuming session's redelivery (or, unpaced, holds its live messages behind its queue:
 * {@link keepQueueOrder}), and empties a wiped session's queue at once. Like
 * aedes-adapter.ts, it reaches into aedes' internals, and is one of the four modules that may (ARCHITECTURE.md).
 */
import { Readable } from 'node:stream';
import type { Aedes, Client } from 'aedes';
import type { Deliver } from './aedes-adapter.js';
import { SessionQueues, type QueueLimits, type QueueOverflow, type RedeliveryPace, type StoredPacket } from './session-queues.js';
import type { QueueStats } from './stats.js';

/** The fields of an aedes broker used here (set at run time, not declared). */
interface QueueInternals {
  persistence: object;
  _wipeSession(client: Client): void;
}

/** The outgoing-queue operations of aedes-persistence's store (aedes 2 calls them without callbacks). */
interface OutgoingStore {
  outgoingEnqueue(sub: { clientId: string }, packet: StoredPacket, cb?: Callback): Promise<void>;
  outgoingEnqueueCombi(subs: readonly { clientId: string }[], packet: StoredPacket, cb?: Callback): Promise<void>;
  outgoingUpdate(client: { id: string }, packet: StoredPacket, cb?: Callback): Promise<void>;
  outgoingClearMessageId(client: { id: string }, packet: StoredPacket, cb?: Callback): Promise<StoredPacket | undefined>;
  outgoingStream(client: { id: string }): Readable;
}

type Callback = (error: Error | null, result?: unknown) => void;

/**
 * What holds the persistent sessions' queues: {@link SessionQueues} in memory, or a clustered emulator's queues in
 * Redis (cluster/redis-queues.ts), whose operations answer later. Same operations, same semantics.
 */
export interface OutgoingQueues {
  configure(limits: QueueLimits, onOverflow: QueueOverflow): void;
  enqueue(clientId: string, packet: StoredPacket): void | Promise<void>;
  update(clientId: string, packet: StoredPacket): void | Promise<void>;
  clear(clientId: string, packet: StoredPacket): StoredPacket | undefined | Promise<StoredPacket | undefined>;
  list(clientId: string): StoredPacket[] | Promise<StoredPacket[]>;
  /**
   * {@link SessionQueues.redeliver}: the messages held now, at `pace`, then `end`; returns what stops it. `fail`: the
   * queue could not be read (Redis), the messages stay queued.
   */
  redeliver(clientId: string, pace: RedeliveryPace, push: (packet: StoredPacket) => void, end: () => void, gone?: () => boolean, fail?: (error: Error) => void): () => void;
  stats(): QueueStats;
  /** Walk the session's messages oldest first while `take` says go on (true); its totals (queue-view.ts). */
  peek(clientId: string, take: (packet: StoredPacket) => boolean): { messages: number; bytes: number } | Promise<{ messages: number; bytes: number }>;
  /**
   * The client's CONNECT already found its queue empty (a clean session, clustered: cluster/redis-broker.ts), so the
   * read right after its CONNACK can answer at once. Answers once.
   */
  emptyAtConnect?(client: object): boolean;
}

/** The bounded queues installed on each session store (a restarted broker gets the same store, and keeps them). */
const queuesOf = new WeakMap<object, OutgoingQueues>();

/**
 * Put a bound on what each persistent session of the broker's store holds (session-queues.ts): the store's five
 * outgoing-queue operations are replaced by {@link SessionQueues} (or by `create`'s queues: a cluster's, in Redis),
 * which keep the same order and semantics. aedes-persistence-redis' own outgoing operations are replaced the same way:
 * they have no bound, and they find a sent message's packet id in a cache of the process that sent it, so a session
 * that moved to another process of the cluster could never clear it. With a `pace`, a session that resumes gets what
 * its queue holds at that pace instead of right behind its CONNACK: aedes 2.0.0-beta.1 sends a reconnecting client
 * its queue by reading the store's `outgoingStream` (handlers/connect.js `emptyQueue`, after the CONNACK is written),
 * so the stream given to a resuming session yields the messages batch by batch. aedes treats the client as connecting
 * until that stream ends: the client may publish and subscribe meanwhile (aedes handles a packet once the CONNACK is
 * out), live messages reach it at once, and only packets it sent before its CONNACK arrived wait. The other reader of
 * the stream, the wipe of an expired session, is never paced. Installed once per store; a later broker on the same
 * store (a restart) only takes over the limits, the pace and the reporting.
 */
export function boundSessionQueues(
  broker: Aedes,
  limits: QueueLimits,
  onOverflow: QueueOverflow,
  pace?: RedeliveryPace,
  create: (limits: QueueLimits, onOverflow: QueueOverflow) => OutgoingQueues = (l, o) => new SessionQueues(l, o),
): OutgoingQueues {
  trackWipes(broker);
  const store = (broker as unknown as QueueInternals).persistence as OutgoingStore;
  const existing = queuesOf.get(store);
  if (existing) {
    existing.configure(limits, onOverflow);
    pacesOf.set(store, pace);
    return existing;
  }
  const queues = create(limits, onOverflow);
  queuesOf.set(store, queues);
  pacesOf.set(store, pace);
  const answer = <T>(result: T | Promise<T>, cb: Callback | undefined): Promise<T> => {
    const settled = Promise.resolve(result);
    if (cb) settled.then((value) => process.nextTick(cb, null, value), (error: Error) => process.nextTick(cb, error));
    return settled;
  };
  store.outgoingEnqueue = (sub, packet, cb) => answer(queues.enqueue(sub.clientId, packet), cb);
  store.outgoingEnqueueCombi = (subs, packet, cb) => {
    const queued = subs.map((sub) => queues.enqueue(sub.clientId, packet));
    return answer(queued.some((q) => q instanceof Promise) ? Promise.all(queued).then(() => undefined) : undefined, cb);
  };
  store.outgoingUpdate = (client, packet, cb) => answer(queues.update(client.id, packet), cb);
  store.outgoingClearMessageId = (client, packet, cb) => answer(queues.clear(client.id, packet), cb);
  store.outgoingStream = (client) => {
    if (wiping(client)) return Readable.from(discardQueue(queues, client.id));
    const current = pacesOf.get(store);
    if (current && resumes(client)) return pacedStream(queues, client as Client, current);
    if (queues.emptyAtConnect?.(client) === true) return Readable.from([]);
    const resume = resumeOf(client as Client);
    const listed = queues.list(client.id);
    if (listed instanceof Promise) return Readable.from((async function* () { yield* recordSent(resume, await listed); })());
    return Readable.from(recordSent(resume, listed));
  };
  return queues;
}

/**
 * The clients whose ended session aedes is wiping right now (`_wipeSession`, which reads the store's `outgoingStream`
 * of the client synchronously, to empty its queue): told apart from a closed client that was resuming its session,
 * whose queue must stay (aedes goes on with a CONNECT after its socket closed, down to reading the queue).
 */
const wipes = new WeakSet<object>();

/** The brokers whose `_wipeSession` marks its client in {@link wipes}. */
const tracked = new WeakSet<object>();

/** Mark each client in {@link wipes} while aedes' `_wipeSession` of this broker runs. */
function trackWipes(broker: Aedes): void {
  const inner = broker as unknown as QueueInternals;
  if (tracked.has(inner)) return;
  tracked.add(inner);
  const wipeSession = inner._wipeSession;
  inner._wipeSession = function (this: QueueInternals, client: Client): void {
    wipes.add(client);
    try {
      wipeSession.call(this, client);
    } finally {
      wipes.delete(client);
    }
  };
}

/**
 * Is this the wipe of an ended session (MQTT 5: its Session Expiry Interval ran out, or was 0 with messages still
 * held)? Only while aedes' `_wipeSession` runs ({@link trackWipes}); not just any closed client: one whose socket
 * closed while it was connecting is read too, and its queue is kept.
 */
function wiping(client: { id: string }): boolean {
  return wipes.has(client);
}

/**
 * Empty a session's queue at once, for its wipe: aedes 2.0.0-beta.1's `emptyOutgoingQueue` pipes the stream into a
 * Transform whose output nobody reads, so it stalls after 16 messages and the rest stayed queued, to be delivered to
 * the next session of that ClientId (measured: 84 of 100 survived an expired session). The stream handed back is
 * empty; it ends once the queue is (Redis: once every message is cleared there).
 */
function discardQueue(queues: OutgoingQueues, clientId: string): Iterable<never> | AsyncIterable<never> {
  const clearAll = (held: readonly StoredPacket[]): void | Promise<void> => {
    const cleared = held.map((packet) => queues.clear(clientId, packet));
    if (cleared.some((c) => c instanceof Promise)) return Promise.all(cleared).then(() => undefined);
  };
  const listed = queues.list(clientId);
  const done = listed instanceof Promise ? listed.then(clearAll) : clearAll(listed);
  if (!(done instanceof Promise)) return [];
  // The stream is read on the next tick; a Redis failure before that is the stream's error, not an unhandled one.
  done.catch(() => undefined);
  return (async function* () {
    await done;
  })();
}

/** The pace of each store's redelivery (`undefined`: right away), set by the broker that runs on it now. */
const pacesOf = new WeakMap<object, RedeliveryPace | undefined>();

/**
 * Is this the reconnect of a session that keeps its messages? A live client (not the closed one of an expiring
 * session being wiped) whose session is persistent and was not started clean (aedes keeps MQTT 5's Clean Start in
 * `_cleanStart`; it clears such a queue at once, which is not to be paced).
 */
function resumes(client: { id: string }): boolean {
  const live = client as { clean?: boolean; closed?: boolean; _cleanStart?: boolean; conn?: unknown };
  return live.conn !== undefined && live.closed !== true && live.clean === false && live._cleanStart !== true;
}

/** A stream of the session's queue at `pace`, stopped when the client's connection closes (or at its next step, once aedes has closed the client). */
function pacedStream(queues: OutgoingQueues, client: Client, pace: RedeliveryPace): Readable {
  const stream = new Readable({ objectMode: true, read: () => undefined });
  // A queue that cannot be read fails the stream as an unpaced one would: aedes closes the client, nothing is lost.
  const stop = queues.redeliver(client.id, pace, (packet) => stream.push(packet), () => stream.push(null), () => client.closed, (error) => stream.destroy(error));
  client.conn.once('close', stop);
  return stream;
}

/**
 * A session that resumes and gets its queue right behind its CONNACK (no pace): its live messages wait for the queue.
 * aedes 2.0.0-beta.1 makes a resuming session's subscriptions live (`restoreSubs`) before it reads and sends its
 * queue (`emptyQueue`, after the CONNACK), and sends what the bus brings meanwhile at once: a message published in
 * that window reached the client ahead of older ones of its queue (MQTT §4.6, Ordered Topic), and, queued before the
 * queue was read (every QoS 1/2 message is queued for each persistent session it is for before it is put on the bus),
 * a second time from the queue. Clustered the window is the round trips to Redis of the CONNECT and of the read; in
 * one process a few turns of the event loop. While the queue is being sent the client's live deliveries are held, in
 * the order they came; then each is sent unless the queue sent it already (the same broker id and counter: a broker
 * numbers its messages on across a restart, aedes-adapter.ts `countOnFrom`), and so is every later live copy of a
 * message the queue sent (its PUBLISH reached the bus after the read). QoS 0 messages wait in the same line: never
 * dropped for it, never ahead of the queue. Held messages count against the client's bound on what waits for it
 * ({@link Holding}: a client that stops reading while its queue is sent is cut off as a slow consumer, as it would
 * be for what waits in its socket; its QoS 1 and 2 messages stay queued). They are not the bus's to wait for: it is
 * called back at once, as it is for every delivery.
 */
interface Resume {
  /** Live deliveries held while the queue is sent, in the order they came; `undefined` once the queue is sent. */
  held: { readonly deliver: Deliver; readonly packet: Parameters<Deliver>[0] }[] | undefined;
  /** The messages the queue sent whose live copy may still come: their counters, by broker id (numbers only). */
  readonly sent: Map<string, Set<number>>;
  readonly holding: Holding;
}

/** The client's bound on what waits for it (client-guards.ts): a held message is counted until it is sent or let go. */
export interface Holding {
  /** Count this message as waiting; false (the client is cut off, or was) when that passes the bound. */
  hold(packet: Parameters<Deliver>[0]): boolean;
  /** It no longer waits here (sent on, or let go with the connection). */
  release(packet: Parameters<Deliver>[0]): void;
}

const resumesOf = new WeakMap<object, Resume>();
const holdingsOf = new WeakMap<object, Holding>();

/** The resume under way or done of this client's connection; one is started for a client that resumes unpaced. */
function resumeOf(client: Client): Resume | undefined {
  const known = resumesOf.get(client);
  if (known !== undefined || !client.connecting || !resumes(client) || !client.conn) return known;
  const store = (client as unknown as { broker: QueueInternals }).broker.persistence;
  const holding = holdingsOf.get(client);
  if (pacesOf.get(store) !== undefined || holding === undefined) return undefined;
  const resume: Resume = { held: [], sent: new Map(), holding };
  resumesOf.set(client, resume);
  const letGo = (): { readonly deliver: Deliver; readonly packet: Parameters<Deliver>[0] }[] => {
    const held = resume.held ?? [];
    resume.held = undefined;
    for (const { packet } of held) holding.release(packet);
    return held;
  };
  // aedes emits 'connected' once the queue is sent; a client that closes first gets nothing (what it held stays queued).
  client.once('connected', () => {
    for (const { deliver, packet } of letGo()) if (!sentFromQueue(resume, packet)) deliver(packet, noop);
  });
  client.conn.once('close', letGo);
  return resume;
}

/** Note each message of the queue as sent from it (aedes then sends each, or drops one expired or not authorized). */
function recordSent(resume: Resume | undefined, packets: StoredPacket[]): StoredPacket[] {
  if (resume === undefined) return packets;
  for (const packet of packets) {
    const { brokerId, brokerCounter, cmd } = packet;
    if (brokerId === undefined || brokerCounter === undefined || (cmd !== undefined && cmd !== 'publish')) continue;
    const counters = resume.sent.get(brokerId) ?? new Set<number>();
    counters.add(brokerCounter);
    resume.sent.set(brokerId, counters);
  }
  return packets;
}

/**
 * Was this live message sent from the queue already? Each broker's messages come off the bus in its order (aedes' own
 * de-duplication counts on it), so the counters below this one will not come again and are forgotten.
 */
function sentFromQueue(resume: Resume, packet: Parameters<Deliver>[0]): boolean {
  const { brokerId, brokerCounter } = packet as StoredPacket;
  const counters = brokerId === undefined ? undefined : resume.sent.get(brokerId);
  if (counters === undefined || brokerCounter === undefined) return false;
  const sent = counters.delete(brokerCounter);
  for (const counter of counters) if (counter < brokerCounter) counters.delete(counter);
  if (counters.size === 0) resume.sent.delete(brokerId as string);
  return sent;
}

function noop(): void {}

/**
 * Wrap one of a client's delivery functions (aedes-adapter.ts' `fitClient`): while its session resumes unpaced, live
 * messages wait for its queue, and none the queue sent is sent again ({@link Resume}). Other clients' deliveries go
 * straight through. `done` (the bus's) is called on a later turn for a message held or dropped.
 */
export function keepQueueOrder(client: Client, deliver: Deliver, holding: Holding): Deliver {
  holdingsOf.set(client, holding);
  return (packet, done) => {
    const resume = resumeOf(client);
    if (resume?.held !== undefined) {
      if (holding.hold(packet)) resume.held.push({ deliver, packet });
    } else if (resume === undefined || !sentFromQueue(resume, packet)) return deliver(packet, done);
    setImmediate(done);
  };
}
