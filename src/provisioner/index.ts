/**
 * The registrar role: holds the account AccessKey, calls the OpenAPI, and keeps device credentials in a store.
 * Never ship this part (or the account key) to devices.
 */
export {
  API_VERSION,
  DEFAULT_PAGE_SIZE,
  DEFAULT_TIMEOUT_MS,
  OpenApiClient,
  regionEndpoint,
  resolveEndpoint,
  type ApiCallStats,
  type ApiParams,
  type ApiResponse,
  type CallOptions,
  type ClientIdPage,
  type CredentialResponse,
  type ListClientIdsOptions,
  type OpenApiClientOptions,
} from './api-client.js';
export {
  ENV_ACCESS_KEY_ID,
  ENV_ACCESS_KEY_SECRET,
  ENV_SECURITY_TOKEN,
  ENV_STORE_DIR,
  defaultStoreDir,
  resolveAccountCredentials,
  type AccountKeyOptions,
} from './env.js';
export { FileCredentialStore } from './file-store.js';
export { MemoryCredentialStore } from './memory-store.js';
export {
  Provisioner,
  createProvisioner,
  type CredentialOrigin,
  type ObtainedCredential,
  type ObtainOptions,
  type ProvisionerOptions,
  type ProvisionStrategy,
} from './provisioner.js';
export { provisionFleet, type FleetFailure, type FleetOptions, type FleetProgress, type FleetResult } from './fleet.js';
export { JOURNAL_DIR_NAME, RegistrationJournal } from './journal.js';
export { DEFAULT_API_CONCURRENCY, DEFAULT_API_QPS, type RateLimitOptions } from './rate-limit.js';
export {
  DEFAULT_RETRY_OPTIONS,
  IDEMPOTENT_ACTIONS,
  NO_RETRY,
  classifyFailure,
  isRetryableFailure,
  resolveRetryOptions,
  unknownOutcomeRemedy,
  type ResolvedRetryOptions,
  type RetryClass,
  type RetryOptions,
} from './retry.js';
export type { CredentialStore } from './store.js';
