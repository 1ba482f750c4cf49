#!/usr/bin/env node
// Part of `npm run build`: a CommonJS copy of the library for loaders that cannot load ES modules, Jest first
// (without --experimental-vm-modules its require() refuses them: "Must use import to load ES Module"). Each
// dist/**/*.js that tsc emitted gets a .cjs sibling, converted by TypeScript itself (the same compiler, no bundler):
// relative imports point at the .cjs siblings, and import.meta.url becomes the file's own URL, so paths found from it
// (package.json, the test certificates, the report assets) are the same as the ES module's.
//
// package.json sends only a `require` that cannot load ES modules here: its exports list `module-sync` first, which
// Node (20.19 and later) matches for require() and import alike, so Node itself always loads the ES modules and one
// copy of every class; Jest, which does not know that condition, matches `require`. The CLI (top-level await) and the
// vitest adapter (vitest is ES modules only) have no CommonJS copy.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import Module from 'node:module';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import ts from 'typescript';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
/** Relative to dist/: what has no CommonJS copy. */
const SKIPPED = [/^cli\//, /^testing\/vitest\.js$/];
const META_URL = '__importMetaUrl';
const NATIVE_REQUIRE = '__nativeRequire';
const root = join(dist, '..');

/**
 * A dependency published as ES modules only (aedes 2): Jest's require() cannot load it, Node's own can (require of
 * an ES module, Node 20.19 and later). Its `require` goes to Node's. A Jest sandbox replaces `module.createRequire`
 * and `process.getBuiltinModule` with its own; `vm.runInThisContext` evaluates in Node's main context, whose
 * `process` is the real one, and so gives the real loader. Nothing else goes around Jest: only these packages.
 */
function esmOnly(name) {
  try {
    const manifest = JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8'));
    return manifest.type === 'module' && !JSON.stringify(manifest.exports ?? {}).includes('"require"');
  } catch {
    return false;
  }
}

/** `./x.js` → `./x.cjs` for relative specifiers; anything else (packages, node: builtins) unchanged. */
function toCjsSpecifier(text) {
  return /^\.\.?\//.test(text) && text.endsWith('.js') ? `${text.slice(0, -3)}.cjs` : text;
}

/** The transformer run before TypeScript's own ES-module-to-CommonJS one. */
function esmToCjs(context) {
  const f = context.factory;
  return (sourceFile) => {
    let usesMetaUrl = false;
    const visit = (node) => {
      if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
        const specifier = f.createStringLiteral(toCjsSpecifier(node.moduleSpecifier.text));
        return ts.isImportDeclaration(node)
          ? f.updateImportDeclaration(node, node.modifiers, node.importClause, specifier, node.attributes)
          : f.updateExportDeclaration(node, node.modifiers, node.isTypeOnly, node.exportClause, specifier, node.attributes);
      }
      if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments.length > 0 && ts.isStringLiteral(node.arguments[0])) {
        return f.updateCallExpression(node, node.expression, node.typeArguments, [f.createStringLiteral(toCjsSpecifier(node.arguments[0].text)), ...node.arguments.slice(1)]);
      }
      if (ts.isPropertyAccessExpression(node) && ts.isMetaProperty(node.expression) && node.expression.keywordToken === ts.SyntaxKind.ImportKeyword) {
        if (node.name.text !== 'url') throw new Error(`import.meta.${node.name.text} in ${sourceFile.fileName} has no CommonJS counterpart here`);
        usesMetaUrl = true;
        return f.createIdentifier(META_URL);
      }
      return ts.visitEachChild(node, visit, context);
    };
    const visited = ts.visitEachChild(sourceFile, visit, context);
    if (!usesMetaUrl) return visited;
    // const __importMetaUrl = require('node:url').pathToFileURL(__filename).href;
    const prologue = f.createVariableStatement(
      undefined,
      f.createVariableDeclarationList(
        [
          f.createVariableDeclaration(
            META_URL,
            undefined,
            undefined,
            f.createPropertyAccessExpression(
              f.createCallExpression(f.createPropertyAccessExpression(f.createCallExpression(f.createIdentifier('require'), undefined, [f.createStringLiteral('node:url')]), 'pathToFileURL'), undefined, [
                f.createIdentifier('__filename'),
              ]),
              'href',
            ),
          ),
        ],
        ts.NodeFlags.Const,
      ),
    );
    return f.updateSourceFile(visited, [prologue, ...visited.statements]);
  };
}

function* jsFiles(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* jsFiles(path);
    else if (entry.name.endsWith('.js')) yield path;
  }
}

let count = 0;
for (const file of jsFiles(dist)) {
  const name = relative(dist, file).split(sep).join('/');
  if (SKIPPED.some((pattern) => pattern.test(name))) continue;
  const { outputText, diagnostics } = ts.transpileModule(readFileSync(file, 'utf8'), {
    fileName: file,
    reportDiagnostics: true,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, allowJs: true, sourceMap: false },
    transformers: { before: [esmToCjs] },
  });
  const errors = (diagnostics ?? []).filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errors.length > 0) throw new Error(`${name}: ${errors.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')).join('; ')}`);
  let text = outputText;
  const natives = new Set([...text.matchAll(/\brequire\("([^".][^"]*)"\)/g)].map((m) => m[1]).filter((spec) => esmOnly(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0])));
  if (natives.size > 0) {
    for (const spec of natives) text = text.split(`require("${spec}")`).join(`${NATIVE_REQUIRE}("${spec}")`);
    text = text.replace(
      '"use strict";\n',
      `"use strict";\nconst ${NATIVE_REQUIRE} = (require("node:vm").runInThisContext("process").getBuiltinModule?.("node:module") ?? require("node:module")).createRequire(__filename);\n`,
    );
    if (!text.includes(`const ${NATIVE_REQUIRE} =`)) throw new Error(`${name}: no "use strict" prologue to put ${NATIVE_REQUIRE} after`);
  }
  // Compiled as Node will wrap it, so that what CommonJS refuses (a top-level `const require`) fails the build, not a user.
  new Script(Module.wrap(text), { filename: `${file.slice(0, -3)}.cjs` });
  writeFileSync(`${file.slice(0, -3)}.cjs`, text);
  count += 1;
}
if (count === 0) throw new Error(`no .js file under ${dist}: run tsc first`);
