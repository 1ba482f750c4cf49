/**
 * The session control of one device: {@link DeviceConnection} feeds the state machine (state.ts) what the network
 * did and carries out what it decides. What the application does on it (publish, subscribe, …, its identity, its
 * errors and logs) is its base class's, in connection-operations.ts. Its collaborators: an {@link Attempt} per CONNECT
 * (attempt.ts), the outbox (delivery.ts, outbox.ts, outbox-items.ts), the Token-mode renewal (token-renewal.ts) and
 * the wording of its errors (connection-errors.ts).
 */
import { performance } from 'node:perf_hooks';
import type { IPublishPacket } from 'mqtt';
import { AbortedError, type ApsaraMqDeviceError, ConnectionClosedError, toApsaraMqDeviceError } from '../errors.js';
import { ATTEMPT_EVENT, ATTEMPT_MESSAGE, Attempt, type AttemptEvent, type AttemptListener, InboundStore, clientOptions, errorCode } from './attempt.js';
import { FailureRecord, describeCode, sessionProtocolError } from './connection-errors.js';
import { ASSERT_OPEN, ConnectionOperations, DELIVERY, EMIT_ERROR, LOG, LOGGER, LOGIN, OPTIONS, PROGRESS, PUMP, URL_OF, type DurableModule } from './connection-operations.js';
export type { DurableModule } from './connection-operations.js';
import type { ConnectionMode } from './connection-types.js';
import type { Login } from './login.js';
import type { ResolvedConnectOptions } from './options.js';
import { type Effect, type Input, type Model, type Problem, type ConnectionState, initialModel, step } from './state.js';
import { isOperationCode } from './token-rules.js';
import { FirstSession } from './first-session.js';
import { TokenRenewal } from './token-renewal.js';

/** The key of the method that opens the first session: not part of the public entry, so only connectDevice calls it. */
export const START = Symbol('start');

/**
 * An MQTT session of one device, kept alive by an explicit state machine (see {@link ConnectionState}): it
 * reconnects after a lost session with jittered exponential backoff, climbs the recovery ladder when the broker
 * refuses the credential, waits longer after a takeover, and settles every promise it hands out.
 */
export class DeviceConnection<M extends ConnectionMode = 'DeviceCredential'> extends ConnectionOperations<M> implements AttemptListener {
  #model: Model = initialModel();
  readonly #inputs: Input[] = [];
  #dispatching = false;
  #attempt: Attempt | undefined;
  /** Numbers the attempts, so that a late callback of an old client is recognised and ignored. */
  #session = 0;
  #sessionPresent = false;
  /** CONNECTs asked for so far (through the gate, when there is one). */
  #connects = 0;
  readonly #inbound = new InboundStore();
  #timer: NodeJS.Timeout | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  /** Aborted when the connection closes: cancels a credential source still at work. Made on first use. */
  #lifetime: AbortController | undefined;
  /** Aborted when the connection closes while a CONNECT waits at the connect gate; undefined when none waits. */
  #gateStop: AbortController | undefined;
  /** The latest failures, for the error that reports them. */
  readonly #failures: FailureRecord;
  /** Token mode: the notices, the renewal and its uploads; `undefined` in DeviceCredential mode. */
  readonly #tokens: TokenRenewal | undefined;
  #closeError: ApsaraMqDeviceError | undefined;
  /** The socket is closed for good; `end()` waits for it (the promise is made only when someone waits). */
  #socketClosed = false;
  #whenClosed: { promise: Promise<void>; resolve: () => void } | undefined;
  /** connectDevice's promise, and the messages that come with the first CONNACK. */
  readonly #first = new FirstSession();
  #onCallerAbort: (() => void) | undefined;

  /**
   * Use {@link connectDevice}. `durable`: the durable outbox's module, which connectDevice loads for a connection with
   * option `outbox` (a device without one never loads it).
   */
  constructor(login: Login, options: ResolvedConnectOptions, url: string, durable?: DurableModule) {
    super(login, options, url, durable);
    const { protocolVersion, connectTimeoutMs, signal } = options;
    this.#failures = new FailureRecord({ clientId: this.clientId, url, protocolVersion, connectTimeoutMs, login, signal });
    this.#tokens =
      login.mode === 'Token'
        ? new TokenRenewal(login, {
            state: () => this.#model.state,
            attempt: () => this.#attempt,
            signal: () => this.#lifetimeSignal(),
            events: this,
            emitError: (error) => this[EMIT_ERROR](error),
            log: (level, message, fields) => this[LOG](level, message, fields),
          })
        : undefined;
  }

  /** Whether the broker said, in the latest CONNACK, that it kept the session (clean: false / a session expiry). */
  get sessionPresent(): boolean {
    return this.#sessionPresent;
  }

  /** Where the connection is now. */
  override get state(): ConnectionState {
    return this.#model.state;
  }

  /** True while a session is up (CONNACK 0, not lost, not ending). */
  get online(): boolean {
    return this.#model.state === 'online';
  }

  /** Opens the first session; resolves on CONNACK 0. Called once, by connectDevice. */
  [START](): Promise<void> {
    const caller = this[OPTIONS].signal;
    if (caller?.aborted) {
      // Closed, not only refused: its durable feed lets go of the store (else no later connection of the device could
      // use it).
      this.#input({ type: 'abort' });
      return Promise.reject(new AbortedError(`Connecting ${this.clientId} was aborted`, caller.reason));
    }
    // Ended before its first CONNECT (openConnection hands it over first): nothing goes out.
    if (this.#model.state === 'closed') return Promise.reject(new ConnectionClosedError(`The connection of ${this.clientId} was ended before its first CONNECT`));
    if (caller) {
      this.#onCallerAbort = () => {
        // The lifetime signal follows the caller's at once, with its reason (what AbortSignal.any would do, without
        // the composite signal's weak references and sets: about two kilobytes per connection).
        this.#lifetime?.abort(caller.reason);
        this.#input({ type: 'abort' });
      };
      caller.addEventListener('abort', this.#onCallerAbort, { once: true });
    }
    const first = this.#first.start();
    this[LOG]('debug', 'connecting', { brokerUrl: this[URL_OF] });
    this.#apply({ type: 'connect' });
    return first;
  }

  /**
   * Close for good. An online session first gets up to `endTimeoutMs` (default 5 s) to finish what it has sent or
   * queued (acknowledgements awaited), then sends DISCONNECT; anything still unacknowledged then, and everything
   * queued while offline, is rejected with `ConnectionClosed`. `end(true)` does not wait. Always resolves, once the
   * socket is closed; calling it again resolves too.
   */
  async end(force = false): Promise<void> {
    this.#input({ type: 'end', graceful: !force });
    if (this.#socketClosed) return;
    if (!this.#whenClosed) {
      let resolve: () => void = () => {};
      const promise = new Promise<void>((r) => (resolve = r));
      this.#whenClosed = { promise, resolve };
    }
    await this.#whenClosed.promise;
  }

  // ---- the state machine's inputs and effects

  #input(input: Input): void {
    this.#inputs.push(input);
    if (this.#dispatching) return; // an effect fed an input: it runs after the current step
    this.#dispatching = true;
    try {
      for (let next = this.#inputs.shift(); next; next = this.#inputs.shift()) {
        const from = this.#model.state;
        // The resolved options carry the state machine's settings (CoreOptions is a subset of them).
        const { model, effects } = step(this.#model, next, this[OPTIONS], this[OPTIONS].random);
        this.#model = model;
        if (model.state !== from && this.listenerCount('state') > 0) this.emit('state', { from, to: model.state });
        for (const effect of effects) this.#apply(effect);
      }
    } finally {
      this.#dispatching = false;
    }
  }

  #apply(effect: Effect): void {
    switch (effect.type) {
      case 'connect': {
        this.#session += 1;
        const gate = this[OPTIONS].connectGate;
        if (!gate) return this.#startAttempt();
        // Through the gate first: the state stays `connecting`, the CONNACK timer starts with the CONNECT.
        const session = this.#session;
        this.#attempt = undefined;
        // A signal of its own for this wait, let go when it ends: a connection waits at a gate for moments of its
        // life, and an AbortSignal costs about a kilobyte (a gateway holds thousands of connections).
        this.#gateStop?.abort(new ConnectionClosedError(`The CONNECT of ${this.clientId} it waited for was replaced by another`));
        const stop = (this.#gateStop = new AbortController());
        const request = { clientId: this.clientId, reconnect: this.#connects > 0, signal: stop.signal };
        this.#connects += 1;
        const passed = (): void => {
          if (this.#gateStop === stop) this.#gateStop = undefined;
          if (session === this.#session && this.#model.state === 'connecting') this.#startAttempt();
        };
        let waiting: void | Promise<void>;
        try {
          waiting = gate(request);
        } catch (error) {
          waiting = Promise.reject(error);
        }
        if (!(waiting instanceof Promise)) return passed();
        waiting.then(passed, (error: unknown) => {
          if (request.signal.aborted || session !== this.#session) return;
          this[EMIT_ERROR](toApsaraMqDeviceError(error));
          passed();
        });
        return;
      }
      case 'online': {
        this[LOG]('info', 'online', { sessionPresent: this.#sessionPresent });
        // Each session looks again: the clock may have moved on while it was down (or a test moved it).
        this.#tokens?.arm();
        if (!this.#sessionPresent) this[DELIVERY].restoreSubscriptions((error) => this[EMIT_ERROR](error));
        this.#first.online((topic, payload, packet) => this.emit('message', topic, payload, packet));
        this.emit('online', { sessionPresent: this.#sessionPresent });
        this[DELIVERY].sessionUp();
        this[PUMP]();
        return;
      }
      case 'offline':
        this[LOG]('warn', 'offline', {});
        this.emit('offline');
        return;
      case 'wait':
        this[LOG]('info', 'reconnecting', { attempt: effect.attempt, delayMs: effect.delayMs });
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#input({ type: 'timer' });
        }, effect.delayMs);
        this.emit('reconnecting', { attempt: effect.attempt, delayMs: effect.delayMs });
        return;
      case 'auth-failed':
        this[LOG]('warn', this[LOGIN].mode === 'Token' ? 'tokens refused' : 'credential refused', { code: effect.code, ...this[LOGIN].logFields() });
        this.emit('auth-failed', { rc: effect.code });
        return;
      case 'refetch':
        this.#refetch();
        return;
      case 'use-credential': {
        const login = this[LOGIN];
        if (login.mode === 'Token') return this.#tokens?.useRefetched();
        const next = login.use();
        if (!next) return;
        this[LOG]('info', 'credential refreshed', { deviceAccessKeyId: next.deviceAccessKeyId });
        this.emit('credential-refreshed', { credential: next });
        return;
      }
      case 'takeover': {
        const inARow = this.#model.takeover.streak;
        this[LOG]('warn', effect.confirmed ? 'session taken over by another client with this ClientId' : 'session probably taken over by another client with this ClientId', { inARow });
        this.emit('takeover', { confirmed: effect.confirmed, inARow });
        return;
      }
      case 'report':
        this[EMIT_ERROR](this.#failures.error(effect.problem));
        return;
      case 'flush':
        this.#flushTimer = setTimeout(() => this.#input({ type: 'flushed' }), this[OPTIONS].endTimeoutMs);
        this[PUMP]();
        if (this[DELIVERY].idle) this.#input({ type: 'flushed' });
        return;
      case 'close':
        this.#close(effect.problem);
        return;
    }
  }

  #startAttempt(): void {
    this.#tokens?.sessionStarting();
    this.#attempt = new Attempt(this[URL_OF], clientOptions(this[OPTIONS], this[LOGIN], this.#inbound, this[LOGGER]), { connectTimeoutMs: this[OPTIONS].connectTimeoutMs, maxPacketBytes: this[OPTIONS].maxIncomingPacketBytes }, this);
    this.#attempt.start();
  }

  /** What the current attempt reports; reports of an attempt that is no longer current are ignored. @internal */
  [ATTEMPT_EVENT](attempt: Attempt, event: AttemptEvent): void {
    if (attempt !== this.#attempt) return;
    switch (event.type) {
      case 'accepted':
        this.#sessionPresent = event.connack.sessionPresent;
        if (!event.connack.sessionPresent) this.#inbound.clear();
        this.#input({ type: 'accepted', now: performance.now() });
        return;
      case 'refused':
        this[LOG]('warn', 'connect refused', { code: describeCode(event.code, this[OPTIONS].protocolVersion) });
        this.#failures.refused(event.code);
        this.#input({ type: 'refused', code: event.code });
        return;
      case 'failed':
        this.#failures.cause = event.cause;
        this[LOG]('warn', 'connect failed', { failure: event.failure, code: errorCode(event.cause) });
        this.#input({ type: 'failed', failure: event.failure });
        return;
      case 'lost':
        this.#failures.cause = event.cause;
        if (event.violation) this[EMIT_ERROR](sessionProtocolError(event.violation, this.#failures.facts));
        this.#tokens?.sessionEnded();
        this.#input({ type: 'lost', end: this[DELIVERY].blame(event.end, this.#tokens?.notice), now: performance.now() });
        return;
    }
  }

  /** A message on the current attempt's session. @internal */
  [ATTEMPT_MESSAGE](attempt: Attempt, topic: string, payload: Buffer, packet: IPublishPacket): void {
    if (attempt !== this.#attempt) return;
    const notice = this.#tokens?.onMessage(topic, payload);
    if (notice?.handled) {
      if (notice.invalid && !isOperationCode(notice.invalid.code)) this.#failures.lastRefusal = { kind: 'notice', ...notice.invalid };
      return;
    }
    if (!this.#first.hold(topic, payload, packet)) this.emit('message', topic, payload, packet);
  }

  #refetch(): void {
    const signal = this.#lifetimeSignal();
    const login = this[LOGIN];
    this[LOG]('info', login.mode === 'Token' ? 'asking for other tokens' : 'asking for another credential', login.logFields());
    const notice = this.#tokens?.notice;
    const asked = login.mode === 'Token' ? login.refetch(signal, notice?.code, notice?.type) : login.refetch(signal);
    asked.then(
      (verdict) => this.#input({ type: 'credential', verdict }),
      (error: unknown) => {
        if (this.#model.state === 'closed') return;
        const cause = toApsaraMqDeviceError(error);
        this.#failures.cause = cause;
        this.#input({ type: 'source-failed', retryable: cause.retryable });
      },
    );
  }

  /**
   * The signal a source or gate gets: aborted when the connection closes or the caller's signal is aborted (the
   * caller's listener, added by START, aborts it too), made on first use.
   */
  #lifetimeSignal(): AbortSignal {
    if (this.#lifetime === undefined) {
      this.#lifetime = new AbortController();
      const caller = this[OPTIONS].signal;
      if (caller?.aborted) this.#lifetime.abort(caller.reason);
    }
    return this.#lifetime.signal;
  }

  // ---- the outbox

  protected override [ASSERT_OPEN](what: string): void {
    const state = this.#model.state;
    if (state === 'closed' || state === 'closing') {
      throw new ConnectionClosedError(`Cannot ${what}: the connection of ${this.clientId} is ${state === 'closed' ? 'closed' : 'ending'}`, this.#closeError);
    }
  }

  /** Send what the outbox lets go, when a session is up. */
  protected override [PUMP](): void {
    const state = this.#model.state;
    const attempt = this.#attempt;
    if ((state !== 'online' && state !== 'closing') || !attempt?.online) return;
    this[DELIVERY].send(attempt.client, this.#session, () => this[PROGRESS]());
  }

  /** An answer settled an item, or the durable outbox has more: send what can go, or finish closing. */
  protected override [PROGRESS](): void {
    this[PUMP]();
    if (this.#model.state === 'closing' && this[DELIVERY].idle) this.#input({ type: 'flushed' });
  }

  // ---- closing

  #close(problem: Problem | undefined): void {
    clearTimeout(this.#timer);
    clearTimeout(this.#flushTimer);
    // DISCONNECT only when nothing is left in flight, the outbox's or a Token upload (which goes to mqtt.js past the
    // outbox): mqtt.js would wait for those acknowledgements first, and a broker need never send them.
    const graceful = problem === undefined && this[DELIVERY].inFlight === 0 && !this.#tokens?.uploading;
    this.#tokens?.stop();
    if (this.#onCallerAbort) this[OPTIONS].signal?.removeEventListener('abort', this.#onCallerAbort);
    const error = problem ? this.#failures.error(problem) : undefined;
    this.#closeError = error;
    const ended = error ?? new ConnectionClosedError(`The connection of ${this.clientId} was ended`);
    this.#lifetime?.abort(ended);
    this.#gateStop?.abort(ended);
    this.#gateStop = undefined;
    const attempt = this.#attempt;
    this.#attempt = undefined;
    const closing = attempt ? attempt.close(graceful) : Promise.resolve();
    this[DELIVERY].failAll(new ConnectionClosedError(`The connection of ${this.clientId} closed before this was acknowledged`, error), error);
    if (this.#first.waiting) {
      this.#first.fail(error ?? new ConnectionClosedError(`The connection of ${this.clientId} was ended before it was online`));
    } else if (error && error.code !== 'Aborted') {
      this[EMIT_ERROR](error);
    }
    this[LOG](error ? 'warn' : 'info', 'closed', error ? { code: error.code } : {});
    this.emit('closed', error ? { error } : {});
    void closing.then(() => {
      this.#socketClosed = true;
      this.#whenClosed?.resolve();
    });
  }


}
