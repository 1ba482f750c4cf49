/**
 * apsaramq-device/emulator: a local emulator of ApsaraMQ for MQTT (an aedes broker and the OpenAPI) that enforces the
 * real service's authentication. Needs the optional peer dependencies `aedes` and `ws`.
 *
 * Every name is exported on purpose; test/unit/public-api.test.ts holds the list.
 */
export {
  BROKER_DEFAULTS,
  DEFAULT_PARENT_TOPICS,
  EMULATED_ACTIONS,
  EMULATOR_DEFAULTS,
  EMULATOR_ENV,
  MAX_FAIL_NEXT_COUNT,
  RULES,
  startEmulator,
  type ActionStats,
  type BrokerOptions,
  type EmulatedAction,
  type Emulator,
  type EmulatorOptions,
  type EmulatorStats,
  type ErrorStatusMode,
  type ReRegisterPolicy,
  type RuleName,
  type TlsOptions,
  type UnsupportedFeaturePolicy,
  type ValueSource,
} from './index.js';
export { EmulatorStateError, type EmulatorStateErrorCode } from '../errors.js';
