/**
 * The backend subscriber's backlog without a broker: the ledger's `queued` and `maybeQueued`, the wait (on a manual
 * clock, a scripted queue and scripted arrivals) and what it marks, the warning before a game day, and the emulator's
 * view of a queue (its cap, measured on a queue far larger than it).
 */
import { describe, expect, it } from 'vitest';
import { offlineDeliveryOf, parseQueueQuery, viewQueue, MAX_QUEUE_VIEW_BYTES } from '../../src/emulator/queue-view.js';
import { resolveOptions } from '../../src/emulator/options.js';
import type { StoredPacket } from '../../src/emulator/session-queues.js';
import { type BacklogInput, QUEUE_READ_TIMEOUT_MS, type ReadQueue, backlogWarning, settleBacklog, waitForBacklog } from '../../src/simulator/backlog.js';
import { ManualClock } from '../../src/simulator/clock.js';
import type { QueueReadout } from '../../src/simulator/emulator-controls.js';
import { MessageLedger, PAYLOAD_ID_SIZE, stampPayload } from '../../src/simulator/ledger.js';

const PACED: QueueReadout['offline'] = { delivery: 'paced', detectionDelayMs: { min: 5_000, max: 10_000 }, batchSize: 30, batchIntervalMs: 5_000, maxMessages: 1_000, maxBytes: 8_388_608, policy: 'drop-oldest' };

/** A payload's identity as the queue lists it (base64 of its first 16 bytes). */
function listed(index: number, seq: number): { payload: string; sent: boolean } {
  const payload = Buffer.alloc(PAYLOAD_ID_SIZE);
  stampPayload(payload, 0, 0, index, seq);
  return { payload: payload.toString('base64'), sent: false };
}

/** Four acknowledged messages of device 0, none delivered. */
function fourSent(): MessageLedger {
  const ledger = new MessageLedger([0, 1], 1);
  for (let i = 0; i < 4; i++) ledger.acked(0, ledger.accept(0));
  return ledger;
}

/** The arrivals a test plays: `deliver` stands for the subscriber receiving a message. */
function arrivals(ledger: MessageLedger): { onArrival: BacklogInput['onArrival']; deliver: (index: number, seq: number) => void; listeners: () => number } {
  const listeners = new Set<() => void>();
  return {
    onArrival: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    deliver: (index, seq) => {
      ledger.delivered(index, seq);
      for (const listener of listeners) listener();
    },
    listeners: () => listeners.size,
  };
}

/** A queue whose reads the test answers one by one. */
function scriptedQueue(): { read: ReadQueue; calls: Array<Parameters<ReadQueue>[0]>; answer: (view: Partial<QueueReadout> | Error) => Promise<void> } {
  const calls: Array<Parameters<ReadQueue>[0]> = [];
  const pending: Array<{ resolve: (v: QueueReadout) => void; reject: (e: Error) => void }> = [];
  return {
    calls,
    read: (options) => {
      calls.push(options);
      return new Promise((resolve, reject) => pending.push({ resolve, reject }));
    },
    answer: async (view) => {
      const next = pending.shift();
      if (!next) throw new Error('no read pending');
      if (view instanceof Error) next.reject(view);
      else next.resolve({ count: 0, truncated: false, offline: PACED, ...view });
      // Let the wait see the answer.
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}

describe('MessageLedger: queued and maybe queued', () => {
  it('a message the subscriber\'s queue holds at the end is queued; one it receives before the counting is delivered; the rest lost', () => {
    const ledger = fourSent();
    ledger.queued(0, 1);
    ledger.queued(0, 2);
    // Not these devices' messages: ignored.
    ledger.queued(5, 0);
    ledger.queued(0, 9);
    ledger.delivered(0, 2);
    expect(ledger.totals()).toMatchObject({ accepted: 4, delivered: 1, queued: 1, maybeQueued: 0, lost: 2 });
  });

  it('when the queue could not be read, what the broker acknowledged and did not deliver is maybe queued; what it never acknowledged stays lost', () => {
    const ledger = fourSent();
    ledger.accept(0);
    ledger.abandoned(0, 4);
    ledger.held(0, 3);
    ledger.queueUnknown();
    expect(ledger.totals()).toMatchObject({ accepted: 5, delivered: 0, held: 1, queued: 0, maybeQueued: 3, lost: 1 });
  });

  it('a message its device still held at the end is no longer on its way: the backlog does not wait for it', () => {
    const ledger = fourSent();
    expect(ledger.outstanding).toBe(4);
    ledger.held(0, 0);
    ledger.held(0, 0);
    expect(ledger.outstanding).toBe(3);
    // Delivered after all: counted once.
    ledger.delivered(0, 0);
    ledger.delivered(0, 1);
    expect(ledger.outstanding).toBe(2);
  });
});

/** A wait for four missing messages, on a manual clock, a scripted queue and scripted arrivals. */
function waiting4(timeoutMs: number) {
  const ledger = fourSent();
  const clock = new ManualClock();
  const queue = scriptedQueue();
  const play = arrivals(ledger);
  const waiting: Array<number | undefined> = [];
  const ended = waitForBacklog({ ledger, readQueue: queue.read, clock, timeoutMs, onArrival: play.onArrival }, (count) => waiting.push(count));
  return { ledger, clock, queue, play, waiting, ended };
}

describe('the backlog\'s wait', () => {
  it('reads the queue\'s count at the start and after arrivals (one read at a time, bounded by the deadline), and ends when it reads empty', async () => {
    const { ledger, clock, queue, play, waiting, ended } = waiting4(3_000);
    expect(queue.calls).toEqual([{ countOnly: true, timeoutMs: 3_000, signal: expect.any(AbortSignal) }]);
    await queue.answer({ count: 4 });
    expect(waiting).toEqual([4]);
    clock.advance(2_500);
    // Two arrivals while a read is out: one more read after it, not two.
    play.deliver(0, 0);
    play.deliver(0, 1);
    expect(queue.calls).toHaveLength(2);
    expect(queue.calls[1]?.timeoutMs).toBe(500);
    await queue.answer({ count: 2 });
    expect(queue.calls).toHaveLength(3);
    await queue.answer({ count: 0 });
    expect(await ended).toBe('queue-empty');
    expect([clock.pending, play.listeners()]).toEqual([0, 0]);
    expect(waiting).toEqual([4]);
  });

  it('ends when the last missing message arrives, at its deadline, or at once on its signal (Ctrl+C), whatever a read is doing', async () => {
    const ledger = fourSent();
    const clock = new ManualClock();
    const play = arrivals(ledger);
    const delivered = waitForBacklog({ ledger, readQueue: undefined, clock, timeoutMs: 60_000, onArrival: play.onArrival });
    for (let seq = 0; seq < 4; seq++) play.deliver(0, seq);
    expect(await delivered).toBe('delivered');

    const late = fourSent();
    const timedOut = waitForBacklog({ ledger: late, readQueue: undefined, clock, timeoutMs: 60_000, onArrival: arrivals(late).onArrival });
    clock.advance(60_000);
    expect(await timedOut).toBe('timeout');

    const stop = new AbortController();
    const queue = scriptedQueue();
    const interrupted = waitForBacklog({ ledger: late, readQueue: queue.read, clock, timeoutMs: 60_000, signal: stop.signal, onArrival: arrivals(late).onArrival });
    stop.abort();
    expect(await interrupted).toBe('interrupted');
    // The read it had out is aborted with it.
    expect(queue.calls[0]?.signal?.aborted).toBe(true);
    expect(clock.pending).toBe(0);
  });

  it('a queue that cannot be read leaves the arrivals and the deadline', async () => {
    const { clock, queue, play, waiting, ended } = waiting4(10_000);
    await queue.answer(new Error('GET /_emulator/queue answered 404'));
    expect(waiting).toEqual([undefined]);
    play.deliver(0, 0);
    expect(queue.calls).toHaveLength(1);
    clock.advance(10_000);
    expect(await ended).toBe('timeout');
  });
});

describe('the backlog\'s wait, told through a callback that throws', () => {
  it('ends and rejects with its error, its timer and listeners gone, whether the queue was read or not', async () => {
    for (const readable of [true, false]) {
      const ledger = fourSent();
      const clock = new ManualClock();
      const queue = scriptedQueue();
      const play = arrivals(ledger);
      const ended = waitForBacklog({ ledger, readQueue: readable ? queue.read : undefined, clock, timeoutMs: 60_000, onArrival: play.onArrival }, () => {
        throw new Error('the warning callback failed');
      });
      const outcome = expect(ended).rejects.toThrow('the warning callback failed');
      if (readable) await queue.answer({ count: 4 });
      await outcome;
      expect(play.listeners()).toBe(0);
      clock.advance(60_000); // its timer is gone: nothing settles twice
    }
  });
});

describe('settleBacklog', () => {
  it('nothing missing: no wait, no read', async () => {
    const ledger = new MessageLedger([0, 1], 1);
    ledger.delivered(0, ledger.accept(0));
    const queue = scriptedQueue();
    expect(await settleBacklog({ ledger, readQueue: queue.read, clock: new ManualClock(), timeoutMs: 60_000, onArrival: arrivals(ledger).onArrival })).toEqual({ waited: undefined, waitedMs: 0, queue: 'none' });
    expect(queue.calls).toHaveLength(0);
  });

  it('at its deadline: reads the queue whole (each payload\'s identity, within its own timeout) and marks what it holds queued; says what it waits for', async () => {
    const ledger = fourSent();
    const clock = new ManualClock();
    const queue = scriptedQueue();
    const warnings: string[] = [];
    const settled = settleBacklog({ ledger, readQueue: queue.read, clock, timeoutMs: 1_000, onArrival: arrivals(ledger).onArrival, onWarning: (m) => warnings.push(m) });
    await queue.answer({ count: 3 });
    expect(warnings).toEqual(['The backend subscriber still misses 4 messages (its queue at the broker holds 3): waiting up to 1 s (backlogTimeoutMs, --backlog-timeout) while its backlog drains; Ctrl+C ends the wait']);
    clock.advance(1_000);
    await new Promise((resolve) => setImmediate(resolve));
    expect(queue.calls[1]).toEqual({ payloadBytes: PAYLOAD_ID_SIZE, timeoutMs: QUEUE_READ_TIMEOUT_MS });
    await queue.answer({ count: 3, messages: [listed(0, 1), listed(0, 2), listed(0, 3)] });
    expect(await settled).toEqual({ waited: 'timeout', waitedMs: 1_000, queue: 'read' });
    expect(ledger.totals()).toMatchObject({ queued: 3, lost: 1, maybeQueued: 0 });
  });

  it('a list cut at its cap, a queue that cannot be read, or no emulator at all: the broker\'s undelivered messages are maybe queued', async () => {
    const cut = fourSent();
    const queue = scriptedQueue();
    const warnings: string[] = [];
    const settled = settleBacklog({ ledger: cut, readQueue: queue.read, clock: new ManualClock(), timeoutMs: 0, onArrival: arrivals(cut).onArrival, onWarning: (m) => warnings.push(m) });
    await queue.answer({ count: 4, messages: [listed(0, 0)], truncated: true });
    expect((await settled).queue).toBe('truncated');
    expect(cut.totals()).toMatchObject({ queued: 1, maybeQueued: 3, lost: 0 });
    expect(warnings).toEqual(['The backend subscriber\'s queue at the broker holds 4 messages, more than one answer lists: those not listed are counted maybeQueued']);

    const failed = fourSent();
    const broken = scriptedQueue();
    const failing = settleBacklog({ ledger: failed, readQueue: broken.read, clock: new ManualClock(), timeoutMs: 0, onArrival: arrivals(failed).onArrival });
    await broken.answer(new Error('timeout'));
    expect((await failing).queue).toBe('unreadable');
    expect(failed.totals()).toMatchObject({ maybeQueued: 4, lost: 0 });

    const cloud = fourSent();
    const stop = new AbortController();
    stop.abort();
    expect(await settleBacklog({ ledger: cloud, readQueue: undefined, clock: new ManualClock(), timeoutMs: 60_000, signal: stop.signal, onArrival: arrivals(cloud).onArrival })).toEqual({ waited: 'interrupted', waitedMs: 0, queue: 'unreadable' });
    expect(cloud.totals()).toMatchObject({ maybeQueued: 4, lost: 0 });
  });
});

describe('settleBacklog: a subscriber connected throughout', () => {
  it('had no offline backlog: when its queue cannot be read (the cloud, a failed read), what it misses is lost, not maybe queued', async () => {
    const cloud = fourSent();
    const stop = new AbortController();
    stop.abort();
    await settleBacklog({ ledger: cloud, readQueue: undefined, clock: new ManualClock(), timeoutMs: 60_000, signal: stop.signal, onArrival: arrivals(cloud).onArrival, subscriberInterrupted: () => false });
    expect(cloud.totals()).toMatchObject({ maybeQueued: 0, lost: 4 });

    const failed = fourSent();
    const broken = scriptedQueue();
    const warnings: string[] = [];
    const failing = settleBacklog({ ledger: failed, readQueue: broken.read, clock: new ManualClock(), timeoutMs: 0, onArrival: arrivals(failed).onArrival, onWarning: (m) => warnings.push(m), subscriberInterrupted: () => false });
    await broken.answer(new Error('timeout'));
    expect((await failing).queue).toBe('unreadable');
    expect(failed.totals()).toMatchObject({ maybeQueued: 0, lost: 4 });
    expect(warnings).toEqual([expect.stringMatching(/could not be read \(timeout\): what the broker acknowledged and did not deliver is lost \(the backend subscriber never lost its connection/)]);

    // One that lost it may have had a backlog there.
    const restarted = fourSent();
    await settleBacklog({ ledger: restarted, readQueue: undefined, clock: new ManualClock(), timeoutMs: 0, onArrival: arrivals(restarted).onArrival, subscriberInterrupted: () => true });
    expect(restarted.totals()).toMatchObject({ maybeQueued: 4, lost: 0 });
  });
});

describe('the warning before a game day against an emulator given by endpoint', () => {
  it('says how the emulator paces and bounds a queue, and how to start it for exact counts; nothing when it does neither', () => {
    expect(backlogWarning('http://127.0.0.1:8080', { count: 0, truncated: false, offline: PACED }, 60_000)).toBe(
      'The emulator at http://127.0.0.1:8080 delivers a resumed persistent session\'s queue at the cloud\'s pace (a first batch 5000 to 10000 ms after the reconnect, then 30 every 5000 ms) and bounds it (1000 messages, 8388608 bytes, drop-oldest: what it lets go is lost): after a broker restart the backend subscriber\'s backlog may outlast the run; the run waits up to 60 s (--backlog-timeout) for the backend subscriber\'s backlog after the run, and counts what is still queued at the broker as queued, not lost. For exact counts start it with --offline-delivery immediate --max-offline-messages none --max-offline-bytes none',
    );
    const immediate = { ...PACED, delivery: 'immediate' as const, maxMessages: null, maxBytes: null };
    expect(backlogWarning('http://e', { count: 0, truncated: false, offline: immediate }, 60_000)).toBeUndefined();
    expect(backlogWarning('http://e', { count: 0, truncated: false, offline: { ...immediate, maxMessages: 10 } }, 60_000)).toMatch(/^The emulator at http:\/\/e bounds it \(10 messages, no limit on bytes, drop-oldest/);
    expect(backlogWarning('http://e', undefined, 5_000)).toMatch(/^The emulator at http:\/\/e does not show a session's queue \(GET \/_emulator\/queue: an older version\?\)/);
  });
});

describe('the emulator\'s view of a queue', () => {
  const offline = offlineDeliveryOf(resolveOptions({ env: {} }));

  it('says the emulator\'s defaults: paced, bounded', () => {
    expect(offline).toEqual({ delivery: 'paced', detectionDelayMs: { min: 5_000, max: 10_000 }, batchSize: 30, batchIntervalMs: 5_000, maxMessages: 1_000, maxBytes: 8_388_608, policy: 'drop-oldest' });
    expect(offlineDeliveryOf(resolveOptions({ env: {}, maxOfflineMessages: Number.POSITIVE_INFINITY, maxOfflineBytes: Number.POSITIVE_INFINITY, offlineDelivery: 'immediate' }))).toMatchObject({ delivery: 'immediate', maxMessages: null, maxBytes: null });
  });

  it('stops its list at 16 MiB of answer: 30,000 queued 32 KB messages are read no further than the cap', async () => {
    const payload = Buffer.alloc(32 * 1024, 7);
    let visited = 0;
    const peek = (_: string, take: (p: StoredPacket) => boolean): { messages: number; bytes: number } => {
      for (let i = 0; i < 30_000; i++) {
        visited += 1;
        if (!take({ cmd: 'publish', topic: 'sim/1', payload, qos: 1, messageId: i === 0 ? 1 : undefined })) break;
      }
      return { messages: 30_000, bytes: 30_000 * (payload.length + 5) };
    };
    const view = await viewQueue(peek, { clientId: 'GID_x@@@sub', countOnly: false, payloadBytes: undefined }, offline);
    const size = Buffer.byteLength(JSON.stringify(view));
    expect(size).toBeLessThanOrEqual(MAX_QUEUE_VIEW_BYTES);
    expect(size).toBeGreaterThan(MAX_QUEUE_VIEW_BYTES - 50_000);
    expect(view).toMatchObject({ count: 30_000, truncated: true });
    expect(visited).toBe((view.messages?.length ?? 0) + 1);
    expect(view.messages?.[0]).toEqual({ topic: 'sim/1', qos: 1, bytes: payload.length + 5, sent: true, payload: payload.toString('base64') });
    expect(view.messages?.[1]?.sent).toBe(false);

    // Each payload's first bytes, or the counts alone: the whole queue fits, or none of it is read.
    const heads = await viewQueue(peek, { clientId: 'GID_x@@@sub', countOnly: false, payloadBytes: 16 }, offline);
    expect(heads).toMatchObject({ count: 30_000, truncated: false });
    expect(heads.messages?.[0]?.payload).toBe(payload.subarray(0, 16).toString('base64'));
    visited = 0;
    const counted = await viewQueue(peek, { clientId: 'GID_x@@@sub', countOnly: true, payloadBytes: undefined }, offline);
    expect(counted).toEqual({ clientId: 'GID_x@@@sub', count: 30_000, bytes: 30_000 * (payload.length + 5), truncated: false, offline });
    expect(visited).toBe(1);
  });

  it('reads its query: a ClientId, count=1, payloadBytes=N; anything else is ParameterCheckFailed', () => {
    expect(parseQueueQuery(new URLSearchParams('clientId=GID_a@@@b&count=1&payloadBytes=16'))).toEqual({ clientId: 'GID_a@@@b', countOnly: true, payloadBytes: 16 });
    expect(parseQueueQuery(new URLSearchParams('clientId=x'))).toEqual({ clientId: 'x', countOnly: false, payloadBytes: undefined });
    for (const bad of ['', 'clientId=', 'clientId=x&count=yes', 'clientId=x&payloadBytes=-1', `clientId=${'x'.repeat(1_025)}`]) {
      expect(() => parseQueueQuery(new URLSearchParams(bad))).toThrow(expect.objectContaining({ code: 'ParameterCheckFailed' }));
    }
  });
});
