/**
 * What the broker writes to a client itself, past aedes (refusals, DISCONNECTs, Token-mode notices and upload
 * acknowledgements), and how a refusal by a rule is counted, logged and told to the client. Every broker module
 * shares one {@link BrokerContext}.
 */
import type { Duplex } from 'node:stream';
import type { Aedes, Client } from 'aedes';
import mqttPacket, { type IConnackPacket, type IDisconnectPacket, type IPubackPacket, type IPublishPacket, type IPubrecPacket, type Packet } from 'mqtt-packet';
import { publishAs, skipRouting } from './aedes-adapter.js';
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
export function writePacket(conn: Duplex, packet: Packet, protocolVersion: number, drainTimeoutMs: number, then: () => void = noop, maximumPacketSize?: number): void {
  const version = protocolVersion === 5 ? 5 : protocolVersion === 3 ? 3 : 4;
  // An MQTT 5 client's Maximum Packet Size: mqtt-packet leaves out the Reason String and User Properties to fit it.
  const options = maximumPacketSize === undefined ? { protocolVersion: version } : { protocolVersion: version, properties: { maximumPacketSize } };
  if (conn.write(mqttPacket.generate(packet, options), () => then())) return;
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
export function sendDisconnect(client: Client, reasonCode: number, reasonString: string, drainTimeoutMs: number, then: () => void = noop, maximumPacketSize?: number): void {
  const packet: IDisconnectPacket = { cmd: 'disconnect', reasonCode, properties: { reasonString } };
  writePacket(client.conn, packet, 5, drainTimeoutMs, () => client.close(then), maximumPacketSize);
}

/**
 * Answer a PUBLISH the broker keeps to itself (a Token-mode upload, a discarded message) as a routed one is answered:
 * PUBACK for QoS 1, PUBREC for QoS 2 (its PUBREL then gets aedes' PUBCOMP), and have aedes route nothing.
 */
export function acknowledgeUnrouted(client: Client, packet: { readonly qos: number; readonly messageId?: number | undefined }, drainTimeoutMs: number): void {
  if (packet.qos > 0 && packet.messageId !== undefined) {
    const ack: IPubackPacket | IPubrecPacket = packet.qos === 1 ? { cmd: 'puback', messageId: packet.messageId } : { cmd: 'pubrec', messageId: packet.messageId };
    writePacket(client.conn, ack, client.version, drainTimeoutMs);
  }
  skipRouting(packet);
}

/**
 * Route a client's QoS 1 PUBLISH, then acknowledge it: its PUBACK is written once the message is queued for every
 * offline persistent session it is for and handed to the message bus. aedes writes the PUBACK first and routes after,
 * which a broker whose queueing and routing are round trips (a cluster's, to Redis) cannot afford: a publisher that
 * holds a PUBACK could see the subscriber resume before the message was queued, and the subscriber get it live, ahead
 * of older messages of its queue, then again from the queue. aedes handles the packets a client sends meanwhile as
 * they come. `routed` is called once it is (its caller then lets aedes go on with the client's next packets, as aedes
 * does after its own routing: without it, a client could have any number of messages on their way to a slow Redis).
 * A message that cannot be routed is not acknowledged: aedes closes the connection, as it does when routing fails, and
 * the client sends it again.
 */
export function acknowledgeOnceRouted(broker: Aedes, client: Client, packet: IPublishPacket, drainTimeoutMs: number, routed: () => void): void {
  const { messageId } = packet;
  skipRouting(packet);
  publishAs(broker, client, packet, (error) => {
    if (client.closed) return routed();
    if (error) client.emit('error', error);
    else if (messageId !== undefined) writePacket(client.conn, { cmd: 'puback', messageId }, client.version, drainTimeoutMs);
    routed();
  });
}

/** The length of a variable byte integer. */
function varIntLength(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

/**
 * The size in bytes of a PUBLISH as it would be written to a client of this protocol level: fixed header, topic,
 * packet identifier (QoS 1/2), properties (MQTT 5) and payload. The payload is not copied to measure it. 0 when
 * mqtt-packet cannot encode the packet (aedes' own write then fails on it, as before).
 */
export function publishSize(packet: { readonly topic: string; readonly payload: Buffer | string; readonly qos: number; readonly properties?: unknown }, protocolVersion: number): number {
  const payload = typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length;
  let head: Buffer;
  try {
    head = mqttPacket.generate({
      cmd: 'publish', topic: packet.topic, payload: Buffer.alloc(0), qos: packet.qos as 0 | 1 | 2, retain: false, dup: false,
      ...(packet.qos > 0 ? { messageId: 1 } : {}),
      ...(protocolVersion === 5 && packet.properties ? { properties: packet.properties as NonNullable<IPublishPacket['properties']> } : {}),
    }, { protocolVersion: protocolVersion === 5 ? 5 : 4 });
  } catch {
    return 0;
  }
  // The remaining length of the packet without payload, read back from its fixed header.
  let remaining = 0;
  for (let at = 1, scale = 1; at < 5; at++, scale *= 128) {
    const byte = head[at] ?? 0;
    remaining += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) break;
  }
  return 1 + varIntLength(remaining + payload) + remaining + payload;
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
export function writeRefusal(conn: Duplex, protocolVersion: number, refusal: ConnackRefusal, drainTimeoutMs: number, then: () => void, maximumPacketSize?: number): void {
  const connack: IConnackPacket = protocolVersion === 5
    ? { cmd: 'connack', sessionPresent: false, reasonCode: refusal.reasonCode, properties: { reasonString: refusal.message } }
    : { cmd: 'connack', sessionPresent: false, returnCode: refusal.returnCode };
  // Written before the connection is closed, as aedes does with its own CONNACKs; not waited for forever.
  writePacket(conn, connack, protocolVersion, drainTimeoutMs, then, maximumPacketSize);
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
  /** The Maximum Packet Size each MQTT 5 client asked for in its CONNECT (none: no limit but the protocol's). */
  readonly maximumPacketSize: WeakMap<Client, number>;
  /**
   * Write a QoS 0 PUBLISH straight to one client, without a subscription (devices cannot subscribe to `$SYS`); `then`
   * runs once the bytes are handed over, so a disconnect that follows does not lose them.
   */
  sendPublish(client: Client, topic: string, payload: Buffer, then?: () => void): void;
}

export function brokerContext(options: ResolvedEmulatorOptions, stats: StatsRecorder): BrokerContext {
  const maximumPacketSize = new WeakMap<Client, number>();
  const report = (refusal: Refusal, clientId: string | undefined): void => {
    stats.recordRule(refusal.rule);
    options.logger.warn(describeRefusal(refusal, clientId), { rule: refusal.rule, ...(clientId ? { clientId } : {}) });
  };
  return {
    options,
    stats,
    maximumPacketSize,
    report,
    disconnectFor(client, refusal, then) {
      if (client?.version === 5 && !client.closed) sendDisconnect(client, refusal.reasonCode, describeRefusal(refusal, client.id), options.drainTimeoutMs, then, maximumPacketSize.get(client));
      else then();
    },
    sendPublish(client, topic, payload, then = noop) {
      if (client.closed) {
        then();
        return;
      }
      const packet = { cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false } as const;
      const limit = maximumPacketSize.get(client);
      if (limit !== undefined && publishSize(packet, client.version) > limit) {
        report({ rule: 'clientMaximumPacketSize', action: 'drop', reasonCode: 0, reason: `a ${topic} notice of ${publishSize(packet, client.version)} bytes, over the Maximum Packet Size of ${limit} the client asked for` }, client.id);
        then();
        return;
      }
      writePacket(client.conn, packet, client.version, options.drainTimeoutMs, then);
    },
  };
}
