/**
 * apsaramq-device: the device role. Everything a device needs to get onto ApsaraMQ for MQTT with its own device
 * credential: the credential type, the MQTT signers, the connector and the errors. It loads mqtt.js and nothing of
 * the other roles: the registrar (`apsaramq-device/provisioner`, which needs `@alicloud/pop-core`), the emulator
 * (`apsaramq-device/emulator`, `aedes` and `ws`) and the fleet simulator (`apsaramq-device/simulator`).
 *
 * Every name is exported on purpose; test/unit/public-api.test.ts holds the list.
 */
export {
  API_ERROR_CATALOG,
  AbortedError,
  ApiError,
  ApsaraMqDeviceError,
  CONNACK_CODES,
  ConfigurationError,
  ConnectError,
  ConnectionClosedError,
  LOCAL_ERROR_CATALOG,
  NetworkError,
  OutboxError,
  PublishError,
  StoreError,
  SubscribeError,
  SystemError,
  ValidationError,
  apiErrorInfo,
  isApsaraMqDeviceError,
  isErrorCode,
  type ApiErrorCode,
  type ApiErrorInfo,
  type ConnectErrorCode,
  type ErrorCode,
  type ErrorInfo,
  type InvalidParameterCode,
  type KnownApiErrorCode,
  type LocalErrorCode,
  type NetworkErrorCode,
  type OutboxErrorCode,
  type RetryClass,
  type StoreErrorCode,
  type SystemErrorCode,
  type ValidationErrorCode,
} from './errors.js';
export {
  DeviceCredential,
  MAX_CLIENT_ID_LENGTH,
  assertClientId,
  assertInstanceId,
  clientIdProblem,
  type CredentialRequest,
  type CredentialSource,
  type DeviceCredentialWire,
} from './credential.js';
export {
  hmacPassword,
  signDeviceCredential,
  signSignature,
  signToken,
  type AuthMode,
  type MqttCredentials,
  type TokenGrant,
} from './signer/mqtt.js';
export {
  CONNECT_DEFAULTS,
  DeviceConnection,
  TOKEN_DEFAULTS,
  brokerUrlFor,
  connectDevice,
  enqueueDurable,
  staticSource,
  type ConnectDeviceOptions,
  type ConnectGate,
  type ConnectionMode,
  type ConnectionOutboxStats,
  type ConnectionState,
  type DeviceConnectionEvents,
  type DurableOutboxStats,
  type EnqueueOptions,
  type OutboxDropReason,
  type OutboxReport,
  type PublishAccepted,
  type PublishOptions,
  type PublishProperties,
  type Publishing,
  type SubscribeOptions,
  type TakeoverOptions,
  type TokenConnectOptions,
  type TokenOptions,
  type TokenRequest,
  type TokenSource,
  type Transport,
} from './connector/connect.js';
export type { BackoffOptions } from './util/backoff.js';
export type { Logger } from './util/logger.js';
export { VERSION } from './version.js';
