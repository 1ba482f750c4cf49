/**
 * The QoS 2 messages a session received and has not had released yet (PUBLISH received, PUBREL not yet), kept by the
 * session: their packet ids, by ClientId, and which connections share in them. aedes 2.0.0-beta.1 keeps them in its
 * session store under the ClientId and the packet id, for any connection of the ClientId, and never discards them at
 * a Clean Start (MQTT-3.1.2-4); aedes-incoming-qos2.ts puts these in the store's place for every session that is the
 * store's (one that outlives its connection, or that was resumed). The semantics are the same for both kinds: this
 * in memory, cluster/redis-incoming.ts in a cluster's Redis.
 *
 * A session has a generation, set when a connection starts it: a connection that starts or resumes the session gets
 * a share (the generation), and may store, look up and delete the session's packet ids while the session has that
 * generation. A newer start (Clean Start, or a CONNECT answered Session Present 0) discards the session, its packet
 * ids with it, and every older connection's share: one of them still open (a takeover waits for its close; clustered,
 * it is at another process until that process hears of the new connection) can neither hand its packet ids to the new
 * session nor take the new session's away. So does aedes' discarding the session ({@link IncomingSessions.discard}: a
 * Clean Start's CONNECT, a session that ends or expires). A session that ends with its connection (no Session Expiry)
 * is discarded when the last connection sharing in it ends; one that outlives it is kept, for the connection that
 * resumes it, until aedes discards it.
 */

/** A connection's share in its ClientId's session: the session's generation when the connection joined it. */
export type Share = string;

/** The sessions' QoS 2 messages awaiting their PUBREL, in memory or in a cluster's Redis (whose answers come later). */
export interface IncomingSessions {
  /**
   * aedes discards `clientId`'s session (it forgets its subscriptions: the CONNECT of a Clean Start, before its CONNACK;
   * a session that ends with its connection, or expires): its packet ids go, with every connection's share in them.
   * Clustered, this is done in the command aedes' own check sends then (cluster/redis-broker.ts `ARRIVALS`): a clean
   * session's CONNECT, the most common, sends Redis nothing more.
   */
  discard(clientId: string): void;
  /**
   * A connection starts a new session of `clientId` whose packet ids are kept here (one that outlives the connection,
   * or resumes nothing): the one the ClientId had is discarded, with its packet ids and every connection's share in
   * it, and the connection gets its share. (A session that starts new and ends with its connection has them as the
   * connection's own, and nothing here.)
   */
  start(clientId: string): Share | Promise<Share>;
  /** A connection resumes `clientId`'s session (its CONNACK said Session Present 1): its share. */
  join(clientId: string): Share | Promise<Share>;
  /**
   * The connection holding `share` ended. `ends`: its session ends with it (no Session Expiry): the session is discarded
   * once no connection shares in it.
   */
  leave(clientId: string, share: Share, ends: boolean): void | Promise<void>;
  /** Store a packet id; `false`: the share is gone (a newer session started), nothing was stored. */
  store(clientId: string, share: Share, messageId: number): boolean | Promise<boolean>;
  /** Is the packet id stored? `undefined`: the share is gone. */
  has(clientId: string, share: Share, messageId: number): boolean | undefined | Promise<boolean | undefined>;
  /** Delete a packet id (none stored: nothing to do); `false`: the share is gone, nothing was deleted. */
  delete(clientId: string, share: Share, messageId: number): boolean | Promise<boolean>;
}

interface Session {
  readonly generation: Share;
  /** Connections sharing in it now. */
  connections: number;
  readonly messageIds: Set<number>;
}

/** Generations in this process (a restarted broker keeps its store, and the generations in it). */
let generations = 0;

/** The sessions of one session store, in memory. */
export class MemoryIncomingSessions implements IncomingSessions {
  readonly #sessions = new Map<string, Session>();

  discard(clientId: string): void {
    this.#sessions.delete(clientId);
  }

  start(clientId: string): Share {
    return this.#create(clientId, 1).generation;
  }

  join(clientId: string): Share {
    const session = this.#sessions.get(clientId) ?? this.#create(clientId, 0);
    session.connections++;
    return session.generation;
  }

  leave(clientId: string, share: Share, ends: boolean): void {
    const session = this.#of(clientId, share);
    if (!session) return;
    session.connections--;
    if (session.connections <= 0 && ends) this.#sessions.delete(clientId);
  }

  store(clientId: string, share: Share, messageId: number): boolean {
    const session = this.#of(clientId, share);
    session?.messageIds.add(messageId);
    return session !== undefined;
  }

  has(clientId: string, share: Share, messageId: number): boolean | undefined {
    return this.#of(clientId, share)?.messageIds.has(messageId);
  }

  delete(clientId: string, share: Share, messageId: number): boolean {
    const session = this.#of(clientId, share);
    session?.messageIds.delete(messageId);
    return session !== undefined;
  }

  #create(clientId: string, connections: number): Session {
    const session: Session = { generation: String(++generations), connections, messageIds: new Set() };
    this.#sessions.set(clientId, session);
    return session;
  }

  #of(clientId: string, share: Share): Session | undefined {
    const session = this.#sessions.get(clientId);
    return session?.generation === share ? session : undefined;
  }
}
