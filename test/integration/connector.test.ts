import { once } from 'node:events';
import { type Server, type Socket, createServer } from 'node:net';
import { inspect } from 'node:util';
import RPCClient from '@alicloud/pop-core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import { type CredentialRequest, DeviceCredential } from '../../src/credential.js';
import { ApsaraMqDeviceError, ConnectError, ConnectionClosedError, SubscribeError, ValidationError, isApsaraMqDeviceError } from '../../src/errors.js';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { closedPort } from '../helpers/http.js';
import { type TcpProxy, expectRoundTrip, startProxy } from '../helpers/mqtt.js';
import { ANY_GROUP } from '../helpers/emulator.js';

let emulator: Emulator;
let api: RPCClient;
const open: DeviceConnection[] = [];
const proxies: TcpProxy[] = [];

beforeEach(async () => {
  emulator = await startEmulator({ env: {}, ...ANY_GROUP, parentTopics: ['conn', 't', 'a', 'after', 'demo', 'down', 'flush', 'gone'] });
  api = new RPCClient({ endpoint: emulator.apiEndpoint, apiVersion: '2020-04-20', accessKeyId: emulator.accessKeyId, accessKeySecret: emulator.accessKeySecret });
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.end(true)));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  await emulator.close();
});

async function apiCredential(action: 'RegisterDeviceCredential' | 'RefreshDeviceCredential' | 'GetDeviceCredential', clientId: string): Promise<DeviceCredential> {
  const body = await api.request(action, { ClientId: clientId, InstanceId: emulator.instanceId }, { method: 'POST' });
  return DeviceCredential.fromWire(body);
}

async function connect(options: Parameters<typeof connectDevice>[0]): Promise<DeviceConnection> {
  const c = await connectDevice(options);
  open.push(c);
  return c;
}

async function proxy(): Promise<TcpProxy> {
  const p = await startProxy(emulator.mqttUrl);
  proxies.push(p);
  return p;
}

/** A TCP server that accepts and never answers; closing it destroys what it accepted. */
async function silentServer(): Promise<{ port: number; accepted: Promise<unknown>; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const accepted = once(server, 'connection');
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    port,
    accepted,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function connacks(): Record<string, number> {
  return emulator.stats().mqtt.connacks;
}

/** Every PUBLISH the broker receives from a client, by topic (an oracle independent of the connector). */
function publishesSeen(): string[] {
  const topics: string[] = [];
  emulator.broker.on('publish', (packet, client) => {
    if (client) topics.push(packet.topic);
  });
  return topics;
}

describe('connectDevice against the emulator', () => {
  it('connects with a static credential and round-trips a message', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@dev-1');
    const conn = await connect({ credential, brokerUrl: emulator.mqttUrl });
    expect(conn.online).toBe(true);
    expect(conn.state).toBe('online');
    await expectRoundTrip(conn, 'conn/echo', 'hello');
  });

  it('connects over WebSocket at /mqtt', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@ws-1');
    expect(emulator.wsUrl).toBeDefined();
    // Give the URL without the path: the connector adds the service's /mqtt.
    const bare = emulator.wsUrl!.replace(/\/mqtt$/, '');
    const conn = await connect({ credential, brokerUrl: bare });
    expect(conn.brokerUrl).toBe(emulator.wsUrl);
    await expectRoundTrip(conn, 'conn/ws', 'over ws');
  });

  it('fetches the credential again after a refusal, and heals a rotation', async () => {
    const old = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@rot-1');
    const fresh = await apiCredential('RefreshDeviceCredential', 'GID_conn@@@rot-1');
    const requests: CredentialRequest['reason'][] = [];
    const conn = await connect({
      brokerUrl: emulator.mqttUrl,
      credential: async (request) => {
        requests.push(request.reason);
        return request.reason === 'connect' ? old : apiCredential('GetDeviceCredential', 'GID_conn@@@rot-1');
      },
    });
    expect(requests).toEqual(['connect', 'rejected']);
    expect(conn.credential.deviceAccessKeyId).toBe(fresh.deviceAccessKeyId);
    expect(connacks()).toEqual({ '0': 1, '4': 1 });
  });

  it('stops with CredentialRejected when the fresh credential is the same refused one', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@rej-1');
    await api.request('UnRegisterDeviceCredential', { ClientId: 'GID_conn@@@rej-1', InstanceId: emulator.instanceId }, { method: 'POST' });
    let asked = 0;
    const error = await connectDevice({
      brokerUrl: emulator.mqttUrl,
      credential: async () => {
        asked += 1;
        return credential;
      },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect(error).toMatchObject({ code: 'CredentialRejected', connackCode: 4, retryable: false });
    expect(asked).toBe(2);
    // One CONNECT, one re-fetch, and no second CONNECT with a credential known to be refused.
    expect(connacks()).toEqual({ '4': 1 });
  });

  it('a stopped broker fails at once with BrokerUnreachable, and the remedy names the URL', async () => {
    const port = await closedPort();
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@net-1');
    const url = `mqtt://127.0.0.1:${port}`;
    const error = await connectDevice({ credential, brokerUrl: url }).catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(error, 'BrokerUnreachable')).toBe(true);
    expect(error).toMatchObject({ retryable: true });
    expect((error as Error).message).toContain('ECONNREFUSED');
    expect((error as ApsaraMqDeviceError).remedy).toContain(`Nothing answers at ${url}`);
    expect(connacks()).toEqual({});
  });

  it("the OpenAPI's HTTP port given as the broker is a ProtocolError: is brokerUrl the OpenAPI endpoint?", async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@http-1');
    const error = await connectDevice({ credential, brokerUrl: emulator.apiEndpoint.replace(/^http:/, 'mqtt:') }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect(error).toMatchObject({ code: 'ProtocolError', retryable: false });
    expect((error as ApsaraMqDeviceError).remedy).toMatch(/^This port speaks HTTP: is brokerUrl the OpenAPI endpoint\? Option brokerUrl must name the MQTT port/);
    // The library knows no CLI: its remedies name options, never flags (the CLI says them as flags).
    expect((error as ApsaraMqDeviceError).remedy).not.toMatch(/--[a-z]/);
  });

  it('times out a broker that never answers CONNECT', async () => {
    const { port, close } = await silentServer(); // accepts, never speaks MQTT
    try {
      const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@slow-1');
      const error = await connectDevice({ credential, brokerUrl: `mqtt://127.0.0.1:${port}`, connectTimeoutMs: 300 }).catch((e: unknown) => e);
      expect(isApsaraMqDeviceError(error, 'ConnectTimeout')).toBe(true);
    } finally {
      await close();
    }
  });

  it('reconnects after a network cut with a jittered delay, and is not taken for a takeover', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@drop-1');
    const relay = await proxy();
    const conn = await connect({ credential, brokerUrl: relay.url, reconnect: { minDelayMs: 50, maxDelayMs: 200 }, random: () => 0.5 });
    const events: string[] = [];
    for (const name of ['offline', 'online', 'takeover'] as const) conn.on(name, () => events.push(name));
    conn.on('reconnecting', ({ attempt, delayMs }) => events.push(`reconnecting ${attempt} ${delayMs}`));
    const back = once(conn, 'online');
    relay.cut(); // the network drops
    await back;
    expect(events).toEqual(['offline', 'reconnecting 1 25', 'online']);
    expect(connacks()['0']).toBe(2);
  });

  it('rejects bad options with typed errors before any I/O', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@opt-1');
    let asked = 0;
    const source = async (): Promise<DeviceCredential> => {
      asked += 1;
      return credential;
    };
    await expect(connectDevice({ credential, brokerUrl: 'http://x' })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(connectDevice({ credential, brokerUrl: 'not a url' })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(connectDevice({ credential: source, keepalive: -1 })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(connectDevice({ credential: source, brokerUrl: emulator.mqttUrl, will: { topic: 'w', payload: Buffer.from('bye'), qos: 0, retain: false } })).rejects.toMatchObject({ code: 'UnsupportedByService' });
    await expect(connectDevice({ credential: async () => ({}) as DeviceCredential })).rejects.toMatchObject({ code: 'InvalidCredential' });
    expect(asked).toBe(0); // the source itself is I/O (a store, the OpenAPI): not asked for bad options
    expect(connacks()).toEqual({});
  });

  it('is cancellable with an AbortSignal, which reaches the credential source', async () => {
    const { port, accepted, close } = await silentServer();
    try {
      const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@abort-1');
      const controller = new AbortController();
      const pending = connectDevice({ credential, brokerUrl: `mqtt://127.0.0.1:${port}`, signal: controller.signal });
      await accepted; // the CONNECT is out, no CONNACK will come
      controller.abort();
      await expect(pending).rejects.toMatchObject({ code: 'Aborted' });
    } finally {
      await close();
    }
    // A source that hangs: the signal it was given fires, and connectDevice does not wait for it.
    const controller = new AbortController();
    let seen: AbortSignal | undefined;
    let asked: () => void = () => {};
    const wasAsked = new Promise<void>((resolve) => (asked = resolve));
    const hanging = connectDevice({
      brokerUrl: emulator.mqttUrl,
      signal: controller.signal,
      credential: (request) => {
        seen = request.signal;
        asked();
        return new Promise<DeviceCredential>(() => {});
      },
    });
    await wasAsked;
    controller.abort();
    await expect(hanging).rejects.toMatchObject({ code: 'Aborted' });
    expect(seen?.aborted).toBe(true);
  });

  it('the signal after the first connect closes the connection, like end(true)', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@abort-2');
    const controller = new AbortController();
    const conn = await connect({ credential, brokerUrl: emulator.mqttUrl, signal: controller.signal });
    const closed = once(conn, 'closed') as Promise<[{ error?: ApsaraMqDeviceError }]>;
    controller.abort();
    const [{ error }] = await closed;
    expect(error).toMatchObject({ code: 'Aborted' });
    await expect(conn.publish('a/b', 'x')).rejects.toBeInstanceOf(ConnectionClosedError);
  });

  it('util.inspect and JSON of a connection show no secret', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@inspect-1');
    const conn = await connect({ credential, brokerUrl: emulator.mqttUrl });
    const text = `${inspect(conn, { depth: 10, showHidden: true })} ${JSON.stringify(conn)}`;
    expect(text).not.toContain(credential.deviceAccessKeySecret);
    expect(text).not.toContain(signDeviceCredential(credential).password);
    expect((conn as unknown as Record<string, unknown>)['client']).toBeUndefined(); // no mqtt.js client (it shows the password)
    // Nor, as a property an application could reach, what its two halves share (its login holds the secrets).
    for (const name of ['login', 'options', 'url', 'logger', 'delivery', 'log', 'pump', 'progress', 'emitError', 'assertOpen']) expect(name in conn, name).toBe(false);
  });
});

describe('what the connector refuses before sending', () => {
  it('a wildcard, empty, too long or non-UTF-8 topic, and an oversized payload: ValidationError, nothing sent, still online', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@valid-1');
    const conn = await connect({ credential, brokerUrl: emulator.mqttUrl });
    const seen = publishesSeen();
    const cases: [Promise<void>, string][] = [
      [conn.publish('a/+', 'x', { qos: 1 }), 'InvalidTopic'],
      [conn.publish('demo/#', 'x', { qos: 1 }), 'InvalidTopic'],
      [conn.publish('', 'x'), 'InvalidTopic'],
      [conn.publish('t/\uD800', 'x'), 'InvalidTopic'],
      [conn.publish(`t/${'x'.repeat(63)}`, 'x'), 'InvalidTopic'],
      [conn.publish('t/big', Buffer.alloc(64 * 1024 + 1), { qos: 1 }), 'PayloadTooLarge'],
      [conn.publish('t/q', 'x', { qos: 3 as 1 }), 'InvalidOption'],
      [conn.publish('t/r', 'x', { retain: true }), 'UnsupportedByService'],
    ];
    for (const [pending, code] of cases) {
      const error = await pending.catch((e: unknown) => e);
      expect(error, code).toBeInstanceOf(ValidationError);
      expect(error).toMatchObject({ code });
    }
    await expect(conn.subscribe('a/#/b')).rejects.toMatchObject({ name: 'ValidationError', code: 'InvalidTopic' });
    await expect(conn.subscribe('$share/g/demo/#')).rejects.toMatchObject({ code: 'UnsupportedByService' });
    // Nothing reached the broker, and the session is the same one.
    await conn.publish('t/ok', 'fine', { qos: 1 });
    expect(seen).toEqual(['t/ok']);
    expect(connacks()).toEqual({ '0': 1 });
  });

  it('QoS 2 with clean: false is UnsupportedByService; QoS 2 with a clean session is sent', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@qos2-1');
    const persistent = await connect({ credential, brokerUrl: emulator.mqttUrl, clean: false });
    await expect(persistent.publish('t/q2', 'x', { qos: 2 })).rejects.toMatchObject({ code: 'UnsupportedByService' });
    await expect(persistent.subscribe('t/#', { qos: 2 })).rejects.toMatchObject({ code: 'UnsupportedByService' });
    await persistent.end();
    const clean = await connect({ credential, brokerUrl: emulator.mqttUrl });
    await clean.publish('t/q2', 'x', { qos: 2 });
  });

  it('a SUBSCRIBE the broker refuses (SUBACK 0x80) rejects with SubscribeError naming the filter; the others stay', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@sub-1');
    const conn = await connect({ credential, brokerUrl: emulator.mqttUrl });
    const error = await conn.subscribe(['conn/ok', 'demo/p2p/GID_conn@@@someone-else']).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SubscribeError);
    expect(error).toMatchObject({ code: 'SubscribeRejected', topics: ['demo/p2p/GID_conn@@@someone-else'], reasonCode: 0x80 });
    const got = once(conn, 'message');
    await conn.publish('conn/ok', 'still subscribed', { qos: 1 });
    expect(String((await got)[1])).toBe('still subscribed');
  });
});

describe('every promise settles', () => {
  it('after end(): publish, subscribe, unsubscribe and end reject or resolve with typed errors', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@after-1');
    const conn = await connect({ credential, brokerUrl: emulator.mqttUrl });
    await conn.subscribe('after/#');
    await conn.unsubscribe('after/#');
    await conn.end();
    expect(conn.state).toBe('closed');
    for (const pending of [conn.publish('after/x', 'x'), conn.publish('after/x', 'x', { qos: 1 }), conn.subscribe('after/#'), conn.unsubscribe('after/#')]) {
      await expect(pending).rejects.toBeInstanceOf(ConnectionClosedError);
    }
    await expect(conn.end()).resolves.toBeUndefined();
  });

  it('end() while the broker is down settles, and rejects what was queued with ConnectionClosed', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@down-1');
    const relay = await proxy();
    const conn = await connect({ credential, brokerUrl: relay.url, reconnect: { minDelayMs: 10, maxDelayMs: 50 } });
    const offline = once(conn, 'offline');
    await relay.close(); // the broker is gone: every reconnect is refused
    await offline;
    const queued = [conn.publish('down/x', 'x', { qos: 1 }), conn.publish('down/y', 'y', { qos: 0 }), conn.subscribe('down/#')].map((p) => p.catch((e: unknown) => e));
    await conn.end();
    for (const error of await Promise.all(queued)) expect(error).toBeInstanceOf(ConnectionClosedError);
  });

  it('end() while online waits for what is in flight: a QoS 1 publish not awaited is acknowledged first', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@flush-1');
    const conn = await connect({ credential, brokerUrl: emulator.mqttUrl });
    const seen = publishesSeen();
    const sent = conn.publish('flush/x', 'x', { qos: 1 });
    await conn.end();
    await expect(sent).resolves.toBeUndefined();
    expect(seen).toEqual(['flush/x']);
  });

  it('after giving up (CredentialRejected), publish rejects with ConnectionClosed carrying the cause', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@gone-1');
    const relay = await proxy();
    const conn = await connect({ credential, brokerUrl: relay.url, reconnect: { minDelayMs: 10, maxDelayMs: 50 } });
    await api.request('UnRegisterDeviceCredential', { ClientId: 'GID_conn@@@gone-1', InstanceId: emulator.instanceId }, { method: 'POST' });
    // Not events.once: it rejects on the 'error' event that comes first.
    const closed = new Promise<{ error?: ApsaraMqDeviceError }>((resolve) => conn.once('closed', resolve));
    const queued = conn.publish('gone/x', 'x', { qos: 1 }).catch((e: unknown) => e);
    relay.cut();
    const { error } = await closed;
    expect(error).toMatchObject({ code: 'CredentialRejected' });
    const late = await conn.publish('gone/y', 'y').catch((e: unknown) => e);
    for (const e of [await queued, late]) {
      expect(e).toBeInstanceOf(ConnectionClosedError);
      expect((e as Error).cause).toBe(error);
    }
  });
});
