/**
 * The emulator as a child process, for suites in other languages or on another Node version: startEmulatorProcess
 * from apsaramq-device/testing, and a Python suite (Debian's python3 and python3-paho-mqtt) that starts the
 * command itself, signs its OpenAPI calls and speaks MQTT with paho.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { inspect, promisify } from 'node:util';
import { portAccepts } from '../helpers/http.js';
import { describe, expect, it, onTestFinished } from 'vitest';
import RPCClient from '@alicloud/pop-core';
import { DeviceCredential } from '../../src/credential.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { connectMqtt } from '../helpers/emulator.js';
import { startEmulatorProcess } from '../../src/testing/process.js';
import { CLI_BIN } from '../helpers/cli.js';
import { REPO_ROOT } from '../helpers/package.js';

const run = promisify(execFile);


/** Debian's python3 with paho-mqtt (the one on PATH may be another Python without it). */
const PYTHON = '/usr/bin/python3';
const paho = existsSync(PYTHON) && (await run(PYTHON, ['-c', 'import paho.mqtt.client']).then(() => true, () => false));
const required = process.env['APSARAMQ_REQUIRE_INTEROP'] === '1';
if (required && !paho) throw new Error('APSARAMQ_REQUIRE_INTEROP=1 but /usr/bin/python3 with python3-paho-mqtt is missing (apt-get install python3-paho-mqtt)');

describe('the emulator in its own process', () => {
  it('startEmulatorProcess is ready on free ports, serves a device, and stops leaving no port open', async () => {
    const emu = await startEmulatorProcess({ args: ['--kick-on-revoke', '--parent-topics', 'proc', '--groups', 'GID_proc'] });
    onTestFinished(() => emu.stop().then(() => undefined));
    expect(emu.pid).toBeGreaterThan(0);
    const stats = (await (await fetch(`${emu.apiEndpoint}/_emulator/stats`)).json()) as { mqtt: { connected: number } };
    expect(stats.mqtt.connected).toBe(0);
    // The account secret is this process's to know, and never shown.
    expect(emu.accessKeySecret.length).toBeGreaterThan(20);
    expect(inspect(emu)).not.toContain(emu.accessKeySecret);
    expect(JSON.stringify(emu)).not.toContain(emu.accessKeySecret);
    // A device registered through the real OpenAPI (pop-core) connects and round-trips a message.
    const api = new RPCClient({ endpoint: emu.apiEndpoint, apiVersion: '2020-04-20', accessKeyId: emu.accessKeyId, accessKeySecret: emu.accessKeySecret });
    const credential = DeviceCredential.fromWire(await api.request('RegisterDeviceCredential', { ClientId: 'GID_proc@@@dev-1', InstanceId: emu.instanceId }, { method: 'POST' }));
    const client = await connectMqtt(emu.mqttUrl, signDeviceCredential(credential));
    const received = new Promise<string>((resolve) => client.once('message', (_topic, payload) => resolve(payload.toString())));
    await client.subscribeAsync('proc/#', { qos: 1 });
    await client.publishAsync('proc/hello', 'hi', { qos: 1 });
    expect(await received).toBe('hi');
    await client.endAsync();
    const urls = [emu.mqttUrl, emu.wsUrl!, emu.apiEndpoint];
    for (const url of urls) expect(await portAccepts(url), url).toBe(true);
    expect(await emu.stop()).toBe(0);
    for (const url of urls) expect(await portAccepts(url), url).toBe(false);
  });

  it('reports a process that cannot start as EmulatorFailed with its own words', async () => {
    const error = await startEmulatorProcess({ args: ['--qps-limit', 'lots'] }).catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(error, 'EmulatorFailed')).toBe(true);
    expect((error as Error).message).toContain('--qps-limit');
  });

  it.skipIf(!paho)(`a Python unittest suite drives it: register, connect, exchange, fault, refusal${paho ? '' : ' (skipped: /usr/bin/python3 with python3-paho-mqtt is not installed)'}`, async () => {
    const suite = join(REPO_ROOT, 'examples', 'testing-python', 'test_emulator.py');
    const { stderr } = await run(PYTHON, ['-m', 'unittest', '-v', suite], {
      env: { PATH: process.env['PATH'], APSARAMQ_DEVICE_CLI: `${process.execPath} ${CLI_BIN}`, PYTHONDONTWRITEBYTECODE: '1' },
      timeout: 60_000,
    });
    expect(stderr).toMatch(/test_register_connect_exchange_fault_and_refusal .* ok/);
    expect(stderr).toMatch(/\nOK\n?$/);
  });
});
