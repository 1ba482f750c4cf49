/**
 * A simulated device that is the library: `simulate --client connector` runs every device as a real
 * {@link DeviceConnection} (`connectDevice`), with its reconnect backoff, its outbox and its credential ladder as a
 * user's device has them (the library's defaults), so a game day measures what users ship. It reports the same
 * metrics as the raw-socket device ({@link SimulatedDevice}), which stays the default for scale.
 */
import { type DeviceConnection, connectDevice } from '../connector/connect.js';
import type { CredentialSource, DeviceCredential } from '../credential.js';
import { isApsaraMqDeviceError } from '../errors.js';
// Types only: the store is opened by the caller, so the simulator never loads the outbox's engine.
import type { OutboxStore } from '../outbox/store.js';
import { fullJitterDelay } from '../util/backoff.js';
import { RECONNECT_BACKOFF, type DeviceContext } from './device.js';
import { Pause } from './clock.js';
import { stampPayload } from './ledger.js';

/** The connection's options a device of the run gets besides its credential. */
export interface ConnectorDeviceOptions {
  /** Where it connects: the broker, or its group's port of the fault relay. */
  brokerUrl: string;
  /** The credential ladder after a refusal (the provisioner's store → Get → Register); none: it cannot heal a revoke. */
  ladder?: CredentialSource;
  /** The durable outbox of the run's process (the connector's `outbox` option); none: the outbox in memory. */
  outbox?: OutboxStore;
}

/** One device of the fleet as a {@link DeviceConnection}. */
export class ConnectorDevice {
  readonly index: number;
  readonly #ctx: DeviceContext;
  readonly #topic: string;
  readonly #options: ConnectorDeviceOptions;
  readonly #source: CredentialSource;
  #connection: DeviceConnection | undefined;
  #timer: unknown;
  /** The wait between two connect attempts; stopping cuts it short. */
  readonly #pause: Pause;
  #publishing = false;
  #stopped = false;
  readonly #abort = new AbortController();

  constructor(index: number, credential: DeviceCredential, topic: string, ctx: DeviceContext, options: ConnectorDeviceOptions) {
    this.index = index;
    this.#ctx = ctx;
    this.#pause = new Pause(ctx.clock);
    this.#topic = topic;
    this.#options = options;
    const ladder = options.ladder;
    // The first connect uses the provisioned credential as it is; after a refusal the ladder climbs.
    this.#source = async (request) => (request.reason === 'connect' || !ladder ? credential : ladder(request));
  }

  /**
   * Connect (and subscribe, when the run does), trying again after a retryable failure of the first connect (the
   * library fails the first connect instead of retrying it). Resolves true once online.
   */
  async start(): Promise<boolean> {
    const { settings, metrics, clock } = this.#ctx;
    for (let attempt = 0; attempt < settings.connectAttempts; attempt++) {
      if (attempt > 0) await this.#pause.sleep(fullJitterDelay(attempt - 1, RECONNECT_BACKOFF, this.#ctx.random));
      if (this.#stopped) return false;
      const opened = clock.now();
      metrics.connectSent(opened);
      let connection: DeviceConnection;
      try {
        connection = await connectDevice({
          credential: this.#source,
          brokerUrl: this.#options.brokerUrl,
          protocolVersion: settings.protocol,
          keepalive: settings.keepalive,
          connectTimeoutMs: settings.connectTimeoutMs,
          signal: this.#abort.signal,
          random: this.#ctx.random,
          ...(this.#options.outbox === undefined ? {} : { outbox: this.#options.outbox }),
          ...(this.#ctx.broker.ca === undefined ? {} : { ca: this.#ctx.broker.ca as string | Buffer | string[] | Buffer[] }),
          ...(this.#ctx.broker.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: this.#ctx.broker.rejectUnauthorized }),
        });
      } catch (error) {
        if (this.#stopped) return false;
        const code = isApsaraMqDeviceError(error) ? error.code : 'UnknownError';
        metrics.error(code);
        if (code === 'TooManyOpenFiles') this.#ctx.onFileLimit();
        if (!isApsaraMqDeviceError(error) || !error.retryable) return false;
        continue;
      }
      this.#connection = connection;
      metrics.firstConnack(clock.now(), clock.now() - opened);
      this.#online();
      this.#listen(connection);
      if (settings.subscribe) {
        try {
          await connection.subscribe(this.#topic, { qos: settings.qos });
        } catch (error) {
          metrics.error(isApsaraMqDeviceError(error) ? error.code : 'SubscribeRejected');
        }
      }
      if (this.#publishing) this.#startPublishing();
      return true;
    }
    return false;
  }

  #listen(connection: DeviceConnection): void {
    const { metrics, clock } = this.#ctx;
    connection.on('online', () => {
      metrics.reconnects += 1;
      this.#online();
    });
    connection.on('offline', () => {
      metrics.error('ConnectionLost');
      this.#offline();
    });
    // What it does while offline, so that a device a fault left offline says why (backing off, or connecting).
    connection.on('reconnecting', ({ delayMs }) => this.#ctx.heal?.retrying(this.index, delayMs));
    connection.on('state', ({ to }) => {
      if (to === 'connecting') this.#ctx.heal?.connecting(this.index);
    });
    connection.on('auth-failed', () => metrics.error('CredentialRejected'));
    connection.on('credential-refreshed', () => metrics.credentialRefetched());
    connection.on('error', (error) => metrics.error(error.code));
    connection.on('closed', ({ error }) => {
      // It gave up (a permanent failure): it publishes no more. Its error is counted by 'error' already.
      if (error && !this.#stopped) this.#stopPublishing();
      this.#offline();
    });
    if (this.#ctx.settings.subscribe) {
      connection.on('message', (_topic, payload) => {
        if (payload.length >= 8) {
          const now = clock.now();
          metrics.deliveredAfter(now - payload.readDoubleBE(0), now);
        }
      });
    }
  }

  #countedOnline = false;

  #online(): void {
    if (this.#countedOnline) return;
    this.#countedOnline = true;
    this.#ctx.metrics.wentOnline();
    this.#ctx.heal?.online(this.index);
  }

  #offline(): void {
    if (!this.#countedOnline) return;
    this.#countedOnline = false;
    this.#ctx.metrics.wentOffline();
    this.#ctx.heal?.offline(this.index);
  }

  /** Enter or leave the publishing phase. The library takes messages while offline too: its outbox holds them. */
  setPublishing(on: boolean): void {
    this.#publishing = on;
    if (on && this.#connection) this.#startPublishing();
    if (!on) this.#stopPublishing();
  }

  #startPublishing(): void {
    const interval = this.#ctx.settings.publishIntervalMs;
    if (interval <= 0 || this.#timer !== undefined) return;
    this.#timer = this.#ctx.clock.setTimeout(() => this.#tick(), this.#ctx.random() * interval);
  }

  #stopPublishing(): void {
    if (this.#timer !== undefined) this.#ctx.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    const { clock, settings, metrics, payloadTemplate, ledger } = this.#ctx;
    this.#timer = clock.setTimeout(() => this.#tick(), settings.publishIntervalMs);
    const connection = this.#connection;
    if (!connection || connection.state === 'closed' || connection.state === 'closing') return;
    const payload = Buffer.from(payloadTemplate);
    const now = clock.now();
    const seq = ledger?.accept(this.index);
    if (seq === undefined) payload.writeDoubleBE(now, 0);
    else stampPayload(payload, 0, now, this.index, seq);
    metrics.publishSent(now);
    connection.publish(this.#topic, payload, { qos: settings.qos }).then(
      () => {
        if (settings.qos > 0) metrics.puback();
        if (seq !== undefined) ledger?.acked(this.index, seq);
      },
      (error: unknown) => {
        const code = isApsaraMqDeviceError(error) ? error.code : 'PublishRejected';
        // Still held when the run ended the connection (after the drain): neither refused nor lost, held.
        if (this.#stopped && code === 'ConnectionClosed') {
          if (seq !== undefined) ledger?.held(this.index, seq);
          return;
        }
        metrics.error(code);
        if (seq !== undefined) ledger?.refused(this.index, seq);
      },
    );
  }

  /**
   * Messages the library still holds (queued while offline, or awaiting their PUBACK); with a durable outbox, also
   * those on disk beyond the window it reads into memory.
   */
  get pending(): number {
    const outbox = this.#connection?.outbox;
    return outbox ? Math.max(outbox.messages, outbox.durable?.stored ?? 0) : 0;
  }


  /** End the connection: what is in flight gets the library's `endTimeoutMs`, then DISCONNECT. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stopPublishing();
    this.#pause.wake();
    const connection = this.#connection;
    if (!connection) {
      // Still connecting: cut it short (an abort of a live connection would close it without DISCONNECT).
      this.#abort.abort();
      return;
    }
    await connection.end();
    this.#offline();
    connection.removeAllListeners();
  }
}
