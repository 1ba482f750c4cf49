/**
 * Mistakes a person makes with the registrar commands and with sign: nothing billable happens that they did not ask
 * for, no flag is ignored silently, and each refusal is one line with a code and what to do.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, tempDir } from '../helpers/cli.js';
import { useEmulator } from '../helpers/emulator.js';

const emulator = useEmulator({ parentTopics: ['mis'] });

function api(): { args: string[]; env: NodeJS.ProcessEnv } {
  const e = emulator();
  return { args: ['--endpoint', e.apiEndpoint, '--instance-id', e.instanceId], env: { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret } };
}

const registers = (): number => emulator().stats().actions['RegisterDeviceCredential']?.ok ?? 0;

describe('register --store does not rotate a stored credential unless told', () => {
  it('refuses the second register without --rotate, before any call; --rotate rotates', async () => {
    const { args, env } = api();
    const store = join(await tempDir(), 'store');
    const id = 'GID_mis@@@rot-1';
    const first = await cli(['register', ...args, '--client-id', id, '--store', store], env);
    expect(first.code, first.stderr).toBe(0);
    const before = registers();
    const again = await cli(['register', ...args, '--client-id', id, '--store', store], env);
    expect(again.code).toBe(1);
    expect(again.stdout).toBe('');
    expect(again.stderr).toMatch(/^CredentialInStore: The store .* already holds a credential for GID_mis@@@rot-1 \(DC\.[^)]+\); .* pass --rotate to register a new one/);
    expect(registers()).toBe(before);
    const rotated = await cli(['register', ...args, '--client-id', id, '--store', store, '--rotate'], env);
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(registers()).toBe(before + 1);
    const wire = JSON.parse(rotated.stdout) as { DeviceCredential: { DeviceAccessKeyId: string } };
    expect(JSON.parse(first.stdout).DeviceCredential.DeviceAccessKeyId).not.toBe(wire.DeviceCredential.DeviceAccessKeyId);
    const usage = await cli(['register', ...args, '--client-id', id, '--rotate'], env);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^InvalidOption: --rotate only means something with --store/);
  });

  it('get --store mends a corrupt store file and keeps the bad one aside', async () => {
    const { args, env } = api();
    const e = emulator();
    const store = join(await tempDir(), 'store');
    const id = 'GID_mis@@@corrupt-1';
    expect((await cli(['register', ...args, '--client-id', id, '--store', store], env)).code).toBe(0);
    const file = join(store, e.instanceId, `${id}.json`);
    await writeFile(file, '{ not json', { mode: 0o600 });
    const connect = await cli(['connect', ...args, '--client-id', id, '--store', store, '--broker-url', e.mqttUrl, '--publish', 'mis/a', '--message', 'x'], env);
    expect(connect.code).toBe(1);
    expect(connect.stderr).toMatch(/^StoreCorrupt: .*apsaramq-device get --client-id <id> --store <dir> fetches the credential/);
    const mended = await cli(['get', ...args, '--client-id', id, '--store', store], env);
    expect(mended.code, mended.stderr).toBe(0);
    expect(mended.stderr).toMatch(/^replaced the corrupt .* with the credential the service holds; the bad file is kept as .*\.corrupt-\d+\n$/);
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ ClientId: id });
    expect((await readdir(join(store, e.instanceId))).some((f) => f.includes('.corrupt-'))).toBe(true);
    const after = await cli(['connect', ...args, '--client-id', id, '--store', store, '--broker-url', e.mqttUrl, '--publish', 'mis/a', '--message', 'x'], env);
    expect(after.code, after.stderr).toBe(0);
  });
});

describe('sign never ignores a flag', () => {
  it.each([
    [['sign', '--mode', 'signature', '--credential-file', 'dev-1.json', '--instance-id', 'mqtt-x', '--client-id', 'GID_a@@@b'], /^ConflictingOptions: --mode signature and --credential-file cannot be used together/],
    [['sign', '--credential-file', 'dev-1.json', '--client-id', 'GID_a@@@b'], /^ConflictingOptions: --credential-file and --client-id cannot be used together: the credential file holds the ClientId/],
    [['sign', '--credential-file', 'dev-1.json', '--instance-id', 'mqtt-x'], /^ConflictingOptions: --credential-file and --instance-id cannot be used together/],
  ])('%j', async (args, pattern) => {
    const run = await cli(args, {});
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(pattern);
  });

  it('a credential file that does not exist says what writes one', async () => {
    const run = await cli(['sign', '--credential-file', join(await tempDir(), 'dev-1.json')], {});
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^InvalidCredential: Cannot read credential file .*dev-1\.json: there is no such file \(it is what `apsaramq-device register … --out FILE`/);
  });
});

describe('a fleet-wide failure is one line with its remedy, not a page of the same line', () => {
  it('provision with a wrong account secret', async () => {
    const e = emulator();
    const run = await cli(
      ['provision', '--endpoint', e.apiEndpoint, '--instance-id', e.instanceId, '--group-id', 'GID_wrong', '--count', '50', '--store', join(await tempDir(), 'store')],
      { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'not-the-secret' },
    );
    expect(run.code).toBe(1);
    const failedLines = run.stdout.split('\n').filter((l) => l.trimStart().startsWith('failed '));
    expect(failedLines).toHaveLength(1);
    expect(failedLines[0]).toMatch(/^ {2}failed SignatureDoesNotMatch ×50: GID_wrong@@@dev-0, .*, … and 30 more$/);
    expect(run.stdout).toContain('    Check ALIBABA_CLOUD_ACCESS_KEY_SECRET: it does not match the AccessKeyId.');
    expect(run.stderr).toMatch(/^SignatureDoesNotMatch: 50 of 50 devices were not provisioned \(SignatureDoesNotMatch 50\)\. Check ALIBABA_CLOUD_ACCESS_KEY_SECRET: it does not match the AccessKeyId\. Then run the same command again/m);
  });
});
