/**
 * What the store checks of what it is given (store.ts): a ClientId, a seq, a read's limit, a message. A connection's durable feed
 * appends what its connection checked already, by the service's stricter rules (`OutboxStore.appendChecked`).
 */
import { ValidationError } from '../errors.js';
import { MAX_MESSAGE_ID_BYTES } from './codec.js';
import type { OutboxMessageInput } from './types.js';

/** The longest ClientId accepted (bytes): MQTT allows 65,535; nothing real is near this. */
const MAX_CLIENT_ID_BYTES = 1024;

function payloadBuffer(payload: OutboxMessageInput['payload']): Buffer {
  if (typeof payload === 'string') return Buffer.from(payload, 'utf8');
  if (Buffer.isBuffer(payload)) return payload;
  if (payload instanceof Uint8Array) return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  throw new ValidationError('InvalidOption', 'OutboxStore.append: payload must be a Buffer, a Uint8Array or a string');
}

export function checkClientId(clientId: unknown, what: string): asserts clientId is string {
  if (typeof clientId !== 'string' || clientId.length === 0 || clientId.includes('\0') || Buffer.byteLength(clientId) > MAX_CLIENT_ID_BYTES) {
    throw new ValidationError('InvalidClientId', `OutboxStore.${what}: the ClientId must be a non-empty string without NUL characters, at most ${MAX_CLIENT_ID_BYTES} bytes`);
  }
}

export function checkSeq(seq: unknown, what: string): asserts seq is number {
  if (!Number.isSafeInteger(seq) || (seq as number) < 0) throw new ValidationError('InvalidOption', `OutboxStore.${what}: seq must be a seq the store returned`);
}

export function checkLimit(limit: unknown, what: string): asserts limit is number {
  if (!Number.isSafeInteger(limit) || (limit as number) < 1) throw new ValidationError('InvalidOption', `OutboxStore.${what}: limit must be a positive integer`);
}

/** The ClientId and seq of a call about one message, checked: a rejected promise for the call to return, or undefined. */
export function refusal(what: string, clientId: string, seq: number): Promise<never> | undefined {
  try {
    checkClientId(clientId, what);
    checkSeq(seq, what);
    return undefined;
  } catch (error) {
    return Promise.reject(error);
  }
}

/** A message as {@link OutboxStore.append} takes it, checked: its payload as a Buffer, its QoS (1 by default). */
export function checkMessage(message: OutboxMessageInput): { payload: Buffer; qos: 0 | 1 | 2 } {
  if (message === null || typeof message !== 'object') throw new ValidationError('InvalidOption', 'OutboxStore.append: pass a message { topic, payload, qos? }');
  if (typeof message.topic !== 'string' || message.topic.length === 0 || Buffer.byteLength(message.topic) > 65_535) {
    throw new ValidationError('InvalidTopic', 'OutboxStore.append: topic must be a non-empty string of at most 65,535 bytes');
  }
  const qos = message.qos ?? 1;
  if (qos !== 0 && qos !== 1 && qos !== 2) throw new ValidationError('InvalidOption', `OutboxStore.append: qos must be 0, 1 or 2 (got ${String(qos)})`);
  const payload = payloadBuffer(message.payload);
  const id = message.id;
  if (id !== undefined && (typeof id !== 'string' || id.length === 0 || Buffer.byteLength(id) > MAX_MESSAGE_ID_BYTES)) {
    throw new ValidationError('InvalidOption', `OutboxStore.append: id must be a non-empty string of at most ${MAX_MESSAGE_ID_BYTES} bytes (UTF-8)`);
  }
  return { payload, qos };
}
