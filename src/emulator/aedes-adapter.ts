/**
 * The one door to aedes' internals. aedes 2.0.0-beta.1 (pinned) declares less than the emulator needs: its maps of
 * clients and brokers, each client's parser and delivery functions, the session store, and the text of its errors.
 * This is the only module that reaches for them or matches that text; the rest of the emulator uses aedes' declared
 * API (hooks, events, `handle`) and the functions here. Each use says which aedes behaviour it relies on, and
 * {@link assertAedesVersion} refuses to start on any other aedes than the one they were checked against
 * (test/integration/emulator-hostile.test.ts and emulator-mqtt-fuzz.test.ts check the behaviours).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Aedes, Client, Subscription } from 'aedes';
import { ConfigurationError } from '../errors.js';

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
  incomingDelPacket(client: Client, packet: { messageId: number }): Promise<void>;
}

/** The fields of an aedes broker used here (set at run time, not declared). */
interface BrokerInternals {
  clients: Record<string, Client | undefined>;
  brokers: Record<string, number | undefined>;
  persistence: SessionStore & { [PATCHED]?: true };
}

/** Marks a session store whose incomingDelPacket was made safe (a restarted broker gets the same store again). */
const PATCHED = Symbol('apsaramq-device: incomingDelPacket never rejects');

function internals(broker: Aedes): BrokerInternals {
  return broker as unknown as BrokerInternals;
}

/**
 * Make aedes survive what a client can send it. Its maps keyed by strings from the wire (ClientIds, topic filters,
 * broker ids) are re-created without a prototype:
 * aedes 2.0.0-beta.1 keeps them in plain objects, so a filter named `constructor` or `__proto__` reads back as an
 * inherited function: UNSUBSCRIBE `constructor` made aedes hand `undefined` to mqemitter, whose assertion then
 * killed the whole process (the fix of GHSA-52qw-whmv-87c5 is in aedes 1.2.0, not in this beta).
 */
export function hardenBroker(broker: Aedes): void {
  const broken = internals(broker);
  broken.clients = Object.assign(Object.create(null) as Record<string, Client | undefined>, broken.clients);
  broken.brokers = Object.assign(Object.create(null) as Record<string, number | undefined>, broken.brokers);
  // aedes 2.0.0-beta.1 deletes a QoS 2 message on its PUBREL with `.finally()`, which passes a rejection on to
  // nobody: two PUBRELs for one packet id in one read both find it, the second delete rejects ("no such packet"),
  // and the unhandled rejection ends the process. A delete that finds nothing has nothing left to do.
  const store = broken.persistence;
  if (store[PATCHED]) return;
  const incomingDelPacket = store.incomingDelPacket.bind(store);
  store.incomingDelPacket = (client, packet) => incomingDelPacket(client, packet).catch(() => undefined);
  store[PATCHED] = true;
}

/** The connected (authenticated and registered) client with this ClientId: aedes keeps them by id. */
export function clientById(broker: Aedes, clientId: string): Client | undefined {
  return internals(broker).clients[clientId];
}

/**
 * aedes' session store (persistent sessions' subscriptions, queued QoS 1/2 messages, wills). Passing it to the next
 * broker (`persistence` of `Aedes.createBroker`) keeps the sessions across a restart; aedes never destroys it on close.
 */
export function sessionStore(broker: Aedes): SessionStore {
  return internals(broker).persistence;
}

/**
 * Have aedes acknowledge nothing and route nothing for a PUBLISH the authorizePublish hook answered itself: aedes
 * 2.0.0-beta.1 skips publishing a packet flagged `_notAuthorized`, and then sends no acknowledgement of its own (a
 * QoS 2 one's PUBREL finds nothing stored and gets its PUBCOMP all the same).
 */
export function skipRouting(packet: object): void {
  (packet as { _notAuthorized?: boolean })._notAuthorized = true;
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
}

/** A delivery function of an aedes client: write `packet` to the client, then call `done`. */
export type Deliver = (packet: { readonly payload?: { readonly length: number }; readonly topic?: string }, done: () => void) => void;

/** The fields of an aedes client used here. */
interface ClientInternals {
  subscriptions: Record<string, unknown>;
  duplicates: Record<string, unknown>;
  deliver0: Deliver;
  deliverQoS: Deliver;
  /** The client's mqtt-packet parser; aedes handles each packet in a 'packet' listener. */
  _parser: NodeJS.EventEmitter;
}

/** What {@link fitClient} fits a client with. */
export interface ClientFitting {
  /** Sees every packet the client sends, before aedes handles it. */
  readonly inspect: (packet: ParsedPacket) => void;
  /** The client sent a SUBSCRIBE aedes would crash on; aedes was handed an empty one instead. */
  readonly onUnsafeSubscribe: () => void;
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

/**
 * Fit a new client, before it subscribes to anything (aedes picks the delivery function at subscription time):
 * null-prototype `subscriptions` and `duplicates` maps (see {@link hardenBroker}), no SUBSCRIBE that would crash
 * aedes, `inspect` ahead of aedes' own packet listener, and the delivery functions wrapped.
 */
export function fitClient(client: Client, fitting: ClientFitting): void {
  const fitted = client as unknown as ClientInternals;
  fitted.subscriptions = Object.create(null) as Record<string, unknown>;
  fitted.duplicates = Object.create(null) as Record<string, unknown>;
  // Ahead of aedes' own listener, which handles the packet right after.
  fitted._parser.prependListener('packet', (packet: ParsedPacket) => {
    if (crashesAedes(packet)) {
      // Emptied: an empty SUBSCRIBE without a packet id makes aedes do nothing and answer nothing.
      packet.subscriptions = [];
      delete packet.messageId;
      delete packet.properties;
      fitting.onUnsafeSubscribe();
      return;
    }
    fitting.inspect(packet);
  });
  fitted.deliver0 = fitting.wrapDelivery(fitted.deliver0);
  fitted.deliverQoS = fitting.wrapDelivery(fitted.deliverQoS);
}
