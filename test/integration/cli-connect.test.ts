/**
 * `connect` as a person uses it: it says when it registers (a typo in a ClientId is billable), refuses flags it would
 * ignore, needs no account key for a device whose credential is stored, fails fast on a dead endpoint, and stops on
 * Ctrl+C saying what it got. In-process runs of the real command, against the emulator.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, tempDir } from '../helpers/cli.js';
import { useEmulator } from '../helpers/emulator.js';
import { closedPort } from '../helpers/http.js';

const emulator = useEmulator();

function api(): { args: string[]; env: NodeJS.ProcessEnv } {
  const e = emulator();
  return {
    args: ['--endpoint', e.apiEndpoint, '--instance-id', e.instanceId, '--broker-url', e.mqttUrl],
    env: { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret },
  };
}

describe('connect says what it bills and what it does', () => {
  it('says when it registers a new credential, and not on the next run', async () => {
    const { args, env } = api();
    const store = join(await tempDir(), 'store');
    const first = await cli(['connect', ...args, '--store', store, '--client-id', 'GID_demo@@@dev-1x', '--publish', 'demo/x', '--message', 'hi'], env);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/^registered a new credential for GID_demo@@@dev-1x \(DC\.[^)]+\): it had none on instance /m);
    const second = await cli(['connect', ...args, '--store', store, '--client-id', 'GID_demo@@@dev-1x', '--publish', 'demo/x', '--message', 'hi'], env);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).not.toContain('registered');
    expect(second.stderr).toBe('published to demo/x as GID_demo@@@dev-1x\n');
  });

  it('needs no account key when the credential is in the store', async () => {
    const { args, env } = api();
    const store = join(await tempDir(), 'store');
    expect((await cli(['connect', ...args, '--store', store, '--client-id', 'GID_demo@@@keyless', '--publish', 'demo/x', '--message', 'a'], env)).code).toBe(0);
    const keyless = await cli(['connect', ...args, '--store', store, '--client-id', 'GID_demo@@@keyless', '--publish', 'demo/x', '--message', 'b'], {});
    expect(keyless.code, keyless.stderr).toBe(0);
    const missing = await cli(['connect', ...args, '--store', store, '--client-id', 'GID_demo@@@not-stored', '--publish', 'demo/x', '--message', 'c'], {});
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^MissingAccessKey: /);
  });

  it('fails fast on a dead endpoint when it has to call it', async () => {
    const endpoint = `http://127.0.0.1:${await closedPort()}`;
    const run = await cli(['connect', '--endpoint', endpoint, '--instance-id', 'mqtt-x', '--client-id', 'GID_demo@@@dead', '--store', join(await tempDir(), 's'), '--publish', 'demo/x', '--message', 'x'], { ALIBABA_CLOUD_ACCESS_KEY_ID: 'a', ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'b' });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`ConnectionRefused: Nothing answers at ${endpoint}. Is the emulator running? Start it with apsaramq-device emulator, or fix --endpoint.\n`);
  });
});

describe('connect never ignores a flag', () => {
  it.each([
    [['--subscribe', 'demo/#', '--message', 'x'], /^ConflictingOptions: --subscribe and --message cannot be used together/],
    [['--publish', 'demo/x', '--message', 'x', '--count', '2'], /^ConflictingOptions: --publish and --count cannot be used together/],
    [['--publish', 'demo/x', '--message', 'x', '--json'], /^ConflictingOptions: --publish and --json cannot be used together/],
    [['--publish', 'demo/x', '--subscribe', 'demo/#', '--message', 'x'], /^ConflictingOptions: --publish and --subscribe cannot be used together/],
  ])('%j', async (extra, pattern) => {
    const run = await cli(['connect', '--credential-file', 'x.json', ...extra]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(pattern);
  });

  it('refuses a --client-id, --instance-id, --endpoint or --store that a credential file would override', async () => {
    const file = join(await tempDir(), 'dev-10.json');
    await writeFile(file, JSON.stringify({ ClientId: 'GID_demo@@@dev-10', InstanceId: 'mqtt-demo', DeviceAccessKeyId: 'DC.k', DeviceAccessKeySecret: 'DC.s' }), { mode: 0o600 });
    const base = ['connect', '--credential-file', file, '--publish', 'demo/x', '--message', 'x'];
    const other = await cli([...base, '--client-id', 'GID_demo@@@other']);
    expect([other.code, other.stderr]).toEqual([2, expect.stringMatching(/^ConflictingOptions: --credential-file and --client-id cannot be used together: the file is the credential of GID_demo@@@dev-10, not GID_demo@@@other/)]);
    const instance = await cli([...base, '--instance-id', 'other']);
    expect(instance.stderr).toMatch(/^ConflictingOptions: --credential-file and --instance-id cannot be used together: the file is a credential of instance mqtt-demo, not other/);
    const endpoint = await cli([...base, '--endpoint', 'http://127.0.0.1:8080']);
    expect(endpoint.stderr).toMatch(/^ConflictingOptions: --credential-file and --endpoint cannot be used together/);
  });
});

describe('Ctrl+C', () => {
  it('a subscriber stops, says how many messages it got, and exits 130', async () => {
    const { args, env } = api();
    const store = join(await tempDir(), 'store');
    let press: () => void = () => {};
    const ctrlC = new Promise<void>((resolve) => {
      press = resolve;
    });
    // Listening before the command starts: its SUBSCRIBE cannot be missed.
    const subscribed = new Promise<void>((resolve) => {
      const onSub = ({ clientId, topics }: { clientId: string; topics: string[] }): void => {
        if (clientId === 'GID_demo@@@sub-1' && topics.includes('demo/#')) {
          emulator().events.off('subscribed', onSub);
          resolve();
        }
      };
      emulator().events.on('subscribed', onSub);
    });
    const running = cli(['connect', ...args, '--store', store, '--client-id', 'GID_demo@@@sub-1', '--subscribe', 'demo/#', '--count', '5'], env, ctrlC);
    await subscribed;
    press();
    const run = await running;
    expect(run.code, run.stderr).toBe(130);
    expect(run.stderr).toMatch(/interrupted: 0 messages received on demo\/# of the 5 asked for\n$/);
  });
});
