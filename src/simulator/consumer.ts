/**
 * The backend subscriber of a game day: an application's consumer, connected to the broker directly (never through
 * the fault relay) in Signature mode with the account AccessKey, subscribed to the fleet's topics. It names every
 * message it receives by the device index and sequence in its payload, so the ledger knows what was delivered, what
 * was lost and what came twice.
 *
 * Its session is persistent (clean session off), so a broker restart loses nothing queued for it; it starts and ends
 * by clearing that session (a CONNECT with clean session on), so no message of another run reaches it and nothing is
 * left queued on the broker after it.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { MAX_CLIENT_ID_LENGTH } from '../credential.js';
import { ValidationError } from '../errors.js';
import { signSignature } from '../signer/mqtt.js';
import { SimulatorError } from './errors.js';

/** How the backend subscriber reaches the broker. */
export interface ConsumerOptions {
  brokerUrl: string;
  ca?: string | Buffer | Array<string | Buffer>;
  rejectUnauthorized?: boolean;
  instanceId: string;
  account: { accessKeyId: string; accessKeySecret: string };
  clientId: string;
  /** The topic filter of the fleet's topics ({@link fleetFilter}). */
  filter: string;
  qos: 0 | 1;
  /** Each message received (the payload), in order. */
  onMessage: (payload: Buffer) => void;
  /** How long connecting and subscribing may take. @default 10000 */
  timeoutMs?: number;
}

/** A running backend subscriber. */
export interface Consumer {
  /** Messages received, duplicates included. */
  readonly received: number;
  /**
   * It lost its connection since it subscribed (a broker restart, a cut): the broker may have queued messages for its
   * session meanwhile (paced when it came back). One that never did was sent every message at once.
   */
  readonly interrupted: boolean;
  /** Disconnect and clear its session on the broker. */
  close(): Promise<void>;
}

/** The backend subscriber's ClientId: in the run's group, one per shard. */
export function consumerClientId(groupId: string, shard: { index: number; count: number }): string {
  const id = `${groupId}@@@sim-backend-${shard.index}-${shard.count}`;
  if (id.length > MAX_CLIENT_ID_LENGTH) throw new ValidationError('InvalidOption', `The backend subscriber's ClientId ${id} is longer than ${MAX_CLIENT_ID_LENGTH} characters: use a shorter GroupId`);
  return id;
}

function failed(why: string, cause?: unknown): SimulatorError {
  const detail = cause instanceof Error ? `: ${cause.message}` : '';
  return new SimulatorError('ConsumerFailed', `The backend subscriber ${why}${detail}`, cause);
}

/** Connect once and wait for the CONNACK (or fail within `timeoutMs`). */
function connectOnce(url: string, options: mqtt.IClientOptions, timeoutMs: number): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { ...options, reconnectPeriod: 0, connectTimeout: timeoutMs });
    const fail = (error: unknown): void => {
      client.removeAllListeners();
      client.on('error', () => undefined);
      client.end(true);
      reject(error instanceof Error ? error : new Error(String(error)));
    };
    client.once('connect', () => {
      client.removeListener('error', fail);
      client.removeListener('close', onClose);
      resolve(client);
    });
    client.once('error', fail);
    const onClose = (): void => fail(new Error('the connection closed before its CONNACK'));
    client.once('close', onClose);
  });
}

/** Connect with clean session on and leave: the broker forgets that ClientId's session. */
async function clearSession(url: string, options: mqtt.IClientOptions, timeoutMs: number): Promise<void> {
  const client = await connectOnce(url, { ...options, clean: true }, timeoutMs);
  await client.endAsync();
}

/**
 * Start the backend subscriber: clear its old session, connect with a persistent one, subscribe to the fleet's
 * topics. @throws SimulatorError `ConsumerFailed` when it cannot connect or its SUBSCRIBE is refused.
 */
export async function startConsumer(options: ConsumerOptions): Promise<Consumer> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const login = signSignature({ ...options.account, instanceId: options.instanceId, clientId: options.clientId });
  const base: mqtt.IClientOptions = {
    clientId: login.clientId,
    username: login.username,
    password: login.password,
    protocolVersion: 4,
    keepalive: 30,
    ...(options.ca === undefined ? {} : { ca: options.ca as string | Buffer | string[] | Buffer[] }),
    ...(options.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: options.rejectUnauthorized }),
  };
  try {
    await clearSession(options.brokerUrl, base, timeoutMs);
  } catch (error) {
    throw failed(`could not connect to ${options.brokerUrl} as ${options.clientId}`, error);
  }
  let client: MqttClient;
  try {
    client = await connectOnce(options.brokerUrl, { ...base, clean: false }, timeoutMs);
  } catch (error) {
    throw failed(`could not connect to ${options.brokerUrl} as ${options.clientId}`, error);
  }
  let received = 0;
  client.on('message', (_topic, payload) => {
    received += 1;
    options.onMessage(payload);
  });
  client.on('error', () => undefined);
  try {
    const granted = await client.subscribeAsync(options.filter, { qos: options.qos });
    const refused = granted.find((g) => g.qos >= 0x80);
    if (refused) throw new Error(`SUBSCRIBE ${options.filter} was refused (${refused.qos})`);
  } catch (error) {
    await client.endAsync(true);
    throw failed(`could not subscribe to ${options.filter}`, error);
  }
  // From now on it comes back by itself after a broker restart (its session and subscription kept by the broker).
  client.options.reconnectPeriod = 250;
  let interrupted = false;
  client.on('close', () => {
    interrupted = true;
  });
  return {
    get received() {
      return received;
    },
    get interrupted() {
      return interrupted;
    },
    close: async () => {
      await client.endAsync();
      // Best effort: a broker that is gone keeps nothing anyway.
      await clearSession(options.brokerUrl, base, timeoutMs).catch(() => undefined);
    },
  };
}
