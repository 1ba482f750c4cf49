/**
 * `apsaramq-device gateway` as a person uses it (issue 17): JSON lines in, one report per fact out (accepted, then
 * delivered, with the caller's ids), bad lines reported with their line number and a code while the rest goes on,
 * devices registered on first use as `connect` does, bounds reported as drops, and a stop that keeps what was not
 * delivered on disk for the next run, which reports it with the ids from before. Against the emulator; in-process
 * runs, and the built CLI in its own process for SIGTERM.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Readable } from 'node:stream';
import type { CliIo } from '../../src/cli/io.js';
import { runCli } from '../../src/cli/main.js';
import { connectDevice } from '../../src/connector/connect.js';
import { CLI_BIN, cli, tempDir } from '../helpers/cli.js';
import { registerDevice, useEmulator } from '../helpers/emulator.js';
import { closedPort } from '../helpers/http.js';

const emulator = useEmulator();

interface Report {
  id?: string;
  clientId?: string;
  seq?: number;
  accepted?: boolean;
  delivered?: boolean;
  possibleDuplicate?: boolean;
  dropped?: string;
  line?: number;
  error?: { code: string; message: string };
}

const reports = (stdout: string): Report[] => stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Report);
const line = (value: Record<string, unknown>): string => `${JSON.stringify(value)}\n`;

/** A devices file, a credential store and an outbox of the test's own; the flags and account keys to reach the emulator. */
async function setup(devices: string[]): Promise<{ dir: string; args: string[]; env: NodeJS.ProcessEnv }> {
  const e = emulator();
  const dir = await tempDir('gateway-');
  await writeFile(join(dir, 'devices.txt'), `# the test's devices\n${devices.join('\n')}\n`);
  return {
    dir,
    args: ['gateway', '--devices', join(dir, 'devices.txt'), '--outbox', join(dir, 'outbox'), '--store', join(dir, 'store'), '--instance-id', e.instanceId, '--endpoint', e.apiEndpoint],
    env: { ALIBABA_CLOUD_ACCESS_KEY_ID: e.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: e.accessKeySecret },
  };
}

/** A subscriber on the emulator's broker: the payloads it receives on `filter`. */
async function subscriber(filter: string): Promise<Buffer[]> {
  const e = emulator();
  const conn = await connectDevice({ credential: await registerDevice(e, `GID_demo@@@watch-${Date.now()}`), brokerUrl: e.mqttUrl });
  onTestFinished(() => conn.end(true));
  const got: Buffer[] = [];
  conn.on('message', (_topic, payload) => got.push(payload));
  await conn.subscribe(filter, { qos: 1 });
  return got;
}

/**
 * The command in-process with `input` on stdin, interrupted (Ctrl+C) as soon as `stopWhen` says so about the reports
 * printed so far (or never: it ends by itself).
 */
async function gatewayRun(argv: string[], env: NodeJS.ProcessEnv, input: string, stopWhen: (out: Report[]) => boolean): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  let interrupt: () => void = () => undefined;
  const interrupted = new Promise<void>((resolve) => (interrupt = resolve));
  const io: CliIo = {
    stdout: (text) => {
      stdout += text;
      if (stopWhen(reports(stdout))) interrupt();
    },
    stderr: (text) => {
      stderr += text;
    },
    env,
    interrupted: () => interrupted,
    stdinStream: () => Readable.from([input]),
  };
  const code = await runCli(argv, io);
  return { code, stdout, stderr };
}

describe('gateway: lines in, reports out', () => {
  it('accepts, delivers and reports each message with its id; registers a device on first use; end of stdin: delivers everything, exits 0 with a summary', async () => {
    const { args, env } = await setup(['GID_demo@@@gw-a', 'GID_demo@@@gw-b']);
    const got = await subscriber('demo/gw-a/#');
    const binary = Buffer.from([0, 1, 2, 250, 255]);
    const input =
      line({ id: 'a-1', clientId: 'GID_demo@@@gw-a', topic: 'demo/gw-a/t', payload: 'hello' }) +
      line({ id: 'b-1', clientId: 'GID_demo@@@gw-b', topic: 'demo/gw-b/t', payload: 'from b', qos: 2 }) +
      line({ id: 'a-2', clientId: 'GID_demo@@@gw-a', topic: 'demo/gw-a/t', payload: binary.toString('base64'), payloadEncoding: 'base64' }) +
      line({ clientId: 'GID_demo@@@gw-a', topic: 'demo/gw-a/t', payload: 'no id' });
    const run = await cli([...args, '--broker-url', emulator().mqttUrl], env, undefined, input);
    expect(run.code, run.stderr).toBe(0);
    const out = reports(run.stdout);
    const accepted = out.filter((r) => r.accepted);
    expect(accepted.map((r) => r.id)).toEqual(['a-1', 'b-1', 'a-2', undefined]);
    expect(new Set(accepted.map((r) => r.seq)).size).toBe(4);
    const delivered = out.filter((r) => r.delivered);
    expect(delivered.map((r) => r.id).sort()).toEqual(['a-1', 'a-2', 'b-1', undefined].sort());
    for (const d of delivered) expect(d.seq).toBe(accepted.find((a) => a.id === d.id)?.seq);
    // Each message's accepted line comes before its delivered line.
    for (const a of accepted) expect(out.indexOf(a)).toBeLessThan(out.findIndex((r) => r.delivered && r.seq === a.seq));
    expect(got).toEqual([Buffer.from('hello'), binary, Buffer.from('no id')]);
    expect(run.stderr).toMatch(/registered a new credential for GID_demo@@@gw-a/);
    expect(run.stderr).toMatch(/gateway: 4 accepted, 4 delivered, 0 dropped, 0 refused, 0 invalid lines; 0 waiting in the outbox/);
  });

  it('an id the outbox cannot keep (a lone surrogate, written as JSON escapes it) is an invalid line, as the library would refuse it', async () => {
    const { args, env } = await setup(['GID_demo@@@gw-u']);
    const input = `{"id": "bad\\ud800", "clientId": "GID_demo@@@gw-u", "topic": "demo/u", "payload": "p"}\n${line({ id: 'ok', clientId: 'GID_demo@@@gw-u', topic: 'demo/u', payload: 'fine' })}`;
    const run = await cli([...args, '--broker-url', emulator().mqttUrl], env, undefined, input);
    expect(run.code, run.stderr).toBe(0);
    const errors = reports(run.stdout).filter((r) => r.error);
    expect(errors.map((r) => [r.line, r.error?.code])).toEqual([[1, 'InvalidLine']]);
    expect(errors[0]?.error?.message).toContain('"id" must be');
    expect(reports(run.stdout).filter((r) => r.delivered).map((r) => r.id)).toEqual(['ok']);
  });

  it('a line that cannot be taken gets an error line with its number and a code; the others go on', async () => {
    const { args, env } = await setup(['GID_demo@@@gw-c']);
    const input = [
      'not json',
      '["an", "array"]',
      line({ id: 'x1', clientId: 'GID_demo@@@nobody', topic: 'demo/x', payload: 'p' }).trim(),
      line({ id: 'x2', clientId: 'GID_demo@@@gw-c', topic: 'demo/x', payload: 'p', qos: 0 }).trim(),
      line({ id: 'x3', clientId: 'GID_demo@@@gw-c', topic: 'demo/#', payload: 'p' }).trim(),
      line({ id: 'x4', clientId: 'GID_demo@@@gw-c', topic: 'demo/x', payload: 'p', qso: 1 }).trim(),
      line({ id: 'x5', clientId: 'GID_demo@@@gw-c', topic: 'demo/x', payload: '%%%', payloadEncoding: 'base64' }).trim(),
      '',
      line({ id: 'ok', clientId: 'GID_demo@@@gw-c', topic: 'demo/x', payload: 'fine' }).trim(),
    ].join('\n');
    const run = await cli([...args, '--broker-url', emulator().mqttUrl], env, undefined, `${input}\n`);
    expect(run.code, run.stderr).toBe(0);
    const errors = reports(run.stdout).filter((r) => r.error);
    expect(errors.map((r) => [r.line, r.id, r.error?.code])).toEqual([
      [1, undefined, 'InvalidLine'],
      [2, undefined, 'InvalidLine'],
      [3, 'x1', 'UnknownDevice'],
      [4, 'x2', 'InvalidLine'],
      [5, 'x3', 'InvalidTopic'],
      [6, 'x4', 'InvalidLine'],
      [7, 'x5', 'InvalidLine'],
    ]);
    expect(errors[3]?.error?.message).toContain('qos');
    expect(errors[5]?.error?.message).toContain('"qso"');
    expect(reports(run.stdout).filter((r) => r.delivered).map((r) => r.id)).toEqual(['ok']);
    expect(run.stderr).toContain('7 invalid lines');
  });

  it('bounds: --max-messages 3 --when-full drop-oldest while the broker is unreachable: each drop reported with its id; Ctrl+C keeps the rest; the next run delivers it, reported with the ids from before', async () => {
    const { args, env } = await setup(['GID_demo@@@gw-d']);
    const dead = `mqtt://127.0.0.1:${await closedPort()}`;
    const input = [1, 2, 3, 4, 5].map((n) => line({ id: `d${n}`, clientId: 'GID_demo@@@gw-d', topic: 'demo/d', payload: `m${n}` })).join('');
    // In-process, watching the reports as they come: stopped (Ctrl+C) once all five are accepted and two dropped.
    const run = await gatewayRun([...args, '--broker-url', dead, '--max-messages', '3', '--when-full', 'drop-oldest', '--drain-timeout-ms', '100'], env, input, (out) => {
      return out.filter((r) => r.accepted).length === 5 && out.filter((r) => r.dropped).length === 2;
    });
    expect(run.code, run.stderr).toBe(130);
    const out = reports(run.stdout);
    expect(out.filter((r) => r.accepted).map((r) => r.id)).toEqual(['d1', 'd2', 'd3', 'd4', 'd5']);
    expect(out.filter((r) => r.dropped).map((r) => [r.id, r.dropped])).toEqual([
      ['d1', 'full'],
      ['d2', 'full'],
    ]);
    expect(run.stderr).toMatch(/dropped 2 full, 0 refused, 0 invalid lines; 3 waiting in the outbox .* \(delivered by the next run on it\)/);
    const got = await subscriber('demo/d');
    const again = await cli([...args, '--broker-url', emulator().mqttUrl], env, undefined, '');
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/3 messages accepted before, to deliver/);
    expect(reports(again.stdout).filter((r) => r.delivered).map((r) => r.id)).toEqual(['d3', 'd4', 'd5']);
    expect(got.map(String)).toEqual(['m3', 'm4', 'm5']);
  });
});

describe('gateway: what it says on stderr', () => {
  it('a device that keeps failing to connect is said offline once per outage, not at every retry', async () => {
    const { args, env } = await setup(['GID_demo@@@gw-o']);
    // A "broker" that takes each connection and closes it at once: every attempt of the device is one connection here.
    let attempts = 0;
    let interrupt: () => void = () => undefined;
    const interrupted = new Promise<void>((resolve) => (interrupt = resolve));
    const server = createServer((socket) => {
      socket.destroy();
      if (++attempts === 3) interrupt();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    onTestFinished(() => void server.close());
    const { port } = server.address() as AddressInfo;
    let stderr = '';
    const io: CliIo = {
      stdout: () => undefined,
      stderr: (text) => {
        stderr += text;
      },
      env,
      interrupted: () => interrupted,
      stdinStream: () => new Readable({ read() {} }),
    };
    const code = await runCli([...args, '--broker-url', `mqtt://127.0.0.1:${port}`, '--drain-timeout-ms', '100'], io);
    expect(code, stderr).toBe(130);
    expect(attempts).toBeGreaterThanOrEqual(3);
    expect(stderr.match(/^offline: GID_demo@@@gw-o/gm), stderr).toHaveLength(1);
    expect(stderr).not.toMatch(/^online: /m);
  });
});

describe('gateway: usage', () => {
  it.each([
    [['gateway'], 'MissingOption', '--devices'],
    [['gateway', '--devices', 'x.txt'], 'MissingOption', '--outbox'],
  ])('%j: exit 2, %s naming %s', async (argv, code, flag) => {
    const run = await cli(argv);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(new RegExp(`^${code}: .*${flag}`));
  });

  it('a devices file with a bad ClientId names its line; one listing a device twice or none is refused', async () => {
    const dir = await tempDir('gateway-usage-');
    const base = ['gateway', '--outbox', join(dir, 'outbox'), '--instance-id', 'mqtt-x'];
    await writeFile(join(dir, 'bad.txt'), 'GID_demo@@@ok\n\n# fine\nnot a client id\n');
    const bad = await cli([...base, '--devices', join(dir, 'bad.txt')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^InvalidClientId: --devices .*bad\.txt line 4:/);
    await writeFile(join(dir, 'twice.txt'), 'GID_demo@@@a\nGID_demo@@@a # again\n');
    expect((await cli([...base, '--devices', join(dir, 'twice.txt')])).stderr).toMatch(/lists GID_demo@@@a twice \(lines 1 and 2\)/);
    await writeFile(join(dir, 'none.txt'), '# nobody\n');
    expect((await cli([...base, '--devices', join(dir, 'none.txt')])).stderr).toMatch(/lists no device/);
  });
});

describe('gateway in its own process', () => {
  it('SIGTERM: stops reading, keeps what the broker did not get on disk, prints a summary and exits 143', async () => {
    const { args, env } = await setup(['GID_demo@@@gw-t']);
    const dead = `mqtt://127.0.0.1:${await closedPort()}`;
    const child = spawn(process.execPath, [CLI_BIN, ...args, '--broker-url', dead, '--drain-timeout-ms', '200'], { env: { PATH: process.env['PATH'], ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    onTestFinished(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = createInterface({ input: child.stdout });
    const accepted = new Promise<void>((resolve) => {
      let n = 0;
      lines.on('line', (text) => {
        if ((JSON.parse(text) as Report).accepted && ++n === 2) resolve();
      });
    });
    child.stdin.write(line({ id: 't1', clientId: 'GID_demo@@@gw-t', topic: 'demo/t', payload: 'one' }));
    child.stdin.write(line({ id: 't2', clientId: 'GID_demo@@@gw-t', topic: 'demo/t', payload: 'two' }));
    await accepted;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const [code] = (await exited) as [number | null];
    expect(code).toBe(143);
    expect(stderr).toMatch(/interrupted: delivering what waits for up to 200 ms, keeping the rest in the outbox/);
    expect(stderr).toMatch(/gateway: 2 accepted, 0 delivered, 0 dropped, 0 refused, 0 invalid lines; 2 waiting in the outbox/);
  });
});
