// A module-resolution hook (node --import) that makes the packages named in APSARAMQ_TEST_HIDE_PACKAGES (comma
// separated) fail to resolve as an uninstalled package does, so that a test can run the built CLI as a user who has
// not installed an optional peer.
import { register } from 'node:module';

register('data:text/javascript,' + encodeURIComponent(`
const hidden = new Set((process.env.APSARAMQ_TEST_HIDE_PACKAGES ?? '').split(',').filter(Boolean));
export async function resolve(specifier, context, next) {
  if (hidden.has(specifier)) {
    const error = new Error("Cannot find package '" + specifier + "' imported from " + (context.parentURL ?? 'the test'));
    error.code = 'ERR_MODULE_NOT_FOUND';
    throw error;
  }
  return next(specifier, context);
}`));
