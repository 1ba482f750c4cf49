/**
 * The connector against a broker that is not ours: Debian's Mosquitto (2.0), in MQTT 3.1.1 and MQTT 5, with a
 * password file holding the device's derived login and an ACL. Independent peers check what went over the wire:
 * mosquitto_pub and Debian's python3-paho-mqtt (1.6, MQTT 5). `.ci/run` installs the packages and sets
 * APSARAMQ_REQUIRE_INTEROP=1, so in CI a missing binary fails the run instead of skipping it.
 *
 * Measured here (Mosquitto 2.0.11): a takeover closes the old MQTT 5 connection without DISCONNECT 0x8E, and a
 * refused MQTT 5 login gets CONNACK 0x87 (not 0x86).
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { describe, expect, it, onTestFinished } from 'vitest';
import { type ConnectDeviceOptions, connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import { type CredentialRequest, DeviceCredential } from '../../src/credential.js';
import { type ApsaraMqDeviceError, PublishError } from '../../src/errors.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { MOSQUITTO, type Mosquitto, mosquittoPrograms, startMosquitto as startBroker } from '../helpers/mosquitto.js';
import { expectRoundTrip } from '../helpers/mqtt.js';

const run = promisify(execFile);

const bin = MOSQUITTO;
/** Debian's python (the one on PATH may be another, without paho). */
const PYTHON = '/usr/bin/python3';

const { available, skipped: reason } = mosquittoPrograms(['mosquitto', 'passwd', 'pub', 'sub']);
// paho is optional even in CI (.ci/run installs mosquitto only): its test says so when skipped.
const hasPaho = statSync(PYTHON, { throwIfNoEntry: false }) !== undefined && (await run(PYTHON, ['-c', 'import paho.mqtt.client']).then(() => true, () => false));
const pahoReason = hasPaho ? '' : ' (skipped: Debian python3-paho-mqtt is not installed)';

function credential(device: string, keyId = `DC.${device}Key`, secret = `DC.${device}Secret`): DeviceCredential {
  return new DeviceCredential({ clientId: `GID_interop@@@${device}`, instanceId: 'mqtt-interop', deviceAccessKeyId: keyId, deviceAccessKeySecret: secret });
}

/** Mosquitto with these devices' derived logins in its password file (and an ACL when given). */
function startMosquitto(devices: DeviceCredential[], acl?: string): Promise<Mosquitto> {
  return startBroker(devices.map((d) => signDeviceCredential(d)), acl);
}

async function open(options: ConnectDeviceOptions): Promise<DeviceConnection> {
  const conn = await connectDevice(options);
  onTestFinished(() => conn.end(true));
  return conn;
}

/** Publish with mosquitto_pub, MQTT 5, as `who`, with extra arguments. */
async function mosquittoPub(broker: Mosquitto, who: DeviceCredential, topic: string, message: string, extra: string[] = []): Promise<void> {
  const signed = signDeviceCredential(who);
  await run(bin.pub, ['-h', '127.0.0.1', '-p', String(broker.port), '-V', 'mqttv5', '-i', signed.clientId, '-u', signed.username, '-P', signed.password, '-t', topic, '-m', message, '-q', '1', ...extra]);
}

describe.skipIf(!available)(`the connector against a real Mosquitto broker, MQTT 3.1.1${reason}`, () => {
  it('connects with the derived username and password, publishes and receives', async () => {
    const device = credential('v3-1');
    const broker = await startMosquitto([device]);
    const conn = await open({ credential: device, brokerUrl: broker.url });
    await expectRoundTrip(conn, 'interop/echo', 'round trip');
  });

  it('a credential Mosquitto does not know is refused with a typed error, no loop', async () => {
    const broker = await startMosquitto([credential('v3-2')]);
    const stale = credential('v3-2', 'DC.v3-2Key', 'DC.other-secret');
    const error = await connectDevice({ credential: stale, brokerUrl: broker.url }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'CredentialRejected' });
    expect([4, 5]).toContain((error as { connackCode: number }).connackCode);
  });
});

describe.skipIf(!available)(`the connector against a real Mosquitto broker, MQTT 5${reason}`, () => {
  it('user properties from mosquitto_pub -D reach the connector', async () => {
    const device = credential('v5-props');
    const peer = credential('v5-peer');
    const broker = await startMosquitto([device, peer]);
    const conn = await open({ credential: device, brokerUrl: broker.url, protocolVersion: 5, userProperties: { firmware: '1.2.3' } });
    await conn.subscribe('props/in');
    const got = once(conn, 'message');
    await mosquittoPub(broker, peer, 'props/in', 'hello', ['-D', 'publish', 'user-property', 'origin', 'mosquitto_pub']);
    const [, payload, packet] = (await got) as [string, Buffer, { properties?: { userProperties?: Record<string, unknown> } }];
    expect(payload.toString()).toBe('hello');
    expect(packet.properties?.userProperties).toEqual({ origin: 'mosquitto_pub' });
  });

  it.skipIf(!hasPaho)(`user properties of a publish reach paho (MQTT 5)${pahoReason}`, async () => {
    const device = credential('v5-props-out');
    const peer = credential('v5-paho');
    const broker = await startMosquitto([device, peer]);
    const conn = await open({ credential: device, brokerUrl: broker.url, protocolVersion: 5 });
    const signed = signDeviceCredential(peer);
    const script = `
import json, sys
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
c = mqtt.Client(client_id=sys.argv[1], protocol=mqtt.MQTTv5)
c.username_pw_set(sys.argv[2], sys.argv[3])
def on_connect(client, userdata, flags, rc, properties=None):
    client.subscribe('props/out', qos=1)
def on_subscribe(client, userdata, mid, granted, properties=None):
    print('READY', flush=True)
def on_message(client, userdata, msg):
    props = getattr(msg.properties, 'UserProperty', [])
    print(json.dumps({'topic': msg.topic, 'payload': msg.payload.decode(), 'userProperties': props}), flush=True)
    client.disconnect()
c.on_connect = on_connect
c.on_subscribe = on_subscribe
c.on_message = on_message
c.connect('127.0.0.1', int(sys.argv[4]))
c.loop_forever()
`;
    const paho = spawn(PYTHON, ['-c', script, signed.clientId, signed.username, signed.password, String(broker.port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    onTestFinished(() => {
      if (paho.exitCode === null) paho.kill('SIGKILL');
    });
    const lines = createInterface({ input: paho.stdout! })[Symbol.asyncIterator]();
    expect((await lines.next()).value).toBe('READY');
    await conn.publish('props/out', 'to paho', { qos: 1, properties: { userProperties: { sensor: 'temp', unit: ['C', 'celsius'] } } });
    const line = (await lines.next()).value as string;
    expect(JSON.parse(line)).toEqual({ topic: 'props/out', payload: 'to paho', userProperties: [['sensor', 'temp'], ['unit', 'C'], ['unit', 'celsius']] });
  });

  it('session expiry passes through: a persistent session gets what was published while it was away; without it, nothing', async () => {
    const device = credential('v5-session');
    const peer = credential('v5-peer2');
    const broker = await startMosquitto([device, peer]);
    const options: ConnectDeviceOptions = { credential: device, brokerUrl: broker.url, protocolVersion: 5, clean: false, sessionExpiryInterval: 300 };
    const first = await open(options);
    await first.subscribe('session/#', { qos: 1 });
    await first.end();
    await mosquittoPub(broker, peer, 'session/x', 'while away');
    const again = await open(options);
    expect(again.sessionPresent).toBe(true);
    // Held until connectDevice() resolved, so a listener added now still gets the queued message.
    const [topic, payload] = (await once(again, 'message')) as [string, Buffer];
    expect([topic, payload.toString()]).toEqual(['session/x', 'while away']);
    await again.end();

    // sessionExpiryInterval 0 (the MQTT 5 default): the session ends with the connection, even with clean: false.
    const brief: ConnectDeviceOptions = { ...options, sessionExpiryInterval: 0 };
    await (await open(brief)).end();
    expect((await open(brief)).sessionPresent).toBe(false);
  });

  it('a refused MQTT 5 login (reason 0x87) runs the same recovery ladder, and heals onto the fresh credential', async () => {
    const fresh = credential('v5-ladder', 'DC.freshKey', 'DC.freshSecret');
    const stale = credential('v5-ladder', 'DC.staleKey', 'DC.staleSecret');
    const broker = await startMosquitto([fresh]);
    const requests: CredentialRequest['reason'][] = [];
    const conn = await open({
      brokerUrl: broker.url,
      protocolVersion: 5,
      credential: async (request) => {
        requests.push(request.reason);
        return request.reason === 'connect' ? stale : fresh;
      },
    });
    expect(requests).toEqual(['connect', 'rejected']);
    expect(conn.credential.deviceAccessKeyId).toBe('DC.freshKey');
    // And a credential that stays refused ends with CredentialRejected carrying the MQTT 5 reason code.
    const error = await connectDevice({ credential: stale, brokerUrl: broker.url, protocolVersion: 5 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'CredentialRejected' });
    expect([0x86, 0x87]).toContain((error as { connackCode: number }).connackCode);
    expect((error as Error).message).toMatch(/reason 0x8[67]/);
  });

  it('a publish the ACL denies settles at once with PublishRejected and its reason code (PUBACK 0x87), the session stays', async () => {
    const device = credential('v5-acl');
    const signed = signDeviceCredential(device);
    const broker = await startMosquitto([device], `user ${signed.username}\ntopic readwrite allowed/#\n`);
    const conn = await open({ credential: device, brokerUrl: broker.url, protocolVersion: 5 });
    let offline = 0;
    conn.on('offline', () => (offline += 1));
    const error = await conn.publish('denied/x', 'x', { qos: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PublishError);
    expect(error).toMatchObject({ code: 'PublishRejected', reasonCode: 0x87, topic: 'denied/x' });
    await expectRoundTrip(conn, 'allowed/x', 'fine');
    expect(offline).toBe(0);
  });

  it('two connectors with one ClientId keep taking each other over (suspected: Mosquitto sends no 0x8E), and neither gives up short of takeover.giveUpAfter', async () => {
    const device = credential('v5-twin');
    const broker = await startMosquitto([device]);
    // giveUpAfter is finite, so a close is possible: one that came before 50 takeovers in a row would be a defect.
    const options: ConnectDeviceOptions = { credential: device, brokerUrl: broker.url, protocolVersion: 5, reconnect: { minDelayMs: 20, maxDelayMs: 200 }, takeover: { minDelayMs: 100, maxDelayMs: 400, giveUpAfter: 50 } };
    const closed: unknown[] = [];
    const takeovers: { who: string; confirmed: boolean; inARow: number }[] = [];
    let bothTookOver: () => void = () => {};
    const both = new Promise<void>((resolve) => (bothTookOver = resolve));
    const watch = (conn: DeviceConnection, who: string): void => {
      conn.on('closed', (info) => closed.push({ who, ...info }));
      conn.on('takeover', ({ confirmed, inARow }) => {
        takeovers.push({ who, confirmed, inARow });
        if (takeovers.some((t) => t.who === 'a') && takeovers.some((t) => t.who === 'b')) bothTookOver();
      });
    };
    const a = await open(options);
    watch(a, 'a');
    const b = await open(options);
    watch(b, 'b');
    await both;
    expect(takeovers.every((t) => !t.confirmed)).toBe(true);
    // Each side's run grows one at a time (1, 2, …), never past the limit.
    for (const who of ['a', 'b']) {
      const runs = takeovers.filter((t) => t.who === who).map((t) => t.inARow);
      expect(runs, who).toEqual(runs.map((_n, i) => (runs[0] ?? 1) + i));
    }
    expect(broker.log()).toContain('already connected, closing old connection');
    expect(closed).toEqual([]);
  });

  it('Mosquitto restarting three times (down long enough for a CONNECT to fail) is not a takeover: the connection comes back each time', async () => {
    const device = credential('v5-restart');
    const broker = await startMosquitto([device]);
    const conn = await open({ credential: device, brokerUrl: broker.url, protocolVersion: 5, reconnect: { minDelayMs: 20, maxDelayMs: 100 } });
    const takeovers: unknown[] = [];
    conn.on('takeover', (t) => takeovers.push(t));
    for (let i = 0; i < 3; i++) {
      // Down for as long as it takes one CONNECT to fail (the second 'reconnecting' of this outage): a failed CONNECT
      // is how the connector knows the broker, not a twin, closed the session.
      const failedOnce = new Promise<void>((resolve) => {
        let scheduled = 0;
        const onReconnecting = (): void => {
          scheduled += 1;
          if (scheduled < 2) return;
          conn.off('reconnecting', onReconnecting);
          resolve();
        };
        conn.on('reconnecting', onReconnecting);
      });
      await broker.stop();
      await failedOnce;
      const back = once(conn, 'online');
      await broker.start();
      await back;
    }
    expect(takeovers).toEqual([]);
    await expectRoundTrip(conn, 'restart/x', 'back');
    const closedInfo = await new Promise<{ error?: ApsaraMqDeviceError }>((resolve) => {
      conn.once('closed', resolve);
      void conn.end();
    });
    expect(closedInfo).toEqual({});
  });
});
