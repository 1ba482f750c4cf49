/**
 * Timers in a test's hands, for the emulator's `offlineTimers` option (the pace of offline messages): each one the
 * broker sets waits until the test runs it, so nothing waits real seconds and batches are counted exactly.
 */
import type { OfflineTimers } from '../../src/emulator/index.js';

/** A timer the broker set, waiting for the test to run it. */
export interface Step {
  readonly ms: number;
  run(): void;
}

/** Timers that run only when the test runs them; {@link ManualTimers.next} resolves with the next one set. */
export interface ManualTimers extends OfflineTimers {
  next(): Promise<Step>;
  /** Timers set and neither run nor cleared. */
  readonly pending: number;
}

export function manualTimers(): ManualTimers {
  const set: (Step & { cleared: boolean })[] = [];
  const waiting: ((step: Step) => void)[] = [];
  let taken = 0;
  return {
    setTimeout(callback, ms) {
      const step = { ms, cleared: false, run: () => (step.cleared ? undefined : ((step.cleared = true), callback())) };
      set.push(step);
      const waiter = waiting.shift();
      if (waiter) {
        taken++;
        waiter(step);
      }
      return step;
    },
    clearTimeout(handle) {
      (handle as { cleared: boolean }).cleared = true;
    },
    next() {
      const step = set[taken];
      if (step) {
        taken++;
        return Promise.resolve(step);
      }
      return new Promise((resolve) => waiting.push(resolve));
    },
    get pending() {
      return set.filter((step) => !step.cleared).length;
    },
  };
}

