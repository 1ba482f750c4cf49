/**
 * The registrar role's folder, all of it: what `apsaramq-device/provisioner` (src/registrar.ts) exports, except
 * `registerAndConnect`, which also needs the connector. Nothing here imports from `connector/`.
 */
export { AccountCredentials } from '../credential.js';
export {
  API_VERSION,
  DEFAULT_PAGE_SIZE,
  DEFAULT_TIMEOUT_MS,
  OpenApiClient,
  MAX_BATCH_SESSION_QUERY,
  MAX_TOKEN_RESOURCES,
  type ApiCallStats,
  type ApplyTokenRequest,
  type SessionStatus,
  type ApiParams,
  type ApiResponse,
  type CallOptions,
  type ClientIdPage,
  type CredentialResponse,
  type ListClientIdsOptions,
  type OpenApiClientOptions,
  type OpenApiSignature,
} from './api-client.js';
export {
  ENV_ACCESS_KEY_ID,
  ENV_ACCESS_KEY_SECRET,
  ENV_SECURITY_TOKEN,
  ENV_STORE_DIR,
  defaultStoreDir,
  type AccountKeyOptions,
} from './env.js';
export { FileCredentialStore, MAX_CREDENTIAL_FILE_BYTES, type FileCredentialStoreOptions } from './file-store.js';
export { MemoryCredentialStore } from './memory-store.js';
export type { CredentialLock, CredentialStore } from './store.js';
export { DEFAULT_LOCK_STALE_MS } from './lock.js';
export {
  DEFAULT_MAX_SERVICE_LATENCY_MS,
  Provisioner,
  type CredentialOrigin,
  type ObtainedCredential,
  type ObtainOptions,
  type ProvisionerOptions,
  type ProvisionStrategy,
  type TokenSourceGrant,
  type TokenSourceOptions,
  type WaitForSessionOptions,
} from './provisioner.js';
export { IssuedToken, type TokenType } from './token.js';
export { provisionFleet, type FleetFailure, type FleetOptions, type FleetProgress, type FleetResult } from './fleet.js';
export { RegistrationJournal, type PendingRegister } from './journal.js';
export { DEFAULT_API_CONCURRENCY, DEFAULT_API_QPS, RateLimiter, type LimiterOptions, type RateLimitOptions } from './rate-limit.js';
export { DEFAULT_RETRY_OPTIONS, IDEMPOTENT_ACTIONS, type RetryOptions } from './retry.js';
export { percentEncode, signRpc, stringToSign } from '../signer/openapi.js';
