/**
 * The cloud's MQTT rules, on by default (README "The cloud's MQTT rules"): one describe per row of the table, each
 * in MQTT 3.1.1 and, where the answer differs, MQTT 5. Clients are mqtt.js, or a raw socket whose packets
 * mqtt-packet builds and parses when the test needs the exact SUBACK or CONNACK.
 */
import type { IConnectPacket, ISubscription, Packet } from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import type { MqttCredentials } from '../../src/signer/mqtt.js';
import { accountLogin, captureLogger, device, ended, type Ending } from '../helpers/broker.js';
import { spawnCli } from '../helpers/cli.js';
import { ANY_GROUP, callApi, connackCode, connectMqtt, connectWithInbox, useEmulator } from '../helpers/emulator.js';
import { rawLogin } from '../helpers/raw-mqtt.js';

const VERSIONS = [4, 5] as const;
type Version = (typeof VERSIONS)[number];
/** A SUBACK failure: MQTT 3.1.1 has only 0x80; aedes answers a refused filter with 0x87 in MQTT 5. */
const DENIED: Record<Version, number> = { 4: 0x80, 5: 0x87 };

/** SUBSCRIBE over a raw connection; resolves with the SUBACK's granted QoS / reason codes. */
async function granted(e: Emulator, credentials: MqttCredentials, version: Version, subscriptions: ISubscription[], connect: Partial<IConnectPacket> = {}, properties?: { subscriptionIdentifier: number }): Promise<number[]> {
  const { raw, connack } = await rawLogin(e.mqttUrl, credentials, version, connect);
  expect(connack).toMatchObject(version === 5 ? { reasonCode: 0 } : { returnCode: 0 });
  raw.send({ cmd: 'subscribe', messageId: 7, subscriptions, ...(properties ? { properties } : {}) });
  return ((await raw.next('suback')) as Packet & { granted: number[] }).granted;
}

/** Publish once (QoS 1) and wait for the broker to end the connection. */
async function refusedPublish(e: Emulator, clientId: string, version: Version, topic: string, payload: string | Buffer, extra: { retain?: boolean; qos?: 0 | 1 | 2 } = {}, connect = {}): Promise<Ending> {
  const client = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: version, ...connect });
  const end = ended(client);
  client.publish(topic, payload, { qos: extra.qos ?? 1, retain: extra.retain ?? false });
  const ending = await end;
  await client.endAsync(true);
  return ending;
}

/** What an MQTT 5 client is told: reason code and that the Reason String names the rule and its option. */
function toldAbout(ending: Ending, reasonCode: number, rule: string, option: string): void {
  expect(ending.disconnect?.reasonCode).toBe(reasonCode);
  expect(ending.disconnect?.properties?.reasonString).toContain(`MQTT rule ${rule} (option ${option}`);
}

/** Expect the broker to close a 3.1.1 connection without a word, or to DISCONNECT an MQTT 5 one for `rule`. */
function expectDisconnected(version: Version, ending: Ending, reasonCode: number, rule: string, option: string): void {
  if (version === 4) expect(ending.disconnect).toBeUndefined();
  else toldAbout(ending, reasonCode, rule, option);
}

describe('rule: parent topics created beforehand (reference §5.4, §5.6)', () => {
  const logger = captureLogger();
  const emu = useEmulator({ logger }, 'test');

  it.each(VERSIONS)('the default parents demo and sim work (MQTT %i)', async (version) => {
    const e = emu();
    const sub = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_par@@@sub'), { protocolVersion: version });
    await sub.client.subscribeAsync(['demo/#', 'sim/+'], { qos: 1 });
    const pub = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_par@@@pub'), { protocolVersion: version });
    await pub.publishAsync('demo/hello', 'hi', { qos: 1 });
    await pub.publishAsync('sim/7', 'seven', { qos: 1 });
    expect(await sub.next()).toEqual(['demo/hello', 'hi']);
    expect(await sub.next()).toEqual(['sim/7', 'seven']);
    await Promise.all([sub.client.endAsync(), pub.endAsync()]);
    expect(e.stats().mqtt.rules).toEqual({});
  });

  it.each(VERSIONS)('PUBLISH or SUBSCRIBE under a parent that was not created disconnects the client (MQTT %i)', async (version) => {
    const e = emu();
    expectDisconnected(version, await refusedPublish(e, `GID_par@@@p1-${version}`, version, 'other/x', 'm'), 0x87, 'parentTopic', 'parentTopics');
    for (const [i, filter] of ['other/#', '#', '+/x'].entries()) {
      const client = await connectMqtt(e.mqttUrl, accountLogin(e, `GID_par@@@s${i}`), { protocolVersion: version });
      const end = ended(client);
      client.subscribe(filter, { qos: 1 });
      expectDisconnected(version, await end, 0x87, 'parentTopic', 'parentTopics');
      await client.endAsync(true);
    }
    // The empty parent cannot be created: `/p2p/<ClientId>` is refused like any other uncreated parent.
    expectDisconnected(version, await refusedPublish(e, 'GID_par@@@p2', version, '/p2p/GID_par@@@sub', 'm'), 0x87, 'parentTopic', 'parentTopics');
    expect(e.stats().mqtt.rules).toEqual({ parentTopic: 5 });
    expect(logger.lines.filter((l) => l.includes(`MQTT rule parentTopic (option parentTopics, flag --parent-topics): GID_par@@@p1-${version}: PUBLISH under parent topic 'other'`))).toHaveLength(1);
  });

  it('parentTopics sets the list; false accepts any parent', async () => {
    const own = await startOwn({ parentTopics: ['other'] });
    expect(await refusedPublish(own, 'GID_par@@@o', 4, 'demo/x', 'm')).toEqual({ disconnect: undefined });
    const ok = await connectMqtt(own.mqttUrl, accountLogin(own, 'GID_par@@@ok'));
    await ok.publishAsync('other/x', 'fine', { qos: 1 });
    await ok.endAsync();
    const any = await startOwn({ parentTopics: false });
    const client = await connectMqtt(any.mqttUrl, accountLogin(any, 'GID_par@@@any'));
    await client.subscribeAsync('#', { qos: 1 });
    await client.publishAsync('whatever/x', 'fine', { qos: 1 });
    await client.endAsync();
    expect(any.stats().mqtt.rules).toEqual({});
  });
});

describe('rule: topic length, parent and subtopics together, at most 64 characters (reference §5.6)', () => {
  const emu = useEmulator({}, 'test');
  const topic64 = `demo/${'t'.repeat(59)}`;

  it.each(VERSIONS)('64 characters pass; 65 disconnect a publisher and deny a subscription (MQTT %i)', async (version) => {
    const e = emu();
    const sub = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_len@@@sub'), { protocolVersion: version });
    await sub.client.subscribeAsync(topic64, { qos: 1 });
    const pub = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_len@@@pub'), { protocolVersion: version });
    await pub.publishAsync(topic64, 'fits', { qos: 1 });
    expect(await sub.next()).toEqual([topic64, 'fits']);
    await Promise.all([sub.client.endAsync(), pub.endAsync()]);
    expectDisconnected(version, await refusedPublish(e, 'GID_len@@@long', version, `${topic64}x`, 'm'), 0x90, 'topicLength', 'maxTopicLength');
    expect(await granted(e, accountLogin(e, 'GID_len@@@filter'), version, [{ topic: `${topic64}x`, qos: 1 }, { topic: 'demo/#', qos: 1 }])).toEqual([DENIED[version], 1]);
    expect(e.stats().mqtt.rules).toEqual({ topicLength: 2 });
  });
});

describe('rule: at most 30 subscriptions per client (reference §5.6)', () => {
  const emu = useEmulator({}, 'test');

  it.each(VERSIONS)('the 31st filter is denied; the same filter again does not count, an unsubscribe frees a place (MQTT %i)', async (version) => {
    const e = emu();
    const filters = Array.from({ length: 30 }, (_, i) => ({ topic: `demo/${i}`, qos: 1 as const }));
    const { raw } = await rawLogin(e.mqttUrl, accountLogin(e, 'GID_subs@@@dev'), version);
    const subscribe = async (subscriptions: ISubscription[]): Promise<number[]> => {
      raw.send({ cmd: 'subscribe', messageId: 1, subscriptions });
      return ((await raw.next('suback')) as Packet & { granted: number[] }).granted;
    };
    // The broker's own P2P subscription does not count.
    expect(await subscribe(filters)).toEqual(filters.map(() => 1));
    expect(await subscribe([{ topic: 'demo/0', qos: 0 }, { topic: 'demo/30', qos: 1 }])).toEqual([0, DENIED[version]]);
    raw.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['demo/5'] });
    await raw.next('unsuback');
    expect(await subscribe([{ topic: 'demo/30', qos: 1 }])).toEqual([1]);
    expect(e.stats().mqtt.rules).toEqual({ subscriptions: 1 });
  });

  it('maxSubscriptions sets the limit', async () => {
    const own = await startOwn({ maxSubscriptions: 1 });
    expect(await granted(own, accountLogin(own, 'GID_subs@@@one'), 4, [{ topic: 'demo/a', qos: 1 }, { topic: 'demo/b', qos: 1 }])).toEqual([1, 0x80]);
  });

  it.each(VERSIONS)('a persistent session gets no offline messages for a filter it was refused in the same SUBSCRIBE as a granted one (MQTT %i)', async (version) => {
    // Immediate: this test is about what is queued, not when it comes (the pace has its own tests).
    const own = await startOwn({ maxSubscriptions: 1, offlineDelivery: 'immediate' });
    const login = accountLogin(own, 'GID_subs@@@persist');
    const session = { clean: false, ...(version === 5 ? { properties: { sessionExpiryInterval: 600 } } : {}) };
    expect(await granted(own, login, version, [{ topic: 'demo/granted', qos: 1 }, { topic: 'demo/refused', qos: 1 }], session)).toEqual([1, DENIED[version]]);
    await own.restart(); // drops the raw connection; the session stays
    const pub = await connectMqtt(own.mqttUrl, accountLogin(own, 'GID_subs@@@pub'));
    await pub.publishAsync('demo/refused', 'must not be queued', { qos: 1 });
    await pub.publishAsync('demo/granted', 'queued', { qos: 1 });
    await pub.endAsync();
    const back = await connectWithInbox(own.mqttUrl, login, { protocolVersion: version, ...session });
    expect(back.sessionPresent).toBe(true);
    expect(await back.next()).toEqual(['demo/granted', 'queued']);
    await back.client.endAsync();
  });
});

describe('rule: Keep Alive capped at 8 minutes (reference §8.2)', () => {
  const emu = useEmulator({}, 'test');

  it('MQTT 5: a longer Keep Alive, or none, is answered with Server Keep Alive 480; a shorter one stands', async () => {
    const e = emu();
    const login = accountLogin(e, 'GID_ka@@@v5');
    expect((await rawLogin(e.mqttUrl, login, 5, { keepalive: 600 })).connack.properties).toMatchObject({ serverKeepAlive: 480 });
    expect((await rawLogin(e.mqttUrl, login, 5, { keepalive: 0 })).connack.properties).toMatchObject({ serverKeepAlive: 480 });
    expect((await rawLogin(e.mqttUrl, login, 5, { keepalive: 90 })).connack.properties).not.toHaveProperty('serverKeepAlive');
    expect(e.stats().mqtt.rules).toEqual({ keepAlive: 2 });
  });

  it('MQTT 3.1.1 cannot be told: the broker applies the cap, and a client silent for 1.5 times the cap is dropped', async () => {
    const own = await startOwn({ maxKeepAliveSeconds: 1 });
    // Keep Alive 60 s, but nothing is ever sent after the CONNECT: the broker drops it after 1.5 s, not 90 s.
    const { raw, connack } = await rawLogin(own.mqttUrl, accountLogin(own, 'GID_ka@@@v4'), 4, { keepalive: 60 });
    expect(connack).toMatchObject({ returnCode: 0 });
    await raw.closed;
    expect(own.stats().mqtt.rules).toEqual({ keepAlive: 1 });
  });
});

describe('rule: message size, body at most 64 KB (reference §5.7, §8.2)', () => {
  const logger = captureLogger();
  const emu = useEmulator({ maxPayloadBytes: 10, logger }, 'test');

  it.each(VERSIONS)('discard (default): a payload over maxPayloadBytes is acknowledged and delivered to no one; the client stays (MQTT %i)', async (version) => {
    const e = emu();
    const sub = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_size@@@sub'), { protocolVersion: version });
    await sub.client.subscribeAsync('demo/#', { qos: 1 });
    const client = await connectMqtt(e.mqttUrl, accountLogin(e, `GID_size@@@big${version}`), { protocolVersion: version });
    // QoS 1 and 2 get their acknowledgement as for any message: the service discards, it does not refuse.
    await client.publishAsync('demo/x', '0123456789a', { qos: 1 });
    await client.publishAsync('demo/x', '0123456789b', { qos: 2 });
    await client.publishAsync('demo/x', '0123456789', { qos: 1 });
    // The one at the limit arrives first and alone: the larger ones went nowhere.
    expect(await sub.next()).toEqual(['demo/x', '0123456789']);
    expect(client.connected).toBe(true);
    await Promise.all([client.endAsync(), sub.client.endAsync()]);
    expect(e.stats().mqtt.rules).toEqual({ payloadSize: 2 });
    expect(logger.lines.filter((l) => l.includes(`MQTT rule payloadSize (option maxPayloadBytes and oversizedMessages, flag --max-payload-bytes and --oversized-messages): GID_size@@@big${version}: PUBLISH payload of 11 bytes, over the limit of 10 — discarded`))).toHaveLength(2);
  });

  it.each(VERSIONS)('oversizedMessages: disconnect: the publisher is disconnected instead (MQTT %i, MQTT 5 with 0x95)', async (version) => {
    const own = await startOwn({ maxPayloadBytes: 10, oversizedMessages: 'disconnect' });
    const client = await connectMqtt(own.mqttUrl, accountLogin(own, 'GID_size@@@ok'), { protocolVersion: version });
    await client.publishAsync('demo/x', '0123456789', { qos: 1 });
    await client.endAsync();
    expectDisconnected(version, await refusedPublish(own, 'GID_size@@@big', version, 'demo/x', '0123456789a'), 0x95, 'payloadSize', 'maxPayloadBytes and oversizedMessages');
    expect(own.stats().mqtt.rules).toEqual({ payloadSize: 1 });
  });
});

describe('rule: GroupIds created beforehand (reference §5.1)', () => {
  const logger = captureLogger();
  const emu = useEmulator({ groups: ['GID_made'], logger }, 'test');
  const CONNACK = { 'identifier-rejected': { 4: 2, 5: 0x85 }, 'not-authorized': { 4: 5, 5: 0x87 } } as const;

  it.each(VERSIONS)('a ClientId of a GroupId not created is refused once its login verifies: CONNACK 2 / 0x85 (MQTT %i)', async (version) => {
    const e = emu();
    expect(await connackCode(e.mqttUrl, accountLogin(e, 'GID_made@@@dev'), { protocolVersion: version })).toBe(0);
    expect(await connackCode(e.mqttUrl, accountLogin(e, `GID_nogroupcreated@@@x${version}`), { protocolVersion: version })).toBe(CONNACK['identifier-rejected'][version]);
    // A login that does not verify is told so first, whatever its group.
    expect(await connackCode(e.mqttUrl, { ...accountLogin(e, `GID_nogroupcreated@@@x${version}`), password: 'wrong' }, { protocolVersion: version })).toBe(version === 5 ? 0x86 : 4);
    expect(e.stats().mqtt.rules).toEqual({ groupId: 1 });
    expect(logger.lines.filter((l) => l.includes(`MQTT rule groupId (option groups and unknownGroupRefusal, flag --groups and --unknown-group-refusal): GID_nogroupcreated@@@x${version}: GroupId GID_nogroupcreated was not created on the instance`))).toHaveLength(1);
  });

  it.each(VERSIONS)('unknownGroupRefusal: not-authorized answers 5 / 0x87 (MQTT %i); the default groups are GID_demo, GID_test and GID_sim', async (version) => {
    const own = await startEmulator({ env: {}, unknownGroupRefusal: 'not-authorized' });
    onTestFinished(() => own.close());
    for (const group of ['GID_demo', 'GID_test', 'GID_sim']) expect(await connackCode(own.mqttUrl, accountLogin(own, `${group}@@@dev`), { protocolVersion: version })).toBe(0);
    expect(await connackCode(own.mqttUrl, accountLogin(own, 'GID_sensors@@@dev'), { protocolVersion: version })).toBe(CONNACK['not-authorized'][version]);
  });
});

describe('rule: MQTT 3.1.1 and 5 only (reference §5.5, §8.2)', () => {
  const emu = useEmulator({}, 'test');

  it('an MQTT 3.1 CONNECT gets CONNACK 1 (unacceptable protocol version), counted under mqtt31; mqtt31: accept lets it in', async () => {
    const e = emu();
    const login = accountLogin(e, 'GID_v31@@@dev');
    const { raw, connack } = await rawLogin(e.mqttUrl, login, 3);
    expect(connack).toMatchObject({ returnCode: 1 });
    await raw.closed;
    expect(e.stats().mqtt).toMatchObject({ rules: { mqtt31: 1 }, connacks: { 1: 1 } });
    const own = await startOwn({ mqtt31: 'accept' });
    expect((await rawLogin(own.mqttUrl, accountLogin(own, 'GID_v31@@@dev'), 3)).connack).toMatchObject({ returnCode: 0 });
  });
});

describe('rule: a P2P topic counts its parent against the 64 characters (reference §5.6)', () => {
  const emu = useEmulator({}, 'test');
  // 61 characters: `demo/p2p/<it>` is 70, over 64 if the ClientId counted.
  const longId = `GID_p2p@@@${'d'.repeat(51)}`;

  it.each(VERSIONS)('a 61-character ClientId gets P2P messages under demo/ (MQTT %i); p2pTopicLength: whole refuses them', async (version) => {
    const e = emu();
    expect(longId).toHaveLength(61);
    const target = await connectWithInbox(e.mqttUrl, accountLogin(e, longId), { protocolVersion: version });
    const sender = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_p2p@@@sender'), { protocolVersion: version });
    await sender.publishAsync(`demo/p2p/${longId}`, 'to you', { qos: 1 });
    expect(await target.next()).toEqual([`demo/p2p/${longId}`, 'to you']);
    await Promise.all([sender.endAsync(), target.client.endAsync()]);
    expect(e.stats().mqtt.rules).toEqual({});
    const whole = await startOwn({ p2pTopicLength: 'whole' });
    expectDisconnected(version, await refusedPublish(whole, 'GID_p2p@@@sender', version, `demo/p2p/${longId}`, 'm'), 0x90, 'topicLength', 'maxTopicLength and p2pTopicLength');
  });
});

describe('rule: a revoked DeviceCredential (reference §0, §5.4)', () => {
  const emu = useEmulator({}, 'test');

  it.each(VERSIONS)('bad-username-or-password (default) answers 4 / 0x86, not-authorized 5 / 0x87 when its password verifies (MQTT %i)', async (version) => {
    for (const [policy, code] of [['bad-username-or-password', version === 5 ? 0x86 : 4], ['not-authorized', version === 5 ? 0x87 : 5]] as const) {
      const e = policy === 'bad-username-or-password' ? emu() : await startOwn({ revokedCredentialRefusal: policy });
      const old = await device(e, `GID_rev@@@dev-${version}`);
      await refreshOf(e, old.clientId);
      expect(await connackCode(e.mqttUrl, old, { protocolVersion: version }), policy).toBe(code);
      // A password that does not verify against the revoked key is "bad" whatever the policy.
      expect(await connackCode(e.mqttUrl, { ...old, password: 'wrong' }, { protocolVersion: version }), policy).toBe(version === 5 ? 0x86 : 4);
    }
  });
});

describe('rule: Keep Alive 0 (reference silent)', () => {
  const emu = useEmulator({}, 'test');

  it('cap (default) lowers it to the cap like a longer one; keepAliveZero: allow keeps it (MQTT 3.1.1 and 5)', async () => {
    const e = emu();
    expect((await rawLogin(e.mqttUrl, accountLogin(e, 'GID_ka@@@zero5'), 5, { keepalive: 0 })).connack.properties).toMatchObject({ serverKeepAlive: 480 });
    expect((await rawLogin(e.mqttUrl, accountLogin(e, 'GID_ka@@@zero4'), 4, { keepalive: 0 })).connack).toMatchObject({ returnCode: 0 });
    expect(e.stats().mqtt.rules).toEqual({ keepAlive: 2 });
    const own = await startOwn({ keepAliveZero: 'allow', maxKeepAliveSeconds: 1 });
    const v5 = await rawLogin(own.mqttUrl, accountLogin(own, 'GID_ka@@@allow5'), 5, { keepalive: 0 });
    expect(v5.connack.reasonCode).toBe(0);
    expect(v5.connack.properties ?? {}).not.toHaveProperty('serverKeepAlive');
    const v4 = await rawLogin(own.mqttUrl, accountLogin(own, 'GID_ka@@@allow4'), 4, { keepalive: 0 });
    expect(v4.connack).toMatchObject({ returnCode: 0 });
    // A silent client with Keep Alive 1 is dropped after 1.5 s; the silent one with 0 is still there after it.
    const capped = await rawLogin(own.mqttUrl, accountLogin(own, 'GID_ka@@@one'), 4, { keepalive: 1 });
    await capped.raw.closed;
    v4.raw.send({ cmd: 'pingreq' });
    await v4.raw.next('pingresp');
    expect(own.stats().mqtt.rules).toEqual({});
  });
});

describe('rule: no retained messages (reference §8.2)', () => {
  const emu = useEmulator({}, 'test');

  it.each(VERSIONS)('refuse (default): a retained PUBLISH disconnects the client (MQTT %i, MQTT 5 with 0x9A)', async (version) => {
    const e = emu();
    expectDisconnected(version, await refusedPublish(e, 'GID_ret@@@pub', version, 'demo/r', 'kept?', { retain: true }), 0x9a, 'retain', 'retainedMessages');
    expect(e.stats().mqtt.rules).toEqual({ retain: 1 });
  });

  it.each(VERSIONS)('ignore: the message is delivered without the flag and never replayed (MQTT %i)', async (version) => {
    const own = await startOwn({ retainedMessages: 'ignore' });
    const live = await connectWithInbox(own.mqttUrl, accountLogin(own, 'GID_ret@@@live'), { protocolVersion: version });
    await live.client.subscribeAsync('demo/r', { qos: 1 });
    const flag = new Promise<boolean>((r) => live.client.once('message', (_t, _p, packet) => r(packet.retain)));
    const pub = await connectMqtt(own.mqttUrl, accountLogin(own, 'GID_ret@@@pub'), { protocolVersion: version });
    await pub.publishAsync('demo/r', 'once', { qos: 1, retain: true });
    expect(await live.next()).toEqual(['demo/r', 'once']);
    expect(await flag).toBe(false);
    const late = await connectWithInbox(own.mqttUrl, accountLogin(own, 'GID_ret@@@late'), { protocolVersion: version });
    await late.client.subscribeAsync('demo/r', { qos: 1 });
    await pub.publishAsync('demo/r', 'marker', { qos: 1 });
    // A replayed retained message would arrive before the marker.
    expect(await late.next()).toEqual(['demo/r', 'marker']);
    await Promise.all([live.client.endAsync(), late.client.endAsync(), pub.endAsync()]);
    expect(own.stats().mqtt.rules).toEqual({ retain: 1 });
  });

  it('allow: a plain broker keeps and replays it', async () => {
    const own = await startOwn({ retainedMessages: 'allow' });
    const pub = await connectMqtt(own.mqttUrl, accountLogin(own, 'GID_ret@@@pub'));
    await pub.publishAsync('demo/r', 'kept', { qos: 1, retain: true });
    const late = await connectWithInbox(own.mqttUrl, accountLogin(own, 'GID_ret@@@late'));
    await late.client.subscribeAsync('demo/r', { qos: 1 });
    expect(await late.next()).toEqual(['demo/r', 'kept']);
    await Promise.all([late.client.endAsync(), pub.endAsync()]);
  });
});

describe('rule: no will messages (reference §8.2)', () => {
  const will = { topic: 'demo/will', payload: Buffer.from('gone'), qos: 1 as const, retain: false };
  const emu = useEmulator({}, 'test');

  it('refuse (default): a CONNECT with a will gets CONNACK 5 (MQTT 3.1.1) or 0x83 (MQTT 5); a retained will 0x9A when wills are allowed', async () => {
    const e = emu();
    expect(await connackCode(e.mqttUrl, accountLogin(e, 'GID_will@@@a'), { will })).toBe(5);
    expect(await connackCode(e.mqttUrl, accountLogin(e, 'GID_will@@@b'), { protocolVersion: 5, will })).toBe(0x83);
    expect(e.stats().mqtt.rules).toEqual({ will: 2 });
    const own = await startOwn({ willMessages: 'allow' });
    expect(await connackCode(own.mqttUrl, accountLogin(own, 'GID_will@@@c'), { protocolVersion: 5, will: { ...will, retain: true } })).toBe(0x9a);
    expect(await connackCode(own.mqttUrl, accountLogin(own, 'GID_will@@@d'), { will: { ...will, retain: true } })).toBe(5);
    expect(own.stats().mqtt.rules).toEqual({ retain: 2 });
  });

  it.each(VERSIONS)('ignore: the client connects and its will is never published (MQTT %i)', async (version) => {
    const own = await startOwn({ willMessages: 'ignore' });
    const watcher = await connectWithInbox(own.mqttUrl, accountLogin(own, 'GID_will@@@watch'), { protocolVersion: version });
    await watcher.client.subscribeAsync('demo/#', { qos: 1 });
    const client = await connectMqtt(own.mqttUrl, accountLogin(own, 'GID_will@@@dev'), { protocolVersion: version, will });
    const end = ended(client);
    expect(own.disconnect('GID_will@@@dev')).toBe(true);
    await end;
    const marker = await connectMqtt(own.mqttUrl, accountLogin(own, 'GID_will@@@marker'), { protocolVersion: version });
    await marker.publishAsync('demo/marker', 'after the cut', { qos: 1 });
    // A published will would arrive before the marker.
    expect(await watcher.next()).toEqual(['demo/marker', 'after the cut']);
    await Promise.all([watcher.client.endAsync(), marker.endAsync(), client.endAsync(true)]);
    expect(own.stats().mqtt.rules).toEqual({ will: 1 });
  });
});

describe('rule: no shared subscriptions (reference §8.2)', () => {
  const emu = useEmulator({}, 'test');

  it('a $share/ filter is denied: SUBACK 0x80 in MQTT 3.1.1, 0x9E in MQTT 5; the other filters are granted', async () => {
    const e = emu();
    const subs = [{ topic: '$share/g/demo/x', qos: 1 as const }, { topic: 'demo/y', qos: 1 as const }];
    expect(await granted(e, accountLogin(e, 'GID_share@@@a'), 4, subs)).toEqual([0x80, 1]);
    expect(await granted(e, accountLogin(e, 'GID_share@@@b'), 5, subs)).toEqual([0x9e, 1]);
    // Counted before each SUBACK was written: no wait needed.
    expect(e.stats().mqtt.rules).toEqual({ sharedSubscription: 2 });
  });
});

describe('rule: no QoS 2 in a persistent session (reference §5.7)', () => {
  const emu = useEmulator({}, 'test');
  const persistent: Record<Version, Partial<IConnectPacket>> = { 4: { clean: false }, 5: { clean: false, properties: { sessionExpiryInterval: 600 } } };

  it.each(VERSIONS)('a QoS 2 subscription is denied and a QoS 2 PUBLISH disconnects; QoS 1 passes, and QoS 2 does in a clean session (MQTT %i)', async (version) => {
    const e = emu();
    const subs = [{ topic: 'demo/q2', qos: 2 as const }, { topic: 'demo/q1', qos: 1 as const }];
    expect(await granted(e, accountLogin(e, 'GID_q2@@@p'), version, subs, persistent[version])).toEqual([DENIED[version], 1]);
    expect(await granted(e, accountLogin(e, 'GID_q2@@@c'), version, subs)).toEqual([2, 1]);
    const connect = version === 5 ? { properties: { sessionExpiryInterval: 600 } } : {};
    expectDisconnected(version, await refusedPublish(e, 'GID_q2@@@pub', version, 'demo/q2', 'm', { qos: 2 }, { clean: false, ...connect }), 0x9b, 'qos2PersistentSession', 'qos2PersistentSessions');
    expect(e.stats().mqtt.rules).toEqual({ qos2PersistentSession: 2 });
  });
});

describe('rule: MQTT 5 subscription identifier 1 to 268,435,455 (reference §8.2)', () => {
  const emu = useEmulator({}, 'test');

  it('268,435,455 is granted; 0 makes the broker DISCONNECT 0x82', async () => {
    const e = emu();
    expect(await granted(e, accountLogin(e, 'GID_sid@@@ok'), 5, [{ topic: 'demo/x', qos: 1 }], {}, { subscriptionIdentifier: 268_435_455 })).toEqual([1]);
    const { raw } = await rawLogin(e.mqttUrl, accountLogin(e, 'GID_sid@@@zero'), 5);
    raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'demo/x', qos: 1 }], properties: { subscriptionIdentifier: 0 } });
    expect(await raw.next('disconnect')).toMatchObject({ reasonCode: 0x82 });
    await raw.closed;
    expect(e.stats().mqtt.rules).toEqual({ subscriptionIdentifier: 1 });
  });
});

describe('lenient: every rule off, a plain MQTT broker', () => {
  const emu = useEmulator({ lenient: true }, 'test');

  it.each(VERSIONS)('accepts any parent, long topics, retained and will messages, QoS 2 in a persistent session, many subscriptions (MQTT %i)', async (version) => {
    const e = emu();
    const will = { topic: 'anything/will', payload: Buffer.from('w'), qos: 1 as const, retain: true };
    const client = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_len@@@dev'), { protocolVersion: version, will, clean: false, ...(version === 5 ? { properties: { sessionExpiryInterval: 60 } } : {}) });
    const filters = Array.from({ length: 40 }, (_, i) => `x${i}/${'y'.repeat(70)}`);
    await client.client.subscribeAsync([...filters, '#'], { qos: 2 });
    await client.client.publishAsync('anything/at/all', Buffer.alloc(100_000), { qos: 2, retain: true });
    expect((await client.next())[0]).toBe('anything/at/all');
    await client.client.endAsync();
    expect(e.stats().mqtt.rules).toEqual({});
  });

  it('a rule given explicitly still applies', async () => {
    const own = await startOwn({ lenient: true, parentTopics: ['demo'] });
    expect(await refusedPublish(own, 'GID_len@@@p', 4, 'other/x', 'm')).toEqual({ disconnect: undefined });
    expect(own.stats().mqtt.rules).toEqual({ parentTopic: 1 });
  });
});

describe('rules from the command line', () => {
  it('--parent-topics and the limits become options, and each refusal is one line on stderr naming the rule and its flag', async () => {
    const proc = await spawnCli(['emulator', '--mqtt-port', '0', '--no-ws', '--api-port', '0', '--parent-topics', 'fleet', '--groups', 'GID_cli', '--max-subscriptions', '1', '--json']);
    const info = JSON.parse(proc.firstLine) as { mqttUrl: string; apiEndpoint: string; instanceId: string; accessKeyId: string; accessKeySecret: string };
    const login = accountLogin(info as unknown as Emulator, 'GID_cli@@@dev');
    const client = await connectMqtt(info.mqttUrl, login);
    // mqtt.js turns a SUBACK failure into an error carrying the SUBACK.
    await expect(client.subscribeAsync(['fleet/a', 'fleet/b'], { qos: 1 })).rejects.toMatchObject({ packet: { granted: [1, 0x80] } });
    const end = ended(client);
    client.publish('demo/hello', 'not here', { qos: 1 });
    await end;
    await client.endAsync(true);
    const stats = (await (await fetch(`${info.apiEndpoint}/_emulator/stats`)).json()) as { mqtt: { rules: Record<string, number> } };
    expect(stats.mqtt.rules).toEqual({ parentTopic: 1, subscriptions: 1 });
    expect(await proc.stop('SIGTERM')).toBe(0);
    const lines = proc.stderr().trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^warn MQTT rule subscriptions \(option maxSubscriptions, flag --max-subscriptions\): GID_cli@@@dev: subscription number 2, over the limit of 1 per client/);
    expect(lines[1]).toMatch(/^warn MQTT rule parentTopic \(option parentTopics, flag --parent-topics\): GID_cli@@@dev: PUBLISH under parent topic 'demo'/);
  });

  it('--lenient turns the rules off', async () => {
    const proc = await spawnCli(['emulator', '--mqtt-port', '0', '--no-ws', '--api-port', '0', '--lenient', '--json']);
    const info = JSON.parse(proc.firstLine) as Emulator;
    const client = await connectMqtt(info.mqttUrl, accountLogin(info, 'GID_cli@@@lenient'));
    await client.publishAsync('any/parent', 'ok', { qos: 1, retain: true });
    await client.endAsync();
    expect(await proc.stop('SIGTERM')).toBe(0);
    expect(proc.stderr()).toBe('');
  });
});

/** Options are validated up front. */
describe('rule options', () => {
  it.each<[EmulatorOptions, RegExp]>([
    [{ parentTopics: ['a/b'] }, /parentTopics\[0\] must be a topic name/],
    [{ parentTopics: 'demo' as unknown as string[] }, /parentTopics must be an array of topic names or false/],
    [{ maxTopicLength: 0 }, /maxTopicLength must be an integer of 1 or more, or Infinity/],
    [{ maxKeepAliveSeconds: 70_000 }, /maxKeepAliveSeconds must be an integer from 1 to 65535, or Infinity/],
    [{ retainedMessages: 'drop' as 'ignore' }, /retainedMessages must be 'refuse', 'ignore' or 'allow'/],
    [{ lenient: 'yes' as unknown as boolean }, /lenient must be true or false/],
    [{ maxPacketBytes: 1 }, /maxPacketBytes must be an integer from 2 to 268435460/],
    [{ logger: {} as never }, /logger must be an object with debug, info, warn and error functions/],
  ])('%o is refused', async (options, message) => {
    await expect(startEmulator({ env: {}, ...options })).rejects.toMatchObject({ code: 'InvalidOption', message: expect.stringMatching(message) });
  });
});

/** RefreshDeviceCredential through pop-core: the old key stops authenticating. */
async function refreshOf(e: Emulator, clientId: string): Promise<void> {
  await callApi(e, 'RefreshDeviceCredential', { ClientId: clientId, InstanceId: e.instanceId });
}

/** An emulator of this test only (closed when it finishes). */
async function startOwn(options: EmulatorOptions): Promise<Emulator> {
  const e = await startEmulator({ env: {}, ...ANY_GROUP, ...options });
  onTestFinished(() => e.close());
  return e;
}
