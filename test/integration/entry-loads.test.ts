import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/package.js';

const run = promisify(execFile);

/**
 * The packages a fresh Node process has loaded after importing one built entry point: every bare specifier the ESM
 * loader resolved, plus every package in the CommonJS cache (what those packages required in turn).
 */
async function packagesLoadedBy(entry: string): Promise<Set<string>> {
  const script = `
    await import(${JSON.stringify(join(REPO_ROOT, entry))});
    const { createRequire } = await import('node:module');
    const cached = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('/node_modules/'));
    for (const file of cached) {
      const parts = file.split('/node_modules/').pop().split('/');
      console.error('resolved ' + (parts[0].startsWith('@') ? parts[0] + '/' + parts[1] : parts[0]));
    }`;
  const { stderr } = await run(process.execPath, ['--import', join(REPO_ROOT, 'test/helpers/resolve-hook.mjs'), '--input-type=module', '-e', script], { cwd: REPO_ROOT });
  return new Set([...stderr.matchAll(/^resolved (\S+)$/gm)].map((m) => (m[1] ?? '').split('/').slice(0, (m[1] ?? '').startsWith('@') ? 2 : 1).join('/')));
}

describe('each entry point loads only its own role', () => {
  it('the device entry loads mqtt.js and none of the registrar, emulator, outbox engine or CLI packages', async () => {
    const loaded = await packagesLoadedBy('dist/index.js');
    expect(loaded.has('mqtt')).toBe(true);
    for (const other of ['aedes', 'ws', '@alicloud/pop-core', 'commander', 'hdr-histogram-js', 'uplot', 'classic-level']) expect(loaded.has(other), other).toBe(false);
  });

  it('the device entry loads no module of the durable outbox: not the engine, not the connector\'s durable outbox (loaded by a connection that has one)', async () => {
    const script = `await import(${JSON.stringify(join(REPO_ROOT, 'dist/index.js'))});`;
    const { stderr } = await run(process.execPath, ['--import', join(REPO_ROOT, 'test/helpers/load-hook.mjs'), '--input-type=module', '-e', script], { cwd: REPO_ROOT });
    const files = [...stderr.matchAll(/^loaded (\S+)$/gm)].map((m) => m[1] ?? '');
    expect(files.some((f) => f.endsWith('/dist/connector/connection.js'))).toBe(true); // the hook sees the entry's modules
    // durable.js and the modules split out of it (durable-read.js, durable-items.js, …): all loaded with it, on demand.
    expect(files.filter((f) => f.includes('/dist/outbox/') || f.includes('classic-level') || f.includes('/dist/connector/durable'))).toEqual([]);
  });

  it('the provisioner entry adds pop-core, not the emulator or the CLI', async () => {
    const loaded = await packagesLoadedBy('dist/registrar.js');
    expect(loaded.has('@alicloud/pop-core')).toBe(true);
    for (const other of ['aedes', 'commander']) expect(loaded.has(other), other).toBe(false);
  });

  it('the emulator entry loads aedes and ws, not pop-core or the CLI', async () => {
    const loaded = await packagesLoadedBy('dist/emulator/index.js');
    for (const own of ['aedes', 'ws']) expect(loaded.has(own), own).toBe(true);
    for (const other of ['@alicloud/pop-core', 'commander']) expect(loaded.has(other), other).toBe(false);
  });

  it('the outbox entry loads no package at import: classic-level only when a store is opened, and no other role', async () => {
    const loaded = await packagesLoadedBy('dist/outbox/index.js');
    for (const other of ['classic-level', 'mqtt', 'aedes', 'ws', '@alicloud/pop-core', 'proper-lockfile', 'commander']) expect(loaded.has(other), other).toBe(false);
  });

  it('the gateway entry loads mqtt.js and none of the emulator, registrar, outbox engine, prom-client or CLI packages', async () => {
    const loaded = await packagesLoadedBy('dist/gateway/index.js');
    expect(loaded.has('mqtt')).toBe(true);
    for (const other of ['aedes', 'ws', '@alicloud/pop-core', 'commander', 'classic-level', 'prom-client', 'proper-lockfile', 'hdr-histogram-js']) expect(loaded.has(other), other).toBe(false);
    // Nor a module of the registrar or the emulator of this package: the registrar comes from the factory given to
    // storeCredentials, called when a device first needs it.
    const script = `await import(${JSON.stringify(join(REPO_ROOT, 'dist/gateway/index.js'))});`;
    const { stderr } = await run(process.execPath, ['--import', join(REPO_ROOT, 'test/helpers/load-hook.mjs'), '--input-type=module', '-e', script], { cwd: REPO_ROOT });
    const files = [...stderr.matchAll(/^loaded (\S+)$/gm)].map((m) => m[1] ?? '');
    expect(files.some((f) => f.endsWith('/dist/gateway/gateway.js'))).toBe(true);
    expect(files.filter((f) => f.includes('/dist/provisioner/') || f.includes('/dist/emulator/') || f.endsWith('/dist/registrar.js') || f.includes('/dist/outbox/store'))).toEqual([]);
  });

  it('the simulator entry adds pop-core and hdr-histogram-js (its reports), not the CLI; the chart library is inlined from dist, never loaded', async () => {
    const loaded = await packagesLoadedBy('dist/simulator/index.js');
    for (const own of ['@alicloud/pop-core', 'hdr-histogram-js']) expect(loaded.has(own), own).toBe(true);
    for (const other of ['commander', 'uplot']) expect(loaded.has(other), other).toBe(false);
  });
});
