/**
 * One CONNECT and, when it is accepted, the session that follows: one mqtt.js client, used once. mqtt.js's own
 * reconnect is off (`reconnectPeriod: 0`) and a new client is made for each attempt, so nothing of a client is
 * changed after it was built. What the broker said is read from the packets (the CONNACK's and the DISCONNECT's
 * numeric codes), what the network did from Node's error codes; never from an error message's text.
 */
import { type Duplex, Readable } from 'node:stream';
import { format } from 'node:util';
import type { IClientOptions, IConnackPacket, IPublishPacket, IStore, MqttClient, Packet } from 'mqtt';
import type { ConnectFailure } from './state.js';
import type { SessionEnd } from './takeover.js';
import { MAX_TIMER_MS } from '../util/backoff.js';
import { type Logger, silentLogger } from '../util/logger.js';
import type { Login } from './login.js';
import type { ResolvedConnectOptions } from './options.js';
import { ErrorWithReasonCode, connect as mqttConnect } from './mqtt-client.js';
import { brokerTarget } from './broker-target.js';
import { type Guard, guard } from './packet-guard.js';
import { pubackTaken, takesPuback } from './publish-writer.js';

/** What one attempt reports, once each: accepted, then lost; or refused; or failed. */
export type AttemptEvent =
  /** CONNACK 0. */
  | { readonly type: 'accepted'; readonly connack: IConnackPacket }
  /** CONNACK with a refusal code. */
  | { readonly type: 'refused'; readonly code: number }
  /** No CONNACK: why, and the error seen, if any. */
  | { readonly type: 'failed'; readonly failure: ConnectFailure; readonly cause: Error | undefined }
  /** The accepted session ended; `violation` when it was closed because the broker broke MQTT. */
  | { readonly type: 'lost'; readonly end: SessionEnd; readonly cause: Error | undefined; readonly violation: Error | undefined };

/** The method of an {@link AttemptListener} that gets what an attempt reports. */
export const ATTEMPT_EVENT = Symbol('attempt event');
/** The method of an {@link AttemptListener} that gets an application message. */
export const ATTEMPT_MESSAGE = Symbol('attempt message');

/**
 * Where an attempt reports: the connection itself, through two methods keyed by symbols (methods on its prototype,
 * not closures per connection: a connection's size is multiplied by the fleet).
 */
export interface AttemptListener {
  [ATTEMPT_EVENT](attempt: Attempt, event: AttemptEvent): void;
  /** An application message arrived on the attempt's session. */
  [ATTEMPT_MESSAGE](attempt: Attempt, topic: string, payload: Buffer, packet: IPublishPacket): void;
}

/** Node's codes for a TLS certificate that could not be verified (OpenSSL's names, and Node's own ERR_TLS_CERT_*). */
const CERTIFICATE_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** The code of a Node system or TLS error, if it has one. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Is this the error of a TLS certificate that could not be verified? */
export function isCertificateError(error: unknown): boolean {
  const code = errorCode(error);
  return code !== undefined && CERTIFICATE_CODES.has(code);
}

/** Does this first chunk from the peer start an HTTP response? */
export function looksLikeHttp(firstBytes: Buffer | undefined): boolean {
  return firstBytes !== undefined && firstBytes.subarray(0, 5).toString('latin1') === 'HTTP/';
}

/** Why an attempt that got no CONNACK failed: from what was seen, in order of certainty. */
export function classifyFailure(seen: { timedOut: boolean; error: Error | undefined; firstBytes: Buffer | undefined; violation?: boolean }): ConnectFailure {
  if (isCertificateError(seen.error)) return 'untrusted';
  if (looksLikeHttp(seen.firstBytes)) return 'http';
  if (seen.violation) return 'protocol';
  if (seen.timedOut) return 'timeout';
  // A system error (ECONNREFUSED, ENOTFOUND, ECONNRESET, …) carries a string code; mqtt.js's parser errors do not:
  // the peer sent bytes that are not MQTT.
  if (seen.error !== undefined && errorCode(seen.error) === undefined && seen.firstBytes !== undefined) return 'protocol';
  return 'unreachable';
}

/**
 * The QoS 2 messages the broker sent and has not released yet (PUBREC sent, PUBREL awaited), kept across the
 * clients of one connection: a PUBREL that arrives on the next session must find its message, or mqtt.js would
 * acknowledge it without delivering it. mqtt.js closes its stores when a client ends; this one outlives them.
 */
export class InboundStore implements IStore {
  /** Made on the first QoS 2 message: most devices never receive one. */
  #packets: Map<number, Packet> | undefined;

  put(packet: Packet, cb: (error?: Error) => void): this {
    if (packet.messageId !== undefined) (this.#packets ??= new Map()).set(packet.messageId, packet);
    cb();
    return this;
  }

  createStream(): ReturnType<IStore['createStream']> {
    return Readable.from([...(this.#packets?.values() ?? [])]) as unknown as ReturnType<IStore['createStream']>;
  }

  del(packet: Pick<Packet, 'messageId'>, cb: (error?: Error, packet?: Packet) => void): this {
    const stored = packet.messageId === undefined ? undefined : this.#packets?.get(packet.messageId);
    if (stored && packet.messageId !== undefined) this.#packets?.delete(packet.messageId);
    if (stored) cb(undefined, stored);
    else cb(new Error('missing packet'));
    return this;
  }

  get(packet: Pick<Packet, 'messageId'>, cb: (error?: Error, packet?: Packet) => void): this {
    const stored = packet.messageId === undefined ? undefined : this.#packets?.get(packet.messageId);
    if (stored) cb(undefined, stored);
    else cb(new Error('missing packet'));
    return this;
  }

  /** Kept: the next client of the connection uses it. */
  close(cb: (error?: Error) => void): void {
    cb();
  }

  /** A new session (CONNACK without a session present): nothing of the old one will be released. */
  clear(): void {
    this.#packets = undefined;
  }
}

/** How long a graceful close waits for the broker to close the connection after DISCONNECT. */
const GRACEFUL_CLOSE_MS = 2_000;

/** What an attempt is given besides mqtt.js's options. */
export interface AttemptSettings {
  readonly connectTimeoutMs: number;
  /** The largest packet taken from the broker (see packet-guard.ts). */
  readonly maxPacketBytes: number;
}

/**
 * mqtt.js builds the socket of a client with a `streamBuilder` it keeps on the client: not in its typings, but
 * present since mqtt.js 4 (the constructor's documented first argument). The attempt wraps it to put the packet
 * guard into the socket, ahead of mqtt.js's parser.
 */
type Buildable = { streamBuilder?: (client: MqttClient) => Duplex };

/** The attempt of a client, kept on the client for the shared listeners. */
const ATTEMPT_OF = Symbol('attempt');
/** mqtt.js's own stream builder of a client (see {@link Buildable}). */
const BUILD_OF = Symbol('build');
type Owned = MqttClient & { [ATTEMPT_OF]: Attempt; [BUILD_OF]?: (client: MqttClient) => Duplex };

/** One mqtt.js client, one CONNECT, at most one session. */
export class Attempt {
  readonly #client: MqttClient;
  readonly #listener: AttemptListener;
  readonly #connectTimeoutMs: number;
  #phase: 'connecting' | 'online' | 'over' = 'connecting';
  #connackCode: number | undefined;
  #disconnectReason: number | undefined;
  #error: Error | undefined;
  /** The broker broke MQTT: a packet the guard stopped, or one mqtt.js could not parse or act on. */
  #violation: Error | undefined;
  #guard: Guard | undefined;
  readonly #maxPacketBytes: number;
  #timedOut = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(url: string, options: IClientOptions, settings: AttemptSettings, listener: AttemptListener) {
    this.#listener = listener;
    this.#connectTimeoutMs = settings.connectTimeoutMs;
    this.#client = mqttConnect({
      ...brokerTarget(url),
      ...options,
      reconnectPeriod: 0,
      // Our own CONNACK timer decides; mqtt.js's must never fire first.
      connectTimeout: MAX_TIMER_MS,
      manualConnect: true,
      resubscribe: false,
      queueQoSZero: false,
    });
    const client = this.#client;
    this.#maxPacketBytes = settings.maxPacketBytes;
    const build = (client as unknown as Buildable).streamBuilder;
    // An mqtt.js without it still connects, unguarded; test/unit/connector-packet-guard.test.ts fails on such a version.
    // The builder is one function for every client (the client keeps its own under a symbol), not two closures each.
    if (typeof build === 'function') {
      (client as Owned)[BUILD_OF] = build;
      (client as unknown as Buildable).streamBuilder = Attempt.#guardedBuild;
    }
    // The listeners are the same functions for every client (EventEmitter calls them with the client as `this`, and
    // the client names its attempt): a gateway holds thousands of clients. Every error is followed by 'close'; the
    // first one is kept as the cause. An 'error' listener must exist anyway: an EventEmitter 'error' without one would
    // crash the process.
    (client as Owned)[ATTEMPT_OF] = this;
    client.on('packetreceive', Attempt.#listeners.packetreceive);
    client.on('connect', Attempt.#listeners.connect);
    client.on('error', Attempt.#listeners.error);
    client.on('close', Attempt.#listeners.close);
    client.on('message', Attempt.#listeners.message);
  }

  /** mqtt.js's stream builder (called as the client's method), with the packet guard put into the stream it builds. */
  static readonly #guardedBuild = function (this: MqttClient, owner: MqttClient): Duplex {
    const client = this as Owned;
    const stream = (client[BUILD_OF] as (client: MqttClient) => Duplex)(owner);
    const attempt = client[ATTEMPT_OF];
    attempt.#guard = guard(stream, attempt.#maxPacketBytes, attempt);
    return stream;
  };

  /** @internal The packet guard found a PUBACK whole in a chunk: is it one of the connector's own PUBLISH writes? */
  takesPuback(packetId: number): boolean {
    return takesPuback(this.#client, packetId);
  }

  /** @internal The packet guard took that PUBACK out of the stream: answer it as mqtt.js would. */
  pubackTaken(packetId: number): void {
    pubackTaken(this.#client, packetId);
  }

  /** @internal The packet guard stopped the stream: the first violation is the cause. */
  violated(violation: Error): void {
    this.#violation ??= violation;
  }

  static readonly #listeners = {
    packetreceive(this: MqttClient, packet: Packet): void {
      (this as Owned)[ATTEMPT_OF].#onPacket(packet);
    },
    connect(this: MqttClient, connack: IConnackPacket): void {
      (this as Owned)[ATTEMPT_OF].#onConnect(connack);
    },
    error(this: MqttClient, error: Error): void {
      (this as Owned)[ATTEMPT_OF].#onError(error);
    },
    close(this: MqttClient): void {
      (this as Owned)[ATTEMPT_OF].#onClose();
    },
    message(this: MqttClient, topic: string, payload: Buffer, packet: IPublishPacket): void {
      const attempt = (this as Owned)[ATTEMPT_OF];
      if (attempt.#phase === 'online') attempt.#listener[ATTEMPT_MESSAGE](attempt, topic, payload, packet);
    },
  };

  /** The client, for publishing and subscribing while the session is up. */
  get client(): MqttClient {
    return this.#client;
  }

  /** Is the session up (CONNACK 0 and not closed)? */
  get online(): boolean {
    return this.#phase === 'online';
  }

  /** Send the CONNECT. */
  start(): void {
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.#client.end(true);
    }, this.#connectTimeoutMs);
    this.#client.connect();
  }

  /**
   * Close without reporting anything more. `graceful` sends DISCONNECT first (an online session only), so the
   * broker drops the session's will and, with MQTT 5, knows it was meant.
   */
  close(graceful: boolean): Promise<void> {
    const wasOnline = this.#phase === 'online';
    this.#phase = 'over';
    clearTimeout(this.#timer);
    const client = this.#client;
    if (!graceful || !wasOnline) return new Promise((resolve) => client.end(true, () => resolve()));
    return new Promise((resolve) => {
      const stream = client.stream;
      // After DISCONNECT the broker closes the connection; one that does not is not waited for long. The socket's
      // close settles this too: mqtt.js's own callback waits for every acknowledgement it still expects, and a
      // broker need never send one.
      const fallback = setTimeout(() => stream.destroy(), GRACEFUL_CLOSE_MS);
      const done = (): void => {
        clearTimeout(fallback);
        resolve();
      };
      stream.once('close', done);
      client.end(false, done);
    });
  }

  #onPacket(packet: Packet): void {
    if (packet.cmd === 'connack') this.#connackCode = packet.reasonCode ?? packet.returnCode ?? 0;
    else if (packet.cmd === 'disconnect') this.#disconnectReason = packet.reasonCode ?? 0;
  }

  /**
   * mqtt.js's errors. On a live session, one that mqtt.js leaves the socket open after (its parser's: a malformed
   * packet; an acknowledgement of something never sent) or one carrying an MQTT reason code (a broker breaking the
   * topic alias or receive maximum rules; mqtt.js closes then) means the broker broke MQTT: the session is closed and
   * reported as such. An error with a system code (ECONNRESET, …) or a keepalive timeout closes it all the same, as
   * a network failure.
   */
  #onError(error: Error): void {
    this.#error ??= error;
    if (this.#phase !== 'online' || errorCode(error) !== undefined) return;
    const stream = this.#client.stream;
    // mqtt.js closes the socket before reporting a reason code (its close follows at once): note it now.
    if (error instanceof ErrorWithReasonCode) this.#violation ??= error;
    // mqtt.js closes the socket right before the errors it acts on (a keepalive timeout): look once it has.
    queueMicrotask(() => {
      if (stream.destroyed || this.#phase !== 'online') return;
      this.#violation ??= error;
      stream.destroy();
    });
  }

  #onConnect(connack: IConnackPacket): void {
    if (this.#phase !== 'connecting') return;
    clearTimeout(this.#timer);
    this.#phase = 'online';
    this.#timer = undefined;
    if (this.#guard) this.#guard.firstBytes = undefined;
    this.#listener[ATTEMPT_EVENT](this, { type: 'accepted', connack });
  }

  #onClose(): void {
    const phase = this.#phase;
    if (phase === 'over') return;
    this.#phase = 'over';
    clearTimeout(this.#timer);
    // The client is done for; destroy what is left (mqtt.js would otherwise keep its timers for a reconnect).
    this.#client.end(true);
    const violation = this.#violation;
    if (phase === 'connecting') {
      const code = this.#connackCode;
      if (code !== undefined && code !== 0) this.#listener[ATTEMPT_EVENT](this, { type: 'refused', code });
      else {
        const seen = { timedOut: this.#timedOut, error: violation ?? this.#error, firstBytes: this.#guard?.firstBytes, violation: violation !== undefined };
        this.#listener[ATTEMPT_EVENT](this, { type: 'failed', failure: classifyFailure(seen), cause: violation ?? this.#error });
      }
      return;
    }
    let end: SessionEnd;
    if (this.#disconnectReason !== undefined) end = { kind: 'disconnect', reasonCode: this.#disconnectReason };
    else if (violation !== undefined || this.#error !== undefined) end = { kind: 'error' };
    else end = { kind: 'closed' };
    this.#listener[ATTEMPT_EVENT](this, { type: 'lost', end, cause: violation ?? this.#error, violation });
  }
}

/** mqtt.js's debug lines when nobody logs: dropped (its default would print the CONNECT, password included, under DEBUG=mqttjs*). */
function ignoreLog(): void {}

/** mqtt.js's debug output, with every password and secret of the login taken out, at debug level. */
function scrubbedLog(logger: Logger, login: Login): (...args: unknown[]) => void {
  return (...args) => {
    let text = format(...args);
    for (const secret of login.secrets()) {
      if (secret.length > 0) text = text.split(secret).join('****');
    }
    logger.debug(`[mqtt.js] ${login.clientId}: ${text}`);
  };
}

/** The mqtt.js options of the next attempt: signed now, so a refreshed credential (or new tokens) is simply the next attempt's. */
export function clientOptions(options: ResolvedConnectOptions, login: Login, inbound: InboundStore, logger: Logger): IClientOptions {
  const signed = login.sign();
  const properties: NonNullable<IClientOptions['properties']> = {};
  if (options.sessionExpiryInterval !== undefined) properties.sessionExpiryInterval = options.sessionExpiryInterval;
  if (options.userProperties !== undefined) properties.userProperties = options.userProperties;
  // MQTT 5: a compliant broker then never sends a packet the guard would refuse.
  if (options.protocolVersion === 5) properties.maximumPacketSize = options.maxIncomingPacketBytes;
  return {
    protocolVersion: options.protocolVersion,
    clientId: signed.clientId,
    username: signed.username,
    password: signed.password,
    keepalive: options.keepalive,
    clean: options.clean,
    incomingStore: inbound,
    // mqtt.js's debug lines include the CONNECT packet with its password: route them through a scrubber, which
    // also means DEBUG=mqttjs* can no longer print them raw. Formatting every packet costs CPU: only when someone logs.
    log: logger !== silentLogger ? scrubbedLog(logger, login) : ignoreLog,
    ...options.tls,
    ...(options.will ? { will: options.will } : {}),
    ...(Object.keys(properties).length > 0 ? { properties } : {}),
  };
}
