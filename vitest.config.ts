import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['node_modules/**'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start brokers and HTTP servers on port 0; files run in parallel workers.
    pool: 'forks',
  },
});
