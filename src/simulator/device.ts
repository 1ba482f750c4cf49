import { isIP, connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { brokerUrlFor } from '../connector/connect.js';
import type { DeviceCredential } from '../credential.js';
import { ValidationError } from '../errors.js';
import { signDeviceCredential } from '../signer/mqtt.js';
import { fullJitterDelay } from '../util/backoff.js';
import type { Clock } from './clock.js';
import type { SimulationMetrics } from './metrics.js';
import { DISCONNECT, PINGREQ, PacketReader, PacketType, decodePublish, encodeConnect, encodePuback, encodePublish, encodeSubscribe, type IncomingPacket } from './mqtt-wire.js';
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
}

/** A failed connect attempt: its error code and whether another attempt may succeed. */
interface AttemptFailure {
  code: string;
  retryable: boolean;
}

const SOCKET_ERROR_CODES: Readonly<Record<string, string>> = {
  EMFILE: 'TooManyOpenFiles',
  ENFILE: 'TooManyOpenFiles',
  ENOTFOUND: 'HostNotFound',
  EAI_AGAIN: 'HostNotFound',
};

/** Reconnect backoff after a lost session: short, since a simulation run is short. */
const RECONNECT_BACKOFF = Object.freeze({ minDelayMs: 500, maxDelayMs: 10_000 });

type State = 'idle' | 'connecting' | 'subscribing' | 'online' | 'waiting' | 'stopping' | 'stopped';

/**
 * One simulated device: a raw socket speaking just enough MQTT 3.1.1, authenticated in DeviceCredential mode with
 * the same signer as the library's connector. Kept small on purpose (no per-device closures beyond the socket's
 * listeners): a 2-core machine runs 10,000 of them.
 */
export class SimulatedDevice {
  readonly index: number;
  readonly #ctx: DeviceContext;
  readonly #connect: Buffer;
  readonly #topic: Buffer;
  readonly #topicText: string;
  /** Source address of its connections; `undefined` for the system's choice. */
  readonly #localAddress: string | undefined;
  #socket: Socket | undefined;
  #reader: PacketReader | undefined;
  #state: State = 'idle';
  #everConnected = false;
  #packetId = 0;
  #openedAt = 0;
  #lostAttempts = 0;
  #timer: unknown;
  #pingTimer: unknown;
  #attemptDone: ((failure: AttemptFailure | undefined) => void) | undefined;
  #attemptTimer: unknown;
  #closed: (() => void) | undefined;
  #lastSocketError: string | undefined;
  /** This device is counted in `metrics.online`. */
  #countedOnline = false;
  #wake: (() => void) | undefined;
  /** Set while the run is in its publishing phase, so a device that reconnects resumes publishing. */
  #publishing = false;

  constructor(index: number, credential: DeviceCredential, topic: string, ctx: DeviceContext, localAddress?: string) {
    this.index = index;
    this.#ctx = ctx;
    this.#localAddress = localAddress;
    const signed = signDeviceCredential(credential);
    // Signed once: the password is the same on every attempt, and HMAC per reconnect would be wasted work.
    this.#connect = encodeConnect({ ...signed, keepalive: ctx.settings.keepalive, clean: true });
    this.#topicText = topic;
    this.#topic = Buffer.from(topic, 'utf8');
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
      if (attempt > 0) await this.#sleep(fullJitterDelay(attempt - 1, RECONNECT_BACKOFF, this.#ctx.random));
      if (this.#state === 'stopping' || this.#state === 'stopped') return false;
      const failure = await this.#attempt();
      if (!failure) return true;
      metrics.error(failure.code);
      if (failure.code === 'TooManyOpenFiles') this.#ctx.onFileLimit();
      if (!failure.retryable) break;
    }
    return false;
  }

  /** Publish every `publishIntervalMs`, starting at a random phase so the fleet does not publish in lockstep. */
  #startPublishing(): void {
    const interval = this.#ctx.settings.publishIntervalMs;
    if (interval <= 0 || this.#state !== 'online') return;
    this.#timer = this.#ctx.clock.setTimeout(() => this.#tick(), this.#ctx.random() * interval);
  }

  /** Stop publishing; messages in flight may still be acknowledged and delivered. */
  #stopPublishing(): void {
    if (this.#timer !== undefined) this.#ctx.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Send DISCONNECT and close; resolves when the socket is closed (forcibly after 2 s). */
  stop(): Promise<void> {
    this.#stopPublishing();
    this.#clearPing();
    const socket = this.#socket;
    const wasOnline = this.#state === 'online' || this.#state === 'subscribing';
    this.#state = 'stopping';
    this.#settleAttempt({ code: 'Aborted', retryable: false });
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
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
      if (wasOnline) socket.end(DISCONNECT);
      else socket.destroy();
    });
  }

  /** Wait before the next attempt; {@link stop} cuts it short. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = resolve;
      this.#timer = this.#ctx.clock.setTimeout(() => {
        this.#timer = undefined;
        this.#wake = undefined;
        resolve();
      }, ms);
    });
  }

  /** One connection attempt: TCP (or TLS), CONNECT, CONNACK, and SUBSCRIBE/SUBACK when subscribing. */
  #attempt(): Promise<AttemptFailure | undefined> {
    const { broker, clock, settings, metrics } = this.#ctx;
    this.#state = 'connecting';
    this.#lastSocketError = undefined;
    this.#reader = new PacketReader();
    this.#openedAt = clock.now();
    return new Promise<AttemptFailure | undefined>((resolve) => {
      this.#attemptDone = resolve;
      this.#attemptTimer = clock.setTimeout(() => {
        this.#settleAttempt({ code: 'ConnectTimeout', retryable: true });
        this.#socket?.destroy();
      }, settings.connectTimeoutMs);
      const onOpen = (): void => {
        metrics.connectSent(clock.now());
        socket.write(this.#connect);
      };
      const socket = broker.tls
        ? tlsConnect(
            {
              host: broker.host,
              port: broker.port,
              // SNI takes host names only (RFC 6066); an IP address is still checked against the certificate.
              ...(isIP(broker.host) ? {} : { servername: broker.host }),
              ...(broker.ca === undefined ? {} : { ca: broker.ca }),
              rejectUnauthorized: broker.rejectUnauthorized ?? true,
              ...(this.#localAddress === undefined ? {} : { localAddress: this.#localAddress }),
            },
            onOpen,
          )
        : netConnect({ host: broker.host, port: broker.port, ...(this.#localAddress === undefined ? {} : { localAddress: this.#localAddress }) }, onOpen);
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
    switch (packet.type) {
      case PacketType.CONNACK: {
        const rc = packet.body[1] ?? 255;
        if (rc !== 0) {
          this.#settleAttempt(connackFailure(rc));
          this.#socket?.destroy();
          return;
        }
        if (!this.#everConnected) {
          this.#everConnected = true;
          metrics.firstConnack(clock.now(), clock.now() - this.#openedAt);
        } else {
          metrics.reconnects += 1;
        }
        metrics.wentOnline();
        this.#countedOnline = true;
        this.#lostAttempts = 0;
        this.#armPing();
        if (settings.subscribe) {
          this.#state = 'subscribing';
          this.#socket?.write(encodeSubscribe(this.#nextPacketId(), this.#topicText, settings.qos));
        } else {
          this.#state = 'online';
          this.#settleAttempt(undefined);
        }
        return;
      }
      case PacketType.SUBACK: {
        // The return code follows the packet id; 0x80 is a refusal.
        if (packet.body[2] === 0x80) {
          this.#settleAttempt({ code: 'SubscribeRejected', retryable: false });
          this.#socket?.destroy();
          return;
        }
        if (this.#state === 'subscribing') this.#state = 'online';
        this.#settleAttempt(undefined);
        return;
      }
      case PacketType.PUBACK:
        metrics.puback();
        return;
      case PacketType.PUBLISH: {
        const message = decodePublish(packet);
        if (message.qos > 0) this.#socket?.write(encodePuback(message.packetId));
        if (message.payload.length >= PAYLOAD_HEADER_SIZE) metrics.deliveredAfter(clock.now() - message.payload.readDoubleBE(0));
        return;
      }
      default:
        return; // PINGRESP and anything else need nothing.
    }
  }

  /** Enter or leave the publishing phase; a device that reconnects during it resumes publishing. */
  setPublishing(on: boolean): void {
    this.#publishing = on;
    if (on) this.#startPublishing();
    else this.#stopPublishing();
  }

  #tick(): void {
    const { clock, settings, metrics, payloadTemplate } = this.#ctx;
    this.#timer = clock.setTimeout(() => this.#tick(), settings.publishIntervalMs);
    const socket = this.#socket;
    if (this.#state !== 'online' || !socket) return;
    const packet = encodePublish(this.#topic, payloadTemplate, settings.qos, settings.qos > 0 ? this.#nextPacketId() : 0);
    const now = clock.now();
    packet.writeDoubleBE(now, packet.length - payloadTemplate.length);
    socket.write(packet);
    metrics.publishSent(now);
  }

  #nextPacketId(): number {
    this.#packetId = (this.#packetId % 65_535) + 1;
    return this.#packetId;
  }

  #armPing(): void {
    const { keepalive, publishIntervalMs } = this.#ctx.settings;
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
    const wasLive = this.#countedOnline;
    if (wasLive) {
      this.#countedOnline = false;
      this.#ctx.metrics.wentOffline();
    }
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
      this.#settleAttempt(code ? socketFailure(code) : { code: 'ConnectionLost', retryable: true });
      return;
    }
    if (!wasLive) {
      // The attempt was already settled (refused CONNACK, timeout) and its socket destroyed: its owner decides.
      this.#state = 'idle';
      return;
    }
    // A live session was dropped by the broker: count it and come back after a jittered delay.
    this.#ctx.metrics.error('ConnectionLost');
    this.#stopPublishing();
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    this.#state = 'waiting';
    const delay = fullJitterDelay(this.#lostAttempts++, RECONNECT_BACKOFF, this.#ctx.random);
    this.#timer = this.#ctx.clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#state === 'waiting') this.#reconnect();
    }, delay);
  }

  #reconnect(): void {
    void this.#attempt().then((failure) => {
      if (!failure) {
        if (this.#publishing) this.#startPublishing();
        return;
      }
      this.#ctx.metrics.error(failure.code);
      if (failure.code === 'TooManyOpenFiles') this.#ctx.onFileLimit();
      if (this.#state === 'idle' && failure.retryable) this.#scheduleReconnect();
    });
  }
}

function connackFailure(rc: number): AttemptFailure {
  if (rc === 2) return { code: 'IdentifierRejected', retryable: false };
  if (rc === 4 || rc === 5) return { code: 'CredentialRejected', retryable: false };
  return { code: 'ConnackRefused', retryable: rc === 3 };
}

function socketFailure(errno: string): AttemptFailure {
  const code = SOCKET_ERROR_CODES[errno] ?? 'BrokerUnreachable';
  return { code, retryable: code !== 'TooManyOpenFiles' };
}
