/**
 * MQTT 5 against the emulator's broker, with mqtt.js (protocolVersion 5) and, where the exact bytes matter, a raw
 * socket whose packets mqtt-packet parses. MQTT 3.1 and 3.1.1 must answer exactly as before.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { startEmulator } from '../../src/emulator/index.js';
import { hmacPassword, signToken } from '../../src/signer/mqtt.js';
import { accountLogin, device, ended } from '../helpers/broker.js';
import { ANY_GROUP, callApi, connackCode, connectMqtt, connectWithInbox, useEmulator } from '../helpers/emulator.js';
import { rawLogin } from '../helpers/raw-mqtt.js';

const V5 = { protocolVersion: 5 } as const;
const TLS_DIR = resolve(import.meta.dirname, '../../fixtures/tls');
const tls = { cert: readFileSync(resolve(TLS_DIR, 'server.pem')), key: readFileSync(resolve(TLS_DIR, 'server-key.pem')) };
const ca = readFileSync(resolve(TLS_DIR, 'ca.pem'));

describe('MQTT 5: authentication', () => {
  const emu = useEmulator({ tls });

  it('accepts DeviceCredential and Signature logins and routes messages with user properties over every transport', async () => {
    const e = emu();
    const sub = await connectWithInbox(e.mqttUrl, await device(e, 'GID_v5@@@sub'), V5);
    try {
      await sub.client.subscribeAsync('demo/v5', { qos: 1 });
      for (const [i, url] of [e.mqttUrl, e.wsUrl, e.mqttsUrl, e.wssUrl].entries()) {
        const pub = await connectMqtt(url ?? '', accountLogin(e, `GID_v5@@@pub-${i}`), { ...V5, ca });
        const properties = new Promise((r) => sub.client.once('message', (_t, _p, packet) => r(packet.properties?.userProperties)));
        await pub.publishAsync('demo/v5', `via ${url}`, { qos: 1, properties: { userProperties: { trace: `t-${i}` } } });
        expect(await sub.next()).toEqual(['demo/v5', `via ${url}`]);
        expect({ ...(await properties as object) }).toEqual({ trace: `t-${i}` });
        await pub.endAsync();
      }
    } finally {
      await sub.client.endAsync();
    }
  });

  it('advertises its limits in the CONNACK: Receive Maximum 65,535, Maximum Packet Size, topic aliases, no shared subscriptions', async () => {
    const e = emu();
    const { connack } = await rawLogin(e.mqttUrl, accountLogin(e, 'GID_v5@@@caps'), 5, { keepalive: 60 });
    expect(connack).toMatchObject({ cmd: 'connack', reasonCode: 0, sessionPresent: false });
    expect(connack.properties).toEqual({ receiveMaximum: 65_535, maximumPacketSize: 131_072, topicAliasMaximum: 32, sharedSubscriptionAvailable: false });
  });

  it('resolves topic aliases before the rules look at the topic', async () => {
    const e = emu();
    const sub = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_v5@@@alias-sub'), V5);
    await sub.client.subscribeAsync('demo/aliased', { qos: 1 });
    const pub = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_v5@@@alias-pub'), V5);
    await pub.publishAsync('demo/aliased', 'first', { qos: 1, properties: { topicAlias: 3 } });
    await pub.publishAsync('', 'by alias', { qos: 1, properties: { topicAlias: 3 } });
    expect(await sub.next()).toEqual(['demo/aliased', 'first']);
    expect(await sub.next()).toEqual(['demo/aliased', 'by alias']);
    // An alias for a topic under a parent that was not created is refused like the topic itself.
    const end = ended(pub);
    pub.publish('elsewhere/x', 'no', { qos: 1, properties: { topicAlias: 4 } });
    expect((await end).disconnect?.reasonCode).toBe(0x87);
    await Promise.all([sub.client.endAsync(), pub.endAsync(true)]);
  });

  it('refuses with 0x86 what cannot be verified, 0x87 what is not allowed here and 0x85 a bad ClientId', async () => {
    const e = emu();
    const good = await device(e, 'GID_v5@@@bad');
    const sig = accountLogin(e, 'GID_v5@@@sig');
    const code = (credentials: typeof good): Promise<number> => connackCode(e.mqttUrl, credentials, V5);
    expect(await code({ ...good, password: hmacPassword('not-the-secret', good.clientId) })).toBe(0x86);
    expect(await code({ ...good, username: `DeviceCredential|DC.unknownunknownunknown00|${e.instanceId}` })).toBe(0x86);
    expect(await code({ ...good, username: 'DeviceCredential' })).toBe(0x86);
    expect(await code({ ...sig, password: hmacPassword('wrong', sig.clientId) })).toBe(0x86);
    // A Token-mode password whose token is forged cannot be verified (token-mode-broker.test.ts has the rest).
    expect(await code(signToken({ accessKeyId: e.accessKeyId, instanceId: e.instanceId, clientId: sig.clientId, tokens: [{ type: 'RW', token: 'x' }] }))).toBe(0x86);
    expect(await code({ ...good, username: good.username.replace(e.instanceId, 'mqtt-cn-other') })).toBe(0x87);
    expect(await code({ username: good.username, clientId: 'GID_v5@@@other', password: hmacPassword((await callApi(e, 'GetDeviceCredential', { ClientId: good.clientId, InstanceId: e.instanceId }) as { DeviceCredential: { DeviceAccessKeySecret: string } }).DeviceCredential.DeviceAccessKeySecret, 'GID_v5@@@other') })).toBe(0x87);
    expect(await code({ ...good, clientId: 'plain-id' })).toBe(0x85);
    // MQTT 5 allows an empty ClientId (the broker assigns one); the service's grammar does not.
    expect(await code({ ...good, clientId: '' })).toBe(0x85);
    expect(await code(good)).toBe(0);
    expect(e.stats().mqtt.connacks).toMatchObject({ '0x85': 2, '0x86': 5, '0x87': 2 });
  });

  it('sends the reason code and a Reason String in a CONNACK of its own (checked byte by byte)', async () => {
    const e = emu();
    const good = await device(e, 'GID_v5@@@bytes');
    const { raw } = await rawLogin(e.mqttUrl, { ...good, password: 'wrong' }, 5);
    await raw.closed;
    // CONNACK, remaining length 20: flags 00, reason 0x86, 17 bytes of properties: Reason String (0x1F), 14 bytes.
    const reason = Buffer.from('wrong password');
    expect(raw.bytes()).toEqual(Buffer.concat([Buffer.from([0x20, 20, 0x00, 0x86, 17, 0x1f, 0x00, reason.length]), reason]));
    // The same refusal in MQTT 3.1.1: exactly the four bytes 20 02 00 04, then the connection closes.
    const v4 = await rawLogin(e.mqttUrl, { ...good, password: 'wrong' }, 4);
    await v4.raw.closed;
    expect(v4.raw.bytes()).toEqual(Buffer.from([0x20, 0x02, 0x00, 0x04]));
  });

  it('refuses MQTT 3.1 (MQIsdp) with CONNACK 1; accepted (mqtt31: accept), it answers as 3.1.1 does: rc 0, 2, 4 and 5', async () => {
    const refused = emu();
    expect((await rawLogin(refused.mqttUrl, await device(refused, 'GID_v31@@@dev'), 3)).connack).toMatchObject({ returnCode: 1 });
    const e = await startEmulator({ env: {}, ...ANY_GROUP, mqtt31: 'accept' });
    onTestFinished(() => e.close());
    const good = await device(e, 'GID_v31@@@dev');
    for (const version of [3, 4] as const) {
      expect((await rawLogin(e.mqttUrl, good, version)).connack).toMatchObject({ returnCode: 0 });
      expect((await rawLogin(e.mqttUrl, { ...good, password: 'x' }, version)).connack).toMatchObject({ returnCode: 4 });
      expect((await rawLogin(e.mqttUrl, { ...good, clientId: 'no-grammar' }, version)).connack).toMatchObject({ returnCode: 2 });
      expect((await rawLogin(e.mqttUrl, { ...good, username: good.username.replace(e.instanceId, 'mqtt-cn-other') }, version)).connack).toMatchObject({ returnCode: 5 });
    }
  });
});

describe('MQTT 5: sessions', () => {
  // Offline messages at once: the tests check what a session keeps, not the cloud's pace (emulator-offline-pace.test.ts).
  const emu = useEmulator({ kickOnRevoke: true, offlineDelivery: 'immediate' }, 'test');

  it('a session with an expiry keeps its subscription and queued QoS 1 messages across a reconnect and a restart', async () => {
    const e = emu();
    const creds = await device(e, 'GID_v5@@@persist');
    const session = { ...V5, clean: false, properties: { sessionExpiryInterval: 3600 } };
    const first = await connectMqtt(e.mqttUrl, creds, session);
    await first.subscribeAsync('demo/queued', { qos: 1 });
    await first.endAsync();
    const pub = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_v5@@@pub'), V5);
    await pub.publishAsync('demo/queued', 'while away', { qos: 1 });
    const again = await connectWithInbox(e.mqttUrl, creds, session);
    expect(again.sessionPresent).toBe(true);
    expect(await again.next()).toEqual(['demo/queued', 'while away']);
    await again.client.endAsync();
    await pub.endAsync();

    await e.restart();
    const pub2 = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_v5@@@pub'), V5);
    await pub2.publishAsync('demo/queued', 'across a restart', { qos: 1 });
    const third = await connectWithInbox(e.mqttUrl, creds, session);
    expect(third.sessionPresent).toBe(true);
    expect(await third.next()).toEqual(['demo/queued', 'across a restart']);
    await Promise.all([third.client.endAsync(), pub2.endAsync()]);
  });

  it('P2P reaches its addressee without a subscription', async () => {
    const e = emu();
    const target = await connectWithInbox(e.mqttUrl, await device(e, 'GID_v5@@@target'), V5);
    const sender = await connectMqtt(e.mqttUrl, await device(e, 'GID_v5@@@sender'), V5);
    await sender.publishAsync('demo/p2p/GID_v5@@@target', 'just you', { qos: 1 });
    expect(await target.next()).toEqual(['demo/p2p/GID_v5@@@target', 'just you']);
    await Promise.all([target.client.endAsync(), sender.endAsync()]);
  });

  it('kickOnRevoke tells an MQTT 5 session why: DISCONNECT 0x87', async () => {
    const e = emu();
    const live = await connectMqtt(e.mqttUrl, await device(e, 'GID_v5@@@kick'), V5);
    const end = ended(live);
    await callApi(e, 'RefreshDeviceCredential', { ClientId: 'GID_v5@@@kick', InstanceId: e.instanceId });
    expect((await end).disconnect).toMatchObject({ reasonCode: 0x87, properties: { reasonString: 'the credential was revoked' } });
    await live.endAsync(true);
  });

  it('a PUBLISH refused while the queued messages are still being sent after the CONNACK still gets its DISCONNECT', async () => {
    const e = emu();
    const login = accountLogin(e, 'GID_v5@@@eager');
    const session = { clean: false, properties: { sessionExpiryInterval: 600 } };
    const first = await connectMqtt(e.mqttUrl, login, { ...V5, ...session });
    await first.subscribeAsync('demo/queued', { qos: 1 });
    await first.endAsync();
    const pub = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_v5@@@filler'), V5);
    await Promise.all(Array.from({ length: 300 }, (_, i) => pub.publishAsync('demo/queued', `m${i}`, { qos: 1 })));
    await pub.endAsync();
    // Back, and at once a PUBLISH the parent rule refuses: aedes' own client.disconnect() sent nothing here, as it
    // only speaks to a client whose queued messages have all gone out.
    const { raw } = await rawLogin(e.mqttUrl, login, 5, session);
    raw.send({ cmd: 'publish', topic: 'elsewhere/x', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false });
    expect(await raw.next('disconnect')).toMatchObject({ reasonCode: 0x87 });
    await raw.closed;
  });

  it('a payload over 64 KB gets its PUBACK (success) and is discarded, the client staying; 64 KB passes', async () => {
    const e = emu();
    const before = e.stats().mqtt.rules['payloadSize'] ?? 0;
    const pub = await connectMqtt(e.mqttUrl, await device(e, 'GID_v5@@@big'), V5);
    await pub.publishAsync('demo/big', Buffer.alloc(65_536), { qos: 1 });
    // mqtt.js rejects a publish whose PUBACK carries a failure reason code: resolving is the success code.
    await pub.publishAsync('demo/big', Buffer.alloc(65_537), { qos: 1 });
    expect(pub.connected).toBe(true);
    await pub.endAsync();
    expect(e.stats().mqtt.rules['payloadSize']).toBe(before + 1);
  });
});
