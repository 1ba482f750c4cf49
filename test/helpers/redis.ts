/**
 * Debian's redis-server in tests: whether it is installed (and, in CI, that it must be), and a Redis of a test's own
 * on a free port, without persistence, started and stopped by the test. The one place that knows how to run it, for
 * the emulator's cluster tests, the simulator's and the benchmark's.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { onTestFinished } from 'vitest';
import { which } from './bin.js';
import { closedPort } from './http.js';

/** Debian's redis-server (the name alone when it is not installed: a spawn then fails clearly). */
export const REDIS_SERVER = which('redis-server') ?? 'redis-server';

/**
 * Is redis-server installed? `.ci/run` sets APSARAMQ_REQUIRE_INTEROP=1, and then a missing one fails the run at once
 * instead of skipping the cluster tests. `skipped` is the text a describe title gets when it is not.
 */
export function redisAvailable(): { available: boolean; skipped: string } {
  const available = REDIS_SERVER.startsWith('/');
  if (process.env['APSARAMQ_REQUIRE_INTEROP'] === '1' && !available) throw new Error('APSARAMQ_REQUIRE_INTEROP=1 but redis-server is not installed (apt-get install redis-server)');
  return { available, skipped: available ? '' : ' (skipped: the Debian package redis-server is not installed)' };
}

/** A Redis of a test's own. */
export interface TestRedis {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  readonly pid: number | undefined;
  stop(): Promise<void>;
}

/**
 * Start redis-server on 127.0.0.1 on a port that was free a moment ago (redis-server cannot pick one itself), with
 * nothing saved to disk. Resolves when it logs that it accepts connections: nothing polls its port. Stopped when the
 * test finishes (`scope: 'test'`), or by the caller (`'manual'`, for a `beforeAll`).
 */
export async function startRedis(scope: 'test' | 'manual' = 'test'): Promise<TestRedis> {
  for (let attempt = 0; ; attempt++) {
    const port = await closedPort();
    try {
      const redis = await launch(port);
      if (scope === 'test') onTestFinished(redis.stop);
      return redis;
    } catch (error) {
      // Another process took the port between the check and the bind: try another.
      if (attempt >= 3 || !/Address already in use/.test(String(error))) throw error;
    }
  }
}

async function launch(port: number): Promise<TestRedis> {
  const child: ChildProcess = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'notice'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const onExit = (code: number | null): void => reject(new Error(`redis-server exited with ${code} before it was ready:\n${log}`));
    child.once('exit', onExit);
    child.once('error', reject);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (log.length < 10_000) log += `${line}\n`;
      if (/Ready to accept connections/.test(line)) {
        child.off('exit', onExit);
        resolve();
      }
    });
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  };
  return { url: `redis://127.0.0.1:${port}`, port, pid: child.pid, stop };
}
