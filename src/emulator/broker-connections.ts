/**
 * The connections of one broker from their CONNECT on to their socket's close, whether aedes registered them or not,
 * and the one way the emulator drops them on its own initiative: `kickOnRevoke` (a credential revoked) and the
 * `disconnect(clientId)` control (a network cut). Looking a connection up among the registered ones (`clients[id]`)
 * misses two kinds: a takeover's new connection has its CONNACK while the old connection's close goes on, and aedes
 * registers it only once that close has ended; and a CONNECT whose login was decided is answered only after aedes
 * authenticated it (a turn of the event loop later) and asked the session store (Redis round trips, clustered).
 * Clustered, a CONNECT waits for the cluster's credentials before its login is decided: it is followed from then.
 */
import type { Client } from 'aedes';
import { sendDisconnect, type BrokerContext } from './broker-wire.js';
import { REASON } from './mqtt-rules.js';

/**
 * How a connection is dropped: `kick` (its credential was revoked) tells an MQTT 5 client why (DISCONNECT 0x87), lets
 * what was written to an MQTT 3.1.1 one go out, and waits for the CONNACK of one not answered yet (no DISCONNECT
 * before the CONNACK, MQTT-3.14.0-1); `cut` destroys the socket at once, as a network failure does: a CONNECT not
 * answered yet gets no CONNACK, and aedes goes no further with it (aedes-registrations.ts registers no closed one).
 */
type Drop = 'kick' | 'cut';

/**
 * Connections by a string (a ClientId, a key): the connection itself while it is the only one (no set allocated for
 * each connection), a set while several overlap; the entry removed with its last connection.
 */
class ConnectionIndex {
  readonly #entries = new Map<string, Client | Set<Client>>();

  add(key: string, client: Client): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) this.#entries.set(key, client);
    else if (entry instanceof Set) entry.add(client);
    else if (entry !== client) this.#entries.set(key, new Set([entry, client]));
  }

  delete(key: string, client: Client): void {
    const entry = this.#entries.get(key);
    if (entry === client || (entry instanceof Set && entry.delete(client) && entry.size === 0)) this.#entries.delete(key);
  }

  /** A copy: dropping a connection may end it (and so remove it) while the caller goes through them. */
  get(key: string): Client[] {
    const entry = this.#entries.get(key);
    if (entry === undefined) return [];
    return entry instanceof Set ? [...entry] : [entry];
  }
}

/** The connections of one broker, by ClientId and (with `kickOnRevoke`) by the DeviceAccessKeyId they logged in with. */
export class BrokerConnections {
  readonly #context: BrokerContext;
  readonly #byClientId = new ConnectionIndex();
  readonly #byKey = new ConnectionIndex();
  /** The ClientId and key each connection is followed under, until its socket closes. */
  readonly #followed = new WeakMap<Client, { clientId: string | undefined; keyId: string | undefined }>();
  /** Connections whose CONNACK aedes has written: a kick may speak to them. */
  readonly #answered = new WeakSet<Client>();
  /** Connections of a revoked key whose CONNACK was not written yet: kicked once it is. */
  readonly #kickWhenAnswered = new WeakSet<Client>();

  constructor(context: BrokerContext) {
    this.#context = context;
  }

  /** A CONNECT of `clientId` arrived on the connection (its login is to be decided): followed until its socket closes. */
  connecting(client: Client, clientId: string): void {
    if (client.conn.destroyed || this.#followed.has(client)) return;
    this.#followed.set(client, { clientId, keyId: undefined });
    this.#byClientId.add(clientId, client);
    client.conn.once('close', () => {
      const followed = this.#followed.get(client);
      if (followed?.clientId !== undefined) this.#byClientId.delete(followed.clientId, client);
      if (followed?.keyId !== undefined) this.#byKey.delete(followed.keyId, client);
      this.#followed.delete(client);
    });
  }

  /** The CONNECT is refused: its refusal is written and the connection closed; nothing drops it any more. */
  refused(client: Client): void {
    const followed = this.#followed.get(client);
    if (followed?.clientId === undefined) return;
    this.#byClientId.delete(followed.clientId, client);
    followed.clientId = undefined;
  }

  /** With `kickOnRevoke`: the CONNECT logged in with this DeviceAccessKeyId. */
  loggedIn(client: Client, keyId: string): void {
    const followed = this.#followed.get(client);
    if (!followed || client.conn.destroyed) return;
    followed.keyId = keyId;
    this.#byKey.add(keyId, client);
  }

  /** aedes wrote the connection's CONNACK (`connackSent`). */
  answered(client: Client): void {
    this.#answered.add(client);
    if (this.#kickWhenAnswered.has(client)) this.#drop(client, 'kick');
  }

  /** With `kickOnRevoke`: drop every connection that logged in with the revoked key (told why over MQTT 5). */
  revoked(keyId: string): void {
    this.#dropAll(this.#byKey.get(keyId), 'kick');
  }

  /**
   * Cut every connection of `clientId` at this broker as a network failure would: the registered one, one whose
   * takeover waits, one whose CONNECT is on its way (its login being decided, or decided and its CONNACK not yet
   * written), and one whose close has begun. True when one of them was connected or on its way (not closing already).
   */
  cut(clientId: string): boolean {
    return this.#dropAll(this.#byClientId.get(clientId), 'cut');
  }

  /** The one way connections are dropped; true when one of them was not closing already. */
  #dropAll(clients: readonly Client[], drop: Drop): boolean {
    let live = false;
    for (const client of clients) {
      if (!client.closed && !client.conn.destroyed) live = true;
      this.#drop(client, drop);
    }
    return live;
  }

  /**
   * Drop one connection ({@link Drop}). A kick of an MQTT 3.1.1 connection loses it as on a network cut once what was
   * written to it has gone out (a CONNACK just written; clustered, it is held corked until Redis counts the client),
   * or after `drainTimeoutMs` for a client that does not read.
   */
  #drop(client: Client, drop: Drop): void {
    const { conn } = client;
    if (conn.destroyed) return;
    if (drop === 'cut') {
      conn.destroy();
      return;
    }
    if (!this.#answered.has(client)) {
      this.#kickWhenAnswered.add(client);
      return;
    }
    const { drainTimeoutMs } = this.#context.options;
    if (client.version === 5) {
      sendDisconnect(client, REASON.NOT_AUTHORIZED, 'the credential was revoked', drainTimeoutMs, undefined, this.#context.maximumPacketSize.get(client));
    } else if (conn.writableLength === 0 && conn.writableCorked === 0) {
      conn.destroy();
    } else {
      const timer = setTimeout(() => conn.destroy(), drainTimeoutMs);
      timer.unref();
      conn.end(() => {
        clearTimeout(timer);
        conn.destroy();
      });
    }
  }
}
