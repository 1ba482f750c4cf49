import { createRequire } from 'node:module';

// Not named `require`: the CommonJS copy of this module (scripts/build-cjs.mjs) has a `require` of its own.
const load = createRequire(import.meta.url);

/** This package's version, from package.json. */
export const VERSION: string = (load('../package.json') as { version: string }).version;
