/**
 * The CLI under every DEBUG value people set: its dependencies (pop-core's httpx, mqtt-packet, mqtt.js, aedes) log
 * through the `debug` module on their own, past the CLI's scrubbing logger, and would print device secrets, the
 * account secret and MQTT passwords. The real executable, as a child process, in success and in failure, with and
 * without --verbose.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { FileCredentialStore } from '../../src/provisioner/file-store.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { CLI_BIN, tempDir } from '../helpers/cli.js';
import { useEmulator } from '../helpers/emulator.js';

const run = promisify(execFile);
const emulator = useEmulator({ parentTopics: ['dbg'] });

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

async function cliChild(args: string[], env: NodeJS.ProcessEnv): Promise<Output> {
  return run(process.execPath, [CLI_BIN, ...args], { env: { PATH: process.env['PATH'], ...env }, timeout: 20_000 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

describe('DEBUG never makes the CLI print a secret', () => {
  it.each([
    ['*', []],
    ['*', ['--verbose']],
    ['httpx:*', []],
    ['mqtt-packet:writeToStream,mqtt-packet:generate', ['--verbose']],
    ['mqttjs*', []],
  ])('DEBUG=%s %j: register-through-connect, then a failing get', async (debug, flags) => {
    const e = emulator();
    const store = join(await tempDir(), 'store');
    const env = { DEBUG: debug, ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret };
    const api = ['--endpoint', e.apiEndpoint, '--instance-id', e.instanceId];
    const clientId = `GID_dbg@@@dev-${Math.random().toString(36).slice(2, 8)}`;

    const connected = await cliChild([...flags, 'connect', ...api, '--broker-url', e.mqttUrl, '--store', store, '--client-id', clientId, '--publish', 'dbg/a', '--message', 'm'], env);
    expect(connected.code, connected.stderr).toBe(0);
    const failed = await cliChild([...flags, 'get', ...api, '--client-id', 'GID_dbg@@@missing'], env);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/^(notice: [^\n]*\n)?DeviceCredentialNotFound: /);

    const credential = await new FileCredentialStore(store).load(e.instanceId, clientId);
    expect(credential).toBeDefined();
    const secrets = [e.accessKeySecret, credential!.deviceAccessKeySecret, signDeviceCredential(credential!).password];
    const text = [connected.stdout, connected.stderr, failed.stdout, failed.stderr].join('\n');
    for (const secret of secrets) expect(text, 'a secret leaked').not.toContain(secret);
    // The user is told why DEBUG did nothing, once per run.
    expect(connected.stderr.match(/notice: DEBUG is ignored/g)).toHaveLength(1);
  });
});
