/**
 * The README's "Testing your code against the emulator" examples, one project per framework under examples/, run
 * the way a user runs them: the project copied to a temporary directory, the packed tarball and the framework
 * installed with npm, then `npm test` (for Jest: plain `jest`, no flag). Each suite must pass, and must exit by itself
 * (a socket or a server left open would keep it running until this test's timeout).
 *
 * Each is also run once with one expected value changed, as a test author's mistake would: the test fails before
 * the thermometer's `end()`, with its device still reconnecting. That run must end, not hang (with `node --test` it
 * used to run forever; under Jest it ended in "You are trying to require a file after the Jest environment has been
 * torn down"), exit non-zero, name the device the fixture had to end, and leave no port of the emulator listening.
 */
import { execFile } from 'node:child_process';
import { cp, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { portAccepts } from '../helpers/http.js';
import { REPO_ROOT, packTarball, sh } from '../helpers/package.js';

const FRAMEWORKS = [
  { framework: 'vitest', test: 'test/thermometer.test.mjs', passed: /1 passed/, failed: /1 failed/, esm: true },
  { framework: 'jest', test: 'test/thermometer.test.js', passed: /Tests:\s+1 passed, 1 total/, failed: /Tests:\s+1 failed, 1 total/, esm: false },
  { framework: 'node-test', test: 'test/thermometer.test.mjs', passed: /# pass 1\n# fail 0/, failed: /# pass 0\n# fail 1/, esm: true },
] as const;

/** `npm test` in a project; resolves with how it ended (rejects only when it does not end within `timeoutMs`). */
function npmTest(cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    execFile('npm', ['test'], { cwd, env, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 32 * 1024 * 1024 }, (error, stdout, stderr) => {
      const output = `${stdout}\n${stderr}`;
      if (error && (error as { killed?: boolean }).killed) reject(new Error(`npm test did not end within ${timeoutMs} ms:\n${output}`));
      else resolve({ code: error ? Number((error as { code?: unknown }).code ?? 1) : 0, output });
    });
  });
}

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

  it.each(FRAMEWORKS)('examples/testing-$framework passes and leaves nothing running; with a wrong expectation it fails and ends', async ({ framework, test, passed, failed, esm }) => {
    const project = join(pack.dir, `testing-${framework}`);
    await cp(join(REPO_ROOT, 'examples', `testing-${framework}`), project, { recursive: true });
    await sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: project, timeoutMs: 240_000 });
    const env = { PATH: process.env['PATH'], HOME: process.env['HOME'], CI: '1' };
    const run = await npmTest(project, env, 60_000);
    expect(run.code, run.output).toBe(0);
    expect(run.output).toMatch(passed);
    expect(run.output).not.toContain('was still connected');

    // The author's mistake: the last expected reading changed, so the test fails before thermometer.stop(). The
    // copy also writes the emulator's URLs to a file, to check afterwards that nothing listens on them.
    const file = join(project, test);
    const source = await readFile(file, 'utf8');
    const urlsFile = join(project, 'urls.json');
    const record = `${esm ? '__writeFileSync' : "require('node:fs').writeFileSync"}(${JSON.stringify(urlsFile)}, JSON.stringify([emu.mqttUrl, emu.wsUrl, emu.apiEndpoint]));`;
    const broken = (esm ? "import { writeFileSync as __writeFileSync } from 'node:fs';\n" : '') + source.replace('const emu = emulator();', `const emu = emulator();\n  ${record}`).replace(/'22'\)/, "'23')");
    expect(broken).toContain("'23')");
    expect(broken).toContain(urlsFile);
    await writeFile(file, broken);
    const failing = await npmTest(project, env, 60_000);
    expect(failing.code, failing.output).not.toBe(0);
    expect(failing.output).toMatch(failed);
    expect(failing.output).toContain('GID_sensors@@@kitchen was still connected when the emulator stopped: the fixture ended it');
    expect(failing.output).not.toContain('torn down');
    const urls = JSON.parse(await readFile(urlsFile, 'utf8')) as (string | null)[];
    for (const url of urls) if (url) expect(await portAccepts(url), url).toBe(false);
  }, 420_000);
});
