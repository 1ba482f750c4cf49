/**
 * Which connection aedes 2.0.0-beta.1 holds under a ClientId, and how it counts its connections, when connections of
 * one ClientId overlap: a takeover, a reconnect while the old connection is still closing. One of the aedes-* files,
 * the only ones that reach for aedes' internals (aedes-adapter.ts asserts the version they were checked against);
 * installed by `hardenBroker` (test/integration/emulator-takeover.test.ts forces each interleaving below).
 */
import type { Aedes, Client } from 'aedes';

/** What this module reaches of aedes 2.0.0-beta.1 (none of it is in its typings). */
interface RegistryInternals {
  id: string;
  mq: { on(topic: string, listener: (packet: { topic: string; payload: Buffer }, done: () => void) => void): void };
  clients: Record<string, Client | undefined>;
  connectedClients: number;
  _takingOver: Set<string>;
  registerClient(client: Client): void;
  _finishRegisterClient(client: Client): void;
  unregisterClient(client: Client): void;
  deleteClient(clientId: string): void;
  scheduleSessionExpiry(client: Client): void;
  scheduleWill(client: Client, will: unknown, delaySeconds: number): void;
}

/** MQTT 5's DISCONNECT reason code Session taken over. */
const SESSION_TAKEN_OVER = 0x8e;

/**
 * Each connection aedes counts (`connectedClients`, the `connected` statistic) is counted out once and reported gone
 * (`clientDisconnect`) once, whatever order the closes of one ClientId's connections end in; the newest connection is
 * the one registered under the ClientId, and no other stays open; a connection whose ClientId's session went on in a
 * newer one arms none of that session's timers as it closes. aedes 2.0.0-beta.1 gets these wrong where connections of
 * one ClientId overlap, because its close of a connection, which ends a turn of the event loop after it began (the
 * unsubscribes; a Redis round trip, clustered), looks at whichever connection the ClientId is registered to *then*:
 *
 * - A connection registered while the old one was still closing (its socket dropped, as a device's does when it
 *   reconnects at once): aedes' `registerClient` finds the old one `closed` and registers the new one at once. The old
 *   close then unregistered the new connection, or, when the new one had already left, found nothing registered and
 *   neither counted the old one out nor reported it gone (online for good). Here the old connection is counted out and
 *   reported gone when the new one is registered; its close then leaves the registration alone.
 * - A third CONNECT while a takeover waits for the old connection's close: aedes registered the third at once (the old
 *   one was `closed` by then), then the second over it when the old close ended; the third stayed open, unregistered
 *   (two live connections of one ClientId). Here the third takes the waiting one's place, which it takes over
 *   (DISCONNECT 0x8E over MQTT 5, MQTT-3.1.4-3): the waiting one is never registered.
 * - A connection whose takeover waits and that closes before the old close ends: its close counted it out and
 *   reported it gone, never counted nor reported connected, and aedes registered it, closed, once the old close ended:
 *   counted and online for good. Here it is never registered, and its session's expiry and delayed will, which
 *   aedes' takeover mark kept its close from arming, are armed when the wait ends.
 * - Clustered, a second takeover notice from another broker while a connection closes (`closeSameClients` calls
 *   `deleteClient` itself): the connection is reported gone too, and its close counts it out no second time.
 * - A connection whose socket closes after its login and before aedes registers it (aedes asks the session store in
 *   between: Redis round trips, clustered): aedes went on with its CONNECT and registered it, closed (its close had
 *   found nothing registered to unregister): counted and online until its ClientId connected again, over the live
 *   connection it took over. Here it is not registered, and takes nothing over (nor is it counted by the cluster, nor
 *   told of to the other brokers: aedes-adapter.ts `onAccepted` skips it).
 * - Clustered, another broker's takeover notice while a takeover waits here: aedes registered the waiting connection
 *   once the old close ended, whether it had closed meanwhile (registered closed: counted and online for good) or not
 *   (it then announced itself, closing the newer connection at that broker). Here it is taken over too, never
 *   registered, and arms none of the session's timers (the session went on at that broker).
 *
 * `clientDisconnect` comes once for each connection *registered*: a connection's own state goes with its socket's
 * close (`onAnsweredConnectionEnd`), as one answered and never registered has no `clientDisconnect`.
 */
export function registerEachConnectionOnce(broker: Aedes): void {
  const inner = broker as unknown as RegistryInternals;
  const { registerClient, _finishRegisterClient: finishRegister, unregisterClient, scheduleSessionExpiry, scheduleWill } = inner;
  /** Connections counted in `connectedClients` (registered) and not yet counted out. */
  const counted = new WeakSet<Client>();
  /** Connections whose ClientId's session went on in a newer connection (or another broker). */
  const superseded = new WeakSet<Client>();
  /** By ClientId, the connection a takeover registers once the close of the one registered now ends. */
  const waiting = new Map<string, Client>();
  /** Waiting connections aedes' own takeover calls back for (registered over a connection not yet closing). */
  const ownTakeover = new WeakSet<Client>();
  /** The delayed will (its `scheduleWill` arguments) a waiting connection's close would have armed. */
  const willOfWaiting = new WeakMap<Client, readonly [unknown, number]>();
  /** Waiting connections whose own close ended first, with that will. */
  const gone = new WeakMap<Client, readonly [unknown, number] | undefined>();
  /** The connection aedes' `unregisterClient` is unregistering now (aedes' `deleteClient` takes only its ClientId). */
  let leaving: Client | undefined;

  /** Does this connection's close decide its session's timers (no newer connection holds the session)? */
  const ownsSession = (self: RegistryInternals, client: Client): boolean => {
    if (superseded.has(client)) return false;
    const held = self.clients[client.id];
    return held === undefined || held === client;
  };

  /** Take the connection waiting to be registered under `clientId`, if any, over (told why over MQTT 5). */
  const takeOverWaiting = (clientId: string): void => {
    const queued = waiting.get(clientId);
    if (queued === undefined) return;
    waiting.delete(clientId);
    superseded.add(queued);
    queued.disconnect({ reasonCode: SESSION_TAKEN_OVER }, () => undefined);
  };

  inner.mq.on('$SYS/+/new/clients', (packet, done) => {
    if (packet.topic.split('/')[1] !== inner.id) takeOverWaiting(packet.payload.toString());
    done();
  });

  inner.registerClient = function (this: RegistryInternals, client: Client): void {
    // Closed after its login, while aedes asked the session store (Redis round trips, clustered): nothing to register.
    if (client.closed) return;
    if (waiting.has(client.id)) {
      // aedes' takeover under way calls back for the waiting one: the newer connection is registered in its place.
      takeOverWaiting(client.id);
      waiting.set(client.id, client);
      return;
    }
    // aedes registers at once when nothing is registered or the held connection is closing, else once it has closed.
    if (this.clients[client.id] !== undefined) {
      waiting.set(client.id, client);
      ownTakeover.add(client);
    }
    registerClient.call(this, client);
  };

  inner._finishRegisterClient = function (this: RegistryInternals, client: Client): void {
    const queued = waiting.get(client.id);
    // Taken over by another broker while it waited, and a newer connection here waits on a takeover of its own.
    if (superseded.has(client) && queued !== undefined && queued !== client && ownTakeover.has(queued)) return;
    const next = queued ?? client;
    waiting.delete(client.id);
    if (superseded.has(next)) {
      // Taken over by another broker while it waited: the session went on there.
      this._takingOver.delete(next.id);
      return;
    }
    if (gone.has(next)) {
      // Its close decides its session's timers now, as if it had been registered and had closed (aedes' takeover
      // mark kept it from deciding while the old connection was registered).
      this._takingOver.delete(next.id);
      this.scheduleSessionExpiry(next);
      const will = gone.get(next);
      if (will !== undefined) this.scheduleWill(next, ...will);
      return;
    }
    const held = this.clients[next.id];
    // Registered over only once its close has begun (a live one is taken over first): its close ends after this.
    if (held !== undefined && held !== next && counted.has(held)) {
      superseded.add(held);
      this.unregisterClient(held);
    }
    // Counted before aedes emits 'client': a listener may close it at once.
    counted.add(next);
    finishRegister.call(this, next);
  };

  inner.unregisterClient = function (this: RegistryInternals, client: Client): void {
    if (!counted.has(client)) {
      // Counted out already (superseded), or never registered: a waiting connection's close, or a CONNECT refused
      // after it authenticated, while another connection of its ClientId is registered.
      if (waiting.get(client.id) === client) gone.set(client, willOfWaiting.get(client));
      return;
    }
    const previous = leaving;
    leaving = client;
    try {
      unregisterClient.call(this, client);
    } finally {
      leaving = previous;
    }
  };

  inner.deleteClient = function (this: RegistryInternals, clientId: string): void {
    if (leaving === undefined) {
      // Called by aedes itself, clustered: another broker took over a connection whose close has begun.
      const held = this.clients[clientId];
      if (held === undefined || !counted.has(held)) return;
      superseded.add(held);
      this.unregisterClient(held);
      return;
    }
    counted.delete(leaving);
    this.connectedClients--;
    if (this.clients[clientId] === leaving) Reflect.deleteProperty(this.clients, clientId);
  };

  inner.scheduleSessionExpiry = function (this: RegistryInternals, client: Client): void {
    if (ownsSession(this, client)) scheduleSessionExpiry.call(this, client);
  };
  inner.scheduleWill = function (this: RegistryInternals, client: Client, will: unknown, delaySeconds: number): void {
    if (waiting.get(client.id) === client) willOfWaiting.set(client, [will, delaySeconds]);
    else if (ownsSession(this, client)) scheduleWill.call(this, client, will, delaySeconds);
  };
}
