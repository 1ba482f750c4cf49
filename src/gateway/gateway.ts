/**
 * A gateway: N devices in one process, each its own {@link DeviceConnection} with its own credential and session,
 * sharing one durable outbox (`OutboxStore`), one credential source (store first, one registrar) and one
 * {@link ConnectPacer}, which every CONNECT of every device awaits (the connector's `connectGate`): at start, after
 * an uplink outage, after a broker restart, a fleet comes back at the configured pace, not at once.
 *
 * A device role module: it loads the connector, never the registrar (the credential sources are passed in) nor the
 * outbox's engine (the store is passed in), nor prom-client (metrics.ts, loaded by {@link Gateway.metrics}).
 */
import { EventEmitter } from 'node:events';
import { type DeviceConnection, openConnection } from '../connector/connect.js';
import type { DeviceConnectionEvents, PublishAccepted } from '../connector/connection-types.js';
import { type EnqueueOptions, enqueueHeard } from '../connector/durable.js';
import { type ResolvedConnectOptions, resolveConnectOptions } from '../connector/options.js';
import type { ConnectionState } from '../connector/state.js';
import { assertClientId, type CredentialSource } from '../credential.js';
import { type ApsaraMqDeviceError, ValidationError, toApsaraMqDeviceError } from '../errors.js';
import type { OutboxDrop, OutboxDropReason, OutboxStore } from '../outbox/store.js';
import { type BackoffOptions, fullJitterDelay, sleep } from '../util/backoff.js';
import { optionChecks } from '../util/option-checks.js';
import { Semaphore } from '../util/semaphore.js';
import { ConnectPacer } from './pacer.js';
import type { GatewayMetrics, GatewayMetricsOptions } from './metrics.js';
import type { ConnectOutcome, GatewayCounts, GatewayDeviceInfo, GatewayDeviceState, GatewayEvents, GatewayOptions } from './types.js';

export type { ConnectOutcome, GatewayCounts, GatewayDeviceInfo, GatewayDeviceState, GatewayEvents, GatewayMessage, GatewayOptions } from './types.js';

interface Slot {
  readonly clientId: string;
  state: GatewayDeviceState;
  connection: DeviceConnection | undefined;
  /**
   * Stops the steps of its run before a connection exists (a credential read, the backoff between first CONNECTs).
   * Made for those steps and let go once online: an AbortSignal with a listener costs about a kilobyte, and a held
   * device keeps none (its connection is stopped with `end()`).
   */
  phase: AbortController | undefined;
  /** Its connection while the first CONNECT is under way (before `connection` is set). */
  starting: DeviceConnection | undefined;
  run: Promise<void> | undefined;
  /** It was online once: its CONNECTs count as reconnects. */
  wasOnline: boolean;
  /** When its CONNECT under way got its slot (performance.now()), undefined when none is under way. */
  connectingSince: number | undefined;
  /** Removed, or the gateway closing: its connection's close is not a failure. */
  ending: boolean;
  /** Its credential source once read: a retry of its first CONNECT does not read (or register) it again. */
  source?: CredentialSource;
}

/** The key of the hook metrics.ts uses (not part of the public API). */
export const OBSERVE_DELIVERY = Symbol('observe delivery');

/**
 * A device's own backoff in a gateway, between its CONNECTs (the first ones, and its connection's reconnects unless
 * `connect.reconnect` says otherwise): short, because the pacer is the fleet's backoff. During an outage every device
 * keeps its place in the pacer's queue, so when the broker is back the queue is full and the fleet returns at
 * `connectRate`; a device's long exponential backoff (a minute) would instead spread the return over that minute,
 * below the pace. The broker never sees more than `connectRate` CONNECTs a second either way.
 */
export const GATEWAY_BACKOFF: BackoffOptions = Object.freeze({ minDelayMs: 500, maxDelayMs: 5000 });
/** Credential sources asked at once (store reads, or registrations through the registrar's own limits). */
const CREDENTIAL_READS = 32;
/** The default pace: 10,000 devices in 100 s, well under what a broker and an OpenAPI account take. */
export const DEFAULT_CONNECT_RATE = 100;
/** The run of a device that got online: ended (shared, so that a held device keeps no promise of its own). */
const RAN: Promise<void> = Promise.resolve();
const REFUSED_CODES = new Set(['CredentialRejected', 'IdentifierRejected', 'ConnackRefused', 'TokenRejected']);
/** `publish()` without options: one object, not one per message. */
const NO_OPTIONS: EnqueueOptions = Object.freeze({});

const zeroOutcomes = (): Record<ConnectOutcome, number> => ({ accepted: 0, refused: 0, failed: 0 });

/** A connection state as a device state. */
function deviceState(state: ConnectionState): GatewayDeviceState {
  switch (state) {
    case 'online':
      return 'online';
    case 'connecting':
      return 'connecting';
    case 'backing-off':
    case 'refetching-credential':
      return 'backing-off';
    default:
      return 'closed';
  }
}

/**
 * N devices in one process on one durable outbox, connected at a pace.
 *
 * @example
 * const outbox = await openOutboxStore({ dir: '/var/lib/gw' });
 * const gateway = new Gateway({ outbox, credentials: storeCredentials({ instanceId, store, registrar }), connect: { brokerUrl }, connectRate: 200 });
 * gateway.add('GID_demo@@@dev-1');
 * gateway.start();
 * await gateway.publish('GID_demo@@@dev-1', 'demo/telemetry', '21.5');
 * await gateway.close({ deadlineMs: 10_000 });
 * await outbox.close();
 */
export class Gateway extends EventEmitter<GatewayEvents> {
  readonly #options: GatewayOptions;
  readonly #store: OutboxStore;
  readonly #credentialFor: (clientId: string, signal?: AbortSignal) => CredentialSource | Promise<CredentialSource>;
  readonly #unregister: ((clientId: string) => Promise<unknown>) | undefined;
  readonly #pacer: ConnectPacer;
  readonly #credentialReads = new Semaphore(CREDENTIAL_READS);
  readonly #slots = new Map<string, Slot>();
  readonly #states: Record<GatewayDeviceState, number> = { connecting: 0, online: 0, 'backing-off': 0, failed: 0, closed: 0 };
  readonly #counts = { connects: zeroOutcomes(), reconnects: zeroOutcomes(), accepted: 0, delivered: 0, possibleDuplicates: 0, dropped: { full: 0, expired: 0, corrupt: 0, rejected: 0 } as Record<OutboxDropReason, number> };
  #started = false;
  #closing: Promise<void> | undefined;
  #metrics: Promise<GatewayMetrics> | undefined;
  /** Acceptance times of messages accepted in this run, by seq, while metrics are on (the delivery histogram). */
  #acceptedAt: Map<number, number> | undefined;
  /** The connections' options, checked and resolved on the first connect, shared by all of them. */
  #resolved: ResolvedConnectOptions | undefined;
  #deliveryObserver: ((seconds: number) => void) | undefined;
  readonly #onDrop = (drop: OutboxDrop): void => {
    // A refusal by the broker comes from the connection, with its error.
    if (drop.reason === 'rejected' || !this.#slots.has(drop.clientId)) return;
    const report = { clientId: drop.clientId, seq: drop.seq, reason: drop.reason };
    this.#dropped(drop.id === undefined ? report : { ...report, id: drop.id });
  };

  /**
   * Every CONNECT of a device, first or not, waits for its slot; its answer is timed from the slot. One function for
   * all the devices (the request names the device), as the listeners below: a gateway holds thousands.
   */
  readonly #connectGate = async (request: { clientId: string; signal: AbortSignal }): Promise<void> => {
    const slot = this.#slots.get(request.clientId);
    if (slot === undefined) return; // removed: its connection is being ended
    this.#set(slot, 'connecting');
    await this.#pacer.wait(request.signal);
    slot.connectingSince = performance.now();
  };

  /** The listeners of every connection, shared: EventEmitter calls each with the connection as `this`. */
  readonly #listeners = this.#connectionListeners();

  /** @throws ValidationError `InvalidOption` for a bad pace or a missing outbox or credentials. */
  constructor(options: GatewayOptions) {
    super();
    if (options === null || typeof options !== 'object') throw new ValidationError('InvalidOption', 'Gateway needs an options object');
    if (options.outbox === undefined) throw new ValidationError('InvalidOption', "Option outbox is required: an OutboxStore (openOutboxStore({ dir }) from 'apsaramq-device/outbox')");
    const credentials = options.credentials;
    if (typeof credentials === 'function') {
      this.#credentialFor = credentials;
      this.#unregister = undefined;
    } else if (credentials !== null && typeof credentials === 'object' && typeof credentials.credentialFor === 'function') {
      this.#credentialFor = (clientId, signal) => credentials.credentialFor(clientId, signal);
      this.#unregister = credentials.unregister;
    } else {
      throw new ValidationError('InvalidOption', 'Option credentials is required: storeCredentials({ instanceId, store, registrar }), or a function giving the credential source of a ClientId');
    }
    this.#options = options;
    this.#store = options.outbox;
    this.#pacer = new ConnectPacer({ ratePerSecond: options.connectRate ?? DEFAULT_CONNECT_RATE, jitterMs: options.connectJitterMs ?? 0, ...(options.random ? { random: options.random } : {}) });
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

  /** One device: its state, its connection, its messages in the outbox (undefined: not held). */
  device(clientId: string): GatewayDeviceInfo | undefined {
    const slot = this.#slots.get(clientId);
    if (!slot) return undefined;
    return { clientId, state: slot.state, connection: slot.connection, outbox: this.#store.device(clientId) };
  }

  /** The connection of a device while it has one (to subscribe, or to publish QoS 0). */
  connection(clientId: string): DeviceConnection | undefined {
    return this.#slots.get(clientId)?.connection;
  }

  /** Messages of the held devices waiting in the outbox (accepted, not yet delivered or dropped). */
  get waiting(): number {
    let messages = 0;
    for (const clientId of this.#slots.keys()) messages += this.#store.device(clientId).messages;
    return messages;
  }

  /**
   * Aggregate counts: devices by state, CONNECTs by outcome, messages, the outbox. In memory, no I/O; cheap enough to
   * read on every event (`outbox`, which walks the store's devices, is computed only when read).
   */
  get counts(): GatewayCounts {
    const { connecting, online, failed } = this.#states;
    const c = this.#counts;
    const store = this.#store;
    return {
      devices: this.#slots.size,
      states: { connecting, online, 'backing-off': this.#states['backing-off'], failed },
      waitingToConnect: this.#pacer.waiting,
      connects: { ...c.connects },
      reconnects: { ...c.reconnects },
      accepted: c.accepted,
      delivered: c.delivered,
      possibleDuplicates: c.possibleDuplicates,
      dropped: { ...c.dropped },
      get outbox() {
        const { messages, bytes } = store.stats();
        return { messages, bytes };
      },
    };
  }

  /**
   * Hold a device: once started, it connects in its turn. Its messages already in the outbox are delivered then.
   * @throws ValidationError `InvalidClientId` for a bad or already held ClientId; `GatewayClosed` after close().
   */
  add(clientId: string): void {
    this.#assertOpen();
    assertClientId(clientId);
    if (this.#slots.has(clientId)) throw new ValidationError('InvalidClientId', `ClientId ${clientId} is already held by the gateway: a device has one connection`);
    const slot: Slot = { clientId, state: 'connecting', connection: undefined, phase: undefined, starting: undefined, run: undefined, wasOnline: false, connectingSince: undefined, ending: false };
    this.#slots.set(clientId, slot);
    this.#states.connecting += 1;
    if (this.#started) slot.run = this.#connect(slot);
  }

  /**
   * Stop holding a device: its session ends (an online one first gets `endTimeoutMs` to deliver what waits); what
   * is left of its messages stays in the outbox (a later `add` delivers it). With `unregister: true` the device is
   * then UnRegistered (the credentials' registrar). Resolves once its connection is closed.
   * @throws ValidationError `UnknownDevice` for a ClientId not held; `InvalidOption` for `unregister` without a registrar.
   */
  async remove(clientId: string, options: { unregister?: boolean } = {}): Promise<void> {
    const slot = this.#slots.get(clientId);
    if (!slot) throw new ValidationError('UnknownDevice', `ClientId ${clientId} is not one of the gateway's devices`);
    if (options.unregister && !this.#unregister) throw new ValidationError('InvalidOption', 'remove(…, { unregister: true }) needs a registrar: pass credentials: storeCredentials({ …, registrar })');
    this.#slots.delete(clientId);
    await this.#end(slot, false);
    if (options.unregister) await (this.#unregister as (clientId: string) => Promise<unknown>)(clientId);
  }

  /** Start connecting every device held, at the pace (and those added later). */
  start(): void {
    this.#assertOpen();
    this.#started = true;
    for (const slot of this.#slots.values()) slot.run ??= this.#connect(slot);
  }

  /**
   * Hand over a message of a held device: resolves once it is on disk, whatever its connection is doing.
   * @throws ValidationError `UnknownDevice` for a ClientId not held; the store's refusals (`OutboxFull`, …).
   */
  publish(clientId: string, topic: string, payload: Buffer | string, options: EnqueueOptions = NO_OPTIONS): Promise<PublishAccepted & { seq: number }> {
    if (!this.#slots.has(clientId)) return Promise.reject(new ValidationError('UnknownDevice', `ClientId ${clientId} is not one of the gateway's devices`));
    // Counted as it is accepted, before its promise settles: no reaction of the gateway's own per message (a gateway
    // hands over every message of every device here).
    return enqueueHeard(this.#store, clientId, topic, payload, options, this.#onAccepted);
  }

  readonly #onAccepted = (accepted: PublishAccepted & { seq: number }): void => {
    this.#counts.accepted += 1;
    this.#acceptedAt?.set(accepted.seq, performance.now());
  };

  /**
   * The gateway's Prometheus metrics (`apsaramq_device_…`, README "Gateways"), through prom-client, an optional
   * peer dependency loaded here. The same object on every call.
   * @throws (rejects) ConfigurationError `MissingDependency` without prom-client.
   */
  metrics(options: GatewayMetricsOptions = {}): Promise<GatewayMetrics> {
    if (this.#metrics === undefined) {
      const made = import('./metrics.js').then(({ createGatewayMetrics }) => createGatewayMetrics(this, options));
      // A failure (prom-client missing) is not kept: the next call tries again.
      made.catch(() => {
        if (this.#metrics === made) this.#metrics = undefined;
      });
      this.#metrics = made;
    }
    return this.#metrics;
  }

  /**
   * Stop connecting and end every connection: each online one gets up to `endTimeoutMs` to deliver what waits (from
   * disk too), and all of them together at most `deadlineMs`; what is left stays in the outbox for the next run.
   * Idempotent. The outbox stays open (the application closes it).
   */
  close(options: { deadlineMs?: number } = {}): Promise<void> {
    // Checked before anything stops: a deadline past the timers' range would fire at once and force every end.
    let deadlineMs: number | undefined;
    try {
      deadlineMs = options.deadlineMs === undefined || options.deadlineMs === Number.POSITIVE_INFINITY ? undefined : optionChecks().milliseconds('deadlineMs', options.deadlineMs);
    } catch (error) {
      return Promise.reject(error as Error);
    }
    this.#closing ??= (async () => {
      this.#pacer.close();
      const slots = [...this.#slots.values()];
      const ends = Promise.all(slots.map((slot) => this.#end(slot, false)));
      if (deadlineMs !== undefined) {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), deadlineMs)));
        const outcome = await Promise.race([ends, late]);
        clearTimeout(timer);
        if (outcome === 'late') await Promise.all(slots.map((slot) => this.#end(slot, true)));
      }
      await ends;
      this.#store.off('drop', this.#onDrop);
    })();
    return this.#closing;
  }

  #assertOpen(): void {
    if (this.#closing) throw new ValidationError('GatewayClosed', 'The gateway is closed: make a new one');
  }

  /** End a device's run and connection (force: at once, without draining). */
  async #end(slot: Slot, force: boolean): Promise<void> {
    // An open connection ends by itself (draining unless forced); a first CONNECT under way (or its wait for a slot)
    // ends at once; the phase's signal stops a credential read, the source's first ask, or the backoff between first
    // CONNECTs.
    slot.ending = true;
    const connection = slot.connection;
    const starting = slot.starting?.end(true);
    await connection?.end(force);
    await starting;
    slot.phase?.abort(new Error('the device is removed or the gateway is closing'));
    await slot.run?.catch(() => undefined);
    this.#set(slot, 'closed');
  }

  #set(slot: Slot, state: GatewayDeviceState, error?: ApsaraMqDeviceError): void {
    const from = slot.state;
    if (from === state && error === undefined) return;
    if (from === 'closed') return; // a late report of a connection already ended
    slot.state = state;
    this.#states[from] -= 1;
    this.#states[state] += 1;
    if (this.listenerCount('device') > 0) this.emit('device', error === undefined ? { clientId: slot.clientId, state, from } : { clientId: slot.clientId, state, from, error });
  }

  /** A CONNECT got its answer (or none). */
  #answered(slot: Slot, outcome: ConnectOutcome): void {
    const since = slot.connectingSince;
    if (since === undefined) return;
    slot.connectingSince = undefined;
    const reconnect = slot.wasOnline;
    (reconnect ? this.#counts.reconnects : this.#counts.connects)[outcome] += 1;
    if (outcome === 'accepted') slot.wasOnline = true;
    this.emit('connect', { clientId: slot.clientId, reconnect, outcome, durationMs: performance.now() - since });
  }

  #dropped(report: DeviceConnectionEvents['dropped'][0]): void {
    this.#counts.dropped[report.reason] += 1;
    this.#acceptedAt?.delete(report.seq);
    this.emit('dropped', report);
  }

  /** Connect a device, again with backoff while its first CONNECT fails for a reason that may pass. */
  async #connect(slot: Slot): Promise<void> {
    const retry = this.#options.retry ?? GATEWAY_BACKOFF;
    // The connection exists, its first CONNECT about to start: #end can stop it now (and does at once if it ran meanwhile).
    const started = (connection: DeviceConnection): void => {
      if (slot.ending) void connection.end(true);
      else slot.starting = connection;
    };
    for (let attempt = 0; !slot.ending; attempt++) {
      let connection: DeviceConnection;
      // Its signal is made only if a step below needs it (an AbortSignal's first access makes it).
      const phase = (slot.phase = new AbortController());
      try {
        // Credentials are read (or registered) a few at a time, ahead of the pacer: 10,000 devices starting do not
        // read 10,000 files at once, and the CONNECT itself is what waits for its slot, so the broker sees the pace.
        let credential = slot.source;
        if (credential === undefined) {
          const release = await this.#credentialReads.acquire(`Reading the credential of ${slot.clientId}`, phase.signal);
          try {
            credential = slot.source = await this.#credentialFor(slot.clientId, phase.signal);
          } finally {
            release();
          }
        }
        if (slot.ending) return;
        const options = { reconnect: GATEWAY_BACKOFF, ...this.#options.connect, credential, outbox: this.#store, connectGate: this.#connectGate };
        // Resolved once for every device (the same options but the credential, which they do not hold).
        this.#resolved ??= resolveConnectOptions(options);
        // The phase's signal stops the source's first ask (#end has no connection to end yet).
        connection = await openConnection(options, { started, shared: this.#resolved, asking: phase.signal });
      } catch (cause) {
        slot.starting = undefined;
        if (slot.ending) return;
        const error = toApsaraMqDeviceError(cause);
        this.#answered(slot, REFUSED_CODES.has(error.code) ? 'refused' : 'failed');
        if (!error.retryable) {
          this.#set(slot, 'failed', error);
          return;
        }
        this.#set(slot, 'backing-off', error);
        await sleep(fullJitterDelay(attempt, retry, this.#options.random), phase.signal).catch(() => undefined);
        continue;
      }
      slot.starting = undefined;
      slot.phase = undefined;
      if (slot.ending) {
        await connection.end(true);
        return;
      }
      slot.connection = connection;
      this.#answered(slot, 'accepted');
      // The run ends here, online: nothing waits per device while its connection runs (#end ends the connection).
      for (const [event, listener] of this.#listeners) connection.on(event, listener as never);
      // Its settled promise is let go too (a held device keeps no promise); RAN still tells start() not to run it again.
      slot.run = RAN;
      this.#set(slot, 'online');
      return;
    }
  }

  /** The listeners every connection gets: plain functions (EventEmitter calls them with the connection as `this`). */
  #connectionListeners(): [keyof DeviceConnectionEvents, (...args: never[]) => void][] {
    const gateway = this;
    type Args<E extends keyof DeviceConnectionEvents> = DeviceConnectionEvents[E];
    return [
      [
        'delivered',
        function (report: Args<'delivered'>[0]): void {
          gateway.#counts.delivered += 1;
          if (report.possibleDuplicate) gateway.#counts.possibleDuplicates += 1;
          gateway.#delivered(report.seq);
          gateway.emit('delivered', report);
        },
      ],
      [
        'dropped',
        function (report: Args<'dropped'>[0]): void {
          if (report.reason === 'rejected') gateway.#dropped(report);
        },
      ],
      [
        'message',
        function (this: DeviceConnection, topic: Args<'message'>[0], payload: Args<'message'>[1], packet: Args<'message'>[2]): void {
          gateway.emit('message', { clientId: this.clientId, topic, payload, packet });
        },
      ],
      [
        'state',
        function (this: DeviceConnection, { from, to }: Args<'state'>[0]): void {
          const slot = gateway.#slotOf(this);
          if (slot === undefined) return;
          if (from === 'connecting' && to !== 'online') gateway.#answered(slot, to === 'refetching-credential' ? 'refused' : 'failed');
          if (to === 'online') gateway.#answered(slot, 'accepted');
          // `closed` is set by the listener below (and `closing` is the gateway's own doing).
          if (to !== 'closed' && to !== 'closing') gateway.#set(slot, deviceState(to));
        },
      ],
      [
        'error',
        function (this: DeviceConnection, error: Args<'error'>[0]): void {
          gateway.emit('warning', { clientId: this.clientId, error });
        },
      ],
      [
        'closed',
        function (this: DeviceConnection, info: Args<'closed'>[0]): void {
          const slot = gateway.#slotOf(this);
          if (slot === undefined) return;
          slot.connection = undefined;
          slot.connectingSince = undefined;
          // It gave up for good (a refused credential, a takeover loop): its messages stay on disk.
          if (!slot.ending) gateway.#set(slot, 'failed', info.error);
        },
      ],
    ];
  }

  /** The slot whose connection this is (undefined once removed, or for a connection it no longer holds). */
  #slotOf(connection: DeviceConnection): Slot | undefined {
    const slot = this.#slots.get(connection.clientId);
    return slot?.connection === connection ? slot : undefined;
  }

  #delivered(seq: number): void {
    const at = this.#acceptedAt?.get(seq);
    if (at === undefined) return;
    this.#acceptedAt?.delete(seq);
    this.#deliveryObserver?.((performance.now() - at) / 1000);
  }

  /** Metrics (metrics.ts): observe the delivery latency (seconds) of every message accepted from now on. @internal */
  [OBSERVE_DELIVERY](observer: (seconds: number) => void): void {
    this.#deliveryObserver = observer;
    this.#acceptedAt ??= new Map();
  }
}
