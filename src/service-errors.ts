/**
 * The service's side of the error catalog: the error codes the OpenAPI (its gateway and the onsmqtt product)
 * documents, each with its HTTP status, retry class and remedy, and the one classification of any API code, also of
 * those it does not document. errors.ts re-exports every name here; import from there.
 */

/**
 * How a failure is treated by retry policies. The classes, not the codes, decide.
 *
 * - `throttled`: the service shed the request before doing anything; slow down and send it again.
 * - `transient`: the service answered with a fault of its own and did not apply the request; send it again.
 * - `not-sent`: the request never left this machine (nothing listened, no DNS answer); send it again.
 * - `unknown-outcome`: the request may have reached the service and been applied, but no usable answer came back
 *   (timeout, reset, a proxy's non-JSON page, a replayed nonce, an uncatalogued 5xx from an intermediary).
 *   Safe to repeat only for actions that read; for the others the error says `retryable: false`.
 * - `fatal`: retrying cannot help (signature, permission, parameter, not-found, quota, abort, bad input).
 */
export type RetryClass = 'throttled' | 'transient' | 'not-sent' | 'unknown-outcome' | 'fatal';

/** What we know about one error code. */
export interface ErrorInfo {
  /** HTTP status the service uses for it (the emulator's default). Absent for local errors. */
  readonly httpStatus?: number;
  /** Can the same call succeed later without the caller changing anything? */
  readonly retryable: boolean;
  /** How retry policies treat it (API and network failures only). */
  readonly retryClass?: RetryClass;
  /** One line: what to do about it. */
  readonly remedy: string;
  /** The service's message (verbatim from the reference), used by the emulator. */
  readonly message?: string;
}

const GW = 'gateway';
type Origin = typeof GW | 'product';

interface ApiErrorSpec {
  readonly origin: Origin;
  readonly httpStatus: number;
  readonly retryClass: RetryClass;
  readonly message: string;
  readonly remedy: string;
}

/** What the catalog holds for one API error code. `retryable` is derived from `retryClass`. */
export interface ApiErrorInfo extends ApiErrorSpec, ErrorInfo {
  readonly retryClass: RetryClass;
  readonly httpStatus: number;
  readonly message: string;
}

/** Error codes the OpenAPI (gateway and onsmqtt product) documents, with HTTP status, retry class and remedy. */
const API_ERRORS = {
  // ---- product errors shared by the device-credential operations (reference §1.1)
  ApplyTokenOverFlow: {
    origin: 'product', httpStatus: 400, retryClass: 'throttled',
    message: 'You have applied for tokens too many times. Please try again later.',
    remedy: 'The service is shedding load; retry later with backoff.',
  },
  CheckAccountInfoFailed: {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while checking the account information by the STS token.',
    remedy: 'Check the STS security token (ALIBABA_CLOUD_SECURITY_TOKEN): it may be expired or for another account.',
  },
  InstancePermissionCheckFailed: {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the permissions of the instance. Please verify the account that created the instance and its permissions settings.',
    remedy: 'Check that the instance id is right and belongs to the account whose AccessKey you use.',
  },
  ParameterCheckFailed: {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameters. The parameters may be missing or invalid.',
    remedy: 'Check the ClientId, InstanceId and GroupId values sent.',
  },
  PermissionCheckFailed: {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the resource permissions. Please check the account that created the instance, topic, and GroupId, and check their permission settings.',
    remedy: 'Check that the GroupId and the parent topic were created on the instance (in the console), then grant the RAM user the mq:* actions for it, or use the account that owns it.',
  },
  'InvalidParameter.ClientId': {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameter. The parameter may be missing or invalid.',
    remedy: 'Send a ClientId of the form <GroupId>@@@<DeviceId>, at most 64 characters.',
  },
  'InvalidParameter.InstanceId': {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameter. The parameter may be missing or invalid.',
    remedy: 'Send the instance id shown in the ApsaraMQ for MQTT console.',
  },
  'InvalidParameter.GroupId': {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameter. The parameter may be missing or invalid.',
    remedy: 'Send a GroupId that starts with GID_ or GID-.',
  },
  'InvalidParameter.PageSize': {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameter. The parameter may be missing or invalid.',
    remedy: 'Send a PageSize from 1 to 100.',
  },
  'InvalidParameter.PageNo': {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameter. The parameter may be missing or invalid.',
    remedy: 'Send a PageNo of 1 or more.',
  },
  'InvalidParameter.NextToken': {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameter. The parameter may be missing or invalid.',
    remedy: 'Send the NextToken from the previous page unchanged, or none.',
  },
  'InvalidParameter.Resources': {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameter. The parameter may be missing or invalid.',
    remedy: 'Send 1 to 100 topics (parent topic first, + and # as whole levels) separated by commas, in dictionary order, without duplicates.',
  },
  'InvalidParameter.ExpireTime': {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameter. The parameter may be missing or invalid.',
    remedy: 'Send ExpireTime as ms since the epoch, at least 60 s from now (later than 30 days is cut to 30 days).',
  },
  'InvalidParameter.Actions': {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameter. The parameter may be missing or invalid.',
    remedy: 'Send Actions as R, W or R,W.',
  },
  'InvalidParameter.Token': {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameter. The parameter may be missing or invalid.',
    remedy: 'Send the token exactly as ApplyToken returned it (it contains +, / and =, which must be percent-encoded).',
  },
  'InvalidParameter.ClientIdList': {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameter. The parameter may be missing or invalid.',
    remedy: 'Send 1 to 10 ClientIds as ClientIdList.1, ClientIdList.2, … (no gaps), each of the form <GroupId>@@@<DeviceId>.',
  },
  ApiNotSupport: {
    origin: 'product', httpStatus: 404, retryClass: 'fatal',
    message: 'The specified API is not supported.',
    remedy: 'Check the Action name and the API version (2020-04-20).',
  },
  InternalError: {
    origin: 'product', httpStatus: 417, retryClass: 'transient',
    message: 'An error occurred while processing your request. Try again later.',
    remedy: 'A transient service fault; retry with backoff.',
  },
  SystemOverFlow: {
    origin: 'product', httpStatus: 403, retryClass: 'throttled',
    message: 'An error occurred while processing your request. Please try again.',
    remedy: 'The service is throttling; retry with backoff and lower the request rate.',
  },
  MqttInstanceNotFound: {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'Specified instance is not found.',
    remedy: 'Check the instance id and the region of the endpoint.',
  },
  MqttOwnerCheckError: {
    origin: 'product', httpStatus: 403, retryClass: 'fatal',
    message: 'Failed to validate the instance permission.',
    remedy: 'Use the AccessKey of the account that owns the instance.',
  },
  ParameterFieldCheckFailed: {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'An error occurred while validating the parameters.',
    remedy: 'Check the parameter values sent.',
  },
  // ---- operation-specific product errors
  DeviceCredentialNotFound: {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'Device Credential Not Found. Check if the device certificate is registered.',
    remedy: 'Register the ClientId first (a provisioner\'s register, or RegisterDeviceCredential), or check the ClientId and instance id.',
  },
  DeviceCredentialNumExceed: {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'The number of device credentia exceeds the limit. Please revoke unused device certificates',
    remedy: 'Unregister credentials that are no longer used, or raise the instance quota.',
  },
  DeviceCredentialExsit: {
    origin: 'product', httpStatus: 400, retryClass: 'fatal',
    message: 'Device Credential Exsit',
    remedy: 'The ClientId already has a credential; fetch it with GetDeviceCredential instead of registering again.',
  },
  QueryTokenOverFlow: {
    origin: 'product', httpStatus: 400, retryClass: 'throttled',
    message: 'You have queried tokens too many times. Please try again later.',
    remedy: 'QueryToken is limited to 100 calls a second per account; retry later with backoff.',
  },
  RevokeTokenOverFlow: {
    origin: 'product', httpStatus: 400, retryClass: 'throttled',
    message: 'You have revoked tokens too many times. Please try again later.',
    remedy: 'RevokeToken is limited to 5 calls a second per account; retry later with backoff.',
  },
  // ---- gateway (POP) errors (reference §3.6)
  SignatureDoesNotMatch: {
    origin: GW, httpStatus: 400, retryClass: 'fatal',
    message: 'Specified signature is not matched with our calculation.',
    remedy: 'Check ALIBABA_CLOUD_ACCESS_KEY_SECRET: it does not match the AccessKeyId.',
  },
  SignatureNonceUsed: {
    origin: GW, httpStatus: 400, retryClass: 'unknown-outcome',
    message: 'Specified signature nonce was used already.',
    remedy: 'Each request needs a fresh SignatureNonce; a retry gets one.',
  },
  'InvalidTimeStamp.Expired': {
    origin: GW, httpStatus: 400, retryClass: 'fatal',
    message: 'Specified time stamp or date value is expired.',
    remedy: 'The local clock is more than 15 minutes off; synchronise it (NTP).',
  },
  'InvalidTimeStamp.Format': {
    origin: GW, httpStatus: 400, retryClass: 'fatal',
    message: 'Specified time stamp or date value is not well formatted.',
    remedy: 'Send Timestamp as YYYY-MM-DDThh:mm:ssZ in UTC.',
  },
  'InvalidAccessKeyId.NotFound': {
    origin: GW, httpStatus: 404, retryClass: 'fatal',
    message: 'Specified access key is not found.',
    remedy: 'Check ALIBABA_CLOUD_ACCESS_KEY_ID: no such AccessKey exists.',
  },
  'InvalidAccessKeyId.Inactive': {
    origin: GW, httpStatus: 400, retryClass: 'fatal',
    message: 'Specified access key is disabled.',
    remedy: 'Enable the AccessKey in the RAM console, or use another.',
  },
  MissingParameter: {
    origin: GW, httpStatus: 400, retryClass: 'fatal',
    message: 'The input parameter that is mandatory for processing this request is not supplied.',
    remedy: 'A required parameter is missing from the request.',
  },
  'InvalidAction.NotFound': {
    origin: GW, httpStatus: 404, retryClass: 'fatal',
    message: 'Specified api is not found, please check your url and method.',
    remedy: 'Check the Action name and the endpoint.',
  },
  InvalidVersion: {
    origin: GW, httpStatus: 400, retryClass: 'fatal',
    message: 'Specified parameter Version is not valid.',
    remedy: 'Use API version 2020-04-20.',
  },
  Throttling: {
    origin: GW, httpStatus: 400, retryClass: 'throttled',
    message: 'Request was denied due to request throttling.',
    remedy: 'Too many requests; retry with backoff and lower the request rate.',
  },
  'Throttling.User': {
    origin: GW, httpStatus: 400, retryClass: 'throttled',
    message: 'Request was denied due to user flow control.',
    remedy: 'The account exceeded its API rate (500/s by default); retry with backoff and lower the rate.',
  },
  'Throttling.Api': {
    origin: GW, httpStatus: 400, retryClass: 'throttled',
    message: 'Request was denied due to api flow control.',
    remedy: 'This API exceeded its rate; retry with backoff and lower the rate.',
  },
  ServiceUnavailable: {
    origin: GW, httpStatus: 503, retryClass: 'transient',
    message: 'The request has failed due to a temporary failure of the server.',
    remedy: 'A transient service fault; retry with backoff.',
  },
  IncompleteSignature: {
    origin: GW, httpStatus: 400, retryClass: 'fatal',
    message: 'The request signature does not conform to Aliyun standards.',
    remedy: 'The V3 signature is malformed: check the Authorization header, that SignedHeaders lists host and every x-acs-* header, and x-acs-content-sha256.',
  },
} as const satisfies Record<string, ApiErrorSpec>;

/** A code of {@link API_ERROR_CATALOG}. */
export type KnownApiErrorCode = keyof typeof API_ERRORS;

/** The catalog entry of a documented API error code, or `undefined`. */
export function apiErrorEntry(code: string): ApiErrorInfo | undefined {
  return Object.hasOwn(API_ERRORS, code) ? API_ERROR_CATALOG[code as KnownApiErrorCode] : undefined;
}

/** A retry class means a retryable error unless it is `fatal` (`unknown-outcome` depends on the action, see ApiError). */
export function retryableOf(retryClass: RetryClass): boolean {
  return retryClass !== 'fatal';
}

/** Error codes the OpenAPI (gateway and onsmqtt product) documents, with HTTP status, retry class and remedy. */
export const API_ERROR_CATALOG: Readonly<Record<KnownApiErrorCode, ApiErrorInfo>> = Object.freeze(
  Object.fromEntries(
    Object.entries(API_ERRORS).map(([code, spec]) => [code, Object.freeze({ ...spec, retryable: retryableOf(spec.retryClass) })]),
  ) as Record<KnownApiErrorCode, ApiErrorInfo>,
);

/** An API error code of the `InvalidParameter.<Name>` family, of which the catalog lists the common ones. */
export type InvalidParameterCode = `InvalidParameter.${string}`;

/** Is this API error code one of throttling (the service shedding load)? `Throttling`, `Throttling.*`, `*OverFlow`. */
export function isThrottlingCode(code: string): boolean {
  return code === 'Throttling' || code.startsWith('Throttling.') || code.endsWith('OverFlow');
}

/**
 * The one classification of API error codes: the catalog's entry for a documented code; for any other code its
 * family (`Throttling*` and `*OverFlow` are throttling; `InvalidParameter.*` is bad input; a code the service does
 * not document answered with HTTP ≥ 500 comes from something in between, which may have forwarded the request:
 * unknown outcome); anything else is fatal.
 */
export function apiErrorInfo(code: string, httpStatus?: number): { retryClass: RetryClass; retryable: boolean; remedy: string } {
  const known = apiErrorEntry(code);
  if (known) return { retryClass: known.retryClass, retryable: known.retryable, remedy: known.remedy };
  const of = (retryClass: RetryClass, remedy: string) => ({ retryClass, retryable: retryableOf(retryClass), remedy });
  if (isThrottlingCode(code)) return of('throttled', 'The service is throttling; retry with backoff and lower the request rate.');
  if (code.startsWith('InvalidParameter.')) return of('fatal', `Check the value of parameter ${code.slice('InvalidParameter.'.length)}.`);
  if (httpStatus !== undefined && httpStatus >= 500) {
    return of('unknown-outcome', 'Something between you and the service failed (HTTP 5xx with a code the service does not document); the request may have been applied: check before repeating a change, retry reads with backoff.');
  }
  return of('fatal', 'An error code this library does not know; see the message and the Alibaba Cloud error center.');
}
