/**
 * Interop with real, independent MQTT peers from Debian: the mosquitto clients against our emulator (our connector
 * against a real Mosquitto broker is in connector-mosquitto.test.ts). `.ci/run` installs both packages and sets
 * APSARAMQ_REQUIRE_INTEROP=1, so in CI a missing binary fails the run instead of skipping it.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { MOSQUITTO, mosquittoPrograms } from '../helpers/mosquitto.js';
import { describe, expect, it, onTestFinished } from 'vitest';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { accountLogin } from '../helpers/broker.js';
import { registerDevice, subscribed, useEmulator } from '../helpers/emulator.js';

const run = promisify(execFile);

const bin = MOSQUITTO;

const { available, skipped: reason } = mosquittoPrograms(['pub', 'sub']);

function hostPort(url: string): { host: string; port: string } {
  const u = new URL(url);
  return { host: u.hostname, port: u.port };
}

describe.skipIf(!available)(`mosquitto clients against the emulator${reason}`, () => {
  // The instance has GID_interop and no other GroupId; offline messages come at a pace shrunk to milliseconds.
  const emulator = useEmulator({ parentTopics: ['interop'], groups: ['GID_interop'], offlineDetectionDelayMs: 20, offlineBatchIntervalMs: 20, offlineBatchSize: 30 });

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
    // Wait for the printed line, not for mosquitto_sub's exit: the exit event could come before the listener (which
    // is why it is set up before publishing), and the line is what the test is about.
    const line = once(createInterface({ input: subscriber.stdout }), 'line') as Promise<[string]>;
    await ready; // mosquitto_sub's subscription is in place before anything is published
    await run(bin.pub, ['-h', host, '-p', port, '-V', version, '-i', pub.clientId, '-u', pub.username, '-P', pub.password, '-t', 'interop/hello', '-m', `from mosquitto_pub ${version}`, '-q', '1']);
    const [received] = await line;
    expect(received).toBe(`interop/hello from mosquitto_pub ${version}`);
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

  it.each([
    ['mqttv311', 2, /identifier rejected/i],
    ['mqttv5', 0x85, /Client Identifier not valid/],
  ] as const)('-V %s: a ClientId of a GroupId the instance lacks is refused (%i), its login being right', async (version, code, message) => {
    const e = emulator();
    const { host, port } = hostPort(e.mqttUrl);
    const login = accountLogin(e, `GID_nogroupcreated@@@x-${version}`);
    const failure = await run(bin.pub, ['-h', host, '-p', port, '-V', version, '-i', login.clientId, '-u', login.username, '-P', login.password, '-t', 'interop/x', '-m', 'x']).catch((err: { code: number; stderr: string }) => err);
    expect(failure).toMatchObject({ stderr: expect.stringMatching(message) });
    expect(e.stats().mqtt.connacks[code === 2 ? '2' : '0x85']).toBeGreaterThanOrEqual(1);
  });

  it('-V mqttv31: MQTT 3.1 is refused with CONNACK 1', async () => {
    const e = emulator();
    const { host, port } = hostPort(e.mqttUrl);
    const login = accountLogin(e, 'GID_interop@@@v31');
    const failure = await run(bin.pub, ['-h', host, '-p', port, '-V', 'mqttv31', '-i', login.clientId, '-u', login.username, '-P', login.password, '-t', 'interop/x', '-m', 'x']).catch((err: { code: number; stderr: string }) => err);
    expect(failure).toMatchObject({ stderr: expect.stringMatching(/unacceptable protocol version/i) });
  });

  it.each(['mqttv311', 'mqttv5'])('-V %s: a 65,537-byte message is acknowledged (mosquitto_pub exits 0) and delivered to no one', async (version) => {
    const e = emulator();
    const { host, port } = hostPort(e.mqttUrl);
    const before = e.stats().mqtt.rules['payloadSize'] ?? 0;
    const sub = accountLogin(e, `GID_interop@@@bigsub-${version}`);
    const ready = subscribed(e, sub.clientId, 'interop/big');
    const subscriber = spawn(bin.sub, ['-h', host, '-p', port, '-V', version, '-i', sub.clientId, '-u', sub.username, '-P', sub.password, '-t', 'interop/big', '-C', '1', '-q', '1'], { stdio: 'pipe' });
    onTestFinished(() => {
      subscriber.kill('SIGKILL');
    });
    const line = once(createInterface({ input: subscriber.stdout }), 'line') as Promise<[string]>;
    await ready;
    const pub = accountLogin(e, `GID_interop@@@bigpub-${version}`);
    const login = ['-h', host, '-p', port, '-V', version, '-i', pub.clientId, '-u', pub.username, '-P', pub.password, '-t', 'interop/big', '-q', '1'];
    const big = spawn(bin.pub, [...login, '-s'], { stdio: ['pipe', 'ignore', 'pipe'] });
    big.stdin.end('b'.repeat(65_537));
    const [exitCode] = (await once(big, 'exit')) as [number];
    expect(exitCode).toBe(0);
    await run(bin.pub, [...login, '-m', 'small']);
    expect((await line)[0]).toBe('small');
    expect(e.stats().mqtt.rules['payloadSize']).toBe(before + 1);
  });

  it('-V mqttv311: a 61-character ClientId gets P2P messages under a parent topic without subscribing to them', async () => {
    const e = emulator();
    const { host, port } = hostPort(e.mqttUrl);
    const target = accountLogin(e, `GID_interop@@@${'t'.repeat(47)}`);
    expect(target.clientId).toHaveLength(61);
    const ready = subscribed(e, target.clientId, 'interop/none');
    const receiver = spawn(bin.sub, ['-h', host, '-p', port, '-V', 'mqttv311', '-i', target.clientId, '-u', target.username, '-P', target.password, '-t', 'interop/none', '-C', '1', '-v', '-q', '1'], { stdio: 'pipe' });
    onTestFinished(() => {
      receiver.kill('SIGKILL');
    });
    const line = once(createInterface({ input: receiver.stdout }), 'line') as Promise<[string]>;
    await ready;
    const pub = accountLogin(e, 'GID_interop@@@p2p-sender');
    await run(bin.pub, ['-h', host, '-p', port, '-V', 'mqttv311', '-i', pub.clientId, '-u', pub.username, '-P', pub.password, '-t', `interop/p2p/${target.clientId}`, '-m', 'direct', '-q', '1']);
    expect((await line)[0]).toBe(`interop/p2p/${target.clientId} direct`);
  });

  it('-V mqttv311 -c: a persistent mosquitto_sub gets the 40 messages queued while it was away, at the (shrunk) pace', async () => {
    const e = emulator();
    const { host, port } = hostPort(e.mqttUrl);
    const sub = accountLogin(e, 'GID_interop@@@persistent');
    const args = ['-h', host, '-p', port, '-V', 'mqttv311', '-i', sub.clientId, '-u', sub.username, '-P', sub.password, '-t', 'interop/queued', '-q', '1', '-c'];
    const ready = subscribed(e, sub.clientId, 'interop/queued');
    const first = spawn(bin.sub, [...args, '-C', '1'], { stdio: 'ignore' });
    await ready;
    const gone = new Promise<void>((resolve) => e.events.once('clientDisconnected', () => resolve()));
    first.kill('SIGKILL');
    await gone;
    const pub = accountLogin(e, 'GID_interop@@@queuer');
    for (let i = 0; i < 40; i++) await run(bin.pub, ['-h', host, '-p', port, '-V', 'mqttv311', '-i', pub.clientId, '-u', pub.username, '-P', pub.password, '-t', 'interop/queued', '-m', `q${i}`, '-q', '1']);
    expect(e.stats().mqtt.queues.messages).toBe(40);
    const again = spawn(bin.sub, [...args, '-C', '40'], { stdio: 'pipe' });
    onTestFinished(() => {
      again.kill('SIGKILL');
    });
    const lines: string[] = [];
    createInterface({ input: again.stdout }).on('line', (l) => lines.push(l));
    const [exitCode] = (await once(again, 'exit')) as [number];
    expect(exitCode).toBe(0);
    expect(lines).toEqual(Array.from({ length: 40 }, (_, i) => `q${i}`));
  });
});
