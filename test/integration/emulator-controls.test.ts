import type { MqttClient } from 'mqtt';
import { describe, expect, it, vi } from 'vitest';
import type { MqttCredentials } from '../../src/signer/mqtt.js';
import { signDeviceCredential, signSignature } from '../../src/signer/mqtt.js';
import type { Emulator } from '../../src/emulator/index.js';
import { apiFailure, callApi, connackCode, connectMqtt, connectWithInbox, registerDevice, useEmulator } from '../helpers/emulator.js';

/** A registered device's MQTT credentials. */
async function device(e: Emulator, clientId: string): Promise<MqttCredentials> {
  return signDeviceCredential(await registerDevice(e, clientId));
}

/** Signature-mode (account key) credentials for any ClientId of the instance. */
function accountLogin(e: Emulator, clientId: string): MqttCredentials {
  return signSignature({ accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret, instanceId: e.instanceId, clientId });
}

/** Resolves when the client's connection has closed. */
function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.once('close', () => resolve()));
}

async function postJson(e: Emulator, path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(new URL(path, e.apiEndpoint), {
    method: 'POST',
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

describe('controls: disconnect', () => {
  const emu = useEmulator({ parentTopics: ['Will'], willMessages: 'allow' }, 'test');

  it('cuts a client like a network failure (its will is published) and says whether it was connected', async () => {
    const e = emu();
    const watcher = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_ctl@@@watcher'));
    await watcher.client.subscribeAsync('Will/#', { qos: 1 });
    const creds = await device(e, 'GID_ctl@@@dev');
    const client = await connectMqtt(e.mqttUrl, creds, { will: { topic: 'Will/dev', payload: Buffer.from('gone'), qos: 1, retain: false } });
    try {
      await vi.waitFor(() => expect(e.stats().mqtt.connected).toBe(2));
      const cut = closed(client);
      expect(e.disconnect(creds.clientId)).toBe(true);
      await cut;
      expect(await watcher.next()).toEqual(['Will/dev', 'gone']);
      await vi.waitFor(() => expect(e.stats().mqtt.connected).toBe(1));
      expect(e.disconnect(creds.clientId)).toBe(false);
      expect(e.disconnect('GID_ctl@@@nobody')).toBe(false);
    } finally {
      await Promise.all([client.endAsync(true), watcher.client.endAsync()]);
    }
  });

  it('over HTTP: POST /_emulator/disconnect {"clientId"} → {"disconnected": true|false}, also for WebSocket clients', async () => {
    const e = emu();
    const creds = await device(e, 'GID_ctl@@@ws');
    const client = await connectMqtt(e.wsUrl ?? '', creds);
    try {
      const cut = closed(client);
      expect(await postJson(e, '/_emulator/disconnect', { clientId: creds.clientId })).toEqual({ status: 200, body: { disconnected: true } });
      await cut;
      expect(await postJson(e, '/_emulator/disconnect', { clientId: creds.clientId })).toEqual({ status: 200, body: { disconnected: false } });
      const missing = await postJson(e, '/_emulator/disconnect', {});
      expect(missing.status).toBe(400);
      expect(missing.body['Code']).toBe('ParameterCheckFailed');
      expect((await postJson(e, '/_emulator/nothing')).status).toBe(404);
      await vi.waitFor(() => expect(e.stats().mqtt.connected).toBe(0));
      // Control calls are not API calls.
      expect(e.stats().actions).toEqual({ RegisterDeviceCredential: { ok: 1, errors: {} } });
    } finally {
      await client.endAsync(true);
    }
  });
});

describe('controls: restart', () => {
  // Immediate: these tests are about what a restart keeps, not when a resumed session gets it (emulator-offline-pace.test.ts).
  const emu = useEmulator({ parentTopics: ['Parent'], offlineDelivery: 'immediate' }, 'test');

  it('keeps ports, credentials, persistent sessions and their queued QoS 1 messages; live clients are dropped', async () => {
    const e = emu();
    const subCreds = await device(e, 'GID_rs@@@sub');
    const pubCreds = await device(e, 'GID_rs@@@pub');
    const first = await connectWithInbox(e.mqttUrl, subCreds, { clean: false });
    await first.client.subscribeAsync('Parent/rs', { qos: 1 });
    await first.client.endAsync();
    const pub = await connectMqtt(e.mqttUrl, pubCreds);
    await pub.publishAsync('Parent/rs', 'queued before restart', { qos: 1 });
    const live = await connectMqtt(e.wsUrl ?? '', accountLogin(e, 'GID_rs@@@live'));
    await vi.waitFor(() => expect(e.stats().mqtt.connected).toBe(2));
    const dropped = Promise.all([closed(pub), closed(live)]);
    const before = { broker: e.broker, mqttUrl: e.mqttUrl, wsUrl: e.wsUrl };

    await e.restart();
    await dropped;
    expect(e.broker).not.toBe(before.broker);
    expect({ mqttUrl: e.mqttUrl, wsUrl: e.wsUrl }).toEqual({ mqttUrl: before.mqttUrl, wsUrl: before.wsUrl });
    expect(e.stats().mqtt.connected).toBe(0);

    const again = await connectWithInbox(e.mqttUrl, subCreds, { clean: false });
    try {
      expect(again.sessionPresent).toBe(true);
      expect(await again.next()).toEqual(['Parent/rs', 'queued before restart']);
      // The restored subscription still routes new messages, over WebSocket too.
      const pub2 = await connectMqtt(e.wsUrl ?? '', pubCreds);
      await pub2.publishAsync('Parent/rs', 'after restart', { qos: 1 });
      expect(await again.next()).toEqual(['Parent/rs', 'after restart']);
      expect(e.stats().mqtt.connected).toBe(2);
      await pub2.endAsync();
    } finally {
      await Promise.all([again.client.endAsync(), pub.endAsync(true), live.endAsync(true)]);
    }
    expect(e.stats().mqtt.connacks['0']).toBe(5);
    await vi.waitFor(() => expect(e.stats().mqtt.connected).toBe(0));
  });

  it('over HTTP: POST /_emulator/restart → {"restarted": true}; restarts can follow each other', async () => {
    const e = emu();
    const creds = await device(e, 'GID_rs@@@http');
    const client = await connectMqtt(e.mqttUrl, creds);
    const cut = closed(client);
    const [a, b] = await Promise.all([postJson(e, '/_emulator/restart'), e.restart()]);
    expect(a).toEqual({ status: 200, body: { restarted: true } });
    expect(b).toBeUndefined();
    await cut;
    await client.endAsync(true);
    expect(await connackCode(e.mqttUrl, creds)).toBe(0);
  });

  it('with downMs the broker stays down that long: a CONNECT meanwhile is refused; close() ends the downtime', async () => {
    const e = emu();
    const creds = await device(e, 'GID_rs@@@down');
    const live = await connectMqtt(e.mqttUrl, creds);
    const dropped = closed(live);
    const restarting = e.restart({ downMs: 60_000 });
    await dropped;
    await live.endAsync(true);
    // The broker drops its clients, then closes its listeners: no event says when the second is done, so the test
    // tries until a CONNECT is refused (it is, for the 60 s the broker stays down).
    await vi.waitFor(async () => expect(await connackCode(e.mqttUrl, creds, { connectTimeout: 1_000 }).catch((error: NodeJS.ErrnoException) => error.code)).toBe('ECONNREFUSED'), { timeout: 30_000, interval: 100 });
    await Promise.all([restarting, e.close()]);
  });

  it('over HTTP: POST /_emulator/restart {"downMs"} answers once the broker is back', async () => {
    const e = emu();
    const creds = await device(e, 'GID_rs@@@downhttp');
    expect(await postJson(e, '/_emulator/restart', { downMs: 1 })).toEqual({ status: 200, body: { restarted: true, downMs: 1 } });
    expect(await connackCode(e.mqttUrl, creds)).toBe(0);
  });

  it('downMs out of its bounds is refused', async () => {
    const e = emu();
    expect((await postJson(e, '/_emulator/restart', { downMs: 600_001 })).body).toMatchObject({ Code: 'ParameterCheckFailed', Message: expect.stringMatching(/downMs must be an integer from 0 to 600000/) });
    expect((await postJson(e, '/_emulator/restart', { downMs: 'soon' })).status).toBe(400);
    await expect(e.restart({ downMs: -1 })).rejects.toMatchObject({ code: 'InvalidOption' });
  });

  it('rejects after close', async () => {
    const e = emu();
    await e.close();
    await expect(e.restart()).rejects.toThrow(/closed/);
  });
});

describe('controls: faults', () => {
  const emu = useEmulator({}, 'test');

  it('POST /_emulator/faults {"rate", "codes", "forMs"} fails that share of the API calls; rate 0 ends it', async () => {
    const e = emu();
    expect(await postJson(e, '/_emulator/faults', { rate: 1, codes: 'Throttling.User', forMs: 600_000 })).toEqual({ status: 200, body: { rate: 1, codes: ['Throttling.User'], forMs: 600_000 } });
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', { InstanceId: e.instanceId, ClientId: 'GID_f@@@a' }))).code).toBe('Throttling.User');
    await postJson(e, '/_emulator/faults', { rate: 0, codes: 'Throttling.User', forMs: 0 });
    expect((await apiFailure(callApi(e, 'GetDeviceCredential', { InstanceId: e.instanceId, ClientId: 'GID_f@@@a' }))).code).toBe('DeviceCredentialNotFound');
    e.faultBurst({ rate: 1, codes: ['InternalError'], forMs: 600_000 });
    expect((await apiFailure(callApi(e, 'RegisterDeviceCredential', { InstanceId: e.instanceId, ClientId: 'GID_f@@@a' }))).code).toBe('InternalError');
    expect((await postJson(e, '/_emulator/faults', { rate: 2, codes: 'InternalError', forMs: 1 })).body).toMatchObject({ Code: 'ParameterCheckFailed', Message: expect.stringMatching(/rate must be a number from 0 to 1.*Send a JSON body/) });
    expect((await postJson(e, '/_emulator/faults', { rate: 0.5, codes: 'Nope', forMs: 1 })).body).toMatchObject({ Code: 'ParameterCheckFailed' });
  });
});

describe('controls: kickOnRevoke', () => {
  const emu = useEmulator({ kickOnRevoke: true, parentTopics: ['Parent'] }, 'test');

  it.each([
    ['RefreshDeviceCredential'],
    ['UnRegisterDeviceCredential'],
    ['RegisterDeviceCredential'],
  ])('%s drops the live session of the revoked credential at once', async (action) => {
    const e = emu();
    const creds = await device(e, 'GID_kick@@@dev');
    const client = await connectMqtt(e.mqttUrl, creds);
    try {
      const cut = closed(client);
      await callApi(e, action, { ClientId: creds.clientId, InstanceId: e.instanceId });
      await cut;
      await vi.waitFor(() => expect(e.stats().mqtt.connected).toBe(0));
    } finally {
      await client.endAsync(true);
    }
  });

  it('keeps sessions that did not log in with the revoked key', async () => {
    const e = emu();
    const creds = await device(e, 'GID_kick@@@dev');
    const other = await device(e, 'GID_kick@@@other');
    const account = await connectMqtt(e.mqttUrl, accountLogin(e, creds.clientId));
    const bystander = await connectMqtt(e.mqttUrl, other);
    try {
      await callApi(e, 'RefreshDeviceCredential', { ClientId: creds.clientId, InstanceId: e.instanceId });
      // The revoke ran before the API answered; a QoS 1 round trip proves both connections still work.
      await account.publishAsync('Parent/alive', 'yes', { qos: 1 });
      await bystander.publishAsync('Parent/alive', 'yes', { qos: 1 });
      expect(account.connected && bystander.connected).toBe(true);
    } finally {
      await Promise.all([account.endAsync(), bystander.endAsync()]);
    }
  });
});

describe('broker: payload limit', () => {
  const emu = useEmulator({ parentTopics: ['Parent'] });

  it('accepts 64 KB and discards more (acknowledged, delivered to no one, the publisher stays connected)', async () => {
    const e = emu();
    const sub = await connectWithInbox(e.mqttUrl, await device(e, 'GID_big@@@sub'));
    await sub.client.subscribeAsync('Parent/big', { qos: 1 });
    const pub = await connectMqtt(e.mqttUrl, await device(e, 'GID_big@@@pub'));
    try {
      await pub.publishAsync('Parent/big', Buffer.alloc(65_536, 'a'), { qos: 1 });
      expect((await sub.next())[1]).toHaveLength(65_536);
      await pub.publishAsync('Parent/big', Buffer.alloc(65_537, 'b'), { qos: 1 });
      await pub.publishAsync('Parent/big', 'next', { qos: 1 });
      expect(await sub.next()).toEqual(['Parent/big', 'next']);
      expect(e.stats().mqtt.rules).toEqual({ payloadSize: 1 });
    } finally {
      await Promise.all([sub.client.endAsync(), pub.endAsync(true)]);
    }
  });
});

describe('broker: P2P', () => {
  // Any parent: P2P privacy is checked against a `#` subscriber, which the parent-topic rule would disconnect.
  // Immediate: the queued P2P messages are checked for, not their pace (emulator-offline-pace.test.ts).
  const emu = useEmulator({ parentTopics: false, offlineDelivery: 'immediate' });

  it('delivers <parent>/p2p/<ClientId> to that client without a subscription, and to nobody else', async () => {
    const e = emu();
    const target = await connectWithInbox(e.mqttUrl, await device(e, 'GID_p2p@@@target'));
    const snoop = await connectWithInbox(e.mqttUrl, await device(e, 'GID_p2p@@@snoop'));
    const sender = await connectMqtt(e.mqttUrl, await device(e, 'GID_p2p@@@sender'));
    try {
      await snoop.client.subscribeAsync(['Parent/#', '#'], { qos: 1 });
      // Subscribing to its own P2P topic is allowed and does not make messages arrive twice.
      await target.client.subscribeAsync('Parent/p2p/GID_p2p@@@target', { qos: 1 });
      await sender.publishAsync('Parent/p2p/GID_p2p@@@target', 'for target', { qos: 1 });
      await sender.publishAsync('Other/p2p/GID_p2p@@@target', 'any parent', { qos: 1 });
      await sender.publishAsync('Parent/public', 'for all', { qos: 1 });
      expect(await target.next()).toEqual(['Parent/p2p/GID_p2p@@@target', 'for target']);
      expect(await target.next()).toEqual(['Other/p2p/GID_p2p@@@target', 'any parent']);
      // The snoop's first message is the public one: the P2P ones never reach it.
      expect(await snoop.next()).toEqual(['Parent/public', 'for all']);
      // A client can send P2P to itself, like Alibaba's demo.
      await target.client.publishAsync('Parent/p2p/GID_p2p@@@target', 'to self', { qos: 0 });
      expect(await target.next()).toEqual(['Parent/p2p/GID_p2p@@@target', 'to self']);
      // Without an explicit subscription (which would cap it), a P2P message keeps the QoS it was sent with.
      const qos = new Promise<number>((resolve) => target.client.once('message', (_t, _p, packet) => resolve(packet.qos)));
      await sender.publishAsync('Other/p2p/GID_p2p@@@target', 'qos 2 stays qos 2', { qos: 2 });
      expect(await target.next()).toEqual(['Other/p2p/GID_p2p@@@target', 'qos 2 stays qos 2']);
      expect(await qos).toBe(2);
    } finally {
      await Promise.all([target.client.endAsync(), snoop.client.endAsync(), sender.endAsync()]);
    }
  });

  it("refuses (0x80) subscriptions to another client's P2P topics, grants the others in the same SUBSCRIBE", async () => {
    const e = emu();
    const client = await connectMqtt(e.mqttUrl, await device(e, 'GID_p2p@@@me'));
    try {
      const suback = new Promise<number[]>((resolve) => {
        client.on('packetreceive', (packet) => {
          if (packet.cmd === 'suback') resolve(packet.granted as number[]);
        });
      });
      client.subscribe(['Parent/p2p/GID_p2p@@@other', 'Parent/p2p/+', 'Parent/p2p/#', 'Parent/p2p/GID_p2p@@@me', 'Parent/x'], { qos: 1 }, () => undefined);
      expect(await suback).toEqual([128, 128, 128, 1, 1]);
      expect(client.connected).toBe(true);
    } finally {
      await client.endAsync();
    }
  });

  it('queues P2P QoS 1 messages for an offline persistent session', async () => {
    const e = emu();
    const creds = await device(e, 'GID_p2p@@@offline');
    const first = await connectMqtt(e.mqttUrl, creds, { clean: false });
    await first.endAsync();
    const sender = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_p2p@@@sender2'));
    await sender.publishAsync('Parent/p2p/GID_p2p@@@offline', 'while away', { qos: 1 });
    await sender.endAsync();
    const back = await connectWithInbox(e.mqttUrl, creds, { clean: false });
    try {
      expect(await back.next()).toEqual(['Parent/p2p/GID_p2p@@@offline', 'while away']);
    } finally {
      await back.client.endAsync();
    }
  });
});

describe('controls: inputs are checked, and JSON is read whatever the Content-Type', () => {
  const emu = useEmulator({}, 'test');

  async function post(e: Emulator, path: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
    const response = await fetch(new URL(path, e.apiEndpoint), { method: 'POST', headers, body });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  it('accepts a JSON body sent without Content-Type, or as text/plain', async () => {
    const e = emu();
    // fetch labels a string body text/plain; the other has no Content-Type at all.
    expect(await post(e, '/_emulator/fail-next', JSON.stringify({ action: 'GetDeviceCredential', code: 'InternalError', count: 2 }))).toEqual({ status: 200, body: { queued: 2 } });
    expect(await post(e, '/_emulator/disconnect', JSON.stringify({ clientId: 'GID_ctl@@@nobody' }), { 'content-type': '' })).toEqual({ status: 200, body: { disconnected: false } });
    const first = await apiFailure(callApi(e, 'GetDeviceCredential', { ClientId: 'GID_ctl@@@x', InstanceId: e.instanceId }));
    expect(first.code).toBe('InternalError');
  });

  it.each([
    [0, 'from 1 to 10000'],
    [10_001, 'from 1 to 10000'],
    [200_000_000, 'from 1 to 10000'],
    [1.5, 'from 1 to 10000'],
    ['many', 'from 1 to 10000'],
  ])('fail-next count %j is a 400 naming the limit, answered at once', async (count, message) => {
    const e = emu();
    const reply = await post(e, '/_emulator/fail-next', JSON.stringify({ action: 'GetDeviceCredential', code: 'InternalError', count }), { 'content-type': 'application/json' });
    expect(reply.status).toBe(400);
    expect(reply.body['Code']).toBe('ParameterCheckFailed');
    expect(String(reply.body['Message'])).toContain(message);
  });

  it('fail-next with a misspelled action or an unknown code is a 400 naming what is allowed; nothing is queued', async () => {
    const e = emu();
    const typo = await post(e, '/_emulator/fail-next', JSON.stringify({ action: 'RegisterDeviceCredentail', code: 'InternalError' }));
    expect(typo.status).toBe(400);
    expect(String(typo.body['Message'])).toContain('RegisterDeviceCredential, GetDeviceCredential, RefreshDeviceCredential, UnRegisterDeviceCredential, ListDeviceCredentialClientId');
    const code = await post(e, '/_emulator/fail-next', JSON.stringify({ action: 'RegisterDeviceCredential', code: 'NoSuchCode' }));
    expect(code.status).toBe(400);
    expect(String(code.body['Message'])).toContain('API_ERROR_CATALOG');
    await registerDevice(e, 'GID_ctl@@@fine');
  });

  it('a body that is not JSON is a 400, not an emulator fault', async () => {
    const e = emu();
    const reply = await post(e, '/_emulator/fail-next', '{"action": ');
    expect(reply).toMatchObject({ status: 400, body: { Code: 'ParameterCheckFailed' } });
  });
});
