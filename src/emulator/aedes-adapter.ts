/**
 * The one door to aedes' internals. aedes 2.0.0-beta.1 (pinned) declares less than the emulator needs: its maps of
 * clients and brokers, each client's parser and delivery functions, the session store, and the text of its errors.
 * This module, aedes-session-queues.ts (the session store's outgoing queues), aedes-registrations.ts (which connection
 * is registered under a ClientId, and how connections are counted, when they overlap), aedes-cluster-takeovers.ts (a
 * takeover from another broker of a cluster) and aedes-incoming-qos2.ts (the QoS 2 messages awaiting PUBREL) are the
 * only ones that reach for them or match that text; the rest of the emulator uses aedes' declared API (hooks, events,
 * `handle`) and the functions of these five. Each use says which aedes behaviour it relies on, and
 * {@link assertAedesVersion} refuses to start on any other aedes than the one they were checked against
 * (test/integration/emulator-hostile.test.ts, emulator-mqtt-fuzz.test.ts, emulator-takeover.test.ts and
 * emulator-takeover-gaps.test.ts check the behaviours).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Aedes, Client, Subscription } from 'aedes';
import { ConfigurationError } from '../errors.js';
import { keepSessionsQos2, type QoS2Sessions } from './aedes-incoming-qos2.js';
import { registerEachConnectionOnce } from './aedes-registrations.js';
import { propertyProblem } from './mqtt5-properties.js';

export { endConnection } from './aedes-incoming-qos2.js';

/** The aedes version this module was written and tested against: package.json pins the peer dependency to it. */
export const AEDES_VERSION = '2.0.0-beta.1';

/**
 * Refuse an aedes other than {@link AEDES_VERSION}: the guards below reach into fields and behaviours that a later
 * aedes may rename or fix differently, and a guard that silently stops working lets one client crash the process.
 * @throws ConfigurationError `DependencyMismatch` naming both versions and the command that installs the right one.
 */
export function checkAedesVersion(found: string | undefined): void {
  if (found === AEDES_VERSION) return;
  const remedy = `npm install aedes@${AEDES_VERSION}`;
  throw new ConfigurationError(
    'DependencyMismatch',
    `The emulator needs aedes ${AEDES_VERSION} exactly (its guards against hostile clients are written for that version), but aedes ${found ?? '(of an unknown version)'} is installed: ${remedy}`,
    remedy,
  );
}

/** The version in the package.json of the aedes that `import 'aedes'` loads (its exports map hides the file). */
export function installedAedesVersion(): string | undefined {
  let dir = dirname(createRequire(import.meta.url).resolve('aedes'));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'aedes') return typeof pkg.version === 'string' ? pkg.version : undefined;
    } catch {
      // No package.json here (or not JSON): look one level up.
    }
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

let versionChecked = false;

/** {@link checkAedesVersion} of the installed aedes, once per process. */
export function assertAedesVersion(): void {
  if (versionChecked) return;
  checkAedesVersion(installedAedesVersion());
  versionChecked = true;
}

// ---------------------------------------------------------------- the broker

/** aedes-persistence's session store, as far as the emulator uses it. */
export interface SessionStore {
  removeSubscriptions(client: Client, filters: readonly string[]): Promise<void>;
  addSubscriptions(client: Client, subscriptions: readonly Subscription[]): Promise<void>;
  incomingStorePacket(client: Client, packet: { messageId: number }): Promise<void>;
  incomingDelPacket(client: Client, packet: { messageId: number }): Promise<void>;
}

/** The fields of an aedes broker used here (set at run time, not declared). */
interface BrokerInternals {
  clients: Record<string, Client | undefined>;
  brokers: Record<string, number | undefined>;
  persistence: SessionStore;
}

function internals(broker: Aedes): BrokerInternals {
  return broker as unknown as BrokerInternals;
}

/**
 * Make aedes survive what a client can send it. Its maps keyed by strings from the wire (ClientIds, topic filters,
 * broker ids) are re-created without a prototype:
 * aedes 2.0.0-beta.1 keeps them in plain objects, so a filter named `constructor` or `__proto__` reads back as an
 * inherited function: UNSUBSCRIBE `constructor` made aedes hand `undefined` to mqemitter, whose assertion then
 * killed the whole process (the fix of GHSA-52qw-whmv-87c5 is in aedes 1.2.0, not in this beta). And a connection
 * that closes after a newer one of its ClientId registered no longer unregisters that one, and each connection is
 * counted out once whatever order the closes of one ClientId's connections end in (aedes-registrations.ts). The QoS 2
 * messages awaiting PUBREL are their session's, discarded by a Clean Start, and a clean session's its connection's
 * (aedes-incoming-qos2.ts, kept in `incoming.create`'s sessions: a cluster's Redis; default in memory; none for a
 * persistent session while QoS 2 is refused there: `incoming.persistentQos2` false), and a second PUBREL of one no
 * longer ends the process.
 */
export function hardenBroker(broker: Aedes, incoming: QoS2Sessions): void {
  const broken = internals(broker);
  registerEachConnectionOnce(broker);
  keepSessionsQos2(broker, incoming);
  broken.clients = Object.assign(Object.create(null) as Record<string, Client | undefined>, broken.clients);
  broken.brokers = Object.assign(Object.create(null) as Record<string, number | undefined>, broken.brokers);
}

/**
 * How many messages the broker has numbered. aedes 2.0.0-beta.1 numbers each message it routes (`brokerCounter`,
 * from `counter`, 0 for a new broker) and tells messages apart by broker id and that number: the broker that takes
 * over from a restarted one (the same id, the same session store) numbers on from here ({@link countOnFrom}). One that
 * counted from 0 again gave a new message the id and number of one still queued from before the restart:
 * aedes-session-queues.ts `keepQueueOrder` took the new one for the one the queue had sent and dropped it, and the
 * queues' updates (session-queues.ts, cluster/redis-queues.ts), which find a message by the same two, could give the
 * new one's packet id to the old one.
 */
export function messagesCounted(broker: Aedes): number {
  return (broker as unknown as { counter?: number }).counter ?? 0;
}

/** Number this broker's messages on from `counted` (before it routes any: {@link messagesCounted}). */
export function countOnFrom(broker: Aedes, counted: number): void {
  (broker as unknown as { counter: number }).counter = Math.max(messagesCounted(broker), counted);
}

/** The connected (authenticated and registered) client with this ClientId: aedes keeps them by id. */
export function clientById(broker: Aedes, clientId: string): Client | undefined {
  return internals(broker).clients[clientId];
}

/**
 * Call `listener` once for each connection aedes answered (its `connackSent`), when that connection has ended (its
 * socket closed): where a connection's own state must go with it. Not aedes' `clientDisconnect`, which comes once for
 * each connection aedes *registered* (aedes-registrations.ts): a connection whose takeover waits got its CONNACK, and
 * may have published, but is never registered when it closes before the takeover ends, or is taken over itself.
 */
export function onAnsweredConnectionEnd(broker: Aedes, listener: (client: Client) => void): void {
  broker.on('connackSent', (_packet, client) => {
    const conn = client.conn as Duplex;
    if (conn.closed) queueMicrotask(() => listener(client));
    else conn.once('close', () => listener(client));
  });
}

/**
 * Call `listener` for each connection aedes accepts, before it is registered and before its CONNACK is written: what
 * a connection must have from its CONNACK on goes here. Not aedes' `client` event, which comes once the connection is
 * registered: a takeover registers the new connection only once the old one's close has ended, and aedes writes the
 * CONNACK without waiting for that (the client then publishes, and is to be reached). aedes 2.0.0-beta.1 calls the
 * broker's `registerClient` for each CONNECT it accepts (handlers/connect.js, right before `doConnack`), registering
 * at once or starting a takeover (aedes-registrations.ts); the listener runs before that. Not for a connection closed
 * meanwhile: aedes goes on with a CONNECT whose socket closed after its login (while it asked the session store, a
 * Redis round trip clustered), which aedes-registrations.ts does not register.
 */
export function onAccepted(broker: Aedes, listener: (client: Client) => void): void {
  const inner = broker as unknown as { registerClient(client: Client): void };
  const registerClient = inner.registerClient;
  inner.registerClient = function (this: unknown, client: Client): void {
    if (!client.closed) listener(client);
    registerClient.call(this, client);
  };
}

/**
 * aedes' session store (persistent sessions' subscriptions, queued QoS 1/2 messages, wills). Passing it to the next
 * broker (`persistence` of `Aedes.createBroker`) keeps the sessions across a restart; aedes never destroys it on close.
 */
export function sessionStore(broker: Aedes): SessionStore {
  return internals(broker).persistence;
}

/**
 * The Keep Alive aedes applies to a client and tells it in its CONNACK (MQTT 5 Server Keep Alive), set before aedes
 * accepts the CONNECT (preConnect): aedes 2.0.0-beta.1 keeps it in `_serverKeepAlive`, which its own cap
 * (`keepaliveLimit`, left at 0 by the emulator) would otherwise set, and arms the keep-alive timer on it.
 */
export function setServerKeepAlive(client: Client, seconds: number): void {
  (client as unknown as { _serverKeepAlive?: number })._serverKeepAlive = seconds;
}

/**
 * Have aedes acknowledge nothing and route nothing for a PUBLISH the authorizePublish hook answered itself: aedes
 * 2.0.0-beta.1 skips publishing a packet flagged `_notAuthorized`, and then sends no acknowledgement of its own (a
 * QoS 2 one's PUBREL finds nothing stored and gets its PUBCOMP all the same).
 */
export function skipRouting(packet: object): void {
  (packet as { _notAuthorized?: boolean })._notAuthorized = true;
}

/**
 * Route a client's PUBLISH as aedes' own PUBLISH handler does (its typings leave the client out): aedes 2.0.0-beta.1's
 * `publish(packet, client, done)` stores it if retained, queues it for offline persistent sessions, hands it to the
 * message bus, and reports it (`published`, the 'publish' event) as the client's; `done` once all of that is done.
 */
export function publishAs(broker: Aedes, client: Client, packet: object, done: (error?: Error) => void): void {
  (broker as unknown as { publish(packet: object, client: Client, done: (error?: Error) => void): void }).publish(packet, client, done);
}

/** A refusal aedes made itself, told by the text of its error (aedes gives these errors no code). */
export type AedesRefusal =
  | { readonly kind: 'packetTooLarge'; readonly size: number | undefined }
  | { readonly kind: 'drainTimeout' }
  | { readonly kind: 'subscriptionIdentifier'; readonly message: string };

/** What an error of aedes' `clientError` / `connectionError` events means, when it is one of its refusals. */
export function aedesRefusal(error: Error): AedesRefusal | undefined {
  if (error.message === 'packet too large') return { kind: 'packetTooLarge', size: (error as { size?: number }).size };
  if (error.message === 'drain timeout') return { kind: 'drainTimeout' };
  if (error.message.startsWith('invalid subscription identifier')) return { kind: 'subscriptionIdentifier', message: error.message };
  return undefined;
}

/** aedes reports persistence failures as an `error` event of the broker, which it does not declare. */
export function onBrokerError(broker: Aedes, listener: (error: Error) => void): void {
  (broker as unknown as NodeJS.EventEmitter).on('error', listener);
}

// ---------------------------------------------------------------- each client

/** A packet as mqtt-packet parses it, as far as the emulator looks at it. */
export interface ParsedPacket {
  cmd: string;
  messageId?: number;
  qos?: number;
  topic?: string;
  payload?: { length: number };
  subscriptions?: { topic: string }[];
  properties?: unknown;
  will?: unknown;
}

/** A delivery function of an aedes client: write `packet` to the client, then call `done`. */
export type Deliver = (packet: { readonly payload?: { readonly length: number }; readonly topic?: string }, done: () => void) => void;

/** The fields of an aedes client used here. */
interface ClientInternals {
  subscriptions: Record<string, unknown>;
  duplicates: Record<string, unknown>;
  deliver0: Deliver;
  deliverQoS: Deliver;
  /** The client's mqtt-packet parser; aedes handles each packet in a 'packet' listener and fails on an 'error'. */
  _parser: NodeJS.EventEmitter & { packet?: { cmd?: string; protocolVersion?: number } };
  /** Set by aedes once the CONNACK is written. */
  connackSent?: boolean;
}

/** A packet kept from aedes, and why: what the client is told (MQTT 5 reason code) and the rule it is counted under. */
export interface PacketRefusal {
  readonly rule: 'malformedPacket' | 'protocolError' | 'protocolVersion' | 'unsafeSubscribe' | 'unhandledPacket';
  /** MQTT 5's reason code (CONNACK or DISCONNECT). */
  readonly reasonCode: number;
  /** MQTT 3.1.1's CONNACK return code, for a refused CONNECT answered in that form. */
  readonly returnCode?: number;
  readonly reason: string;
}

/** What {@link fitClient} fits a client with. */
export interface ClientFitting {
  /** Sees every packet the client sends that aedes is to handle, before aedes does. */
  readonly inspect: (packet: ParsedPacket) => void;
  /**
   * A packet was kept from aedes, with every packet after it; the client must be closed. `connect`: it was the
   * CONNECT (answer with a CONNACK; `protocolVersion` is what the CONNECT said). `session`: a later packet, reported
   * once the CONNACK is out (answer MQTT 5 with a DISCONNECT). `close`: nothing may be sent (a CONNECT that names
   * another protocol, a packet before the CONNECT, an MQTT 3.1.1 client).
   */
  readonly onRefused: (refusal: PacketRefusal, stage: 'connect' | 'session' | 'close', protocolVersion: number) => void;
  /** Wraps each of the client's two delivery functions (QoS 0 and QoS 1/2). */
  readonly wrapDelivery: (deliver: Deliver) => Deliver;
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

/** mqtt-packet's message for a CONNECT of a protocol level it does not parse (0-2, 6-127; 128 and up less 128). */
const UNKNOWN_LEVEL = 'Invalid protocol version';
/** mqtt-packet's message for a CONNECT whose protocol name is neither MQTT nor MQIsdp. */
const UNKNOWN_NAME = 'Invalid protocolId';

/**
 * Fit a new client, before it subscribes to anything (aedes picks the delivery function at subscription time):
 * null-prototype `subscriptions` and `duplicates` maps (see {@link hardenBroker}), and a gate in front of aedes.
 * aedes' own packet and parse-error listeners are taken off the client's parser and called from the gate, which keeps
 * from aedes what it would crash on or misread: a SUBSCRIBE it cannot survive, MQTT 5 properties that are malformed
 * or a protocol error (mqtt5-properties.ts), and a CONNECT of a protocol level it does not speak, which it would
 * close without the CONNACK 1 MQTT asks for (MQTT-3.1.2-2). Once a packet is refused nothing more of that client
 * reaches aedes. A throw out of aedes' handling of a packet closes that client instead of ending the process.
 */
export function fitClient(client: Client, fitting: ClientFitting): void {
  const fitted = client as unknown as ClientInternals;
  fitted.subscriptions = Object.create(null) as Record<string, unknown>;
  fitted.duplicates = Object.create(null) as Record<string, unknown>;
  const parser = fitted._parser;
  const handlePacket = parser.listeners('packet') as ((this: unknown, packet: unknown) => void)[];
  const failParse = parser.listeners('error') as ((this: unknown, error: Error) => void)[];
  parser.removeAllListeners('packet');
  parser.removeAllListeners('error');
  let refused = false;
  /** The protocol level of the client's CONNECT, from when it is seen (aedes sets `client.version` only once it accepts it). */
  let level: number | undefined;

  /** Keep this client from aedes for good, and have it answered once it may be. */
  const refuse = (refusal: PacketRefusal, connect: boolean, protocolVersion: number): void => {
    refused = true;
    const inSession = (): void => fitting.onRefused(refusal, (client.version ?? level) === 5 ? 'session' : 'close', client.version ?? level ?? 4);
    if (connect) fitting.onRefused(refusal, 'connect', protocolVersion);
    else if (client.connected || fitted.connackSent === true) inSession();
    // No DISCONNECT before the CONNACK (MQTT-3.14.0-1): packets sent right behind the CONNECT wait for its outcome
    // (a refused CONNECT closes the client, and 'connected' never comes).
    else if (client.connecting) client.once('connected', inSession);
    else fitting.onRefused(refusal, 'close', protocolVersion);
  };
  /** aedes' handling of one packet, any throw out of it contained. */
  const toAedes = (listener: (this: unknown, packet: unknown) => void, packet: ParsedPacket): void => {
    try {
      listener.call(parser, packet);
    } catch (error) {
      // On the CONNECT: CONNACK 3 (Server unavailable) or 0x83; later: DISCONNECT 0x83.
      const reason = `a ${packet.cmd.toUpperCase()} aedes failed on (${error instanceof Error ? error.message : String(error)})`;
      refuse({ rule: 'unhandledPacket', reasonCode: 0x83, returnCode: 3, reason }, packet.cmd === 'connect' && !client.connected, level ?? 4);
    }
  };

  parser.on('packet', (packet: ParsedPacket) => {
    if (refused) return;
    if (packet.cmd === 'connect' && level === undefined) level = (packet as { protocolVersion?: number }).protocolVersion;
    if (crashesAedes(packet)) {
      refuse({ rule: 'unsafeSubscribe', reasonCode: 0x8f, reason: "a SUBSCRIBE listing '__proto__' beside other filters (aedes 2.0.0-beta.1 would crash on it)" }, false, 5);
      return;
    }
    const problem = propertyProblem(packet);
    if (problem) {
      const isConnect = packet.cmd === 'connect' && !client.connecting && !client.connected;
      refuse({ rule: problem.reasonCode === 0x81 ? 'malformedPacket' : 'protocolError', reasonCode: problem.reasonCode, reason: problem.reason }, isConnect, 5);
      return;
    }
    fitting.inspect(packet);
    for (const listener of handlePacket) toAedes(listener, packet);
  });
  parser.on('error', (error: Error) => {
    if (refused) return;
    const pending = parser.packet;
    const firstConnect = pending?.cmd === 'connect' && !client.connecting && !client.connected;
    if (firstConnect && error.message === UNKNOWN_LEVEL) {
      refuse({ rule: 'protocolVersion', reasonCode: 0x84, returnCode: 1, reason: 'a CONNECT of a protocol level the broker does not speak (MQTT 3.1, 3.1.1 and 5 only)' }, true, 4);
    } else if (firstConnect && error.message === UNKNOWN_NAME) {
      refuse({ rule: 'protocolVersion', reasonCode: 0x84, reason: 'a CONNECT whose protocol name is not MQTT (or MQIsdp): closed without a CONNACK, as Mosquitto does' }, false, 4);
    } else if (firstConnect && pending.protocolVersion === 5) {
      refuse({ rule: 'malformedPacket', reasonCode: 0x81, reason: `a CONNECT that could not be read (${error.message})` }, true, 5);
    } else if ((client.version ?? level) === 5 && !client.closed) {
      refuse({ rule: 'malformedPacket', reasonCode: 0x81, reason: `a packet that could not be read (${error.message})` }, false, 5);
    } else {
      for (const listener of failParse) listener.call(parser, error);
    }
  });
  // The packets that came behind the CONNECT wait in aedes' queue, handled when the client is 'connected'.
  for (const listener of client.listeners('connected') as ((this: unknown) => void)[]) {
    client.removeListener('connected', listener);
    client.once('connected', () => {
      try {
        listener.call(client);
      } catch (error) {
        refuse({ rule: 'unhandledPacket', reasonCode: 0x83, reason: `a packet aedes failed on (${error instanceof Error ? error.message : String(error)})` }, false, 5);
      }
    });
  }
  // QoS 0 on the way in, as aedes' deliver0 writes it (on its own copy, made for this subscriber): the authorizeForward
  // hook it calls then sees the packet as it will be written.
  const deliver0 = fitted.deliver0;
  fitted.deliver0 = fitting.wrapDelivery((packet, done) => {
    (packet as { qos?: number }).qos = 0;
    deliver0(packet, done);
  });
  fitted.deliverQoS = fitting.wrapDelivery(fitted.deliverQoS);
}
