/**
 * The registrar's Token-mode and session operations against the emulator, signed both ways (pop-core and V3):
 * ApplyToken, QueryToken, RevokeToken, QuerySessionByClientId, BatchQuerySessionByClientIds, and waitForOnline.
 */
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import type { OpenApiSignature } from '../../src/provisioner/api-client.js';
import { MemoryCredentialStore } from '../../src/provisioner/memory-store.js';
import { Provisioner } from '../../src/provisioner/provisioner.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { connectMqtt, useEmulator } from '../helpers/emulator.js';

const emulator = useEmulator();

function registrar(signature: OpenApiSignature, accessKeySecret?: string): Provisioner {
  const e = emulator();
  return new Provisioner({ endpoint: e.apiEndpoint, instanceId: e.instanceId, accessKeyId: e.accessKeyId, accessKeySecret: accessKeySecret ?? e.accessKeySecret, signature, store: new MemoryCredentialStore() });
}

describe.each(['pop-core', 'v3'] as const)('tokens and sessions, signed with %s', (signature) => {
  it('applies, queries and revokes a token, which never shows in logs', async () => {
    const p = registrar(signature);
    const token = await p.applyToken({ resources: ['demo/b', 'demo/a/+'], actions: 'R,W', expireTime: Date.now() + 3_600_000 });
    expect([token.type, token.resources]).toEqual(['RW', ['demo/a/+', 'demo/b']]); // sent sorted
    expect(token.token.length).toBeGreaterThan(20);
    expect(inspect(token)).not.toContain(token.token);
    expect(JSON.stringify(token)).not.toContain(token.token);
    expect(String(token)).not.toContain(token.token);
    expect(await p.queryToken(token)).toBe(true);
    await p.revokeToken(token.token);
    expect(await p.queryToken(token)).toBe(false);
    p.close();
  });

  it('checks a token request before any I/O', async () => {
    const p = registrar(signature);
    const before = p.apiCalls;
    for (const bad of [
      { resources: [], actions: 'R' as const, expireTime: Date.now() + 3_600_000 },
      { resources: ['demo/a'], actions: 'RW' as never, expireTime: Date.now() + 3_600_000 },
      { resources: ['demo/a'], actions: 'W' as const, expireTime: Date.now() - 1 },
      { resources: ['demo/a,demo/b'], actions: 'W' as const, expireTime: Date.now() + 3_600_000 },
    ]) {
      const e = await p.applyToken(bad).catch((error: unknown) => error);
      expect(isApsaraMqDeviceError(e, 'InvalidOption'), JSON.stringify(bad)).toBe(true);
    }
    expect(p.apiCalls).toBe(before);
    p.close();
  });

  it('a bad signature on QueryToken does not echo the token', async () => {
    const good = registrar(signature);
    const token = await good.applyToken({ resources: ['demo/a'], actions: 'R', expireTime: Date.now() + 3_600_000 });
    const e = await registrar(signature, 'wrong-secret').queryToken(token).catch((error: unknown) => error);
    expect(isApsaraMqDeviceError(e, 'SignatureDoesNotMatch')).toBe(true);
    expect(`${(e as Error).message} ${JSON.stringify(e)} ${inspect(e)}`).not.toContain(token.token);
    good.close();
  });

  it('follows a device online and offline, one at a time and in a batch', async () => {
    const p = registrar(signature);
    const id = `GID_sess@@@${signature}-1`;
    const other = `GID_sess@@@${signature}-2`;
    const credential = await p.ensureCredential(id);
    expect(await p.isOnline(id)).toBe(false);
    const client = await connectMqtt(emulator().mqttUrl, signDeviceCredential(credential));
    await p.waitForOnline(id, { timeoutMs: 5_000, intervalMs: 20 });
    expect(await p.onlineStatus([id, other])).toEqual([{ clientId: id, online: true }, { clientId: other, online: false }]);
    await client.endAsync();
    await p.waitForOnline(id, { online: false, timeoutMs: 5_000, intervalMs: 20 });
    const late = await p.waitForOnline(other, { timeoutMs: 60, intervalMs: 20 }).catch((error: unknown) => error);
    expect(isApsaraMqDeviceError(late, 'WaitTimeout')).toBe(true);
    const tooMany = await p.onlineStatus(Array.from({ length: 11 }, (_, i) => `GID_sess@@@n-${i}`)).catch((error: unknown) => error);
    expect(isApsaraMqDeviceError(tooMany, 'InvalidOption')).toBe(true);
    p.close();
  });
});
