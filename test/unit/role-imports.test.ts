/**
 * No cycle between the role folders: nothing under src/connector/ imports from src/provisioner/, and nothing under
 * src/provisioner/ from src/connector/ (type-only imports, re-exports and dynamic imports included). What composes
 * both roles (registerAndConnect) lives outside both folders.
 */
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = resolve(import.meta.dirname, '../../src');

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(entries.map((entry) => (entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : Promise.resolve(entry.name.endsWith('.ts') ? [join(dir, entry.name)] : []))));
  return nested.flat();
}

/** The src/-relative paths a file imports (relative specifiers only: packages are not role folders). */
async function importsOf(file: string): Promise<string[]> {
  const info = ts.preProcessFile(await readFile(file, 'utf8'), true, true);
  return info.importedFiles.map((ref) => ref.fileName).filter((name) => name.startsWith('.')).map((name) => relative(SRC, resolve(dirname(file), name)));
}

/** Every import from a file under `from/` into `to/`, as "file -> imported". */
async function crossings(from: string, to: string): Promise<string[]> {
  const found: string[] = [];
  for (const file of await sourceFiles(join(SRC, from))) {
    for (const target of await importsOf(file)) if (target.startsWith(`${to}/`)) found.push(`${relative(SRC, file)} -> ${target}`);
  }
  return found;
}

describe('role folders', () => {
  it('reads imports of every kind (the check itself can see a crossing)', async () => {
    const info = ts.preProcessFile("import type { A } from '../provisioner/a.js';\nexport * from '../provisioner/b.js';\nconst c = await import('../provisioner/c.js');", true, true);
    expect(info.importedFiles.map((ref) => ref.fileName)).toEqual(['../provisioner/a.js', '../provisioner/b.js', '../provisioner/c.js']);
  });

  it('src/connector/ imports nothing from src/provisioner/', async () => {
    expect(await crossings('connector', 'provisioner')).toEqual([]);
  });

  it('src/provisioner/ imports nothing from src/connector/', async () => {
    expect(await crossings('provisioner', 'connector')).toEqual([]);
  });

  it('src/gateway/ (device role) imports nothing from src/provisioner/ or src/emulator/: the registrar comes through the factory it is given', async () => {
    expect([...(await crossings('gateway', 'provisioner')), ...(await crossings('gateway', 'emulator'))]).toEqual([]);
  });
});
