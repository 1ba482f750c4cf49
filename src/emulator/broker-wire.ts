/**
 * What the broker writes to a client itself, past aedes (refusals, DISCONNECTs, Token-mode notices and upload
 * acknowledgements), and how a refusal by a rule is counted, logged and told to the client. Every broker module
 * shares one {@link BrokerContext}.
 */
import type { Duplex } from 'node:stream';
import type { Client } from 'aedes';
import mqttPacket, { type IConnackPacket, type IDisconnectPacket, type Packet } from 'mqtt-packet';
import { describeRefusal, type Refusal } from './mqtt-rules.js';
import type { ResolvedEmulatorOptions } from './options.js';
import type { StatsRecorder } from './stats.js';

export function noop(): void {}

/**
 * Write one packet straight to a connection, generated for its protocol level; `then` runs once the bytes are handed
 * over (destroying the socket also calls it). A client that does not read its socket is not waited for longer than
 * for any other write: past `drainTimeoutMs` its socket is destroyed. The timer ends when the socket drains, so a
 * client that reads, merely behind at that moment (a subscriber busy with messages), is never cut for it.
 */
export function writePacket(conn: Duplex, packet: Packet, protocolVersion: number, drainTimeoutMs: number, then: () => void = noop): void {
  const version = protocolVersion === 5 ? 5 : protocolVersion === 3 ? 3 : 4;
  if (conn.write(mqttPacket.generate(packet, { protocolVersion: version }), () => then())) return;
  const timer = setTimeout(() => conn.destroy(), drainTimeoutMs);
  timer.unref();
  conn.once('drain', () => clearTimeout(timer));
}

/**
 * Send an MQTT 5 client a DISCONNECT with `reasonCode` and `reasonString`, then close it and call `then`. Not aedes'
 * `client.disconnect()`: it sends nothing to a client whose CONNACK is out but whose queued messages are still being
 * sent (aedes calls it connecting, not connected), and a PUBLISH that arrives right after the CONNACK is in that
 * window (Paho's, at times).
 */
export function sendDisconnect(client: Client, reasonCode: number, reasonString: string, drainTimeoutMs: number, then: () => void = noop): void {
  const packet: IDisconnectPacket = { cmd: 'disconnect', reasonCode, properties: { reasonString } };
  writePacket(client.conn, packet, 5, drainTimeoutMs, () => client.close(then));
}

/** A refused CONNECT: its MQTT 3.1.1 return code, MQTT 5 reason code, and why (naming no secret). */
export interface ConnackRefusal {
  readonly returnCode: number;
  readonly reasonCode: number;
  readonly message: string;
}

/**
 * Refuse a CONNECT with our own CONNACK (aedes' authenticate hook can only answer 3.1.1 codes 2 to 5), then let aedes
 * close the connection. MQTT 5 gets the reason code and, as Reason String, why.
 */
export function writeRefusal(conn: Duplex, protocolVersion: number, refusal: ConnackRefusal, drainTimeoutMs: number, then: () => void): void {
  const connack: IConnackPacket = protocolVersion === 5
    ? { cmd: 'connack', sessionPresent: false, reasonCode: refusal.reasonCode, properties: { reasonString: refusal.message } }
    : { cmd: 'connack', sessionPresent: false, returnCode: refusal.returnCode };
  // Written before the connection is closed, as aedes does with its own CONNACKs; not waited for forever.
  writePacket(conn, connack, protocolVersion, drainTimeoutMs, then);
}

/** What every part of the broker shares: the options, the stats, and how a refusal is reported and told. */
export interface BrokerContext {
  readonly options: ResolvedEmulatorOptions;
  readonly stats: StatsRecorder;
  /** Count a refusal under its rule and log it (one `warn` line). */
  report(refusal: Refusal, clientId: string | undefined): void;
  /**
   * MQTT 5 is told why in a DISCONNECT (then closed, then `then`); MQTT 3.1.1 has no such packet, and `then` runs at
   * once: the caller fails the packet, and aedes closes the connection on the error.
   */
  disconnectFor(client: Client | null, refusal: Refusal, then: () => void): void;
  /**
   * Write a QoS 0 PUBLISH straight to one client, without a subscription (devices cannot subscribe to `$SYS`); `then`
   * runs once the bytes are handed over, so a disconnect that follows does not lose them.
   */
  sendPublish(client: Client, topic: string, payload: Buffer, then?: () => void): void;
}

export function brokerContext(options: ResolvedEmulatorOptions, stats: StatsRecorder): BrokerContext {
  return {
    options,
    stats,
    report(refusal, clientId) {
      stats.recordRule(refusal.rule);
      options.logger.warn(describeRefusal(refusal, clientId), { rule: refusal.rule, ...(clientId ? { clientId } : {}) });
    },
    disconnectFor(client, refusal, then) {
      if (client?.version === 5 && !client.closed) sendDisconnect(client, refusal.reasonCode, describeRefusal(refusal, client.id), options.drainTimeoutMs, then);
      else then();
    },
    sendPublish(client, topic, payload, then = noop) {
      if (client.closed) {
        then();
        return;
      }
      writePacket(client.conn, { cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false }, client.version, options.drainTimeoutMs, then);
    },
  };
}
