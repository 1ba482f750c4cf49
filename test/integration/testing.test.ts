/**
 * apsaramq-device/testing as a user's suite uses it: the vitest adapter for the file, the core for one-off emulators.
 * Real emulators on free ports, real mqtt.js clients, the library's connector.
 */
import { portAccepts } from '../helpers/http.js';
import { describe, expect, it } from 'vitest';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { startTestEmulator } from '../../src/testing/index.js';
import { topicMatches } from '../../src/testing/topic.js';
import { useEmulator } from '../../src/testing/vitest.js';

const emulator = useEmulator({ parentTopics: ['test', 'nothing', 'a'] });


describe('the testing fixture', () => {
  it('registers, connects, and sees a device message at the broker', async () => {
    const emu = emulator();
    const device = await emu.connectDevice('GID_test@@@dev-1');
    const seen = emu.waitForMessage('test/+/temp');
    await device.publish('test/room-1/temp', '21.5', { qos: 1 });
    const message = await seen;
    expect([message.topic, message.payload.toString(), message.clientId, message.qos]).toEqual(['test/room-1/temp', '21.5', 'GID_test@@@dev-1', 1]);
  });

  it('gives the code under test a raw mqtt.js client, and tracks devices coming and going', async () => {
    const emu = emulator();
    const online = emu.waitForOnline('GID_test@@@raw-1');
    const client = await emu.mqttClient('GID_test@@@raw-1');
    await online;
    const received = new Promise<string>((resolve) => client.once('message', (_t, payload) => resolve(payload.toString())));
    await client.subscribeAsync('test/raw', { qos: 1 });
    const device = await emu.connectDevice('GID_test@@@dev-2');
    await device.publish('test/raw', 'to the raw client', { qos: 1 });
    expect(await received).toBe('to the raw client');
    const offline = emu.waitForOffline('GID_test@@@raw-1');
    expect(emu.disconnect('GID_test@@@raw-1')).toBe(true);
    await offline;
    // Already offline: resolves at once.
    await emu.waitForOffline('GID_test@@@raw-1');
  });

  it('a session taken over by a second connection with the same ClientId is not going offline', async () => {
    const emu = emulator();
    const first = await emu.mqttClient('GID_test@@@twin', { reconnectPeriod: 0 });
    const firstClosed = new Promise<void>((resolve) => first.once('close', () => resolve()));
    const second = await emu.mqttClient('GID_test@@@twin', { reconnectPeriod: 0 });
    await firstClosed;
    await emu.waitForOnline('GID_test@@@twin');
    // The second connection is still there: waiting for offline times out, as the session queries would say.
    await expect(emu.waitForOffline('GID_test@@@twin', { timeoutMs: 300 })).rejects.toMatchObject({ code: 'WaitTimeout' });
    const offline = emu.waitForOffline('GID_test@@@twin');
    await second.endAsync();
    await offline;
  });

  it('injects a fault, and the code under test sees it as the service would answer it', async () => {
    const emu = emulator();
    emu.failNext('RegisterDeviceCredential', 'Throttling.User');
    const error = await emu.registerDevice('GID_test@@@faulted').catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(error, 'Throttling.User')).toBe(true);
    await expect(emu.registerDevice('GID_test@@@faulted')).resolves.toMatchObject({ clientId: 'GID_test@@@faulted' });
  });

  it('expects refusals by CONNACK code and reports a CONNECT that was not refused', async () => {
    const emu = emulator();
    const { login } = await emu.registerDevice('GID_test@@@refused');
    expect(await emu.expectRefused({ ...login, password: 'wrong' }, 4)).toBe(4);
    const unexpected = await emu.expectRefused(login, 4).catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(unexpected, 'UnexpectedConnack')).toBe(true);
    expect((unexpected as Error).message).toContain('accepted');
  });

  it('a device heals across a restart, and waits time out with a typed error', async () => {
    const emu = emulator();
    const device = await emu.connectDevice('GID_test@@@healer', { reconnect: { minDelayMs: 10, maxDelayMs: 50 } });
    const back = new Promise<void>((resolve) => device.once('online', () => resolve()));
    await emu.restart();
    await back;
    await emu.waitForOnline('GID_test@@@healer');
    const timeout = await emu.waitForMessage('nothing/#', { timeoutMs: 50 }).catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(timeout, 'WaitTimeout')).toBe(true);
  });

  it('stops everything it opened, and leaves no port open, even with devices still connected', async () => {
    const emu = await startTestEmulator({ tls: true });
    expect(emu.ca).toContain('BEGIN CERTIFICATE');
    const device = await emu.connectDevice('GID_test@@@tls-1', { brokerUrl: emu.mqttsUrl! });
    const raw = await emu.mqttClient('GID_test@@@tls-2');
    const closed = new Promise<void>((resolve) => device.once('closed', () => resolve()));
    const urls = [emu.mqttUrl, emu.wsUrl!, emu.mqttsUrl!, emu.wssUrl!, emu.apiEndpoint];
    await emu.stop();
    await closed;
    expect(raw.connected).toBe(false);
    for (const url of urls) expect(await portAccepts(url), url).toBe(false);
    await emu.stop(); // idempotent
  });

  it('matches MQTT topic filters like a broker', () => {
    const cases: [string, string, boolean][] = [
      ['a/#', 'a', true],
      ['a/#', 'a/b/c', true],
      ['#', 'a/b', true],
      ['a/+', 'a/b', true],
      ['a/+', 'a/b/c', false],
      ['a/+/c', 'a/b/c', true],
      ['a/b', 'a/b', true],
      ['a/b', 'a/c', false],
      ['+', 'a/b', false],
    ];
    for (const [filter, topic, expected] of cases) expect(topicMatches(filter, topic), `${filter} ${topic}`).toBe(expected);
  });
});
