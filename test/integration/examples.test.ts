import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/cli.js';

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '../..');

describe('README examples', () => {
  it('the library quick start runs as written (against the built package)', async () => {
    const store = join(await tempDir(), 'credentials');
    const { stdout } = await run(process.execPath, [join(root, 'examples/quick-start.mjs')], { env: { PATH: process.env['PATH'], STORE_DIR: store }, timeout: 20_000 });
    expect(stdout.trim()).toBe('demo/hello: hi');
  });
});
