/**
 * The emulator's MQTT side while it runs: the broker of the moment, which `restart` (with its downtime) replaces on
 * the same ports, and whose events are re-emitted as the emulator's, so that listeners outlive a restart; restarts
 * and close in turn. emulator.ts starts the parts and hands out the emulator; this module is the part that changes
 * under it (the broker itself is broker.ts).
 */
import { EventEmitter } from 'node:events';
import type { Aedes, Client } from 'aedes';
import { messagesCounted } from './aedes-adapter.js';
import { startBroker, type BrokerDependencies, type BrokerHandle } from './broker.js';
import type { EmulatorEvents } from './emulator.js';
import type { ResolvedEmulatorOptions } from './options.js';

/**
 * The MQTT side of the emulator: the current broker, which {@link MqttService.restart} replaces. Restarts and
 * close are serialised, so a close during a restart closes the restarted broker.
 */
export class MqttService {
  readonly #config: ResolvedEmulatorOptions;
  readonly #deps: BrokerDependencies;
  #handle: BrokerHandle;
  #queue: Promise<void> = Promise.resolve();
  #closed = false;
  readonly events = new EventEmitter<EmulatorEvents>();

  constructor(config: ResolvedEmulatorOptions, deps: BrokerDependencies, handle: BrokerHandle) {
    this.#config = config;
    this.#deps = deps;
    this.#handle = handle;
    this.#forwardEvents(handle.broker);
  }

  /** Re-emit the broker's events as the emulator's (a restart makes a new broker; the listeners stay on `events`). */
  #forwardEvents(broker: Aedes): void {
    broker.on('client', (client: Client) => this.events.emit('clientConnected', client.id));
    broker.on('clientDisconnect', (client: Client) => this.events.emit('clientDisconnected', client.id));
    broker.on('publish', (packet, client: Client | null) => {
      if (client && !packet.topic.startsWith('$SYS/')) {
        this.events.emit('published', { topic: packet.topic, payload: Buffer.from(packet.payload), qos: packet.qos, clientId: client.id });
      }
    });
    broker.on('subscribe', (subscriptions, client: Client | null) => {
      // aedes reports every filter with the QoS its SUBACK granted; 0x80 and up are refusals (the broker's rules).
      if (client) this.events.emit('subscribed', { clientId: client.id, topics: subscriptions.filter((s) => (s.qos as number) < 0x80).map((s) => s.topic) });
    });
  }

  get handle(): BrokerHandle {
    return this.#handle;
  }

  get broker(): Aedes {
    return this.#handle.broker;
  }

  disconnect(clientId: string): boolean {
    return this.#handle.disconnect(clientId);
  }

  checkTokens(): void {
    this.#handle.checkTokens();
  }

  restart(downMs = 0): Promise<void> {
    return this.#serialise(async () => {
      if (this.#closed) throw new Error('The emulator is closed');
      const previous = this.#handle;
      await previous.close();
      // Down for a while (a game day's broker maintenance): connects are refused meanwhile; close() cuts it short.
      if (downMs > 0) await this.#down(downMs);
      // Port 0 was resolved at the first start: listen on the very same ports, so clients' URLs stay valid.
      this.#handle = await startBroker({ ...this.#config, ...previous.ports }, {
        ...this.#deps,
        persistence: previous.persistence,
        brokerId: previous.broker.id,
        counted: messagesCounted(previous.broker),
      });
      this.#forwardEvents(this.#handle.broker);
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#wake?.();
    return this.#serialise(() => this.#handle.close());
  }

  /** Ends the downtime of a restart early (the emulator is closing). */
  #wake: (() => void) | undefined;

  #down(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.#wake?.(), ms);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
    });
  }

  /** Run after everything queued before, whether that succeeded or not. */
  #serialise(task: () => Promise<void>): Promise<void> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}
