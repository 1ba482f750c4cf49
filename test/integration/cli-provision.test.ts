import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { CLI_BIN, cli, tempDir } from '../helpers/cli.js';
import { startApiProxy } from '../helpers/http.js';
import { ANY_GROUP } from '../helpers/emulator.js';

async function emulator(options: EmulatorOptions = {}): Promise<Emulator> {
  const emu = await startEmulator({ env: {}, ...ANY_GROUP, ...options });
  onTestFinished(() => emu.close());
  return emu;
}

function env(emu: Emulator): NodeJS.ProcessEnv {
  return { ALIBABA_CLOUD_ACCESS_KEY_ID: emu.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: emu.accessKeySecret };
}

function args(emu: Emulator, store: string, ...extra: string[]): string[] {
  return ['provision', '--endpoint', emu.apiEndpoint, '--instance-id', emu.instanceId, '--group-id', 'GID_cli', '--store', store, ...extra];
}

function calls(emu: Emulator): number {
  let n = 0;
  for (const { ok, errors } of Object.values(emu.stats().actions)) n += ok + Object.values(errors).reduce((a, b) => a + b, 0);
  return n;
}

const SUMMARY_KEYS = ['requested', 'provisioned', 'fromStore', 'fetched', 'registered', 'failed', 'apiCalls', 'retries', 'throttled', 'elapsedMs'];

describe('apsaramq-device provision', () => {
  it('--json prints one summary line; a second run is served by the store', async () => {
    const emu = await emulator();
    const store = await tempDir();
    const first = await cli(args(emu, store, '--count', '12', '--start', '5', '--json'), env(emu));
    expect(first.code).toBe(0);
    expect(first.stdout.trim().split('\n')).toHaveLength(1);
    const summary = JSON.parse(first.stdout) as Record<string, unknown>;
    expect(Object.keys(summary)).toEqual(SUMMARY_KEYS);
    expect(summary).toMatchObject({ requested: 12, provisioned: 12, registered: 12, failed: [], apiCalls: 24 });
    expect(first.stdout).not.toContain('DC.'); // no device secret (nor key id) on stdout
    expect(first.stderr).toMatch(/^provision: 12\/12 100% .* · 0 failed · 24 calls · 0 retries$/m);
    const files = await readdir(join(store, emu.instanceId));
    expect(files.filter((f) => f.endsWith('.json')).sort()).toEqual(Array.from({ length: 12 }, (_, i) => `GID_cli@@@dev-${i + 5}.json`).sort());

    const second = await cli(args(emu, store, '--count', '12', '--start', '5', '--json'), env(emu));
    expect(JSON.parse(second.stdout)).toMatchObject({ fromStore: 12, apiCalls: 0 });
  });

  it('prints a human summary without --json, and takes the store from the environment like connect', async () => {
    const emu = await emulator();
    const store = await tempDir();
    const { code, stdout } = await cli(
      ['provision', '--endpoint', emu.apiEndpoint, '--instance-id', emu.instanceId, '--group-id', 'GID_cli', '--count', '3', '--prefix', 'sensor_', '--strategy', 'register-first'],
      { ...env(emu), APSARAMQ_DEVICE_STORE: store },
    );
    expect(code).toBe(0);
    expect(stdout).toMatch(/provisioned 3 of 3 .*registered 3/);
    expect(await readdir(join(store, emu.instanceId))).toContain('GID_cli@@@sensor_2.json');
  });

  it('exits 1 with the failure code first on stderr when a device fails, after the summary', async () => {
    const emu = await emulator();
    emu.failNext('RegisterDeviceCredential', 'DeviceCredentialNumExceed', 1);
    const { code, stdout, stderr } = await cli(args(emu, await tempDir(), '--count', '3', '--concurrency', '1', '--json'), env(emu));
    expect(code).toBe(1);
    expect(JSON.parse(stdout)).toMatchObject({ provisioned: 2, failed: [{ clientId: 'GID_cli@@@dev-0', code: 'DeviceCredentialNumExceed' }] });
    expect(stderr).toMatch(/^DeviceCredentialNumExceed: 1 of 3 devices were not provisioned/m);
  });

  it.each([
    [['--count', '1', '--prefix', 'x'.repeat(60)], /64/],
    // The first ClientId is 64 characters long, the last (index 10009) 65: the longest one is the one checked.
    [['--count', '20', '--start', '9990', '--prefix', 'p'.repeat(50)], /10009 \(65 characters\)/],
    [['--count', '1', '--prefix', 'bad prefix'], /ClientId/],
    [[], /--count is required/],
    [['--count', '0'], /--count must be from 1/],
    [['--count', '1', '--region', 'cn-hangzhou'], /^ConflictingOptions: --endpoint and --region cannot be used together/],
    [['--count', '1', '--strategy', 'guess'], /--strategy must be one of/],
  ])('rejects %j as a usage error before any I/O (exit 2)', async (extra, message) => {
    const emu = await emulator();
    const { code, stderr } = await cli(args(emu, await tempDir(), ...extra), env(emu));
    expect(code).toBe(2);
    expect(stderr).toMatch(message);
    expect(calls(emu)).toBe(0);
  });

  it.skipIf(!existsSync(CLI_BIN))('register-first killed with SIGKILL mid-run, then run again: one successful Register per device', async () => {
    const emu = await emulator({ latencyMs: { min: 2, max: 10 }, faultRate: 0.1 });
    // The child talks to the emulator through a proxy that says when each answer has gone by: the kill is timed by
    // that event, not by polling the emulator's stats.
    const proxy = await startApiProxy(emu.apiEndpoint);
    const store = await tempDir();
    const count = 150;
    // A short window (the emulator holds a request at most 10 ms): the rerun confirms the Registers the kill left
    // unanswered within seconds instead of the default 20 s.
    const window = ['--timeout-ms', '2000', '--max-service-latency-ms', '50'];
    const flags = ['--count', String(count), '--strategy', 'register-first', '--concurrency', '8', ...window, '--json'];
    const childLine = [...args({ ...emu, apiEndpoint: proxy.url } as Emulator, store), ...flags];
    const child = spawn(process.execPath, [CLI_BIN, ...childLine], { env: { PATH: process.env['PATH'], ...env(emu) }, stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
    onTestFinished(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    const registers = (): number => emu.stats().actions['RegisterDeviceCredential']?.ok ?? 0;
    const third = await Promise.race([proxy.answered('RegisterDeviceCredential', count / 3).then(() => 'third' as const), exited.then(() => 'exited' as const)]);
    if (third === 'exited') throw new Error(`the CLI exited (${String(child.exitCode)}) before it could be killed`);
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    expect(registers()).toBeLessThan(count);

    const again = await cli([...args(emu, store), ...flags], env(emu));
    expect(again.code).toBe(0);
    const summary = JSON.parse(again.stdout) as { provisioned: number; fromStore: number; fetched: number; registered: number };
    expect(summary.provisioned).toBe(count);
    expect(summary.fromStore + summary.fetched + summary.registered).toBe(count);
    expect(registers()).toBe(count);
    expect(await readdir(join(store, emu.instanceId, '.journal'))).toEqual([]);
  }, 60_000);
});
