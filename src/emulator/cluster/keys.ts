/**
 * The names a clustered emulator uses in its Redis database. One cluster per database: aedes-persistence-redis keeps
 * its own keys there without a prefix (`client:*`, `outgoing:*`, `retained`, `will:*`), and Redis' pub/sub channels
 * are shared by every database, so the message bus's channels carry the database number.
 */

/** Prefix of every key of the emulator's own. */
const NS = 'apsaramq-device:';

export const KEYS = Object.freeze({
  /** Stream: every change of the OpenAPI's state, in the order every process applies it (ledger.ts). */
  log: `${NS}log`,
  /** Hash: the instance id and account the cluster serves (one per database, kept across restarts). */
  identity: `${NS}identity`,
  /** String: the service options the live processes share (canonical JSON). */
  options: `${NS}options`,
  /** Sorted set: process id → last heartbeat (Redis' clock, ms). */
  processes: `${NS}processes`,
  /** Hash per process: its endpoints and pid, for whoever lists the cluster. */
  process: (id: string) => `${NS}process:${id}`,
  /** Hash per process: ClientId → connections open on that process now (QuerySession). */
  presence: (id: string) => `${NS}presence:${id}`,
  /** A SignatureNonce used within its window. */
  nonce: (nonce: string) => `${NS}nonce:${nonce}`,
  /** Hash per account (and per action with a limit of its own): the rate limit's bucket (`rateLimitMode: 'token-bucket'`). */
  bucket: (name: string) => `${NS}bucket:${name}`,
  /** List per account (and per action with a limit of its own): the times of the last second's calls (`sliding-window`). */
  window: (name: string) => `${NS}window:${name}`,
  /** Hash: the fault burst running (`Emulator.faultBurst`): its rate, codes and end on the checks' clock. */
  burst: `${NS}burst`,
  /** List per action: the faults `failNext` queued, each `<code>\t<calls left>`. */
  faults: (action: string) => `${NS}faults:${action}`,
  /** List per persistent session: its queued messages' ids, oldest first (redis-queues.ts). */
  queue: (clientId: string) => `${NS}q:${clientId}`,
  /** Hash per persistent session: the messages, their sizes and packet ids, and the totals. */
  queueItems: (clientId: string) => `${NS}qh:${clientId}`,
  /** Hash per session: the QoS 2 messages it received and has not had released, its generation (redis-incoming.ts). */
  incoming: (clientId: string) => `${NS}in:${clientId}`,
  /** Hash: messages and bytes held by every session together. */
  queueTotals: `${NS}qsum`,
  /** Sorted sets: ClientId → messages, and → bytes, of every session holding some. */
  queueMessages: `${NS}qn`,
  queueBytes: `${NS}qt`,
});

/** The prefix of the message bus's pub/sub channels for one database (channels ignore the database). */
export function channelPrefix(db: number): string {
  return `${NS}${db}:`;
}

/**
 * The channel of takeover notices for one database: the ClientIds that just connected to a process, which every other
 * process's broker disconnects (membership.ts publishes them, redis-broker.ts hears them).
 */
export function takeoverChannel(db: number): string {
  return `${channelPrefix(db)}takeover`;
}

/** A process is live while its last heartbeat is this recent (Redis' clock). */
export const LIVE_MS = 10_000;
/** How often a process beats. */
export const HEARTBEAT_MS = 2_000;
