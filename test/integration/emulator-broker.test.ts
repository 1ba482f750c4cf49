import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { DeviceCredential } from '../../src/credential.js';
import { startEmulator } from '../../src/emulator/index.js';
import { LISTEN_BACKLOG } from '../../src/emulator/servers.js';
import { hmacPassword, signDeviceCredential, signSignature, signToken } from '../../src/signer/mqtt.js';
import { apiClient, callApi, connackCode, connectMqtt, registerDevice, useEmulator } from '../helpers/emulator.js';

/** Subscribe with one client, publish with another, and resolve with the payload received. */
async function roundTrip(url: string, subscriber: Parameters<typeof connectMqtt>[1], publisher: Parameters<typeof connectMqtt>[1]): Promise<string> {
  const sub = await connectMqtt(url, subscriber);
  const pub = await connectMqtt(url, publisher);
  try {
    const topic = `Parent/${subscriber.clientId}`;
    await sub.subscribeAsync(topic, { qos: 1 });
    const received = new Promise<string>((resolve) => sub.once('message', (_t, payload) => resolve(payload.toString())));
    await pub.publishAsync(topic, 'hello', { qos: 1 });
    return await received;
  } finally {
    await Promise.all([sub.endAsync(), pub.endAsync()]);
  }
}

describe('broker: DeviceCredential authentication', () => {
  const emu = useEmulator({ parentTopics: ['Parent'] });

  it('accepts a registered device (CONNACK 0) and routes messages over TCP and WebSocket', async () => {
    const e = emu();
    const a = signDeviceCredential(await registerDevice(e, 'GID_rt@@@dev-a'));
    const b = signDeviceCredential(await registerDevice(e, 'GID_rt@@@dev-b'));
    expect(await roundTrip(e.mqttUrl, a, b)).toBe('hello');
    expect(e.wsUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/mqtt$/);
    expect(await roundTrip(e.wsUrl ?? '', a, b)).toBe('hello');
  });

  it('refuses a wrong password, an unknown key and a malformed username with rc 4', async () => {
    const e = emu();
    const good = signDeviceCredential(await registerDevice(e, 'GID_bad@@@dev'));
    expect(await connackCode(e.mqttUrl, { ...good, password: hmacPassword('not-the-secret', good.clientId) })).toBe(4);
    expect(await connackCode(e.mqttUrl, { ...good, password: '' })).toBe(4);
    expect(await connackCode(e.mqttUrl, { ...good, username: `DeviceCredential|DC.unknownunknownunknown00|${e.instanceId}` })).toBe(4);
    for (const username of ['', 'DeviceCredential', `DeviceCredential|${e.instanceId}`, `DeviceCredential||${e.instanceId}`, `a|b|c|d`]) {
      expect(await connackCode(e.mqttUrl, { ...good, username })).toBe(4);
    }
    expect(await connackCode(e.mqttUrl, { ...good, username: good.username.replace('DeviceCredential', 'Certificate') })).toBe(4);
    expect(await connackCode(e.mqttUrl, good)).toBe(0);
  });

  it('refuses another instance in the username, and a credential used for another ClientId, with rc 5', async () => {
    const e = emu();
    const credA = await registerDevice(e, 'GID_bind@@@dev-a');
    const a = signDeviceCredential(credA);
    expect(await connackCode(e.mqttUrl, { ...a, username: `DeviceCredential|${credA.deviceAccessKeyId}|mqtt-cn-other` })).toBe(5);
    // A's key, B's ClientId, the password correctly computed for B: verified, but not A's ClientId.
    const clientIdB = 'GID_bind@@@dev-b';
    expect(await connackCode(e.mqttUrl, { username: a.username, clientId: clientIdB, password: hmacPassword(credA.deviceAccessKeySecret, clientIdB) })).toBe(5);
    // The password computed for A but sent with B's ClientId does not verify at all.
    expect(await connackCode(e.mqttUrl, { ...a, clientId: clientIdB })).toBe(4);
  });

  it('refuses a ClientId that breaks the grammar with rc 2, before looking at the credentials', async () => {
    const e = emu();
    const good = signDeviceCredential(await registerDevice(e, 'GID_id@@@dev'));
    for (const clientId of ['plain-id', 'GRP_x@@@dev', 'GID_x@@@dev/1', `GID_x@@@${'d'.repeat(60)}`]) {
      expect(await connackCode(e.mqttUrl, { ...good, clientId })).toBe(2);
    }
    expect(await connackCode(e.mqttUrl, { ...good, clientId: '' }, { clean: true })).toBe(2);
  });

  it('accepts Signature mode with the account keys (rc 0) and refuses it with other keys (rc 4); a Token-mode password that is no token gets rc 4 (token-mode-broker.test.ts has the rest)', async () => {
    const e = emu();
    const clientId = 'GID_sig@@@dev';
    const sig = signSignature({ accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret, instanceId: e.instanceId, clientId });
    expect(await connackCode(e.mqttUrl, sig)).toBe(0);
    expect(await connackCode(e.mqttUrl, { ...sig, password: hmacPassword('wrong', clientId) })).toBe(4);
    expect(await connackCode(e.mqttUrl, signSignature({ accessKeyId: 'LTAIother', accessKeySecret: e.accessKeySecret, instanceId: e.instanceId, clientId }))).toBe(4);
    expect(await connackCode(e.mqttUrl, signSignature({ accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret, instanceId: 'mqtt-cn-other', clientId }))).toBe(5);
    expect(await connackCode(e.mqttUrl, signToken({ accessKeyId: e.accessKeyId, instanceId: e.instanceId, clientId, tokens: [{ type: 'RW', token: 'x' }] }))).toBe(4);
  });

  it('after Refresh the old credential gets rc 4 and the new one rc 0; a live session stays connected', async () => {
    const e = emu();
    const clientId = 'GID_rot@@@dev';
    const old = signDeviceCredential(await registerDevice(e, clientId));
    const live = await connectMqtt(e.mqttUrl, old);
    try {
      const refreshed = await callApi(e, 'RefreshDeviceCredential', { ClientId: clientId, InstanceId: e.instanceId });
      const fresh = signDeviceCredential(DeviceCredential.fromWire(refreshed));
      expect(fresh.username).not.toBe(old.username);
      expect(await connackCode(e.mqttUrl, old, { clientId: 'GID_rot@@@other' })).toBe(4);
      expect(await connackCode(e.mqttUrl, old)).toBe(4);
      expect(live.connected).toBe(true);
      expect(await connackCode(e.mqttUrl, fresh, { clientId })).toBe(0);
    } finally {
      await live.endAsync(true);
    }
  });

  it('after a latest-wins Register the previous credential gets rc 4', async () => {
    const e = emu();
    const first = signDeviceCredential(await registerDevice(e, 'GID_rereg@@@dev'));
    const second = signDeviceCredential(await registerDevice(e, 'GID_rereg@@@dev'));
    expect(await connackCode(e.mqttUrl, first)).toBe(4);
    expect(await connackCode(e.mqttUrl, second)).toBe(0);
  });

  it('after UnRegister the credential gets rc 4', async () => {
    const e = emu();
    const creds = signDeviceCredential(await registerDevice(e, 'GID_unreg@@@dev'));
    expect(await connackCode(e.mqttUrl, creds)).toBe(0);
    await apiClient(e).request('UnRegisterDeviceCredential', { ClientId: 'GID_unreg@@@dev', InstanceId: e.instanceId }, { method: 'POST' });
    expect(await connackCode(e.mqttUrl, creds)).toBe(4);
  });
});

describe('broker: stats', () => {
  const emu = useEmulator({}, 'test');

  it('counts CONNACKs by return code and clients connected now', async () => {
    const e = emu();
    const creds = signDeviceCredential(await registerDevice(e, 'GID_st@@@dev'));
    expect(await connackCode(e.mqttUrl, creds)).toBe(0);
    expect(await connackCode(e.mqttUrl, { ...creds, password: 'x' })).toBe(4);
    expect(await connackCode(e.mqttUrl, { ...creds, password: 'y' })).toBe(4);
    expect(await connackCode(e.mqttUrl, { ...creds, clientId: 'bad' })).toBe(2);
    const live = await connectMqtt(e.wsUrl ?? '', creds);
    try {
      await vi.waitFor(() => expect(e.stats().mqtt.connected).toBe(1));
      const stats = (await (await fetch(new URL('/_emulator/stats', e.apiEndpoint))).json()) as unknown;
      expect(stats).toEqual({
        actions: { RegisterDeviceCredential: { ok: 1, errors: {} } },
        mqtt: { connected: 1, connacks: { 0: 2, 2: 1, 4: 2 }, rules: {}, queues: { sessions: 0, messages: 0, bytes: 0, largestMessages: 0, largestBytes: 0 } },
      });
    } finally {
      await live.endAsync();
    }
    await vi.waitFor(() => expect(e.stats().mqtt.connected).toBe(0));
  });
});

describe('broker: listeners and shutdown', () => {
  it('serves WebSocket only on /mqtt, and not at all with wsPort: false', async () => {
    const e = await startEmulator({ env: {} });
    try {
      const url = (e.wsUrl ?? '').replace(/\/mqtt$/, '/other');
      const ws = new WebSocket(url, 'mqtt');
      const [error] = (await once(ws, 'error')) as [Error];
      expect(error.message).toMatch(/400/);
      const plain = await fetch((e.wsUrl ?? '').replace(/^ws/, 'http'));
      expect(plain.status).toBe(426);
      await plain.text();
    } finally {
      await e.close();
    }
    const noWs = await startEmulator({ env: {}, wsPort: false });
    expect(noWs.wsUrl).toBeUndefined();
    await noWs.close();
  });

  it('closes promptly with live MQTT, WebSocket, idle TCP and keep-alive HTTP connections; close is idempotent', async () => {
    const e = await startEmulator({ env: {}, groups: ['GID_close'] });
    const creds = signDeviceCredential(await registerDevice(e, 'GID_close@@@dev'));
    const tcpClient = await connectMqtt(e.mqttUrl, creds);
    const wsClient = await connectMqtt(e.wsUrl ?? '', { ...creds, clientId: 'GID_close@@@dev2' }, {
      username: `Signature|${e.accessKeyId}|${e.instanceId}`,
      password: hmacPassword(e.accessKeySecret, 'GID_close@@@dev2'),
    });
    const idle = netConnect(Number(new URL(e.mqttUrl).port), '127.0.0.1');
    await once(idle, 'connect');
    const idleClosed = once(idle, 'close');
    const started = Date.now();
    await Promise.all([e.close(), e.close()]);
    await e.close();
    expect(Date.now() - started).toBeLessThan(2_000);
    await idleClosed;
    await Promise.all([tcpClient.endAsync(true), wsClient.endAsync(true)]);
    await expect(fetch(new URL('/_emulator/stats', e.apiEndpoint))).rejects.toThrow();
  });

  it('rejects when a port is taken, leaving nothing running', async () => {
    const e = await startEmulator({ env: {} });
    try {
      const taken = Number(new URL(e.mqttUrl).port);
      await expect(startEmulator({ env: {}, mqttPort: taken })).rejects.toMatchObject({ code: 'AddressInUse', retryable: false });
      const apiTaken = Number(new URL(e.apiEndpoint).port);
      await expect(startEmulator({ env: {}, apiPort: apiTaken })).rejects.toMatchObject({ code: 'AddressInUse', retryable: false });
      await expect(startEmulator({ env: {}, wsPort: apiTaken })).rejects.toMatchObject({ code: 'AddressInUse', retryable: false });
    } finally {
      await e.close();
    }
  });

  // `ss` (iproute2, which .ci/run installs) shows a listening socket's backlog as its Send-Q.
  const ss = (() => {
    try {
      execFileSync('ss', ['-V'], { stdio: 'ignore' });
      return true;
    } catch {
      return process.env.CI !== undefined;
    }
  })();
  it.skipIf(!ss)(`its ports take a burst of connections (a listen backlog of ${LISTEN_BACKLOG}, not Node's 511)${ss ? '' : ' [skipped: no ss (iproute2) on this machine]'}`, async () => {
    const e = await startEmulator({ env: {} });
    try {
      const expected = Math.min(LISTEN_BACKLOG, Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8')));
      for (const url of [e.mqttUrl, e.apiEndpoint, e.wsUrl as string]) {
        const port = new URL(url).port;
        const line = execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' }).trim();
        // State Recv-Q Send-Q Local Peer: for a listening socket Send-Q is its backlog.
        expect(Number(line.split(/\s+/)[2]), `${url}: ${line}`).toBe(expected);
      }
    } finally {
      await e.close();
    }
  });
});
