// What a device pays to install the library (issue 8): the packed tarball installed into an empty project the way a
// user would (`npm install ./apsaramq-device-<v>.tgz`), now and before the split by role, when aedes, ws, pop-core
// and commander were all regular dependencies. Counts installed packages and measures node_modules on disk.
// npm's cache serves the packages where it can (--prefer-offline), so this measures size, not download time.
// Baseline: mqtt.js alone (a device needs an MQTT client whatever it uses). Target: the device-only install is at most
// 1.15x the size of mqtt.js alone; the install before the split is reported for comparison.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BEFORE_SPLIT, baselineCheckout } from './lib/baseline.mjs';
import { ROOT, verdict } from './lib/child.mjs';

const work = mkdtempSync(join(tmpdir(), 'apsaramq-install-bench-'));

/** `npm pack` of a checkout into its own directory (both tarballs have the same file name). */
function pack(dir, name) {
  const destination = join(work, `tarball-${name}`);
  mkdirSync(destination);
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', destination], { cwd: dir, encoding: 'utf8' });
  return join(destination, JSON.parse(out)[0].filename);
}

function bytesUnder(dir) {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += bytesUnder(path);
    else if (entry.isFile()) total += statSync(path).size;
  }
  return total;
}

function install(name, packages) {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
  execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', ...packages], { cwd: dir, stdio: 'ignore' });
  const listed = execFileSync('npm', ['ls', '--all', '--parseable'], { cwd: dir, encoding: 'utf8' }).trim().split('\n');
  // The first line is the project itself.
  return { packages: new Set(listed.slice(1)).size, mib: bytesUnder(join(dir, 'node_modules')) / 2 ** 20 };
}

try {
  const now = pack(ROOT, 'now');
  const before = pack(baselineCheckout(BEFORE_SPLIT), 'before');
  const rows = {
    [`before the split (${BEFORE_SPLIT}): npm install <tarball>`]: install('before', [before]),
    'mqtt.js alone: npm install mqtt@^5.16.0': install('mqtt', ['mqtt@^5.16.0']),
    'now, device only: npm install <tarball>': install('device', [now]),
    'now, registrar: + @alicloud/pop-core': install('registrar', [now, '@alicloud/pop-core@~1.8.0']),
    'now, everything (CLI, emulator): + pop-core aedes ws': install('everything', [now, '@alicloud/pop-core@~1.8.0', 'aedes@^1.2.0', 'ws@^8.18.0']),
  };
  console.log('| Install | Packages | node_modules (MiB) |\n|---|---|---|');
  for (const [name, r] of Object.entries(rows)) console.log(`| ${name} | ${r.packages} | ${r.mib.toFixed(1)} |`);
  const [old, mqtt, device] = Object.values(rows);
  console.log(`device-only vs before the split: ${(device.packages / old.packages).toFixed(2)}x packages, ${(device.mib / old.mib).toFixed(2)}x size`);
  console.log(`device-only vs mqtt.js alone: +${device.packages - mqtt.packages} packages`);
  verdict('device-only install size / mqtt.js alone', device.mib / mqtt.mib, 1.15, false);
} finally {
  rmSync(work, { recursive: true, force: true });
}
