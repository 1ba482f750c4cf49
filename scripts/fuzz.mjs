#!/usr/bin/env node
// The seeded fuzzes (the emulator's broker, MQTT 3.1.1 and 5, and the connector against a fuzzing broker), longer than CI runs them: 10,000 cases each unless APSARAMQ_FUZZ_CASES says otherwise.
// APSARAMQ_FUZZ_SEED replays a run (each fuzz prints its seed in its title). Extra arguments go to vitest.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const files = ['test/integration/emulator-mqtt5-fuzz.test.ts', 'test/integration/emulator-mqtt-fuzz.test.ts', 'test/integration/connector-fuzz.test.ts'];
const env = { ...process.env, APSARAMQ_FUZZ_CASES: process.env.APSARAMQ_FUZZ_CASES ?? '10000' };
const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
const child = spawn(process.execPath, [vitest, 'run', ...files, ...process.argv.slice(2)], { cwd: root, env, stdio: 'inherit' });
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
