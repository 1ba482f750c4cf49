import { abortError, raceAbort } from '../util/abort.js';

interface Flight<V> {
  readonly promise: Promise<V>;
  readonly controller: AbortController;
  waiters: number;
}

/**
 * Concurrent calls with the same key share one in-flight operation; the next call after it settles starts a new one.
 *
 * Each caller may abort its own wait with its own signal. The shared operation is aborted only when every caller
 * waiting on it has given up, so one impatient caller never cancels the work the others still wait for.
 */
export class SingleFlight<V> {
  readonly #flights = new Map<string, Flight<V>>();
  /** Every operation started and not settled yet, abandoned ones included. */
  readonly #running = new Set<Promise<V>>();

  /** Resolves once every operation started so far has settled (an abandoned one keeps running until it notices). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.#running]);
  }

  /**
   * Join the operation in flight under `key`, or start `operation` when there is none.
   * @param what - Names the operation in the `Aborted` error.
   * @param signal - Ends this caller's wait; the operation's own signal fires once no caller waits any more.
   */
  run(key: string, what: string, signal: AbortSignal | undefined, operation: (signal: AbortSignal) => Promise<V>): Promise<V> {
    if (signal?.aborted) return Promise.reject(abortError(what, signal));
    let flight = this.#flights.get(key);
    if (!flight) {
      const controller = new AbortController();
      const promise = operation(controller.signal);
      this.#running.add(promise);
      const done = (): void => {
        this.#running.delete(promise);
      };
      promise.then(done, done);
      const created: Flight<V> = { promise, controller, waiters: 0 };
      flight = created;
      this.#flights.set(key, created);
      // Identity check: an abandoned flight may already have been replaced by a newer one under the same key.
      const forget = (): void => {
        if (this.#flights.get(key) === created) this.#flights.delete(key);
      };
      promise.then(forget, forget);
    }
    const joined = flight;
    joined.waiters += 1;
    let waiting = true;
    const release = (): void => {
      if (waiting) joined.waiters -= 1;
      waiting = false;
    };
    joined.promise.then(release, release);
    return raceAbort(joined.promise, what, signal, () => {
      release();
      if (joined.waiters === 0) {
        if (this.#flights.get(key) === joined) this.#flights.delete(key);
        joined.controller.abort(signal?.reason);
      }
    });
  }
}
