import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Emulator, type EmulatorOptions, startEmulator } from '../../src/emulator/index.js';
import { ApiError } from '../../src/errors.js';
import { FileCredentialStore, OpenApiClient, Provisioner, type ProvisionerOptions } from '../../src/provisioner/index.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { ANY_GROUP, connackCode } from '../helpers/emulator.js';

const CLIENT = 'GID_prov@@@dev-1';

let dir: string;
let emulators: Emulator[] = [];
let provisioners: Provisioner[] = [];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apsaramq-prov-emu-'));
});
afterEach(async () => {
  for (const p of provisioners) p.close();
  await Promise.all(emulators.map((e) => e.close()));
  emulators = [];
  provisioners = [];
  await rm(dir, { recursive: true, force: true });
});

async function emulator(options: EmulatorOptions = {}): Promise<Emulator> {
  const emu = await startEmulator({ env: {}, ...ANY_GROUP, ...options });
  emulators.push(emu);
  return emu;
}

/** A provisioner for the emulator; `store` names a subdirectory so that two provisioners can share one or not. */
function provisionerFor(emu: Emulator, store = 'store', extra: Partial<ProvisionerOptions> = {}): Provisioner {
  const p = new Provisioner({
    endpoint: emu.apiEndpoint,
    instanceId: emu.instanceId,
    accessKeyId: emu.accessKeyId,
    accessKeySecret: emu.accessKeySecret,
    env: {},
    store: new FileCredentialStore(join(dir, store)),
    ...extra,
  });
  provisioners.push(p);
  return p;
}

/** Calls the emulator counted, per action: successes plus errors by code. */
function calls(emu: Emulator): Record<string, { ok: number; errors: Record<string, number> }> {
  return emu.stats().actions;
}

describe.each(['rotate', 'reject'] as const)('Provisioner against the emulator (reRegister %s)', (reRegister) => {
  it('ensureCredential: Get → NotFound → Register the first time, then the store with no API call', async () => {
    const emu = await emulator({ reRegister });
    const provisioner = provisionerFor(emu);
    const credential = await provisioner.ensureCredential(CLIENT);
    expect(calls(emu)).toEqual({
      GetDeviceCredential: { ok: 0, errors: { DeviceCredentialNotFound: 1 } },
      RegisterDeviceCredential: { ok: 1, errors: {} },
    });
    expect(credential.deviceAccessKeyId).toMatch(/^DC\.[A-Za-z0-9]{22}$/);
    expect(await connackCode(emu.mqttUrl, signDeviceCredential(credential))).toBe(0);

    const before = calls(emu);
    const again = await provisioner.ensureCredential(CLIENT);
    expect(again.sameKeyAs(credential)).toBe(true);
    expect(calls(emu)).toEqual(before);

    // A fresh process with the same file store does not call the API either.
    const restarted = provisionerFor(emu);
    expect((await restarted.ensureCredential(CLIENT)).sameKeyAs(credential)).toBe(true);
    expect(calls(emu)).toEqual(before);
  });

  it('keeps the DeviceAccessKeyId of a ClientId registered beforehand by someone else', async () => {
    const emu = await emulator({ reRegister });
    const someoneElse = new OpenApiClient({ endpoint: emu.apiEndpoint, accessKeyId: emu.accessKeyId, accessKeySecret: emu.accessKeySecret, env: {} });
    const { credential: theirs } = await someoneElse.registerDeviceCredential(emu.instanceId, CLIENT);
    someoneElse.close();

    const ours = await provisionerFor(emu).ensureCredential(CLIENT);
    expect(ours.deviceAccessKeyId).toBe(theirs.deviceAccessKeyId);
    expect(ours.sameKeyAs(theirs)).toBe(true);
    expect(calls(emu)['RegisterDeviceCredential']).toEqual({ ok: 1, errors: {} }); // theirs only
    // The device that holds it still gets in.
    expect(await connackCode(emu.mqttUrl, signDeviceCredential(theirs))).toBe(0);
  });

  it('many concurrent ensureCredential calls make one Get and one Register', async () => {
    const emu = await emulator({ reRegister });
    const provisioner = provisionerFor(emu);
    const results = await Promise.all(Array.from({ length: 25 }, () => provisioner.ensureCredential(CLIENT)));
    for (const r of results) expect(r.sameKeyAs(results[0])).toBe(true);
    expect(calls(emu)).toEqual({
      GetDeviceCredential: { ok: 0, errors: { DeviceCredentialNotFound: 1 } },
      RegisterDeviceCredential: { ok: 1, errors: {} },
    });
  });

  it('register, get, refresh, list and unregister', async () => {
    const emu = await emulator({ reRegister });
    const provisioner = provisionerFor(emu);
    const { credential: registered, requestId } = await provisioner.register(CLIENT);
    expect(requestId).toMatch(/^[0-9A-F-]{36}$/);
    const { credential: got } = await provisioner.get(CLIENT);
    expect(got.sameKeyAs(registered)).toBe(true);
    const { credential: refreshed } = await provisioner.refresh(CLIENT);
    expect(refreshed.deviceAccessKeyId).not.toBe(registered.deviceAccessKeyId);
    expect((await provisioner.store.load(emu.instanceId, CLIENT))?.sameKeyAs(refreshed)).toBe(true);
    expect(await connackCode(emu.mqttUrl, signDeviceCredential(registered))).not.toBe(0);
    expect(await connackCode(emu.mqttUrl, signDeviceCredential(refreshed))).toBe(0);

    for (const n of [2, 3]) await provisioner.register(`GID_prov@@@dev-${n}`);
    await provisioner.register('GID_other@@@dev-1');
    const first = await provisioner.list({ groupId: 'GID_prov', pageSize: 2 });
    expect(first.total).toBe(3);
    expect(first.pageSize).toBe(2);
    expect(first.clientIds).toHaveLength(2);
    const rest = await provisioner.list({ groupId: 'GID_prov', pageSize: 2, ...(first.nextToken ? { nextToken: first.nextToken } : { pageNo: 2 }) });
    expect([...first.clientIds, ...rest.clientIds].sort()).toEqual(['GID_prov@@@dev-1', 'GID_prov@@@dev-2', 'GID_prov@@@dev-3']);
    expect(rest.nextToken).toBeUndefined();

    await provisioner.unregister(CLIENT);
    expect(await provisioner.store.load(emu.instanceId, CLIENT)).toBeUndefined();
    const e = await provisioner.get(CLIENT).catch((error: unknown) => error);
    expect(e).toBeInstanceOf(ApiError);
    expect((e as ApiError).code).toBe('DeviceCredentialNotFound');
    expect((e as ApiError).httpStatus).toBe(400);
    expect((e as ApiError).requestId).toMatch(/^[0-9A-F-]{36}$/);
  });

  it('credentialSource on rejected picks up a refresh done by another provisioner', async () => {
    const emu = await emulator({ reRegister });
    const device = provisionerFor(emu, 'device-store');
    const source = device.credentialSource(CLIENT);
    const old = await source({ reason: 'connect' });
    expect(await connackCode(emu.mqttUrl, signDeviceCredential(old))).toBe(0);

    // Another registrar, with its own store, rotates the key.
    const { credential: fresh } = await provisionerFor(emu, 'admin-store').refresh(CLIENT);
    expect(await connackCode(emu.mqttUrl, signDeviceCredential(old))).not.toBe(0);

    const registersBefore = calls(emu)['RegisterDeviceCredential']?.ok;
    const next = await source({ reason: 'rejected', rejected: old });
    expect(next.sameKeyAs(fresh)).toBe(true);
    expect(await connackCode(emu.mqttUrl, signDeviceCredential(next))).toBe(0);
    expect(calls(emu)['RegisterDeviceCredential']?.ok).toBe(registersBefore);
    // Saved: the next connect uses it without an API call.
    const before = calls(emu);
    expect((await source({ reason: 'connect' })).sameKeyAs(fresh)).toBe(true);
    expect(calls(emu)).toEqual(before);
  });
});

describe('Provisioner against the emulator: races and account errors', () => {
  it('two registrars racing for one ClientId under reRegister reject end up with the same key', async () => {
    const emu = await emulator({ reRegister: 'reject' });
    const [a, b] = await Promise.all([provisionerFor(emu, 'a').ensureCredential(CLIENT), provisionerFor(emu, 'b').ensureCredential(CLIENT)]);
    expect(a.sameKeyAs(b)).toBe(true);
    expect(calls(emu)['RegisterDeviceCredential']?.ok).toBe(1);
  });

  it('a wrong account secret is SignatureDoesNotMatch, an unknown key id InvalidAccessKeyId.NotFound; nothing stored', async () => {
    const emu = await emulator();
    const wrongSecret = provisionerFor(emu, 'store', { accessKeySecret: 'not-the-secret-0123456789' });
    const e1 = await wrongSecret.ensureCredential(CLIENT).catch((error: unknown) => error);
    expect(e1).toBeInstanceOf(ApiError);
    expect((e1 as ApiError).code).toBe('SignatureDoesNotMatch');
    expect((e1 as ApiError).retryable).toBe(false);
    expect(JSON.stringify(e1)).not.toContain(emu.accessKeySecret);

    const unknownKey = provisionerFor(emu, 'store', { accessKeyId: 'LTAI-nobody' });
    const e2 = await unknownKey.ensureCredential(CLIENT).catch((error: unknown) => error);
    expect((e2 as ApiError).code).toBe('InvalidAccessKeyId.NotFound');
    expect((e2 as ApiError).httpStatus).toBe(404);
    expect(await wrongSecret.store.load(emu.instanceId, CLIENT)).toBeUndefined();
  });
});
