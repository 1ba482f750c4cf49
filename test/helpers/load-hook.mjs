// A module-loading hook (node --import) that reports every file a process loads through the ESM loader, so a test
// can prove which of the package's own modules an entry point pulls in (resolve-hook.mjs reports packages only).
import { register } from 'node:module';

register('data:text/javascript,' + encodeURIComponent(`
export async function load(url, context, next) {
  if (url.startsWith('file:')) process.stderr.write('loaded ' + url + '\\n');
  return next(url, context);
}`));
