/**
 * Small tools of the hostile-input and seeded fuzz tests: a replayable PRNG, random bytes, MQTT's variable byte
 * integer, and a check that nothing escaped as an uncaught exception.
 */
import { expect, onTestFinished } from 'vitest';

/** Fail the current test if an uncaught exception happens before it finishes (vitest would report it too, after the fact). */
export function noUncaughtException(): void {
  const seen: unknown[] = [];
  const record = (error: unknown): void => {
    seen.push(error);
  };
  process.on('uncaughtException', record);
  onTestFinished(() => {
    process.off('uncaughtException', record);
    expect(seen).toEqual([]);
  });
}

/** mulberry32: a small seeded PRNG, so that a failing run can be replayed exactly. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

export type Random = ReturnType<typeof prng>;

/** An integer in [0, max). */
export const int = (r: Random, max: number): number => Math.floor(r() * max);

/** `n` random bytes. */
export function bytes(r: Random, n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = int(r, 256);
  return out;
}

/** MQTT's variable byte integer (a remaining length, a property length). */
export function varint(value: number): Buffer {
  const out: number[] = [];
  let left = value;
  do {
    let byte = left % 128;
    left = Math.floor(left / 128);
    if (left > 0) byte |= 0x80;
    out.push(byte);
  } while (left > 0);
  return Buffer.from(out);
}
