import { startTestEmulator, type TestEmulator, type TestEmulatorOptions } from './index.js';

/** Options of the `useEmulator` adapters: the emulator's, plus when it starts and stops. */
export interface UseEmulatorOptions extends TestEmulatorOptions {
  /** `file`: one emulator for every test of the file (or suite); `test`: a fresh one for each test. @default 'file' */
  scope?: 'file' | 'test';
}

/** The hooks of a test framework, as the adapters hand them in. */
export interface FrameworkHooks {
  beforeAll(fn: () => Promise<void>): void;
  afterAll(fn: () => Promise<void>): void;
  beforeEach(fn: () => Promise<void>): void;
  afterEach(fn: () => Promise<void>): void;
}

/**
 * Register start and stop of a {@link TestEmulator} with a framework's hooks, and return an accessor for the one
 * running now. Stop runs in an after-hook, so it also runs when a test failed.
 */
export function useEmulatorWith(hooks: FrameworkHooks, options: UseEmulatorOptions = {}): () => TestEmulator {
  const { scope = 'file', ...emulatorOptions } = options;
  let current: TestEmulator | undefined;
  const start = async (): Promise<void> => {
    current = await startTestEmulator(emulatorOptions);
  };
  const stop = async (): Promise<void> => {
    const running = current;
    current = undefined;
    await running?.stop();
  };
  if (scope === 'test') {
    hooks.beforeEach(start);
    hooks.afterEach(stop);
  } else {
    hooks.beforeAll(start);
    hooks.afterAll(stop);
  }
  return () => {
    if (!current) throw new Error('useEmulator: the emulator is not running here (call the accessor inside a test or a hook that runs after the emulator started)');
    return current;
  };
}
