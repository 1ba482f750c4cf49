import { build } from 'rolldown';
await build({ input: process.argv[2], external: [/^node:/, 'mqtt', 'mqtt-packet'], platform: 'node', output: { dir: 'dist', format: 'esm', entryFileNames: '__bundle.js', chunkFileNames: '__chunk-[name].js' }, logLevel: 'silent' });
