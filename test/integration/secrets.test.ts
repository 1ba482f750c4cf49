/**
 * A full register → connect → rotate → heal → revoke scenario with every log on, every line captured: not one
 * secret issued in the run (account secret, device secrets, MQTT passwords) may appear in any of it.
 */
import { once } from 'node:events';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { registerAndConnect } from '../../src/register-and-connect.js';
import type { DeviceCredential } from '../../src/credential.js';
import { FileCredentialStore } from '../../src/provisioner/file-store.js';
import { Provisioner } from '../../src/provisioner/provisioner.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { emulatorTarget } from '../../src/simulator/target.js';
import type { Logger } from '../../src/util/logger.js';
import { cli, tempDir } from '../helpers/cli.js';
import { useEmulator } from '../helpers/emulator.js';

const emulator = useEmulator({ parentTopics: ['sec'] });

describe('secrets never leak', () => {
  it('a whole scenario with debug logging prints none of the secrets it issued', async () => {
    const e = emulator();
    const output: string[] = [];
    const capture = (level: string) => (message: string, fields?: Record<string, unknown>) => output.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
    const logger: Logger = { debug: capture('debug'), info: capture('info'), warn: capture('warn'), error: capture('error') };
    const env = { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret };
    const store = join(await tempDir(), 'store');
    const api = ['--endpoint', e.apiEndpoint, '--instance-id', e.instanceId];
    const issued: DeviceCredential[] = [];

    // CLI, verbose: a device registered through connect, then listed.
    for (const args of [
      ['--verbose', 'connect', ...api, '--broker-url', e.mqttUrl, '--store', store, '--client-id', 'GID_sec@@@cli-1', '--publish', 'sec/a', '--message', 'm'],
      ['--verbose', 'list', ...api, '--group-id', 'GID_sec'],
      ['--verbose', 'get', ...api, '--client-id', 'GID_sec@@@nope'], // fails: error path with --verbose stack
      ['--verbose', 'get', ...api, '--client-id', 'GID_sec@@@cli-1'], // prints the secret on stdout on purpose: only stderr is checked
    ]) {
      const run = await cli(args, env);
      output.push(run.stderr);
      if (args[1] !== 'get' || run.code !== 0) output.push(run.stdout);
    }

    // Library: a device with a logger, rotated by another registrar, healed, then revoked.
    const conn = await registerAndConnect({ ...env, accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret, endpoint: e.apiEndpoint, instanceId: e.instanceId, clientId: 'GID_sec@@@lib-1', brokerUrl: e.mqttUrl, store: new FileCredentialStore(store), logger, reconnect: { minDelayMs: 10, maxDelayMs: 50 } });
    issued.push(conn.credential);
    const registrar = new Provisioner({ endpoint: e.apiEndpoint, instanceId: e.instanceId, accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret });
    issued.push((await registrar.refresh('GID_sec@@@lib-1')).credential);
    const healed = once(conn, 'online');
    e.disconnect('GID_sec@@@lib-1'); // the broker drops the session
    await healed;
    await conn.publish('sec/b', 'payload', { qos: 1 });
    const target = emulatorTarget(e);
    output.push(inspect(conn, { depth: 10 }), JSON.stringify(conn), inspect(registrar, { depth: 10 }), JSON.stringify(registrar), inspect(target, { depth: 10 }), JSON.stringify(target), inspect(e), JSON.stringify(e));
    await registrar.unregister('GID_sec@@@lib-1');
    const closed = new Promise<{ error?: Error }>((resolve) => conn.once('closed', resolve));
    conn.on('error', (err) => output.push(inspect(err, { depth: 10 }), JSON.stringify(err), String(err)));
    e.disconnect('GID_sec@@@lib-1'); // the broker drops the session
    const { error } = await closed;
    expect(error).toMatchObject({ code: 'CredentialRejected' });
    issued.push((await new FileCredentialStore(store).load(e.instanceId, 'GID_sec@@@cli-1'))!);
    registrar.close();

    const text = output.join('\n');
    expect(text.length).toBeGreaterThan(1000); // the logs really were on
    expect(text).toContain('[mqtt.js]');
    const secrets = [e.accessKeySecret, ...issued.flatMap((c) => [c.deviceAccessKeySecret, signDeviceCredential(c).password])];
    for (const secret of secrets) expect(text, 'a secret leaked into the output').not.toContain(secret);
  });
});
