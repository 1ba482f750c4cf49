import type { EventEmitter } from 'node:events';
import type { SessionDirectory } from './actions.js';
import type { EmulatorEvents } from './emulator.js';

/**
 * Who is online, from the broker's own events: `clientConnected` (emitted once a client authenticated, before its
 * CONNACK is written) and `clientDisconnected`. Connections are counted per ClientId rather than flagged, so that a
 * takeover (a second CONNECT with the same ClientId) reads right whichever order the broker reports the new
 * connection and the end of the old one in. Holds only ClientIds connected now.
 */
export class OnlineClients implements SessionDirectory {
  readonly #connections = new Map<string, number>();
  readonly #events: EventEmitter<EmulatorEvents>;
  readonly #onConnected = (clientId: string): void => {
    this.#connections.set(clientId, (this.#connections.get(clientId) ?? 0) + 1);
  };
  readonly #onDisconnected = (clientId: string): void => {
    const left = (this.#connections.get(clientId) ?? 0) - 1;
    if (left > 0) this.#connections.set(clientId, left);
    else this.#connections.delete(clientId);
  };

  constructor(events: EventEmitter<EmulatorEvents>) {
    this.#events = events;
    events.on('clientConnected', this.#onConnected);
    events.on('clientDisconnected', this.#onDisconnected);
  }

  isOnline(clientId: string): boolean {
    return this.#connections.has(clientId);
  }

  /** The ClientIds online now. */
  clientIds(): string[] {
    return [...this.#connections.keys()];
  }

  /** ClientIds online now. */
  get size(): number {
    return this.#connections.size;
  }

  /** Stop following the events. */
  close(): void {
    this.#events.off('clientConnected', this.#onConnected);
    this.#events.off('clientDisconnected', this.#onDisconnected);
  }
}
