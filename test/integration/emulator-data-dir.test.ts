import { chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { DeviceCredential } from '../../src/credential.js';
import { LOCK_FILE, STATE_FILE, readDataDirState } from '../../src/emulator/data-dir.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { cli, spawnCli, tempDir } from '../helpers/cli.js';
import { ANY_GROUP, apiClient, callApi, connackCode, registerDevice } from '../helpers/emulator.js';

/** Start an emulator on free ports with generated keys unless told otherwise; closed when the test ends. */
async function start(options: EmulatorOptions, opened: Emulator[]): Promise<Emulator> {
  const emulator = await startEmulator({ env: {}, ...ANY_GROUP, wsPort: false, ...options });
  opened.push(emulator);
  return emulator;
}

/** The error `startEmulator` rejects with. */
async function startFailure(options: EmulatorOptions): Promise<Error> {
  try {
    const emulator = await startEmulator({ env: {}, ...ANY_GROUP, wsPort: false, ...options });
    await emulator.close();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected startEmulator to fail');
}

function mode(path: string): Promise<number> {
  return stat(path).then((s) => s.mode & 0o777);
}

describe('startEmulator({ dataDir }): state that survives a restart', () => {
  it('keeps credentials, the instance id and the generated keys; devices connect after the restart', async () => {
    const opened: Emulator[] = [];
    try {
      const dir = join(await tempDir(), 'state');
      const first = await start({ dataDir: dir }, opened);
      expect(first.dataDir).toBe(dir);
      const credential = await registerDevice(first, 'GID_keep@@@dev-1');
      await registerDevice(first, 'GID_keep@@@dev-2');
      await callApi(first, 'UnRegisterDeviceCredential', { ClientId: 'GID_keep@@@dev-2', InstanceId: first.instanceId });
      const before = { instanceId: first.instanceId, accessKeyId: first.accessKeyId, accessKeySecret: first.accessKeySecret };
      await first.close();

      // A directory 0700, a file 0600, no temp file left, the lock released.
      expect(await mode(dir)).toBe(0o700);
      expect(await mode(join(dir, STATE_FILE))).toBe(0o600);
      expect(await readdir(dir)).toEqual([STATE_FILE]);

      const second = await start({ dataDir: dir }, opened);
      expect({ instanceId: second.instanceId, accessKeyId: second.accessKeyId, accessKeySecret: second.accessKeySecret }).toEqual(before);
      expect(second.accessKeySource).toBe('generated');
      const got = DeviceCredential.fromWire(await callApi(second, 'GetDeviceCredential', { ClientId: 'GID_keep@@@dev-1', InstanceId: second.instanceId }));
      expect(got.toWire()).toEqual(credential.toWire());
      expect(await connackCode(second.mqttUrl, signDeviceCredential(credential))).toBe(0);
      const list = await callApi<{ DeviceCredentialClientIdList: { ClientIdList: string[] } }>(second, 'ListDeviceCredentialClientId', { InstanceId: second.instanceId, GroupId: 'GID_keep', PageSize: '10' });
      expect(list.DeviceCredentialClientIdList.ClientIdList).toEqual(['GID_keep@@@dev-1']);
    } finally {
      await Promise.all(opened.map((e) => e.close()));
    }
  });

  it('answers a Register only once it is on disk: 50 concurrent Registers all survive', async () => {
    const opened: Emulator[] = [];
    try {
      const dir = join(await tempDir(), 'state');
      const first = await start({ dataDir: dir, qpsLimit: 1000 }, opened);
      const ids = Array.from({ length: 50 }, (_, i) => `GID_many@@@dev-${i}`);
      const issued = await Promise.all(ids.map((id) => registerDevice(first, id)));
      // Read the directory while the emulator still runs: every answered credential is already there.
      const kept = new Map((await readDataDirState(dir))?.credentials.map((c) => [c.ClientId, c.DeviceAccessKeyId]));
      for (const c of issued) expect(kept.get(c.clientId)).toBe(c.deviceAccessKeyId);
      await first.close();
      const second = await start({ dataDir: dir }, opened);
      for (const c of issued) {
        const got = await callApi<{ DeviceCredential: { DeviceAccessKeyId: string } }>(second, 'GetDeviceCredential', { ClientId: c.clientId, InstanceId: second.instanceId });
        expect(got.DeviceCredential.DeviceAccessKeyId).toBe(c.deviceAccessKeyId);
      }
    } finally {
      await Promise.all(opened.map((e) => e.close()));
    }
  });

  it('never writes keys it did not generate, and a given instance id must match the kept one', async () => {
    const opened: Emulator[] = [];
    try {
      const dir = join(await tempDir(), 'state');
      const env = { ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIenvkey', ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'a-real-looking-secret' };
      const first = await start({ dataDir: dir, env, instanceId: 'mqtt-cn-kept' }, opened);
      expect(first.accessKeySource).toBe('environment');
      await registerDevice(first, 'GID_env@@@dev');
      await first.close();
      const text = await readFile(join(dir, STATE_FILE), 'utf8');
      expect(text).not.toContain('a-real-looking-secret');
      expect(text).not.toContain('LTAIenvkey');

      const mismatch = await startFailure({ dataDir: dir, env, instanceId: 'mqtt-cn-other' });
      expect(isApsaraMqDeviceError(mismatch, 'InvalidOption')).toBe(true);
      expect(mismatch.message).toContain('mqtt-cn-kept');

      // Left out, the instance id comes from the directory.
      const again = await start({ dataDir: dir, env }, opened);
      expect(again.instanceId).toBe('mqtt-cn-kept');
      await callApi(again, 'GetDeviceCredential', { ClientId: 'GID_env@@@dev', InstanceId: 'mqtt-cn-kept' });
    } finally {
      await Promise.all(opened.map((e) => e.close()));
    }
  });

  it('a second emulator on the same directory is EmulatorStateBusy; a dead owner\'s lock is taken over', async () => {
    const opened: Emulator[] = [];
    try {
      const dir = join(await tempDir(), 'state');
      const first = await start({ dataDir: dir }, opened);
      const busy = await startFailure({ dataDir: dir });
      expect(isApsaraMqDeviceError(busy, 'EmulatorStateBusy')).toBe(true);
      expect(busy.message).toContain(String(process.pid));
      await first.close();

      // A process id that is not running (the largest pid Linux can give is 4194304).
      await writeFile(join(dir, LOCK_FILE), '4194309\n', { mode: 0o600 });
      const second = await start({ dataDir: dir }, opened);
      expect(second.instanceId).toBe(first.instanceId);
    } finally {
      await Promise.all(opened.map((e) => e.close()));
    }
  });

  it('a corrupt state file is EmulatorStateCorrupt at start and is left untouched', async () => {
    const root = await tempDir();
    const cases: Array<[string, string]> = [
      ['not JSON', '{"kind": "apsaramq-device-emulator-state", '],
      // JSON.parse's own message would quote the secret ("Unexpected token …, "…" is not valid JSON").
      ['not JSON around a secret', '{"kind": "apsaramq-device-emulator-state", "credentials": [{"DeviceAccessKeySecret": DC.topSecretValue}]}'],
      ['another JSON file', '{"hello": "world"}'],
      ['a newer version', JSON.stringify({ kind: 'apsaramq-device-emulator-state', version: 2, instanceId: 'mqtt-x', credentials: [] })],
      ['a bad credential', JSON.stringify({ kind: 'apsaramq-device-emulator-state', version: 1, instanceId: 'mqtt-x', credentials: [{ ClientId: 'nope' }] })],
      [
        'a ClientId twice',
        JSON.stringify({
          kind: 'apsaramq-device-emulator-state', version: 1, instanceId: 'mqtt-x',
          credentials: [1, 2].map((n) => ({ ClientId: 'GID_a@@@b', InstanceId: 'mqtt-x', DeviceAccessKeyId: `DC.key${n}`, DeviceAccessKeySecret: 'DC.s', CreateTime: 1, UpdateTime: 1 })),
        }),
      ],
    ];
    for (const [name, text] of cases) {
      const dir = join(root, name.replace(/\W/g, '-'));
      await mkdir(dir, { mode: 0o700 });
      await writeFile(join(dir, STATE_FILE), text, { mode: 0o600 });
      const error = await startFailure({ dataDir: dir });
      expect(isApsaraMqDeviceError(error, 'EmulatorStateCorrupt'), `${name}: ${error.message}`).toBe(true);
      expect(inspect(error, { depth: 10 }) + JSON.stringify(error)).not.toContain('topSec');
      expect(await readFile(join(dir, STATE_FILE), 'utf8')).toBe(text);
      // The lock was released on the way out.
      expect(await readdir(dir)).toEqual([STATE_FILE]);
    }
  });

  it('an insecure directory or file is EmulatorStateInsecure; a leftover temp file is removed', async () => {
    const opened: Emulator[] = [];
    try {
      const root = await tempDir();
      const open = join(root, 'open');
      await mkdir(open, { mode: 0o755 });
      await chmod(open, 0o755);
      expect(isApsaraMqDeviceError(await startFailure({ dataDir: open }), 'EmulatorStateInsecure')).toBe(true);

      const dir = join(root, 'state');
      const first = await start({ dataDir: dir }, opened);
      await first.close();
      await chmod(join(dir, STATE_FILE), 0o644);
      expect(isApsaraMqDeviceError(await startFailure({ dataDir: dir }), 'EmulatorStateInsecure')).toBe(true);
      await chmod(join(dir, STATE_FILE), 0o600);

      await writeFile(join(dir, `${STATE_FILE}.0123abcd.tmp`), 'half a write', { mode: 0o600 });
      await start({ dataDir: dir }, opened);
      expect((await readdir(dir)).sort()).toEqual([LOCK_FILE, STATE_FILE]);
    } finally {
      await Promise.all(opened.map((e) => e.close()));
    }
  });

  it('without dataDir, startEmulator keeps nothing: a new emulator knows no credential', async () => {
    const opened: Emulator[] = [];
    try {
      const first = await start({ instanceId: 'mqtt-cn-mem' }, opened);
      expect(first.dataDir).toBeUndefined();
      await registerDevice(first, 'GID_mem@@@dev');
      await first.close();
      const second = await start({ instanceId: 'mqtt-cn-mem' }, opened);
      const error = await apiClient(second).request('GetDeviceCredential', { ClientId: 'GID_mem@@@dev', InstanceId: 'mqtt-cn-mem' }, { method: 'POST' }).catch((e: unknown) => e);
      expect((error as { code: string }).code).toBe('DeviceCredentialNotFound');
    } finally {
      await Promise.all(opened.map((e) => e.close()));
    }
  });
});

/** The `emulator --json` line. */
interface Ready {
  apiEndpoint: string;
  mqttUrl: string;
  instanceId: string;
  accessKeyId: string;
  accessKeySecret: string | null;
  dataDir?: string;
}

describe('apsaramq-device emulator (child process): the Quick start works again after a restart', () => {
  it('same command, stopped with SIGTERM and started again: GetDeviceCredential still answers and the device connects', async () => {
    const home = await tempDir();
    const store = await tempDir();
    const keys = { ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIdemo', ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'demo-secret' };
    const command = ['emulator', '--instance-id', 'mqtt-demo', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', '--json'];
    const run = async (ready: Ready): Promise<{ code: number; stderr: string }> =>
      cli(['connect', '--endpoint', ready.apiEndpoint, '--broker-url', ready.mqttUrl, '--instance-id', 'mqtt-demo', '--store', store, '--client-id', 'GID_demo@@@dev-2', '--publish', 'demo/hello', '--message', 'hi'], keys);

    const first = await spawnCli(command, { HOME: home, ...keys });
    const ready1 = JSON.parse(first.firstLine) as Ready;
    expect(ready1.dataDir).toBe(join(home, '.local', 'state', 'apsaramq-device', 'emulator', 'mqtt-demo'));
    expect(ready1.accessKeySecret).toBeNull();
    expect(await run(ready1)).toMatchObject({ code: 0 });
    const issued = (await (await fetch(`${ready1.apiEndpoint}/_emulator/stats`)).json()) as { actions: Record<string, { ok: number }> };
    expect(issued.actions['RegisterDeviceCredential']?.ok).toBe(1);
    expect(await first.stop('SIGTERM')).toBe(0);

    const second = await spawnCli(command, { HOME: home, ...keys });
    const ready2 = JSON.parse(second.firstLine) as Ready;
    // The device's stored credential is still the service's: no Get, no Register, just a CONNECT that is accepted.
    expect(await run(ready2)).toMatchObject({ code: 0 });
    const stats = (await (await fetch(`${ready2.apiEndpoint}/_emulator/stats`)).json()) as { actions: Record<string, unknown>; mqtt: { connacks: Record<string, number> } };
    expect(stats.mqtt.connacks).toEqual({ '0': 1 });
    expect(stats.actions['RegisterDeviceCredential']).toBeUndefined();
    const stored = JSON.parse(await readFile(join(store, 'mqtt-demo', 'GID_demo@@@dev-2.json'), 'utf8')) as Record<string, unknown>;
    const client = apiClient({ apiEndpoint: ready2.apiEndpoint, accessKeyId: 'LTAIdemo', accessKeySecret: 'demo-secret' } as Emulator);
    const got = await client.request<{ DeviceCredential: Record<string, unknown> }>('GetDeviceCredential', { ClientId: 'GID_demo@@@dev-2', InstanceId: 'mqtt-demo' }, { method: 'POST' });
    expect(got.DeviceCredential['DeviceAccessKeyId']).toBe((stored['DeviceCredential'] as Record<string, unknown> | undefined)?.['DeviceAccessKeyId'] ?? stored['DeviceAccessKeyId']);
    expect(await second.stop('SIGTERM')).toBe(0);
  });

  it('--ephemeral keeps nothing; without HOME or XDG_STATE_HOME the state stays in memory', async () => {
    const home = await tempDir();
    const ephemeral = await spawnCli(['emulator', '--ephemeral', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', '--json'], { HOME: home });
    const ready = JSON.parse(ephemeral.firstLine) as Ready;
    expect(ready.dataDir).toBeUndefined();
    expect(ready.instanceId).toBe('mqtt-emu-local');
    expect(typeof ready.accessKeySecret).toBe('string');
    expect(await ephemeral.stop('SIGTERM')).toBe(0);
    expect(await readdir(home)).toEqual([]);

    const homeless = await spawnCli(['emulator', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', '--json'], {});
    expect((JSON.parse(homeless.firstLine) as Ready).dataDir).toBeUndefined();
    expect(await homeless.stop('SIGTERM')).toBe(0);
  });
});
