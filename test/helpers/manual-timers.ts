/**
 * Timers in a test's hands, for the emulator's `offlineTimers` option (the pace of offline messages): each one the
 * broker sets waits until the test runs it, so nothing waits real seconds and batches are counted exactly.
 */
import { expect } from 'vitest';
import type { OfflineTimers } from '../../src/emulator/index.js';
import { inbox, received, roundTrip, type RawMqtt } from './raw-mqtt.js';

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

/**
 * The cloud's default pace, seen by a session that just resumed with 40 messages `m0`…`m39` queued: nothing until
 * the detection timer (of `detectionMs`) runs, then a batch of 30, then, once the 5 s interval's timer runs, the last
 * 10; no timer left.
 */
export async function expectCloudPace(raw: RawMqtt, timers: ManualTimers, detectionMs: number): Promise<void> {
  const messages = inbox(raw);
  const payloads = (): string[] => messages.publishes().map((p) => p.payload.toString());
  const detection = await timers.next();
  expect(detection.ms).toBe(detectionMs);
  await roundTrip(raw);
  expect(payloads()).toHaveLength(0);

  detection.run();
  await received(raw, 30);
  const interval = await timers.next();
  expect(interval.ms).toBe(5_000);
  await roundTrip(raw);
  expect(payloads()).toEqual(Array.from({ length: 30 }, (_, i) => `m${i}`));

  interval.run();
  await received(raw, 40);
  await roundTrip(raw);
  expect(payloads()).toEqual(Array.from({ length: 40 }, (_, i) => `m${i}`));
  expect(timers.pending).toBe(0);
}
