import { readdir, readFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/package.js';

/**
 * Every package the built code loads must be declared where a user's npm sees it (`dependencies` or
 * `peerDependencies`): a package that resolves only because npm hoisted it from a dependency's own dependencies
 * (as mqtt-packet did from mqtt) breaks under pnpm, under Yarn PnP, or the day that dependency drops it.
 * `npm test` builds dist/ first.
 */

/** Every .js file under `dir`. */
async function jsFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.js')).map((e) => join(e.parentPath, e.name));
}

/** The package a bare specifier names (`@scope/name/sub` → `@scope/name`, `name/sub` → `name`), or undefined for a relative one or a builtin. */
export function packageOf(specifier: string): string | undefined {
  if (specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('node:') || specifier.startsWith('data:') || specifier.startsWith('file:')) return undefined;
  const parts = specifier.split('/');
  const name = specifier.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] as string);
  return builtinModules.includes(name) ? undefined : name;
}

/**
 * The specifiers of one module: static imports and re-exports, `import('…')` and `require('…')` with a literal, as
 * TypeScript's pre-processor finds them (it reads JavaScript, comments and strings aside); and whether it has an
 * `import()` whose argument is not a literal, which no check could follow.
 */
function specifiersOf(text: string): { specifiers: string[]; computedImport: boolean } {
  const { importedFiles } = ts.preProcessFile(text, true, true);
  const literal = importedFiles.length;
  let dynamic = 0;
  const scanner = ts.createScanner(ts.ScriptTarget.Latest, true, ts.LanguageVariant.Standard, text);
  for (let token = scanner.scan(); token !== ts.SyntaxKind.EndOfFileToken; token = scanner.scan()) {
    if (token !== ts.SyntaxKind.ImportKeyword) continue;
    const next = scanner.lookAhead(() => [scanner.scan(), scanner.scan()]);
    if (next[0] === ts.SyntaxKind.OpenParenToken && next[1] !== ts.SyntaxKind.StringLiteral && next[1] !== ts.SyntaxKind.NoSubstitutionTemplateLiteral) dynamic++;
  }
  return { specifiers: importedFiles.slice(0, literal).map((f) => f.fileName), computedImport: dynamic > 0 };
}

describe('dist/ imports only declared packages', () => {
  it('packageOf names the package of a bare specifier and skips relative ones and builtins', () => {
    expect(packageOf('mqtt-packet')).toBe('mqtt-packet');
    expect(packageOf('@alicloud/pop-core/lib/rpc.js')).toBe('@alicloud/pop-core');
    expect(packageOf('uplot/dist/uPlot.min.css')).toBe('uplot');
    for (const skipped of ['./x.js', '../y.js', 'node:fs', 'fs', 'fs/promises', 'stream/web']) expect(packageOf(skipped), skipped).toBeUndefined();
  });

  it('specifiersOf finds static, re-exported, dynamic and required specifiers, and flags a computed import()', () => {
    const found = specifiersOf(`import a from 'a';\nexport { b } from "b";\nimport 'c';\nconst d = await import('d');\nconst e = require('e');\n// import f from 'f'\nconst s = "import g from 'g'";`);
    expect(found.specifiers.sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(found.computedImport).toBe(false);
    expect(specifiersOf('const name = "x"; await import(name);').computedImport).toBe(true);
  });

  it('every package a built module imports is in dependencies or peerDependencies', async () => {
    const manifest = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as {
      name: string;
      dependencies?: Record<string, string>;
      peerDependencies?: Record<string, string>;
    };
    const declared = new Set([manifest.name, ...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})]);
    const files = await jsFiles(join(REPO_ROOT, 'dist'));
    expect(files.length, 'dist/ is empty: run npm run build').toBeGreaterThan(10);
    const undeclared: string[] = [];
    const computed: string[] = [];
    const imported = new Set<string>();
    for (const file of files) {
      const { specifiers, computedImport } = specifiersOf(await readFile(file, 'utf8'));
      if (computedImport) computed.push(relative(REPO_ROOT, file));
      for (const name of specifiers.map(packageOf)) {
        if (name === undefined) continue;
        imported.add(name);
        if (!declared.has(name)) undeclared.push(`${relative(REPO_ROOT, file)} imports ${name}`);
      }
    }
    expect(undeclared, 'declare these in package.json dependencies or peerDependencies').toEqual([]);
    expect(computed, 'an import() of a computed name escapes this check').toEqual([]);
    // The walk saw the packages it is meant to see (the emulator's codec among them).
    for (const name of ['mqtt', 'mqtt-packet', 'aedes', 'commander']) expect(imported.has(name), name).toBe(true);
  });
});
