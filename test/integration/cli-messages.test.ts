/**
 * Messages that used to mislead, each as a person meets it: the wrong port as --endpoint, a key the recovery ladder
 * refetched, a report path that is a directory, a pipe closed by `head`, help examples that must work when copied, a
 * flag cut short, a credential file others can read (or one of 200 MB), a topic template that can never work. The
 * real command, in-process or as the built executable, against the emulator.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import mqtt from 'mqtt';
import { describe, expect, it, onTestFinished } from 'vitest';
import { MAX_START_AT_AHEAD_MS } from '../../src/simulator/options.js';
import { CLI_BIN, cli, tempDir } from '../helpers/cli.js';
import { registerDevice, useEmulator } from '../helpers/emulator.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';

const emulator = useEmulator();

function keys(): NodeJS.ProcessEnv {
  const e = emulator();
  return { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret };
}

/** The built executable in a child process whose stdout we close at once: its first write meets EPIPE. */
async function runWithClosedStdout(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI_BIN, ...args], { env: { PATH: process.env['PATH'] }, stdio: ['ignore', 'pipe', 'pipe'] });
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stderr };
}

describe('the MQTT or WebSocket port as --endpoint: every registrar command asks "is it the MQTT port?"', () => {
  const commands: [string, string[]][] = [
    ['register', ['register', '--client-id', 'GID_demo@@@port-1']],
    ['get', ['get', '--client-id', 'GID_demo@@@port-1']],
    ['list', ['list', '--group-id', 'GID_demo']],
    ['status', ['status', '--client-id', 'GID_demo@@@port-1']],
    ['token apply', ['token', 'apply', '--resources', 'demo/a', '--actions', 'R']],
  ];
  it.each(commands)('%s with the MQTT port', async (_name, args) => {
    const e = emulator();
    const endpoint = e.mqttUrl.replace('mqtt://', 'http://');
    const run = await cli([...args, '--endpoint', endpoint, '--instance-id', e.instanceId], keys());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^NetworkError: http:\/\/127\.0\.0\.1:\d+ took the connection but did not answer HTTP \(\w+\)\. This port does not speak HTTP: is it the MQTT port\? --endpoint takes the OpenAPI URL/);
    expect(run.stderr).not.toMatch(/outcome is unknown/i);
  });

  it.each(commands)('%s with the WebSocket port', async (_name, args) => {
    const e = emulator();
    const endpoint = (e.wsUrl as string).replace('ws://', 'http://').replace(/\/mqtt$/, '');
    const run = await cli([...args, '--endpoint', endpoint, '--instance-id', e.instanceId], keys());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^InvalidResponse: http:\/\/127\.0\.0\.1:\d+ answered HTTP 426 \(Upgrade Required\): it speaks WebSocket, not the ApsaraMQ OpenAPI\. Is it the MQTT port \(MQTT over WebSocket\)\? --endpoint takes the OpenAPI URL/);
  });
});

describe('connect says a key the recovery ladder refetched', () => {
  it('the stored key was rotated elsewhere: the broker refuses it, connect fetches the current one and says so', async () => {
    const e = emulator();
    const store = join(await tempDir(), 'store');
    const args = ['--endpoint', e.apiEndpoint, '--instance-id', e.instanceId, '--broker-url', e.mqttUrl, '--store', store, '--client-id', 'GID_demo@@@rotated', '--publish', 'demo/x', '--message', 'm'];
    expect((await cli(['connect', ...args], keys())).code).toBe(0);
    const stored = JSON.parse(await readFile(join(store, e.instanceId, 'GID_demo@@@rotated.json'), 'utf8')) as { DeviceAccessKeyId: string };
    // Rotated by someone else: the service's key changes, this store still holds the old one.
    const refreshed = await cli(['refresh', '--endpoint', e.apiEndpoint, '--instance-id', e.instanceId, '--client-id', 'GID_demo@@@rotated'], keys());
    const current = (JSON.parse(refreshed.stdout) as { DeviceCredential: { DeviceAccessKeyId: string } }).DeviceCredential.DeviceAccessKeyId;
    expect(current).not.toBe(stored.DeviceAccessKeyId);
    const run = await cli(['connect', ...args], keys());
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toBe(
      `the broker refused the key ${stored.DeviceAccessKeyId} of GID_demo@@@rotated: fetched its current key ${current} from the OpenAPI and kept it in the store\n` +
        'published to demo/x as GID_demo@@@rotated\n',
    );
  });
});

describe('simulate refuses, before the run, what could never work', () => {
  it.each([['DIR/'], ['DIR']])('--report %s (a directory) is a usage error naming the flag', async (form) => {
    const dir = await tempDir();
    const path = form === 'DIR/' ? `${dir}/` : dir;
    const run = await cli(['simulate', '--devices', '2', '--report', path], {});
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(`InvalidOption: --report ${path} is a directory: give the file to write, e.g. ${join(dir, 'report.json')}; see apsaramq-device simulate --help\n`);
  });

  it.each([
    ['$SYS/%i', /^InvalidOption: --topic \$SYS\/%i: topics under \$SYS are the broker's own/],
    ['..', /^InvalidOption: --topic \.\.: its parent topic "\.\." cannot exist on an instance/],
    ['a b/%i', /^InvalidOption: --topic a b\/%i: its parent topic "a b" cannot exist on an instance/],
    ['sim/%i/\ud800', /^InvalidOption: --topic sim\/%i\/\ud800 makes topics such as sim\/1\/\ud800: The topic "sim\/1\/\\ud800" is not valid UTF-8 \(it holds a lone surrogate\)/],
  ])('--topic %s is a usage error naming --topic (exit 2), before any emulator starts', async (topic, message) => {
    const run = await cli(['simulate', '--devices', '2', '--topic', topic, '--no-progress'], {});
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
    expect(run.stderr).not.toContain('EmulatorFailed');
  });
});

describe('a closed pipe ends the command quietly', () => {
  it('--help with its reader gone: exit 0, no EPIPE stack', async () => {
    const run = await runWithClosedStdout(['--help']);
    expect(run).toEqual({ code: 0, stderr: '' });
  });

  it('simulate --help with its reader gone: exit 0, no EPIPE stack', async () => {
    const run = await runWithClosedStdout(['simulate', '--help']);
    expect(run).toEqual({ code: 0, stderr: '' });
  });

  it('connect --subscribe | head -1: after the reader is gone, the next message ends it with exit 0', async () => {
    const e = emulator();
    const dir = await tempDir();
    const file = join(dir, 'sub.json');
    const subscriber = await registerDevice(e, 'GID_demo@@@pipe-sub');
    await writeFile(file, JSON.stringify(subscriber.toWire()), { mode: 0o600 });
    const child = spawn(process.execPath, [CLI_BIN, 'connect', '--credential-file', file, '--broker-url', e.mqttUrl, '--subscribe', 'demo/pipe'], { env: { PATH: process.env['PATH'] }, stdio: ['ignore', 'pipe', 'pipe'] });
    onTestFinished(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let stderr = '';
    const subscribed = new Promise<void>((resolve) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('subscribed to demo/pipe')) resolve();
      });
    });
    await subscribed;
    const publisher = await mqtt.connectAsync(e.mqttUrl, { ...signDeviceCredential(await registerDevice(e, 'GID_demo@@@pipe-pub')), protocolVersion: 4, reconnectPeriod: 0 });
    onTestFinished(() => publisher.endAsync(true));
    const lines = createInterface({ input: child.stdout });
    const first = once(lines, 'line');
    await publisher.publishAsync('demo/pipe', 'one', { qos: 1 });
    expect(await first).toEqual(['one']);
    // `head -1` exits: our end of the pipe closes; the next message is written to nobody.
    lines.close();
    child.stdout.destroy();
    const closed = once(child, 'close');
    await publisher.publishAsync('demo/pipe', 'two', { qos: 1 });
    const [code] = (await closed) as [number | null];
    expect(code).toBe(0);
    expect(stderr).toBe('subscribed to demo/pipe as GID_demo@@@pipe-sub\n');
  });
});

describe('--help examples work when copied', () => {
  // The emulator's own examples choose its instance id; every other command's must name the one it serves by default.
  const COMMANDS = [[], ['register'], ['get'], ['refresh'], ['unregister'], ['list'], ['provision'], ['connect'], ['simulate'], ['sign'], ['token', 'apply'], ['token', 'query'], ['token', 'revoke'], ['status'], ['report', 'merge']];

  it('every --instance-id in an example against the emulator is the one it serves by default', async () => {
    let help = '';
    for (const command of COMMANDS) help += (await cli([...command, '--help'], {})).stdout;
    // Leave out the flags' own placeholders (<id>) and the examples against the real service (mqtt-cn-…).
    const ids = [...help.matchAll(/--instance-id (\S+)/g)].map((m) => m[1] ?? '').filter((id) => !id.startsWith('<') && !id.startsWith('mqtt-cn-'));
    expect(ids.length).toBeGreaterThanOrEqual(8);
    expect(new Set(ids)).toEqual(new Set(['mqtt-emu-local']));
  });

  it('every --start-at in an example is ahead, within the 7 days a start time may be', async () => {
    const help = (await cli(['simulate', '--help'], {})).stdout + (await cli(['report', 'merge', '--help'], {})).stdout;
    const times = [...help.matchAll(/--start-at (\d{4}-\S+)/g)].map((m) => Date.parse(m[1] ?? ''));
    expect(times.length).toBeGreaterThanOrEqual(3);
    for (const time of times) {
      expect(time).toBeGreaterThan(Date.now());
      expect(time - Date.now()).toBeLessThan(MAX_START_AT_AHEAD_MS);
    }
  });
});

describe('a flag cut short gets a suggestion', () => {
  it.each([
    [['connect', '--broker', 'mqtt://127.0.0.1:1883'], "InvalidOption: unknown option '--broker' (did you mean --broker-url?); see apsaramq-device connect --help\n"],
    [['simulate', '--broker=mqtt://127.0.0.1:1883'], "InvalidOption: unknown option '--broker=mqtt://127.0.0.1:1883' (did you mean --broker-url?); see apsaramq-device simulate --help\n"],
    [['provision', '--instance', 'x'], "InvalidOption: unknown option '--instance' (did you mean --instance-id?); see apsaramq-device provision --help\n"],
  ])('%j', async (args, expected) => {
    const run = await cli(args, {});
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(expected);
  });
});

describe('a credential file holds a secret', () => {
  it('connect --credential-file with a file others can read: connects, and warns with the chmod', async () => {
    const e = emulator();
    const dir = await tempDir();
    const file = join(dir, 'dev-1.json');
    await writeFile(file, JSON.stringify((await registerDevice(e, 'GID_demo@@@readable')).toWire()), { mode: 0o644 });
    const run = await cli(['connect', '--credential-file', file, '--broker-url', e.mqttUrl, '--publish', 'demo/x', '--message', 'm'], {});
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toBe(`warning: the credential file ${file} has mode 644: other users can read the device secret in it; chmod 600 ${file}\npublished to demo/x as GID_demo@@@readable\n`);
  });

  it('a file of mode 600 gets no warning', async () => {
    const e = emulator();
    const file = join(await tempDir(), 'dev-1.json');
    await writeFile(file, JSON.stringify((await registerDevice(e, 'GID_demo@@@private')).toWire()), { mode: 0o600 });
    const run = await cli(['connect', '--credential-file', file, '--broker-url', e.mqttUrl, '--publish', 'demo/x', '--message', 'm'], {});
    expect(run.stderr).toBe('published to demo/x as GID_demo@@@private\n');
  });

  it('register --out FILE writes the answer with mode 600, replacing a readable file whole; stdout stays empty', async () => {
    const e = emulator();
    const file = join(await tempDir(), 'dev-1.json');
    await writeFile(file, 'an older file anyone could read', { mode: 0o644 });
    const run = await cli(['register', '--endpoint', e.apiEndpoint, '--instance-id', e.instanceId, '--client-id', 'GID_demo@@@out-1', '--out', file], keys());
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(`wrote the credential of GID_demo@@@out-1 to ${file} (mode 600)\n`);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ DeviceCredential: { ClientId: 'GID_demo@@@out-1', InstanceId: e.instanceId } });
  });

  it('register --out into a directory that does not exist is refused before the call', async () => {
    const e = emulator();
    const run = await cli(['register', '--endpoint', e.apiEndpoint, '--instance-id', e.instanceId, '--client-id', 'GID_demo@@@out-2', '--out', '/nonexistent-dir/dev.json'], keys());
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^InvalidOption: --out \/nonexistent-dir\/dev\.json: the directory \/nonexistent-dir does not exist/);
    expect((await cli(['get', '--endpoint', e.apiEndpoint, '--instance-id', e.instanceId, '--client-id', 'GID_demo@@@out-2'], keys())).stderr).toMatch(/^DeviceCredentialNotFound/);
  });

  it('register > FILE under umask 022 (the built executable, through a shell): a warning on stderr says the secret is readable', async () => {
    const e = emulator();
    const file = join(await tempDir(), 'dev-1.json');
    const script = `umask 022; exec "${process.execPath}" "${CLI_BIN}" register --endpoint ${e.apiEndpoint} --instance-id ${e.instanceId} --client-id GID_demo@@@redirected > "${file}"`;
    const child = spawn('sh', ['-c', script], { env: { PATH: process.env['PATH'], ...keys() }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const [code] = (await once(child, 'close')) as [number | null];
    expect(code, stderr).toBe(0);
    expect(stderr).toBe('warning: stdout is a file with mode 644: other users can read the device secret in it; chmod 600 it, or write it with --out FILE (mode 600)\n');
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ DeviceCredential: { ClientId: 'GID_demo@@@redirected' } });
  });

  it('a credential file of 200 MB is refused by its size, without being read', async () => {
    const file = join(await tempDir(), 'huge.json');
    const handle = await open(file, 'w', 0o600);
    await handle.truncate(200 * 1024 * 1024); // sparse: no 200 MB written to disk
    await handle.close();
    for (const command of [['sign'], ['connect', '--broker-url', 'mqtt://127.0.0.1:1', '--publish', 'demo/x', '--message', 'm']]) {
      const run = await cli([...command, '--credential-file', file], {});
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/^InvalidCredential: Credential file .*huge\.json is 209715200 bytes; a credential is a few hundred \(at most 65536\): is it the right file\?/);
    }
  });

  it('a FIFO as the credential file is refused at once, not waited on', async () => {
    const dir = await tempDir();
    const fifo = join(dir, 'fifo.json');
    const made = spawn('mkfifo', [fifo]);
    expect((await once(made, 'close'))[0]).toBe(0);
    const run = await cli(['sign', '--credential-file', fifo], {});
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^InvalidCredential: Credential file .*fifo\.json is not a regular file/);
  });

  it('a directory as the credential file is refused as not a regular file', async () => {
    const dir = join(await tempDir(), 'cred.json');
    await mkdir(dir);
    const run = await cli(['sign', '--credential-file', dir], {});
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^InvalidCredential: Credential file .*cred\.json is not a regular file/);
  });
});
