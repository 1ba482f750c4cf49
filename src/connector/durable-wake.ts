/**
 * The durable feeds' wake-up at the end of a turn (durable.ts): a feed asks once per turn, and every feed that asked
 * is woken by one microtask, in the order they asked. A group commit accepts the messages of thousands of a
 * gateway's devices at once, and `queueMicrotask` makes an async resource per call (about 1 µs per message in a
 * profile at 10,000 devices: BENCHMARKS.md, stop 35).
 */

/** What is woken: the feed, which wakes its connection (send what can go). */
export interface Wakeable {
  woken(): void;
}

let queued: Wakeable[] = [];

function wakeAll(): void {
  const feeds = queued;
  queued = [];
  let failure: { error: unknown } | undefined;
  for (const feed of feeds) {
    try {
      feed.woken();
    } catch (error) {
      // Every feed is woken all the same; the first error is thrown as its own microtask would have thrown it.
      failure ??= { error };
    }
  }
  if (failure) throw failure.error;
}

/** Wake `feed` at the end of this turn (its caller asks once per turn). */
export function wakeAtEndOfTurn(feed: Wakeable): void {
  if (queued.push(feed) === 1) queueMicrotask(wakeAll);
}
