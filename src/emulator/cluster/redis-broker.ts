/**
 * What one broker of a cluster is built on: aedes-persistence-redis (sessions, subscriptions, wills, in-flight QoS 2
 * messages; the queues of persistent sessions are redis-queues.ts's, installed over it by aedes-session-queues.ts) and
 * mqemitter-redis (the message bus every broker of the cluster shares), on connections of their own. Each start of a
 * broker (a restart too) gets new ones, as aedes closes its bus when it closes.
 *
 * The bus's channels are mapped here. mqemitter-redis publishes each message on the channel named by its topic and
 * turns each wildcard filter into a pattern subscription; Redis matches every message against every pattern, so one
 * pattern per client (the broker's own P2P subscription `+/p2p/<ClientId>`) would cost each message 20,000 matches on a
 * fleet of 20,000, and one channel per client a SUBSCRIBE per CONNECT and an UNSUBSCRIBE per DISCONNECT. Each process
 * has one P2P inbox channel instead, which every client's P2P subscription maps to (subscribed while its broker
 * runs); a P2P message (`<parent>/p2p/<ClientId>`) goes, by one script, to the inbox of each live process its
 * addressee is connected to (membership.ts's presence). Only the addressee ever gets a P2P message (broker-rules.ts),
 * so no other subscriber misses one. Every channel carries the database number (pub/sub ignores databases), and a
 * filter's characters that Redis' patterns would read as their own (`*`, `?`, `[`, `]`, `\`) are escaped.
 */
import { Readable } from 'node:stream';
import { p2pInbox, p2pTarget, P2P_LEVEL } from '../p2p.js';
import type { Redis } from 'ioredis';
import { channelPrefix, KEYS, LIVE_MS, takeoverChannel } from './keys.js';
import { NOW } from './membership.js';
import { connectRedis, script, TurnBatch, type ClusterModules, type MqEmitterRedis, type RedisTarget } from './redis.js';

/** Where a message to `topic` goes: its topic's channel, or (P2P) the inboxes of the processes its addressee is on. */
export function routeOf(prefix: string, topic: string): { channel: string } | { addressee: string } {
  const addressee = p2pTarget(topic);
  return addressee === undefined ? { channel: `${prefix}t/${topic}` } : { addressee };
}

/** The P2P inbox channel of one process (of its broker id). */
export function inboxChannel(prefix: string, processId: string): string {
  return `${prefix}i/${processId}`;
}

/** The ClientId of a broker's P2P subscription `+/p2p/<ClientId>`, else `undefined`. */
function inboxOf(filter: string): string | undefined {
  const levels = filter.split('/');
  return levels.length === 3 && levels[0] === '+' && levels[1] === P2P_LEVEL && levels[2] !== '' && !/[+#]/.test(levels[2] as string) ? levels[2] : undefined;
}

/**
 * A filter as a Redis channel (no wildcard) or pattern (`+` and `#` become `*`; a superset: aedes matches exactly); a
 * client's P2P subscription is its process's `inbox`.
 */
export function subscriptionOf(prefix: string, filter: string, inbox: string): { channel: string; pattern: boolean } {
  if (inboxOf(filter) !== undefined) return { channel: inbox, pattern: false };
  if (!/[+#]/.test(filter)) return { channel: `${prefix}t/${filter}`, pattern: false };
  const levels = filter.split('/').map((level) => (level === '+' || level === '#' ? '*' : level.replace(/[*?[\]\\]/g, '\\$&')));
  // `a/#` also matches `a` itself: its pattern must not need the slash.
  const pattern = levels.join('/').replace(/\/\*$/, '*');
  return { channel: `${prefix}t/${pattern}`, pattern: true };
}

/**
 * aedes' own `$SYS` notices kept off the bus. Those no broker listens to (aedes follows `$SYS/+/new/clients`,
 * heartbeats and births, and the persistence `$SYS/sub/+`; devices may not subscribe to `$SYS`) would each be a Redis
 * PUBLISH per SUBSCRIBE, UNSUBSCRIBE and DISCONNECT that nobody receives. `new/clients`, the takeover notice of each
 * CONNECT, is sent by the membership instead, with the presence count it goes with: one PUBLISH for the ClientIds
 * that connected since its last one, on a channel of its own ({@link takeoverChannel}), heard below.
 */
const UNHEARD = /^\$SYS\/[^/]+\/(?:new\/subscribes|new\/unsubscribes|disconnect\/clients|new\/clients)$/;

/** What the broker's rules let into its persistence: nothing retained or no will means nothing to look up. */
export interface StoredFeatures {
  /** Retained messages are stored (`retainedMessages: 'allow'`). */
  readonly retained: boolean;
  /** Wills are stored (`willMessages: 'allow'`). */
  readonly wills: boolean;
}

type Callback = (error: Error | null, result?: unknown) => void;

/** The callback persistence's methods the cluster answers itself when its rules store nothing of that kind. */
interface Lookups {
  createRetainedStream(pattern: string): Readable;
  createRetainedStreamCombi(patterns: string[]): Readable;
  delWill(client: unknown, cb?: Callback): Promise<null> | undefined;
}

/**
 * Answer at once what the rules make certain: with retained messages refused or ignored nothing retained is ever
 * stored (a SUBSCRIBE need not scan Redis for any), and with wills refused or ignored no will (a CONNECT need not
 * delete one: three commands). The same answers the store would give, without the round trips.
 */
function answerFromRules(persistence: unknown, features: StoredFeatures): void {
  const store = persistence as Lookups;
  if (!features.retained) {
    store.createRetainedStream = () => Readable.from([]);
    store.createRetainedStreamCombi = () => Readable.from([]);
  }
  if (!features.wills) {
    store.delWill = (_client, cb) => {
      if (cb) {
        process.nextTick(cb, null, null);
        return undefined;
      }
      return Promise.resolve(null);
    };
  }
}

/**
 * A clean session's CONNECT (aedes' `cleanSubscriptions`) in one script for a burst of CONNECTs: does the ClientId
 * hold stored subscriptions (aedes-persistence-redis' `client:<ClientId>` hash), and how many queued messages
 * (redis-queues.ts)? And the ClientId's session's QoS 2 messages awaiting PUBREL (redis-incoming.ts) are discarded,
 * with every connection's share in them, in the same command: aedes forgets a session's subscriptions when it
 * discards the session (a Clean Start, MQTT-3.1.2-4; a session that ends or expires). ARGV: the three keys of each
 * ClientId. Replies `{subscribed, queued}` per ClientId.
 */
const ARRIVALS = `
local reply = {}
for i = 1, #ARGV, 3 do
  redis.call('DEL', ARGV[i + 2])
  reply[#reply + 1] = {redis.call('EXISTS', ARGV[i]), redis.call('LLEN', ARGV[i + 1])}
end
return reply
`;

/** aedes-persistence-redis' hash of a ClientId's stored subscriptions. */
function subscriptionsKey(clientId: string): string {
  return `client:${encodeURIComponent(clientId)}`;
}

/**
 * A clean session's CONNECT asks the store to forget the ClientId's subscriptions (aedes' `fetchSubs`), then reads
 * its queue to drop what it holds (`emptyQueue`): two round trips for a ClientId that, almost always, holds neither.
 * One batched check answers both; the store's own clean-up runs only for a ClientId that holds subscriptions, and a
 * queue found empty is not read again (`emptyQueue`: {@link BrokerBackendOptions.emptyQueue}). A message queued
 * between the check and the read would have been dropped by the read (the session starts clean) or, queued just after
 * it, left queued: the same as before.
 */
function checkArrivals(persistence: unknown, store: Redis, emptyQueue: (client: object) => void): void {
  const target = persistence as { cleanSubscriptions(client: { id: string }, cb?: Callback): Promise<unknown> | undefined };
  const clean = target.cleanSubscriptions.bind(target);
  const check = script(store, 'apsaramqArrivals', ARRIVALS, 0);
  const arrivals = new TurnBatch<string, readonly [number, number]>(async (clientIds) => (await check.run(...clientIds.flatMap((id) => [subscriptionsKey(id), KEYS.queue(id), KEYS.incoming(id)]))) as [number, number][]);
  target.cleanSubscriptions = (client, cb) => {
    const done = arrivals.add(client.id).then(async ([subscribed, queued]) => {
      if (queued === 0) emptyQueue(client);
      if (subscribed === 1) await clean(client);
    });
    if (!cb) return done;
    done.then(() => process.nextTick(cb, null, client), (error: Error) => process.nextTick(cb, error));
    return undefined;
  };
}

/**
 * SUBSCRIBEs and UNSUBSCRIBEs of the bus (mqemitter-redis sends one per channel, as a filter gets its first subscriber
 * in this process or loses its last), sent as one command per run of the same kind in each batch, in the order asked.
 */
function coalesceSubscriptions(subConn: Redis): void {
  type Change = readonly ['subscribe' | 'unsubscribe', string];
  const direct = { subscribe: subConn.subscribe.bind(subConn), unsubscribe: subConn.unsubscribe.bind(subConn) };
  const changes = new TurnBatch<Change, void>(async (asked): Promise<void[]> => {
    const sent: Promise<unknown>[] = [];
    for (let from = 0; from < asked.length;) {
      const kind = (asked[from] as Change)[0];
      let to = from;
      while (to < asked.length && (asked[to] as Change)[0] === kind) to++;
      sent.push(direct[kind](...asked.slice(from, to).map(([, channel]) => channel)));
      from = to;
    }
    await Promise.all(sent);
    return [];
  });
  const queued = (kind: Change[0]) => (channel: string, cb?: Callback): Promise<void> => {
    const done = changes.add([kind, channel]);
    if (cb) done.then(() => cb(null), (error: Error) => cb(error));
    return done;
  };
  Object.assign(subConn, { subscribe: queued('subscribe'), unsubscribe: queued('unsubscribe') });
}

/** aedes' takeover notice: `$SYS/<broker>/new/clients`, the ClientId as payload. */
const NEW_CLIENTS = '$SYS/+/new/clients';

/**
 * Hear the takeover notices of the other processes (membership.ts publishes them): each ClientId that connected
 * there is handed to this broker's own `$SYS/+/new/clients` handler, which closes this process's connection of it, as
 * the notice aedes publishes itself would have. `takenOver` hears each first: its listener, added here before the
 * broker exists, is called before aedes' (the bus calls a topic's listeners in the order they were added).
 */
async function hearTakeovers(mq: MqEmitterRedis, subConn: Redis, channel: string, processId: string, takenOver: (clientId: string) => void, onError: (error: unknown) => void): Promise<void> {
  await new Promise<void>((resolve) => mq.on(NEW_CLIENTS, (message, done) => {
    const notice = message as { topic: string; payload: Buffer };
    if (notice.topic.split('/')[1] !== processId) takenOver(notice.payload.toString());
    done();
  }, resolve));
  mq._ignoredTopicsSet.add(channel);
  subConn.on('messageBuffer', (from: Buffer, message: Buffer) => {
    if (from.toString() !== channel) return;
    let notice: { b: string; c: string[] };
    try {
      notice = JSON.parse(message.toString()) as { b: string; c: string[] };
    } catch (error) {
      onError(error);
      return;
    }
    if (notice.b === processId) return;
    for (const clientId of notice.c) mq._emit({ topic: `$SYS/${notice.b}/new/clients`, payload: Buffer.from(clientId) });
  });
  await subConn.subscribe(channel);
}

/** The prefix of each process's presence hash (membership.ts). */
const PRESENCE = KEYS.presence('');

/**
 * A P2P message, to the inbox of each live process its addressee is connected to. KEYS: the live processes. ARGV: how
 * recent a live process's heartbeat is, the presence keys' prefix, the inboxes' prefix, the addressee, the message.
 */
const P2P = `${NOW}
local sent = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')) do
  if redis.call('HEXISTS', ARGV[2] .. id, ARGV[4]) == 1 then sent = sent + redis.call('PUBLISH', ARGV[3] .. id, ARGV[5]) end
end
return sent
`;

/** A broker's persistence and message bus, and how to let go of their connections. */
export interface BrokerBackend {
  readonly persistence: unknown;
  readonly mq: unknown;
  /** Close the persistence's connection (aedes closes the bus itself when it closes). */
  close(): Promise<void>;
  /** Close both, for a broker that never started. */
  abandon(): Promise<void>;
}

/** What a broker's backend is built with besides its Redis. */
export interface BrokerBackendOptions {
  /** What the broker's rules let into the persistence. */
  readonly features: StoredFeatures;
  /** A clean session's CONNECT found its queue empty: its read right after the CONNACK need not go to Redis. */
  readonly emptyQueue: (client: object) => void;
  /**
   * Another process's CONNECT took a ClientId over: called before the broker hears it (and closes its connection of
   * it), so that the connection is told (aedes-cluster-takeovers.ts' `tellTakenOver`).
   */
  readonly takenOver: (clientId: string) => void;
  readonly onError: (error: unknown) => void;
}

/** Connect a new persistence and bus for one start of a broker. */
export async function brokerBackend(modules: ClusterModules, target: RedisTarget, processId: string, options: BrokerBackendOptions): Promise<BrokerBackend> {
  const { features, onError } = options;
  const prefix = channelPrefix(target.db);
  const [store, subConn, pubConn] = await Promise.all([
    connectRedis(modules, target, `${processId}:sessions`),
    connectRedis(modules, target, `${processId}:bus-in`, { maxRetriesPerRequest: null }),
    connectRedis(modules, target, `${processId}:bus-out`),
  ]);
  // Published on the channel of the message's topic (mqemitter-redis names the topic), read back by topic; a P2P
  // message to its addressee's processes' inboxes.
  const publish = pubConn.publish.bind(pubConn) as (channel: string, message: Buffer | string) => Promise<number>;
  const p2p = script(pubConn, 'apsaramqP2p', P2P, 1);
  const inboxes = inboxChannel(prefix, '');
  (pubConn as unknown as { publish: typeof publish }).publish = async (topic, message) => {
    const route = routeOf(prefix, topic);
    return 'channel' in route ? publish(route.channel, message) : ((await p2p.run(KEYS.processes, LIVE_MS, PRESENCE, inboxes, route.addressee, message)) as number);
  };
  const mq = modules.mqemitterRedis({ subConn, pubConn, matchEmptyLevels: true }) as MqEmitterRedis;
  // aedes' notices no broker hears never reach Redis (nor the cost of encoding them).
  const emit = mq.emit.bind(mq);
  mq.emit = (message, done) => (UNHEARD.test(message.topic) ? done?.() : emit(message, done));
  // mqemitter-redis reports its connections' failures as 'error' events of `state`: unheard, one would end the process.
  (mq as unknown as { state: NodeJS.EventEmitter }).state.on('error', onError);
  const inbox = inboxChannel(prefix, processId);
  mq._subTopic = (topic: string) => subscriptionOf(prefix, topic, inbox).channel;
  mq._containsWildcard = (topic: string) => subscriptionOf(prefix, topic, inbox).pattern;
  try {
    await hearTakeovers(mq, subConn, takeoverChannel(target.db), processId, options.takenOver, onError);
    // The inbox is subscribed for as long as the broker runs (this listener, which no message matches, keeps
    // mqemitter-redis from unsubscribing it when the last client leaves): a client is reachable by P2P as soon as the
    // cluster counts it, before its CONNACK (membership.ts), with no SUBSCRIBE of its own to wait for.
    await new Promise<void>((resolve) => mq.on(p2pInbox(processId), (_message, done) => done(), resolve));
  } catch (error) {
    store.disconnect();
    subConn.disconnect();
    pubConn.disconnect();
    throw error;
  }
  coalesceSubscriptions(subConn);
  // mqemitter-redis closes with QUIT and waits for both connections' 'end', which a connection waiting to reconnect
  // to a Redis that is gone never emits: aedes' close would wait forever. The connections are dropped instead, and
  // the local emitter closed at once (mqemitter-redis keeps MQEmitter's own close as `_close`).
  const internals = mq as unknown as { closing?: boolean; _close: (cb: () => void) => void };
  mq.close = (cb?: () => void) => {
    internals.closing = true;
    subConn.disconnect();
    pubConn.disconnect();
    internals._close(cb ?? (() => undefined));
  };
  const persistence = modules.redisPersistence({ conn: store });
  answerFromRules(persistence, features);
  checkArrivals(persistence, store, options.emptyQueue);
  return {
    persistence,
    mq,
    // Its subscriptions were on the bus, which the broker's close has closed: only its connection is left.
    close: async () => {
      store.disconnect();
    },
    abandon: async () => {
      await new Promise<void>((resolve) => mq.close(resolve));
      store.disconnect();
    },
  };
}
