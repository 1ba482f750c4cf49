#!/usr/bin/env node
// Rewrites the two errors tables of README.md from the catalogs in src/errors.ts and the CLI's words for their
// remedies in src/cli/remedies.ts (via dist/: run `npm run build` first). `--check` exits 1 instead of writing when the README is out of date. test/unit/docs.test.ts runs the same
// rendering, so a code added to a catalog without `npm run docs:errors` fails the tests.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CLI_REMEDIES } from '../dist/cli/remedies.js';
import { API_ERROR_CATALOG, LOCAL_ERROR_CATALOG } from '../dist/errors.js';
import { renderErrorTables } from './errors-table-render.mjs';

const readmePath = fileURLToPath(new URL('../README.md', import.meta.url));
const readme = readFileSync(readmePath, 'utf8');
const next = renderErrorTables(readme, API_ERROR_CATALOG, LOCAL_ERROR_CATALOG, CLI_REMEDIES);
if (process.argv.includes('--check')) {
  if (next !== readme) {
    console.error('README.md errors tables are out of date: run npm run docs:errors');
    process.exit(1);
  }
} else if (next !== readme) {
  writeFileSync(readmePath, next);
  console.log('README.md errors tables updated');
}
