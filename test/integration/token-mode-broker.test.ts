/**
 * Token mode on the emulator's broker (reference §5.3), seen from raw mqtt.js clients with tokens applied through the
 * real pop-core: the CONNECT password forms and refusal codes, resources and R/W permissions on PUBLISH and
 * SUBSCRIBE, `$SYS/uploadToken`, and the notices on expiry and revocation. The expected codes and payloads are
 * written out by hand from the reference; the connector is not involved (its tests are token-mode-connector.test.ts).
 */
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import type { MqttCredentials } from '../../src/signer/mqtt.js';
import { ANY_GROUP, callApi, clientLeaves, connackCode, useEmulator } from '../helpers/emulator.js';
import { reportedConnected } from '../helpers/takeover.js';

/** The emulator's clock: real time plus a skew each test may move (kept well inside the gateway's ±15 min window). */
let skew = 0;
const now = (): number => Date.now() + skew;
const TEN_MINUTES = 10 * 60_000;

/** ApplyToken through pop-core; `resources` must already be in dictionary order. */
async function applyToken(e: Emulator, resources: string[], actions: 'R' | 'W' | 'R,W', lifetimeMs = TEN_MINUTES): Promise<{ token: string; expireTime: number }> {
  const expireTime = Math.floor(now()) + lifetimeMs;
  const body = await callApi<{ Token: string }>(e, 'ApplyToken', { Resources: resources.join(','), InstanceId: e.instanceId, ExpireTime: String(expireTime), Actions: actions });
  return { token: body.Token, expireTime };
}

function tokenLogin(e: Emulator, clientId: string, password: string, overrides: Partial<{ accessKeyId: string; instanceId: string }> = {}): MqttCredentials {
  return { clientId, username: `Token|${overrides.accessKeyId ?? e.accessKeyId}|${overrides.instanceId ?? e.instanceId}`, password };
}

/** What a client saw, in order: `message <topic> <payload>`, `disconnect 0x..`, `close`. */
interface Watched {
  readonly client: MqttClient;
  readonly seen: string[];
  /** Resolves once the connection closed, with everything seen. */
  readonly closed: Promise<string[]>;
  /** The next message (already received ones first). */
  next(): Promise<[string, string]>;
}

/** Connect (no reconnects), recording what arrives from the CONNACK on; ended when the test ends. */
async function watch(url: string, credentials: MqttCredentials, extra: IClientOptions = {}): Promise<Watched> {
  const client = connect(url, { ...credentials, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5_000, ...extra });
  onTestFinished(() => client.endAsync(true));
  const seen: string[] = [];
  const messages: [string, string][] = [];
  const waiting: ((message: [string, string]) => void)[] = [];
  client.on('message', (topic, payload) => {
    seen.push(`message ${topic} ${payload.toString()}`);
    const waiter = waiting.shift();
    if (waiter) waiter([topic, payload.toString()]);
    else messages.push([topic, payload.toString()]);
  });
  client.on('disconnect', (packet) => seen.push(`disconnect 0x${(packet.reasonCode ?? 0).toString(16)}`));
  const closed = new Promise<string[]>((resolve) => client.once('close', () => resolve([...seen, 'close'])));
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return {
    client,
    seen,
    closed,
    next: () => {
      const message = messages.shift();
      return message ? Promise.resolve(message) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

const notice = (code: number, type: string): string => `message $SYS/tokenInvalidNotice {"code":${code},"type":"${type}"}`;

describe('Token mode CONNECT', () => {
  const emu = useEmulator({ now, parentTopics: ['demo', 'other'], wsPort: false });
  beforeEach(() => {
    skew = 0;
  });

  it.each([4, 5] as const)('accepts each documented password form (MQTT %s)', async (protocolVersion) => {
    const e = emu();
    const r = await applyToken(e, ['demo/in'], 'R');
    const w = await applyToken(e, ['demo/out'], 'W');
    const rw = await applyToken(e, ['demo/both'], 'R,W');
    const forms = [`R|${r.token}`, `W|${w.token}`, `R|${r.token}|W|${w.token}`, `W|${w.token}|R|${r.token}`, `RW|${rw.token}`, `R|${r.token}|W|${w.token}|RW|${rw.token}`];
    for (const [i, password] of forms.entries()) {
      expect(await connackCode(e.mqttUrl, tokenLogin(e, `GID_tok@@@form-${protocolVersion}-${i}`, password), { protocolVersion }), password.replace(/[A-Za-z0-9+/=]{20,}/g, '<token>')).toBe(0);
    }
  });

  it.each([
    [4, { notAccount: 4, malformed: 4, forged: 4, altered: 4, wrongType: 5, revoked: 5, expired: 5, otherInstance: 5, badClientId: 2 }],
    [5, { notAccount: 0x86, malformed: 0x86, forged: 0x86, altered: 0x86, wrongType: 0x87, revoked: 0x87, expired: 0x87, otherInstance: 0x87, badClientId: 0x85 }],
  ] as const)('refuses with the codes of the other modes (MQTT %s)', async (protocolVersion, expected) => {
    const e = emu();
    const w = await applyToken(e, ['demo/out'], 'W');
    const revoked = await applyToken(e, ['demo/out'], 'W');
    await callApi(e, 'RevokeToken', { Token: revoked.token, InstanceId: e.instanceId });
    const short = await applyToken(e, ['demo/out'], 'W', 65_000);
    // One character of the secret part (bytes 16 on: Base64 characters 22 on) changed: a known token name, a wrong secret.
    const altered = w.token.slice(0, 30) + (w.token[30] === 'A' ? 'B' : 'A') + w.token.slice(31);
    const code = (password: string, overrides: Partial<{ accessKeyId: string; instanceId: string }> = {}, clientId = 'GID_tok@@@refused'): Promise<number> =>
      connackCode(e.mqttUrl, tokenLogin(e, clientId, password, overrides), { protocolVersion });
    expect(await code(`W|${w.token}`, { accessKeyId: 'LTAInotTheAccount' })).toBe(expected.notAccount);
    expect(await code(w.token)).toBe(expected.malformed);
    expect(await code(`X|${w.token}`)).toBe(expected.malformed);
    expect(await code(`W|${w.token}|W|${w.token}`)).toBe(expected.malformed);
    expect(await code('W|not-a-token')).toBe(expected.forged);
    expect(await code(`W|${'A'.repeat(66)}==`)).toBe(expected.forged);
    expect(await code(`W|${altered}`)).toBe(expected.altered);
    expect(await code(`R|${w.token}`)).toBe(expected.wrongType);
    expect(await code(`W|${revoked.token}`)).toBe(expected.revoked);
    expect(await code(`W|${w.token}`, { instanceId: 'mqtt-other-instance' })).toBe(expected.otherInstance);
    expect(await code(`W|${w.token}`, {}, 'no-group-separator')).toBe(expected.badClientId);
    skew = short.expireTime - Date.now();
    expect(await code(`W|${short.token}`)).toBe(expected.expired);
    // One bad token among good ones refuses the whole CONNECT.
    expect(await code(`W|${w.token}|R|${w.token}`)).toBe(expected.wrongType);
  });
});

describe('Token mode CONNECT refusals name no token', () => {
  const emu = useEmulator({ now, parentTopics: ['demo'], wsPort: false });

  it('MQTT 5: the Reason String of a refused CONNECT never quotes the password, swapped parts included', async () => {
    const e = emu();
    const w = await applyToken(e, ['demo/out'], 'W');
    for (const password of [`${w.token}|W`, `W|${w.token}|`, `W|${w.token.slice(0, 40)}`]) {
      const client = connect(e.mqttUrl, { ...tokenLogin(e, 'GID_tok@@@reason', password), protocolVersion: 5, reconnectPeriod: 0 });
      const connack = await new Promise<{ reasonCode?: number; properties?: { reasonString?: string } }>((resolve) => {
        client.on('packetreceive', (packet) => {
          if (packet.cmd === 'connack') resolve(packet);
        });
      });
      await client.endAsync(true);
      expect(connack.reasonCode).toBe(0x86);
      expect(connack.properties?.reasonString).toBeDefined();
      expect(connack.properties?.reasonString).not.toContain(w.token.slice(0, 20));
    }
  });
});

describe('Token mode resources and permissions', () => {
  const emu = useEmulator({ now, parentTopics: ['demo', 'other'], wsPort: false });
  beforeEach(() => {
    skew = 0;
  });

  it('MQTT 3.1.1: a PUBLISH within the W resources is routed; outside them the client gets tokenInvalidNotice code 4, then is disconnected', async () => {
    const e = emu();
    const r = await applyToken(e, ['demo/#'], 'R');
    const w = await applyToken(e, ['demo/out/#'], 'W');
    const reader = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@reader', `R|${r.token}`));
    await reader.client.subscribeAsync('demo/#', { qos: 1 });
    const writer = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@writer', `W|${w.token}`));
    await writer.client.publishAsync('demo/out/a', 'inside', { qos: 1 });
    expect(await reader.next()).toEqual(['demo/out/a', 'inside']);

    const rulesBefore = e.stats().mqtt.rules['tokenResource'] ?? 0;
    writer.client.publish('other/x', 'outside', { qos: 1 });
    expect(await writer.closed).toEqual([notice(4, 'W'), 'close']);
    expect(e.stats().mqtt.rules['tokenResource']).toBe(rulesBefore + 1);
    // A covered parent with an uncovered subtopic is outside too.
    const again = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@writer', `W|${w.token}`));
    again.client.publish('demo/in', 'outside', { qos: 0 });
    expect(await again.closed).toEqual([notice(4, 'W'), 'close']);
  });

  it('MQTT 3.1.1: publishing with only an R token is a permission mismatch (code 5); subscribing with only a W token too', async () => {
    const e = emu();
    const r = await applyToken(e, ['demo/#'], 'R');
    const w = await applyToken(e, ['demo/#'], 'W');
    const reader = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@r-only', `R|${r.token}`));
    reader.client.publish('demo/x', 'no W', { qos: 1 });
    expect(await reader.closed).toEqual([notice(5, 'R'), 'close']);
    const writer = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@w-only', `W|${w.token}`));
    writer.client.subscribe('demo/x');
    expect(await writer.closed).toEqual([notice(5, 'W'), 'close']);
  });

  it('MQTT 3.1.1: a SUBSCRIBE within the R resources is granted; a filter broader than any one resource is code 4', async () => {
    const e = emu();
    const r = await applyToken(e, ['demo/a/#', 'demo/b/+'], 'R');
    const reader = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@sub', `R|${r.token}`));
    const granted = await reader.client.subscribeAsync(['demo/a/#', 'demo/a/x/y', 'demo/b/+', 'demo/b/c'], { qos: 1 });
    expect(granted.map((g) => g.qos)).toEqual([1, 1, 1, 1]);
    reader.client.subscribe('demo/#');
    expect(await reader.closed).toEqual([notice(4, 'R'), 'close']);
  });

  it('MQTT 5: the notice, then DISCONNECT 0x87, for a PUBLISH and a SUBSCRIBE outside the tokens', async () => {
    const e = emu();
    const token = await applyToken(e, ['demo/rw'], 'R,W');
    const pub = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@v5-pub', `RW|${token.token}`), { protocolVersion: 5 });
    await pub.client.publishAsync('demo/rw', 'inside', { qos: 1 });
    pub.client.publish('other/x', 'outside', { qos: 1 });
    expect(await pub.closed).toEqual([notice(4, 'RW'), 'disconnect 0x87', 'close']);
    const sub = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@v5-sub', `RW|${token.token}`), { protocolVersion: 5 });
    await sub.client.subscribeAsync('demo/rw');
    sub.client.subscribe('other/#');
    expect(await sub.closed).toEqual([notice(4, 'RW'), 'disconnect 0x87', 'close']);
  });

  it('$SYS stays closed to Token-mode clients (a SUBACK failure, as for the other modes)', async () => {
    const e = emu();
    const r = await applyToken(e, ['demo/#'], 'R');
    const reader = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@sys', `R|${r.token}`));
    await expect(reader.client.subscribeAsync('$SYS/tokenInvalidNotice')).rejects.toMatchObject({ packet: { cmd: 'suback', granted: [128] } });
    expect(reader.seen).toEqual([]);
  });

  it('receives P2P messages without an R token by default', async () => {
    const e = emu();
    const w = await applyToken(e, ['demo/p2p/GID_tok@@@p2p-to'], 'W');
    const mine = await applyToken(e, ['demo/other'], 'W');
    const receiver = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@p2p-to', `W|${mine.token}`));
    const sender = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@p2p-from', `W|${w.token}`));
    await sender.client.publishAsync('demo/p2p/GID_tok@@@p2p-to', 'direct', { qos: 1 });
    expect(await receiver.next()).toEqual(['demo/p2p/GID_tok@@@p2p-to', 'direct']);
  });
});

describe('$SYS/uploadToken', () => {
  const emu = useEmulator({ now, parentTopics: ['demo', 'other'], wsPort: false });
  beforeEach(() => {
    skew = 0;
  });

  it.each([0, 1, 2] as const)('replaces the session token of its type before the acknowledgement, never routed, no new CONNECT (QoS %s)', async (qos) => {
    const e = emu();
    const first = await applyToken(e, ['demo/a/#'], 'W');
    const second = await applyToken(e, ['demo/b/#'], 'W');
    const routed: string[] = [];
    const onPublish = (packet: { topic: string }): void => {
      routed.push(packet.topic);
    };
    e.broker.on('publish', onPublish);
    onTestFinished(() => {
      e.broker.off('publish', onPublish);
    });
    const clientId = `GID_tok@@@up-${qos}`;
    const device = await watch(e.mqttUrl, tokenLogin(e, clientId, `W|${first.token}`));
    const connacks = e.stats().mqtt.connacks['0'];
    const connected = reportedConnected(e);

    await device.client.publishAsync('$SYS/uploadToken', JSON.stringify({ Token: second.token, type: 'W' }), { qos });
    // QoS 0 has no acknowledgement: a QoS 1 PUBLISH behind it is handled after it.
    await device.client.publishAsync('demo/b/x', 'with the new token', { qos: 1 });
    expect(routed.filter((t) => t.startsWith('$SYS/uploadToken'))).toEqual([]);
    expect(routed).toContain('demo/b/x');
    expect(e.stats().mqtt.connacks['0']).toBe(connacks);
    expect(connected).toEqual([]);
    // The old token's resources went with it.
    device.client.publish('demo/a/x', 'old resource', { qos: 1 });
    expect(await device.closed).toEqual([notice(4, 'W'), 'close']);
  });

  it('adds a token of a type the session did not hold', async () => {
    const e = emu();
    const w = await applyToken(e, ['demo/out'], 'W');
    const r = await applyToken(e, ['demo/in'], 'R');
    const device = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@up-add', `W|${w.token}`));
    await device.client.publishAsync('$SYS/uploadToken', JSON.stringify({ Token: r.token, type: 'R' }), { qos: 1 });
    const [grant] = await device.client.subscribeAsync('demo/in', { qos: 1 });
    expect(grant?.qos).toBe(1);
    await device.client.publishAsync('demo/out', 'still W', { qos: 1 });
  });

  it.each([
    ['not JSON', 'Token=abc'],
    ['the wrong casing', '{"token":"abc","type":"W"}'],
    ['an unknown type', '{"Token":"abc","type":"X"}'],
    ['an empty token', '{"Token":"","type":"W"}'],
  ])('a payload with %s disconnects without a notice (MQTT 3.1.1 and 5: DISCONNECT 0x99)', async (_what, payload) => {
    const e = emu();
    const w = await applyToken(e, ['demo/out'], 'W');
    const before = e.stats().mqtt.rules['tokenUpload'] ?? 0;
    const v3 = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@bad-up-3', `W|${w.token}`));
    v3.client.publish('$SYS/uploadToken', payload, { qos: 1 });
    expect(await v3.closed).toEqual(['close']);
    const v5 = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@bad-up-5', `W|${w.token}`), { protocolVersion: 5 });
    v5.client.publish('$SYS/uploadToken', payload, { qos: 1 });
    expect(await v5.closed).toEqual(['disconnect 0x99', 'close']);
    expect(e.stats().mqtt.rules['tokenUpload']).toBe(before + 2);
  });

  it('a token that does not verify gets its notice code (revoked 3, claimed with another type 5, forged 1), then the disconnect', async () => {
    const e = emu();
    const w = await applyToken(e, ['demo/out'], 'W');
    const revoked = await applyToken(e, ['demo/out'], 'W');
    await callApi(e, 'RevokeToken', { Token: revoked.token, InstanceId: e.instanceId });
    for (const [upload, expected] of [
      [{ Token: revoked.token, type: 'W' }, notice(3, 'W')],
      [{ Token: w.token, type: 'R' }, notice(5, 'R')],
      [{ Token: 'not-a-token', type: 'RW' }, notice(1, 'RW')],
    ] as const) {
      const device = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@bad-token', `W|${w.token}`));
      device.client.publish('$SYS/uploadToken', JSON.stringify(upload), { qos: 1 });
      expect(await device.closed).toEqual([expected, 'close']);
    }
  });

  it('a client of another mode cannot upload (the parent topic rule disconnects it, as before)', async () => {
    const e = emu();
    const body = await callApi(e, 'RegisterDeviceCredential', { ClientId: 'GID_tok@@@dc', InstanceId: e.instanceId });
    const { DeviceCredential } = await import('../../src/credential.js');
    const { signDeviceCredential } = await import('../../src/signer/mqtt.js');
    const device = await watch(e.mqttUrl, signDeviceCredential(DeviceCredential.fromWire(body)));
    const w = await applyToken(e, ['demo/out'], 'W');
    device.client.publish('$SYS/uploadToken', JSON.stringify({ Token: w.token, type: 'W' }), { qos: 1 });
    expect(await device.closed).toEqual(['close']);
  });
});

describe('token expiry and revocation', () => {
  const emu = useEmulator({ now, parentTopics: ['demo'], wsPort: false });
  beforeEach(() => {
    skew = 0;
  });

  it('on the now clock: tokenExpireNotice within the lead, then tokenInvalidNotice code 2 and the disconnect at ExpireTime (checkTokens)', async () => {
    const e = emu();
    const w = await applyToken(e, ['demo/#'], 'W');
    const device = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@expiry', `W|${w.token}`));
    e.checkTokens();
    await device.client.publishAsync('demo/x', 'before the lead', { qos: 1 });
    expect(device.seen).toEqual([]);

    skew = w.expireTime - 5 * 60_000 - Date.now();
    e.checkTokens();
    expect(await device.next()).toEqual(['$SYS/tokenExpireNotice', `{"expireTime":${w.expireTime},"type":"W"}`]);
    // Sent once, and the session goes on.
    e.checkTokens();
    await device.client.publishAsync('demo/x', 'within the lead', { qos: 1 });
    expect(device.seen).toHaveLength(1);

    skew = w.expireTime - Date.now();
    e.checkTokens();
    expect(await device.closed).toEqual([`message $SYS/tokenExpireNotice {"expireTime":${w.expireTime},"type":"W"}`, notice(2, 'W'), 'close']);
    expect(e.stats().mqtt.rules['tokenInvalid']).toBeGreaterThanOrEqual(1);
  });

  it('a token used after its ExpireTime is refused with code 2 even before the timers look (MQTT 5)', async () => {
    const e = emu();
    const w = await applyToken(e, ['demo/#'], 'W');
    const device = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@late', `W|${w.token}`), { protocolVersion: 5 });
    skew = w.expireTime - Date.now();
    device.client.publish('demo/x', 'too late', { qos: 1 });
    const seen = await device.closed;
    expect(seen.filter((s) => !s.startsWith('message $SYS/tokenExpireNotice'))).toEqual([notice(2, 'W'), 'disconnect 0x87', 'close']);
  });

  it('RevokeToken: tokenInvalidNotice code 3, then the disconnect; the session queries follow (MQTT 3.1.1 and 5)', async () => {
    const e = emu();
    const r = await applyToken(e, ['demo/#'], 'R');
    const online = async (clientId: string): Promise<boolean> =>
      (await callApi<{ OnlineStatus: boolean }>(e, 'QuerySessionByClientId', { ClientId: clientId, InstanceId: e.instanceId })).OnlineStatus;
    const v3 = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@revoke-3', `R|${r.token}`));
    const v5 = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@revoke-5', `R|${r.token}`), { protocolVersion: 5 });
    expect(await online('GID_tok@@@revoke-3')).toBe(true);
    const batch = await callApi<{ OnlineStatusList: { ClientId: string; OnlineStatus: boolean }[] }>(e, 'BatchQuerySessionByClientIds', {
      InstanceId: e.instanceId,
      'ClientIdList.1': 'GID_tok@@@revoke-3',
      'ClientIdList.2': 'GID_tok@@@revoke-5',
    });
    expect(batch.OnlineStatusList).toEqual([{ ClientId: 'GID_tok@@@revoke-3', OnlineStatus: true }, { ClientId: 'GID_tok@@@revoke-5', OnlineStatus: true }]);

    const gone = Promise.all(['GID_tok@@@revoke-3', 'GID_tok@@@revoke-5'].map((id) => clientLeaves(e, id)));
    await callApi(e, 'RevokeToken', { Token: r.token, InstanceId: e.instanceId });
    expect(await v3.closed).toEqual([notice(3, 'R'), 'close']);
    expect(await v5.closed).toEqual([notice(3, 'R'), 'disconnect 0x87', 'close']);
    await gone;
    expect(await online('GID_tok@@@revoke-3')).toBe(false);
    expect(await online('GID_tok@@@revoke-5')).toBe(false);
    expect(await connackCode(e.mqttUrl, tokenLogin(e, 'GID_tok@@@revoke-3', `R|${r.token}`))).toBe(5);
  });

  it('a session holding a revoked token among others is ended; sessions of other tokens are not', async () => {
    const e = emu();
    const r = await applyToken(e, ['demo/#'], 'R');
    const w = await applyToken(e, ['demo/#'], 'W');
    const other = await applyToken(e, ['demo/#'], 'W');
    const both = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@both', `R|${r.token}|W|${w.token}`));
    const bystander = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@bystander', `W|${other.token}`));
    await callApi(e, 'RevokeToken', { Token: w.token, InstanceId: e.instanceId });
    expect(await both.closed).toEqual([notice(3, 'W'), 'close']);
    await bystander.client.publishAsync('demo/x', 'still here', { qos: 1 });
  });
});

describe('token options of the emulator', () => {
  async function emulatorForTest(options: EmulatorOptions): Promise<Emulator> {
    skew = 0;
    const e = await startEmulator({ env: {}, ...ANY_GROUP, wsPort: false, now, parentTopics: ['demo'], ...options });
    onTestFinished(() => e.close());
    return e;
  }

  it('tokenExpireNoticeLeadMs: the broker\'s own timer sends the notice right after the CONNACK when the token is already within the lead', async () => {
    const e = await emulatorForTest({ tokenExpireNoticeLeadMs: TEN_MINUTES });
    const w = await applyToken(e, ['demo/#'], 'W');
    const device = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@lead', `W|${w.token}`));
    expect(await device.next()).toEqual(['$SYS/tokenExpireNotice', `{"expireTime":${w.expireTime},"type":"W"}`]);
  });

  it('the broker\'s own timer ends a session whose token runs out while it is connected', async () => {
    const e = await emulatorForTest({});
    const w = await applyToken(e, ['demo/#'], 'W', 65_000);
    // 1.5 s of real time left on the emulator's clock: time to connect on a busy machine, then the timer fires.
    skew = w.expireTime - 1_500 - Date.now();
    const device = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@timer', `W|${w.token}`));
    expect(await device.closed).toEqual([`message $SYS/tokenExpireNotice {"expireTime":${w.expireTime},"type":"W"}`, notice(2, 'W'), 'close']);
  });

  it('tokenP2pNeedsRead: a P2P message to a client without R on its P2P topic is not delivered', async () => {
    const e = await emulatorForTest({ tokenP2pNeedsRead: true });
    const w = await applyToken(e, ['demo/in', 'demo/p2p/GID_tok@@@p2p-r'], 'W');
    const r = await applyToken(e, ['demo/in'], 'R');
    const receiver = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@p2p-r', `R|${r.token}`));
    await receiver.client.subscribeAsync('demo/in', { qos: 1 });
    const sender = await watch(e.mqttUrl, tokenLogin(e, 'GID_tok@@@p2p-s', `W|${w.token}`));
    await sender.client.publishAsync('demo/p2p/GID_tok@@@p2p-r', 'dropped', { qos: 1 });
    await sender.client.publishAsync('demo/in', 'delivered', { qos: 1 });
    // Same sender, same QoS: had the P2P message been delivered it would have come first.
    expect(await receiver.next()).toEqual(['demo/in', 'delivered']);
    expect(e.stats().mqtt.rules['tokenResource']).toBe(1);
  });

  it('refuses a bad tokenExpireNoticeLeadMs or tokenP2pNeedsRead, naming it', async () => {
    await expect(startEmulator({ env: {}, tokenExpireNoticeLeadMs: -1 })).rejects.toThrow('Emulator option tokenExpireNoticeLeadMs must be an integer number of ms from 0 to 2592000000 (30 days), not -1');
    await expect(startEmulator({ env: {}, tokenP2pNeedsRead: 'yes' as unknown as boolean })).rejects.toThrow('Emulator option tokenP2pNeedsRead must be true or false, not "yes"');
  });
});


