/**
 * Token mode against independent clients: Debian's mosquitto_pub and mosquitto_sub log in to the emulator with
 * `Token|<AccessKeyId>|<InstanceId>` and a `<type>|<token>` password (a token password is just a string), tokens
 * applied through pop-core. `.ci/run` sets APSARAMQ_REQUIRE_INTEROP=1, so there a missing binary fails the run.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import { MOSQUITTO, mosquittoPrograms } from '../helpers/mosquitto.js';
import { callApi, subscribed, useEmulator } from '../helpers/emulator.js';

const run = promisify(execFile);

const bin = { pub: MOSQUITTO.pub, sub: MOSQUITTO.sub };
const { available, skipped: reason } = mosquittoPrograms(['pub', 'sub']);

async function applyToken(e: Emulator, resources: string, actions: 'R' | 'W'): Promise<string> {
  const body = await callApi<{ Token: string }>(e, 'ApplyToken', { Resources: resources, InstanceId: e.instanceId, ExpireTime: String(Date.now() + 10 * 60_000), Actions: actions });
  return body.Token;
}

/** mosquitto's connection flags for a Token-mode login. */
function login(e: Emulator, version: string, clientId: string, password: string): string[] {
  const url = new URL(e.mqttUrl);
  return ['-h', url.hostname, '-p', url.port, '-V', version, '-i', clientId, '-u', `Token|${e.accessKeyId}|${e.instanceId}`, '-P', password];
}

/** Start mosquitto_sub; resolves with its first printed line (listen before causing it). */
function subscriber(args: string[]): { firstLine: Promise<string>; exit: Promise<unknown> } {
  const child = spawn(bin.sub, args, { stdio: 'pipe' });
  onTestFinished(() => {
    child.kill('SIGKILL');
  });
  const exit = once(child, 'exit');
  const firstLine = (once(createInterface({ input: child.stdout }), 'line') as Promise<[string]>).then(([line]) => line);
  return { firstLine, exit };
}

describe.skipIf(!available)(`mosquitto clients in Token mode${reason}`, () => {
  const emulator = useEmulator({ parentTopics: ['interop', 'other'], wsPort: false });

  it.each(['mqttv311', 'mqttv5'])('-V %s: mosquitto_sub with an R token receives what mosquitto_pub sends with a W token', async (version) => {
    const e = emulator();
    const r = await applyToken(e, 'interop/#', 'R');
    const w = await applyToken(e, 'interop/out', 'W');
    const subId = `GID_tok@@@msub-${version}`;
    const ready = subscribed(e, subId, 'interop/#');
    const sub = subscriber([...login(e, version, subId, `R|${r}`), '-t', 'interop/#', '-C', '1', '-v', '-q', '1']);
    await ready;
    await run(bin.pub, [...login(e, version, `GID_tok@@@mpub-${version}`, `W|${w}`), '-t', 'interop/out', '-m', `token mode ${version}`, '-q', '1']);
    expect(await sub.firstLine).toBe(`interop/out token mode ${version}`);
  });

  it.each(['mqttv311', 'mqttv5'])('-V %s: mosquitto_pub outside its W token is disconnected (the rule is counted), a revoked token is refused at CONNECT', async (version) => {
    const e = emulator();
    const w = await applyToken(e, 'interop/out', 'W');
    const before = e.stats().mqtt.rules['tokenResource'] ?? 0;
    const outside = await run(bin.pub, [...login(e, version, `GID_tok@@@mout-${version}`, `W|${w}`), '-t', 'other/x', '-m', 'outside', '-q', '1']).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    expect(e.stats().mqtt.rules['tokenResource']).toBe(before + 1);
    expect(outside.code).not.toBe(0);

    await callApi(e, 'RevokeToken', { Token: w, InstanceId: e.instanceId });
    const refused = await run(bin.pub, [...login(e, version, `GID_tok@@@mrev-${version}`, `W|${w}`), '-t', 'interop/out', '-m', 'x', '-q', '1']).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/not authori[sz]ed/i);
  });

  it.each(['mqttv311', 'mqttv5'])('-V %s: mosquitto_sub prints the broker\'s $SYS/tokenInvalidNotice when its token is revoked', async (version) => {
    const e = emulator();
    const r = await applyToken(e, 'interop/#', 'R');
    const subId = `GID_tok@@@mnotice-${version}`;
    const ready = subscribed(e, subId, 'interop/#');
    const sub = subscriber([...login(e, version, subId, `R|${r}`), '-t', 'interop/#', '-v']);
    await ready;
    await callApi(e, 'RevokeToken', { Token: r, InstanceId: e.instanceId });
    expect(await sub.firstLine).toBe('$SYS/tokenInvalidNotice {"code":3,"type":"R"}');
    await sub.exit;
  });
});
