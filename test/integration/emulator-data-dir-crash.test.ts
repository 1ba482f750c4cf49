/**
 * The data directory's journal under kill -9: the built CLI (`emulator --data-dir`, its own process) is killed while
 * Registers are in flight, restarted on the same directory, and killed again; every Register that was answered must
 * be there afterwards and log in. Answered means durable: the emulator answers only once the change's journal record
 * (or a snapshot holding it) is fdatasync'd, so an answer the client got can never be lost to the kill.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import type { DeviceCredential } from '../../src/credential.js';
import { JOURNAL_FILE, readDataDirState } from '../../src/emulator/data-dir.js';
import { OpenApiClient } from '../../src/provisioner/index.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { spawnCli, tempDir, type CliChild } from '../helpers/cli.js';
import { connackCode } from '../helpers/emulator.js';
import { REPO_ROOT } from '../helpers/package.js';

const KEYS = { ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIcrashtest', ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'crash-test-account-secret' };
const INSTANCE = 'mqtt-crash';
const IN_FLIGHT = 16;

interface Ready {
  apiEndpoint: string;
  mqttUrl: string;
}

async function startEmulator(dir: string): Promise<{ cli: CliChild; ready: Ready; client: OpenApiClient; closed: Promise<unknown> }> {
  const cli = await spawnCli(['emulator', '--data-dir', dir, '--instance-id', INSTANCE, '--mqtt-port', '0', '--no-ws', '--api-port', '0', '--groups', '*', '--qps-limit', '100000', '--json'], KEYS);
  const ready = JSON.parse(cli.firstLine) as Ready;
  const client = new OpenApiClient({ endpoint: ready.apiEndpoint, env: KEYS, retry: false, qps: 100_000, concurrency: IN_FLIGHT });
  // Its output read to the end (stderr may still be arriving at 'exit').
  const closed = once(cli.child, 'close');
  return { cli, ready, client, closed };
}

/**
 * Register new devices, IN_FLIGHT at a time, and SIGKILL the emulator from the answer that makes `killAfter` in this
 * round, with the other calls still in flight. Every answer the client got (also those read after the kill) goes in
 * `answered`; calls cut by the kill fail, as they should.
 */
async function registerUntilKilled(round: number, killAfter: number, answered: Map<string, DeviceCredential>, cli: CliChild, client: OpenApiClient): Promise<void> {
  let next = 0;
  let count = 0;
  const exited = once(cli.child, 'exit');
  const worker = async (): Promise<void> => {
    while (cli.child.exitCode === null && cli.child.signalCode === null) {
      const clientId = `GID_crash@@@r${round}-${next++}`;
      const result = await client.registerDeviceCredential(INSTANCE, clientId).catch(() => undefined);
      if (!result) return;
      answered.set(clientId, result.credential);
      if (++count === killAfter) cli.child.kill('SIGKILL');
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  const [, signal] = (await exited) as [number | null, NodeJS.Signals | null];
  expect(signal).toBe('SIGKILL');
  expect(count).toBeGreaterThanOrEqual(killAfter);
  client.close();
}

describe('emulator --data-dir killed with kill -9 while Registers are in flight', () => {
  it('after each restart, every credential whose Register was answered is there, the same, and logs in', async () => {
    const dir = join(await tempDir(), 'state');
    const answered = new Map<string, DeviceCredential>();
    const stderr: string[] = [];
    for (let round = 0; round < 3; round++) {
      const { cli, client } = await startEmulator(dir);
      // Rounds differ in how far they get, so that the kill falls at different points of the journal.
      await registerUntilKilled(round, 120 + 70 * round, answered, cli, client);
      stderr.push(cli.stderr());
      // Read the way the next start reads it (no lock taken): every answered credential is in the directory.
      const kept = new Map((await readDataDirState(dir))?.credentials.map((c) => [c.ClientId, c]));
      for (const [clientId, credential] of answered) {
        expect(kept.get(clientId)?.DeviceAccessKeyId, `round ${round}: ${clientId}`).toBe(credential.deviceAccessKeyId);
        expect(kept.get(clientId)?.DeviceAccessKeySecret, `round ${round}: ${clientId}`).toBe(credential.deviceAccessKeySecret);
      }
    }

    // A power cut mid-append leaves part of a write: the start cuts it off and says so, once.
    await appendFile(join(dir, JOURNAL_FILE), Buffer.from([0x40, 0, 0, 0, 0x12]), { mode: 0o600 });
    const { cli, ready, client, closed } = await startEmulator(dir);
    const ids = [...answered.keys()];
    const { total } = await client.listDeviceCredentialClientId(INSTANCE, { groupId: 'GID_crash', pageSize: 1 });
    // Nothing invented: what is there was answered, or was in flight when the kill came (its answer never arrived).
    expect(total).toBeGreaterThanOrEqual(ids.length);
    expect(total).toBeLessThanOrEqual(ids.length + 3 * IN_FLIGHT);
    let at = 0;
    await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
      while (at < ids.length) {
        const credential = answered.get(ids[at++] ?? '') as DeviceCredential;
        const got = await client.getDeviceCredential(INSTANCE, credential.clientId);
        expect(got.credential.toWire()).toEqual(credential.toWire());
        expect(await connackCode(ready.mqttUrl, signDeviceCredential(credential)), credential.clientId).toBe(0);
      }
    }));
    client.close();
    expect(await cli.stop('SIGTERM')).toBe(0);
    await closed;
    expect(cli.stderr().match(/^warn .*the last write to .*state\.journal, its 5 bytes from byte \d+, is not whole/gm)).toHaveLength(1);
    // No device secret in what the emulator said, warnings of a cut-off journal tail included.
    const said = [...stderr, cli.stderr()].join('\n');
    for (const credential of answered.values()) expect(said).not.toContain(credential.deviceAccessKeySecret);
  }, 120_000);
});

/**
 * A process keeping a registry in a data directory compacted after every few KiB of journal (the emulator compacts
 * after 4 MiB or the snapshot's size, which a test would take long to reach): it registers devices 16 at a time, each
 * flushed as an OpenAPI call is, and prints the credential of each flush that resolved ("answered"), until killed.
 */
const KEEPER = `
  const { DataDir, StateWriter } = await import(${JSON.stringify(join(REPO_ROOT, 'dist/emulator/data-dir.js'))});
  const { CredentialRegistry } = await import(${JSON.stringify(join(REPO_ROOT, 'dist/emulator/registry.js'))});
  const dir = await DataDir.open(process.env.DATA_DIR, { compactMinBytes: 2048, onWarning: (m) => console.error(m) });
  const registry = new CredentialRegistry({ reRegister: 'rotate', credentialQuota: Infinity, now: Date.now });
  registry.restore(dir.initial?.credentials ?? []);
  const state = () => ({ instanceId: 'mqtt-keeper', credentials: registry.all() });
  await dir.compact(state);
  registry.onChange((change) => dir.record(change));
  const writer = new StateWriter(() => dir.commit(state));
  console.log(JSON.stringify({ ready: registry.all().length }));
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    for (;;) {
      const record = registry.register('mqtt-keeper', 'GID_keep@@@' + process.env.ROUND + '-' + next++);
      // Now and then a rotation of an earlier device: its new key replaces the one answered before.
      if (next % 7 === 0) registry.register('mqtt-keeper', record.ClientId);
      await writer.flush();
      console.log(JSON.stringify(registry.find('mqtt-keeper', record.ClientId)));
    }
  }));`;

describe('the data directory killed with kill -9 mid-compaction', () => {
  it('every flushed change survives kills that fall among frequent compactions', async () => {
    const dir = join(await tempDir(), 'state');
    const answered = new Map<string, string>();
    for (let round = 0; round < 10; round++) {
      const child = spawn(process.execPath, ['--input-type=module', '-e', KEEPER], { env: { ...process.env, DATA_DIR: dir, ROUND: String(round) }, stdio: ['ignore', 'pipe', 'pipe'] });
      const exited = once(child, 'exit');
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      let lines = 0;
      for await (const line of createInterface({ input: child.stdout })) {
        const parsed = JSON.parse(line) as { ready?: number; ClientId?: string; DeviceAccessKeyId?: string };
        if (parsed.ready !== undefined) {
          // Every earlier round's answered device is in the state the process started from.
          expect(parsed.ready, stderr).toBeGreaterThanOrEqual(answered.size);
          continue;
        }
        answered.set(parsed.ClientId ?? '', parsed.DeviceAccessKeyId ?? '');
        // Kill at a different point each round: a few hundred flushes in, with compactions every few dozen.
        if (++lines === 150 + 37 * round) child.kill('SIGKILL');
      }
      const [, signal] = (await exited) as [number | null, NodeJS.Signals | null];
      expect(signal, stderr).toBe('SIGKILL');
      const kept = new Map((await readDataDirState(dir))?.credentials.map((c) => [c.ClientId, c.DeviceAccessKeyId]));
      for (const [clientId, keyId] of answered) expect(kept.get(clientId), `round ${round}: ${clientId}`).toBe(keyId);
    }
  }, 120_000);
});
