/**
 * apsaramq-device/testing/jest: `useEmulator()` registers the emulator's start and stop with Jest's hooks (the
 * global `beforeAll`/`afterAll`/`beforeEach`/`afterEach` Jest injects into every test file).
 *
 * @example
 * const { useEmulator } = require('apsaramq-device/testing/jest');   // or import
 * const emulator = useEmulator();
 * test('publishes', async () => { const device = await emulator().connectDevice('GID_test@@@dev-1'); … });
 */
import type { TestEmulator } from './index.js';
import { useEmulatorWith, type FrameworkHooks, type UseEmulatorOptions } from './hooks.js';

export type { UseEmulatorOptions } from './hooks.js';

type Hook = (fn: () => Promise<void>) => void;

/** Start an emulator before the file's tests (or each test, with `scope: 'test'`) and stop it after them. */
export function useEmulator(options: UseEmulatorOptions = {}): () => TestEmulator {
  const jest = globalThis as unknown as Partial<Record<keyof FrameworkHooks, Hook>>;
  const { beforeAll, afterAll, beforeEach, afterEach } = jest;
  if (!beforeAll || !afterAll || !beforeEach || !afterEach) {
    throw new Error('apsaramq-device/testing/jest: the Jest globals beforeAll/afterAll are missing (run this inside a Jest test file, with injectGlobals on)');
  }
  return useEmulatorWith({ beforeAll, afterAll, beforeEach, afterEach }, options);
}
