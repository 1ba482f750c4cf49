/**
 * apsaramq-device/emulator: a local emulator of ApsaraMQ for MQTT (an aedes broker and the OpenAPI) that enforces the
 * real service's authentication. Needs the optional peer dependencies `aedes` and `ws`.
 *
 * The package's entry point for the emulator (`exports["./emulator"]`): only names re-exported, no code. Every name is
 * exported on purpose; test/unit/public-api.test.ts holds the list. The start-up code is emulator.ts.
 */
export { startEmulator, type Emulator, type EmulatorClusterInfo } from './emulator.js';
export type { ClusterProcess } from './cluster/membership.js';
export { EMULATOR_DEFAULTS, EMULATOR_ENV, type EmulatorOptions, type ReRegisterPolicy, type TlsOptions, type ValueSource } from './options.js';
export { BROKER_DEFAULTS, DEFAULT_GROUPS, DEFAULT_PARENT_TOPICS, type BrokerOptions, type OfflineTimers, type UnsupportedFeaturePolicy } from './broker-options.js';
export { RULES, type RuleName } from './mqtt-rules.js';
export type { ErrorStatusMode } from './api-errors.js';
export type { ActionStats, EmulatorStats } from './stats.js';
export { EMULATED_ACTIONS, type EmulatedAction } from './actions.js';
export { MAX_FAIL_NEXT_COUNT } from './faults.js';
export { EmulatorStateError, type EmulatorStateErrorCode } from '../errors.js';
