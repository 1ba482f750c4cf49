#!/usr/bin/env node
// Part of `npm run build`: copies the chart library of the HTML report (uPlot, a devDependency) into
// dist/simulator/assets/, so the packed tarball carries it and an installed package renders reports offline
// without installing uPlot. The HTML report inlines these files.
import { copyFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const target = join(root, 'dist', 'simulator', 'assets');
const uplot = dirname(require.resolve('uplot/package.json'));
mkdirSync(target, { recursive: true });
for (const [from, to] of [
  [join(uplot, 'dist', 'uPlot.iife.min.js'), 'uPlot.iife.min.js'],
  [join(uplot, 'dist', 'uPlot.min.css'), 'uPlot.min.css'],
  [join(uplot, 'LICENSE'), 'LICENSE'],
]) copyFileSync(from, join(target, to));
