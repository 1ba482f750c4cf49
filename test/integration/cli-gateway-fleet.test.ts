/**
 * `apsaramq-device gateway` holding a fleet (issue 18), the built CLI in its own process: paced connects
 * (--connect-rate), the metrics at --metrics-port 0 (the address printed), and SIGHUP re-reading --devices: the
 * devices added connect, the removed ones end their session, and no other session is touched (the broker sees no
 * CONNECT and no disconnect of any other ClientId).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { FileCredentialStore } from '../../src/provisioner/file-store.js';
import { CLI_BIN, tempDir } from '../helpers/cli.js';
import { registerDevice, useEmulator } from '../helpers/emulator.js';

const emulator = useEmulator();

/** A child's stderr, and a promise per pattern that resolves once the text so far matches it. */
function watch(stream: NodeJS.ReadableStream): { text: () => string; when: (test: (text: string) => boolean) => Promise<void> } {
  let text = '';
  const waiters: { test: (text: string) => boolean; resolve: () => void }[] = [];
  stream.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    for (const w of [...waiters]) {
      if (w.test(text)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  return {
    text: () => text,
    when: (test) => (test(text) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ test, resolve }))),
  };
}

const count = (text: string, pattern: RegExp): number => text.match(new RegExp(pattern.source, 'gm'))?.length ?? 0;

describe('gateway command: a fleet', () => {
  it('paces its connects, serves /metrics, and applies SIGHUP\'s added and removed devices without touching the others', async () => {
    const e = emulator();
    const dir = await tempDir('gateway-fleet-');
    const ids = Array.from({ length: 30 }, (_, i) => `GID_fleet@@@dev-${String(i).padStart(2, '0')}`);
    // Credentials in the store: the command connects with them and never calls the OpenAPI (no account keys).
    const store = new FileCredentialStore(join(dir, 'store'));
    for (const id of ids) await store.save(await registerDevice(e, id));
    const first = ids.slice(0, 20);
    const devicesFile = join(dir, 'devices.txt');
    await writeFile(devicesFile, `${first.join('\n')}\n`);

    const connectTimes: number[] = [];
    const connected: string[] = [];
    const disconnected: string[] = [];
    const onConnected = (id: string): void => {
      if (!id.startsWith('GID_fleet@@@')) return;
      connected.push(id);
      connectTimes.push(performance.now());
    };
    const onDisconnected = (id: string): void => void (id.startsWith('GID_fleet@@@') && disconnected.push(id));
    e.events.on('clientConnected', onConnected);
    e.events.on('clientDisconnected', onDisconnected);
    onTestFinished(() => {
      e.events.off('clientConnected', onConnected);
      e.events.off('clientDisconnected', onDisconnected);
    });

    const args = ['gateway', '--devices', devicesFile, '--outbox', join(dir, 'outbox'), '--store', join(dir, 'store'), '--instance-id', e.instanceId, '--broker-url', e.mqttUrl];
    const child = spawn(process.execPath, [CLI_BIN, ...args, '--connect-rate', '20', '--connect-jitter-ms', '10', '--metrics-port', '0'], { env: { PATH: process.env['PATH'] }, stdio: ['pipe', 'pipe', 'pipe'] });
    onTestFinished(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    const stderr = watch(child.stderr);
    await stderr.when((t) => count(t, /^online: /) === 20);
    // 20 CONNECTs at 20 per second: 950 ms from the first to the last at least (the pacer's slots), less 200 ms for
    // the first CONNECT's own latency. Unpaced they land within a few ms.
    expect(connected.sort()).toEqual([...first].sort());
    expect((connectTimes.at(-1) ?? 0) - (connectTimes[0] ?? 0)).toBeGreaterThanOrEqual(750);
    const address = /^metrics: (http:\/\/127\.0\.0\.1:\d+\/metrics)$/m.exec(stderr.text())?.[1];
    expect(address, stderr.text()).toBeDefined();
    const scrape = async (): Promise<string> => (await fetch(address as string)).text();
    expect(await scrape()).toContain('apsaramq_device_devices{state="online"} 20');
    expect((await fetch((address as string).replace('/metrics', '/other'))).status).toBe(404);

    // Remove dev-00..04, add dev-20..29; dev-05..19 must not notice.
    connected.length = 0;
    const removed = first.slice(0, 5);
    const added = ids.slice(20);
    const kept = first.slice(5);
    await writeFile(devicesFile, `# reloaded\n${[...kept, ...added].join('\n')}\n`);
    child.kill('SIGHUP');
    await stderr.when((t) => /^removed: 5 devices ended their session$/m.test(t) && count(t, /^online: /) === 30);
    expect(stderr.text()).toMatch(/^reloaded --devices .*: 10 added, 5 removed, 25 held$/m);
    expect(connected.sort()).toEqual([...added].sort());
    expect(disconnected.sort()).toEqual([...removed].sort());
    const text = await scrape();
    expect(text).toContain('apsaramq_device_devices{state="online"} 25');
    expect(text).toContain('apsaramq_device_connects_total{outcome="accepted"} 30');
    expect(text).toContain('apsaramq_device_reconnects_total{outcome="accepted"} 0');

    // A file that cannot be used changes nothing.
    await writeFile(devicesFile, 'not a client id\n');
    child.kill('SIGHUP');
    await stderr.when((t) => /^warning: SIGHUP: --devices .* not reloaded \(InvalidClientId: .*\); the 25 devices held stay$/m.test(t));
    expect(disconnected).toHaveLength(5);

    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    expect((await exited)[0]).toBe(143);
  });

  it('--metrics-port on a port in use fails before any device connects', async () => {
    const e = emulator();
    const dir = await tempDir('gateway-fleet-');
    const store = new FileCredentialStore(join(dir, 'store'));
    await store.save(await registerDevice(e, 'GID_fleet@@@busy'));
    await writeFile(join(dir, 'devices.txt'), 'GID_fleet@@@busy\n');
    const taken = new URL(e.apiEndpoint).port;
    const child = spawn(
      process.execPath,
      [CLI_BIN, 'gateway', '--devices', join(dir, 'devices.txt'), '--outbox', join(dir, 'outbox'), '--store', join(dir, 'store'), '--instance-id', e.instanceId, '--broker-url', e.mqttUrl, '--metrics-port', taken],
      { env: { PATH: process.env['PATH'] }, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    onTestFinished(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    const stderr = watch(child.stderr);
    const [code] = (await once(child, 'exit')) as [number];
    expect(code).toBe(2);
    expect(stderr.text()).toMatch(new RegExp(`--metrics-port ${taken}: cannot listen on 127\\.0\\.0\\.1:${taken} \\(EADDRINUSE\\): the port is taken`));
    expect(stderr.text()).not.toMatch(/^online:/m);
  });
});
