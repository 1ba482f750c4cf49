/**
 * mqtt.js, loaded with require(). It is a CommonJS package, and Node's import() of one costs about twice its
 * require(): the ES module loader scans the package's sources for their named exports (through every re-export)
 * before it runs them, where require() runs them. What a device pays to load the library is mostly mqtt.js, so this
 * is its largest part (BENCHMARKS.md, "What a device pays"). require() returns the module object of the CommonJS
 * cache, the one an application's own `import 'mqtt'` wraps: its classes are the connector's.
 */
import { createRequire } from 'node:module';
import type * as Mqtt from 'mqtt';

// Not named `require`: the CommonJS copy of this module (scripts/build-cjs.mjs) has a `require` of its own.
const load = createRequire(import.meta.url);
const mqtt = load('mqtt') as typeof Mqtt;

export const { connect, ErrorWithReasonCode, ReasonCodes } = mqtt;
