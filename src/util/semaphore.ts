/** A counting semaphore with a first-come queue (the registrar's request slots, the gateway's credential reads). */
import { abortError } from './abort.js';
import { optionChecks } from './option-checks.js';

const check = optionChecks();

/** A counting semaphore with a first-come queue; waiters can give up with a signal. */
export class Semaphore {
  readonly #limit: number;
  #active = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(limit: number) {
    this.#limit = checkConcurrency(limit);
  }

  /** Requests holding a slot now. */
  get active(): number {
    return this.#active;
  }

  /** Most holders at once. */
  get limit(): number {
    return this.#limit;
  }

  /** Wait for a slot; call the returned function exactly once to release it. */
  acquire(what: string, signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(abortError(what, signal));
    return new Promise((resolve, reject) => {
      const grant = (): void => {
        signal?.removeEventListener('abort', onAbort);
        this.#active += 1;
        let released = false;
        resolve(() => {
          if (released) return;
          released = true;
          this.#active -= 1;
          this.#wake();
        });
      };
      const onAbort = (): void => {
        const index = this.#waiting.indexOf(grant);
        if (index >= 0) this.#waiting.splice(index, 1);
        reject(abortError(what, signal as AbortSignal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(grant);
      this.#wake();
    });
  }

  #wake(): void {
    while (this.#active < this.#limit && this.#waiting.length > 0) this.#waiting.shift()?.();
  }
}

/** A concurrency limit: a whole number of 1 or more. @throws ValidationError `InvalidOption` */
export function checkConcurrency(limit: number): number {
  return check.integer('concurrency', limit, { min: 1 });
}

