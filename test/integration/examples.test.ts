import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/cli.js';

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '../..');

describe('README examples', () => {
  it('the library quick start runs as written (against the built package), and leaves nothing behind', async () => {
    const cwd = await tempDir();
    const { stdout } = await run(process.execPath, [join(root, 'examples/quick-start.mjs')], { cwd, env: { PATH: process.env['PATH'] }, timeout: 20_000 });
    expect(stdout.trim()).toBe('demo/hello: hi');
    expect(await readdir(cwd)).toEqual([]);
  });

  it('the README shows the example file word for word', async () => {
    const readme = await readFile(join(root, 'README.md'), 'utf8');
    const example = (await readFile(join(root, 'examples/quick-start.mjs'), 'utf8')).split('\n').slice(1).join('\n');
    expect(readme).toContain(`\`\`\`js\n${example}\`\`\``);
  });
});
