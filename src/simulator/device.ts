import { isIP, connect as netConnect, type Socket } from 'node:net';
import { checkServerIdentity, connect as tlsConnect } from 'node:tls';
import { brokerUrlFor } from '../connector/connect.js';
import { MAX_REFETCHES } from '../connector/ladder.js';
import type { CredentialSource, DeviceCredential } from '../credential.js';
import { LOCAL_ERROR_CATALOG, type LocalErrorCode, ValidationError } from '../errors.js';
import { classifyRefusal, refusesMessage } from '../mqtt/reason-codes.js';
import { signDeviceCredential } from '../signer/mqtt.js';
import { fullJitterDelay } from '../util/backoff.js';
import { type Clock, Pause } from './clock.js';
import type { HealTracker } from './heal.js';
import { type MessageLedger, stampPayload } from './ledger.js';
import type { SimulationMetrics } from './metrics.js';
import {
  DISCONNECT,
  DISCONNECT_V5,
  PINGREQ,
  PacketReader,
  PacketType,
  type ProtocolLevel,
  decodeConnack,
  decodeDisconnect,
  decodePublish,
  decodeSuback,
  encodeConnect,
  encodePuback,
  encodePublish,
  encodeSubscribe,
  pubackReasonCode,
  type IncomingPacket,
} from './mqtt-wire.js';
import { PAYLOAD_HEADER_SIZE, type ResolvedSettings } from './options.js';

/** Where the devices connect: MQTT over TCP or over TLS. */
export interface BrokerAddress {
  host: string;
  port: number;
  tls: boolean;
  /** For TLS: CA certificates and whether to verify the broker. */
  ca?: string | Buffer | Array<string | Buffer>;
  rejectUnauthorized?: boolean;
}

/**
 * Parse a broker URL for simulated devices: `mqtt://` / `tcp://` (default port 1883) or `mqtts://` / `tls://` /
 * `ssl://` (8883). WebSocket is not simulated: one WebSocket per device would cost several times the memory.
 * @throws ValidationError `InvalidOption`
 */
export function parseBrokerUrl(brokerUrl: string): BrokerAddress {
  // The connector's check first (a URL with an MQTT scheme), so both accept and word things alike.
  const url = new URL(brokerUrlFor('', 'tcp', brokerUrl));
  const scheme = url.protocol.replace(/:$/, '');
  const tls = ['mqtts', 'tls', 'ssl'].includes(scheme);
  if (!tls && !['mqtt', 'tcp'].includes(scheme)) {
    throw new ValidationError('InvalidOption', `The simulator connects over mqtt:// or mqtts://, not ${scheme}://`);
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return { host, port: url.port ? Number(url.port) : tls ? 8883 : 1883, tls };
}

/** What every device of a run shares. */
export interface DeviceContext {
  readonly settings: ResolvedSettings;
  readonly broker: BrokerAddress;
  readonly metrics: SimulationMetrics;
  readonly clock: Clock;
  readonly random: () => number;
  /** Zeros of the payload size; each message gets its send time written over the first bytes. */
  readonly payloadTemplate: Buffer;
  /** Called once per device that hit the open-file limit. */
  readonly onFileLimit: () => void;
  /** Called with an MQTT 5 refusal's error code and the broker's Reason String, when it sent one. */
  readonly onReason?: (code: string, reasonString: string) => void;
  /** A game day: every device reports when it goes online and offline (time to heal). */
  readonly heal?: HealTracker;
  /** A game day with a backend subscriber: each message gets its device index and sequence, and is accounted for. */
  readonly ledger?: MessageLedger;
}

/** Where one device connects and how it heals, besides what the whole fleet shares. */
export interface DeviceRoute {
  /** Source address of its connections; `undefined` for the system's choice. */
  localAddress?: string;
  /** Where it dials instead of the broker: its group's port of the fault relay (TLS is still checked for the broker). */
  dial?: { host: string; port: number };
  /**
   * The credential ladder after the broker refuses its credential (store → GetDeviceCredential → Register), as the
   * connector climbs it; without one a refused device stays off.
   */
  ladder?: CredentialSource;
}

/** A failed connect attempt: its error code and whether another attempt may succeed. */
export interface AttemptFailure {
  code: string;
  retryable: boolean;
}

/**
 * The failure of an attempt with a code of the error catalog, retryable as the catalog says; with an MQTT 5 reason
 * code, counted under the qualified code (`CredentialRejected:0x86`).
 */
function attemptFailure(code: LocalErrorCode, reason?: number): AttemptFailure {
  return { code: reason === undefined ? code : withReason(code, reason), retryable: LOCAL_ERROR_CATALOG[code].retryable };
}

const SOCKET_ERROR_CODES: Readonly<Record<string, LocalErrorCode>> = {
  EMFILE: 'TooManyOpenFiles',
  ENFILE: 'TooManyOpenFiles',
  ENOTFOUND: 'HostNotFound',
  EAI_AGAIN: 'HostNotFound',
};

/** Reconnect backoff after a lost session: short, since a simulation run is short. */
export const RECONNECT_BACKOFF = Object.freeze({ minDelayMs: 500, maxDelayMs: 10_000 });

type State = 'idle' | 'connecting' | 'subscribing' | 'online' | 'waiting' | 'stopping' | 'stopped';

/**
 * One simulated device: a raw socket speaking just enough MQTT 3.1.1 or MQTT 5, authenticated in DeviceCredential
 * mode with the same signer as the library's connector. Kept small on purpose (no per-device closures beyond the
 * socket's listeners): a 2-core machine runs 10,000 of them.
 */
export class SimulatedDevice {
  readonly index: number;
  readonly #ctx: DeviceContext;
  #connect: Buffer;
  readonly #topic: Buffer;
  readonly #topicText: string;
  readonly #route: DeviceRoute;
  /** Kept only with a ladder: what the source is told was refused. */
  #credential: DeviceCredential | undefined;
  /** Credentials asked for since the last CONNACK 0 (bounded as the connector bounds them). */
  #refetches = 0;
  /** QoS 1 messages in flight on this session, by packet id: their sequence in the ledger (-1 without one). */
  readonly #inFlight = new Map<number, number>();
  #socket: Socket | undefined;
  #reader: PacketReader | undefined;
  #state: State = 'idle';
  #everConnected = false;
  #packetId = 0;
  #openedAt = 0;
  #lostAttempts = 0;
  /** The reconnect backoff's timer after a lost session. */
  #timer: unknown;
  #publishTimer: unknown;
  #pingTimer: unknown;
  #attemptDone: ((failure: AttemptFailure | undefined) => void) | undefined;
  #attemptTimer: unknown;
  #closed: (() => void) | undefined;
  #lastSocketError: string | undefined;
  /** This device is counted in `metrics.online`. */
  #countedOnline = false;
  /** The wait between two connect attempts; stopping cuts it short. */
  readonly #pause: Pause;
  /** Set while the run is in its publishing phase, so a device that reconnects resumes publishing. */
  #publishing = false;
  /** MQTT 5: the reason code of the broker's DISCONNECT on the current connection, until it closes. */
  #disconnectReason: number | undefined;
  /** MQTT 5: the broker's Server Keep Alive on the current connection, which replaces the run's keepalive. */
  #serverKeepAlive: number | undefined;

  constructor(index: number, credential: DeviceCredential, topic: string, ctx: DeviceContext, route: DeviceRoute = {}) {
    this.index = index;
    this.#ctx = ctx;
    this.#pause = new Pause(ctx.clock);
    this.#route = route;
    this.#credential = route.ladder ? credential : undefined;
    this.#connect = this.#signed(credential);
    this.#topicText = topic;
    this.#topic = Buffer.from(topic, 'utf8');
  }

  /** Signed once per credential: the password is the same on every attempt, and HMAC per reconnect would be wasted work. */
  #signed(credential: DeviceCredential): Buffer {
    return encodeConnect({ ...signDeviceCredential(credential), keepalive: this.#ctx.settings.keepalive, clean: true, protocol: this.#ctx.settings.protocol });
  }

  /** QoS 1 messages awaiting their PUBACK on this session (a raw device holds nothing else: what it cannot send is dropped). */
  get pending(): number {
    return this.#inFlight.size;
  }

  /** Has it had a CONNACK 0? */
  get everConnected(): boolean {
    return this.#everConnected;
  }

  /**
   * Connect (and subscribe, when the run does), trying again after retryable failures. Resolves true once online,
   * false when it gave up; every failed attempt is counted in the metrics under its code.
   */
  async start(): Promise<boolean> {
    const { settings, metrics } = this.#ctx;
    for (let attempt = 0; attempt < settings.connectAttempts; attempt++) {
      if (attempt > 0) await this.#pause.sleep(fullJitterDelay(attempt - 1, RECONNECT_BACKOFF, this.#ctx.random));
      if (this.#state === 'stopping' || this.#state === 'stopped') return false;
      const failure = await this.#attempt();
      if (!failure) return true;
      metrics.error(failure.code);
      if (failure.code === 'TooManyOpenFiles') this.#ctx.onFileLimit();
      if (!failure.retryable) break;
    }
    return false;
  }

  /**
   * Publish every `publishIntervalMs`, starting at a random phase so the fleet does not publish in lockstep. With a
   * ledger the ticks go on while the device is offline: each is a message the application handed over and the
   * device, which has no outbox, drops (lost).
   */
  #startPublishing(): void {
    const interval = this.#ctx.settings.publishIntervalMs;
    if (interval <= 0 || this.#state !== 'online' || this.#publishTimer !== undefined) return;
    this.#publishTimer = this.#ctx.clock.setTimeout(() => this.#tick(), this.#ctx.random() * interval);
  }

  /** Stop publishing; messages in flight may still be acknowledged and delivered. */
  #stopPublishing(): void {
    if (this.#publishTimer !== undefined) this.#ctx.clock.clearTimeout(this.#publishTimer);
    this.#publishTimer = undefined;
  }

  /** Send DISCONNECT and close; resolves when the socket is closed (forcibly after 2 s). */
  stop(): Promise<void> {
    this.#stopPublishing();
    if (this.#timer !== undefined) this.#ctx.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#clearPing();
    const socket = this.#socket;
    const wasOnline = this.#state === 'online' || this.#state === 'subscribing';
    this.#state = 'stopping';
    this.#settleAttempt(attemptFailure('Aborted'));
    this.#pause.wake();
    if (!socket || socket.destroyed) {
      this.#state = 'stopped';
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const force = this.#ctx.clock.setTimeout(() => socket.destroy(), 2_000);
      this.#closed = () => {
        this.#ctx.clock.clearTimeout(force);
        resolve();
      };
      if (wasOnline) socket.end(this.#ctx.settings.protocol === 5 ? DISCONNECT_V5 : DISCONNECT);
      else socket.destroy();
    });
  }

  /** One connection attempt: TCP (or TLS), CONNECT, CONNACK, and SUBSCRIBE/SUBACK when subscribing. */
  #attempt(): Promise<AttemptFailure | undefined> {
    const { broker, clock, settings, metrics } = this.#ctx;
    this.#state = 'connecting';
    this.#lastSocketError = undefined;
    this.#disconnectReason = undefined;
    this.#serverKeepAlive = undefined;
    this.#reader = new PacketReader();
    this.#openedAt = clock.now();
    return new Promise<AttemptFailure | undefined>((resolve) => {
      this.#attemptDone = resolve;
      this.#attemptTimer = clock.setTimeout(() => {
        this.#settleAttempt(attemptFailure('ConnectTimeout'));
        this.#socket?.destroy();
      }, settings.connectTimeoutMs);
      const onOpen = (): void => {
        metrics.connectSent(clock.now());
        socket.write(this.#connect);
      };
      const { localAddress, dial } = this.#route;
      const to = { host: dial?.host ?? broker.host, port: dial?.port ?? broker.port, ...(localAddress === undefined ? {} : { localAddress }) };
      const socket = broker.tls
        ? tlsConnect(
            {
              ...to,
              // SNI takes host names only (RFC 6066); an IP address is still checked against the certificate.
              ...(isIP(broker.host) ? {} : { servername: broker.host }),
              // Through the relay the certificate is still the broker's: checked against the broker's name.
              ...(dial === undefined ? {} : { checkServerIdentity: (_host: string, cert: Parameters<typeof checkServerIdentity>[1]) => checkServerIdentity(broker.host, cert) }),
              ...(broker.ca === undefined ? {} : { ca: broker.ca }),
              rejectUnauthorized: broker.rejectUnauthorized ?? true,
            },
            onOpen,
          )
        : netConnect(to, onOpen);
      this.#socket = socket;
      socket.setNoDelay(true);
      socket.on('data', (chunk: Buffer) => this.#onData(chunk));
      socket.on('error', (error: Error & { code?: string }) => {
        this.#lastSocketError = error.code ?? 'ERROR';
      });
      socket.on('close', () => this.#onClose(socket));
    });
  }

  #settleAttempt(failure: AttemptFailure | undefined): void {
    const done = this.#attemptDone;
    if (!done) return;
    this.#attemptDone = undefined;
    this.#ctx.clock.clearTimeout(this.#attemptTimer);
    done(failure);
  }

  #onData(chunk: Buffer): void {
    try {
      this.#reader?.push(chunk, (packet) => this.#onPacket(packet));
    } catch {
      this.#ctx.metrics.error('ProtocolError');
      this.#socket?.destroy();
    }
  }

  #onPacket(packet: IncomingPacket): void {
    const { metrics, clock, settings } = this.#ctx;
    const protocol = settings.protocol;
    switch (packet.type) {
      case PacketType.CONNACK: {
        const connack = decodeConnack(packet, protocol);
        if (connack.code !== 0) {
          const failure = connackFailure(connack.code, protocol);
          if (connack.properties.reasonString !== undefined) this.#ctx.onReason?.(failure.code, connack.properties.reasonString);
          // Refused: the device may try again at once (a new credential from its ladder) before this socket's close.
          if (this.#state === 'connecting') this.#state = 'idle';
          this.#settleAttempt(failure);
          this.#socket?.destroy();
          return;
        }
        this.#serverKeepAlive = connack.properties.serverKeepAlive;
        if (!this.#everConnected) {
          this.#everConnected = true;
          metrics.firstConnack(clock.now(), clock.now() - this.#openedAt);
        } else {
          metrics.reconnects += 1;
        }
        metrics.wentOnline();
        this.#ctx.heal?.online(this.index);
        this.#countedOnline = true;
        this.#lostAttempts = 0;
        this.#refetches = 0;
        this.#armPing();
        if (settings.subscribe) {
          this.#state = 'subscribing';
          this.#socket?.write(encodeSubscribe(this.#nextPacketId(), this.#topicText, settings.qos, protocol));
        } else {
          this.#state = 'online';
          this.#settleAttempt(undefined);
        }
        return;
      }
      case PacketType.SUBACK: {
        const suback = decodeSuback(packet, protocol);
        // 3.1.1 refuses with 0x80, MQTT 5 with any code from 0x80.
        if (suback.code >= 0x80) {
          const refused = attemptFailure('SubscribeRejected', protocol === 5 ? suback.code : undefined);
          if (suback.properties.reasonString !== undefined) this.#ctx.onReason?.(refused.code, suback.properties.reasonString);
          this.#settleAttempt(refused);
          this.#socket?.destroy();
          return;
        }
        if (this.#state === 'subscribing') this.#state = 'online';
        this.#settleAttempt(undefined);
        return;
      }
      case PacketType.PUBACK: {
        // Every PUBACK counts as acknowledged (the drain waits for them); an MQTT 5 refusal is also counted as an error.
        metrics.puback();
        const id = packet.body.readUInt16BE(0);
        const seq = this.#inFlight.get(id);
        if (seq !== undefined) {
          this.#inFlight.delete(id);
          if (seq >= 0) this.#ctx.ledger?.acked(this.index, seq);
        }
        if (protocol === 5) {
          const reason = pubackReasonCode(packet);
          if (reason >= 0x80) metrics.error(withReason('PublishRejected', reason));
        }
        return;
      }
      case PacketType.PUBLISH: {
        const message = decodePublish(packet, protocol);
        if (message.qos > 0) this.#socket?.write(encodePuback(message.packetId));
        if (message.payload.length >= PAYLOAD_HEADER_SIZE) {
          const now = clock.now();
          metrics.deliveredAfter(now - message.payload.readDoubleBE(0), now);
        }
        return;
      }
      case PacketType.DISCONNECT: {
        // Only MQTT 5 brokers send one: keep its reason for the close that follows, and close now rather than wait.
        if (protocol !== 5) return;
        const disconnect = decodeDisconnect(packet);
        this.#disconnectReason = disconnect.reasonCode;
        if (disconnect.properties.reasonString !== undefined) {
          this.#ctx.onReason?.(withReason(this.#lossCode(disconnect.reasonCode), disconnect.reasonCode), disconnect.properties.reasonString);
        }
        this.#socket?.destroy();
        return;
      }
      default:
        return; // PINGRESP and anything else need nothing.
    }
  }

  /**
   * The error code of a session the broker ended with an MQTT 5 DISCONNECT reason: a refusal of the device's own
   * traffic is `SubscribeRejected` while it subscribes, `PublishRejected` once it publishes; anything else is
   * `ConnectionLost`.
   */
  #lossCode(reason: number): 'ConnectionLost' | 'SubscribeRejected' | 'PublishRejected' {
    if (!refusesMessage(reason)) return 'ConnectionLost';
    return this.#state === 'subscribing' ? 'SubscribeRejected' : this.#state === 'online' ? 'PublishRejected' : 'ConnectionLost';
  }

  /** Enter or leave the publishing phase; a device that reconnects during it resumes publishing. */
  setPublishing(on: boolean): void {
    this.#publishing = on;
    if (on) this.#startPublishing();
    else this.#stopPublishing();
  }

  #tick(): void {
    const { clock, settings, metrics, payloadTemplate } = this.#ctx;
    this.#publishTimer = clock.setTimeout(() => this.#tick(), settings.publishIntervalMs);
    const socket = this.#socket;
    if (this.#state !== 'online' || !socket) {
      // Handed over while offline: with no outbox, dropped.
      if (this.#publishing) this.#ctx.ledger?.dropped(this.index);
      return;
    }
    const packetId = settings.qos > 0 ? this.#nextPacketId() : 0;
    const packet = encodePublish(this.#topic, payloadTemplate, settings.qos, packetId, settings.protocol);
    const now = clock.now();
    const ledger = this.#ctx.ledger;
    const seq = ledger ? ledger.accept(this.index) : -1;
    if (ledger) stampPayload(packet, packet.length - payloadTemplate.length, now, this.index, seq);
    else packet.writeDoubleBE(now, packet.length - payloadTemplate.length);
    if (packetId > 0) this.#inFlight.set(packetId, seq);
    socket.write(packet);
    metrics.publishSent(now);
  }

  #nextPacketId(): number {
    this.#packetId = (this.#packetId % 65_535) + 1;
    return this.#packetId;
  }

  #armPing(): void {
    const { publishIntervalMs } = this.#ctx.settings;
    // MQTT 5: a Server Keep Alive in the CONNACK replaces the Keep Alive the device sent (the client must use it).
    const keepalive = this.#serverKeepAlive ?? this.#ctx.settings.keepalive;
    const everyMs = (keepalive * 1_000) / 2;
    // Publishing more often than half the keepalive already keeps the session alive.
    if (keepalive === 0 || (publishIntervalMs > 0 && publishIntervalMs <= everyMs)) return;
    this.#clearPing();
    const ping = (): void => {
      this.#pingTimer = this.#ctx.clock.setTimeout(ping, everyMs);
      if (this.#state === 'online') this.#socket?.write(PINGREQ);
    };
    this.#pingTimer = this.#ctx.clock.setTimeout(ping, everyMs);
  }

  #clearPing(): void {
    if (this.#pingTimer !== undefined) this.#ctx.clock.clearTimeout(this.#pingTimer);
    this.#pingTimer = undefined;
  }

  #onClose(socket: Socket): void {
    if (socket !== this.#socket) return;
    this.#socket = undefined;
    this.#reader = undefined;
    this.#clearPing();
    const reason = this.#disconnectReason;
    this.#disconnectReason = undefined;
    // Read before the state changes: what the device was doing says what a refusal refused.
    const lossCode = reason === undefined ? 'ConnectionLost' : this.#lossCode(reason);
    const wasLive = this.#countedOnline;
    if (wasLive) {
      this.#countedOnline = false;
      this.#ctx.metrics.wentOffline();
      this.#ctx.heal?.offline(this.index);
    }
    // A clean session dies with its connection: what it had in flight is never sent again by this device.
    for (const seq of this.#inFlight.values()) if (seq >= 0) this.#ctx.ledger?.abandoned(this.index, seq);
    this.#inFlight.clear();
    if (this.#state === 'stopping' || this.#state === 'stopped') {
      this.#state = 'stopped';
      const closed = this.#closed;
      this.#closed = undefined;
      closed?.();
      return;
    }
    if (this.#attemptDone) {
      const code = this.#lastSocketError;
      this.#state = 'idle';
      if (reason !== undefined) this.#settleAttempt(attemptFailure(lossCode, reason));
      else this.#settleAttempt(attemptFailure(code ? (SOCKET_ERROR_CODES[code] ?? 'BrokerUnreachable') : 'ConnectionLost'));
      return;
    }
    if (!wasLive) {
      // The attempt was already settled (refused CONNACK, timeout) and its socket destroyed: its owner decides.
      this.#state = 'idle';
      return;
    }
    // A live session was dropped by the broker: count it and, unless the broker refused what the device sends, come
    // back after a jittered delay.
    this.#ctx.metrics.error(reason === undefined ? lossCode : withReason(lossCode, reason));
    if (!this.#ctx.ledger) this.#stopPublishing();
    if (lossCode === 'ConnectionLost') this.#scheduleReconnect();
    else this.#state = 'idle';
  }

  #scheduleReconnect(): void {
    this.#state = 'waiting';
    const delay = fullJitterDelay(this.#lostAttempts++, RECONNECT_BACKOFF, this.#ctx.random);
    this.#ctx.heal?.retrying(this.index, delay);
    this.#timer = this.#ctx.clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#state === 'waiting') this.#reconnect();
    }, delay);
  }

  #reconnect(): void {
    this.#ctx.heal?.connecting(this.index);
    void this.#attempt().then(async (failure) => {
      if (!failure) {
        if (this.#publishing) this.#startPublishing();
        return;
      }
      // The run ended while this device was coming back: its loss is already counted, and an attempt cut short by
      // the end of the run is not a failure of the broker.
      if (failure.code === 'Aborted') return;
      this.#ctx.metrics.error(failure.code);
      if (failure.code === 'TooManyOpenFiles') this.#ctx.onFileLimit();
      if (this.#state !== 'idle') return;
      if (failure.retryable) this.#scheduleReconnect();
      else if (failure.code.startsWith('CredentialRejected') && (await this.#climb())) this.#reconnect();
    });
  }

  /**
   * The connector's ladder, for a raw device: ask the source for another credential (the store, then
   * GetDeviceCredential, then Register when the service has none), at most {@link MAX_REFETCHES} times between two
   * accepted CONNECTs. True when it has a new key to try now; a source that failed for now (throttling, an OpenAPI
   * outage) schedules another attempt with backoff, which is refused again and climbs again.
   */
  async #climb(): Promise<boolean> {
    const { ladder } = this.#route;
    const refused = this.#credential;
    if (!ladder || !refused || this.#refetches >= MAX_REFETCHES) return false;
    this.#refetches += 1;
    let next: DeviceCredential;
    try {
      next = await ladder({ reason: 'rejected', rejected: refused });
    } catch (error) {
      this.#refetches -= 1;
      const retryable = (error as { retryable?: unknown }).retryable === true;
      this.#ctx.metrics.error(`Ladder:${(error as { code?: unknown }).code ?? 'UnknownError'}`);
      if (retryable && this.#state === 'idle') this.#scheduleReconnect();
      return false;
    }
    if (this.#state !== 'idle' || next.sameKeyAs(refused)) return false;
    this.#credential = next;
    this.#connect = this.#signed(next);
    this.#ctx.metrics.credentialRefetched();
    return true;
  }
}

/** An error code qualified by its MQTT 5 reason code, as counted in the report: `CredentialRejected:0x86`. */
function withReason(code: string, reason: number): string {
  return `${code}:0x${reason.toString(16).padStart(2, '0')}`;
}

/**
 * The failure of a refused CONNACK, classed as the connector classes it ({@link classifyRefusal}): identifier,
 * credential, or `ConnackRefused`; counted with the reason code under MQTT 5. A refusal that says the server is only
 * unavailable for now (3.1.1's 3; MQTT 5's busy, quota, rate) is worth another attempt, whatever the catalog says of
 * `ConnackRefused` in general: the reason code knows better. Exported for its test only (not from the entry).
 */
export function connackFailure(rc: number, protocol: ProtocolLevel): AttemptFailure {
  const kind = classifyRefusal(rc, protocol);
  const refused = attemptFailure(kind === 'identifier' ? 'IdentifierRejected' : kind === 'credential' ? 'CredentialRejected' : 'ConnackRefused', protocol === 5 ? rc : undefined);
  return kind === 'unavailable' ? { ...refused, retryable: true } : refused;
}
