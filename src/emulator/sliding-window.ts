/**
 * "At most N calls per second" read as strictly as it can be: at most `limit` takes in any window of `windowMs`,
 * wherever the window starts (a sliding log of the takes within the last window). A client that stays within it
 * stays within any other reading of the same number (a fixed window, a token bucket holding at most a second's
 * worth), which is why the emulator's gateway holds it by default. Pure apart from the time it is given.
 */
export class SlidingWindow {
  readonly limit: number;
  readonly windowMs: number;
  /** Times of the takes, oldest first; those before `#head` have left the window. */
  #times: number[] = [];
  #head = 0;

  /** @param limit - takes per window: a positive integer, or Infinity for no limit. */
  constructor(limit: number, windowMs = 1000) {
    this.limit = limit;
    this.windowMs = windowMs;
  }

  /** Take one at `now` (monotonic ms) if fewer than `limit` were taken in `(now - windowMs, now]`; false leaves it as it was. */
  tryTake(now: number): boolean {
    if (this.limit === Number.POSITIVE_INFINITY) return true;
    const from = now - this.windowMs;
    while (this.#head < this.#times.length && (this.#times[this.#head] as number) <= from) this.#head++;
    if (this.#times.length - this.#head >= this.limit) return false;
    this.#times.push(now);
    // Memory stays within one window's takes: drop the expired prefix once it is most of the array.
    if (this.#head > 64 && this.#head * 2 > this.#times.length) {
      this.#times = this.#times.slice(this.#head);
      this.#head = 0;
    }
    return true;
  }
}
