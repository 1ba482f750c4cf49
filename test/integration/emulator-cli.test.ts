import RPCClient from '@alicloud/pop-core';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { connectAsync } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { defaultEmulatorDataDir } from '../../src/cli/commands/emulator.js';
import { runCli } from '../../src/cli/main.js';
import type { CliIo } from '../../src/cli/io.js';
import { DeviceCredential } from '../../src/credential.js';
import { signDeviceCredential, signSignature, type MqttCredentials } from '../../src/signer/mqtt.js';
import { tempDir } from '../helpers/cli.js';
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
  // The instance has the tests' GroupId GID_cli.
  const run = runCli(['emulator', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', '--groups', 'GID_cli', '--json', ...args], io);
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

  it('the fidelity flags become options: GET accepted, another region and instance code, a GroupId refused with 5, MQTT 3.1 accepted', async () => {
    const flags = ['--get-on-post-only', 'accept', '--region-id', 'ap-southeast-1', '--unknown-instance-code', 'MqttInstanceNotFound', '--rate-limit-mode', 'token-bucket',
      '--unknown-group-refusal', 'not-authorized', '--revoked-credential-refusal', 'not-authorized', '--mqtt31', 'accept', '--p2p-topic-length', 'whole',
      '--keep-alive-zero', 'allow', '--oversized-messages', 'disconnect', '--offline-delivery', 'paced', '--offline-detection-delay-ms', '1-2',
      '--offline-batch-size', '5', '--offline-batch-interval-ms', '10'];
    const result = await withCliEmulator(flags, async (ready) => {
      const client = new RPCClient({ endpoint: ready.apiEndpoint, apiVersion: '2020-04-20', accessKeyId: ready.accessKeyId, accessKeySecret: ready.accessKeySecret });
      // pop-core's default method is GET.
      await client.request('RegisterDeviceCredential', { ClientId: 'GID_cli@@@flags', InstanceId: ready.instanceId });
      const other = (await client.request('GetDeviceCredential', { ClientId: 'GID_cli@@@flags', InstanceId: 'mqtt-cn-other' }).catch((e: unknown) => e)) as PopCoreError;
      expect([other.code, other.data['HostId']]).toEqual(['MqttInstanceNotFound', 'onsmqtt.ap-southeast-1.aliyuncs.com']);
      const refused = (await connectAsync(ready.mqttUrl, { ...signSignature({ ...ready, clientId: 'GID_other@@@dev' }), protocolVersion: 4, reconnectPeriod: 0 }).catch((e: unknown) => e)) as { code: number };
      expect(refused.code).toBe(5);
      const v31 = await connectAsync(ready.mqttUrl, { ...signSignature({ ...ready, clientId: 'GID_cli@@@v31' }), protocolVersion: 3, reconnectPeriod: 0 });
      await v31.endAsync();
    });
    expect(result.code).toBe(0);
    // The refused GroupId is one line on stderr naming its flags.
    expect(result.stderr).toMatch(/^warn MQTT rule groupId \(option groups and unknownGroupRefusal, flag --groups and --unknown-group-refusal\): GID_other@@@dev: GroupId GID_other was not created/);
  });

  it.each([['--rate-limit-mode', 'leaky'], ['--offline-delivery', 'later'], ['--offline-detection-delay-ms', '10-5'], ['--offline-batch-size', '0'], ['--region-id', 'Not A Region']])('%s %s is refused before anything starts', async (flag, value) => {
    const result = await failing([flag, value]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(flag);
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

/** Run `emulator` in-process with this environment until it is ready, then stop it; returns what it printed. */
async function readyOutput(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  let stop: () => void = () => undefined;
  const interrupted = new Promise<void>((resolve) => {
    stop = resolve;
  });
  const io: CliIo = {
    stdout: (t) => {
      stdout += t;
      stop(); // printed once ready: stop at once
    },
    stderr: (t) => void (stderr += t),
    env,
    interrupted: () => interrupted,
  };
  const code = await runCli(['emulator', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', ...args], io);
  return { code, stdout, stderr };
}

describe('apsaramq-device emulator: secrets and papercuts', () => {
  it('--json never prints a secret taken from the environment, and says where the keys came from', async () => {
    const env = { ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIfromenv', ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'secret-from-env-123' };
    const run = await readyOutput(['--json'], env);
    expect(run.code).toBe(0);
    expect(run.stdout).not.toContain('secret-from-env-123');
    expect(JSON.parse(run.stdout)).toMatchObject({ accessKeyId: 'LTAIfromenv', accessKeySecret: null, accessKeySource: 'environment' });
    const generated = JSON.parse((await readyOutput(['--json'], {})).stdout) as Record<string, unknown>;
    expect(generated['accessKeySecret']).toMatch(/^[A-Za-z0-9]{30}$/);
    expect(generated).not.toHaveProperty('accessKeySource');
  });

  it.each([
    [{ ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'only-the-secret' }],
    [{ ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIonlytheid' }],
  ])('half a key pair in the environment (%j) exits 2 with IncompleteAccessKey naming both variables, before listening', async (env) => {
    const run = await readyOutput(['--json'], env);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^IncompleteAccessKey: /);
    expect(run.stderr).toContain('ALIBABA_CLOUD_ACCESS_KEY_ID');
    expect(run.stderr).toContain('ALIBABA_CLOUD_ACCESS_KEY_SECRET');
    expect(run.stderr).not.toContain('only-the-secret');
  });

  it('the banner suggests connect and get (never register, which rotates keys) and says where the state is', async () => {
    const home = await tempDir();
    const run = await readyOutput(['--instance-id', 'mqtt-banner'], { HOME: home });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('apsaramq-device connect --endpoint http://127.0.0.1:');
    expect(run.stdout).toContain('apsaramq-device get --endpoint');
    expect(run.stdout).not.toMatch(/apsaramq-device register /);
    expect(run.stdout).toContain(`State:            ${join(home, '.local', 'state', 'apsaramq-device', 'emulator', 'mqtt-banner')} (kept across restarts`);
    expect((await readyOutput(['--ephemeral'], { HOME: home })).stdout).toContain('State:            in memory');
  });

  it('--ephemeral with --data-dir is a usage error (exit 2) naming both', async () => {
    const run = await readyOutput(['--ephemeral', '--data-dir', 'x'], {});
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--ephemeral and --data-dir');
  });

  it('the default data directory: $XDG_STATE_HOME (absolute only), else $HOME/.local/state, else none', () => {
    expect(defaultEmulatorDataDir({ XDG_STATE_HOME: '/state', HOME: '/home/u' }, 'mqtt-x')).toBe('/state/apsaramq-device/emulator/mqtt-x');
    expect(defaultEmulatorDataDir({ XDG_STATE_HOME: 'relative', HOME: '/home/u' }, 'mqtt-x')).toBe('/home/u/.local/state/apsaramq-device/emulator/mqtt-x');
    expect(defaultEmulatorDataDir({}, 'mqtt-x')).toBeUndefined();
  });
});

describe('apsaramq-device emulator: the bound on a persistent session', () => {
  it('--max-offline-messages, --max-offline-bytes and --offline-queue-policy bound a session (stats, and one line on stderr)', async () => {
    const result = await withCliEmulator(['--max-offline-messages', '3', '--max-offline-bytes', '1000', '--offline-queue-policy', 'refuse-new'], async (ready) => {
      const login = (clientId: string): MqttCredentials => signSignature({ ...ready, clientId });
      const subscriber = await connectAsync(ready.mqttUrl, { ...login('GID_cli@@@offline'), protocolVersion: 4, clean: false, reconnectPeriod: 0 });
      await subscriber.subscribeAsync('demo/q', { qos: 1 });
      await subscriber.endAsync();
      const watcher = await connectAsync(ready.mqttUrl, { ...login('GID_cli@@@watcher'), protocolVersion: 4, reconnectPeriod: 0 });
      await watcher.subscribeAsync('demo/marker', { qos: 1 });
      const marked = new Promise<void>((resolve) => watcher.once('message', () => resolve()));
      const publisher = await connectAsync(ready.mqttUrl, { ...login('GID_cli@@@publisher'), protocolVersion: 4, reconnectPeriod: 0 });
      for (let i = 0; i < 5; i++) await publisher.publishAsync('demo/q', `m${i}`, { qos: 1 });
      // Routed after the five: once the watcher has it, they are queued (or refused).
      await publisher.publishAsync('demo/marker', 'marker', { qos: 1 });
      await marked;
      await Promise.all([publisher.endAsync(), watcher.endAsync()]);
      const stats = (await (await fetch(new URL('/_emulator/stats', ready.apiEndpoint))).json()) as { mqtt: { rules: Record<string, number>; queues: { messages: number } } };
      expect(stats.mqtt.rules['offlineQueue']).toBe(2);
      expect(stats.mqtt.queues.messages).toBe(3);
    });
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/^warn MQTT rule offlineQueue \(option maxOfflineMessages, maxOfflineBytes and offlineQueuePolicy, flag --max-offline-messages, --max-offline-bytes and --offline-queue-policy\): GID_cli@@@offline: a persistent session holding 3 messages, \d+ bytes \(bound 3 messages, 1000 bytes, policy refuse-new\): a new message was refused; 1 so far/);
  });

  it('a bad value is a usage error (exit 2) naming the flag', async () => {
    for (const [flag, value] of [['--offline-queue-policy', 'drop-newest'], ['--max-offline-messages', '0'], ['--max-offline-bytes', 'lots']]) {
      const { code, stderr } = await failing([flag as string, value as string]);
      expect(code, flag).toBe(2);
      expect(stderr, flag).toContain(flag);
    }
  });
});
