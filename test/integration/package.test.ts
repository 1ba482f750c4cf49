import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, consumerProject, packTarball, sh } from '../helpers/package.js';

const run = promisify(execFile);

/**
 * The package as a user gets it: the packed tarball installed into a fresh project, with only the device's
 * dependencies (the role dependencies are optional peers). Real npm, real Node, a real TypeScript compile.
 */
describe('the published package', () => {
  let pack: Awaited<ReturnType<typeof packTarball>>;
  let files: string[];
  let project: string;

  beforeAll(async () => {
    pack = await packTarball();
    files = (await sh('tar', ['-tzf', pack.tarball], { cwd: pack.dir })).stdout.split('\n').filter(Boolean);
    project = await consumerProject(join(pack.dir, 'gateway'), { type: 'commonjs' }, [pack.tarball, '@types/node@20']);
  }, 240_000);

  afterAll(async () => {
    await pack?.remove();
  });

  it('ships a LICENSE, the README, no source maps and no install-time scripts', async () => {
    expect(files).toContain('package/LICENSE');
    expect(files).toContain('package/README.md');
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    const index = (await sh('tar', ['-xzOf', pack.tarball, 'package/dist/index.js'], { cwd: pack.dir })).stdout;
    expect(index).not.toContain('sourceMappingURL');
    expect(files.filter((f) => f.startsWith('package/src/') || f.startsWith('package/test/'))).toEqual([]);
    const manifest = JSON.parse((await sh('tar', ['-xzOf', pack.tarball, 'package/package.json'], { cwd: pack.dir })).stdout) as { scripts?: Record<string, string> };
    for (const hook of ['preinstall', 'install', 'postinstall', 'prepare']) expect(manifest.scripts ?? {}, hook).not.toHaveProperty(hook);
  });

  it('has every relative README link and every file the README names for installed users', async () => {
    const readme = await readFile(join(REPO_ROOT, 'README.md'), 'utf8');
    const links = [...readme.matchAll(/\]\((?!https?:|#)([^)\s]+)\)/g)].map((m) => (m[1] ?? '').split('#')[0]);
    for (const link of links) expect(files, `README links to ${link}`).toContain(`package/${link}`);
  });

  it('installs a device-only consumer without the role dependencies', async () => {
    const installed = (await sh('npm', ['ls', '--all', '--parseable'], { cwd: project })).stdout.split('\n');
    const has = (name: string): boolean => installed.some((path) => path.endsWith(`/node_modules/${name}`));
    expect(has('mqtt')).toBe(true);
    // The role dependencies are optional peers: a device installs none of them. (commander, the CLI's small argument
    // parser, is a dependency so that the CLI always starts; the library never loads it.)
    for (const role of ['aedes', '@alicloud/pop-core', 'classic-level']) expect(has(role), role).toBe(false);
  });

  it('loads with require() from CommonJS (Node >= 20.19) and gives every role entry its own peer', async () => {
    const script = `
      const device = require('apsaramq-device');
      const out = { connectDevice: typeof device.connectDevice, version: device.VERSION };
      try { require('apsaramq-device/provisioner'); out.provisioner = 'loaded'; } catch (e) { out.provisioner = e.code + ' ' + /'([^']+)'/.exec(e.message)[1]; }
      try { require('apsaramq-device/emulator'); out.emulator = 'loaded'; } catch (e) { out.emulator = e.code + ' ' + /'([^']+)'/.exec(e.message)[1]; }
      console.log(JSON.stringify(out));`;
    const { stdout } = await run(process.execPath, ['-e', script], { cwd: project });
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(JSON.parse(stdout)).toEqual({
      connectDevice: 'function',
      version: pkg.version,
      provisioner: 'ERR_MODULE_NOT_FOUND @alicloud/pop-core',
      emulator: 'ERR_MODULE_NOT_FOUND aedes',
    });
  });

  it('gives require() and import the same ES modules in Node (one copy of every class); its CommonJS copy, for Jest, has the same names', async () => {
    const script = `
      const viaRequire = require('apsaramq-device');
      const copy = require(require('node:path').join(process.cwd(), 'node_modules/apsaramq-device/dist/index.cjs'));
      import('apsaramq-device').then((viaImport) => console.log(JSON.stringify({
        same: viaImport.DeviceCredential === viaRequire.DeviceCredential,
        copyIsAnother: copy.DeviceCredential !== viaRequire.DeviceCredential,
        names: JSON.stringify(Object.keys(copy).sort()) === JSON.stringify(Object.keys(viaImport).filter((k) => k !== 'default').sort()),
      })));`;
    const { stdout } = await run(process.execPath, ['-e', script], { cwd: project });
    expect(JSON.parse(stdout)).toEqual({ same: true, copyIsAnother: true, names: true });
    // Every entry with a CommonJS copy ships it; the CLI and the vitest adapter have none.
    // Read from the exports map, so that a renamed entry cannot leave a stale name here.
    const exportsMap = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).exports as Record<string, { require?: string } | string>;
    const required = Object.values(exportsMap).flatMap((target) => (typeof target === 'object' && target.require ? [target.require] : []));
    expect(required.length).toBeGreaterThanOrEqual(7);
    for (const target of required) expect(files).toContain(`package/${target.replace(/^\.\//, '')}`);
    expect(files.filter((f) => f.startsWith('package/dist/cli/') && f.endsWith('.cjs'))).toEqual([]);
    expect(files).not.toContain('package/dist/testing/vitest.cjs');
  });

  it('compiles a strict CommonJS TypeScript gateway (module nodenext) against the shipped types and runs it', async () => {
    await writeFile(
      join(project, 'gateway.ts'),
      `import { connectDevice, DeviceCredential, isApsaraMqDeviceError, type ConnectDeviceOptions } from 'apsaramq-device';
const credential = new DeviceCredential({ clientId: 'GID_demo@@@dev-1', instanceId: 'mqtt-demo', deviceAccessKeyId: 'DC.k', deviceAccessKeySecret: 'DC.s' });
const options: ConnectDeviceOptions = { credential, brokerUrl: 'mqtt://127.0.0.1:1', reconnect: false };
connectDevice(options).then(
  () => console.log('connected?!'),
  (e: unknown) => console.log(isApsaraMqDeviceError(e) ? e.code : 'untyped'),
);
`,
    );
    await writeFile(
      join(project, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, outDir: 'out', skipLibCheck: false, types: ['node'] }, files: ['gateway.ts'] }),
    );
    await sh(process.execPath, [join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '-p', '.'], { cwd: project });
    const { stdout } = await run(process.execPath, ['out/gateway.js'], { cwd: project });
    // Port 1 on loopback refuses the connection: the error arrives typed.
    expect(stdout.trim()).toBe('BrokerUnreachable');
  });

  it('runs the CLI without the role dependencies, and names the package a command needs', async () => {
    const bin = join(project, 'node_modules/.bin/apsaramq-device');
    const help = await run(bin, ['--help'], { cwd: project });
    expect(help.stdout).toContain('Usage: apsaramq-device');
    const failed = await run(bin, ['emulator'], { cwd: project }).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toMatch(/^MissingDependency: The emulator needs the package aedes, .*\. Install it next to apsaramq-device: npm install aedes@2\.0\.0-beta\.1 ws@\^8\.18\.0 proper-lockfile@~4\.1\.2\n$/);
  });
});
