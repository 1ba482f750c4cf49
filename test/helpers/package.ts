import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The repository root. */
export const REPO_ROOT = resolve(import.meta.dirname, '../..');

/** Run a command; resolves with its output, rejects with stdout and stderr in the message. */
export async function sh(file: string, args: readonly string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<{ stdout: string; stderr: string }> {
  try {
    return await run(file, [...args], { cwd: options.cwd, env: options.env ?? process.env, timeout: options.timeoutMs ?? 120_000, maxBuffer: 32 * 1024 * 1024 });
  } catch (error) {
    const e = error as Error & { stdout?: string; stderr?: string };
    throw new Error(`${file} ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}

/**
 * `npm pack` of the repository as it is built now (`npm test` builds `dist/` first; `--ignore-scripts` skips the
 * prepack build). Returns the tarball's path in a new temporary directory, and a function that removes it.
 */
export async function packTarball(): Promise<{ tarball: string; dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'apsaramq-pack-'));
  const { stdout } = await sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: REPO_ROOT });
  const [packed] = JSON.parse(stdout) as { filename: string }[];
  if (!packed) throw new Error('npm pack printed no tarball');
  return { tarball: join(dir, packed.filename), dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * A consumer project in `dir` with the given package.json fields, and `packages` installed as a user would
 * (`npm install <tarball> …`), from npm's cache where it can.
 */
export async function consumerProject(dir: string, manifest: Record<string, unknown>, packages: readonly string[]): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, ...manifest }, null, 2));
  await sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', ...packages], { cwd: dir, timeoutMs: 180_000 });
  return dir;
}
