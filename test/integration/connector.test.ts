import { once } from 'node:events';
import { type Server, type Socket, createServer } from 'node:net';
import RPCClient from '@alicloud/pop-core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import { type CredentialRequest, DeviceCredential } from '../../src/credential.js';
import { ConnectError, isApsaraMqDeviceError } from '../../src/errors.js';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import { closedPort } from '../helpers/http.js';
import { expectRoundTrip } from '../helpers/mqtt.js';

let emulator: Emulator;
let api: RPCClient;
const open: DeviceConnection[] = [];

beforeEach(async () => {
  emulator = await startEmulator({ env: {}, parentTopics: ['conn'] });
  api = new RPCClient({ endpoint: emulator.apiEndpoint, apiVersion: '2020-04-20', accessKeyId: emulator.accessKeyId, accessKeySecret: emulator.accessKeySecret });
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.end(true)));
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

/** A TCP server that accepts and never answers; closing it destroys what it accepted. */
async function silentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function connacks(): Record<string, number> {
  return emulator.stats().mqtt.connacks;
}

describe('connectDevice against the emulator', () => {
  it('connects with a static credential and round-trips a message', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@dev-1');
    const conn = await connect({ credential, brokerUrl: emulator.mqttUrl });
    expect(conn.online).toBe(true);
    await expectRoundTrip(conn, 'conn/echo', 'hello');
  });

  it('connects over WebSocket at /mqtt', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@ws-1');
    expect(emulator.wsUrl).toBeDefined();
    // Give the URL without the path: the connector adds the service's /mqtt.
    const bare = emulator.wsUrl!.replace(/\/mqtt$/, '');
    const conn = await connect({ credential, brokerUrl: bare });
    expect(conn.online).toBe(true);
  });

  it('fetches the credential again once after a refusal, and heals a rotation', async () => {
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

  it('reports a refused TCP connection as BrokerUnreachable, not as an auth failure', async () => {
    const port = await closedPort();
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@net-1');
    const error = await connectDevice({ credential, brokerUrl: `mqtt://127.0.0.1:${port}` }).catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(error, 'BrokerUnreachable')).toBe(true);
    expect((error as ConnectError).retryable).toBe(true);
    expect((error as Error).message).toContain('ECONNREFUSED');
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

  it('reconnects after a network loss with a jittered delay', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@drop-1');
    const conn = await connect({ credential, brokerUrl: emulator.mqttUrl, reconnect: { minDelayMs: 50, maxDelayMs: 200 }, random: () => 0.5 });
    const events: string[] = [];
    conn.on('offline', () => events.push('offline'));
    conn.on('reconnecting', ({ attempt, delayMs }) => events.push(`reconnecting ${attempt} ${delayMs}`));
    const back = once(conn, 'online');
    conn.client.stream.destroy(); // the network drops
    await back;
    expect(events).toEqual(['offline', 'reconnecting 1 25']);
    expect(connacks()['0']).toBe(2);
  });

  it('rejects bad options with typed errors before any I/O', async () => {
    const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@opt-1');
    await expect(connectDevice({ credential, brokerUrl: 'http://x' })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(connectDevice({ credential, brokerUrl: 'not a url' })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(connectDevice({ credential, keepalive: -1 })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(connectDevice({ credential: async () => ({}) as DeviceCredential })).rejects.toMatchObject({ code: 'InvalidCredential' });
    expect(emulator.stats().mqtt.connacks).toEqual({});
  });

  it('is cancellable with an AbortSignal', async () => {
    const { port, close } = await silentServer();
    try {
      const credential = await apiCredential('RegisterDeviceCredential', 'GID_conn@@@abort-1');
      const controller = new AbortController();
      const pending = connectDevice({ credential, brokerUrl: `mqtt://127.0.0.1:${port}`, signal: controller.signal });
      setTimeout(() => controller.abort(), 50);
      await expect(pending).rejects.toMatchObject({ code: 'Aborted' });
    } finally {
      await close();
    }
  });
});
