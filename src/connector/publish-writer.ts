/**
 * The connector's PUBLISH writer: a QoS 1 or 2 message encoded into one buffer (mqtt/wire.ts) and written to the
 * mqtt.js client's stream in one write, inside the client's own session: the packet id from its
 * `messageIdProvider`, the message in its `outgoing` map and `outgoingStore` as `publish()` puts it there, so its
 * answer (PUBACK, PUBREC, PUBCOMP) is handled exactly as for mqtt.js's own PUBLISH: by mqtt.js, or, for a QoS 1
 * PUBACK of the short form whole in one chunk, by the packet guard (packet-guard.ts), which takes it out of the
 * stream and calls {@link pubackTaken} here: the same steps without mqtt.js parsing and dispatching it.
 *
 * Why: `client.publish()` and the parsing of its PUBACK cost more CPU than the bytes they move (BENCHMARKS.md,
 * issue 18): the packet object built and cloned, `mqtt-packet` writing it as five writes into a corked stream
 * uncorked on the next tick, and the PUBACK parsed into an object and dispatched through events. A gateway sends
 * thousands of devices' messages per second through this path.
 *
 * Only where mqtt.js would write the packet at once, unchanged: the client connected and not disconnecting, nothing
 * of its own store being replayed or queued, no MQTT 5 properties (a topic alias among them), and no automatic topic
 * aliases. Anywhere else (and on an mqtt.js whose internals are not as expected) it returns false and the caller uses
 * `client.publish()`. `packetsend` is not emitted for these packets: nothing in the connector listens to it, and
 * the client is not reachable from outside it.
 */
import type { IClientPublishOptions, MqttClient } from 'mqtt';
import { encodePublish } from '../mqtt/wire.js';

/** What of an mqtt.js 5 client the writer reads and writes (its own `publish()` uses the same). */
interface ClientInternals {
  readonly connected: boolean;
  readonly disconnecting: boolean;
  readonly _storeProcessing: boolean;
  readonly _storeProcessingQueue: { readonly length: number } | undefined;
  readonly options: { readonly protocolVersion?: number; readonly autoUseTopicAlias?: boolean; readonly autoAssignTopicAlias?: boolean; readonly reschedulePings?: boolean };
  readonly messageIdProvider: { allocate(): number | null; deallocate(id: number): void } | undefined;
  readonly outgoing: Record<number, Outgoing> | undefined;
  readonly outgoingStore: { put(packet: object, cb?: (error?: Error) => void): unknown; del(packet: { messageId: number }, cb: (error: Error | null | undefined, packet?: unknown) => void): unknown } | undefined;
  _invokeStoreProcessingQueue(): void;
  reschedulePing?(): void;
  readonly keepaliveManager: { counter?: unknown } | null | undefined;
  readonly stream: { readonly writable?: boolean; readonly writableCorked?: number; write(chunk: Buffer): boolean; cork?(): void; uncork?(): void } | undefined;
}

/** An entry of mqtt.js's `outgoing` map, as its `publish()` makes it; `written` marks this writer's QoS 1 ones. */
interface Outgoing {
  volatile: boolean;
  cmd: string;
  cb: PublishCallback;
  written?: true;
}

/** mqtt.js's publish callback: an error (or none) and the acknowledging packet. */
export type PublishCallback = (error?: Error, packet?: unknown) => void;

/**
 * Write a QoS 1 or 2 PUBLISH of `topic` on `client` as mqtt.js's `publish()` would, in one write; `callback` as
 * `publish()`'s. Returns false, having done nothing, where the writer does not apply (see the module's comment): the
 * caller then calls `client.publish()`.
 */
export function writePublish(client: MqttClient, topic: string, payload: string | Buffer, options: IClientPublishOptions, callback: PublishCallback): boolean {
  const { qos } = options;
  if ((qos !== 1 && qos !== 2) || options.properties !== undefined || options.cbStorePut !== undefined) return false;
  const c = client as unknown as ClientInternals;
  const version = c.options.protocolVersion;
  if ((version !== 4 && version !== 5) || !c.connected || c.disconnecting || c._storeProcessing || c._storeProcessingQueue?.length !== 0) return false;
  // mqtt.js would put a topic alias in its place (never set by the connector; a broker's Topic Alias Maximum alone changes nothing).
  if (c.options.autoUseTopicAlias === true || c.options.autoAssignTopicAlias === true) return false;
  const { messageIdProvider, outgoing, outgoingStore, stream } = c;
  if (!messageIdProvider || !outgoing || !outgoingStore || !stream?.writable) return false;
  // An empty topic, or one that may not fit a length prefix (over 21,845 UTF-16 units: up to 3 bytes each), is mqtt.js's.
  if (topic.length === 0 || topic.length > 21_845) return false;
  const messageId = messageIdProvider.allocate();
  // No id free: mqtt.js's publish() queues the message until one is.
  if (messageId === null) return false;
  const retain = options.retain === true;
  const dup = options.dup === true;
  let packet: Buffer;
  try {
    packet = encodePublish(topic, payload, qos, messageId, version, { retain, dup });
  } catch {
    // A packet past what MQTT can say: mqtt.js's to refuse.
    messageIdProvider.deallocate(messageId);
    return false;
  }
  outgoing[messageId] = qos === 1 ? { volatile: false, cmd: 'publish', cb: callback, written: true } : { volatile: false, cmd: 'publish', cb: callback };
  // The store holds what publish() would: mqtt.js deletes it on the acknowledgement (and a store without it fails).
  outgoingStore.put({ cmd: 'publish', topic, payload, qos, retain, dup, messageId });
  // mqtt.js's writes (mqtt-packet) cork the stream until the next tick, so the messages of one turn leave in one
  // write (one syscall, one TLS record), not one each: the same here, one cork per turn.
  if (stream.writableCorked === 0 && stream.cork && stream.uncork) {
    stream.cork();
    process.nextTick(uncorkStream, stream);
  }
  stream.write(packet);
  return true;
}

function uncorkStream(stream: { uncork(): void }): void {
  stream.uncork();
}

/**
 * Is `packetId` a QoS 1 PUBLISH this writer wrote on `client`, still unanswered? The packet guard then takes its
 * PUBACK (success, short form) out of the stream instead of mqtt.js parsing it, and calls {@link pubackTaken}.
 */
export function takesPuback(client: MqttClient, packetId: number): boolean {
  return (client as unknown as ClientInternals).outgoing?.[packetId]?.written === true;
}

/**
 * The PUBACK of a QoS 1 PUBLISH this writer wrote, taken by the packet guard: what mqtt.js does with one (its
 * handlers/ack.ts), without parsing it. The entry is looked up again: mqtt.js may have answered it meanwhile (a
 * second PUBACK of the same id earlier in the chunk).
 */
export function pubackTaken(client: MqttClient, packetId: number): void {
  const c = client as unknown as ClientInternals;
  // mqtt.js reschedules its ping on every acknowledgement it handles (handlers/index.ts): without it, a link kept
  // busy by acknowledged messages gets a PINGREQ queued behind them, and a false keepalive timeout.
  keepAlive(c);
  const { outgoing, outgoingStore, messageIdProvider } = c;
  const pending = outgoing?.[packetId];
  if (pending?.written !== true || !outgoing || !outgoingStore || !messageIdProvider) return;
  delete outgoing[packetId];
  // As mqtt.js's _removeOutgoingAndStoreMessage: the callback gets what the store held (the PUBLISH).
  outgoingStore.del({ messageId: packetId }, (error, packet) => {
    pending.cb(error ?? undefined, packet);
    messageIdProvider.deallocate(packetId);
    if (c._storeProcessingQueue?.length) c._invokeStoreProcessingQueue();
  });
  // A client ending gracefully (end(false)) waits for this before its DISCONNECT, as mqtt.js's ack handler emits it.
  if (c.disconnecting && isEmpty(outgoing)) client.emit('outgoingEmpty');
}

/**
 * A packet came from the broker: what mqtt.js's reschedulePing() does for one, at the cost of a field. Its keepalive
 * timer ticks every half keepalive and counts the ticks since the last packet (PINGREQ at the 2nd, timeout at the
 * 3rd); reschedulePing() restarts the timer, a clearInterval and a setInterval per PUBACK. Setting the count back
 * to 0 keeps the same rule (no timeout while packets keep coming; a PINGREQ within a keepalive of the last one) with
 * the timer's ticks where they were. An mqtt.js without that count gets reschedulePing() itself.
 */
function keepAlive(c: ClientInternals): void {
  if (c.options.reschedulePings === false) return;
  const manager = c.keepaliveManager;
  if (manager && typeof manager.counter === 'number') manager.counter = 0;
  else c.reschedulePing?.();
}

function isEmpty(record: object): boolean {
  for (const _ in record) return false;
  return true;
}
