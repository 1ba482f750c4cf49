/**
 * The README's set-up, as a new user runs it on a fresh clone: `npm install`, then `npm start` (and `npx
 * apsaramq-device`). The repository's files are copied to a temporary directory as a clone has them (no dist/, no
 * node_modules), installed with real npm from its cache, then started: dist/ is built on the first run, said on
 * stderr, and rebuilt only when the sources change.
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, sh } from '../helpers/package.js';

const run = promisify(execFile);

describe('a fresh clone: npm install, then npm start', () => {
  let clone: string;
  const env = { PATH: process.env['PATH'], HOME: process.env['HOME'] };

  beforeAll(async () => {
    clone = await mkdtemp(join(tmpdir(), 'apsaramq-clone-'));
    // What git would check out: tracked files and new ones not ignored (never dist/ or node_modules/).
    const listed = (await run('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 })).stdout.split('\0').filter(Boolean);
    for (const file of listed) {
      if (file.startsWith('dist/') || file.startsWith('node_modules/')) continue;
      await mkdir(dirname(join(clone, file)), { recursive: true });
      await copyFile(join(REPO_ROOT, file), join(clone, file)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error; // deleted in the working tree, not yet committed
      });
    }
    await sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: clone, env, timeoutMs: 240_000 });
  }, 300_000);

  afterAll(async () => {
    if (clone) await rm(clone, { recursive: true, force: true });
  });

  it('npm start builds dist/ on the first run, saying so on stderr, then runs the simulation', async () => {
    const started = await sh('npm', ['start', '--', '--devices', '10', '--duration', '1', '--no-progress'], { cwd: clone, env, timeoutMs: 180_000 });
    expect(started.stderr).toContain('apsaramq-device: building dist/ (the first run in this clone): npm run build');
    expect(started.stdout).toMatch(/connected\s+10/);
  }, 200_000);

  it('npx apsaramq-device runs the clone\'s own command, without building again', async () => {
    const { stdout, stderr } = await sh('npx', ['apsaramq-device', '--version'], { cwd: clone, env, timeoutMs: 60_000 });
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    expect(stderr).toBe('');
  }, 90_000);

  it('a source newer than dist/ is built again before the command runs', async () => {
    const later = new Date(Date.now() + 60_000);
    await utimes(join(clone, 'src', 'version.ts'), later, later);
    const { stdout, stderr } = await sh('npx', ['apsaramq-device', '--version'], { cwd: clone, env, timeoutMs: 180_000 });
    expect(stderr).toBe('apsaramq-device: rebuilding dist/ (the sources changed): npm run build\n');
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  }, 200_000);
});
