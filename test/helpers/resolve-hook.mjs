// A module-resolution hook (node --import) that reports every package a process resolves, ESM imports and
// CommonJS requires alike, so a test can prove which dependencies an entry point loads.
import { register } from 'node:module';

register('data:text/javascript,' + encodeURIComponent(`
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  if (!specifier.startsWith('.') && !specifier.startsWith('/') && !specifier.startsWith('node:') && !specifier.startsWith('file:')) {
    process.stderr.write('resolved ' + specifier + '\\n');
  }
  return resolved;
}`));
