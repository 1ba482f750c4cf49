/**
 * Issue #5 acceptance: the connector keeps a device online through what the service can do to it. The emulator's
 * controls (disconnect, restart, revoke) play the service; every client is a real mqtt.js session.
 */
import { once } from 'node:events';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import type { ApsaraMqDeviceError } from '../../src/errors.js';
import { Provisioner } from '../../src/provisioner/provisioner.js';
import { callApi, registerDevice, useEmulator } from '../helpers/emulator.js';

const emulator = useEmulator({ parentTopics: ['res'] }, 'test');

function registrar(): Provisioner {
  const e = emulator();
  const p = new Provisioner({ endpoint: e.apiEndpoint, instanceId: e.instanceId, accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret });
  onTestFinished(() => p.close());
  return p;
}

async function open(conn: Promise<DeviceConnection>): Promise<DeviceConnection> {
  const c = await conn;
  onTestFinished(() => c.end(true));
  return c;
}

/** Wait until `predicate` holds, polling; fails the test with `what` if it never does. */
async function until(predicate: () => boolean, what: string, tries = 500): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (predicate()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('recovery ladder with the emulator as the service', () => {
  it('Refresh while connected, then a forced disconnect: back online with the new credential after one short delay', async () => {
    const p = registrar();
    const clientId = 'GID_res@@@refresh-1';
    await p.ensureCredential(clientId);
    // Default reconnect settings: the first delay is below minDelayMs (1 s) by construction.
    const conn = await open(connectDevice({ credential: p.credentialSource(clientId), brokerUrl: emulator().mqttUrl }));
    const delays: number[] = [];
    conn.on('reconnecting', ({ delayMs }) => delays.push(delayMs));
    const other = new Provisioner({ endpoint: emulator().apiEndpoint, instanceId: emulator().instanceId, accessKeyId: emulator().accessKeyId, accessKeySecret: emulator().accessKeySecret });
    onTestFinished(() => other.close());
    const { credential: fresh } = await other.refresh(clientId); // another registrar rotates it; our store is stale
    const refreshed = once(conn, 'credential-refreshed');
    const back = once(conn, 'online');
    expect(emulator().disconnect(clientId)).toBe(true);
    await Promise.all([refreshed, back]);
    expect(conn.credential.deviceAccessKeyId).toBe(fresh.deviceAccessKeyId);
    expect(delays).toHaveLength(1);
    expect(delays[0]).toBeLessThan(1_000);
  });

  it('UnRegister, then a forced disconnect: CredentialRejected, at most 3 attempts and 5 CONNECTs, no storm', async () => {
    const p = registrar();
    const clientId = 'GID_res@@@unreg-1';
    await p.ensureCredential(clientId);
    const conn = await open(connectDevice({ credential: p.credentialSource(clientId), brokerUrl: emulator().mqttUrl, reconnect: { minDelayMs: 10, maxDelayMs: 100 } }));
    let attempts = 0;
    conn.on('reconnecting', () => (attempts += 1));
    const before = Object.values(emulator().stats().mqtt.connacks).reduce((a, b) => a + b, 0);
    await p.unregister(clientId);
    const closed = new Promise<{ error?: ApsaraMqDeviceError }>((resolve) => conn.once('closed', resolve));
    emulator().disconnect(clientId);
    const { error } = await closed;
    expect(error).toMatchObject({ code: 'CredentialRejected' });
    const connects = Object.values(emulator().stats().mqtt.connacks).reduce((a, b) => a + b, 0) - before;
    expect(attempts).toBeLessThanOrEqual(3);
    expect(connects).toBeLessThanOrEqual(5);
    // And nothing more happens afterwards.
    await new Promise((r) => setTimeout(r, 300));
    expect(Object.values(emulator().stats().mqtt.connacks).reduce((a, b) => a + b, 0) - before).toBe(connects);
  });
});

describe('broker restarts', () => {
  it('100 devices publishing QoS 1 with clean: false lose nothing across a restart', async () => {
    const e = emulator();
    const subscriberCredential = await registerDevice(e, 'GID_res@@@sink');
    const sink = await open(connectDevice({ credential: subscriberCredential, brokerUrl: e.mqttUrl, clean: false, reconnect: { minDelayMs: 50, maxDelayMs: 500 } }));
    const received = new Set<string>();
    sink.on('message', (_topic, payload) => received.add(payload.toString()));
    await sink.subscribe('res/+/data', { qos: 1 });

    const devices = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const credential = await registerDevice(e, `GID_res@@@dev-${i}`);
        return open(connectDevice({ credential, brokerUrl: e.mqttUrl, clean: false, reconnect: { minDelayMs: 50, maxDelayMs: 500 } }));
      }),
    );
    const sent: string[] = [];
    const acks: Promise<void>[] = [];
    const publishRound = (round: string): void => {
      devices.forEach((d, i) => {
        const id = `${round}-${i}`;
        sent.push(id);
        acks.push(d.publish(`res/${i}/data`, id, { qos: 1 }));
      });
    };
    publishRound('before');
    await Promise.all(acks.splice(0));

    const restarting = e.restart();
    await until(() => devices.every((d) => !d.online), 'every device to notice the outage');
    publishRound('outage'); // queued by the clients while the broker is down
    await restarting;
    await Promise.all(acks.splice(0)); // each resolves on its PUBACK after the reconnect
    await until(() => sent.every((id) => received.has(id)), 'every message to reach the subscriber');
    expect(sent.filter((id) => !received.has(id))).toEqual([]);
  });

  it('1,000 devices reconnecting after a restart are jittered: no 100 ms window holds more than 25%', async () => {
    const e = emulator();
    const credentials = await Promise.all(Array.from({ length: 1000 }, (_, i) => registerDevice(e, `GID_res@@@fleet-${i}`)));
    const devices: DeviceConnection[] = [];
    for (let i = 0; i < credentials.length; i += 100) {
      devices.push(...(await Promise.all(credentials.slice(i, i + 100).map((credential) => open(connectDevice({ credential, brokerUrl: e.mqttUrl }))))));
    }
    const reconnectedAt: number[] = [];
    let restartedAt = 0;
    for (const d of devices) d.once('online', () => reconnectedAt.push(Date.now() - restartedAt));
    restartedAt = Date.now();
    await e.restart();
    await until(() => reconnectedAt.length === devices.length, 'all 1,000 devices to reconnect', 1500);
    const windows = new Map<number, number>();
    for (const t of reconnectedAt) windows.set(Math.floor(t / 100), (windows.get(Math.floor(t / 100)) ?? 0) + 1);
    const busiest = Math.max(...windows.values());
    expect(busiest / devices.length).toBeLessThanOrEqual(0.25);
  }, 120_000);
});

describe('kick on revoke', () => {
  const kicking = useEmulator({ kickOnRevoke: true }, 'test');

  it('a Refresh with kickOnRevoke drops the live session, and the device heals onto the new credential', async () => {
    const e = kicking();
    const p = new Provisioner({ endpoint: e.apiEndpoint, instanceId: e.instanceId, accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret });
    onTestFinished(() => p.close());
    const clientId = 'GID_res@@@kick-1';
    await p.ensureCredential(clientId);
    const conn = await open(connectDevice({ credential: p.credentialSource(clientId), brokerUrl: e.mqttUrl, reconnect: { minDelayMs: 10, maxDelayMs: 100 } }));
    const offline = once(conn, 'offline');
    await callApi(e, 'RefreshDeviceCredential', { ClientId: clientId, InstanceId: e.instanceId });
    await offline;
    await once(conn, 'online');
    const { credential } = await p.get(clientId);
    expect(conn.credential.deviceAccessKeyId).toBe(credential.deviceAccessKeyId);
  });
});
