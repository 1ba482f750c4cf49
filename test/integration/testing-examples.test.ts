/**
 * The README's "Testing your code against the emulator" examples, one project per framework under examples/, run
 * the way a user runs them: the project copied to a temporary directory, the packed tarball and the framework
 * installed with npm, then `npm test`. Each suite must pass, and must exit by itself (a socket or a server left
 * open would keep it running until this test's timeout).
 */
import { cp, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, packTarball, sh } from '../helpers/package.js';

describe('the testing examples, installed from the packed tarball', () => {
  let pack: Awaited<ReturnType<typeof packTarball>>;

  beforeAll(async () => {
    pack = await packTarball();
    // The examples depend on "file:../apsaramq-device.tgz".
    await rename(pack.tarball, join(pack.dir, 'apsaramq-device.tgz'));
  }, 120_000);

  afterAll(async () => {
    await pack?.remove();
  });

  it.each([
    ['vitest', /1 passed/],
    ['jest', /Tests:\s+1 passed, 1 total/],
    ['node-test', /# pass 1\n# fail 0/],
  ])('examples/testing-%s passes and leaves nothing running', async (framework, summary) => {
    const project = join(pack.dir, `testing-${framework}`);
    await cp(join(REPO_ROOT, 'examples', `testing-${framework}`), project, { recursive: true });
    await sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: project, timeoutMs: 240_000 });
    const { stdout, stderr } = await sh('npm', ['test'], { cwd: project, timeoutMs: 60_000, env: { PATH: process.env['PATH'], HOME: process.env['HOME'], CI: '1' } });
    expect(`${stdout}\n${stderr}`).toMatch(summary);
  }, 300_000);
});
