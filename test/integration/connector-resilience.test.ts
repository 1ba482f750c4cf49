/**
 * The connector keeps a device online through what the service can do to it. The emulator's controls (disconnect,
 * restart, revoke) play the service; every client is a real mqtt.js session. Every wait for something to happen is
 * on an event set up before the action that causes it: nothing polls. The one timer paces a scenario (a restart
 * every 2 s); it never waits for a result.
 */
import { once } from 'node:events';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import { type ApsaraMqDeviceError, PublishError } from '../../src/errors.js';
import { Provisioner } from '../../src/provisioner/provisioner.js';
import { callApi, registerDevice, useEmulator } from '../helpers/emulator.js';

// oversizedMessages: 'disconnect': the tests of messages the broker refuses need a broker that refuses them (the
// emulator's default discards them, as the service says it does). No account QPS limit: 1,000 Registers as fast as
// pop-core sends them exceed 500 in a second, and these tests are about the device, not the OpenAPI's limit. Offline
// messages at once: "lose nothing across a restart" checks what arrives, not the cloud's pace (5-10 s, then 30 every 5 s).
const emulator = useEmulator({ parentTopics: ['res'], oversizedMessages: 'disconnect', qpsLimit: Number.POSITIVE_INFINITY, offlineDelivery: 'immediate' }, 'test');

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

function connectCount(): number {
  return Object.values(emulator().stats().mqtt.connacks).reduce((a, b) => a + b, 0);
}

/** The `closed` event's payload. Not events.once: it rejects on the 'error' event that comes first. */
function closedOf(conn: DeviceConnection): Promise<{ error?: ApsaraMqDeviceError }> {
  return new Promise((resolve) => conn.once('closed', resolve));
}

/** Resolves when `conn` has emitted `online` `count` more times. */
function onlineTimes(conn: DeviceConnection, count: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const listener = (): void => {
      seen += 1;
      if (seen < count) return;
      conn.off('online', listener);
      resolve();
    };
    conn.on('online', listener);
  });
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
    const { credential: fresh } = await registrar().refresh(clientId); // another registrar rotates it; our store is stale
    const refreshed = once(conn, 'credential-refreshed');
    const back = once(conn, 'online');
    expect(emulator().disconnect(clientId)).toBe(true);
    await Promise.all([refreshed, back]);
    expect(conn.credential.deviceAccessKeyId).toBe(fresh.deviceAccessKeyId);
    expect(delays).toHaveLength(1);
    expect(delays[0]).toBeLessThan(1_000);
  });

  it('UnRegister, then a forced disconnect: CredentialRejected after at most 3 re-fetches and 4 CONNECTs', async () => {
    const p = registrar();
    const clientId = 'GID_res@@@unreg-1';
    await p.ensureCredential(clientId);
    const conn = await open(connectDevice({ credential: p.credentialSource(clientId), brokerUrl: emulator().mqttUrl, reconnect: { minDelayMs: 10, maxDelayMs: 100 } }));
    let refetches = 0;
    conn.on('auth-failed', () => (refetches += 1));
    const before = connectCount();
    await p.unregister(clientId);
    const closed = closedOf(conn);
    emulator().disconnect(clientId);
    const { error } = await closed;
    expect(error).toMatchObject({ code: 'CredentialRejected' });
    expect(refetches).toBeLessThanOrEqual(4);
    expect(connectCount() - before).toBeLessThanOrEqual(4);
    // That nothing happens after 'closed' is the state machine's own test (connector-state.test.ts).
    expect(conn.state).toBe('closed');
  });
});

describe('broker restarts', () => {
  it('eight restarts in a row, one every 2 s: the connection never gives up and is online at the end', async () => {
    const e = emulator();
    const credential = await registerDevice(e, 'GID_res@@@restart-1');
    // The defaults, but for shorter delays so that the test does not take minutes.
    const conn = await open(connectDevice({ credential, brokerUrl: e.mqttUrl, reconnect: { minDelayMs: 200, maxDelayMs: 2_000 }, takeover: { minDelayMs: 400, maxDelayMs: 1_600 } }));
    const takeovers: { confirmed: boolean }[] = [];
    conn.on('takeover', (t) => takeovers.push(t));
    let closed: { error?: ApsaraMqDeviceError } | undefined;
    conn.on('closed', (info) => (closed = info));
    conn.on('error', () => {});
    for (let i = 0; i < 8; i++) {
      const restarted = e.restart();
      // 2 s apart, measured from the restart: the connection is sometimes online, sometimes still backing off.
      await Promise.all([restarted, new Promise((r) => setTimeout(r, 2_000))]);
    }
    if (!conn.online) await once(conn, 'online');
    expect(closed).toBeUndefined();
    expect(conn.state).toBe('online');
    // MQTT 3.1.1 cannot tell a quick restart from a takeover; at most suspected, never confirmed.
    expect(takeovers.every((t) => !t.confirmed)).toBe(true);
    await conn.publish('res/after', 'still here', { qos: 1 });
  }, 60_000);

  it('100 devices publishing QoS 1 with clean: false lose nothing across a restart', async () => {
    const e = emulator();
    const subscriberCredential = await registerDevice(e, 'GID_res@@@sink');
    const sink = await open(connectDevice({ credential: subscriberCredential, brokerUrl: e.mqttUrl, clean: false, reconnect: { minDelayMs: 50, maxDelayMs: 500 } }));
    const received = new Set<string>();
    let expected = new Set<string>();
    let allReceived: () => void = () => {};
    const everything = new Promise<void>((resolve) => (allReceived = resolve));
    sink.on('message', (_topic, payload) => {
      received.add(payload.toString());
      if (expected.size > 0 && [...expected].every((id) => received.has(id))) allReceived();
    });
    await sink.subscribe('res/+/data', { qos: 1 });

    const devices = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const credential = await registerDevice(e, `GID_res@@@dev-${i}`);
        return open(connectDevice({ credential, brokerUrl: e.mqttUrl, clean: false, reconnect: { minDelayMs: 50, maxDelayMs: 500 } }));
      }),
    );
    const sent: string[] = [];
    const publish = (d: DeviceConnection, i: number, round: string): Promise<void> => {
      const id = `${round}-${i}`;
      sent.push(id);
      return d.publish(`res/${i}/data`, id, { qos: 1 });
    };
    await Promise.all(devices.map((d, i) => publish(d, i, 'before')));

    // Each device publishes the moment it learns the broker is gone: the message waits in its outbox (the connector
    // cannot send it) and must go out after the reconnect. Set up before the restart, so no moment is missed.
    const outage = devices.map(
      (d, i) =>
        new Promise<void>((resolve, reject) => {
          d.once('offline', () => publish(d, i, 'outage').then(resolve, reject));
        }),
    );
    await e.restart();
    await Promise.all(outage); // each resolves on its PUBACK after the reconnect
    expected = new Set(sent);
    if (![...expected].every((id) => received.has(id))) await everything;
    expect(sent.filter((id) => !received.has(id))).toEqual([]);
    expect(sent).toHaveLength(200);
  }, 60_000);

  it('1,000 devices reconnecting after a restart are jittered: no 100 ms window holds more than 25%', async () => {
    const e = emulator();
    const devices: DeviceConnection[] = [];
    // In batches of 100: 1,000 parallel Registers through pop-core can exceed its 3 s read timeout on a busy machine.
    for (let i = 0; i < 1000; i += 100) {
      const batch = Array.from({ length: 100 }, (_, j) => `GID_res@@@fleet-${i + j}`);
      devices.push(...(await Promise.all(batch.map(async (clientId) => open(connectDevice({ credential: await registerDevice(e, clientId), brokerUrl: e.mqttUrl }))))));
    }
    const reconnectedAt: number[] = [];
    let restartedAt = 0;
    const all = Promise.all(devices.map((d) => once(d, 'online').then(() => reconnectedAt.push(Date.now() - restartedAt))));
    restartedAt = Date.now();
    await e.restart();
    await all;
    const windows = new Map<number, number>();
    for (const t of reconnectedAt) windows.set(Math.floor(t / 100), (windows.get(Math.floor(t / 100)) ?? 0) + 1);
    const busiest = Math.max(...windows.values());
    expect(busiest / devices.length).toBeLessThanOrEqual(0.25);
  }, 120_000);
});

describe('messages the broker refuses', () => {
  it('a QoS 1 message over 64 KB (brokerIsApsaraMq: false lets it out) settles with PublishRejected after 3 sends, and the device comes back online', async () => {
    const e = emulator();
    const credential = await registerDevice(e, 'GID_res@@@big-1');
    const conn = await open(connectDevice({ credential, brokerUrl: e.mqttUrl, brokerIsApsaraMq: false, reconnect: { minDelayMs: 10, maxDelayMs: 100 } }));
    const before = connectCount();
    const innocent = conn.publish('res/ok-1', 'fine', { qos: 1 });
    const big = conn.publish('res/big', Buffer.alloc(70 * 1024), { qos: 1 }).catch((err: unknown) => err);
    const innocentToo = conn.publish('res/ok-2', 'fine', { qos: 1 });
    const error = await big;
    expect(error).toBeInstanceOf(PublishError);
    expect(error).toMatchObject({ code: 'PublishRejected', topic: 'res/big', retryable: false });
    expect((error as Error).message).toContain('each of the 3 times the message to res/big was sent');
    // The neighbours sent in the same burst were not blamed: they went through, one at a time.
    await expect(Promise.all([innocent, innocentToo])).resolves.toEqual([undefined, undefined]);
    if (!conn.online) await once(conn, 'online');
    await conn.publish('res/after', 'x', { qos: 1 });
    // Three sessions carried the big message, then one more for the rest: no reconnect storm.
    expect(connectCount() - before).toBeLessThanOrEqual(4);
  });

  it('the emulator refusing a publish to $SYS/… (it closes the session): PublishRejected, not an endless loop', async () => {
    const e = emulator();
    const credential = await registerDevice(e, 'GID_res@@@sys-1');
    const conn = await open(connectDevice({ credential, brokerUrl: e.mqttUrl, reconnect: { minDelayMs: 10, maxDelayMs: 100 } }));
    const takeovers: unknown[] = [];
    conn.on('takeover', (t) => takeovers.push(t));
    await expect(conn.publish('$SYS/x', 'x', { qos: 1 })).rejects.toMatchObject({ code: 'PublishRejected' });
    expect(takeovers).toEqual([]); // a session closed with a message in flight is blamed on the message
  });
});

describe('a broker with a smaller payload limit', () => {
  // A broker that disconnects on an oversized message (the emulator's oversizedMessages option): what the connector does about it.
  const small = useEmulator({ maxPayloadBytes: 1024, oversizedMessages: 'disconnect' }, 'test');

  it("maxDeliveryAttempts bounds the sends: a message over the broker's own limit fails after 1 send with maxDeliveryAttempts: 1", async () => {
    const e = small();
    const credential = await registerDevice(e, 'GID_res@@@small-1');
    const conn = await open(connectDevice({ credential, brokerUrl: e.mqttUrl, maxDeliveryAttempts: 1, reconnect: { minDelayMs: 10, maxDelayMs: 100 } }));
    const error = await conn.publish('res/two-kb', Buffer.alloc(2048), { qos: 1 }).catch((err: unknown) => err);
    expect(error).toMatchObject({ code: 'PublishRejected' });
    expect((error as Error).message).toContain('right after the message to res/two-kb was sent');
    expect(Object.values(e.stats().mqtt.connacks).reduce((a, b) => a + b, 0)).toBe(1); // one send, one session
  });
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
    const healed = onlineTimes(conn, 1);
    await callApi(e, 'RefreshDeviceCredential', { ClientId: clientId, InstanceId: e.instanceId });
    await offline;
    await healed;
    const { credential } = await p.get(clientId);
    expect(conn.credential.deviceAccessKeyId).toBe(credential.deviceAccessKeyId);
  });
});
