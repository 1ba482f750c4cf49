/**
 * apsaramq-device/simulator: fleet simulation. Provision, connect and publish from thousands of devices, each
 * authenticated with its own device credential, and report connect and end-to-end latency percentiles. Needs the
 * provisioner's peer dependency (`@alicloud/pop-core`), `hdr-histogram-js` (the reports' latency histograms), and
 * the emulator's (`aedes`, `ws`) to run against an embedded emulator; `yaml` only to read a YAML game-day scenario.
 *
 * Every name is exported on purpose; test/unit/public-api.test.ts holds the list.
 */
export { InvalidReportError, InvalidScenarioError, SimulatorError, type SimulatorErrorCode } from './errors.js';
export { formatReport, type SimulationProgress } from './metrics.js';
export { renderReportHtml } from './html.js';
export { type MergeReportsOptions, REPORT_LIMITS, mergeReports, parseReport } from './report.js';
export {
  REPORT_FORMAT,
  type BrokerLoss,
  type DeliveryReport,
  type FaultReport,
  type LatencySummary,
  type NotHealedDevice,
  type RunParameters,
  type ShardRecord,
  type SimulatedClient,
  type SimulationReport,
} from './report-format.js';
export { FAULT_KINDS, type DeviceTarget, type FaultKind, type FaultSpec, type Scenario, type ScenarioIdentity, parseScenario, readScenarioFile } from './scenario.js';
export { type Threshold, checkThresholds, parseThresholds } from './fail-on.js';
export type { MessageCounts } from './ledger.js';
export type { ReportSeries } from './series.js';
export { SIMULATION_DEFAULTS, type SimulationSettings } from './options.js';
export { runSimulation, simulationFailure, type SimulationOptions } from './run.js';
export { emulatorTarget, type SimulationTarget } from './target.js';
