/**
 * `token apply|query|revoke` and `status` against the emulator, in-process with the CLI's real command parsing.
 */
import { describe, expect, it } from 'vitest';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { cli } from '../helpers/cli.js';
import { connectMqtt, registerDevice, useEmulator } from '../helpers/emulator.js';

const emulator = useEmulator();

function api(): { args: string[]; env: NodeJS.ProcessEnv } {
  const e = emulator();
  return { args: ['--endpoint', e.apiEndpoint, '--instance-id', e.instanceId], env: { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret } };
}

describe('token and status commands', () => {
  it('applies a token, queries it (from stdin), revokes it, and queries it again', async () => {
    const { args, env } = api();
    const applied = await cli(['token', 'apply', ...args, '--resources', 'demo/b,demo/a', '--actions', 'R,W', '--expire-in', '15m', '--json'], env);
    expect(applied.code, applied.stderr).toBe(0);
    const issued = JSON.parse(applied.stdout) as { token: string; type: string; resources: string[]; expireTime: number };
    expect([issued.type, issued.resources]).toEqual(['RW', ['demo/a', 'demo/b']]);
    expect(issued.expireTime - Date.now()).toBeGreaterThan(14 * 60_000);
    const valid = await cli(['token', 'query', ...args, '--token', '-'], env, undefined, `${issued.token}\n`);
    expect([valid.code, valid.stdout]).toEqual([0, 'valid\n']);
    const revoked = await cli(['token', 'revoke', ...args, '--token', issued.token], env);
    expect([revoked.code, revoked.stdout]).toEqual([0, 'revoked\n']);
    const invalid = await cli(['token', 'query', ...args, '--token', issued.token], env);
    expect([invalid.code, invalid.stdout, invalid.stderr]).toEqual([1, 'invalid\n', '']);
  });

  it('refuses a bad token request before any call', async () => {
    const { args, env } = api();
    const before = emulator().stats().actions['ApplyToken']?.ok ?? 0;
    for (const [extra, pattern] of [
      [['--actions', 'R'], /^MissingOption: --resources is required/],
      [['--resources', 'demo/a', '--actions', 'RW'], /^InvalidOption: --actions RW is invalid: use R, W or R,W/],
      [['--resources', 'demo/a', '--actions', 'W', '--expire-in', '30s'], /^InvalidOption: --expire-in 30s is invalid/],
      [['--resources', 'demo/a', '--actions', 'W', '--expire-in', 'soon'], /^InvalidOption: --expire-in soon is invalid/],
    ] as const) {
      const run = await cli(['token', 'apply', ...args, ...extra], env);
      expect(run.code, run.stderr).toBe(2);
      expect(run.stderr).toMatch(pattern);
      expect(run.stderr).toContain('see apsaramq-device token apply --help');
    }
    expect(emulator().stats().actions['ApplyToken']?.ok ?? 0).toBe(before);
  });

  it('status says which devices are online, and exits 1 unless all are', async () => {
    const { args, env } = api();
    const e = emulator();
    const credential = await registerDevice(e, 'GID_st@@@on-1');
    const client = await connectMqtt(e.mqttUrl, signDeviceCredential(credential));
    const one = await cli(['status', ...args, '--client-id', 'GID_st@@@on-1'], env);
    expect([one.code, one.stdout]).toEqual([0, 'GID_st@@@on-1 online\n']);
    const two = await cli(['status', ...args, '--client-id', 'GID_st@@@on-1', 'GID_st@@@off-1', '--json'], env);
    expect(two.code).toBe(1);
    expect(JSON.parse(two.stdout)).toEqual([{ clientId: 'GID_st@@@on-1', online: true }, { clientId: 'GID_st@@@off-1', online: false }]);
    await client.endAsync();
    const eleven = await cli(['status', ...args, '--client-id', ...Array.from({ length: 11 }, (_, i) => `GID_st@@@d-${i}`)], env);
    expect(eleven.code).toBe(2);
    expect(eleven.stderr).toMatch(/^InvalidOption: --client-id takes at most 10 ClientIds, not 11/);
  });
});
