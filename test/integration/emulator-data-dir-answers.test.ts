import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { JOURNAL_FILE, STATE_FILE, readDataDirState, type EmulatorState } from '../../src/emulator/data-dir.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { tempDir } from '../helpers/cli.js';
import { ANY_GROUP, callApi, commonParams, signed } from '../helpers/emulator.js';

/**
 * What a kill -9 at this instant would leave: the data directory's files, copied synchronously (no I/O completion of
 * the emulator, which runs in this process, can be handled meanwhile). The page cache survives a kill -9, so a change
 * that is not in these bytes is not in the state the next start loads.
 */
function frozenCopy(dir: string): string {
  const copy = mkdtempSync(join(tmpdir(), 'apsaramq-device-frozen-'));
  chmodSync(copy, 0o700);
  for (const name of [STATE_FILE, JOURNAL_FILE]) {
    const from = join(dir, name);
    if (existsSync(from)) writeFileSync(join(copy, name), readFileSync(from), { mode: 0o600 });
  }
  onTestFinished(() => rmSync(copy, { recursive: true, force: true }));
  return copy;
}

async function loaded(copy: string): Promise<EmulatorState> {
  const state = await readDataDirState(copy);
  if (!state) throw new Error('no state in the data directory');
  return state;
}

/** The id under which the emulator keeps a token: hex of its first 16 bytes (src/emulator/token-registry.ts). */
function tokenId(token: string): string {
  return Buffer.from(token, 'base64').subarray(0, 16).toString('hex');
}

/**
 * Send signed POSTs on connections opened beforehand, all written in one turn of the event loop, so that they are in
 * the emulator's socket buffers together and it handles them in one poll: the second is handled while the first's
 * write to the disk is under way. `answered(i)` runs synchronously when answer i is whole; returns the answers.
 */
async function together(e: Emulator, calls: readonly Record<string, string>[], answered: (i: number) => void): Promise<Array<{ status: number; body: Record<string, unknown> }>> {
  const { port } = new URL(e.apiEndpoint);
  const sockets = await Promise.all(calls.map(() => new Promise<Socket>((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  })));
  const replies = sockets.map((socket, i) => new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      const head = text.indexOf('\r\n\r\n');
      const length = /content-length: *(\d+)/i.exec(text)?.[1];
      if (head < 0 || length === undefined || Buffer.byteLength(text.slice(head + 4)) < Number(length)) return;
      answered(i);
      socket.destroy();
      resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1]), body: JSON.parse(text.slice(head + 4)) as Record<string, unknown> });
    });
    socket.once('error', reject);
  }));
  calls.forEach((params, i) => {
    const body = new URLSearchParams(signed(commonParams(e, params['Action'] ?? '', params), 'POST', e.accessKeySecret)).toString();
    sockets[i]?.write(`POST / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  return Promise.all(replies);
}

/** An emulator on a data directory of the test's own (closed when the test ends), and that directory. */
async function withDataDir(options: EmulatorOptions = {}): Promise<{ e: Emulator; dir: string }> {
  const dir = join(await tempDir(), 'state');
  const e = await startEmulator({ env: {}, ...ANY_GROUP, parentTopics: false, wsPort: false, dataDir: dir, ...options });
  onTestFinished(() => e.close());
  return { e, dir };
}

/** Each scenario is played this many times (with a token or ClientId of its own): one round that shows the gap fails the test. */
const ROUNDS = 5;

describe('emulator data dir: a call is answered only once what it answers with is durable', () => {
  it('two concurrent RevokeTokens of one token, behind a Register being written: each is answered only once the revocation is on disk', async () => {
    // The rate buckets on a clock of the test's own, a second further each round: RevokeToken's own limit stays out of it.
    let rate = 0;
    const { e, dir } = await withDataDir({ rateClock: () => rate });
    const gaps: string[] = [];
    for (let round = 0; round < ROUNDS; round++, rate += 1_000) {
      const applied = await callApi<{ Token: string }>(e, 'ApplyToken', { Resources: 'TopicA/+', InstanceId: e.instanceId, ExpireTime: String(Date.now() + 3_600_000), Actions: 'R,W' });
      const copies: string[] = [];
      const register = { Action: 'RegisterDeviceCredential', ClientId: `GID_ans@@@busy-${round}`, InstanceId: e.instanceId };
      const revoke = { Action: 'RevokeToken', Token: applied.Token, InstanceId: e.instanceId };
      // The Register's append is under way when the first RevokeToken changes the token (its record waits for the next
      // append) and the second finds it revoked already. All three are answered 200; the files are copied as each
      // answer arrives: what a kill -9 then would leave.
      const answers = await together(e, [register, revoke, revoke], (i) => (copies[i] = frozenCopy(dir)));
      expect(answers.map((a) => a.status), JSON.stringify(answers.map((a) => a.body))).toEqual([200, 200, 200]);
      for (const [i, copy] of copies.entries()) {
        if (i === 0) continue;
        const token = (await loaded(copy)).tokens?.find((t) => t.id === tokenId(applied.Token));
        if (token?.revokeTime === undefined) gaps.push(`round ${round}: RevokeToken ${i} answered 200, the token is not revoked in the files`);
      }
    }
    expect(gaps, 'an answered RevokeToken is durable when answered').toEqual([]);
  });

  it('a GetDeviceCredential answered while the Register that issued the credential waits for its append: the credential it answers is on disk', async () => {
    const { e, dir } = await withDataDir();
    const gaps: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const copies: string[] = [];
      const clientId = `GID_ans@@@dev-${round}`;
      const busy = { Action: 'RegisterDeviceCredential', ClientId: `GID_ans@@@busy-${round}`, InstanceId: e.instanceId };
      const register = { Action: 'RegisterDeviceCredential', ClientId: clientId, InstanceId: e.instanceId };
      const get = { Action: 'GetDeviceCredential', ClientId: clientId, InstanceId: e.instanceId };
      const answers = await together(e, [busy, register, get], (i) => (copies[i] = frozenCopy(dir)));
      expect(answers.map((a) => a.status), JSON.stringify(answers.map((a) => a.body))).toEqual([200, 200, 200]);
      const given = (answers[2]?.body['DeviceCredential'] as { DeviceAccessKeyId: string }).DeviceAccessKeyId;
      // The device may connect with the key GetDeviceCredential gave it: after a kill -9 then, it must still be there.
      const kept = (await loaded(copies[2] ?? '')).credentials.find((c) => c.ClientId === clientId);
      if (kept?.DeviceAccessKeyId !== given) gaps.push(`round ${round}: GetDeviceCredential answered ${clientId}'s credential, the files hold ${kept === undefined ? 'none' : 'another'}`);
    }
    expect(gaps, 'the credential GetDeviceCredential answered is durable when answered').toEqual([]);
  });
});
