/**
 * Guards fitted to every aedes client as it is created, so that one hostile or slow client cannot take the broker
 * down or hold up the others: a bound on what a slow subscriber may hold, and on the QoS 2 messages a client never
 * releases. They reach aedes only through aedes-adapter.ts and aedes-session-queues.ts; test/integration/emulator-hostile.test.ts checks each.
 */
import type { Duplex } from 'node:stream';
import type { Aedes, Client } from 'aedes';
import { endConnection, fitClient, onAnsweredConnectionEnd, type Deliver, type PacketRefusal, type ParsedPacket } from './aedes-adapter.js';
import { boundSessionQueues, keepQueueOrder, type Holding, type OutgoingQueues } from './aedes-session-queues.js';
import { writeRefusal, type BrokerContext } from './broker-wire.js';
import { REASON, type Refusal } from './mqtt-rules.js';
import type { QueueLimits, QueueOverflow, RedeliveryPace } from './session-queues.js';
import type { PeekQueue } from './queue-view.js';
import type { QueueStats } from './stats.js';

/** What {@link guardClient} reports to. */
interface GuardHandlers {
  /** The client could not keep up: it is given, already cut off, with the bytes it held. */
  readonly onSlow: (client: Client, queuedBytes: number) => void;
  /** The adapter kept a packet from aedes (see aedes-adapter.ts {@link fitClient}): the client is to be answered and closed. */
  readonly onRefused: (client: Client, refusal: PacketRefusal, stage: 'connect' | 'session' | 'close', protocolVersion: number) => void;
  /** The QoS 2 messages a client sent and never released (PUBREL) hold more than `maxQueuedBytes`. */
  readonly onUnreleased: (client: Client, bytes: number) => void;
}

/**
 * Fit a new client (before it subscribes to anything: aedes picks the delivery function at subscription time) with
 * the adapter's own repairs (aedes-adapter.ts {@link fitClient}) and:
 * - a bound on the QoS 2 messages a client sends and never releases: aedes stores each one until its PUBREL, under
 *   the ClientId, for good (aedes 1.2.0 caps their number; this beta does not);
 * - deliveries that never hold up the broker. aedes' delivery functions call back only once the client's socket
 *   has taken the packet, and its message bus (mqemitter) lets only 100 deliveries be in flight at once: a single
 *   subscriber that stops reading held every other client's messages back until the drain timeout, while the
 *   messages piled up in memory. Here the bus is called back at once, and a client whose outgoing buffer holds
 *   more than `maxQueuedBytes` is disconnected instead of being written to;
 * - a resuming session's live messages held behind its queue (aedes-session-queues.ts {@link keepQueueOrder}), before
 *   the bound above counts them.
 */
function guardClient(client: Client, maxQueuedBytes: number, handlers: GuardHandlers): void {
  const { onSlow, onRefused, onUnreleased } = handlers;
  // Inbound QoS 2 messages awaiting their PUBREL: bytes by packet id.
  const unreleased = new Map<number, number>();
  let unreleasedBytes = 0;
  let overflowed = false;
  const inspect = (packet: ParsedPacket): void => {
    if (packet.cmd === 'publish' && packet.qos === 2 && packet.messageId !== undefined) {
      const bytes = (packet.payload?.length ?? 0) + (packet.topic?.length ?? 0) + PUBLISH_OVERHEAD;
      unreleasedBytes += bytes - (unreleased.get(packet.messageId) ?? 0);
      unreleased.set(packet.messageId, bytes);
      if (unreleasedBytes > maxQueuedBytes && !overflowed) {
        overflowed = true;
        onUnreleased(client, unreleasedBytes);
      }
    } else if (packet.cmd === 'pubrel' && packet.messageId !== undefined) {
      unreleasedBytes -= unreleased.get(packet.messageId) ?? 0;
      unreleased.delete(packet.messageId);
    }
  };
  let cut = false;
  // Bytes handed to aedes that it has not written yet: it writes on the next turn of the event loop.
  let handedOver = 0;
  // Bytes of live messages held behind a resuming session's queue (aedes-session-queues.ts keepQueueOrder).
  let held = 0;
  const sizeOf = (packet: Parameters<Deliver>[0]): number => (packet.payload?.length ?? 0) + (packet.topic?.length ?? 0) + PUBLISH_OVERHEAD;
  /** Does one more message of `size` fit in what may wait for this client? If not, it is cut off as a slow consumer. */
  const fits = (size: number): boolean => {
    if (cut) return false;
    const queued = client.conn.writableLength + handedOver + held + size;
    if (queued <= maxQueuedBytes) return true;
    cut = true;
    client.conn.destroy();
    onSlow(client, queued);
    return false;
  };
  // `done` is always called back on a later turn, never synchronously: a synchronous callback lets mqemitter drain
  // its queue recursively, which is how aedes ran out of stack.
  const bounded = (deliver: Deliver): Deliver => (packet, done) => {
    const size = sizeOf(packet);
    if (!fits(size)) {
      setImmediate(done);
      return;
    }
    handedOver += size;
    deliver(packet, noop);
    // One callback per delivery. It runs after aedes' own setImmediate for it, which has written the packet by then
    // (a QoS > 0 delivery to a persistent session is written once its persistence answers: there the count is
    // released a little early, and the bound is approximate).
    setImmediate(() => {
      handedOver -= size;
      done();
    });
  };
  const holding: Holding = {
    hold: (packet) => {
      const size = sizeOf(packet);
      if (!fits(size)) return false;
      held += size;
      return true;
    },
    release: (packet) => {
      held -= sizeOf(packet);
    },
  };
  fitClient(client, { inspect, onRefused: (refusal, stage, version) => onRefused(client, refusal, stage, version), wrapDelivery: (deliver) => keepQueueOrder(client, bounded(deliver), holding) });
}

function noop(): void {}

/** The cloud's pace of offline messages (options `offlineDelivery` and the three below it), or none for `immediate`. */
function redeliveryPace(options: BrokerContext['options']): RedeliveryPace | undefined {
  if (options.offlineDelivery === 'immediate') return undefined;
  const { min, max } = options.offlineDetectionDelayMs;
  return {
    delayMs: () => min + Math.floor(options.random() * (max - min + 1)),
    batchSize: options.offlineBatchSize,
    intervalMs: options.offlineBatchIntervalMs,
    timers: options.offlineTimers,
  };
}

/** A PUBLISH's bytes besides its topic and payload: fixed header, lengths, packet id (MQTT 5 properties aside). */
const PUBLISH_OVERHEAD = 9;

/**
 * The guards of one broker: every connection is handed to aedes through {@link BrokerGuards.handle}, which fits its
 * client; what a guard refuses is reported as a rule (and an MQTT 5 client told why).
 */
export class BrokerGuards {
  readonly #context: BrokerContext;
  readonly #createQueues: ((limits: QueueLimits, onOverflow: QueueOverflow) => OutgoingQueues) | undefined;
  #broker: Aedes | undefined;
  #queues: OutgoingQueues | undefined;

  /** @param createQueues - where the persistent sessions' queues are kept (a cluster's Redis); default in memory. */
  constructor(context: BrokerContext, createQueues?: (limits: QueueLimits, onOverflow: QueueOverflow) => OutgoingQueues) {
    this.#context = context;
    this.#createQueues = createQueues;
  }

  /**
   * A clean session's state ends with its connection (MQTT 3.1.1 §3.1.2.4, MQTT 5 §4.1): aedes keeps the QoS 2
   * messages it stored for their PUBREL for good, where they take memory and make the next session's QoS 2 message
   * with the same packet id look like a duplicate, dropped. They go with the session here, when the connection ends,
   * registered or not (a connection whose takeover waits may publish, and close unregistered), and so does one aedes
   * stores only after that (a PUBLISH read just before the close): {@link endConnection}, aedes-incoming-qos2.ts,
   * where a clean session's are its connection's own, and any other session's are the session's.
   */
  install(broker: Aedes): void {
    this.#broker = broker;
    this.#queues = this.#boundQueues(broker);
    onAnsweredConnectionEnd(broker, endConnection);
  }

  /** What the persistent sessions hold now. */
  queueStats(): QueueStats {
    return this.#queues?.stats() ?? { sessions: 0, messages: 0, bytes: 0, largestMessages: 0, largestBytes: 0 };
  }

  /** One session's messages, oldest first, while `take` says go on; its totals (queue-view.ts). */
  readonly peekQueue: PeekQueue = (clientId, take) => this.#queues?.peek(clientId, take) ?? { messages: 0, bytes: 0 };

  /**
   * The bound on what each persistent session holds (session-queues.ts). Every message that does not fit is counted
   * under `offlineQueue`; the log says so for a session's 1st, 10th, 100th... one, not for each of a flood's.
   */
  #boundQueues(broker: Aedes): OutgoingQueues {
    const { options, stats, report } = this.#context;
    const overflows = new Map<string, number>();
    return boundSessionQueues(broker, { maxMessages: options.maxOfflineMessages, maxBytes: options.maxOfflineBytes, policy: options.offlineQueuePolicy }, (clientId, outcome, held) => {
      const count = (overflows.get(clientId) ?? 0) + 1;
      overflows.set(clientId, count);
      if (!Number.isInteger(Math.log10(count))) {
        stats.recordRule('offlineQueue');
        return;
      }
      const what = outcome === 'dropped' ? 'its oldest message not yet sent was dropped for a new one' : 'a new message was refused';
      report({ rule: 'offlineQueue', action: 'drop', reasonCode: 0, reason: `a persistent session holding ${held.messages} messages, ${held.bytes} bytes (bound ${options.maxOfflineMessages} messages, ${options.maxOfflineBytes} bytes, policy ${options.offlineQueuePolicy}): ${what}; ${count} so far` }, clientId);
    }, redeliveryPace(options), this.#createQueues);
  }

  /** Hand one connection (a socket, or a WebSocket's stream with its upgrade request) to aedes, guarded. */
  readonly handle = (conn: Duplex, req?: Parameters<Aedes['handle']>[1]): void => {
    if (!this.#broker) throw new Error('Emulator bug: BrokerGuards.handle() before install()');
    const client = this.#broker.handle(conn, req);
    const { options, report, disconnectFor } = this.#context;
    guardClient(client, options.maxQueuedBytes, {
      onSlow: (slow, queued) => {
        report({ rule: 'slowConsumer', action: 'disconnect', reasonCode: 0, reason: `${queued} bytes waiting to be read, over the limit of ${options.maxQueuedBytes}` }, slow.id ?? undefined);
      },
      onRefused: (refused, { rule, reasonCode, returnCode, reason }, stage, version) => {
        const refusal: Refusal = { rule, action: 'disconnect', reasonCode, reason };
        report(refusal, refused.id ?? undefined);
        if (stage === 'connect') {
          // aedes did not answer this CONNECT: the CONNACK is ours to count and write, and the client was never registered.
          this.#context.stats.recordConnack(version === 5 ? reasonCode : returnCode ?? 0);
          writeRefusal(refused.conn, version, { returnCode: returnCode ?? 0, reasonCode, message: reason }, options.drainTimeoutMs, () => refused.close());
        } else if (stage === 'session') {
          disconnectFor(refused, refusal, () => refused.conn.destroy());
        } else {
          refused.conn.destroy();
        }
      },
      onUnreleased: (holding, bytes) => {
        const refusal: Refusal = { rule: 'qos2Unreleased', action: 'disconnect', reasonCode: REASON.QUOTA_EXCEEDED, reason: `QoS 2 messages never released (no PUBREL) holding ${bytes} bytes, over the limit of ${options.maxQueuedBytes}` };
        report(refusal, holding.id ?? undefined);
        disconnectFor(holding, refusal, () => holding.conn.destroy());
      },
    });
  };
}
