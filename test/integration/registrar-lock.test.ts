import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { DeviceCredential } from '../../src/credential.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { FileCredentialStore, type FleetOptions, Provisioner, provisionFleet } from '../../src/provisioner/index.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { CLI_BIN, tempDir } from '../helpers/cli.js';
import { ANY_GROUP, connackCode } from '../helpers/emulator.js';

/**
 * One registrar per device, whatever runs at the same time against one store: in-process callers, `connect` and
 * `provision` processes. The oracle is the emulator: its count of successful Registers, and the CONNACK each stored
 * credential gets from its broker (a credential replaced by a later Register gets 4).
 */

async function emulator(options: EmulatorOptions = {}): Promise<Emulator> {
  const emu = await startEmulator({ env: {}, ...ANY_GROUP, ...options });
  onTestFinished(() => emu.close());
  return emu;
}

function keysEnv(emu: Emulator): NodeJS.ProcessEnv {
  return { PATH: process.env['PATH'], ALIBABA_CLOUD_ACCESS_KEY_ID: emu.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: emu.accessKeySecret };
}

function registers(emu: Emulator): number {
  return emu.stats().actions['RegisterDeviceCredential']?.ok ?? 0;
}

/** Run the built CLI as a child process to its end. */
function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((done) => child.once('close', (code) => done(code)));
  onTestFinished(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return exited.then((code) => ({ code, stdout, stderr }));
}

/** Every credential stored for the instance, loaded through the store (its checks included). */
async function storedCredentials(store: FileCredentialStore, instanceId: string): Promise<DeviceCredential[]> {
  const names = (await readdir(join(store.dir, instanceId))).filter((name) => name.endsWith('.json'));
  const loaded = await Promise.all(names.map((name) => store.load(instanceId, name.slice(0, -'.json'.length))));
  return loaded.filter((c): c is DeviceCredential => c !== undefined);
}

/** The CONNACK code of every credential, `limit` CONNECTs at a time; returns the codes counted. */
async function connackCodes(emu: Emulator, credentials: DeviceCredential[], limit = 50): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < credentials.length) {
      const credential = credentials[next++] as DeviceCredential;
      const code = String(await connackCode(emu.mqttUrl, signDeviceCredential(credential), { clientId: credential.clientId }));
      counts[code] = (counts[code] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  return counts;
}

function ids(group: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${group}@@@dev-${i}`);
}

describe('one registrar per ClientId on one store', () => {
  it('in-process: two Provisioners and two fleet runs at once on one store register each ClientId once', async () => {
    const emu = await emulator();
    const dir = await tempDir();
    const clientIds = ids('GID_inproc', 150);
    const base = { endpoint: emu.apiEndpoint, instanceId: emu.instanceId, accessKeyId: emu.accessKeyId, accessKeySecret: emu.accessKeySecret, env: {} };
    // Separate objects, as separate parts of a program would make them: nothing shared but the directory.
    const provisioners = [new Provisioner({ ...base, store: new FileCredentialStore(dir) }), new Provisioner({ ...base, store: new FileCredentialStore(dir) })];
    const fleet: FleetOptions = { ...base, store: new FileCredentialStore(dir), concurrency: 16 };
    const [a, b] = await Promise.all([
      provisionFleet(clientIds, fleet),
      provisionFleet([...clientIds].reverse(), { ...fleet, store: new FileCredentialStore(dir) }),
      ...provisioners.map((p) => Promise.all(clientIds.map((id) => p.ensureCredential(id)))),
    ]);
    for (const p of provisioners) p.close();
    expect(a?.failed).toEqual([]);
    expect(b?.failed).toEqual([]);
    expect(registers(emu)).toBe(150);
    const stored = await storedCredentials(new FileCredentialStore(dir), emu.instanceId);
    expect(stored).toHaveLength(150);
    expect(await connackCodes(emu, stored)).toEqual({ 0: 150 });
  });

  it.skipIf(!existsSync(CLI_BIN))('two `connect` processes for each of 5 new ClientIds at once: 5 Registers, every stored credential connects', async () => {
    const emu = await emulator({ parentTopics: ['lock'] });
    const store = await tempDir();
    const clientIds = ids('GID_connect', 5);
    const runs = clientIds.flatMap((clientId) =>
      [1, 2].map((n) =>
        runCli(
          ['connect', '--endpoint', emu.apiEndpoint, '--instance-id', emu.instanceId, '--broker-url', emu.mqttUrl, '--store', store, '--client-id', clientId, '--publish', `lock/${n}/data`, '--message', 'hi'],
          keysEnv(emu),
        ),
      ),
    );
    const results = await Promise.all(runs);
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    expect(registers(emu)).toBe(5);
    const stored = await storedCredentials(new FileCredentialStore(store), emu.instanceId);
    expect(stored.map((c) => c.clientId).sort()).toEqual([...clientIds].sort());
    expect(await connackCodes(emu, stored)).toEqual({ 0: 5 });
  });

  it('slow, reordered answers (Registers time out and land late): one Register per device, none stored revoked', async () => {
    // The reproduction's ratio, halved in time: answers take 0-6 s against a 1.5 s timeout there, 0-3 s against
    // 0.75 s here. Three Registers in four time out and are applied afterwards.
    const latency = { min: 0, max: 3_000 };
    const emu = await emulator({ latencyMs: latency });
    const store = new FileCredentialStore(await tempDir());
    const result = await provisionFleet(ids('GID_slow', 60), {
      endpoint: emu.apiEndpoint,
      instanceId: emu.instanceId,
      accessKeyId: emu.accessKeyId,
      accessKeySecret: emu.accessKeySecret,
      env: {},
      store,
      strategy: 'register-first',
      timeoutMs: 750,
      maxServiceLatencyMs: latency.max,
      // Gets time out as often; they are safe to repeat, and each device may need many.
      retry: { maxAttempts: 60, minDelayMs: 0, maxDelayMs: 10, maxElapsedMs: 150_000 },
    });
    expect(result.failed).toEqual([]);
    expect(result.provisioned).toBe(60);
    // Most Registers lost their answer and were confirmed with a Get after the window, not sent again.
    expect(result.fetched).toBeGreaterThan(0);
    expect(registers(emu)).toBe(60);
    const stored = await storedCredentials(store, emu.instanceId);
    expect(stored).toHaveLength(60);
    expect(await connackCodes(emu, stored)).toEqual({ 0: 60 });
  }, 180_000);

  it.skipIf(!existsSync(CLI_BIN))('a lock whose holder was killed is taken over once stale', async () => {
    const dir = await tempDir();
    const instanceId = 'mqtt-cn-lock';
    const clientId = 'GID_lock@@@dev-1';
    const storeModule = resolve(import.meta.dirname, '../../dist/provisioner/file-store.js');
    const script = `
      const { FileCredentialStore } = await import(${JSON.stringify(storeModule)});
      await new FileCredentialStore(${JSON.stringify(dir)}, { lockStaleMs: 2000 }).lock(${JSON.stringify(instanceId)}, ${JSON.stringify(clientId)});
      console.log('locked');
      setInterval(() => {}, 1 << 30);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((done) => child.once('exit', done));
    onTestFinished(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    await new Promise<void>((done) => createInterface({ input: child.stdout }).once('line', () => done()));
    child.kill('SIGKILL');
    await exited;
    const store = new FileCredentialStore(dir, { lockStaleMs: 2_000 });
    const lock = await store.lock(instanceId, clientId);
    expect(lock.compromised).toBe(false);
    await lock.release();
    expect(await readdir(join(dir, instanceId, '.locks'))).toEqual([]);
  });
});

describe.skipIf(!existsSync(CLI_BIN))('Done when (issue 9)', () => {
  it('three concurrent `provision` processes, 1,000 devices, one store: exactly 1,000 Registers, 1,000 stored credentials that all connect', async () => {
    const emu = await emulator();
    const store = await tempDir();
    // Three operators sharing the account's 500 calls/s.
    const args = ['provision', '--endpoint', emu.apiEndpoint, '--instance-id', emu.instanceId, '--group-id', 'GID_three', '--count', '1000', '--store', store, '--qps', '150', '--json'];
    const runs = await Promise.all([runCli(args, keysEnv(emu)), runCli(args, keysEnv(emu)), runCli(args, keysEnv(emu))]);
    const summaries = runs.map((r) => {
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { provisioned: number; registered: number; failed: unknown[] };
    });
    for (const s of summaries) expect(s).toMatchObject({ provisioned: 1000, failed: [] });
    expect(summaries.reduce((sum, s) => sum + s.registered, 0)).toBe(1000);
    expect(registers(emu)).toBe(1000);
    const stored = await storedCredentials(new FileCredentialStore(store), emu.instanceId);
    expect(stored).toHaveLength(1000);
    expect(await connackCodes(emu, stored)).toEqual({ 0: 1000 });
  }, 180_000);
});
