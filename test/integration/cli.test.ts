import { createServer } from 'node:net';
import { readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import { cli, spawnCli, tempDir } from '../helpers/cli.js';
import { closedPort } from '../helpers/http.js';
import { subscribed, useEmulator } from '../helpers/emulator.js';

const getEmulator = useEmulator({ parentTopics: ['cli', 't', 'twin', 'a'] });

function keys(): NodeJS.ProcessEnv {
  const e = getEmulator();
  return { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret };
}

function api(...rest: string[]): string[] {
  const e = getEmulator();
  return ['--endpoint', e.apiEndpoint, '--instance-id', e.instanceId, ...rest];
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((d) => d.isFile()).map((d) => join(d.parentPath, d.name));
}

describe('apsaramq-device --help', () => {
  it.each([[[]], [['emulator']], [['register']], [['get']], [['refresh']], [['unregister']], [['list']], [['sign']], [['connect']]])('%j --help exits 0 and explains', async (cmd) => {
    const run = await cli([...cmd, '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/Usage: apsaramq-device/);
    if (cmd.length > 0) expect(run.stdout).toMatch(/Example/);
  });

  it('an unknown command or flag is a usage error (exit 2)', async () => {
    expect((await cli(['frobnicate'])).code).toBe(2);
    const run = await cli(['register', '--bogus']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/unknown option '--bogus'/);
  });
});

describe('registrar commands against the emulator', () => {
  it('register, get, refresh, list, unregister print the API response', async () => {
    const reg = await cli(['register', ...api('--client-id', 'GID_cli@@@dev-1')], keys());
    expect(reg.code).toBe(0);
    const registered = JSON.parse(reg.stdout);
    expect(registered.RequestId).toMatch(/^[0-9A-F-]{36}$/);
    expect(registered.DeviceCredential).toMatchObject({ ClientId: 'GID_cli@@@dev-1', InstanceId: getEmulator().instanceId });
    expect(registered.DeviceCredential.DeviceAccessKeySecret).toMatch(/^DC\./);

    const got = JSON.parse((await cli(['get', ...api('--client-id', 'GID_cli@@@dev-1')], keys())).stdout);
    expect(got.DeviceCredential).toEqual(registered.DeviceCredential);

    const refreshed = JSON.parse((await cli(['refresh', ...api('--client-id', 'GID_cli@@@dev-1')], keys())).stdout);
    expect(refreshed.DeviceCredential.DeviceAccessKeyId).not.toBe(registered.DeviceCredential.DeviceAccessKeyId);
    expect(refreshed.DeviceCredential.CreateTime).toBe(registered.DeviceCredential.CreateTime);

    const list = JSON.parse((await cli(['list', ...api('--group-id', 'GID_cli')], keys())).stdout);
    expect(list.DeviceCredentialClientIdList).toMatchObject({ Total: '1', ClientIdList: ['GID_cli@@@dev-1'], PageNo: '1' });

    const unreg = await cli(['unregister', ...api('--client-id', 'GID_cli@@@dev-1')], keys());
    expect(unreg.code).toBe(0);
    expect(JSON.parse(unreg.stdout)).toHaveProperty('RequestId');

    const gone = await cli(['get', ...api('--client-id', 'GID_cli@@@dev-1')], keys());
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/^DeviceCredentialNotFound: /);
    expect(gone.stderr.trim().split('\n')).toHaveLength(1);
    expect(gone.stderr).not.toMatch(/\n\s+at /); // no stack trace without --verbose
  });

  it('fails with the error code first: exit 1 for failures, exit 2 for usage errors and input that can never work', async () => {
    const noKeys = await cli(['get', ...api('--client-id', 'GID_cli@@@dev-2')], {});
    expect(noKeys.code).toBe(1);
    expect(noKeys.stderr).toMatch(/^MissingAccessKey: .*ALIBABA_CLOUD_ACCESS_KEY_ID/);

    const badId = await cli(['register', ...api('--client-id', 'dev-2')], keys());
    expect(badId.code).toBe(2); // input that can never work: a usage error, still with its code first
    expect(badId.stderr).toMatch(/^InvalidClientId: .*@@@/);

    const wrongSecret = await cli(['get', ...api('--client-id', 'GID_cli@@@dev-2')], { ...keys(), ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'wrong' });
    expect(wrongSecret.stderr).toMatch(/^SignatureDoesNotMatch: /);
    expect(wrongSecret.stderr).not.toContain(getEmulator().accessKeySecret);

    expect((await cli(['get', '--instance-id', 'x', '--client-id', 'GID_cli@@@d'], keys())).code).toBe(2); // no endpoint
    expect((await cli(['connect', ...api('--client-id', 'GID_cli@@@d', '--qos', '7', '--publish', 't', '--message', 'm')], keys())).code).toBe(2);
    expect((await cli(['connect', ...api('--client-id', 'GID_cli@@@d')], keys())).code).toBe(2); // neither publish nor subscribe
  });

  it('register --store refuses an insecure store before calling the API, and saves after printing otherwise', async () => {
    const e = getEmulator();
    const open = join(await tempDir(), 'open');
    await mkdir(open, { mode: 0o755 });
    await chmod(open, 0o755);
    const before = e.stats().actions['RegisterDeviceCredential']?.ok ?? 0;
    const refused = await cli(['register', ...api('--client-id', 'GID_cli@@@store-1', '--store', open)], keys());
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^StoreInsecure: /);
    expect(refused.stdout).toBe('');
    expect(e.stats().actions['RegisterDeviceCredential']?.ok ?? 0).toBe(before); // nothing rotated on the service

    const store = join(await tempDir(), 'private');
    const ok = await cli(['register', ...api('--client-id', 'GID_cli@@@store-1', '--store', store)], keys());
    expect(ok.code, ok.stderr).toBe(0);
    const saved = JSON.parse(await readFile(join(store, e.instanceId, 'GID_cli@@@store-1.json'), 'utf8'));
    expect(saved).toEqual(JSON.parse(ok.stdout).DeviceCredential);
  });

  it('--verbose adds the stack trace', async () => {
    const run = await cli(['--verbose', 'get', ...api('--client-id', 'GID_cli@@@verbose-1')], keys());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^DeviceCredentialNotFound: /);
    expect(run.stderr).toMatch(/\n\s+at /);
  });
});

describe('sign', () => {
  it('derives username and password from a credential file (whole response or bare object)', async () => {
    const dir = await tempDir();
    const reg = await cli(['register', ...api('--client-id', 'GID_cli@@@sign-1')], keys());
    const body = JSON.parse(reg.stdout);
    await writeFile(join(dir, 'whole.json'), reg.stdout, { mode: 0o600 });
    await writeFile(join(dir, 'bare.json'), JSON.stringify(body.DeviceCredential), { mode: 0o600 });
    for (const file of ['whole.json', 'bare.json']) {
      const run = await cli(['sign', '--credential-file', join(dir, file), '--json']);
      expect(run.code).toBe(0);
      expect(JSON.parse(run.stdout)).toEqual({
        username: `DeviceCredential|${body.DeviceCredential.DeviceAccessKeyId}|${getEmulator().instanceId}`,
        password: expect.stringMatching(/^[A-Za-z0-9+/]{27}=$/),
        clientId: 'GID_cli@@@sign-1',
      });
    }
  });

  it('signature mode uses the account keys from the environment', async () => {
    const run = await cli(['sign', '--mode', 'signature', '--instance-id', 'mqtt-x', '--client-id', 'GID_test@@@0001', '--json'], { ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIkey', ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'XXXXX' });
    expect(JSON.parse(run.stdout)).toEqual({ username: 'Signature|LTAIkey|mqtt-x', password: 'bGdOc9YXqL/kM2hYBkXR0I2IPOE=', clientId: 'GID_test@@@0001' });
  });

  it('a credential file missing fields is a clear typed error', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'c.json'), JSON.stringify({ ClientId: 'GID_cli@@@x', InstanceId: 'i' }), { mode: 0o600 });
    const run = await cli(['sign', '--credential-file', join(dir, 'c.json')]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^InvalidCredential: .*lacks DeviceAccessKeyId, DeviceAccessKeySecret/);
    const missing = await cli(['sign', '--credential-file', join(dir, 'nope.json')]);
    expect(missing.stderr).toMatch(/^InvalidCredential: Cannot read credential file .*nope\.json: there is no such file/);
  });
});

describe('connect', () => {
  it('registers once, keeps the credential in the store, and publishes to a subscriber', async () => {
    const e = getEmulator();
    const store = join(await tempDir(), 'store');
    const connectArgs = (...rest: string[]): string[] => ['connect', ...api('--broker-url', e.mqttUrl, '--store', store, ...rest)];

    let stopSubscriber: () => void = () => {};
    const ready = subscribed(e, 'GID_cli@@@sub-1', 'cli/+/data');
    const subscriber = cli(connectArgs('--client-id', 'GID_cli@@@sub-1', '--subscribe', 'cli/+/data', '--count', '2', '--json'), keys(), new Promise((r) => (stopSubscriber = r)));
    await ready; // the subscription is in place before anything is published

    const before = e.stats().actions;
    const pub1 = await cli(connectArgs('--client-id', 'GID_cli@@@pub-1', '--publish', 'cli/pub-1/data', '--message', 'first'), keys());
    expect(pub1.code, pub1.stderr).toBe(0);
    const afterFirst = e.stats().actions;
    expect(afterFirst['RegisterDeviceCredential']?.ok).toBe((before['RegisterDeviceCredential']?.ok ?? 0) + 1);

    const pub2 = await cli(connectArgs('--client-id', 'GID_cli@@@pub-1', '--publish', 'cli/pub-1/data', '--message', 'second'), keys());
    expect(pub2.code, pub2.stderr).toBe(0);
    expect(e.stats().actions).toEqual(afterFirst); // the second run used the store: no API call

    const sub = await subscriber;
    stopSubscriber();
    expect(sub.code, sub.stderr).toBe(0);
    expect(sub.stdout.trim().split('\n').map((l) => JSON.parse(l))).toEqual([
      { topic: 'cli/pub-1/data', payload: 'first' },
      { topic: 'cli/pub-1/data', payload: 'second' },
    ]);

    const files = await filesUnder(store);
    expect(files.map((f) => f.slice(store.length))).toEqual(expect.arrayContaining([`/${e.instanceId}/GID_cli@@@pub-1.json`, `/${e.instanceId}/GID_cli@@@sub-1.json`]));
    for (const f of files) expect((await stat(f)).mode & 0o777).toBe(0o600);
    expect((await stat(store)).mode & 0o777).toBe(0o700);
  });

  it('bad input leaves nothing in the store', async () => {
    const e = getEmulator();
    const store = join(await tempDir(), 'store');
    for (const clientId of ['GID_cli-no-separator', `GID_cli@@@${'x'.repeat(57)}`, '', 'GID_cli@@@dév']) {
      const run = await cli(['connect', ...api('--broker-url', e.mqttUrl, '--store', store, '--client-id', clientId, '--publish', 't', '--message', 'm')], keys());
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/^InvalidClientId: /);
    }
    const blank = await cli(['connect', '--endpoint', e.apiEndpoint, '--instance-id', ' ', '--broker-url', e.mqttUrl, '--store', store, '--client-id', 'GID_cli@@@ok', '--publish', 't', '--message', 'm'], keys());
    expect(blank.stderr).toMatch(/^InvalidInstanceId: /);
    expect(await filesUnder(store)).toEqual([]);
  });

  it('a corrupt store file is reported and left as it is', async () => {
    const e = getEmulator();
    const store = join(await tempDir(), 'store');
    const ok = await cli(['connect', ...api('--broker-url', e.mqttUrl, '--store', store, '--client-id', 'GID_cli@@@corrupt-1', '--publish', 't/x', '--message', 'm')], keys());
    expect(ok.code, ok.stderr).toBe(0);
    const file = join(store, e.instanceId, 'GID_cli@@@corrupt-1.json');
    await writeFile(file, '{"ClientId": "GID_cli@@@corrupt-1", trunc');
    const run = await cli(['connect', ...api('--broker-url', e.mqttUrl, '--store', store, '--client-id', 'GID_cli@@@corrupt-1', '--publish', 't/x', '--message', 'm')], keys());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^StoreCorrupt: /);
    expect(await readFile(file, 'utf8')).toBe('{"ClientId": "GID_cli@@@corrupt-1", trunc');
  });

  it('a device with only its credential file connects without account keys', async () => {
    const e = getEmulator();
    const dir = await tempDir();
    const reg = await cli(['register', ...api('--client-id', 'GID_cli@@@file-1')], keys());
    await writeFile(join(dir, 'cred.json'), reg.stdout, { mode: 0o600 });
    const run = await cli(['connect', '--credential-file', join(dir, 'cred.json'), '--broker-url', e.mqttUrl, '--publish', 't/y', '--message', 'm'], {});
    expect(run.code, run.stderr).toBe(0);
  });

  it('a refused credential ends with CredentialRejected, not a reconnect loop', async () => {
    const e = getEmulator();
    const dir = await tempDir();
    const reg = await cli(['register', ...api('--client-id', 'GID_cli@@@revoked-1')], keys());
    await writeFile(join(dir, 'cred.json'), reg.stdout, { mode: 0o600 });
    await cli(['unregister', ...api('--client-id', 'GID_cli@@@revoked-1')], keys());
    const run = await cli(['connect', '--credential-file', join(dir, 'cred.json'), '--broker-url', e.mqttUrl, '--publish', 't/y', '--message', 'm'], {});
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^CredentialRejected: .*CONNACK 4/);
  });
});

describe('connect: what a person sees when something is wrong', () => {
  /** Register a device and write its credential file; returns the file. */
  async function credentialFile(clientId: string): Promise<string> {
    const dir = await tempDir();
    const reg = await cli(['register', ...api('--client-id', clientId)], keys());
    expect(reg.code, reg.stderr).toBe(0);
    await writeFile(join(dir, 'cred.json'), reg.stdout, { mode: 0o600 });
    return join(dir, 'cred.json');
  }

  function connacks(): number {
    return Object.values(getEmulator().stats().mqtt.connacks).reduce((a, b) => a + b, 0);
  }

  it('--publish of a message the broker refuses exits 1 with PublishRejected instead of looping', async () => {
    const file = await credentialFile('GID_cli@@@refused-1');
    const started = Date.now();
    // The emulator closes the session of a client that publishes to $SYS/…, as the service does for a refused message.
    const run = await cli(['connect', '--credential-file', file, '--broker-url', getEmulator().mqttUrl, '--publish', '$SYS/x', '--message', 'm'], {});
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^PublishRejected: The broker closed the session right after each of the 3 times the message to \$SYS\/x was sent/);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(15_000); // three sends, jittered reconnects of at most 1 s + 2 s between
  });

  it('a wildcard topic or a message over 64 KB is refused before connecting (exit 2)', async () => {
    const file = await credentialFile('GID_cli@@@wild-1');
    const before = connacks();
    const wild = await cli(['connect', '--credential-file', file, '--broker-url', getEmulator().mqttUrl, '--publish', 'a/+', '--message', 'm'], {});
    expect(wild.code).toBe(2);
    expect(wild.stderr).toMatch(/^InvalidTopic: Cannot publish to "a\/\+"/);
    const big = await cli(['connect', '--credential-file', file, '--broker-url', getEmulator().mqttUrl, '--publish', 'a/b', '--message', 'x'.repeat(65_537)], {});
    expect(big.code).toBe(2);
    expect(big.stderr).toMatch(/^PayloadTooLarge: /);
    const filter = await cli(['connect', '--credential-file', file, '--broker-url', getEmulator().mqttUrl, '--subscribe', 'a/#/b'], {});
    expect(filter.code).toBe(2);
    expect(filter.stderr).toMatch(/^InvalidTopic: /);
    expect(connacks()).toBe(before);
  });

  it('a stopped broker fails at once, naming the URL', async () => {
    const file = await credentialFile('GID_cli@@@stopped-1');
    const url = `mqtt://127.0.0.1:${await closedPort()}`;
    const started = Date.now();
    const run = await cli(['connect', '--credential-file', file, '--broker-url', url, '--publish', 'a/b', '--message', 'm'], {});
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^BrokerUnreachable: Could not reach the broker at ${url}.*Nothing answers at ${url}: is the broker \\(or the emulator\\) running\\?`));
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("--broker-url pointing at the OpenAPI's HTTP port is a ProtocolError: did you mean --endpoint?", async () => {
    const file = await credentialFile('GID_cli@@@http-1');
    const run = await cli(['connect', '--credential-file', file, '--broker-url', getEmulator().apiEndpoint.replace(/^http:/, 'mqtt:'), '--publish', 'a/b', '--message', 'm'], {});
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^ProtocolError: .* answered in HTTP, not MQTT\. This port speaks HTTP: did you mean --endpoint\?/);
  });

  it('two processes with one credential: each takeover is one line on stderr, and both keep running', async () => {
    const file = await credentialFile('GID_cli@@@twin-1');
    const stops: (() => void)[] = [];
    const lines: string[] = [];
    let reported: () => void = () => {};
    const takeover = new Promise<void>((r) => (reported = r));
    const twin = (): Promise<number> =>
      runCli(['connect', '--credential-file', file, '--broker-url', getEmulator().mqttUrl, '--subscribe', 'twin/#'], {
        stdout: () => {},
        stderr: (text) => {
          lines.push(text);
          if (text.startsWith('takeover: ')) reported();
        },
        env: {},
        interrupted: () => new Promise<void>((r) => stops.push(r)),
      });
    const runs = [twin(), twin()];
    await takeover;
    for (const stop of stops) stop();
    expect(await Promise.all(runs)).toEqual([130, 130]); // stopped as by Ctrl+C
    const takeoverLines = lines.filter((l) => l.startsWith('takeover: '));
    expect(takeoverLines[0]).toBe('takeover: another client probably took over the session of GID_cli@@@twin-1 (every device needs its own ClientId); reconnecting with a longer delay\n');
  }, 60_000);
});

describe('connect to a TLS broker', () => {
  const tlsDir = resolve(import.meta.dirname, '../../fixtures/tls');
  const tls = useEmulator({ tls: { cert: readFileSync(resolve(tlsDir, 'server.pem')), key: readFileSync(resolve(tlsDir, 'server-key.pem')) }, parentTopics: ['a'] });

  it('an mqtts:// broker whose certificate is not trusted names --ca and --insecure; with --ca it connects', async () => {
    const e = tls();
    const dir = await tempDir();
    const env = { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret };
    const reg = await cli(['register', '--endpoint', e.apiEndpoint, '--instance-id', e.instanceId, '--client-id', 'GID_cli@@@tls-1'], env);
    await writeFile(join(dir, 'cred.json'), reg.stdout, { mode: 0o600 });
    const args = ['connect', '--credential-file', join(dir, 'cred.json'), '--broker-url', e.mqttsUrl ?? '', '--publish', 'a/b', '--message', 'm'];
    const untrusted = await cli(args, {});
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/^BrokerUnreachable: The TLS certificate of mqtts:.* could not be verified .*The broker's certificate is not trusted: pass --ca FILE .*or --insecure .*for tests/);
    expect((await cli([...args, '--ca', resolve(tlsDir, 'ca.pem')], {})).code).toBe(0);
    expect((await cli([...args, '--insecure'], {})).code).toBe(0);
  });
});

describe('emulator command (child process)', () => {
  it('prints one JSON line when ready and closes cleanly on SIGTERM', async () => {
    const proc = await spawnCli(['emulator', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', '--parent-topics', 'x', '--groups', 'GID_cli', '--json']);
    const info = JSON.parse(proc.firstLine);
    expect(Object.keys(info)).toEqual(['mqttUrl', 'wsUrl', 'apiEndpoint', 'instanceId', 'accessKeyId', 'accessKeySecret']);
    expect(info.mqttUrl).toMatch(/^mqtt:\/\/127\.0\.0\.1:\d+$/);
    expect(info.wsUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/mqtt$/);
    const env = { ALIBABA_CLOUD_ACCESS_KEY_ID: info.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: info.accessKeySecret };
    const run = await cli(['connect', '--endpoint', info.apiEndpoint, '--instance-id', info.instanceId, '--broker-url', info.wsUrl, '--store', await tempDir(), '--client-id', 'GID_cli@@@child-1', '--publish', 'x/y', '--message', 'hi'], env);
    expect(run.code, run.stderr).toBe(0);
    const stats = (await (await fetch(`${info.apiEndpoint}/_emulator/stats`)).json()) as { mqtt: { connacks: Record<string, number> } };
    expect(stats.mqtt.connacks).toEqual({ '0': 1 });
    expect(await proc.stop('SIGTERM')).toBe(0);
  });

  it('a port in use is AddressInUse, not an unknown error', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    onTestFinished(() => new Promise<void>((r) => blocker.close(() => r())));
    const port = String((blocker.address() as { port: number }).port);
    const run = await cli(['emulator', '--mqtt-port', port, '--ws-port', '0', '--api-port', '0'], {});
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^AddressInUse: Cannot listen on 127\\.0\\.0\\.1:${port}`));
  });

  it('does not echo an account secret taken from the environment', async () => {
    let stop: () => void = () => {};
    const stopped = new Promise<void>((r) => (stop = r));
    const running = cli(['emulator', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0'], { ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIreal', ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'my-real-secret-value' }, stopped);
    stop(); // the banner is printed before the command waits for Ctrl+C, so this can come at once
    const run = await running;
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('emulator is running');
    expect(run.stdout).not.toContain('my-real-secret-value');
  });

  it('uses the account keys from the environment', async () => {
    const proc = await spawnCli(['emulator', '--mqtt-port', '0', '--ws-port', '0', '--api-port', '0', '--json', '--instance-id', 'mqtt-cli-test'], {
      ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIfromenv',
      ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'secret-from-env',
    });
    // The secret came from the environment: the line says so instead of echoing it (issue #9).
    expect(JSON.parse(proc.firstLine)).toMatchObject({ instanceId: 'mqtt-cli-test', accessKeyId: 'LTAIfromenv', accessKeySecret: null, accessKeySource: 'environment' });
    expect(proc.firstLine).not.toContain('secret-from-env');
    expect(await proc.stop('SIGINT')).toBe(0);
  });
});
