/**
 * apsaramq-device/testing/vitest: `useEmulator()` registers the emulator's start and stop with vitest's hooks.
 *
 * @example
 * import { useEmulator } from 'apsaramq-device/testing/vitest';
 * const emulator = useEmulator({ scope: 'file' });
 * it('publishes', async () => { const device = await emulator().connectDevice('GID_test@@@dev-1'); … });
 */
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import type { TestEmulator } from './index.js';
import { useEmulatorWith, type UseEmulatorOptions } from './hooks.js';

export type { UseEmulatorOptions } from './hooks.js';

/** Start an emulator before the file's tests (or each test, with `scope: 'test'`) and stop it after them. */
export function useEmulator(options: UseEmulatorOptions = {}): () => TestEmulator {
  return useEmulatorWith({ beforeAll, afterAll, beforeEach, afterEach }, options);
}
