/**
 * The first session of a connection: the promise `connectDevice` waits on, and the messages that arrive with the
 * first CONNACK (a persistent session's queued ones), held until the caller's `await` has returned so that a
 * listener added right after it gets them.
 */
import type { IPublishPacket } from 'mqtt';
import type { ApsaraMqDeviceError } from '../errors.js';

type Message = [topic: string, payload: Buffer, packet: IPublishPacket];

export class FirstSession {
  #waiting: { resolve: () => void; reject: (error: ApsaraMqDeviceError) => void } | undefined;
  #held: Message[] | undefined;

  /** The promise connectDevice waits on: resolved by {@link FirstSession.online}, rejected by {@link FirstSession.fail}. */
  start(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#waiting = { resolve, reject };
    });
  }

  /** Is connectDevice still waiting? */
  get waiting(): boolean {
    return this.#waiting !== undefined;
  }

  /** A session is up: the first one resolves the promise, and its messages go to `deliver` once the caller's `await` returned. */
  online(deliver: (...message: Message) => void): void {
    const waiting = this.#waiting;
    if (!waiting) return;
    this.#waiting = undefined;
    this.#held = [];
    setImmediate(() => {
      const held = this.#held ?? [];
      this.#held = undefined;
      for (const message of held) deliver(...message);
    });
    waiting.resolve();
  }

  /** A message: kept (true) while the first session's messages are held; else (false) the caller emits it. */
  hold(...message: Message): boolean {
    if (!this.#held) return false;
    this.#held.push(message);
    return true;
  }

  /** The connection closed before its first session: connectDevice rejects with `error`. */
  fail(error: ApsaraMqDeviceError): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.reject(error);
  }
}
