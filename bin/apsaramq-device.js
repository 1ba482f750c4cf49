#!/usr/bin/env node
// The `apsaramq-device` command. Installed from a tarball, it only loads dist/cli/bin.js. In a clone of the
// repository (src/ beside dist/), `npm install` then `npm start` or `npx apsaramq-device` must work without an
// install-time script (npm 11 flags or skips those): so here, dist/ is built first when it is missing or older than
// the sources, saying so on stderr (stdout stays the command's).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src');
const built = join(root, 'dist', 'cli', 'bin.js');

/** The newest modification time of the files under `dir`, in ms. */
function newest(dir) {
  let latest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    latest = Math.max(latest, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs);
  }
  return latest;
}

if (existsSync(src)) {
  const sources = Math.max(newest(src), ...['tsconfig.json', 'tsconfig.build.json'].map((f) => statSync(join(root, f)).mtimeMs));
  const missing = !existsSync(built);
  if (missing || statSync(built).mtimeMs < sources) {
    process.stderr.write(`apsaramq-device: ${missing ? 'building dist/ (the first run in this clone)' : 'rebuilding dist/ (the sources changed)'}: npm run build\n`);
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const build = spawnSync(npm, ['run', '--silent', 'build'], { cwd: root, stdio: ['ignore', 2, 2], shell: process.platform === 'win32' });
    if (build.status !== 0) {
      process.stderr.write(`apsaramq-device: the build failed (${build.error ? build.error.message : `exit ${build.status}`}); run npm install, then npm run build, in ${root}\n`);
      process.exit(1);
    }
  }
}

await import('../dist/cli/bin.js');
