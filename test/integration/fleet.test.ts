import { describe, expect, it, onTestFinished } from 'vitest';
import { API_ERROR_CATALOG, type KnownApiErrorCode } from '../../src/errors.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { FileCredentialStore, type FleetOptions, provisionFleet, RegistrationJournal } from '../../src/provisioner/index.js';
import { classifyFailure } from '../../src/provisioner/retry.js';
import { ApiError } from '../../src/errors.js';
import { tempDir } from '../helpers/cli.js';
import { ANY_GROUP, registerDevice } from '../helpers/emulator.js';

/** Retries without waiting: these tests check what happens, not how long it takes. */
const FAST = { minDelayMs: 0, maxDelayMs: 1, maxAttempts: 30 } as const;

async function emulator(options: EmulatorOptions = {}): Promise<Emulator> {
  const emu = await startEmulator({ env: {}, ...ANY_GROUP, ...options });
  onTestFinished(() => emu.close());
  return emu;
}

/**
 * A lost Register is confirmed once timeoutMs + maxServiceLatencyMs have passed since it was sent; no emulator here
 * holds a request longer than 10 ms, so a short window is enough.
 */
const WINDOW = { timeoutMs: 2_000, maxServiceLatencyMs: 10 } as const;

function fleetOptions(emu: Emulator, extra: Partial<FleetOptions> = {}): FleetOptions {
  return { endpoint: emu.apiEndpoint, instanceId: emu.instanceId, accessKeyId: emu.accessKeyId, accessKeySecret: emu.accessKeySecret, env: {}, retry: FAST, ...WINDOW, ...extra };
}

function ids(n: number, from = 0): string[] {
  return Array.from({ length: n }, (_, i) => `GID_fleet@@@dev-${from + i}`);
}

function ok(emu: Emulator, action: string): number {
  return emu.stats().actions[action]?.ok ?? 0;
}

function errors(emu: Emulator, action: string): Record<string, number> {
  return emu.stats().actions[action]?.errors ?? {};
}

describe('provisionFleet against the emulator', () => {
  it('with random faults and a rate limit: nothing fails, one Register per device, and a rerun makes no call', async () => {
    const emu = await emulator({ qpsLimit: 50, faultRate: 0.3, latencyMs: { min: 0, max: 5 } });
    const store = new FileCredentialStore(await tempDir());
    // Backoff that really waits here: the emulator's bucket must refill between rounds of throttled retries.
    const retry = { minDelayMs: 50, maxDelayMs: 1_000, maxAttempts: 30, maxElapsedMs: 25_000 };
    const first = await provisionFleet(ids(60), fleetOptions(emu, { store, qps: 1_000, retry }));
    expect(first.failed).toEqual([]);
    expect(first).toMatchObject({ provisioned: 60, registered: 60 });
    expect(ok(emu, 'RegisterDeviceCredential')).toBe(60);
    expect(first.retries).toBeGreaterThan(0);
    // The client ran above the emulator's limit on purpose: the throttling was answered and retried.
    expect(first.throttled).toBeGreaterThan(0);
    const throttledAtEmulator = (errors(emu, 'GetDeviceCredential')['Throttling.User'] ?? 0) + (errors(emu, 'RegisterDeviceCredential')['Throttling.User'] ?? 0);
    expect(throttledAtEmulator).toBeGreaterThan(0);

    const before = JSON.stringify(emu.stats().actions);
    const second = await provisionFleet(ids(60), fleetOptions(emu, { store }));
    expect(second).toMatchObject({ provisioned: 60, fromStore: 60, apiCalls: 0 });
    expect(JSON.stringify(emu.stats().actions)).toBe(before);
  });

  it('a device registered by someone else before the run keeps its credential (latest-wins emulator)', async () => {
    const emu = await emulator({ reRegister: 'rotate' });
    const theirs = await registerDevice(emu, 'GID_fleet@@@dev-2');
    for (const strategy of ['get-first'] as const) {
      const result = await provisionFleet(ids(5), fleetOptions(emu, { strategy }));
      expect(result).toMatchObject({ provisioned: 5, fetched: 1, registered: 4 });
      expect(result.credentials.get('GID_fleet@@@dev-2')?.deviceAccessKeyId).toBe(theirs.deviceAccessKeyId);
    }
    expect(ok(emu, 'RegisterDeviceCredential')).toBe(5);
  });

  it('register-first recovers from a kill between the Register answer and the store write (journal)', async () => {
    const emu = await emulator({ reRegister: 'rotate' });
    const root = await tempDir();
    const journal = RegistrationJournal.forStore(root, emu.instanceId);
    // What a run killed at that moment leaves behind: a journal entry and a credential the service issued.
    const issued = new Map<string, string>();
    for (const clientId of ids(3)) {
      await journal.record(clientId);
      issued.set(clientId, (await registerDevice(emu, clientId)).deviceAccessKeyId);
    }
    // And one whose Register never left (entry written, then killed).
    await journal.record('GID_fleet@@@dev-3');

    const result = await provisionFleet(ids(10), fleetOptions(emu, { store: new FileCredentialStore(root), strategy: 'register-first' }));
    expect(result).toMatchObject({ provisioned: 10, fetched: 3, registered: 7, failed: [] });
    expect(ok(emu, 'RegisterDeviceCredential')).toBe(10);
    for (const [clientId, keyId] of issued) expect(result.credentials.get(clientId)?.deviceAccessKeyId).toBe(keyId);
    for (const clientId of ids(10)) expect(await journal.has(clientId)).toBe(false);
  });

  describe('every injected fault code', () => {
    const codes = Object.keys(API_ERROR_CATALOG) as KnownApiErrorCode[];

    it.each(codes)('%s on RegisterDeviceCredential', async (code) => {
      const emu = await emulator();
      emu.failNext('RegisterDeviceCredential', code, 2);
      const result = await provisionFleet(ids(1), fleetOptions(emu));
      const retried = classifyFailure(new ApiError({ code, action: 'RegisterDeviceCredential', httpStatus: 400, serviceMessage: '' })) !== 'fatal';
      if (retried) {
        expect(result).toMatchObject({ provisioned: 1, registered: 1, retries: 2, failed: [] });
      } else if (code === 'DeviceCredentialExsit') {
        // Register says it exists, the Get then finds none: reported, never registered blindly.
        expect(result.failed).toEqual([{ clientId: ids(1)[0], code: 'DeviceCredentialNotFound' }]);
      } else {
        expect(result.failed).toEqual([{ clientId: ids(1)[0], code }]);
        expect(result.retries).toBe(0);
      }
      expect(ok(emu, 'RegisterDeviceCredential')).toBe(retried ? 1 : 0);
    });

    it.each(codes.filter((code) => code !== 'DeviceCredentialNotFound'))('%s on GetDeviceCredential', async (code) => {
      const emu = await emulator();
      emu.failNext('GetDeviceCredential', code, 1);
      const result = await provisionFleet(ids(1), fleetOptions(emu));
      const retried = classifyFailure(new ApiError({ code, action: 'GetDeviceCredential', httpStatus: 400, serviceMessage: '' })) !== 'fatal';
      if (retried) expect(result).toMatchObject({ provisioned: 1, registered: 1, retries: 1, failed: [] });
      else expect(result.failed).toEqual([{ clientId: ids(1)[0], code }]);
    });
  });
});
