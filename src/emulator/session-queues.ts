/**
 * The QoS 1/2 messages each persistent session holds for its client: queued while it is offline, or sent and not yet
 * acknowledged. aedes keeps them in its session store's "outgoing" queues, without a bound (241,037 queued 10 KB
 * messages took the emulator to 2.9 GB in 12 s). This is that queue with a bound per session, in messages and bytes:
 * past it the oldest message not yet sent is dropped, or the new one refused (`offlineQueuePolicy`). The semantics of
 * the store's operations are aedes-persistence 10's (its memory store), which aedes-session-queues.ts replaces with these.
 */
import type { QueueStats } from './stats.js';

/** A packet as aedes hands it to its session store (an aedes-packet `Packet`, or a PUBREL standing for a QoS 2 one). */
export interface StoredPacket {
  cmd?: string | undefined;
  topic?: string | undefined;
  payload?: { readonly length: number } | string | undefined;
  qos?: number | undefined;
  messageId?: number | undefined;
  brokerId?: string | undefined;
  brokerCounter?: number | undefined;
  [field: string]: unknown;
}

/** What a session may hold, and what happens past it. */
export interface QueueLimits {
  readonly maxMessages: number;
  readonly maxBytes: number;
  readonly policy: 'drop-oldest' | 'refuse-new';
}

/**
 * The pace at which a reconnecting session gets what its queue held at the reconnect (reference §5.7: offline
 * messages are detected 5 to 10 s after the reconnect and re-delivered in batches of 30 every 5 s).
 */
export interface RedeliveryPace {
  /** ms from the reconnect to the first batch (drawn anew for each reconnect). */
  readonly delayMs: () => number;
  readonly batchSize: number;
  /** ms from one batch to the next. */
  readonly intervalMs: number;
  readonly timers: { setTimeout(callback: () => void, ms: number): unknown; clearTimeout(handle: unknown): void };
}

/** Told of every message that did not fit: `dropped` (the oldest, for a new one) or `refused` (the new one). */
export type QueueOverflow = (clientId: string, outcome: 'dropped' | 'refused', queued: { readonly messages: number; readonly bytes: number }) => void;

interface Queue {
  readonly items: StoredPacket[];
  bytes: number;
}

/** A message's bytes as the bound counts them: its topic and payload (a PUBREL holds none). */
export function storedBytes(packet: StoredPacket): number {
  if (packet.cmd !== undefined && packet.cmd !== 'publish') return 0;
  const payload = packet.payload === undefined ? 0 : typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length;
  return payload + (packet.topic === undefined ? 0 : Buffer.byteLength(packet.topic));
}

/**
 * A copy of a packet for the store, as aedes-packet's `Packet` copies one: the fields a delivery needs, the packet
 * identifier cleared (the session gives it one when it sends it).
 */
export function stored(packet: StoredPacket): StoredPacket {
  const copy: StoredPacket = {
    cmd: packet.cmd ?? 'publish',
    brokerId: packet.brokerId,
    brokerCounter: packet.brokerCounter,
    topic: packet.topic,
    payload: packet.payload ?? Buffer.alloc(0),
    qos: packet.qos ?? 0,
    retain: packet['retain'] ?? false,
    dup: packet['dup'] ?? false,
  };
  for (const field of ['clientId', 'nl', 'properties', 'messageExpiry'] as const) if (Object.hasOwn(packet, field)) copy[field] = packet[field];
  if ((copy.qos ?? 0) > 0 || copy.cmd !== 'publish') copy.messageId = undefined;
  return copy;
}

/** The bounded queues of every persistent session of one session store. */
export class SessionQueues {
  readonly #queues = new Map<string, Queue>();
  #limits: QueueLimits;
  #onOverflow: QueueOverflow;

  constructor(limits: QueueLimits, onOverflow: QueueOverflow) {
    this.#limits = limits;
    this.#onOverflow = onOverflow;
  }

  /** A restarted broker reuses the store: its limits and its reporting take over. */
  configure(limits: QueueLimits, onOverflow: QueueOverflow): void {
    this.#limits = limits;
    this.#onOverflow = onOverflow;
  }

  /** Queue a message for a session, within its bound. */
  enqueue(clientId: string, packet: StoredPacket): void {
    const { maxMessages, maxBytes, policy } = this.#limits;
    const bytes = storedBytes(packet);
    const queue = this.#queues.get(clientId) ?? { items: [], bytes: 0 };
    const fits = (): boolean => queue.items.length < maxMessages && queue.bytes + bytes <= maxBytes;
    if (!fits() && policy === 'drop-oldest') {
      // Only a message not sent yet: one in flight is the client's to acknowledge, and aedes' to resend.
      for (let i = 0; i < queue.items.length && !fits();) {
        const item = queue.items[i] as StoredPacket;
        if (item.messageId !== undefined) {
          i++;
          continue;
        }
        queue.items.splice(i, 1);
        queue.bytes -= storedBytes(item);
        this.#onOverflow(clientId, 'dropped', { messages: queue.items.length, bytes: queue.bytes });
      }
    }
    if (!fits()) {
      this.#onOverflow(clientId, 'refused', { messages: queue.items.length, bytes: queue.bytes });
      return;
    }
    queue.items.push(stored(packet));
    queue.bytes += bytes;
    this.#queues.set(clientId, queue);
  }

  /**
   * A message is being sent: its stored copy takes the packet identifier (found by broker id and counter); or a PUBREL
   * replaces the QoS 2 message of its packet identifier. A message no longer held (dropped, or refused by the bound)
   * is left out: it is still sent this once, it is only not kept for sending again.
   */
  update(clientId: string, packet: StoredPacket): void {
    const queue = this.#queues.get(clientId);
    if (!queue) return;
    for (const [i, item] of queue.items.entries()) {
      if (item.brokerId === packet.brokerId) {
        if (item.brokerCounter === packet.brokerCounter) {
          item.messageId = packet.messageId;
          return;
        }
      } else if (item.messageId === packet.messageId) {
        queue.items[i] = packet;
        queue.bytes += storedBytes(packet) - storedBytes(item);
        return;
      }
    }
  }

  /**
   * Forget a message (acknowledged, dropped by aedes, or the session discarded), found by its packet identifier, or
   * by broker id and counter while it has none yet. Returns the stored copy.
   */
  clear(clientId: string, packet: StoredPacket): StoredPacket | undefined {
    const queue = this.#queues.get(clientId);
    if (!queue) return undefined;
    const unsent = packet.messageId === undefined && packet.brokerId !== undefined;
    const at = queue.items.findIndex((item) => (unsent ? item.brokerId === packet.brokerId && item.brokerCounter === packet.brokerCounter : item.messageId === packet.messageId));
    if (at < 0) return undefined;
    const [item] = queue.items.splice(at, 1) as [StoredPacket];
    queue.bytes -= storedBytes(item);
    if (queue.items.length === 0) this.#queues.delete(clientId);
    return item;
  }

  /**
   * Hand `push` the messages the session holds now, oldest first, batch by batch at `pace`, then call `end` (at once
   * when it holds none). A message that left the queue meanwhile (dropped for a newer one, or cleared) is skipped.
   * Returns the function that stops it (the client went away): neither `push` nor `end` is called after it, nor
   * once `gone` says so at a step.
   */
  redeliver(clientId: string, pace: RedeliveryPace, push: (packet: StoredPacket) => void, end: () => void, gone: () => boolean = () => false): () => void {
    const pending = this.list(clientId);
    if (pending.length === 0) {
      end();
      return () => undefined;
    }
    let timer: unknown;
    let stopped = false;
    const step = (): void => {
      timer = undefined;
      if (gone()) stopped = true;
      const held = new Set(this.#queues.get(clientId)?.items);
      for (let sent = 0; sent < pace.batchSize && pending.length > 0 && !stopped;) {
        const packet = pending.shift() as StoredPacket;
        if (!held.has(packet)) continue;
        push(packet);
        sent++;
      }
      if (stopped) return;
      if (pending.length === 0) end();
      else timer = pace.timers.setTimeout(step, pace.intervalMs);
    };
    timer = pace.timers.setTimeout(step, pace.delayMs());
    return () => {
      stopped = true;
      if (timer !== undefined) pace.timers.clearTimeout(timer);
      timer = undefined;
    };
  }

  /** The session's messages, oldest first (a copy of the list: the caller may clear as it goes). */
  list(clientId: string): StoredPacket[] {
    return [...(this.#queues.get(clientId)?.items ?? [])];
  }

  /** Walk the session's messages oldest first while `take` says go on; its totals (queue-view.ts). */
  peek(clientId: string, take: (packet: StoredPacket) => boolean): { messages: number; bytes: number } {
    const queue = this.#queues.get(clientId);
    if (!queue) return { messages: 0, bytes: 0 };
    for (const item of queue.items) if (!take(item)) break;
    return { messages: queue.items.length, bytes: queue.bytes };
  }

  stats(): QueueStats {
    let messages = 0;
    let bytes = 0;
    let largestMessages = 0;
    let largestBytes = 0;
    for (const queue of this.#queues.values()) {
      messages += queue.items.length;
      bytes += queue.bytes;
      largestMessages = Math.max(largestMessages, queue.items.length);
      largestBytes = Math.max(largestBytes, queue.bytes);
    }
    return { sessions: this.#queues.size, messages, bytes, largestMessages, largestBytes };
  }
}
