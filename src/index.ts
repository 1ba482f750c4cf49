/**
 * apsaramq-device: register, then connect. Provisioning (registrar role), signing, connecting (device role)
 * for ApsaraMQ for MQTT in unique-certificate-per-device mode, and a local emulator of the service.
 */
export * from './errors.js';
export {
  AccountCredentials,
  DeviceCredential,
  MAX_CLIENT_ID_LENGTH,
  assertClientId,
  assertGroupId,
  assertInstanceId,
  clientIdProblem,
  groupIdOf,
  groupIdProblem,
  redact,
  type CredentialRequest,
  type CredentialSource,
  type DeviceCredentialWire,
} from './credential.js';
export * from './signer/index.js';
export * from './provisioner/index.js';
export {
  CONNECT_DEFAULTS,
  DeviceConnection,
  TRANSPORT_PORTS,
  WEBSOCKET_PATH,
  brokerUrlFor,
  connectDevice,
  staticSource,
  type ConnectDeviceOptions,
  type DeviceConnectionEvents,
  type Transport,
} from './connector/connect.js';
export { registerAndConnect, type RegisterAndConnectOptions } from './connector/register-and-connect.js';
export * from './emulator/index.js';
export * from './simulator/index.js';
export { backoffCeiling, fullJitterDelay, type BackoffOptions } from './util/backoff.js';
export { silentLogger, type Logger } from './util/logger.js';
export { VERSION } from './version.js';
