/**
 * `apsaramq-device/gateway`: many devices in one process (README, "Gateways"). A device role entry: it loads the
 * connector and mqtt.js, never the emulator; the registrar only through the factory given to `storeCredentials`,
 * when a device needs it; the outbox's engine only when the application opens a store; prom-client only when
 * metrics are asked for.
 */
export {
  DEFAULT_CONNECT_RATE,
  GATEWAY_BACKOFF,
  Gateway,
  type ConnectOutcome,
  type GatewayCounts,
  type GatewayDeviceInfo,
  type GatewayDeviceState,
  type GatewayEvents,
  type GatewayMessage,
  type GatewayOptions,
} from './gateway.js';
export { ConnectPacer, type ConnectPacerOptions } from './pacer.js';
export { storeCredentials, type GatewayCredentials, type GatewayRegistrar, type StoreCredentialsOptions } from './credentials.js';
export { GATEWAY_METRIC_NAMES, type GatewayMetrics, type GatewayMetricsOptions, type MetricsRegistry } from './metrics.js';
export type { ConnectGate } from '../connector/options.js';
