/**
 * apsaramq-device/testing/node-test: `useEmulator()` registers the emulator's start and stop with `node:test`'s
 * `before`/`after` (or `beforeEach`/`afterEach` with `scope: 'test'`).
 *
 * @example
 * import { test } from 'node:test';
 * import { useEmulator } from 'apsaramq-device/testing/node-test';
 * const emulator = useEmulator();
 * test('publishes', async () => { const device = await emulator().connectDevice('GID_test@@@dev-1'); … });
 */
import { after, afterEach, before, beforeEach } from 'node:test';
import type { TestEmulator } from './index.js';
import { useEmulatorWith, type UseEmulatorOptions } from './hooks.js';

export type { UseEmulatorOptions } from './hooks.js';

/** Start an emulator before the file's tests (or each test, with `scope: 'test'`) and stop it after them. */
export function useEmulator(options: UseEmulatorOptions = {}): () => TestEmulator {
  return useEmulatorWith({ beforeAll: before, afterAll: after, beforeEach, afterEach }, options);
}
