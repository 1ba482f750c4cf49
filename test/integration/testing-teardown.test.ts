/**
 * The testing fixture's teardown when a test failed half-way: every device of this process connected to the
 * emulator is ended at stop (the fixture's own silently, those the code under test made with a warning naming the
 * ClientId), a client the fixture cannot end is named, and the emulator's rule lines reach the test's output, so that
 * a device refused for a parent topic the test did not list says which option to set. Real emulators on free ports,
 * the library's connector, real mqtt.js clients.
 */
import mqtt from 'mqtt';
import { afterEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import { connectDevice } from '../../src/connector/connect.js';
import { registerAndConnect } from '../../src/register-and-connect.js';
import { startTestEmulator, testLogger } from '../../src/testing/index.js';
import { captureLogger } from '../helpers/broker.js';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('stop ends what the test left connected', () => {
  it('a device the code under test connected and did not end: ended at stop, named in a warning', async () => {
    const logger = captureLogger();
    const emu = await startTestEmulator({ logger, parentTopics: ['sensors'], groups: ['GID_sensors'] });
    onTestFinished(() => emu.stop());
    const { credential } = await emu.registerDevice('GID_sensors@@@kitchen');
    // As the thermometer of the examples does it: the library's connector, reconnecting quickly, no end() (the test failed).
    const device = await connectDevice({ credential, brokerUrl: emu.mqttUrl, reconnect: { minDelayMs: 20, maxDelayMs: 200 } });
    const closed = new Promise<void>((resolve) => device.once('closed', () => resolve()));
    await emu.stop();
    await closed;
    expect(device.state).toBe('closed');
    expect(logger.lines).toEqual([
      'warn GID_sensors@@@kitchen was still connected when the emulator stopped: the fixture ended it. End each device in the test (in an after-hook, so that a failed test ends it too).',
    ]);
  });

  it('a device made by registerAndConnect against the fixture: the same', async () => {
    const logger = captureLogger();
    const emu = await startTestEmulator({ logger });
    onTestFinished(() => emu.stop());
    const device = await registerAndConnect({ ...emu.provisionerOptions, clientId: 'GID_demo@@@gateway', brokerUrl: emu.mqttUrl });
    await emu.stop();
    expect(device.state).toBe('closed');
    expect(logger.lines).toEqual([expect.stringMatching(/^warn GID_demo@@@gateway was still connected when the emulator stopped: the fixture ended it\./)]);
  });

  it('devices and clients the fixture made are ended without a word; a device already ended is not named', async () => {
    const logger = captureLogger();
    const emu = await startTestEmulator({ logger });
    onTestFinished(() => emu.stop());
    const own = await emu.connectDevice('GID_demo@@@own');
    const raw = await emu.mqttClient('GID_demo@@@own-raw');
    const { credential } = await emu.registerDevice('GID_demo@@@ended');
    const ended = await connectDevice({ credential, brokerUrl: emu.mqttUrl });
    await ended.end();
    await emu.stop();
    expect(own.state).toBe('closed');
    expect(raw.connected).toBe(false);
    expect(logger.lines).toEqual([]);
  });

  it('a client the fixture cannot end (a raw mqtt.js client of the code under test) is named', async () => {
    const logger = captureLogger();
    const emu = await startTestEmulator({ logger });
    onTestFinished(() => emu.stop());
    const { login } = await emu.registerDevice('GID_demo@@@foreign-raw');
    const client = await mqtt.connectAsync(emu.mqttUrl, { ...login, protocolVersion: 4, reconnectPeriod: 0 });
    onTestFinished(() => client.endAsync(true));
    await emu.stop();
    expect(logger.lines).toEqual([
      'warn GID_demo@@@foreign-raw was still connected when the emulator stopped: end its client in the test; one that reconnects keeps the test process alive.',
    ]);
  });

  it('a device connected to another emulator of the process is left to that one', async () => {
    const logger = captureLogger();
    const first = await startTestEmulator({ logger });
    onTestFinished(() => first.stop());
    const second = await startTestEmulator({ logger: captureLogger() });
    onTestFinished(() => second.stop());
    const { credential } = await second.registerDevice('GID_demo@@@elsewhere');
    const device = await connectDevice({ credential, brokerUrl: second.mqttUrl });
    await first.stop();
    expect(device.state).toBe('online');
    expect(logger.lines).toEqual([]);
    await second.stop();
    expect(device.state).toBe('closed');
  });
});

describe('the emulator\'s rule lines reach the test output', () => {
  it('a device publishing under a parent topic the test did not list: the line names the rule and the option', async () => {
    const logger = captureLogger();
    const emu = await startTestEmulator({ logger }); // no parentTopics: only demo and sim exist
    onTestFinished(() => emu.stop());
    const device = await emu.mqttClient('GID_demo@@@thermo');
    const closed = new Promise<void>((resolve) => device.once('close', () => resolve()));
    device.publish('sensors/kitchen/temp', '21.5', { qos: 0 });
    await closed;
    expect(logger.lines).toEqual([expect.stringMatching(/^warn MQTT rule parentTopic \(option parentTopics, flag --parent-topics\): GID_demo@@@thermo: PUBLISH under parent topic 'sensors', which was not created on the instance/)]);
  });

  it('by default they go to console.warn, prefixed', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const emu = await startTestEmulator();
    onTestFinished(() => emu.stop());
    const device = await emu.mqttClient('GID_demo@@@thermo-2');
    const closed = new Promise<void>((resolve) => device.once('close', () => resolve()));
    device.publish('sensors/kitchen/temp', '21.5', { qos: 0 });
    await closed;
    expect(warn).toHaveBeenCalledWith(expect.stringMatching(/^\[apsaramq-device emulator\] MQTT rule parentTopic \(option parentTopics/));
    expect(testLogger.warn).toBeTypeOf('function');
  });
});
