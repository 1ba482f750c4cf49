/**
 * A clustered emulator's takeovers across brokers, as aedes 2.0.0-beta.1 handles them and what it gets wrong: another
 * broker's `$SYS/<broker>/new/clients` notice. One of the aedes-* files, the only ones that reach for aedes' internals
 * (aedes-adapter.ts asserts the version they were checked against); used by cluster/cluster.ts.
 */
import type { Aedes, Client } from 'aedes';

/** What this module reaches of aedes 2.0.0-beta.1 (none of it is in its typings). */
interface TakeoverInternals {
  readonly id: string;
  readonly mq: { on(topic: string, listener: (packet: { topic: string; payload: Buffer }, done: () => void) => void): void };
  readonly clients: Record<string, Client | undefined>;
  readonly _takingOver: Set<string>;
  clearSessionExpiry(clientId: string): void;
  clearDelayedWill(clientId: string): void;
}

/**
 * Clustered: a ClientId that connected at another broker (its `$SYS/<broker>/new/clients` notice) is that broker's
 * session now, so this broker's timers of it stop: the expiry of its MQTT 5 session that ended here, and a delayed
 * will. And a connection of it still here, which aedes closes on that notice, arms neither as it closes (aedes does
 * the same for a takeover within one broker). aedes 2.0.0-beta.1 closes the connection and leaves the timers,
 * so when the old expiry ran out here it wiped the session from the shared store (its subscriptions and queued
 * messages) while the client was connected elsewhere.
 */
export function yieldMovedSessions(broker: Aedes): void {
  const internals = broker as unknown as TakeoverInternals;
  internals.mq.on('$SYS/+/new/clients', (packet, done) => {
    if (packet.topic.split('/')[1] !== internals.id) {
      const clientId = packet.payload.toString();
      internals.clearSessionExpiry(clientId);
      internals.clearDelayedWill(clientId);
      // Still registered here: aedes' own listener of the notice, which runs first, has begun to close it (an MQTT 5
      // one once its DISCONNECT 0x8E is written: tellTakenOver). The mark comes off once its socket has closed, after
      // aedes decided on the expiry (or skipped deciding: a second notice once its close has begun makes aedes forget
      // the client before that close is done).
      const held = internals.clients[clientId];
      if (held !== undefined && !internals._takingOver.has(clientId)) {
        internals._takingOver.add(clientId);
        const release = (): void => {
          if (internals.clients[clientId] === undefined) internals._takingOver.delete(clientId);
        };
        if (!held.conn.destroyed) held.conn.once('close', release);
        else {
          // Its socket closed first (the network): aedes' close of it is under way, and decides right after this event.
          const left = (client: Client): void => {
            if (client !== held) return;
            broker.off('clientDisconnect', left);
            queueMicrotask(release);
          };
          broker.on('clientDisconnect', left);
        }
      }
    }
    done();
  });
}

/** MQTT 5's DISCONNECT reason code Session taken over. */
const SESSION_TAKEN_OVER = 0x8e;

/**
 * Clustered: tell the connection of `clientId` held here that a CONNECT at another broker took its session over, as
 * aedes tells one taken over by a CONNECT at this broker. Called on that broker's `$SYS/<broker>/new/clients` notice,
 * before aedes' own listener of it. aedes 2.0.0-beta.1's listener calls the connection's `close`, which ends an MQTT 5
 * connection without a word, so a device could only suspect a takeover; a takeover within one broker
 * (`registerClient`) calls `disconnect` instead, which writes a DISCONNECT 0x8E (MQTT-3.1.4-3) to an MQTT 5 client,
 * waits for the write, then closes (an MQTT 3.1.1 connection it just closes). Here the connection's next close is
 * that disconnect; a close asked while it runs (a second notice, an error) ends with it instead of cutting the
 * DISCONNECT off. The rest is aedes' close, as before: the will, the session's expiry, the client's unregistering.
 */
export function tellTakenOver(broker: Aedes, clientId: string): void {
  const held = (broker as unknown as TakeoverInternals).clients[clientId];
  if (held === undefined || held.closed || Object.hasOwn(held, 'close')) return;
  /** aedes' own close (its prototype's), which the disconnect ends with. */
  const close = held.close;
  const waiting: (() => void)[] = [];
  let telling = false;
  const closed = (): void => {
    for (const done of waiting.splice(0)) done();
  };
  (held as { close: Client['close'] }).close = (done) => {
    if (done === closed) {
      // The disconnect's own close, once its DISCONNECT is written.
      Reflect.deleteProperty(held, 'close');
      close.call(held, closed);
      return;
    }
    if (typeof done === 'function') waiting.push(done);
    if (telling) return;
    telling = true;
    held.disconnect({ reasonCode: SESSION_TAKEN_OVER }, closed);
  };
}
