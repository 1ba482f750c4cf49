import { AbortedError } from '../errors.js';

/** The error an operation rejects with when its AbortSignal fires: code `Aborted`, the signal's reason as cause. */
export function abortError(what: string, signal: AbortSignal): AbortedError {
  return new AbortedError(`${what} was aborted`, signal.reason);
}

/**
 * Settle with `promise`, or reject with {@link abortError} as soon as `signal` fires, whichever comes first.
 * `onAbort` runs once if the signal wins (to release whatever the operation holds).
 * The losing promise's rejection is swallowed so it never becomes an unhandled rejection.
 */
export function raceAbort<T>(promise: Promise<T>, what: string, signal: AbortSignal | undefined, onAbort?: () => void): Promise<T> {
  if (!signal) return promise;
  promise.catch(() => undefined);
  if (signal.aborted) {
    onAbort?.();
    return Promise.reject(abortError(what, signal));
  }
  return new Promise<T>((resolve, reject) => {
    const listener = (): void => {
      onAbort?.();
      reject(abortError(what, signal));
    };
    signal.addEventListener('abort', listener, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', listener);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', listener);
        reject(error);
      },
    );
  });
}
