import { channel } from 'node:diagnostics_channel';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { format, inspect } from 'node:util';
import {
  ErrorWithReasonCode,
  ReasonCodes,
  type IClientOptions,
  type IClientPublishOptions,
  type IPublishPacket,
  type ISubscriptionGrant,
  type MqttClient,
} from 'mqtt';
import { type CredentialRequest, type CredentialSource, DeviceCredential } from '../credential.js';
import {
  AbortedError,
  type ApsaraMqDeviceError,
  CONNACK_CODES,
  ConnectError,
  ConnectionClosedError,
  PublishError,
  SubscribeError,
  ValidationError,
  toApsaraMqDeviceError,
} from '../errors.js';
import type { TokenGrant } from '../signer/mqtt.js';
import { raceAbort } from '../util/abort.js';
import { type Logger, silentLogger } from '../util/logger.js';
import { CredentialLogin, type Login, TokenLogin, signable } from './login.js';
import { type ConnectDeviceOptions, type ResolvedConnectOptions, type TokenConnectOptions, brokerUrlFor, resolveConnectOptions } from './options.js';
import { Outbox, type OutboxItem } from './outbox.js';
import { ATTEMPT_EVENT, ATTEMPT_MESSAGE, Attempt, type AttemptEvent, type AttemptListener, InboundStore, errorCode } from './session.js';
import { type ConnectFailure, type ConnectionState, type Effect, type Input, type Model, type Problem, initialModel, step } from './state.js';
import type { SessionEnd } from './takeover.js';
import {
  type HeldToken,
  TOKEN_NOTICE_TOPICS,
  type TokenRequest,
  type TokenSource,
  checkTokenAnswer,
  isOperationCode,
  parseExpireNotice,
  parseInvalidNotice,
  uploadPayload,
} from './token.js';
import { checkPayload, checkPublishProperties, checkQos, checkRetain, checkTopicFilter, checkTopicName, checkUserProperties } from './validate.js';

export { CONNECT_DEFAULTS, TRANSPORT_PORTS, WEBSOCKET_PATH, brokerUrlFor, type ConnectDeviceOptions, type TokenConnectOptions, type Transport } from './options.js';
export { TOKEN_DEFAULTS, type TokenOptions, type TokenRequest, type TokenSource } from './token.js';
export type { TakeoverOptions } from './takeover.js';
export type { ConnectionState } from './state.js';

/** MQTT 5 properties a publish may carry (passed through to the broker). */
export type PublishProperties = Pick<
  NonNullable<IClientPublishOptions['properties']>,
  'userProperties' | 'messageExpiryInterval' | 'contentType' | 'responseTopic' | 'correlationData' | 'payloadFormatIndicator'
>;

/** Options of {@link DeviceConnection.publish}. */
export interface PublishOptions {
  /** @default 0 */
  qos?: 0 | 1 | 2;
  /** Not supported by ApsaraMQ (needs `brokerIsApsaraMq: false`). @default false */
  retain?: boolean;
  /** MQTT 5 only. */
  properties?: PublishProperties;
}

/** Options of {@link DeviceConnection.subscribe}. */
export interface SubscribeOptions {
  /** @default 1 */
  qos?: 0 | 1 | 2;
  /** MQTT 5: no local (do not receive your own messages). */
  nl?: boolean;
  /** MQTT 5: retain as published. */
  rap?: boolean;
  /** MQTT 5: retain handling, 0 to 2. */
  rh?: 0 | 1 | 2;
  /** MQTT 5 only: user properties of the SUBSCRIBE. */
  properties?: { userProperties?: Record<string, string | string[]> };
}

/** Events of a {@link DeviceConnection}. */
export interface DeviceConnectionEvents {
  /** The state machine moved (see {@link ConnectionState}). */
  state: [info: { from: ConnectionState; to: ConnectionState }];
  /** CONNACK 0 received (first connect and every reconnect); `sessionPresent` as the broker said. */
  online: [info: { sessionPresent: boolean }];
  /** The session was lost; a reconnect follows unless `closed` is emitted. */
  offline: [];
  /** A reconnect is scheduled. */
  reconnecting: [info: { attempt: number; delayMs: number }];
  /** A refused CONNECT led to a new credential from the source. */
  'credential-refreshed': [info: { credential: DeviceCredential }];
  /** The broker refused the credential or the tokens (3.1.1 CONNACK 4 or 5, MQTT 5 reason 0x86 or 0x87). */
  'auth-failed': [info: { rc: number }];
  /**
   * Token mode: new tokens are in use. `inSession`: uploaded to `$SYS/uploadToken` and acknowledged, the session
   * went on (a renewal before expiry); otherwise they are for the next CONNECT (after a refusal or an invalid notice,
   * or a renewal while offline). `types`: the types that changed.
   */
  'token-renewed': [info: { types: TokenGrant['type'][]; inSession: boolean }];
  /** Token mode: the broker's `$SYS/tokenExpireNotice`: the token of `type` expires at `expireTime` (ms since the epoch). */
  'token-expiring': [info: { type: TokenGrant['type']; expireTime: number }];
  /**
   * Token mode: the broker's `$SYS/tokenInvalidNotice`, before it disconnects: `code` 1 forged, 2 expired, 3 revoked,
   * 8 bad signature, -1 account (the tokens are replaced from the source before the next CONNECT), or 4 resource and
   * 5 permission type mismatch (the operation in flight fails, the tokens are kept).
   */
  'token-invalid': [info: { code: number; type: TokenGrant['type'] | undefined }];
  /**
   * Another client with this ClientId took the session over: `confirmed` when the broker said so (MQTT 5
   * DISCONNECT 0x8E), else suspected (MQTT 3.1.1: the broker closed the session and accepted the next CONNECT at
   * once). `inARow` counts takeovers without a stable session in between. The next reconnects wait longer.
   */
  takeover: [info: { confirmed: boolean; inARow: number }];
  /** Something went wrong; emitted only when someone listens, so an unobserved error never crashes the process. */
  error: [error: ApsaraMqDeviceError];
  /** An application message arrived. */
  message: [topic: string, payload: Buffer, packet: IPublishPacket];
  /** The connection is finished for good: by `end()` (no error) or because it gave up (with the error). */
  closed: [info: { error?: ApsaraMqDeviceError }];
}

/**
 * Every {@link DeviceConnection} made in this process is published on this diagnostics channel as `{ connection,
 * brokerUrl }` before its first CONNECT, when someone subscribes: the testing entry ends, at teardown, the devices
 * the code under test left connected to its emulator. A channel is process-wide, so it also reaches a copy of this
 * module loaded a second time (the CommonJS build beside the ES one).
 */
export const CONNECTION_CHANNEL = 'apsaramq-device:connection';
const connectionChannel = channel(CONNECTION_CHANNEL);

/** The key of the method that opens the first session: not exported, so only connectDevice can call it. */
const START = Symbol('start');

/** How a connection logs in: with a device credential, or with tokens (`connectDevice`'s `token` option). */
export type ConnectionMode = 'DeviceCredential' | 'Token';

/** MQTT 5 DISCONNECT reasons that are about a message or a subscription rather than the session. */
const MESSAGE_REASONS = new Set([0x87, 0x8f, 0x90, 0x93, 0x95, 0x97, 0x99, 0x9a, 0x9b, 0x9e, 0xa1, 0xa2]);

type SendResult = { readonly ok: true; readonly value?: unknown } | { readonly ok: false; readonly error: ApsaraMqDeviceError } | { readonly ok: 'ignore' };

/** A PUBLISH, SUBSCRIBE or UNSUBSCRIBE waiting in the outbox. */
interface Item extends OutboxItem {
  readonly kind: 'publish' | 'subscribe' | 'unsubscribe' | 'resubscribe';
  /** For error messages: the topic or filters. */
  readonly topics: readonly string[];
  send(client: MqttClient, done: (result: SendResult) => void): void;
  settle(result: SendResult & { ok: true | false }): void;
}

/** Subscriptions to restore on a session that the broker did not keep. */
interface Subscription {
  readonly qos: 0 | 1 | 2;
  readonly nl?: boolean;
  readonly rap?: boolean;
  readonly rh?: 0 | 1 | 2;
}

function hex(code: number): string {
  return `0x${code.toString(16).padStart(2, '0')}`;
}

/** "bad user name or password (CONNACK 4)" / "Not authorized (reason 0x87)". */
function describeCode(code: number, protocolVersion: 3 | 4 | 5): string {
  if (protocolVersion === 5) return `${ReasonCodes[code as keyof typeof ReasonCodes] ?? 'reason'} (reason ${hex(code)})`;
  return `${CONNACK_CODES[code] ?? 'refused'} (CONNACK ${code})`;
}

/** mqtt.js's debug lines when nobody logs: dropped (its default would print the CONNECT, password included, under DEBUG=mqttjs*). */
function ignoreLog(): void {}

/**
 * An MQTT session of one device, kept alive by an explicit state machine (see {@link ConnectionState}): it
 * reconnects after a lost session with jittered exponential backoff, climbs the recovery ladder when the broker
 * refuses the credential, waits longer after a takeover, and settles every promise it hands out.
 */
export class DeviceConnection<M extends ConnectionMode = 'DeviceCredential'> extends EventEmitter<DeviceConnectionEvents> implements AttemptListener {
  readonly clientId: string;
  /** The device credential or the tokens, and the source of the next ones. */
  readonly #login: Login;
  readonly #options: ResolvedConnectOptions;
  readonly #url: string;
  readonly #logger: Logger;
  #model: Model = initialModel();
  readonly #inputs: Input[] = [];
  #dispatching = false;
  #attempt: Attempt | undefined;
  /** Numbers the attempts, so that a late callback of an old client is recognised and ignored. */
  #session = 0;
  #sessionPresent = false;
  readonly #inbound = new InboundStore();
  readonly #outbox: Outbox<Item>;
  /** What to SUBSCRIBE to again on a session the broker did not keep (made on the first subscription). */
  #subscriptions: Map<string, Subscription> | undefined;
  #seq = 0;
  #resubscribeSeq = 0;
  #timer: NodeJS.Timeout | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  /** Aborted when the connection closes: cancels a credential source still at work. Made on first use. */
  #lifetime: AbortController | undefined;
  /** The error behind the latest failure, for the error that reports it. */
  #lastCause: unknown;
  /** The latest refusal code. */
  #refusedCode: number | undefined;
  /** The latest refusal of the login: a CONNACK, or (Token mode) an invalid notice about the tokens. */
  #lastRefusal: { kind: 'connack'; code: number } | { kind: 'notice'; code: number; type: TokenGrant['type'] | undefined } | undefined;
  /** Token mode: the broker's `$SYS/tokenInvalidNotice` on the current session, if one came. */
  #tokenNotice: { code: number; type: TokenGrant['type'] | undefined } | undefined;
  /** Token mode: the renewal timer, and whether a renewal is under way. */
  #renewTimer: NodeJS.Timeout | undefined;
  #renewing = false;
  /** Token mode: uploads waiting for their PUBACK, settled `false` when their session ends first. */
  readonly #uploads = new Set<(acknowledged: boolean) => void>();
  #closeError: ApsaraMqDeviceError | undefined;
  /** The socket is closed for good; `end()` waits for it (the promise is made only when someone waits). */
  #socketClosed = false;
  #whenClosed: { promise: Promise<void>; resolve: () => void } | undefined;
  #initial: { resolve: () => void; reject: (error: ApsaraMqDeviceError) => void } | undefined;
  /** Messages that arrived with the first CONNACK, emitted once connectDevice() has resolved. */
  #held: [string, Buffer, IPublishPacket][] | undefined;
  #onCallerAbort: (() => void) | undefined;

  /** Use {@link connectDevice}. */
  constructor(login: Login, options: ResolvedConnectOptions, url: string) {
    super();
    this.#login = login;
    this.#options = options;
    this.#url = url;
    this.#logger = options.logger ?? silentLogger;
    this.clientId = login.clientId;
    this.#outbox = new Outbox(options.maxDeliveryAttempts);
  }

  /** What logs and `util.inspect` show: never a secret. */
  toJSON(): Record<string, unknown> {
    return { clientId: this.clientId, brokerUrl: this.#url, state: this.state, mode: this.#login.mode, ...this.#login.toJSON() };
  }

  [inspect.custom](): string {
    return `DeviceConnection ${inspect(this.toJSON())}`;
  }

  /** The credential in use now (it changes when the source hands out a rotated one); `undefined` in Token mode. */
  get credential(): M extends 'Token' ? undefined : DeviceCredential {
    return (this.#login.mode === 'DeviceCredential' ? this.#login.current : undefined) as M extends 'Token' ? undefined : DeviceCredential;
  }

  /** How the connection logs in: `DeviceCredential`, or `Token` (`connectDevice`'s `token` option). */
  get mode(): M {
    return this.#login.mode as M;
  }

  /** Token mode: the types of the tokens held and their expiry when known (never the tokens); empty otherwise. */
  get tokens(): { type: TokenGrant['type']; expireTime: number | undefined }[] {
    return this.#login.mode === 'Token' ? this.#login.tokens : [];
  }

  /** The broker URL in use. */
  get brokerUrl(): string {
    return this.#url;
  }

  /** Whether the broker said, in the latest CONNACK, that it kept the session (clean: false / a session expiry). */
  get sessionPresent(): boolean {
    return this.#sessionPresent;
  }

  /** Where the connection is now. */
  get state(): ConnectionState {
    return this.#model.state;
  }

  /** True while a session is up (CONNACK 0, not lost, not ending). */
  get online(): boolean {
    return this.#model.state === 'online';
  }

  /** Opens the first session; resolves on CONNACK 0. Called once, by connectDevice. */
  [START](): Promise<void> {
    const caller = this.#options.signal;
    if (caller?.aborted) return Promise.reject(new AbortedError(`Connecting ${this.clientId} was aborted`, caller.reason));
    if (caller) {
      this.#onCallerAbort = () => this.#input({ type: 'abort' });
      caller.addEventListener('abort', this.#onCallerAbort, { once: true });
    }
    const first = new Promise<void>((resolve, reject) => {
      this.#initial = { resolve, reject };
    });
    this.#log('debug', 'connecting', { brokerUrl: this.#url });
    this.#apply({ type: 'connect' });
    return first;
  }

  /**
   * Publish. Checked first (topic, payload, QoS, what the service supports): a message that can never be delivered
   * is refused with a `ValidationError` and nothing is sent. Resolves when the broker acknowledged it (QoS 1 and 2)
   * or it was written to the socket (QoS 0). Sent now when online, else queued and sent after the reconnect.
   * Rejects with `PublishRejected` when the broker refused it (an MQTT 5 reason code), or closed the session each
   * of `maxDeliveryAttempts` times it was sent; with `ConnectionClosed` when the connection closes first.
   */
  async publish(topic: string, message: string | Buffer | Uint8Array, options: PublishOptions = {}): Promise<void> {
    const rules = this.#options.rules;
    if (options === null || typeof options !== 'object') throw new ValidationError('InvalidOption', 'publish options must be an object');
    const name = checkTopicName(topic, rules);
    const payload = checkPayload(message, rules);
    const qos = checkQos(options.qos, rules, 'publish');
    const retain = checkRetain(options.retain, rules);
    const properties = this.#v5Properties('publish', options.properties);
    if (properties) checkPublishProperties(properties as Record<string, unknown>, rules);
    this.#assertOpen(`publish to ${name}`);
    await new Promise<unknown>((resolve, reject) => {
      const item: Item = {
        seq: this.#seq++,
        strikes: 0,
        session: undefined,
        kind: 'publish',
        topics: [name],
        send: (client, done) => {
          const publishOptions: IClientPublishOptions = { qos, retain, ...(properties ? { properties } : {}) };
          client.publish(name, payload, publishOptions, (error) => {
            if (!error) done({ ok: true });
            else if (error instanceof ErrorWithReasonCode) {
              done({ ok: false, error: new PublishError(`The broker refused the message to ${name}: ${describeCode(error.code, 5)}`, name, { reasonCode: error.code }) });
            } else done({ ok: 'ignore' });
          });
        },
        settle: (result) => (result.ok ? resolve(undefined) : reject(result.error)),
      };
      this.#enqueue(item);
    });
  }

  /**
   * Subscribe to one or more topic filters. Checked first (MQTT's wildcard rules; on ApsaraMQ no `$share/` and not
   * QoS 2 with a persistent session): an invalid filter is a `ValidationError`. Resolves with the grants on SUBACK;
   * rejects with `SubscribeRejected` (a {@link SubscribeError} naming the refused filters) when the broker refused
   * any (the others stay subscribed), and `ConnectionClosed` when the connection closes first. Subscriptions are
   * restored after a reconnect when the broker did not keep the session.
   */
  async subscribe(topic: string | string[], options: SubscribeOptions = {}): Promise<ISubscriptionGrant[]> {
    const rules = this.#options.rules;
    if (options === null || typeof options !== 'object') throw new ValidationError('InvalidOption', 'subscribe options must be an object');
    const filters = (Array.isArray(topic) ? topic : [topic]).map((filter) => checkTopicFilter(filter, rules));
    if (filters.length === 0) throw new ValidationError('InvalidTopic', 'subscribe needs at least one topic filter');
    const subscription = this.#subscriptionOptions(options);
    const properties = this.#v5Properties('subscribe', options.properties);
    this.#assertOpen(`subscribe to ${filters.join(', ')}`);
    const grants = await new Promise<unknown>((resolve, reject) => {
      const map = Object.fromEntries(filters.map((f) => [f, subscription]));
      this.#enqueue(this.#subscribeItem(this.#seq++, 'subscribe', map, properties, (result) => (result.ok ? resolve(result.value) : reject(result.error))));
    });
    return grants as ISubscriptionGrant[];
  }

  /** Unsubscribe. Resolves on UNSUBACK; rejects with `ConnectionClosed` when the connection closes first. */
  async unsubscribe(topic: string | string[], options: { properties?: { userProperties?: Record<string, string | string[]> } } = {}): Promise<void> {
    const rules = this.#options.rules;
    const filters = (Array.isArray(topic) ? topic : [topic]).map((filter) => checkTopicFilter(filter, rules));
    if (filters.length === 0) throw new ValidationError('InvalidTopic', 'unsubscribe needs at least one topic filter');
    const properties = this.#v5Properties('unsubscribe', options?.properties);
    this.#assertOpen(`unsubscribe from ${filters.join(', ')}`);
    for (const filter of filters) this.#subscriptions?.delete(filter);
    await new Promise<unknown>((resolve, reject) => {
      this.#enqueue({
        seq: this.#seq++,
        strikes: 0,
        session: undefined,
        kind: 'unsubscribe',
        topics: filters,
        send: (client, done) => {
          client.unsubscribe(filters, properties ? { properties } : {}, (_error, packet) => {
            if (packet?.cmd !== 'unsuback') return done({ ok: 'ignore' });
            const codes = (packet as { granted?: unknown }).granted;
            const refused = Array.isArray(codes) ? filters.filter((_f, i) => typeof codes[i] === 'number' && codes[i] >= 0x80) : [];
            if (refused.length > 0) done({ ok: false, error: new SubscribeError(`The broker refused to unsubscribe from ${refused.join(', ')}`, refused) });
            else done({ ok: true });
          });
        },
        settle: (result) => (result.ok ? resolve(undefined) : reject(result.error)),
      });
    });
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
        const { model, effects } = step(this.#model, next, this.#options, this.#options.random);
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
      case 'connect':
        this.#connect();
        return;
      case 'online': {
        this.#log('info', 'online', { sessionPresent: this.#sessionPresent });
        // Each session looks again: the clock may have moved on while it was down (or a test moved it).
        this.#armRenewal();
        if (!this.#sessionPresent) this.#restoreSubscriptions();
        const initial = this.#initial;
        this.#initial = undefined;
        if (initial) {
          // A persistent session's queued messages come right behind the first CONNACK, before the caller of
          // connectDevice() could add a listener: hold them until its `await` has returned.
          this.#held = [];
          setImmediate(() => {
            const held = this.#held ?? [];
            this.#held = undefined;
            for (const [topic, payload, packet] of held) this.emit('message', topic, payload, packet);
          });
          initial.resolve();
        }
        this.emit('online', { sessionPresent: this.#sessionPresent });
        this.#pump();
        return;
      }
      case 'offline':
        this.#log('warn', 'offline', {});
        this.emit('offline');
        return;
      case 'wait':
        this.#log('info', 'reconnecting', { attempt: effect.attempt, delayMs: effect.delayMs });
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#input({ type: 'timer' });
        }, effect.delayMs);
        this.emit('reconnecting', { attempt: effect.attempt, delayMs: effect.delayMs });
        return;
      case 'auth-failed':
        this.#log('warn', this.#login.mode === 'Token' ? 'tokens refused' : 'credential refused', { code: effect.code, ...this.#login.logFields() });
        this.emit('auth-failed', { rc: effect.code });
        return;
      case 'refetch':
        this.#refetch();
        return;
      case 'use-credential': {
        const login = this.#login;
        if (login.mode === 'Token') {
          const types = login.use();
          if (!types) return;
          this.#log('info', 'tokens replaced', login.logFields());
          this.emit('token-renewed', { types, inSession: false });
          this.#armRenewal();
          return;
        }
        const next = login.use();
        if (!next) return;
        this.#log('info', 'credential refreshed', { deviceAccessKeyId: next.deviceAccessKeyId });
        this.emit('credential-refreshed', { credential: next });
        return;
      }
      case 'takeover': {
        const inARow = this.#model.takeover.streak;
        this.#log('warn', effect.confirmed ? 'session taken over by another client with this ClientId' : 'session probably taken over by another client with this ClientId', { inARow });
        this.emit('takeover', { confirmed: effect.confirmed, inARow });
        return;
      }
      case 'report':
        this.#emitError(this.#problemError(effect.problem));
        return;
      case 'flush':
        this.#flushTimer = setTimeout(() => this.#input({ type: 'flushed' }), this.#options.endTimeoutMs);
        this.#pump();
        if (this.#outbox.size === 0) this.#input({ type: 'flushed' });
        return;
      case 'close':
        this.#close(effect.problem);
        return;
    }
  }

  #connect(): void {
    this.#session += 1;
    this.#tokenNotice = undefined;
    this.#attempt = new Attempt(this.#url, this.#mqttOptions(), this.#options.connectTimeoutMs, this);
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
        this.#log('warn', 'connect refused', { code: describeCode(event.code, this.#options.protocolVersion) });
        this.#lastCause = undefined;
        this.#refusedCode = event.code;
        this.#lastRefusal = { kind: 'connack', code: event.code };
        this.#input({ type: 'refused', code: event.code });
        return;
      case 'failed':
        this.#lastCause = event.cause;
        this.#log('warn', 'connect failed', { failure: event.failure, code: errorCode(event.cause) });
        this.#input({ type: 'failed', failure: event.failure });
        return;
      case 'lost':
        this.#lastCause = event.cause;
        for (const settle of [...this.#uploads]) settle(false);
        this.#input({ type: 'lost', end: this.#blame(event.end), now: performance.now() });
        return;
    }
  }

  /** A message on the current attempt's session. @internal */
  [ATTEMPT_MESSAGE](attempt: Attempt, topic: string, payload: Buffer, packet: IPublishPacket): void {
    if (attempt !== this.#attempt) return;
    // Token mode: the broker's notices are the connection's business, not the application's messages.
    if (this.#login.mode === 'Token' && topic === TOKEN_NOTICE_TOPICS.expireNotice) return this.#onExpireNotice(payload);
    if (this.#login.mode === 'Token' && topic === TOKEN_NOTICE_TOPICS.invalidNotice) return this.#onInvalidNotice(payload);
    if (this.#held) this.#held.push([topic, payload, packet]);
    else this.emit('message', topic, payload, packet);
  }

  /**
   * Strike what was in flight; a loss with messages in flight is blamed on them, not on a takeover. In Token mode a
   * `$SYS/tokenInvalidNotice` says why: about the operation in flight (4, 5), or about the tokens (the others).
   */
  #blame(end: SessionEnd): SessionEnd {
    const notice = this.#tokenNotice;
    const aboutMessage = notice ? isOperationCode(notice.code) : end.kind === 'disconnect' && MESSAGE_REASONS.has(end.reasonCode);
    const { failed, struck } = this.#outbox.lost({ aboutMessage });
    for (const item of failed) item.settle({ ok: false, error: this.#rejectedError(item, end) });
    if (notice) return { kind: 'token', code: notice.code };
    return struck && end.kind === 'closed' ? { kind: 'message' } : end;
  }

  #rejectedError(item: Item, end: SessionEnd): ApsaraMqDeviceError {
    const topics = item.topics.join(', ');
    const what = item.kind === 'publish' ? `the message to ${topics}` : `the ${item.kind === 'unsubscribe' ? 'UNSUBSCRIBE' : 'SUBSCRIBE'} of ${topics}`;
    const notice = this.#tokenNotice;
    const why = notice
      ? `The broker refused ${what}: ${notice.code === 4 ? 'no token of the session covers it' : notice.code === 5 ? 'the token covering it does not give that permission' : 'a token is no longer valid'} ($SYS/tokenInvalidNotice code ${notice.code}${notice.type ? `, ${notice.type} token` : ''})`
      : end.kind === 'disconnect'
        ? `The broker disconnected right after ${what} with ${describeCode(end.reasonCode, 5)}`
        : `The broker closed the session right after ${item.strikes === 1 ? `${what} was sent` : `each of the ${item.strikes} times ${what} was sent`}`;
    if (item.kind === 'publish') return new PublishError(why, topics, end.kind === 'disconnect' ? { reasonCode: end.reasonCode } : {});
    return new SubscribeError(why, item.topics, end.kind === 'disconnect' ? { reasonCode: end.reasonCode } : {});
  }

  #mqttOptions(): IClientOptions {
    const options = this.#options;
    // Signed per attempt: a refreshed credential (or new tokens) is simply the next attempt's.
    const signed = this.#login.sign();
    const properties: NonNullable<IClientOptions['properties']> = {};
    if (options.sessionExpiryInterval !== undefined) properties.sessionExpiryInterval = options.sessionExpiryInterval;
    if (options.userProperties !== undefined) properties.userProperties = options.userProperties;
    return {
      protocolVersion: options.protocolVersion,
      clientId: signed.clientId,
      username: signed.username,
      password: signed.password,
      keepalive: options.keepalive,
      clean: options.clean,
      incomingStore: this.#inbound,
      // mqtt.js's debug lines include the CONNECT packet with its password: route them through a scrubber, which
      // also means DEBUG=mqttjs* can no longer print them raw.
      log: this.#logger !== silentLogger ? (...args: unknown[]) => this.#mqttLog(args) : ignoreLog,
      ...options.tls,
      ...(options.will ? { will: options.will } : {}),
      ...(Object.keys(properties).length > 0 ? { properties } : {}),
    };
  }

  #refetch(): void {
    const signal = this.#lifetimeSignal();
    const login = this.#login;
    this.#log('info', login.mode === 'Token' ? 'asking for other tokens' : 'asking for another credential', login.logFields());
    const notice = this.#tokenNotice;
    const asked = login.mode === 'Token' ? login.refetch(signal, notice?.code, notice?.type) : login.refetch(signal);
    asked.then(
      (verdict) => this.#input({ type: 'credential', verdict }),
      (error: unknown) => {
        if (this.#model.state === 'closed') return;
        const cause = toApsaraMqDeviceError(error);
        this.#lastCause = cause;
        this.#input({ type: 'source-failed', retryable: cause.retryable });
      },
    );
  }

  /** The signal a source gets: the caller's and the connection's own (aborted on close), made on first use. */
  #lifetimeSignal(): AbortSignal {
    this.#lifetime ??= new AbortController();
    const caller = this.#options.signal;
    return caller ? AbortSignal.any([caller, this.#lifetime.signal]) : this.#lifetime.signal;
  }

  // ---- Token mode: notices and renewal

  /** `$SYS/tokenExpireNotice`: renew now when the token is due (else the renewal timer does it when it is). */
  #onExpireNotice(payload: Buffer): void {
    const login = this.#login;
    const notice = parseExpireNotice(payload);
    if (login.mode !== 'Token' || !notice) {
      this.#log('warn', 'a $SYS/tokenExpireNotice that is not {expireTime, type}: ignored', {});
      return;
    }
    this.#log('info', 'token expiring', { type: notice.type, expireTime: notice.expireTime });
    this.emit('token-expiring', notice);
    if (login.noteExpireNotice(notice.type, notice.expireTime)) this.#renew(login.due());
    else this.#armRenewal();
  }

  /** `$SYS/tokenInvalidNotice`: the broker disconnects next; what the loss means is decided then (#blame). */
  #onInvalidNotice(payload: Buffer): void {
    const notice = parseInvalidNotice(payload);
    if (!notice) {
      this.#log('warn', 'a $SYS/tokenInvalidNotice that is not {code, type}: ignored', {});
      return;
    }
    this.#tokenNotice = notice;
    if (!isOperationCode(notice.code)) this.#lastRefusal = { kind: 'notice', ...notice };
    this.#log('warn', 'token invalid', { code: notice.code, type: notice.type });
    this.emit('token-invalid', notice);
  }

  /** Arm the renewal timer for the next token due (Token mode with a source; not once closed). */
  #armRenewal(): void {
    clearTimeout(this.#renewTimer);
    this.#renewTimer = undefined;
    const login = this.#login;
    if (login.mode !== 'Token' || this.#model.state === 'closed' || this.#renewing) return;
    const delay = login.nextRenewalDelay();
    if (delay === undefined) return;
    this.#renewTimer = setTimeout(() => {
      this.#renewTimer = undefined;
      const due = login.due();
      if (due.length > 0) this.#renew(due);
      else this.#armRenewal(); // the clock ran slower than the timer
    }, delay);
    // The session's socket keeps the process up; an idle timer of its own must not.
    this.#renewTimer.unref();
  }

  /**
   * Renew the tokens of `types`: ask the source, hold the answer at once (a CONNECT from now on uses it) and, with a
   * session up, upload each changed token to `$SYS/uploadToken` and wait for its PUBACK: the session goes on, no
   * reconnect. A failure is reported (`error`) and the renewal tried again later (see token.ts's deferRenewal); the
   * broker's invalid notice and the refusal ladder cover a token that runs out all the same.
   */
  #renew(types: TokenGrant['type'][]): void {
    const login = this.#login;
    if (login.mode !== 'Token' || login.fixed || this.#renewing || types.length === 0) return;
    const state = this.#model.state;
    if (state === 'closed' || state === 'closing') return;
    this.#renewing = true;
    clearTimeout(this.#renewTimer);
    this.#log('info', 'renewing tokens', { types: types.join(',') });
    login
      .renew(types, this.#lifetimeSignal())
      .then(async (changed) => {
        if (this.#model.state === 'closed') return;
        if (changed.length === 0) {
          this.#log('warn', 'the token source handed out the same tokens again: renewal deferred', { types: types.join(',') });
          return;
        }
        const attempt = this.#attempt;
        const inSession = this.#model.state === 'online' && attempt?.online === true ? await this.#upload(attempt, changed) : false;
        if (this.state === 'closed') return; // closed while the upload waited
        this.#log('info', inSession ? 'tokens renewed in session' : 'tokens renewed for the next CONNECT', login.logFields());
        this.emit('token-renewed', { types: changed.map((token) => token.type), inSession });
      })
      .catch((error: unknown) => {
        if (this.#model.state === 'closed') return;
        this.#emitError(toApsaraMqDeviceError(error));
      })
      .finally(() => {
        this.#renewing = false;
        this.#armRenewal();
      });
  }

  /** Upload tokens on the attempt's session, each at QoS 1; true when every PUBACK came on that session. */
  async #upload(attempt: Attempt, tokens: readonly HeldToken[]): Promise<boolean> {
    const acks = tokens.map(
      (token) =>
        new Promise<boolean>((resolve) => {
          const settle = (acknowledged: boolean): void => {
            this.#uploads.delete(settle);
            resolve(acknowledged);
          };
          this.#uploads.add(settle);
          // Straight to the client, past the outbox: a renewal that misses its session is not resent, the next
          // CONNECT carries the new token instead.
          attempt.client.publish(TOKEN_NOTICE_TOPICS.upload, uploadPayload(token), { qos: 1 }, (error) => settle(!error && attempt === this.#attempt));
        }),
    );
    return (await Promise.all(acks)).every(Boolean);
  }

  // ---- the outbox

  #assertOpen(what: string): void {
    const state = this.#model.state;
    if (state === 'closed' || state === 'closing') {
      throw new ConnectionClosedError(`Cannot ${what}: the connection of ${this.clientId} is ${state === 'closed' ? 'closed' : 'ending'}`, this.#closeError);
    }
  }

  #enqueue(item: Item): void {
    this.#outbox.add(item);
    this.#pump();
  }

  /** Send what the outbox lets go, when a session is up. */
  #pump(): void {
    const state = this.#model.state;
    const attempt = this.#attempt;
    if ((state !== 'online' && state !== 'closing') || !attempt?.online) return;
    const session = this.#session;
    for (const item of this.#outbox.take(session)) {
      item.send(attempt.client, (result) => {
        if (result.ok === 'ignore' || !this.#outbox.settle(item, session)) return;
        item.settle(result);
        this.#pump();
        if (this.#model.state === 'closing' && this.#outbox.size === 0) this.#input({ type: 'flushed' });
      });
    }
  }

  #subscriptionOptions(options: SubscribeOptions): Subscription {
    const qos = checkQos(options.qos ?? 1, this.#options.rules, 'subscription');
    const v5 = this.#options.protocolVersion === 5;
    for (const flag of ['nl', 'rap'] as const) {
      if (options[flag] !== undefined && typeof options[flag] !== 'boolean') throw new ValidationError('InvalidOption', `Option ${flag} must be true or false`);
      if (options[flag] !== undefined && !v5) throw new ValidationError('InvalidOption', `Option ${flag} needs protocolVersion: 5`);
    }
    if (options.rh !== undefined && ![0, 1, 2].includes(options.rh)) throw new ValidationError('InvalidOption', 'Option rh must be 0, 1 or 2');
    if (options.rh !== undefined && !v5) throw new ValidationError('InvalidOption', 'Option rh needs protocolVersion: 5');
    return { qos, ...(options.nl === undefined ? {} : { nl: options.nl }), ...(options.rap === undefined ? {} : { rap: options.rap }), ...(options.rh === undefined ? {} : { rh: options.rh }) };
  }

  #v5Properties<T extends { userProperties?: Record<string, string | string[]> }>(what: string, properties: T | undefined): T | undefined {
    if (properties === undefined) return undefined;
    if (this.#options.protocolVersion !== 5) throw new ValidationError('InvalidOption', `${what} properties need protocolVersion: 5`);
    if (properties === null || typeof properties !== 'object') throw new ValidationError('InvalidOption', `${what} properties must be an object`);
    if (properties.userProperties !== undefined) checkUserProperties(`${what} properties.userProperties`, properties.userProperties);
    return properties;
  }

  #subscribeItem(
    seq: number,
    kind: 'subscribe' | 'resubscribe',
    map: Record<string, Subscription>,
    properties: { userProperties?: Record<string, string | string[]> } | undefined,
    settle: (result: SendResult & { ok: true | false }) => void,
  ): Item {
    const filters = Object.keys(map);
    return {
      seq,
      strikes: 0,
      session: undefined,
      kind,
      topics: filters,
      send: (client, done) => {
        client.subscribe(map, properties ? { properties } : {}, (_error, _granted, packet) => {
          // A SUBACK, refusing or not, is the broker's answer; anything else (a closed client) is not.
          if (packet?.cmd !== 'suback') return done({ ok: 'ignore' });
          const codes = (packet.granted as unknown[]).map((g) => (typeof g === 'number' ? g : (g as { qos?: number }).qos));
          const grants: ISubscriptionGrant[] = filters.map((topic, i) => ({ topic, qos: (codes[i] ?? 0x80) as ISubscriptionGrant['qos'] }));
          for (const grant of grants) if (grant.qos < 0x80) (this.#subscriptions ??= new Map()).set(grant.topic, map[grant.topic] as Subscription);
          const refused = grants.filter((g) => g.qos >= 0x80);
          if (refused.length > 0) {
            const reasonCode = refused[0]?.qos;
            const message = `The broker refused the subscription to ${refused.map((g) => g.topic).join(', ')} (${refused.map((g) => hex(g.qos)).join(', ')})`;
            done({ ok: false, error: new SubscribeError(message, refused.map((g) => g.topic), reasonCode === undefined ? {} : { reasonCode }) });
          } else done({ ok: true, value: grants });
        });
      },
      settle,
    };
  }

  /** A session the broker did not keep: SUBSCRIBE again, first thing, to what was subscribed. */
  #restoreSubscriptions(): void {
    if (!this.#subscriptions || this.#subscriptions.size === 0) return;
    const map = Object.fromEntries(this.#subscriptions);
    this.#outbox.add(
      // Negative: before everything the caller queued.
      this.#subscribeItem(-1_000_000_000 + this.#resubscribeSeq++, 'resubscribe', map, undefined, (result) => {
        if (!result.ok) {
          for (const topic of (result.error as SubscribeError).topics ?? []) this.#subscriptions?.delete(topic);
          this.#emitError(result.error);
        }
      }),
    );
  }

  // ---- closing

  #close(problem: Problem | undefined): void {
    clearTimeout(this.#timer);
    clearTimeout(this.#flushTimer);
    clearTimeout(this.#renewTimer);
    for (const settle of [...this.#uploads]) settle(false);
    if (this.#onCallerAbort) this.#options.signal?.removeEventListener('abort', this.#onCallerAbort);
    const error = problem ? this.#problemError(problem) : undefined;
    this.#closeError = error;
    this.#lifetime?.abort(error ?? new ConnectionClosedError(`The connection of ${this.clientId} was ended`));
    // DISCONNECT only when nothing is left in flight: mqtt.js would wait for those acknowledgements first.
    const graceful = problem === undefined && this.#outbox.inFlight === 0;
    const attempt = this.#attempt;
    this.#attempt = undefined;
    const closing = attempt ? attempt.close(graceful) : Promise.resolve();
    const pending = this.#outbox.drain();
    if (pending.length > 0) {
      const reason = new ConnectionClosedError(`The connection of ${this.clientId} closed before this was acknowledged`, error);
      for (const item of pending) item.settle({ ok: false, error: reason });
    }
    const initial = this.#initial;
    this.#initial = undefined;
    if (initial) {
      initial.reject(error ?? new ConnectionClosedError(`The connection of ${this.clientId} was ended before it was online`));
    } else if (error && error.code !== 'Aborted') {
      this.#emitError(error);
    }
    this.#log(error ? 'warn' : 'info', 'closed', error ? { code: error.code } : {});
    this.emit('closed', error ? { error } : {});
    void closing.then(() => {
      this.#socketClosed = true;
      this.#whenClosed?.resolve();
    });
  }

  /** The error for a problem the state machine reported, with what we know of its cause. */
  #problemError(problem: Problem): ApsaraMqDeviceError {
    const clientId = this.clientId;
    const url = this.#url;
    const version = this.#options.protocolVersion;
    const cause = this.#lastCause;
    switch (problem.code) {
      case 'CredentialRejected': {
        const login = this.#login;
        const tokens = login.mode === 'Token';
        const notice = problem.connackCode === undefined ? this.#lastRefusal : undefined;
        const code = problem.connackCode ?? (notice?.kind === 'connack' ? notice.code : this.#refusedCode) ?? 0;
        const subject = tokens ? `the tokens (${login.tokens.map((t) => t.type).join(', ')}) of ${clientId}` : `credential ${login.current.deviceAccessKeyId} of ${clientId}`;
        const refusal =
          notice?.kind === 'notice'
            ? `The broker ended the session of ${clientId}: a token is invalid ($SYS/tokenInvalidNotice code ${notice.code}${notice.type ? `, ${notice.type} token` : ''})`
            : `The broker refused ${subject}: ${describeCode(code, version)}`;
        const tail =
          problem.why === 'same-key'
            ? tokens ? ', and the token source handed out the same tokens again' : ', and the credential source handed out the same key again'
            : problem.why === 'source-failed'
              ? `, and asking for ${tokens ? 'new ones' : 'a new one'} failed with ${(cause as ApsaraMqDeviceError | undefined)?.code ?? 'an error'}`
              : '';
        const connackCode = notice?.kind === 'notice' ? {} : { connackCode: code };
        return new ConnectError(tokens ? 'TokenRejected' : 'CredentialRejected', refusal + tail, { clientId, ...connackCode, ...(problem.why === 'source-failed' ? { cause } : {}) });
      }
      case 'IdentifierRejected':
        return new ConnectError('IdentifierRejected', `The broker rejected ClientId ${clientId}: ${describeCode(problem.connackCode, version)}`, { clientId, connackCode: problem.connackCode });
      case 'ConnackRefused':
        return new ConnectError('ConnackRefused', `The broker at ${url} refused the CONNECT: ${describeCode(problem.connackCode, version)}`, {
          clientId,
          connackCode: problem.connackCode,
          retryable: problem.retryable,
        });
      case 'ConnectFailed':
        return this.#connectFailedError(problem.failure, cause instanceof Error ? cause : undefined);
      case 'InvalidCredential': {
        const login = this.#login;
        if (login.mode === 'Token') return new ValidationError('InvalidToken', login.problem ?? 'The token source did not return tokens');
        return new ValidationError(
          'InvalidCredential',
          problem.verdict === 'other-client'
            ? `The credential source returned a credential for ${login.foreignClientId ?? 'another ClientId'}, not ${clientId}`
            : 'The credential source did not return a DeviceCredential (build one with DeviceCredential.fromWire)',
        );
      }
      case 'TakeoverLoop':
        return new ConnectError('TakeoverLoop', `The session of ${clientId} was taken over ${problem.streak} times in a row (takeover.giveUpAfter)`, { clientId });
      case 'ConnectionLost':
        return new ConnectError('BrokerUnreachable', `The session to ${url} was lost and reconnect is off`, { clientId, retryable: true, ...(cause ? { cause } : {}) });
      case 'SourceFailed':
        return cause instanceof Error ? toApsaraMqDeviceError(cause) : toApsaraMqDeviceError(new Error('The credential source failed'));
      case 'Aborted':
        return new AbortedError(`The connection of ${clientId} was aborted by its signal`, this.#options.signal?.reason);
    }
  }

  #connectFailedError(failure: ConnectFailure, cause: Error | undefined): ConnectError {
    const clientId = this.clientId;
    const url = this.#url;
    const code = errorCode(cause);
    const detail = cause ? ` (${code ? `${code}: ` : ''}${cause.message})` : '';
    switch (failure) {
      case 'timeout':
        return new ConnectError('ConnectTimeout', `No CONNACK from ${url} within ${this.#options.connectTimeoutMs} ms`, { clientId, ...(cause ? { cause } : {}) });
      case 'untrusted':
        return new ConnectError('BrokerUnreachable', `The TLS certificate of ${url} could not be verified${detail}`, {
          clientId,
          cause,
          retryable: false,
          remedy: "The broker's certificate is not trusted: pass --ca FILE (option ca) with the CA that signed it, or --insecure (rejectUnauthorized: false) for tests.",
        });
      case 'http':
        return new ConnectError('ProtocolError', `${url} answered in HTTP, not MQTT`, {
          clientId,
          ...(cause ? { cause } : {}),
          remedy: 'This port speaks HTTP: did you mean --endpoint? The broker URL (--broker-url, brokerUrl) must name the MQTT port (1883 on the service and the emulator).',
        });
      case 'protocol':
        return new ConnectError('ProtocolError', `${url} did not answer in MQTT${detail}`, { clientId, ...(cause ? { cause } : {}) });
      case 'unreachable': {
        const host = new URL(url).host;
        const remedy =
          code === 'ECONNREFUSED'
            ? `Nothing answers at ${url}: is the broker (or the emulator) running? Check the broker URL (--broker-url, brokerUrl).`
            : code === 'ENOTFOUND' || code === 'EAI_AGAIN'
              ? `The host ${host} does not resolve: check the broker URL (--broker-url, brokerUrl) and DNS.`
              : `Could not reach ${url}: check the broker URL (--broker-url, brokerUrl), the port and the network.`;
        return new ConnectError('BrokerUnreachable', `Could not reach the broker at ${url}${detail}`, { clientId, ...(cause ? { cause } : {}), remedy });
      }
    }
  }

  // ---- events and logs

  #emitError(error: ApsaraMqDeviceError): void {
    this.#log('error', error.message, { code: error.code });
    if (this.listenerCount('error') > 0) this.emit('error', error);
  }

  /** mqtt.js's debug output, with every password and secret taken out, at debug level. */
  #mqttLog(args: unknown[]): void {
    const logger = this.#logger;
    if (logger === silentLogger) return; // formatting every packet costs CPU; skip it when nobody listens
    let text = format(...args);
    for (const secret of this.#login.secrets()) {
      if (secret.length > 0) text = text.split(secret).join('****');
    }
    logger.debug(`[mqtt.js] ${this.clientId}: ${text}`);
  }

  #log(level: keyof Logger, message: string, fields: Record<string, unknown>): void {
    if (this.#logger === silentLogger) return; // no string building for nobody
    this.#logger[level](`[apsaramq-device] ${this.clientId}: ${message}`, fields);
  }
}

/** Ask a credential source, with the signal; anything thrown becomes an ApsaraMqDeviceError. */
async function askSource(source: CredentialSource, request: CredentialRequest): Promise<DeviceCredential> {
  let credential: unknown;
  try {
    credential = await raceAbort(Promise.resolve().then(() => source(request)), 'Fetching the device credential', request.signal);
  } catch (error) {
    throw toApsaraMqDeviceError(error);
  }
  if (!(credential instanceof DeviceCredential)) {
    throw new ValidationError('InvalidCredential', 'The credential source did not return a DeviceCredential (build one with DeviceCredential.fromWire)');
  }
  if (!signable(credential)) throw new ValidationError('InvalidCredential', `The DeviceAccessKeyId of ${credential.clientId} contains "|", which the MQTT username cannot carry`);
  return credential;
}

/**
 * Open an MQTT session for a device (MQTT 3.1.1 by default, 5 with `protocolVersion: 5`), authenticated in
 * DeviceCredential mode, or in Token mode with the `token` option ({@link TokenConnectOptions}). Every option is
 * checked before any I/O. Resolves on CONNACK 0; rejects with a {@link ConnectError} (`CredentialRejected`,
 * `TokenRejected`, `BrokerUnreachable`, `ConnectTimeout`, `ProtocolError`, …), an `AbortedError`, or a
 * `ValidationError`.
 *
 * @example
 * const conn = await connectDevice({ credential: provisioner.credentialSource('GID_demo@@@dev-1'), brokerUrl });
 * await conn.publish('demo/hello', 'hi', { qos: 1 });
 */
export async function connectDevice(options: TokenConnectOptions): Promise<DeviceConnection<'Token'>>;
// The DeviceCredential signature comes last: `Parameters<typeof connectDevice>` reads it, as it did before Token mode.
export async function connectDevice(options: ConnectDeviceOptions): Promise<DeviceConnection>;
export async function connectDevice(options: ConnectDeviceOptions | TokenConnectOptions): Promise<DeviceConnection<ConnectionMode>> {
  const resolved = resolveConnectOptions(options);
  const signal = resolved.signal ? { signal: resolved.signal } : {};
  let login: Login;
  if (resolved.token) {
    const { clientId, ...token } = resolved.token;
    const tokens = await askTokenSource(token.source, { reason: 'connect', types: [], ...signal });
    login = new TokenLogin(clientId, token, tokens);
  } else {
    const given = (options as ConnectDeviceOptions).credential;
    const source: CredentialSource = given instanceof DeviceCredential ? staticSource(given) : given;
    login = new CredentialLogin(await askSource(source, { reason: 'connect', ...signal }), source);
  }
  const url = resolved.explicitUrl ?? brokerUrlFor(login.instanceId, resolved.transport);
  const connection = new DeviceConnection<ConnectionMode>(login, resolved, url);
  if (connectionChannel.hasSubscribers) connectionChannel.publish({ connection, brokerUrl: url });
  await connection[START]();
  return connection;
}

/** Ask a token source for the first tokens, with the signal; anything thrown becomes an ApsaraMqDeviceError. */
async function askTokenSource(source: TokenSource, request: TokenRequest): Promise<readonly TokenGrant[]> {
  let answer: unknown;
  try {
    answer = await raceAbort(Promise.resolve().then(() => source(request)), 'Fetching the tokens', request.signal);
  } catch (error) {
    throw toApsaraMqDeviceError(error);
  }
  const tokens = checkTokenAnswer(answer);
  if (tokens.length === 0) throw new ValidationError('InvalidToken', 'The token source returned no token');
  return tokens;
}

/** A source that always hands out the same credential (the connector then cannot heal a rotation). */
export function staticSource(credential: DeviceCredential): CredentialSource {
  return async () => credential;
}
