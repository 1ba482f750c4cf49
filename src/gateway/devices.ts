/**
 * Devices held by one process on one durable outbox (what the `gateway` command runs): each device its own
 * {@link DeviceConnection} with its own credential, all of them sharing one `OutboxStore`. A message handed over for a
 * device is accepted once on disk, whether its connection is up, still connecting, or failing to connect; the
 * connection sends it in its turn. Deliveries come from the connections, drops from the store (so also those of a
 * device with no connection open, e.g. expired while the process was down).
 *
 * A device role module: it loads the connector, never the registrar (the credential sources are passed in) nor the
 * outbox's engine (the store is passed in). Connecting is all at once, with jittered backoff for a device whose first
 * CONNECT fails; paced connects, adding and removing devices, and metrics are for the library Gateway to come
 * (issue 18), which grows from this class.
 */
import { EventEmitter, once } from 'node:events';
import { connectDevice, type ConnectDeviceOptions, type DeviceConnection } from '../connector/connect.js';
import type { DeviceConnectionEvents, PublishAccepted } from '../connector/connection-types.js';
import { type EnqueueOptions, enqueueDurable } from '../connector/durable.js';
import type { CredentialSource } from '../credential.js';
import { type ApsaraMqDeviceError, ValidationError, toApsaraMqDeviceError } from '../errors.js';
import type { OutboxDrop, OutboxStore } from '../outbox/store.js';
import { type BackoffOptions, fullJitterDelay, sleep } from '../util/backoff.js';

/** Where a device is: connecting (first CONNECT under way or retried), online, offline (reconnecting), failed for good, or closed. */
export type GatewayDeviceState = 'connecting' | 'online' | 'offline' | 'failed' | 'closed';

/** Options of {@link GatewayDevices}. */
export interface GatewayDevicesOptions {
  /** The durable outbox of every device (the application opened it; it closes it after {@link GatewayDevices.close}). */
  readonly outbox: OutboxStore;
  /** The credential source of a device (asked once per device, before its first CONNECT). */
  readonly credentialFor: (clientId: string) => CredentialSource | Promise<CredentialSource>;
  /** Options of every connection (`endTimeoutMs` is how long {@link GatewayDevices.close} lets each drain). */
  readonly connect: Omit<ConnectDeviceOptions, 'credential' | 'outbox' | 'signal'>;
  /** Delays between failed first CONNECTs of a device (a connection reconnects by itself once it was online). @default 1 s to 60 s */
  readonly retry?: BackoffOptions;
  /** Randomness of the jitter, [0, 1). @default Math.random */
  readonly random?: () => number;
}

/** Events of {@link GatewayDevices}. */
export interface GatewayDevicesEvents {
  /** A device's message was delivered (PUBACK): also one accepted before a restart. */
  delivered: DeviceConnectionEvents['delivered'];
  /**
   * A device's message left the outbox undelivered: the store's bounds or damage (from the store, also for a device
   * whose connection is not open), or the broker refused it (from its connection, with the broker's `error`).
   */
  dropped: DeviceConnectionEvents['dropped'];
  /** A device changed state; `error` says why it is offline or failed. */
  device: [info: { clientId: string; state: GatewayDeviceState; error?: ApsaraMqDeviceError }];
  /** A connection reported something that went wrong without closing it (its `error` event). */
  warning: [info: { clientId: string; error: ApsaraMqDeviceError }];
}

interface Slot {
  readonly clientId: string;
  state: GatewayDeviceState;
  connection: DeviceConnection | undefined;
  /** The run of its connection attempts. */
  run: Promise<void> | undefined;
}

const FIRST_CONNECT_RETRY: BackoffOptions = { minDelayMs: 1000, maxDelayMs: 60_000 };

/** N devices on one durable outbox. */
export class GatewayDevices extends EventEmitter<GatewayDevicesEvents> {
  readonly #options: GatewayDevicesOptions;
  readonly #store: OutboxStore;
  readonly #slots = new Map<string, Slot>();
  readonly #lifetime = new AbortController();
  #closing: Promise<void> | undefined;
  readonly #onDrop = (drop: OutboxDrop): void => {
    // A refusal by the broker comes from the connection, with its error.
    if (drop.reason === 'rejected' || !this.#slots.has(drop.clientId)) return;
    const report = { clientId: drop.clientId, seq: drop.seq, reason: drop.reason };
    this.emit('dropped', drop.id === undefined ? report : { ...report, id: drop.id });
  };

  /** @throws ValidationError `InvalidClientId` for a ClientId listed twice. */
  constructor(clientIds: readonly string[], options: GatewayDevicesOptions) {
    super();
    this.#options = options;
    this.#store = options.outbox;
    for (const clientId of clientIds) {
      if (this.#slots.has(clientId)) throw new ValidationError('InvalidClientId', `ClientId ${clientId} is listed twice: a device has one connection`);
      this.#slots.set(clientId, { clientId, state: 'connecting', connection: undefined, run: undefined });
    }
    this.#store.on('drop', this.#onDrop);
  }

  /** The ClientIds held. */
  get clientIds(): string[] {
    return [...this.#slots.keys()];
  }

  /** Where a device is (undefined: not held). */
  state(clientId: string): GatewayDeviceState | undefined {
    return this.#slots.get(clientId)?.state;
  }

  /** Messages of the held devices waiting in the outbox (accepted, not yet delivered or dropped). */
  get waiting(): number {
    let messages = 0;
    for (const clientId of this.#slots.keys()) messages += this.#store.device(clientId).messages;
    return messages;
  }

  /** Start connecting every device (at once; a device whose first CONNECT fails tries again with backoff). */
  start(): void {
    for (const slot of this.#slots.values()) slot.run ??= this.#connect(slot);
  }

  /**
   * Hand over a message of a held device: resolves once it is on disk, whatever its connection is doing.
   * @throws ValidationError `UnknownDevice` for a ClientId not held; the store's refusals (`OutboxFull`, …).
   */
  async publish(clientId: string, topic: string, payload: Buffer | string, options: EnqueueOptions = {}): Promise<PublishAccepted & { seq: number }> {
    if (!this.#slots.has(clientId)) throw new ValidationError('UnknownDevice', `ClientId ${clientId} is not one of the gateway's devices`);
    return enqueueDurable(this.#store, clientId, topic, payload, options);
  }

  /**
   * Stop connecting and end every connection: each online one first gets its `endTimeoutMs` to deliver what waits
   * (from disk too); what is left stays in the outbox for the next run. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#lifetime.abort(new Error('the gateway is closing'));
      await Promise.all(
        [...this.#slots.values()].map(async (slot) => {
          await slot.connection?.end();
          await slot.run?.catch(() => undefined);
          this.#set(slot, 'closed');
        }),
      );
      this.#store.off('drop', this.#onDrop);
    })();
    return this.#closing;
  }

  #set(slot: Slot, state: GatewayDeviceState, error?: ApsaraMqDeviceError): void {
    if (slot.state === state && error === undefined) return;
    slot.state = state;
    this.emit('device', error === undefined ? { clientId: slot.clientId, state } : { clientId: slot.clientId, state, error });
  }

  /** Connect a device, again with backoff while its first CONNECT fails for a reason that may pass. */
  async #connect(slot: Slot): Promise<void> {
    const signal = this.#lifetime.signal;
    const retry = this.#options.retry ?? FIRST_CONNECT_RETRY;
    for (let attempt = 0; !signal.aborted; attempt++) {
      let connection: DeviceConnection;
      try {
        const credential = await this.#options.credentialFor(slot.clientId);
        connection = await connectDevice({ ...this.#options.connect, credential, outbox: this.#store, signal });
      } catch (cause) {
        if (signal.aborted) return;
        const error = toApsaraMqDeviceError(cause);
        if (!error.retryable) {
          this.#set(slot, 'failed', error);
          return;
        }
        this.#set(slot, 'offline', error);
        await sleep(fullJitterDelay(attempt, retry, this.#options.random), signal).catch(() => undefined);
        continue;
      }
      slot.connection = connection;
      connection.on('delivered', (report) => this.emit('delivered', report));
      connection.on('dropped', (report) => {
        if (report.reason === 'rejected') this.emit('dropped', report);
      });
      connection.on('online', () => this.#set(slot, 'online'));
      connection.on('offline', () => this.#set(slot, 'offline'));
      connection.on('error', (error) => this.emit('warning', { clientId: slot.clientId, error }));
      this.#set(slot, 'online');
      const [{ error }] = await once(connection, 'closed');
      slot.connection = undefined;
      if (signal.aborted) return;
      // It gave up for good (a refused credential, a takeover loop): its messages stay on disk.
      this.#set(slot, 'failed', error);
      return;
    }
  }
}
