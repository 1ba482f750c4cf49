import RPCClient from '@alicloud/pop-core';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { connectAsync } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import type { CliIo } from '../../src/cli/io.js';
import { DeviceCredential } from '../../src/credential.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import type { PopCoreError } from '../helpers/emulator.js';

/** The `emulator --json` line the CLI prints once it listens. */
interface Ready {
  mqttUrl: string;
  wsUrl: string | null;
  mqttsUrl?: string | null;
  wssUrl?: string | null;
  apiEndpoint: string;
  instanceId: string;
  accessKeyId: string;
  accessKeySecret: string;
}

/**
 * Run `apsaramq-device emulator <args> --json` in-process on free ports; `use` gets the ready line, then the
 * emulator is interrupted (Ctrl+C) and the exit code returned with the output.
 */
async function withCliEmulator(args: string[], use: (ready: Ready) => Promise<void>): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  let stop: () => void = () => undefined;
  const interrupted = new Promise<void>((resolve) => {
    stop = resolve;
  });
  let onReady: (line: string) => void = () => undefined;
  const ready = new Promise<string>((resolve) => {
    onReady = resolve;
  });
  const io: CliIo = {
    stdout: (t) => onReady(t),
    stderr: (t) => {
      stderr += t;
    },
    env: {},
    interrupted: () => interrupted,
  };
  const run = runCli(['emulator', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', '--json', ...args], io);
  const first = await Promise.race([ready, run.then(() => undefined)]);
  try {
    if (first !== undefined) await use(JSON.parse(first) as Ready);
  } finally {
    stop();
  }
  return { code: await run, stderr };
}

/** Run a command line that must fail before anything starts. */
async function failing(args: string[]): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  const io: CliIo = { stdout: () => undefined, stderr: (t) => void (stderr += t), env: {}, interrupted: () => new Promise(() => undefined) };
  const code = await runCli(['emulator', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', '--json', ...args], io);
  return { code, stderr };
}

describe('apsaramq-device emulator: fault flags', () => {
  it('--fault-rate 1 --fault-codes answers every call with the given code; --latency-ms is accepted', async () => {
    const result = await withCliEmulator(['--fault-rate', '1', '--fault-codes', 'Throttling.User', '--latency-ms', '0-1', '--qps-limit', '1000'], async (ready) => {
      const client = new RPCClient({ endpoint: ready.apiEndpoint, apiVersion: '2020-04-20', accessKeyId: ready.accessKeyId, accessKeySecret: ready.accessKeySecret });
      const error = (await client.request('GetDeviceCredential', { ClientId: 'GID_cli@@@dev', InstanceId: ready.instanceId }, { method: 'POST' }).then(
        () => undefined,
        (e: unknown) => e,
      )) as PopCoreError | undefined;
      expect(error?.code).toBe('Throttling.User');
    });
    expect(result).toEqual({ code: 0, stderr: '' });
  });

  it('--kick-on-revoke drops the live session when its credential is refreshed', async () => {
    const result = await withCliEmulator(['--kick-on-revoke'], async (ready) => {
      const client = new RPCClient({ endpoint: ready.apiEndpoint, apiVersion: '2020-04-20', accessKeyId: ready.accessKeyId, accessKeySecret: ready.accessKeySecret });
      const params = { ClientId: 'GID_cli@@@kick', InstanceId: ready.instanceId };
      const credential = DeviceCredential.fromWire(await client.request('RegisterDeviceCredential', params, { method: 'POST' }));
      const device = await connectAsync(ready.mqttUrl, { ...signDeviceCredential(credential), protocolVersion: 4, reconnectPeriod: 0 });
      const closed = new Promise<void>((resolve) => device.once('close', () => resolve()));
      await client.request('RefreshDeviceCredential', params, { method: 'POST' });
      await closed;
      await device.endAsync(true);
    });
    expect(result).toEqual({ code: 0, stderr: '' });
  });

  it('--tls-cert/--tls-key turn on mqtts and wss (ports 0 here); the JSON line then names both URLs', async () => {
    const tls = resolve(import.meta.dirname, '../../fixtures/tls');
    const args = ['--tls-cert', resolve(tls, 'server.pem'), '--tls-key', resolve(tls, 'server-key.pem'), '--tls-port', '0', '--wss-port', '0'];
    const result = await withCliEmulator(args, async (ready) => {
      expect(Object.keys(ready)).toEqual(['mqttUrl', 'wsUrl', 'mqttsUrl', 'wssUrl', 'apiEndpoint', 'instanceId', 'accessKeyId', 'accessKeySecret']);
      expect(ready.wssUrl).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/mqtt$/);
      const client = new RPCClient({ endpoint: ready.apiEndpoint, apiVersion: '2020-04-20', accessKeyId: ready.accessKeyId, accessKeySecret: ready.accessKeySecret });
      const credential = DeviceCredential.fromWire(await client.request('RegisterDeviceCredential', { ClientId: 'GID_cli@@@tls', InstanceId: ready.instanceId }, { method: 'POST' }));
      const device = await connectAsync(ready.mqttsUrl ?? '', { ...signDeviceCredential(credential), protocolVersion: 4, reconnectPeriod: 0, ca: readFileSync(resolve(tls, 'ca.pem')) });
      await device.endAsync();
    });
    expect(result).toEqual({ code: 0, stderr: '' });
  });

  it.each([
    [['--tls-port', '0'], 2, '--tls-cert'],
    [['--tls-cert', 'fixtures/tls/server.pem'], 2, '--tls-key'],
    [['--fault-rate', '1.5'], 2, '--fault-rate'],
    [['--fault-rate', 'x'], 2, '--fault-rate'],
    [['--latency-ms', '9-3'], 2, '--latency-ms'],
    [['--latency-ms', 'fast'], 2, '--latency-ms'],
    [['--fault-codes', 'SystemOverFlow,NoSuchCode'], 2, 'InvalidOption'],
  ])('refuses %j with exit code %i', async (args, code, message) => {
    const result = await failing(args);
    expect(result.code).toBe(code);
    expect(result.stderr).toContain(message);
  });
});
