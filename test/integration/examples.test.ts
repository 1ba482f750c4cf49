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

  it('the gateway example runs as written: 20 devices paced, a message each delivered, the metrics say so; it leaves nothing behind', async () => {
    const cwd = await tempDir();
    const { stdout } = await run(process.execPath, [join(root, 'examples/gateway.mjs')], { cwd, env: { PATH: process.env['PATH'] }, timeout: 30_000 });
    expect(stdout.trim().split('\n')).toEqual(['apsaramq_device_devices{state="online"} 20', 'apsaramq_device_publishes_delivered_total 20']);
    expect(await readdir(cwd)).toEqual([]);
  });

  it.each(['quick-start.mjs', 'gateway.mjs'])('the README shows examples/%s word for word', async (file) => {
    const readme = await readFile(join(root, 'README.md'), 'utf8');
    const example = (await readFile(join(root, 'examples', file), 'utf8')).split('\n').slice(1).join('\n');
    expect(readme).toContain(`\`\`\`js\n${example}\`\`\``);
  });
});
