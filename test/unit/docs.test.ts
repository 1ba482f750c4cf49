import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';
import { CLI_REMEDIES } from '../../src/cli/remedies.js';
import { API_ERROR_CATALOG, LOCAL_ERROR_CATALOG } from '../../src/errors.js';
// @ts-expect-error -- a plain .mjs script without types, shared with scripts/errors-table.mjs
import { renderErrorTables } from '../../scripts/errors-table-render.mjs';

const readme = await readFile(resolve(import.meta.dirname, '../../README.md'), 'utf8');

describe('README stays true', () => {
  it('documents every error code with its retry verdict and remedy (npm run docs:errors renders the tables)', () => {
    expect(renderErrorTables(readme, API_ERROR_CATALOG, LOCAL_ERROR_CATALOG, CLI_REMEDIES), 'README errors tables are stale: npm run docs:errors').toBe(readme);
    for (const [code, info] of [...Object.entries(API_ERROR_CATALOG), ...Object.entries(LOCAL_ERROR_CATALOG)]) {
      const row = readme.split('\n').find((line) => line.startsWith(`| \`${code}\` |`));
      expect(row, `README errors table lacks ${code}`).toBeDefined();
      expect(row, code).toContain(info.retryable ? '| yes |' : '| no |');
    }
  });

  it('describes every CLI command', () => {
    const io = { stdout: () => {}, stderr: () => {}, env: {}, interrupted: () => new Promise<void>(() => {}) };
    const rows = readme.split('\n').filter((line) => line.startsWith('| `'));
    const program = buildProgram(io);
    // Leaf commands with their path: `connect`, `token apply`, …
    const leaves = program.commands.flatMap((c) => (c.commands.length > 0 ? c.commands.map((sub) => ({ command: sub, name: `${c.name()} ${sub.name()}` })) : [{ command: c, name: c.name() }]));
    for (const { command, name } of leaves) {
      const escaped = name.replace(/ /g, ' ');
      const word = new RegExp(`^\\| \`${escaped}\\b|\\\\\\| ${escaped}\\b`);
      const described = rows.filter((row) => word.test(row));
      expect(described.length, `README's CLI table does not describe the ${name} command`).toBeGreaterThan(0);
      for (const option of command.options) {
        if (!option.long || option.long === '--help') continue;
        expect(described.join(' '), `README's ${name} row does not mention ${option.long}`).toContain(option.long);
      }
    }
  });
});
