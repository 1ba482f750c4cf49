/**
 * Interop with real, independent MQTT peers from Debian: the mosquitto clients against our emulator, and our
 * connector against a real Mosquitto broker. `.ci/run` installs both packages and sets APSARAMQ_REQUIRE_INTEROP=1,
 * so in CI a missing binary fails the run instead of skipping it.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice } from '../../src/connector/connect.js';
import { DeviceCredential } from '../../src/credential.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { closedPort } from '../helpers/http.js';
import { tempDir } from '../helpers/cli.js';
import { expectRoundTrip } from '../helpers/mqtt.js';
import { registerDevice, subscribed, useEmulator } from '../helpers/emulator.js';

const run = promisify(execFile);

/** Absolute path of a program, looking in PATH and in /usr/sbin (where Debian puts mosquitto). */
function which(binary: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(':').concat('/usr/sbin', '/usr/bin')) {
    if (dir && statSync(join(dir, binary), { throwIfNoEntry: false })?.isFile()) return join(dir, binary);
  }
  return undefined;
}

const bin = {
  mosquitto: which('mosquitto') ?? 'mosquitto',
  pub: which('mosquitto_pub') ?? 'mosquitto_pub',
  sub: which('mosquitto_sub') ?? 'mosquitto_sub',
  passwd: which('mosquitto_passwd') ?? 'mosquitto_passwd',
};

const required = process.env['APSARAMQ_REQUIRE_INTEROP'] === '1';
const available = Object.values(bin).every((path) => path.startsWith('/'));
if (required && !available) throw new Error('APSARAMQ_REQUIRE_INTEROP=1 but mosquitto / mosquitto-clients are not installed (apt-get install mosquitto mosquitto-clients)');
const reason = available ? '' : ' (skipped: Debian packages mosquitto and mosquitto-clients are not installed)';

function hostPort(url: string): { host: string; port: string } {
  const u = new URL(url);
  return { host: u.hostname, port: u.port };
}

describe.skipIf(!available)(`mosquitto clients against the emulator${reason}`, () => {
  const emulator = useEmulator({ parentTopics: ['interop'] });

  it.each(['mqttv311', 'mqttv5'])('-V %s: mosquitto_sub receives what mosquitto_pub sends, both authenticated with derived credentials', async (version) => {
    const e = emulator();
    const { host, port } = hostPort(e.mqttUrl);
    const sub = signDeviceCredential(await registerDevice(e, `GID_interop@@@sub-${version}`));
    const pub = signDeviceCredential(await registerDevice(e, `GID_interop@@@pub-${version}`));
    const ready = subscribed(e, sub.clientId, 'interop/#');
    const subscriber = spawn(bin.sub, ['-h', host, '-p', port, '-V', version, '-i', sub.clientId, '-u', sub.username, '-P', sub.password, '-t', 'interop/#', '-C', '1', '-v', '-q', '1'], { stdio: 'pipe' });
    onTestFinished(() => {
      subscriber.kill('SIGKILL');
    });
    let out = '';
    subscriber.stdout.on('data', (d: Buffer) => (out += d.toString()));
    // Listen for the exit before publishing: mosquitto_sub may exit before mosquitto_pub's own exit is reported.
    const exited = once(subscriber, 'exit');
    await ready; // mosquitto_sub's subscription is in place before anything is published
    await run(bin.pub, ['-h', host, '-p', port, '-V', version, '-i', pub.clientId, '-u', pub.username, '-P', pub.password, '-t', 'interop/hello', '-m', `from mosquitto_pub ${version}`, '-q', '1']);
    const [code] = (await exited) as [number];
    expect(code).toBe(0);
    expect(out.trim()).toBe(`interop/hello from mosquitto_pub ${version}`);
    expect(e.stats().mqtt.connacks['0']).toBeGreaterThanOrEqual(2);
  });

  it('-V mqttv311: a wrong password is refused with CONNACK 4', async () => {
    const e = emulator();
    const { host, port } = hostPort(e.mqttUrl);
    const creds = signDeviceCredential(await registerDevice(e, 'GID_interop@@@bad-1'));
    const before = e.stats().mqtt.connacks['4'] ?? 0;
    const failure = await run(bin.pub, ['-h', host, '-p', port, '-V', 'mqttv311', '-i', creds.clientId, '-u', creds.username, '-P', 'AAAA' + creds.password.slice(4), '-t', 'interop/x', '-m', 'x']).catch((err: { code: number; stderr: string }) => err);
    expect(failure).toMatchObject({ code: expect.any(Number) });
    expect((failure as { stderr: string }).stderr).toMatch(/not authori[sz]ed|bad user name or password|Connection Refused/i);
    expect(e.stats().mqtt.connacks['4']).toBe(before + 1);
  });

  it.each([
    ['a wrong password', 0x86, /Bad User Name or Password/],
    ['another instance in the username', 0x87, /Not authori[sz]ed/],
    ['a ClientId outside the grammar', 0x85, /Client Identifier not valid/],
  ] as const)('-V mqttv5: %s is refused with reason code %i (mosquitto_pub exits with it)', async (what, reasonCode, message) => {
    const e = emulator();
    const { host, port } = hostPort(e.mqttUrl);
    const creds = signDeviceCredential(await registerDevice(e, `GID_interop@@@v5-${reasonCode}`));
    const login = {
      0x86: { ...creds, password: 'AAAA' + creds.password.slice(4) },
      0x87: { ...creds, username: creds.username.replace(e.instanceId, 'mqtt-cn-other') },
      0x85: { ...creds, clientId: 'not-a-group-id' },
    }[reasonCode];
    const failure = await run(bin.pub, ['-h', host, '-p', port, '-V', 'mqttv5', '-i', login.clientId, '-u', login.username, '-P', login.password, '-t', 'interop/x', '-m', what]).catch((err: { code: number; stderr: string }) => err);
    expect(failure).toMatchObject({ code: reasonCode, stderr: expect.stringMatching(message) });
    expect(e.stats().mqtt.connacks[`0x${reasonCode.toString(16)}`]).toBeGreaterThanOrEqual(1);
  });

  it.each(['mqttv311', 'mqttv5'])('-V %s: a retained message or an uncreated parent topic loses the connection, and the rule is counted', async (version) => {
    const e = emulator();
    const { host, port } = hostPort(e.mqttUrl);
    const creds = signDeviceCredential(await registerDevice(e, `GID_interop@@@rules-${version}`));
    const before = e.stats().mqtt.rules;
    const login = ['-h', host, '-p', port, '-V', version, '-i', creds.clientId, '-u', creds.username, '-P', creds.password, '-q', '1', '-m', 'x'];
    await expect(run(bin.pub, [...login, '-t', 'interop/kept', '-r'])).rejects.toMatchObject({ code: expect.any(Number) });
    await expect(run(bin.pub, [...login, '-t', 'elsewhere/x'])).rejects.toMatchObject({ code: expect.any(Number) });
    expect(e.stats().mqtt.rules).toEqual({ ...before, retain: (before['retain'] ?? 0) + 1, parentTopic: (before['parentTopic'] ?? 0) + 1 });
  });
});

/** Start a real Mosquitto broker on a free port with a password file holding the device's derived login. */
async function startMosquitto(username: string, password: string): Promise<{ url: string; process: ChildProcess; log(): string }> {
  const dir = await tempDir('mosquitto-');
  const passwd = join(dir, 'passwd');
  await writeFile(passwd, '', { mode: 0o600 });
  await run(bin.passwd, ['-b', passwd, username, password]);
  const port = await closedPort();
  const conf = join(dir, 'mosquitto.conf');
  // Run as ourselves: as root, mosquitto would otherwise switch to user "mosquitto", who cannot read our temp dir.
  await writeFile(conf, [`user ${userInfo().username}`, `listener ${port} 127.0.0.1`, 'allow_anonymous false', `password_file ${passwd}`, 'persistence false', 'log_dest stderr', ''].join('\n'));
  const broker = spawn(bin.mosquitto, ['-c', conf], { stdio: 'pipe' });
  let log = '';
  broker.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  onTestFinished(async () => {
    if (broker.exitCode === null) {
      broker.kill('SIGTERM');
      await once(broker, 'exit');
    }
  });
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = netConnect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) break;
    if (i > 200 || broker.exitCode !== null) throw new Error(`mosquitto did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return { url: `mqtt://127.0.0.1:${port}`, process: broker, log: () => log };
}

describe.skipIf(!available)(`the connector against a real Mosquitto broker${reason}`, () => {
  const credential = new DeviceCredential({
    clientId: 'GID_interop@@@conn-1',
    instanceId: 'mqtt-interop',
    deviceAccessKeyId: 'DC.interopKeyId0000000000',
    deviceAccessKeySecret: 'DC.interopSecret000000000',
  });

  it('connects with the derived username and password, publishes and receives', async () => {
    const signed = signDeviceCredential(credential);
    const broker = await startMosquitto(signed.username, signed.password);
    const conn = await connectDevice({ credential, brokerUrl: broker.url });
    onTestFinished(() => conn.end(true));
    await expectRoundTrip(conn, 'interop/echo', 'round trip');
  });

  it('a credential Mosquitto does not know is refused with a typed error, no loop', async () => {
    const signed = signDeviceCredential(credential);
    const broker = await startMosquitto(signed.username, 'some-other-password');
    const error = await connectDevice({ credential, brokerUrl: broker.url }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'CredentialRejected' });
    expect([4, 5]).toContain((error as { connackCode: number }).connackCode);
  });
});
