/**
 * `GET /_emulator/queue?clientId=<id>`: what one persistent session holds at the broker now (its bounded queue,
 * session-queues.ts): the count and bytes, and the messages oldest first, so that a test or a game day can tell a
 * message still queued for a client (paced, `offlineDelivery: 'paced'`) from one that is gone. The list stops before
 * its answer passes {@link MAX_QUEUE_VIEW_BYTES} (`truncated: true`), so a huge queue cannot blow up the emulator's
 * memory: each entry is built and measured in turn, and nothing past the cap is read (clustered, the queue is read
 * from Redis page by page). `count=1` answers the counts alone; `payloadBytes=N` keeps each payload's first N bytes.
 * The answer also says how the broker delivers a resumed session's queue (`offline`), so the caller knows whether
 * its messages may still be on their way.
 */
import { ApiFault } from './api-errors.js';
import type { ResolvedEmulatorOptions } from './options.js';
import { storedBytes, type StoredPacket } from './session-queues.js';

/** The most bytes of JSON one answer's list takes: past it the list stops and says `truncated`. */
export const MAX_QUEUE_VIEW_BYTES = 16 * 1024 * 1024;

/** What the answer holds besides its list, at most (its counts, the `offline` settings): kept out of the list's share. */
const ENVELOPE_BYTES = 4_096;

/** A session's totals: messages held and their bytes (topics and payloads), as the bound counts them. */
export interface QueueTotals {
  readonly messages: number;
  readonly bytes: number;
}

/**
 * Walk a session's messages oldest first while `take` says go on (true), and return its totals. In memory
 * (session-queues.ts) or in a cluster's Redis (cluster/redis-queues.ts, page by page).
 */
export type PeekQueue = (clientId: string, take: (packet: StoredPacket) => boolean) => QueueTotals | Promise<QueueTotals>;

/** What a request asks. */
export interface QueueQuery {
  readonly clientId: string;
  /** The counts only, no list. */
  readonly countOnly: boolean;
  /** Keep each payload's first N bytes; `undefined`: whole. */
  readonly payloadBytes: number | undefined;
}

/** One message of the list. */
export interface QueuedMessageView {
  /** `null` for a PUBREL standing for a QoS 2 message (it holds no topic). */
  readonly topic: string | null;
  readonly qos: number;
  /** Its topic and payload, as the bound counts them. */
  readonly bytes: number;
  /** Sent to the client and awaiting its acknowledgement (it has a packet identifier); else not sent yet. */
  readonly sent: boolean;
  /** The payload (its first `payloadBytes`), base64. */
  readonly payload: string;
  /** `pubrel` for a QoS 2 message whose PUBREL is held; absent for a PUBLISH. */
  readonly cmd?: string;
}

/** How the broker delivers a resumed persistent session's queue, and what it bounds. */
export interface OfflineDeliveryView {
  readonly delivery: 'paced' | 'immediate';
  /** `paced`: ms from the reconnect to the first batch, messages per batch, ms between batches. */
  readonly detectionDelayMs: { readonly min: number; readonly max: number };
  readonly batchSize: number;
  readonly batchIntervalMs: number;
  /** The bound per session; `null`: none. */
  readonly maxMessages: number | null;
  readonly maxBytes: number | null;
  readonly policy: 'drop-oldest' | 'refuse-new';
}

/** The answer. */
export interface QueueView {
  readonly clientId: string;
  /** Messages the session holds (queued, or sent and not acknowledged). */
  readonly count: number;
  readonly bytes: number;
  /** Oldest first; absent with `count=1`. */
  readonly messages?: QueuedMessageView[];
  /** The list stopped at {@link MAX_QUEUE_VIEW_BYTES}: it holds fewer than `count`. */
  readonly truncated: boolean;
  readonly offline: OfflineDeliveryView;
}

const MAX_CLIENT_ID_CHARS = 1_024;

function badQuery(why: string): ApiFault {
  return new ApiFault('ParameterCheckFailed', { suffix: `${why}: GET /_emulator/queue?clientId=<ClientId>, with count=1 for the counts alone, payloadBytes=N for each payload's first N bytes.` });
}

/** @throws ApiFault `ParameterCheckFailed` when the query string asks for something else. */
export function parseQueueQuery(params: URLSearchParams): QueueQuery {
  const clientId = params.get('clientId') ?? '';
  if (clientId === '' || clientId.length > MAX_CLIENT_ID_CHARS) throw badQuery('clientId is missing or too long');
  const count = params.get('count');
  if (count !== null && !['0', '1', 'true', 'false'].includes(count)) throw badQuery(`count=${count.slice(0, 20)} is not 1 or 0`);
  const bytes = params.get('payloadBytes');
  if (bytes !== null && !/^\d{1,9}$/.test(bytes)) throw badQuery(`payloadBytes=${bytes.slice(0, 20)} is not a whole number`);
  return { clientId, countOnly: count === '1' || count === 'true', payloadBytes: bytes === null ? undefined : Number(bytes) };
}

/** The emulator's offline delivery and bounds, as the answer says them. */
export function offlineDeliveryOf(options: ResolvedEmulatorOptions): OfflineDeliveryView {
  const bound = (n: number): number | null => (Number.isFinite(n) ? n : null);
  return {
    delivery: options.offlineDelivery,
    detectionDelayMs: { ...options.offlineDetectionDelayMs },
    batchSize: options.offlineBatchSize,
    batchIntervalMs: options.offlineBatchIntervalMs,
    maxMessages: bound(options.maxOfflineMessages),
    maxBytes: bound(options.maxOfflineBytes),
    policy: options.offlineQueuePolicy,
  };
}

function payloadOf(packet: StoredPacket, limit: number | undefined): Buffer {
  const payload = packet.payload;
  const whole = payload === undefined ? Buffer.alloc(0) : typeof payload === 'string' ? Buffer.from(payload) : Buffer.isBuffer(payload) ? payload : Buffer.from(payload as Uint8Array);
  return limit === undefined || whole.length <= limit ? whole : whole.subarray(0, limit);
}

/** One entry of the list. */
export function messageView(packet: StoredPacket, payloadBytes: number | undefined): QueuedMessageView {
  const publish = packet.cmd === undefined || packet.cmd === 'publish';
  return {
    topic: typeof packet.topic === 'string' ? packet.topic : null,
    qos: packet.qos ?? 0,
    bytes: storedBytes(packet),
    sent: packet.messageId !== undefined && packet.messageId !== null,
    payload: payloadOf(packet, payloadBytes).toString('base64'),
    ...(publish ? {} : { cmd: String(packet.cmd) }),
  };
}

/**
 * Answer a query from a session's queue: its totals, and (unless `countOnly`) its messages while they fit in
 * `maxBytes` of JSON. Each entry is measured as it is made; the walk stops at the first that does not fit.
 */
export async function viewQueue(peek: PeekQueue, query: QueueQuery, offline: OfflineDeliveryView, maxBytes = MAX_QUEUE_VIEW_BYTES): Promise<QueueView> {
  const messages: QueuedMessageView[] = [];
  let used = ENVELOPE_BYTES + Buffer.byteLength(query.clientId);
  let truncated = false;
  const totals = await peek(query.clientId, (packet) => {
    if (query.countOnly) return false;
    const entry = messageView(packet, query.payloadBytes);
    // Its JSON, and the comma before it.
    const size = Buffer.byteLength(JSON.stringify(entry)) + 1;
    if (used + size > maxBytes) {
      truncated = true;
      return false;
    }
    used += size;
    messages.push(entry);
    return true;
  });
  return {
    clientId: query.clientId,
    count: totals.messages,
    bytes: totals.bytes,
    ...(query.countOnly ? {} : { messages }),
    truncated,
    offline,
  };
}
