/**
 * Time to heal: for each fault of a game day, which devices it knocked offline and how long after the fault ended
 * each was back online. Devices report every change (online: CONNACK 0; offline: the session lost); a fault opens a
 * watch over its devices when it starts and closes its window when it ends.
 *
 * A device is *hit* by a fault when it loses its session between the fault's start and its end (plus
 * {@link HIT_GRACE_MS}, for losses the process hears of a moment after the fault's control call returned). A device
 * already offline when the fault starts (never connected yet, or lost to an earlier fault and not back) has no session
 * for it to take: unless it comes back and loses it again in the window, it is counted *offline at its start*, not
 * hit: `hit + offlineAtStart` falls short of the devices targeted only by those that kept their session. Its *time
 * to heal* is from the fault's end (the broker back, the network restored) to its first CONNACK 0 after its last loss
 * in that window, 0 when it was back before the fault ended; for a revoke, from the moment its own session was
 * dropped. A device still offline at the end of the run is *not healed*; the first {@link NOT_HEALED_LISTED} of a
 * fault are named with what each was doing (its CONNECTs since its loss, when its backoff would let it try again),
 * so that a report says why they were not back.
 */
import type { Clock } from './clock.js';
import { type Histogram, newLatencyHistogram, recordMs } from './histogram.js';
import { type MessageCounts, type MessageLedger, noMessages } from './ledger.js';

/** Losses heard this long after a fault's end still count as its hits. */
export const HIT_GRACE_MS = 2_000;

/** Devices not healed that a fault's result names (the lowest fleet indexes); the count covers them all. */
export const NOT_HEALED_LISTED = 10;

/** A device a fault hit that was still offline at the end of the run, and what it was doing. Times: run clock. */
export interface NotHealed {
  /** Fleet index. */
  index: number;
  /** When it lost its session. */
  lostAt: number;
  /** CONNECTs it started since, none accepted (the last may still have been awaiting its CONNACK). */
  connects: number;
  /** When it started the last of them; `undefined`: none. */
  lastConnectAt: number | undefined;
  /** When its backoff would let it try again, if it was waiting at the end; `undefined`: it was not. */
  nextConnectAt: number | undefined;
  /** Messages it still held at the end (see the ledger); `undefined` without a ledger. */
  held: number | undefined;
}

interface Hit {
  /** Run-clock time of its last loss in the window. */
  lostAt: number;
  /** Run-clock time it came back after its last loss; `undefined` while offline. */
  backAt: number | undefined;
}

/** What one fault did to the devices it watched. */
export interface WatchResult {
  /** Devices of this shard the fault was aimed at. */
  targeted: number;
  /** Of those, the ones that lost their session during the fault. */
  hit: number;
  /** Of those, the ones offline when the fault started and not hit by it (it had no session of theirs to take). */
  offlineAtStart: number;
  healed: number;
  notHealed: number;
  /** Time to heal of each healed device, microseconds. */
  heal: Histogram;
  /** The first {@link NOT_HEALED_LISTED} devices not healed, by fleet index. */
  notHealedDevices: NotHealed[];
  /**
   * The targeted devices' messages from the fault's start until each device healed (to the end of the run for one it
   * hit that never did; until the window closed for one it did not hit).
   */
  messages: MessageCounts | undefined;
}

/** One fault's watch over its devices. */
export class FaultWatch {
  readonly #tracker: HealTracker;
  readonly #targets: ReadonlySet<number> | 'all';
  readonly targeted: number;
  readonly startedAt: number;
  /**
   * Heal from each device's own loss instead of the fault's end: a revoke drops its devices one by one (its end is
   * when the last was revoked), and each device's ladder starts when its own session is dropped.
   */
  readonly fromLoss: boolean;
  /** Run-clock time the fault ended; `undefined` while it lasts. */
  endedAt: number | undefined;
  readonly #hits = new Map<number, Hit>();
  /** Targeted devices offline at the start (a hit among them counts as a hit only). */
  readonly #offlineAtStart = new Set<number>();
  /** Per targeted device (by fleet index): the first sequence in flight at the start, and the end of its window. */
  readonly #seqFrom = new Map<number, number>();
  readonly #seqTo = new Map<number, number>();

  constructor(tracker: HealTracker, targets: ReadonlySet<number> | 'all', targeted: number, startedAt: number, fromLoss: boolean) {
    this.#tracker = tracker;
    this.#targets = targets;
    this.targeted = targeted;
    this.startedAt = startedAt;
    this.fromLoss = fromLoss;
  }

  watches(index: number): boolean {
    return this.#targets === 'all' || this.#targets.has(index);
  }

  /** The window in which a loss is a hit is open. */
  open(now: number): boolean {
    return this.endedAt === undefined || now <= this.endedAt + HIT_GRACE_MS;
  }

  /** @internal */
  markStart(index: number, seq: number): void {
    this.#seqFrom.set(index, seq);
  }

  /** @internal a device it watches was offline when it started. */
  markOffline(index: number): void {
    this.#offlineAtStart.add(index);
  }

  /** @internal a device it watches lost its session at `now`. */
  lost(index: number, now: number): void {
    this.#hits.set(index, { lostAt: now, backAt: undefined });
    this.#seqTo.delete(index);
  }

  /** @internal a device it watches is online again. */
  back(index: number, now: number, seq: number | undefined): void {
    const hit = this.#hits.get(index);
    if (!hit || hit.backAt !== undefined) return;
    hit.backAt = now;
    if (seq !== undefined) this.#seqTo.set(index, seq);
  }

  /** Still waiting for a device it hit? */
  get pending(): boolean {
    for (const hit of this.#hits.values()) if (hit.backAt === undefined) return true;
    return false;
  }

  /** What the fault did; `ledger` counts the targeted devices' messages (after the run, when deliveries are in). */
  result(ledger: MessageLedger | undefined): WatchResult {
    const heal = newLatencyHistogram();
    let healed = 0;
    let notHealed = 0;
    const end = this.endedAt ?? this.startedAt;
    for (const hit of this.#hits.values()) {
      if (hit.backAt === undefined) {
        notHealed += 1;
        continue;
      }
      healed += 1;
      recordMs(heal, Math.max(0, hit.backAt - (this.fromLoss ? hit.lostAt : end)));
    }
    let messages: MessageCounts | undefined;
    if (ledger) {
      messages = noMessages();
      for (const [index, from] of this.#seqFrom) ledger.count(index, from, this.#windowEnd(index, ledger), messages);
    }
    const notHealedDevices = [...this.#hits]
      .filter(([, hit]) => hit.backAt === undefined)
      .map(([index]) => index)
      .sort((a, b) => a - b)
      .slice(0, NOT_HEALED_LISTED)
      .map((index): NotHealed => {
        const from = this.#seqFrom.get(index);
        const held = ledger && from !== undefined ? ledger.count(index, from, this.#windowEnd(index, ledger)).held : undefined;
        return { ...this.#tracker.offlineSince(index), lostAt: (this.#hits.get(index) as Hit).lostAt, index, held };
      });
    let offlineAtStart = 0;
    for (const index of this.#offlineAtStart) if (!this.#hits.has(index)) offlineAtStart += 1;
    return { targeted: this.targeted, hit: this.#hits.size, offlineAtStart, healed, notHealed, heal, notHealedDevices, messages };
  }

  /**
   * The end of a device's message window: when it healed; for a device it hit that never healed, the end of the run
   * (everything it was handed after its loss is the fault's); for one it did not hit, the window's close.
   */
  #windowEnd(index: number, ledger: MessageLedger): number {
    const healedAt = this.#seqTo.get(index);
    if (healedAt !== undefined) return healedAt;
    const hit = this.#hits.get(index);
    return hit !== undefined && hit.backAt === undefined ? ledger.next(index) : this.#tracker.windowEnd(this, index, ledger);
  }
}

/** Online state of a shard's devices, and the watches of the faults being played. */
export class HealTracker {
  readonly #start: number;
  readonly #online: Uint8Array;
  /** When each device last lost its session (run clock), for a watch that looks back. */
  readonly #lostAt: Float64Array;
  /** Since each device's last loss: CONNECTs started, when the last started, when its backoff ends (NaN: none). */
  readonly #connects: Uint32Array;
  readonly #lastConnectAt: Float64Array;
  readonly #nextConnectAt: Float64Array;
  /** The run is over: what the devices do now (disconnecting) changes nothing. */
  #closed = false;
  readonly #clock: Clock;
  readonly #ledger: MessageLedger | undefined;
  readonly #watches: FaultWatch[] = [];
  /** Per watch, the sequence each targeted device had reached when the watch's window closed (not hit ones). */
  readonly #closedAt = new Map<FaultWatch, Map<number, number>>();

  constructor(range: readonly [number, number], clock: Clock, ledger?: MessageLedger) {
    this.#start = range[0];
    this.#online = new Uint8Array(range[1] - range[0]);
    this.#lostAt = new Float64Array(range[1] - range[0]).fill(Number.NEGATIVE_INFINITY);
    this.#connects = new Uint32Array(range[1] - range[0]);
    this.#lastConnectAt = new Float64Array(range[1] - range[0]).fill(Number.NaN);
    this.#nextConnectAt = new Float64Array(range[1] - range[0]).fill(Number.NaN);
    this.#clock = clock;
    this.#ledger = ledger;
  }

  online(index: number): void {
    const local = index - this.#start;
    if (this.#closed || this.#online[local] === 1) return;
    this.#online[local] = 1;
    const now = this.#clock.now();
    const seq = this.#ledger?.next(index);
    for (const watch of this.#watches) if (watch.watches(index)) watch.back(index, now, seq);
  }

  offline(index: number): void {
    const local = index - this.#start;
    if (this.#closed || this.#online[local] !== 1) return;
    this.#online[local] = 0;
    const now = this.#clock.now();
    this.#lostAt[local] = now;
    this.#connects[local] = 0;
    this.#lastConnectAt[local] = Number.NaN;
    this.#nextConnectAt[local] = Number.NaN;
    for (const watch of this.#watches) if (watch.open(now) && watch.watches(index)) watch.lost(index, now);
  }

  /** An offline device waits `delayMs` (its reconnect backoff) before its next CONNECT. */
  retrying(index: number, delayMs: number): void {
    if (this.#closed) return;
    this.#nextConnectAt[index - this.#start] = this.#clock.now() + delayMs;
  }

  /** An offline device starts a CONNECT. */
  connecting(index: number): void {
    if (this.#closed) return;
    const local = index - this.#start;
    this.#connects[local] = (this.#connects[local] as number) + 1;
    this.#lastConnectAt[local] = this.#clock.now();
    this.#nextConnectAt[local] = Number.NaN;
  }

  /** @internal what an offline device did since its last loss. */
  offlineSince(index: number): Pick<NotHealed, 'connects' | 'lastConnectAt' | 'nextConnectAt'> {
    const local = index - this.#start;
    const time = (t: number): number | undefined => (Number.isNaN(t) ? undefined : t);
    return {
      connects: this.#connects[local] as number,
      lastConnectAt: time(this.#lastConnectAt[local] as number),
      nextConnectAt: time(this.#nextConnectAt[local] as number),
    };
  }

  /** Devices of this shard online now. */
  isOnline(index: number): boolean {
    return this.#online[index - this.#start] === 1;
  }

  /**
   * A fault starts now over `targets` (fleet indexes of this shard, or all of them). `lookbackMs`: losses that
   * recent count as its hits too (a fault another shard plays on a shared broker, which may act a moment before this
   * shard's clock says it starts); the other devices offline now are offline at its start.
   */
  watch(targets: readonly number[] | 'all', options: { lookbackMs?: number; fromLoss?: boolean } = {}): FaultWatch {
    const lookbackMs = options.lookbackMs ?? 0;
    const size = this.#online.length;
    const set = targets === 'all' ? 'all' : new Set(targets);
    const now = this.#clock.now();
    const watch = new FaultWatch(this, set, targets === 'all' ? size : targets.length, now, options.fromLoss ?? false);
    const each = targets === 'all' ? Array.from({ length: size }, (_, i) => this.#start + i) : targets;
    for (const index of each) {
      const local = index - this.#start;
      const lostAt = this.#lostAt[local] as number;
      if (this.#online[local] === 0) {
        if (lookbackMs > 0 && lostAt >= now - lookbackMs) watch.lost(index, lostAt);
        else watch.markOffline(index);
      }
      if (this.#ledger) watch.markStart(index, this.#ledger.unsettled(index));
    }
    this.#watches.push(watch);
    return watch;
  }

  /** The fault of `watch` ended now; its window for hits closes {@link HIT_GRACE_MS} later. */
  end(watch: FaultWatch): void {
    watch.endedAt = this.#clock.now();
    if (!this.#ledger) return;
    // The messages of a device it did not hit count up to the window's close: remember where each stood then.
    const ledger = this.#ledger;
    const timer = this.#clock.setTimeout(() => {
      this.#timers.delete(timer);
      this.#snapshot(watch, ledger);
    }, HIT_GRACE_MS);
    this.#timers.add(timer);
  }

  readonly #timers = new Set<unknown>();

  #snapshot(watch: FaultWatch, ledger: MessageLedger): void {
    const at = new Map<number, number>();
    for (let local = 0; local < this.#online.length; local++) {
      const index = this.#start + local;
      if (watch.watches(index)) at.set(index, ledger.next(index));
    }
    this.#closedAt.set(watch, at);
  }

  /** @internal the end of a device's message window in `watch`: its window's close, or now. */
  windowEnd(watch: FaultWatch, index: number, ledger: MessageLedger): number {
    return this.#closedAt.get(watch)?.get(index) ?? ledger.next(index);
  }

  /**
   * The run is over: stop the timers, and take no more news from the devices (their disconnecting is no fault's
   * doing, and a device not back now is not healed). Results stay readable.
   */
  close(): void {
    this.#closed = true;
    for (const timer of this.#timers) this.#clock.clearTimeout(timer);
    this.#timers.clear();
  }
}
