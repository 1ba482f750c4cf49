import { once } from 'node:events';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import { registerAndConnect, type RegisterAndConnectOptions } from '../../src/register-and-connect.js';
import { type ApsaraMqDeviceError, ValidationError } from '../../src/errors.js';
import { FileCredentialStore } from '../../src/provisioner/file-store.js';
import { Provisioner } from '../../src/provisioner/provisioner.js';
import type { Logger } from '../../src/util/logger.js';
import { tempDir } from '../helpers/cli.js';
import { callApi, registerDevice, useEmulator } from '../helpers/emulator.js';
import { type TcpProxy, startProxy } from '../helpers/mqtt.js';

const emulator = useEmulator({ parentTopics: ['log'] }, 'test');

/** A relay in front of the emulator's broker, closed after the test: `cut()` is a network drop. */
async function relay(): Promise<TcpProxy> {
  const proxy = await startProxy(emulator().mqttUrl);
  onTestFinished(() => proxy.close());
  return proxy;
}

function deviceOptions(clientId: string, store: string, extra: Partial<RegisterAndConnectOptions> = {}, brokerUrl = emulator().mqttUrl): RegisterAndConnectOptions {
  const e = emulator();
  return {
    endpoint: e.apiEndpoint,
    accessKeyId: e.accessKeyId,
    accessKeySecret: e.accessKeySecret,
    instanceId: e.instanceId,
    clientId,
    brokerUrl,
    store: new FileCredentialStore(store),
    reconnect: { minDelayMs: 20, maxDelayMs: 200 },
    ...extra,
  };
}

async function device(options: RegisterAndConnectOptions): Promise<DeviceConnection> {
  const conn = await registerAndConnect(options);
  onTestFinished(() => conn.end(true));
  return conn;
}

/** Collect every event a connection emits, in order. */
function record(conn: DeviceConnection): string[] {
  const events: string[] = [];
  conn.on('online', () => events.push('online'));
  conn.on('offline', () => events.push('offline'));
  conn.on('auth-failed', ({ rc }) => events.push(`auth-failed ${rc}`));
  conn.on('credential-refreshed', () => events.push('credential-refreshed'));
  conn.on('error', (e) => events.push(`error ${e.code}`));
  conn.on('closed', ({ error }) => events.push(`closed${error ? ` ${error.code}` : ''}`));
  conn.on('takeover', ({ confirmed }) => events.push(`takeover ${confirmed ? 'confirmed' : 'suspected'}`));
  return events;
}

describe('sessions that heal', () => {
  it('a credential refreshed by another registrar is picked up after the next disconnect', async () => {
    const store = join(await tempDir(), 'store');
    const network = await relay();
    const conn = await device(deviceOptions('GID_heal@@@refresh-1', store, {}, network.url));
    const before = conn.credential.deviceAccessKeyId;
    const events = record(conn);
    const other = new Provisioner({ ...deviceOptions('GID_heal@@@refresh-1', join(await tempDir(), 'other')) });
    onTestFinished(() => other.close());
    const { credential: fresh } = await other.refresh('GID_heal@@@refresh-1');

    const back = once(conn, 'online');
    network.cut(); // the network drops
    await back;
    expect(conn.credential.deviceAccessKeyId).toBe(fresh.deviceAccessKeyId);
    expect(conn.credential.deviceAccessKeyId).not.toBe(before);
    expect(events).toEqual(['offline', 'auth-failed 4', 'credential-refreshed', 'online']);
    // The new credential went to the store: the next boot needs no API call.
    expect((await new FileCredentialStore(store).load(emulator().instanceId, 'GID_heal@@@refresh-1'))?.deviceAccessKeyId).toBe(fresh.deviceAccessKeyId);
  });

  it('a stale key in the store does not stop the ladder: it goes on to GetDeviceCredential', async () => {
    const store = join(await tempDir(), 'store');
    const clientId = 'GID_heal@@@ladder-1';
    const network = await relay();
    const conn = await device(deviceOptions(clientId, store, {}, network.url));
    const events = record(conn);
    // Registrar B rotates the key and saves it to the shared store; registrar C rotates it again elsewhere.
    const b = new Provisioner({ ...deviceOptions(clientId, store) });
    const c = new Provisioner({ ...deviceOptions(clientId, join(await tempDir(), 'other')) });
    onTestFinished(() => {
      b.close();
      c.close();
    });
    await b.refresh(clientId);
    const { credential: latest } = await c.refresh(clientId);
    const back = once(conn, 'online');
    network.cut();
    await back;
    expect(conn.credential.deviceAccessKeyId).toBe(latest.deviceAccessKeyId);
    expect(events).toEqual(['offline', 'auth-failed 4', 'credential-refreshed', 'auth-failed 4', 'credential-refreshed', 'online']);
  });

  it('a credential source that returns something else than a DeviceCredential ends the session with a typed error, not a crash', async () => {
    const credential = await registerDevice(emulator(), 'GID_heal@@@badsource-1');
    await callApi(emulator(), 'RefreshDeviceCredential', { ClientId: 'GID_heal@@@badsource-1', InstanceId: emulator().instanceId });
    const error = await connectDevice({
      brokerUrl: emulator().mqttUrl,
      credential: async (request) => (request.reason === 'connect' ? credential : ({ ...credential.toWire() } as never)),
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'InvalidCredential' });
  });

  it('an unregistered credential ends with CredentialRejected after one CONNECT, no storm', async () => {
    const store = join(await tempDir(), 'store');
    const network = await relay();
    const conn = await device(deviceOptions('GID_heal@@@unreg-1', store, {}, network.url));
    const events = record(conn);
    await callApi(emulator(), 'UnRegisterDeviceCredential', { ClientId: 'GID_heal@@@unreg-1', InstanceId: emulator().instanceId });
    const connacksBefore = emulator().stats().mqtt.connacks;
    // Not events.once: it rejects on the 'error' event that comes first.
    const closed = new Promise<{ error?: ApsaraMqDeviceError }>((resolve) => conn.once('closed', resolve));
    network.cut();
    const { error } = await closed;
    expect(error).toMatchObject({ code: 'CredentialRejected', connackCode: 4 });
    expect(events).toEqual(['offline', 'auth-failed 4', 'error CredentialRejected', 'closed CredentialRejected']);
    const after = emulator().stats().mqtt.connacks;
    expect((after['4'] ?? 0) - (connacksBefore['4'] ?? 0)).toBe(1);
    expect(after['0']).toBe(connacksBefore['0']);
  });

  it("onMissing: 'register' registers again after an UnRegister and comes back online", async () => {
    const store = join(await tempDir(), 'store');
    const network = await relay();
    const conn = await device(deviceOptions('GID_heal@@@unreg-2', store, { onMissing: 'register' }, network.url));
    const events = record(conn);
    await callApi(emulator(), 'UnRegisterDeviceCredential', { ClientId: 'GID_heal@@@unreg-2', InstanceId: emulator().instanceId });
    const back = once(conn, 'online');
    network.cut();
    await back;
    expect(events).toEqual(['offline', 'auth-failed 4', 'credential-refreshed', 'online']);
  });

  it('two connectors sharing one ClientId: reported as a (suspected, over 3.1.1) takeover, then longer waits, and neither gives up', async () => {
    const credential = await registerDevice(emulator(), 'GID_heal@@@twin-1');
    const opts = { credential, brokerUrl: emulator().mqttUrl, reconnect: { minDelayMs: 20, maxDelayMs: 200 }, takeover: { minDelayMs: 100, maxDelayMs: 400 } };
    const twins = [await connectDevice(opts)];
    onTestFinished(() => twins[0]?.end(true));
    const reported = new Promise<[DeviceConnection, { confirmed: boolean; inARow: number }]>((resolve) => {
      const watch = (twin: DeviceConnection): void => {
        twin.once('takeover', (info) => resolve([twin, info]));
      };
      watch(twins[0] as DeviceConnection);
      // The second twin: its CONNECT kicks the first off.
      void connectDevice(opts).then((b) => {
        twins.push(b);
        onTestFinished(() => b.end(true));
        watch(b);
      });
    });
    const closed: unknown[] = [];
    const [twin, first] = await reported;
    for (const t of twins) t.on('closed', (info) => closed.push(info));
    expect(first).toEqual({ confirmed: false, inARow: 1 });
    // The next reconnect of the twin that saw it waits within [ceiling / 2, ceiling] of the first takeover (100 ms),
    // where the plain backoff could have drawn anything from 0.
    const [{ delayMs }] = (await once(twin, 'reconnecting')) as [{ delayMs: number }];
    expect(delayMs).toBeGreaterThanOrEqual(50);
    expect(delayMs).toBeLessThanOrEqual(100);
    expect(closed).toEqual([]);
  });

  it('takeover.giveUpAfter (opt-in) closes with TakeoverLoop', async () => {
    const credential = await registerDevice(emulator(), 'GID_heal@@@twin-2');
    const opts = { credential, brokerUrl: emulator().mqttUrl, reconnect: { minDelayMs: 20, maxDelayMs: 200 }, takeover: { minDelayMs: 20, maxDelayMs: 100, giveUpAfter: 2 } };
    const a = await connectDevice(opts);
    onTestFinished(() => a.end(true));
    const gaveUp = new Promise<ApsaraMqDeviceError>((resolve) => a.on('closed', ({ error }) => error && resolve(error)));
    const b = await connectDevice(opts);
    onTestFinished(() => b.end(true));
    const error = await Promise.race([gaveUp, new Promise<ApsaraMqDeviceError>((resolve) => b.on('closed', ({ error: e }) => e && resolve(e)))]);
    expect(error).toMatchObject({ code: 'TakeoverLoop', retryable: false });
    expect(error.message).toContain('taken over 2 times in a row');
  });

  it('registerAndConnect checks every option before its first API call: no Get, no billed Register', async () => {
    const store = join(await tempDir(), 'store');
    const base = deviceOptions('GID_heal@@@opts-1', store);
    for (const bad of [{ keepalive: -1 }, { reconnect: { minDelayMs: -5 } }, { protocolVersion: 6 }, { brokerUrl: 'http://x' }, { will: { topic: 'w', payload: 'x', qos: 0, retain: false } }] as const) {
      await expect(registerAndConnect({ ...base, ...(bad as Partial<RegisterAndConnectOptions>) })).rejects.toBeInstanceOf(ValidationError);
    }
    const aborted = new AbortController();
    aborted.abort();
    await expect(registerAndConnect({ ...base, signal: aborted.signal })).rejects.toMatchObject({ code: 'Aborted' });
    expect(emulator().stats().actions).toEqual({});
    expect(emulator().stats().mqtt.connacks).toEqual({});
  });

  it('the signal reaches the recovery ladder: aborting while the source works closes with Aborted', async () => {
    const credential = await registerDevice(emulator(), 'GID_heal@@@ladder-abort');
    const network = await relay();
    const controller = new AbortController();
    let ladderSignal: AbortSignal | undefined;
    let asked: () => void = () => {};
    const askedForAnother = new Promise<void>((resolve) => (asked = resolve));
    const conn = await connectDevice({
      brokerUrl: network.url,
      signal: controller.signal,
      reconnect: { minDelayMs: 10, maxDelayMs: 50 },
      credential: (request) => {
        if (request.reason === 'connect') return Promise.resolve(credential);
        ladderSignal = request.signal;
        asked();
        return new Promise(() => {}); // a GetDeviceCredential that never answers
      },
    });
    onTestFinished(() => conn.end(true));
    await callApi(emulator(), 'RefreshDeviceCredential', { ClientId: credential.clientId, InstanceId: emulator().instanceId });
    const closed = new Promise<{ error?: ApsaraMqDeviceError }>((resolve) => conn.once('closed', resolve));
    network.cut();
    await askedForAnother;
    expect(conn.state).toBe('refetching-credential');
    controller.abort();
    expect(ladderSignal?.aborted).toBe(true);
    expect((await closed).error).toMatchObject({ code: 'Aborted' });
  });

  it("mqtt.js's debug lines reach the logger with the password and secret scrubbed", async () => {
    const credential = await registerDevice(emulator(), 'GID_heal@@@log-1');
    const lines: string[] = [];
    const capture = (level: string) => (message: string, fields?: Record<string, unknown>) => lines.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
    const logger: Logger = { debug: capture('debug'), info: capture('info'), warn: capture('warn'), error: capture('error') };
    const conn = await connectDevice({ credential, brokerUrl: emulator().mqttUrl, logger });
    await conn.publish('log/x', 'payload', { qos: 1 });
    await conn.end();
    const text = lines.join('\n');
    expect(text).toContain('[mqtt.js]'); // the CONNECT packet was logged...
    expect(text).toMatch(/password: '\*\*\*\*'/); // ...with the password masked
    const { password } = (await import('../../src/signer/mqtt.js')).signDeviceCredential(credential);
    expect(text).not.toContain(password);
    expect(text).not.toContain(credential.deviceAccessKeySecret);
  });
});
