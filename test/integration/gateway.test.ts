/**
 * The library gateway against the emulator (port 0) with real mqtt.js connections and a real outbox in a temporary
 * directory: the connector's gate, the pace of CONNECTs as the broker sees them (at start and after a broker
 * restart), adding and removing devices while running, one event stream, close with a deadline, metrics.
 *
 * The pace is asserted as a lower bound on the broker's span of CONNECTs: the pacer never lets CONNECT k go before
 * slot k, so a loaded machine can only make the span longer; the bound keeps a margin for the first CONNECT's own
 * latency. Without pacing, the same devices connect in a few milliseconds.
 */
import { EventEmitter, once } from 'node:events';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection, openConnection } from '../../src/connector/connect.js';
import { DeviceCredential } from '../../src/credential.js';
import { ValidationError } from '../../src/errors.js';
import { Gateway, type GatewayOptions } from '../../src/gateway/gateway.js';
import { storeCredentials } from '../../src/gateway/credentials.js';
import { openOutboxStore, type OutboxStore } from '../../src/outbox/index.js';
import { MemoryCredentialStore, Provisioner } from '../../src/registrar.js';
import { tempDir } from '../helpers/cli.js';
import { registerDevice, useEmulator } from '../helpers/emulator.js';
import { closedPort } from '../helpers/http.js';

const emulator = useEmulator({}, 'test');
const FAST = { minDelayMs: 20, maxDelayMs: 100 };

async function outbox(dir?: string): Promise<OutboxStore & { path: string }> {
  const path = dir ?? (await tempDir('gateway-outbox-'));
  const store = await openOutboxStore({ dir: path });
  onTestFinished(() => store.close());
  return Object.assign(store, { path });
}

/** Registered devices of the test, and a credentials function over them. */
async function devices(group: string, count: number): Promise<{ ids: string[]; credentials: (clientId: string) => Promise<() => Promise<DeviceCredential>> }> {
  const e = emulator();
  const ids = Array.from({ length: count }, (_, i) => `GID_${group}@@@dev-${i}`);
  const held = new Map<string, DeviceCredential>();
  for (const id of ids) held.set(id, await registerDevice(e, id));
  return {
    ids,
    credentials: async (clientId) => {
      const credential = held.get(clientId) ?? (await registerDevice(e, clientId));
      held.set(clientId, credential);
      return async () => credential;
    },
  };
}

function gateway(options: Omit<GatewayOptions, 'connect'> & { connect?: GatewayOptions['connect'] }): Gateway {
  const g = new Gateway({ ...options, connect: { brokerUrl: emulator().mqttUrl, reconnect: FAST, endTimeoutMs: 2000, ...options.connect } });
  onTestFinished(() => g.close({ deadlineMs: 0 }));
  return g;
}

/** Resolves once `n` devices of the gateway are online (by its events). */
function online(g: Gateway, n: number): Promise<void> {
  return new Promise((resolve) => {
    const check = (): void => {
      if (g.counts.states.online >= n) {
        g.off('device', check);
        resolve();
      }
    };
    g.on('device', check);
    check();
  });
}

/** The broker's CONNECT times (ms) of the ClientIds starting with `prefix`, from now on. */
function brokerConnects(prefix: string): { times: number[]; ids: string[] } {
  const seen = { times: [] as number[], ids: [] as string[] };
  const listener = (clientId: string): void => {
    if (!clientId.startsWith(prefix)) return;
    seen.times.push(performance.now());
    seen.ids.push(clientId);
  };
  const { events } = emulator();
  events.on('clientConnected', listener);
  onTestFinished(() => void events.off('clientConnected', listener));
  return seen;
}

describe('the connector awaits its connectGate before each CONNECT', () => {
  it('first CONNECT and reconnects alike; a gate that throws is reported and the CONNECT goes ahead', async () => {
    const e = emulator();
    const credential = await registerDevice(e, 'GID_gate@@@dev-1');
    const calls: { reconnect: boolean }[] = [];
    const gateCalled = new EventEmitter();
    let release: () => void = () => undefined;
    let failNext = false;
    const connects = brokerConnects('GID_gate@@@');
    const firstAtGate = once(gateCalled, 'call');
    const connecting = connectDevice({
      credential,
      brokerUrl: e.mqttUrl,
      reconnect: FAST,
      connectGate: ({ reconnect, signal }) => {
        expect(signal).toBeInstanceOf(AbortSignal);
        calls.push({ reconnect });
        gateCalled.emit('call');
        if (failNext) throw new Error('the gate broke');
        return new Promise<void>((resolve) => (release = resolve));
      },
    });
    onTestFinished(async () => (await connecting.catch(() => undefined))?.end(true));
    // Held at the gate: the broker has seen nothing yet; once released, it sees the CONNECT.
    await firstAtGate;
    expect(calls).toEqual([{ reconnect: false }]);
    expect(connects.ids).toEqual([]);
    release();
    const conn = await connecting;
    expect(connects.ids).toEqual(['GID_gate@@@dev-1']);
    // A lost session: the reconnect waits at the gate too.
    const atGate = once(gateCalled, 'call');
    e.disconnect('GID_gate@@@dev-1');
    await atGate;
    expect(calls[1]).toEqual({ reconnect: true });
    expect(conn.state).toBe('connecting');
    expect(connects.ids).toHaveLength(1);
    failNext = true;
    release();
    await new Promise((resolve) => conn.once('online', resolve));
    expect(connects.ids).toHaveLength(2);
    // The next loss: the gate throws, the connection says so and connects anyway.
    const errors: string[] = [];
    conn.on('error', (error) => errors.push(error.message));
    e.disconnect('GID_gate@@@dev-1');
    await new Promise((resolve) => conn.once('online', resolve));
    expect(errors.some((m) => m.includes('the gate broke'))).toBe(true);
    expect(connects.ids).toHaveLength(3);
    await expect(connectDevice({ credential, brokerUrl: e.mqttUrl, connectGate: 'no' as never })).rejects.toMatchObject({ code: 'InvalidOption', message: expect.stringContaining('connectGate') });
  });

  it("a CONNECT waiting at the gate: the gate's signal is aborted when the connection ends, and connectDevice rejects", async () => {
    const e = emulator();
    const credential = await registerDevice(e, 'GID_gate@@@dev-2');
    const connects = brokerConnects('GID_gate@@@dev-2');
    const gateCalled = new EventEmitter();
    let gateSignal: AbortSignal | undefined;
    const started: DeviceConnection[] = [];
    const connecting = openConnection(
      {
        credential,
        brokerUrl: e.mqttUrl,
        connectGate: ({ signal }) => {
          gateSignal = signal;
          gateCalled.emit('call');
          return new Promise<void>(() => undefined); // never lets it through
        },
      },
      { started: (connection) => started.push(connection) },
    );
    const failed = connecting.then(
      () => 'connected',
      (error: { code?: string }) => error.code,
    );
    await once(gateCalled, 'call');
    expect(started).toHaveLength(1);
    expect(gateSignal?.aborted).toBe(false);
    await started[0]?.end(true);
    expect(gateSignal?.aborted).toBe(true);
    expect(await failed).toMatch(/ConnectionClosed|Aborted/);
    expect(connects.ids).toEqual([]);
  });
});

describe('Gateway', () => {
  it('a device removed, or the gateway closed, before its connect slot: it stops at once and its CONNECT never goes out', async () => {
    const { ids, credentials } = await devices('wait', 3);
    const [a, b, c] = ids as [string, string, string];
    const connects = brokerConnects('GID_wait@@@');
    const box = await outbox();
    // One CONNECT a second: b's slot is a second after a's, c's two.
    const g = gateway({ outbox: box, credentials, connectRate: 1 });
    for (const id of ids) g.add(id);
    g.start();
    await online(g, 1);
    await g.remove(c);
    expect(g.state(c)).toBeUndefined();
    await online(g, 2);
    // c gave its place back: nothing waits after b's slot (c's ticket would still wait for its own).
    expect(g.counts.waitingToConnect).toBe(0);
    expect(connects.ids).toEqual([a, b]);
    // Back in, at the end of the queue; the gateway closes before its slot.
    g.add(c);
    await g.close({ deadlineMs: 5_000 });
    expect(g.counts.waitingToConnect).toBe(0);
    expect(g.counts.states).toMatchObject({ online: 0, connecting: 0 });
    expect(connects.ids).toEqual([a, b]);
  });

  it('start() again once the devices are online (and after one is added) opens no second session of any device', async () => {
    const { ids, credentials } = await devices('again', 3);
    const connects = brokerConnects('GID_again@@@');
    const g = gateway({ outbox: await outbox(), credentials });
    for (const id of ids.slice(0, 2)) g.add(id);
    g.start();
    await online(g, 2);
    g.start();
    g.add(ids[2] as string);
    g.start();
    await online(g, 3);
    // A publish through each device: every one is served by its one session.
    const delivered = new Set<string>();
    const all = new Promise<void>((resolve) => g.on('delivered', (d) => delivered.add(d.clientId).size === ids.length && resolve()));
    for (const id of ids) await g.publish(id, 'demo/again', 'x');
    await all;
    expect([...connects.ids].sort()).toEqual([...ids].sort());
  });

  it("a device removed, or the gateway closed, while its credential source is first asked: the ask is aborted and both end", async () => {
    const box = await outbox();
    const asked = new EventEmitter();
    const aborted: string[] = [];
    // A source that answers only its signal (an OpenAPI call that hangs): nothing but the signal can end the ask.
    const hanging = (clientId: string) => (request: { signal?: AbortSignal }) =>
      new Promise<DeviceCredential>((_, reject) => {
        asked.emit('ask', clientId);
        request.signal?.addEventListener('abort', () => {
          aborted.push(clientId);
          reject(request.signal?.reason);
        });
      });
    const g = gateway({ outbox: box, credentials: (clientId) => hanging(clientId) });
    const ids = ['GID_ask@@@a', 'GID_ask@@@b'];
    const bothAsked = new Promise<void>((resolve) => {
      const seen = new Set<string>();
      asked.on('ask', (clientId: string) => seen.add(clientId).size === ids.length && resolve());
    });
    for (const id of ids) g.add(id);
    g.start();
    await bothAsked;
    await g.remove('GID_ask@@@a');
    expect(aborted).toEqual(['GID_ask@@@a']);
    await g.close();
    expect(aborted.sort()).toEqual(ids);
    expect(g.counts.states).toEqual({ connecting: 0, online: 0, 'backing-off': 0, failed: 0 });
  });

  it('a device removed and added again as its source answers: the old connection never reaches the gate of the new one', async () => {
    const e = emulator();
    const id = 'GID_readd@@@a';
    const credential = await registerDevice(e, id);
    let reads = 0;
    let failRead!: () => void;
    const readFails = new Promise<void>((resolve) => (failRead = resolve));
    const g: Gateway = gateway({
      outbox: await outbox(),
      credentials: async () => {
        reads += 1;
        if (reads === 1) {
          // A source that answers at once (a plain function; it may return the credential itself).
          return (() => {
            // Right after this answer, before the old connection's first CONNECT: out and in again.
            void Promise.resolve().then(() => {
              void g.remove(id);
              g.add(id);
            });
            return credential;
          }) as unknown as () => Promise<DeviceCredential>;
        }
        // The new slot's credential read fails for good: it never sent a CONNECT, so none is counted.
        await readFails;
        throw new ValidationError('InvalidOption', 'no credential for the device added again');
      },
    });
    const connects: string[] = [];
    g.on('connect', ({ outcome }) => connects.push(outcome));
    const failed = new Promise<string | undefined>((resolve) => g.on('device', ({ state, error }) => state === 'failed' && resolve(error?.code)));
    g.add(id);
    g.start();
    await new Promise<void>((resolve) => g.on('device', ({ state }) => state === 'closed' && resolve()));
    failRead();
    expect(await failed).toBe('InvalidOption');
    expect(connects).toEqual([]);
    expect(g.counts.connects).toEqual({ accepted: 0, refused: 0, failed: 0 });
  });

  it('connects its devices at the pace as the broker sees them, at start and after a broker restart, and counts them', async () => {
    const n = 25;
    const rate = 20;
    const { ids, credentials } = await devices('pace', n);
    const connects = brokerConnects('GID_pace@@@');
    const g = gateway({ outbox: await outbox(), credentials, connectRate: rate });
    for (const id of ids) g.add(id);
    const states: string[] = [];
    g.on('device', ({ clientId, state }) => clientId === ids[0] && states.push(state));
    g.start();
    await online(g, n);
    const span = (times: number[]): number => (times.at(-1) ?? 0) - (times[0] ?? 0);
    // n CONNECTs at `rate` per second take (n - 1) / rate seconds at least: 1,200 ms here; 1,000 ms leaves the first
    // CONNECT's latency as margin. Unpaced, they all land within a few ms.
    expect(connects.times).toHaveLength(n);
    expect(span(connects.times)).toBeGreaterThanOrEqual(1000);
    expect(new Set(connects.ids)).toEqual(new Set(ids));
    expect(g.counts).toMatchObject({ devices: n, states: { online: n, connecting: 0, 'backing-off': 0, failed: 0 }, connects: { accepted: n, refused: 0, failed: 0 }, reconnects: { accepted: 0 } });
    expect(states).toEqual(['online']);

    // The broker restarts: every device loses its session and comes back through the same pacer.
    connects.times.length = 0;
    connects.ids.length = 0;
    await emulator().restart({ downMs: 200 });
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (g.counts.reconnects.accepted >= n) {
          g.off('connect', check);
          resolve();
        }
      };
      g.on('connect', check);
    });
    expect(connects.times).toHaveLength(n);
    expect(span(connects.times)).toBeGreaterThanOrEqual(1000);
    expect(g.counts.states.online).toBe(n);
    expect(states.slice(0, 2)).toEqual(['online', 'backing-off']);
    expect(states.at(-1)).toBe('online');
  });

  it('adds and removes devices while running without touching the others; remove can UnRegister; one event stream', async () => {
    const e = emulator();
    const store = new MemoryCredentialStore();
    let registrars = 0;
    const credentials = storeCredentials({
      instanceId: e.instanceId,
      store,
      registrar: () => {
        registrars += 1;
        return new Provisioner({ instanceId: e.instanceId, endpoint: e.apiEndpoint, accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret, store, qps: 5 });
      },
    });
    const box = await outbox();
    const g = gateway({ outbox: box, credentials, connectRate: 200 });
    const ids = ['GID_live@@@a', 'GID_live@@@b', 'GID_live@@@c'];
    for (const id of ids) g.add(id);
    g.start();
    await online(g, 3);
    expect(registrars).toBe(1); // made once, on the first device that needed it

    const events: string[] = [];
    const connected: string[] = [];
    const disconnected: string[] = [];
    e.events.on('clientConnected', (id) => connected.push(id));
    e.events.on('clientDisconnected', (id) => disconnected.push(id));
    g.add('GID_live@@@d');
    await online(g, 4);
    await g.remove('GID_live@@@b', { unregister: true });
    expect(g.clientIds.sort()).toEqual(['GID_live@@@a', 'GID_live@@@c', 'GID_live@@@d']);
    expect(connected).toEqual(['GID_live@@@d']);
    expect(disconnected).toEqual(['GID_live@@@b']);
    expect(g.state('GID_live@@@b')).toBeUndefined();
    expect(await store.load(e.instanceId, 'GID_live@@@b')).toBeUndefined(); // UnRegistered (the provisioner removes it from the store)
    await expect(g.remove('GID_live@@@b')).rejects.toMatchObject({ code: 'UnknownDevice' });
    expect(() => g.add('GID_live@@@a')).toThrow(expect.objectContaining({ code: 'InvalidClientId' }));
    await expect(g.publish('GID_live@@@b', 'demo/live/t', 'x')).rejects.toMatchObject({ code: 'UnknownDevice' });

    // Messages in, with their ClientId; publishes through the outbox reported delivered.
    g.on('message', ({ clientId, topic, payload }) => events.push(`message ${clientId} ${topic} ${payload.toString()}`));
    g.on('delivered', ({ clientId, id }) => events.push(`delivered ${clientId} ${id}`));
    await (g.connection('GID_live@@@a') as DeviceConnection).subscribe('demo/live/#', { qos: 1 });
    const delivered = once(g, 'delivered');
    const accepted = await g.publish('GID_live@@@c', 'demo/live/hello', 'hi', { id: 'm-1' });
    expect(accepted).toMatchObject({ clientId: 'GID_live@@@c', id: 'm-1', durable: true });
    await delivered;
    await new Promise<void>((resolve) => g.once('message', () => setImmediate(resolve)));
    expect(events.sort()).toEqual(['delivered GID_live@@@c m-1', 'message GID_live@@@a demo/live/hello hi']);
    expect(g.counts).toMatchObject({ devices: 3, accepted: 1, delivered: 1 });
    await box.flush(); // a delivery is reported before its removal from the store is written
    expect(g.device('GID_live@@@c')).toMatchObject({ clientId: 'GID_live@@@c', state: 'online', outbox: { messages: 0 } });
  });

  it('close() lets online devices drain what waits; close({ deadlineMs }) keeps the rest on disk, and a new gateway on the outbox delivers it', async () => {
    const { ids, credentials } = await devices('keep', 2);
    const box = await outbox();
    const g = gateway({ outbox: box, credentials });
    for (const id of ids) g.add(id);
    g.start();
    await online(g, 2);
    for (let i = 0; i < 6; i++) await g.publish(ids[i % 2] as string, 'demo/keep', `d${i}`);
    await g.close();
    await box.flush();
    expect(g.counts).toMatchObject({ accepted: 6, delivered: 6, outbox: { messages: 0 } });

    // A broker nothing answers for: handed over, kept, not delivered by the deadline.
    const down = gateway({ outbox: box, credentials, connect: { brokerUrl: `mqtt://127.0.0.1:${await closedPort()}`, reconnect: FAST } });
    for (const id of ids) down.add(id);
    down.start();
    for (let i = 0; i < 5; i++) await down.publish(ids[i % 2] as string, 'demo/keep', `m${i}`, { id: `k${i}` });
    await down.close({ deadlineMs: 100 });
    expect(down.counts.states).toEqual({ connecting: 0, online: 0, 'backing-off': 0, failed: 0 });
    expect(() => down.add('GID_keep@@@new')).toThrow(expect.objectContaining({ code: 'GatewayClosed' }));
    expect(box.stats().messages).toBe(5);
    await box.close();

    const again = await outbox(box.path);
    const delivered: string[] = [];
    const g2 = gateway({ outbox: again, credentials });
    for (const id of ids) g2.add(id);
    const all = new Promise<void>((resolve) =>
      g2.on('delivered', ({ id }) => {
        delivered.push(id ?? '?');
        if (delivered.length === 5) resolve();
      }),
    );
    g2.start();
    await all;
    expect(delivered.sort()).toEqual(['k0', 'k1', 'k2', 'k3', 'k4']);
  });

  it('a device the broker refuses for good is failed, its messages kept; bad options are refused before anything starts', async () => {
    const e = emulator();
    const box = await outbox();
    const credential = await registerDevice(e, 'GID_bad@@@dev-1');
    const wrong = new DeviceCredential({ clientId: credential.clientId, instanceId: credential.instanceId, deviceAccessKeyId: credential.deviceAccessKeyId, deviceAccessKeySecret: 'wrong' });
    const g = gateway({ outbox: box, credentials: () => async () => wrong });
    g.add('GID_bad@@@dev-1');
    const failed = new Promise<{ code: string | undefined }>((resolve) => g.on('device', ({ state, error }) => state === 'failed' && resolve({ code: error?.code })));
    g.start();
    expect(await failed).toEqual({ code: 'CredentialRejected' });
    expect(g.counts.connects.refused).toBe(1);
    await g.publish('GID_bad@@@dev-1', 'demo/bad', 'kept');
    expect(g.device('GID_bad@@@dev-1')?.outbox.messages).toBe(1);
    expect(() => new Gateway({ outbox: box, credentials: () => async () => credential, connect: {}, connectRate: 0 })).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
    expect(() => new Gateway({ outbox: box, credentials: undefined as never, connect: {} })).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
    const noRegistrar = gateway({ outbox: box, credentials: () => async () => credential });
    noRegistrar.add('GID_bad@@@dev-2');
    await expect(noRegistrar.remove('GID_bad@@@dev-2', { unregister: true })).rejects.toMatchObject({ code: 'InvalidOption' });
    // A deadline past the timers' range (it would fire at once and force every end), or negative: refused, nothing closed.
    for (const deadlineMs of [3e9, -1, Number.NaN]) await expect(g.close({ deadlineMs })).rejects.toMatchObject({ code: 'InvalidOption' });
    expect(() => g.add('GID_bad@@@dev-3')).not.toThrow();
  });

  it('a device given no credential source fails with InvalidOption, also after another device resolved the shared options', async () => {
    const { ids, credentials } = await devices('nosource', 1);
    const [good] = ids as [string];
    const g = gateway({ outbox: await outbox(), credentials: (clientId) => (clientId === good ? credentials(clientId) : (undefined as never)) });
    g.add(good);
    g.start();
    await online(g, 1);
    const failed = new Promise<{ code: string | undefined; retryable: boolean | undefined }>((resolve) =>
      g.on('device', ({ state, error }) => state === 'failed' && resolve({ code: error?.code, retryable: error?.retryable })),
    );
    g.add('GID_nosource@@@none');
    expect(await failed).toEqual({ code: 'InvalidOption', retryable: false });
    expect(g.state(good)).toBe('online');
  });
});
