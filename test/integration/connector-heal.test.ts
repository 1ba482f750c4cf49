import { once } from 'node:events';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import { registerAndConnect, type RegisterAndConnectOptions } from '../../src/connector/register-and-connect.js';
import type { ApsaraMqDeviceError } from '../../src/errors.js';
import { FileCredentialStore } from '../../src/provisioner/file-store.js';
import { Provisioner } from '../../src/provisioner/provisioner.js';
import type { Logger } from '../../src/util/logger.js';
import { tempDir } from '../helpers/cli.js';
import { callApi, registerDevice, useEmulator } from '../helpers/emulator.js';

const emulator = useEmulator({ parentTopics: ['log'] }, 'test');

function deviceOptions(clientId: string, store: string, extra: Partial<RegisterAndConnectOptions> = {}): RegisterAndConnectOptions {
  const e = emulator();
  return {
    endpoint: e.apiEndpoint,
    accessKeyId: e.accessKeyId,
    accessKeySecret: e.accessKeySecret,
    instanceId: e.instanceId,
    clientId,
    brokerUrl: e.mqttUrl,
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
  return events;
}

describe('sessions that heal', () => {
  it('a credential refreshed by another registrar is picked up after the next disconnect', async () => {
    const store = join(await tempDir(), 'store');
    const conn = await device(deviceOptions('GID_heal@@@refresh-1', store));
    const before = conn.credential.deviceAccessKeyId;
    const events = record(conn);
    const other = new Provisioner({ ...deviceOptions('GID_heal@@@refresh-1', join(await tempDir(), 'other')) });
    onTestFinished(() => other.close());
    const { credential: fresh } = await other.refresh('GID_heal@@@refresh-1');

    const back = once(conn, 'online');
    conn.client.stream.destroy(); // the network drops
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
    const conn = await device(deviceOptions(clientId, store));
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
    conn.client.stream.destroy();
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
    const conn = await device(deviceOptions('GID_heal@@@unreg-1', store));
    const events = record(conn);
    await callApi(emulator(), 'UnRegisterDeviceCredential', { ClientId: 'GID_heal@@@unreg-1', InstanceId: emulator().instanceId });
    const connacksBefore = emulator().stats().mqtt.connacks;
    // Not events.once: it rejects on the 'error' event that comes first.
    const closed = new Promise<{ error?: ApsaraMqDeviceError }>((resolve) => conn.once('closed', resolve));
    conn.client.stream.destroy();
    const { error } = await closed;
    expect(error).toMatchObject({ code: 'CredentialRejected', connackCode: 4 });
    expect(events).toEqual(['offline', 'auth-failed 4', 'error CredentialRejected', 'closed CredentialRejected']);
    const after = emulator().stats().mqtt.connacks;
    expect((after['4'] ?? 0) - (connacksBefore['4'] ?? 0)).toBe(1);
    expect(after['0']).toBe(connacksBefore['0']);
  });

  it("onMissing: 'register' registers again after an UnRegister and comes back online", async () => {
    const store = join(await tempDir(), 'store');
    const conn = await device(deviceOptions('GID_heal@@@unreg-2', store, { onMissing: 'register' }));
    const events = record(conn);
    await callApi(emulator(), 'UnRegisterDeviceCredential', { ClientId: 'GID_heal@@@unreg-2', InstanceId: emulator().instanceId });
    const back = once(conn, 'online');
    conn.client.stream.destroy();
    await back;
    expect(events).toEqual(['offline', 'auth-failed 4', 'credential-refreshed', 'online']);
  });

  it('two connectors sharing one ClientId are reported as a takeover loop instead of flapping forever', async () => {
    const credential = await registerDevice(emulator(), 'GID_heal@@@twin-1');
    const opts = { credential, brokerUrl: emulator().mqttUrl, reconnect: { minDelayMs: 20, maxDelayMs: 200 }, takeover: { shortSessionMs: 2_000, maxShortSessions: 4 } };
    const a = await connectDevice(opts);
    onTestFinished(() => a.end(true));
    const gaveUp = new Promise<ApsaraMqDeviceError>((resolve) => {
      for (const c of [a]) c.on('closed', ({ error }) => error && resolve(error));
    });
    const b = await connectDevice(opts);
    onTestFinished(() => b.end(true));
    b.on('closed', () => {});
    const error = await Promise.race([gaveUp, new Promise<ApsaraMqDeviceError>((resolve) => b.on('closed', ({ error: e }) => e && resolve(e)))]);
    expect(error).toMatchObject({ code: 'TakeoverLoop', retryable: false });
    expect(error.message).toContain('same ClientId');
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
