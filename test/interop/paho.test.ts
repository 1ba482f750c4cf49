/**
 * Interop with Eclipse Paho for Python, as Debian ships it (python3-paho-mqtt 1.6.1 under /usr/bin/python3), in
 * MQTT 5 and 3.1.1: connect with a derived DeviceCredential login, subscribe, publish, receive, and be refused
 * with the right code. `.ci/run` installs the package and sets APSARAMQ_REQUIRE_INTEROP=1, so in CI a missing
 * Paho fails the run instead of skipping it.
 */
import { execFile, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { signDeviceCredential, type MqttCredentials } from '../../src/signer/mqtt.js';
import { accountLogin } from '../helpers/broker.js';
import { connectMqtt, connectWithInbox, registerDevice, useEmulator } from '../helpers/emulator.js';
import { hostPort } from '../helpers/raw-mqtt.js';

const run = promisify(execFile);
/** Debian's interpreter: the `python3` on PATH may be another one (pyenv) without Paho. */
const PYTHON = '/usr/bin/python3';
const CLIENT = resolve(import.meta.dirname, 'paho-client.py');

const probe = spawnSync(PYTHON, ['-c', 'import paho.mqtt; print(paho.mqtt.__version__)'], { encoding: 'utf8' });
const available = probe.status === 0;
const required = process.env['APSARAMQ_REQUIRE_INTEROP'] === '1';
if (required && !available) throw new Error(`APSARAMQ_REQUIRE_INTEROP=1 but ${PYTHON} cannot import paho.mqtt (apt-get install python3-paho-mqtt)`);
const reason = available ? ` (paho ${probe.stdout.trim()})` : ` (skipped: ${PYTHON} with Debian's python3-paho-mqtt is not installed)`;

/** What paho-client.py prints. */
interface PahoResult {
  connack: number | null;
  granted: number[] | null;
  received: { topic: string; payload: string; userProperties: [string, string][] | null } | null;
  disconnect: number | null;
  serverKeepAlive: number | null;
  acked: boolean;
  error?: string;
}

async function paho(url: string, version: 3 | 4 | 5, login: MqttCredentials, work: { topic?: string; publishOnly?: string; publishAcked?: string; payloadBytes?: number; keepalive?: number } = {}): Promise<PahoResult> {
  const { host, port } = hostPort(url);
  const { stdout } = await run(PYTHON, [CLIENT, JSON.stringify({ host, port, version, ...login, ...work })], { timeout: 30_000 });
  return JSON.parse(stdout) as PahoResult;
}

describe.skipIf(!available)(`Paho (Python) against the emulator${reason}`, () => {
  // The instance has GID_paho and no other GroupId.
  const emulator = useEmulator({ parentTopics: ['interop'], groups: ['GID_paho'] });

  it.each([5, 4] as const)('MQTT %i: connects with a derived DeviceCredential login, subscribes, publishes and receives', async (version) => {
    const e = emulator();
    const login = signDeviceCredential(await registerDevice(e, `GID_paho@@@dev-${version}`));
    const result = await paho(e.mqttUrl, version, login, { topic: `interop/paho-${version}` });
    expect(result).toEqual({
      connack: 0,
      granted: [1],
      received: { topic: `interop/paho-${version}`, payload: 'from paho', userProperties: version === 5 ? [['origin', 'paho']] : null },
      disconnect: null,
      serverKeepAlive: null,
      acked: false,
    });
  });

  it.each([
    [5, 'a wrong password', 0x86],
    [5, 'another instance in the username', 0x87],
    [5, 'a ClientId outside the grammar', 0x85],
    [4, 'a wrong password', 4],
    [4, 'another instance in the username', 5],
    [4, 'a ClientId outside the grammar', 2],
  ] as const)('MQTT %i: %s is refused with %i', async (version, what, expected) => {
    const e = emulator();
    const creds = signDeviceCredential(await registerDevice(e, `GID_paho@@@bad-${version}-${expected}`));
    const login = what === 'a wrong password'
      ? { ...creds, password: 'AAAA' + creds.password.slice(4) }
      : what === 'another instance in the username'
        ? { ...creds, username: creds.username.replace(e.instanceId, 'mqtt-cn-other') }
        : { ...creds, clientId: 'not-a-group-id' };
    const result = await paho(e.mqttUrl, version, login);
    expect(result.connack).toBe(expected);
    expect(result.error).toBeUndefined();
  });

  it('MQTT 5: publishing under a parent topic that was not created ends in DISCONNECT 0x87', async () => {
    const e = emulator();
    const login = signDeviceCredential(await registerDevice(e, 'GID_paho@@@parent'));
    const result = await paho(e.mqttUrl, 5, login, { publishOnly: 'elsewhere/x' });
    expect(result).toMatchObject({ connack: 0, disconnect: 0x87 });
    expect(result.error).toBeUndefined();
  });

  it.each([[5, 0x85], [4, 2]] as const)('MQTT %i: a ClientId of a GroupId the instance lacks is refused with %i (the login itself verifies)', async (version, expected) => {
    const e = emulator();
    const result = await paho(e.mqttUrl, version, accountLogin(e, `GID_nogroupcreated@@@x${version}`));
    expect(result.connack).toBe(expected);
    expect(result.error).toBeUndefined();
  });

  it('MQTT 3.1 is refused with CONNACK 1 (the service speaks 3.1.1 and 5)', async () => {
    const e = emulator();
    const result = await paho(e.mqttUrl, 3, accountLogin(e, 'GID_paho@@@v31'));
    expect(result.connack).toBe(1);
  });

  it.each([5, 4] as const)('MQTT %i: a payload over 64 KB is acknowledged and discarded; the publisher stays connected', async (version) => {
    const e = emulator();
    const before = e.stats().mqtt.rules['payloadSize'] ?? 0;
    const watcher = await connectWithInbox(e.mqttUrl, accountLogin(e, `GID_paho@@@watch-${version}`));
    await watcher.client.subscribeAsync('interop/#', { qos: 1 });
    const result = await paho(e.mqttUrl, version, accountLogin(e, `GID_paho@@@big-${version}`), { publishAcked: 'interop/big', payloadBytes: 70_000 });
    expect(result).toMatchObject({ connack: 0, acked: true, disconnect: null });
    const marker = await connectMqtt(e.mqttUrl, accountLogin(e, `GID_paho@@@marker-${version}`));
    await marker.publishAsync('interop/marker', 'next', { qos: 1 });
    expect(await watcher.next()).toEqual(['interop/marker', 'next']);
    await Promise.all([marker.endAsync(), watcher.client.endAsync()]);
    expect(e.stats().mqtt.rules['payloadSize']).toBe(before + 1);
  });

  it('MQTT 5: Keep Alive 0 is answered with Server Keep Alive 480', async () => {
    const e = emulator();
    const result = await paho(e.mqttUrl, 5, accountLogin(e, 'GID_paho@@@ka0'), { keepalive: 0 });
    expect(result).toMatchObject({ connack: 0, serverKeepAlive: 480 });
  });
});
