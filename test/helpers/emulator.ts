import { randomUUID } from 'node:crypto';
import RPCClient from '@alicloud/pop-core';
import { connect, connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, beforeEach, expect, onTestFinished } from 'vitest';
import { DeviceCredential } from '../../src/credential.js';
import { ApiFault } from '../../src/emulator/api-errors.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import type { MqttCredentials } from '../../src/signer/mqtt.js';
import { rpcTimestamp, signRpc } from '../../src/signer/openapi.js';

/**
 * The suite's tests name a GroupId of their own (`GID_rot`, `GID_a`…) to keep their ClientIds apart, as if each had
 * been created in the console: the emulators they start accept any GroupId unless a test names its `groups`. The
 * default list and its refusals have their own tests (test/integration/emulator-groups.test.ts), and the user-facing
 * examples run on the default.
 */
export const ANY_GROUP = { groups: false } as const satisfies EmulatorOptions;

/** Start an emulator with `options` for the running test alone: closed when it finishes. */
export async function startForTest(options: EmulatorOptions): Promise<Emulator> {
  const e = await startEmulator(options);
  onTestFinished(() => e.close());
  return e;
}

/**
 * Start an emulator (with `env: {}`, so generated keys, never the developer's real ones, and {@link ANY_GROUP}) before
 * the suite or before each test, and close it afterwards. Returns an accessor for the running emulator.
 */
export function useEmulator(options: EmulatorOptions = {}, scope: 'suite' | 'test' = 'suite'): () => Emulator {
  let emulator: Emulator | undefined;
  const start = async (): Promise<void> => {
    emulator = await startEmulator({ env: {}, ...ANY_GROUP, ...options });
  };
  const stop = async (): Promise<void> => {
    await emulator?.close();
    emulator = undefined;
  };
  if (scope === 'suite') {
    beforeAll(start);
    afterAll(stop);
  } else {
    beforeEach(start);
    afterEach(stop);
  }
  return () => {
    if (!emulator) throw new Error('useEmulator: the emulator is not running (used outside a test?)');
    return emulator;
  };
}

/** The real pop-core RPCClient pointed at the emulator, with the emulator's account keys unless overridden. */
export function apiClient(emulator: Emulator, keys: { accessKeyId?: string; accessKeySecret?: string; securityToken?: string } = {}): RPCClient {
  return new RPCClient({
    endpoint: emulator.apiEndpoint,
    apiVersion: '2020-04-20',
    accessKeyId: keys.accessKeyId ?? emulator.accessKeyId,
    accessKeySecret: keys.accessKeySecret ?? emulator.accessKeySecret,
    ...(keys.securityToken === undefined ? {} : { securityToken: keys.securityToken }),
  });
}

/** Call an action through pop-core (POST unless told otherwise). */
export function callApi<T = Record<string, unknown>>(
  emulator: Emulator,
  action: string,
  params: Record<string, string>,
  method: 'POST' | 'GET' = 'POST',
): Promise<T> {
  return apiClient(emulator).request<T>(action, params, { method });
}

/** What pop-core throws for an error body. */
export interface PopCoreError extends Error {
  code: string;
  data: Record<string, unknown>;
  entry: { response: { statusCode: number } };
}

/** Await a pop-core call that must fail; returns its error. */
export async function apiFailure(call: Promise<unknown>): Promise<PopCoreError> {
  try {
    await call;
  } catch (error) {
    return error as PopCoreError;
  }
  throw new Error('expected the API call to fail');
}

/** Register a device through pop-core and return its credential. */
export async function registerDevice(emulator: Emulator, clientId: string): Promise<DeviceCredential> {
  const body = await callApi(emulator, 'RegisterDeviceCredential', { ClientId: clientId, InstanceId: emulator.instanceId });
  return DeviceCredential.fromWire(body);
}

/** Common parameters for a hand-built request, as pop-core would send them (Signature excluded). */
export function commonParams(emulator: Emulator, action: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    Action: action,
    Version: '2020-04-20',
    Format: 'JSON',
    AccessKeyId: emulator.accessKeyId,
    SignatureMethod: 'HMAC-SHA1',
    SignatureVersion: '1.0',
    SignatureNonce: randomUUID(),
    Timestamp: rpcTimestamp(new Date()),
    ...extra,
  };
}

/** `params` plus a Signature computed for `method` with `secret` (default: the emulator's). */
export function signed(params: Record<string, string>, method: string, secret: string): Record<string, string> {
  return { ...params, Signature: signRpc(method, params, secret) };
}

/** A raw HTTP answer of the emulator. */
export interface RawReply {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

/**
 * Send already-built parameters with fetch: GET in the query string, POST as a form body (or JSON with
 * `encoding: 'json'`). Nothing is signed here.
 */
export async function rawCall(
  emulator: Emulator,
  params: Record<string, string>,
  init: { method?: 'GET' | 'POST'; encoding?: 'form' | 'json'; path?: string } = {},
): Promise<RawReply> {
  const method = init.method ?? 'POST';
  const url = new URL(init.path ?? '/', emulator.apiEndpoint);
  let body: string | undefined;
  const headers: Record<string, string> = {};
  if (method === 'GET') {
    url.search = new URLSearchParams(params).toString();
  } else if (init.encoding === 'json') {
    body = JSON.stringify(params);
    headers['content-type'] = 'application/json';
  } else {
    body = new URLSearchParams(params).toString();
    headers['content-type'] = 'application/x-www-form-urlencoded';
  }
  const response = await fetch(url, { method, headers, ...(body === undefined ? {} : { body }) });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, unknown> };
}

/** Sign for `method` with the emulator's secret and send. */
export function signedCall(
  emulator: Emulator,
  params: Record<string, string>,
  init: { method?: 'GET' | 'POST'; encoding?: 'form' | 'json'; path?: string } = {},
): Promise<RawReply> {
  return rawCall(emulator, signed(params, init.method ?? 'POST', emulator.accessKeySecret), init);
}

/** MQTT 3.1.1 client options the tests use: no reconnects, quick failure. */
function mqttOptions(credentials: MqttCredentials, extra: IClientOptions): IClientOptions {
  return { ...credentials, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5_000, ...extra };
}

/**
 * Connect, or reject with mqtt.js' error (its `code` is the CONNACK return code), or when the connection closes before
 * a CONNACK without one (a listener that took it while its broker was closing).
 */
export function connectMqtt(url: string, credentials: MqttCredentials, extra: IClientOptions = {}): Promise<MqttClient> {
  return connectAsync(url, mqttOptions(credentials, extra), false);
}

/** The CONNACK return code a CONNECT gets (0 = accepted); the client is closed again. */
export async function connackCode(url: string, credentials: MqttCredentials, extra: IClientOptions = {}): Promise<number> {
  try {
    const client = await connectMqtt(url, credentials, extra);
    await client.endAsync();
    return 0;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code !== 'number') throw error;
    return code;
  }
}

/** A connected client whose messages are collected from the moment it connects (queued ones arrive right after CONNACK). */
export interface InboxClient {
  readonly client: MqttClient;
  /** Whether the CONNACK said a session was present. */
  readonly sessionPresent: boolean;
  /** The next message received (already received ones first), as `[topic, payload]`. */
  next(): Promise<[string, string]>;
}

/** Connect like {@link connectMqtt}, collecting messages before the connection is handed out. */
export async function connectWithInbox(url: string, credentials: MqttCredentials, extra: IClientOptions = {}): Promise<InboxClient> {
  const received: [string, string][] = [];
  const waiting: ((message: [string, string]) => void)[] = [];
  const client = connect(url, mqttOptions(credentials, extra));
  client.on('message', (topic, payload) => {
    const message: [string, string] = [topic, payload.toString()];
    const waiter = waiting.shift();
    if (waiter) waiter(message);
    else received.push(message);
  });
  const sessionPresent = await new Promise<boolean>((resolve, reject) => {
    client.once('connect', (connack) => resolve(connack.sessionPresent));
    client.once('error', (error) => {
      client.end(true);
      reject(error);
    });
  });
  return {
    client,
    sessionPresent,
    next: () => {
      const message = received.shift();
      return message ? Promise.resolve(message) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

/** The code of the {@link ApiFault} `fn` throws, or `undefined` when it returns (any other throw fails the test). */
export function apiFaultCode(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (error) {
    expect(error).toBeInstanceOf(ApiFault);
    return (error as ApiFault).code;
  }
}

/** Resolves once the broker has handled a SUBSCRIBE of `clientId` to `topic` (the SUBACK is on its way). */
export function subscribed(emulator: Emulator, clientId: string, topic: string): Promise<void> {
  const broker = emulator.broker;
  return new Promise((resolve) => {
    const listener = (subs: Array<{ topic: string }>, client: { id: string } | null): void => {
      if (client?.id === clientId && subs.some((s) => s.topic === topic)) {
        broker.off('subscribe', listener);
        resolve();
      }
    };
    broker.on('subscribe', listener);
  });
}

/**
 * Resolves once `emulator`'s broker has seen `clientId` leave (listen before causing it): only then are messages to a
 * persistent session queued rather than sent to the connection that is going (a client's `endAsync()` resolves on its
 * side of the close).
 */
export function clientLeaves(emulator: Emulator, clientId: string): Promise<void> {
  return new Promise((resolve) => {
    const listener = (id: string): void => {
      if (id !== clientId) return;
      emulator.events.off('clientDisconnected', listener);
      resolve();
    };
    emulator.events.on('clientDisconnected', listener);
  });
}
