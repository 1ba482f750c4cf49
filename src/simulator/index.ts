/**
 * Fleet simulation: provision, connect and publish from thousands of devices, each authenticated with its own
 * device credential, and report connect and end-to-end latency percentiles.
 */
export { ManualClock, systemClock, type Clock } from './clock.js';
export { parseBrokerUrl, type BrokerAddress } from './device.js';
export { SIMULATOR_ERROR_CATALOG, SimulatorError, type SimulatorErrorCode } from './errors.js';
export { formatReport, type LatencySummary, type SimulationProgress, type SimulationReport } from './metrics.js';
export {
  MAX_PAYLOAD_SIZE,
  MAX_TOPIC_LENGTH,
  SIMULATION_DEFAULTS,
  expandTopic,
  parseShard,
  parseTopicTemplate,
  resolveSettings,
  shardRange,
  simulatedClientId,
  type ResolvedSettings,
  type Shard,
  type SimulationSettings,
  type TopicTemplate,
} from './options.js';
export { runPaced, startOffsetMs, type PaceOptions } from './pacer.js';
export { openFileLimit, runSimulation, simulationFailure, type SimulationOptions } from './run.js';
export { emulatorTarget, startEmulatorProcess, type EmulatorProcess, type SimulationTarget } from './target.js';
