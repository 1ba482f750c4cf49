/**
 * Every error a user of apsaramq-device can meet is an {@link ApsaraMqDeviceError}: it has a stable string
 * `code`, says whether retrying can help (`retryable`), carries a one-line `remedy`, and never carries a secret.
 *
 * Service errors keep the service's own code (`DeviceCredentialNotFound`, `Throttling.User`, …); errors that
 * happen on this side have codes of our own (`InvalidClientId`, `ConnectionRefused`, `StoreCorrupt`, …).
 * The full list, with remedies, is {@link API_ERROR_CATALOG} plus {@link LOCAL_ERROR_CATALOG}: one table, from
 * which `retryable`, the retry policy's classes and the README's errors table all derive.
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
    remedy: 'Grant the RAM user the mq:* action for this instance, or use the account that owns it.',
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
    remedy: 'Register the ClientId first (apsaramq-device register), or check the ClientId and instance id.',
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
function retryableOf(retryClass: RetryClass): boolean {
  return retryClass !== 'fatal';
}

/** Error codes the OpenAPI (gateway and onsmqtt product) documents, with HTTP status, retry class and remedy. */
export const API_ERROR_CATALOG: Readonly<Record<KnownApiErrorCode, ApiErrorInfo>> = Object.freeze(
  Object.fromEntries(
    Object.entries(API_ERRORS).map(([code, spec]) => [code, Object.freeze({ ...spec, retryable: retryableOf(spec.retryClass) })]),
  ) as Record<KnownApiErrorCode, ApiErrorInfo>,
);

type LocalSpec = { readonly retryable: boolean; readonly remedy: string; readonly retryClass?: RetryClass };

/** A failure of the transport to the OpenAPI: its retry class decides `retryable`. */
function network(retryClass: RetryClass, remedy: string): { readonly retryable: boolean; readonly remedy: string; readonly retryClass: RetryClass } {
  return { retryable: retryableOf(retryClass), retryClass, remedy };
}

/** Codes of errors that happen on this side (validation, network, store, MQTT). */
export const LOCAL_ERROR_CATALOG = Object.freeze({
  InvalidClientId: { retryable: false, remedy: 'Use a ClientId of the form GID_<group>@@@<device>: letters, digits, - and _ only, at most 64 characters.' },
  InvalidInstanceId: { retryable: false, remedy: 'Pass the instance id from the ApsaraMQ for MQTT console (for example mqtt-cn-xxxxxxxx).' },
  InvalidGroupId: { retryable: false, remedy: 'Use a GroupId that starts with GID_ or GID- and has only letters, digits, - and _.' },
  InvalidOption: { retryable: false, remedy: 'Fix the option named in the message.' },
  MissingOption: { retryable: false, remedy: 'Pass the option named in the message (--help lists them with examples).' },
  ConflictingOptions: { retryable: false, remedy: 'Pass only one of the options named in the message.' },
  UnknownCommand: { retryable: false, remedy: 'Run apsaramq-device --help for the list of commands.' },
  InvalidTopic: { retryable: false, remedy: 'Publish to a topic without + or #, not empty, at most 64 characters, of the form <parent topic>/<subtopic>…; subscribe to a valid filter.' },
  PayloadTooLarge: { retryable: false, remedy: 'The service accepts message bodies up to 64 KB: send less per message, or split it.' },
  UnsupportedByService: { retryable: false, remedy: 'ApsaraMQ for MQTT does not support this (retained messages, wills, shared subscriptions); leave it out, or pass brokerIsApsaraMq: false for another broker.' },
  MissingAccessKey: { retryable: false, remedy: 'Set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or pass accessKeyId and accessKeySecret.' },
  MissingDependency: { retryable: false, remedy: 'Install the optional package named in the message next to apsaramq-device (npm install <package>).' },
  InvalidCredential: { retryable: false, remedy: 'The credential must hold ClientId, InstanceId, DeviceAccessKeyId and DeviceAccessKeySecret (as printed by apsaramq-device register).' },
  InvalidToken: { retryable: false, remedy: 'Tokens are an array of { type: \'R\' | \'W\' | \'RW\', token, expireTime? } (an IssuedToken from applyToken fits), at most one per type, no "|" in a token; a token source must resolve to such an array.' },
  InvalidResponse: network('unknown-outcome', 'The endpoint did not answer like the ApsaraMQ OpenAPI; check --endpoint (a proxy or load balancer may be in the way) and retry.'),
  ConnectionRefused: network('not-sent', 'Nothing listens at that address; check the endpoint or broker URL and that the service is up.'),
  HostNotFound: network('not-sent', 'The host name does not resolve; check the endpoint, the region and DNS.'),
  RequestTimeout: network('unknown-outcome', 'The service did not answer in time; retry, or raise the timeout.'),
  NetworkError: network('unknown-outcome', 'The connection failed or was reset; check the network and retry.'),
  StoreCorrupt: { retryable: false, remedy: 'The stored credential file is not valid: inspect it; apsaramq-device get --client-id <id> --store <dir> fetches the credential the service holds and puts it in place, keeping the bad file aside.' },
  CredentialInStore: { retryable: false, remedy: 'Use the stored credential (connect, sign --credential-file), or pass --rotate to register a new one: the device holding the old key is refused from then on.' },
  StoreIOError: { retryable: false, remedy: 'The credential store could not be read or written; check the path, its permissions and free space.' },
  StoreInsecure: { retryable: false, remedy: 'The credential store is readable by other users; chmod 700 the directory and 600 its files.' },
  StoreLockLost: { retryable: true, remedy: 'Another registrar took over the lock of this ClientId because this process stalled past the lock\'s stale time; run again: the credential is confirmed with GetDeviceCredential before anything is registered.' },
  ConnackRefused: { retryable: false, remedy: 'The broker refused the CONNECT; the message gives the CONNACK return code.' },
  CredentialRejected: { retryable: false, remedy: 'The broker rejects this device credential even after fetching it again; check it was not unregistered, and that ClientId and instance match it.' },
  TokenRejected: { retryable: false, remedy: 'The broker refuses the tokens even after asking the token source again: check that they are neither expired nor revoked (apsaramq-device token query), that they were applied for this instance, that token.accessKeyId is the account that applied for them, and that the source hands out fresh ones.' },
  IdentifierRejected: { retryable: false, remedy: 'The broker rejected the ClientId; use GID_<group>@@@<device>, at most 64 characters.' },
  BrokerUnreachable: { retryable: true, remedy: 'The MQTT broker could not be reached; check the broker URL, port and network.' },
  ConnectTimeout: { retryable: true, remedy: 'No CONNACK arrived in time; check the broker URL and the network.' },
  TakeoverLoop: { retryable: false, remedy: 'Another client keeps connecting with the same ClientId; every device needs its own ClientId.' },
  SubscribeRejected: { retryable: false, remedy: 'Check the topic: its parent topic must exist on the instance, and a client may not subscribe to another client\'s p2p topic.' },
  PublishRejected: { retryable: false, remedy: 'Check that the parent topic exists and that the device may publish to it, and the message size (over MQTT 3.1.1 a broker refuses a message by closing the session; MQTT 5 gives a reason code).' },
  ConnectionClosed: { retryable: false, remedy: 'The connection was ended (end() or a permanent failure): open a new one with connectDevice.' },
  Aborted: { retryable: false, remedy: 'The operation was cancelled by its AbortSignal.' },
  AddressInUse: { retryable: false, remedy: 'Pick another port (--mqtt-port, --ws-port, --api-port, --tls-port, --wss-port), or 0 for any free port.' },
  TooManyOpenFiles: { retryable: false, remedy: 'Each simulated device holds one socket: raise the open-file limit (ulimit -n 65536) or simulate fewer devices per process (--shard).' },
  SimulationFailed: { retryable: true, remedy: 'Some devices could not be provisioned or connected; the report counts them by error code under "errors".' },
  ReportMismatch: { retryable: false, remedy: 'Merge only the reports of one run: every shard started with the same flags (and --start-at), each shard once.' },
  InvalidReport: { retryable: false, remedy: 'Pass report files written by simulate --report (or report merge --output) of this version.' },
  AddressSpaceTooSmall: { retryable: false, remedy: 'Spread the devices over more source addresses (--local-address 127.0.0.2-127.0.0.9 on loopback) or over more machines (--shard).' },
  EmulatorFailed: { retryable: false, remedy: 'The embedded emulator process could not start or died; start `apsaramq-device emulator` yourself and pass its endpoints.' },
  ShardFailed: { retryable: true, remedy: 'A shard process of simulate --processes ended without its report (it crashed, was killed, or could not start); the others were stopped. Its stderr is quoted; run that shard alone (--shard I/N) to see more.' },
  ConnectionLost: { retryable: true, remedy: 'The broker closed the connection during the run; the device reconnects with backoff.' },
  IncompleteAccessKey: { retryable: false, remedy: 'Set both ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or neither (the emulator then generates a key pair and prints it).' },
  EmulatorStateCorrupt: { retryable: false, remedy: 'The emulator\'s data file is not valid: repair it or move it away (it holds device secrets), or start with another --data-dir or --ephemeral.' },
  EmulatorStateInsecure: { retryable: false, remedy: 'The emulator\'s data directory or file is readable by other users: chmod 700 the directory and 600 its files.' },
  EmulatorStateBusy: { retryable: false, remedy: 'Another emulator process uses this data directory: stop it, or start this one with another --data-dir or --ephemeral.' },
  EmulatorStateIOError: { retryable: false, remedy: 'The emulator\'s data directory could not be read or written: check the path, its permissions and free space.' },
  ProtocolError: { retryable: false, remedy: 'The peer does not speak MQTT; check --broker-url (is it the OpenAPI\'s HTTP port?).' },
  WaitTimeout: { retryable: false, remedy: 'What the test waited for did not happen in time: check the code under test (pass timeoutMs to wait longer on a slow machine).' },
  UnexpectedConnack: { retryable: false, remedy: 'The broker answered the CONNECT differently from what the test expected: check the login and the emulator options.' },
  UnknownError: { retryable: false, remedy: 'Unexpected error; run with --verbose and report it.' },
  DependencyMismatch: { retryable: false, remedy: 'Install the exact version of the package the message names next to apsaramq-device (npm install <package>@<version>).' },
} satisfies Record<string, LocalSpec>);

/** A code of {@link LOCAL_ERROR_CATALOG}. */
export type LocalErrorCode = keyof typeof LOCAL_ERROR_CATALOG;

/** An API error code of the `InvalidParameter.<Name>` family, of which the catalog lists the common ones. */
export type InvalidParameterCode = `InvalidParameter.${string}`;

/** Every code this library knows: the ones {@link isApsaraMqDeviceError} accepts. */
export type ErrorCode = KnownApiErrorCode | InvalidParameterCode | LocalErrorCode;

/**
 * The code of an {@link ApiError}: a documented one, or one the service sent that this library does not know yet
 * (it is kept as the service spelled it).
 */
export type ApiErrorCode = KnownApiErrorCode | InvalidParameterCode | (string & { readonly __uncatalogued?: never });

/** Is this a code this library knows (either catalog, or an `InvalidParameter.<Name>`)? */
export function isErrorCode(code: unknown): code is ErrorCode {
  return (
    typeof code === 'string' &&
    (Object.hasOwn(API_ERROR_CATALOG, code) || Object.hasOwn(LOCAL_ERROR_CATALOG, code) || /^InvalidParameter\.[A-Za-z0-9]+$/.test(code))
  );
}

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

/** Base class of every error this library throws. */
export class ApsaraMqDeviceError extends Error {
  /** Stable, machine-readable code: the service's own code for API errors, ours otherwise. */
  readonly code: ErrorCode | ApiErrorCode;
  /** True when the same call may succeed later unchanged (throttling, transient faults, network). */
  readonly retryable: boolean;
  /** One line saying what to do. */
  readonly remedy: string;

  constructor(code: ErrorCode | ApiErrorCode, message: string, options: { retryable: boolean; remedy: string; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ApsaraMqDeviceError';
    this.code = code;
    this.retryable = options.retryable;
    this.remedy = options.remedy;
  }

  /** A plain object for logs and `--json` output: never contains a secret. */
  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, retryable: this.retryable, remedy: this.remedy };
  }
}

function localInfo(code: LocalErrorCode): { retryable: boolean; remedy: string } {
  const { retryable, remedy } = LOCAL_ERROR_CATALOG[code];
  return { retryable, remedy };
}

/** Codes of {@link ValidationError}. */
export type ValidationErrorCode =
  | 'InvalidClientId'
  | 'InvalidInstanceId'
  | 'InvalidGroupId'
  | 'InvalidOption'
  | 'InvalidCredential'
  | 'InvalidToken'
  | 'InvalidTopic'
  | 'PayloadTooLarge'
  | 'UnsupportedByService'
  | 'IncompleteAccessKey';

/**
 * Bad input: a ClientId, instance id, option, credential, topic or message that can never work. Thrown before any
 * I/O, so nothing was sent.
 */
export class ValidationError extends ApsaraMqDeviceError {
  declare readonly code: ValidationErrorCode;
  constructor(code: ValidationErrorCode, message: string) {
    super(code, message, localInfo(code));
    this.name = 'ValidationError';
  }
}

/** Missing or unusable configuration: account AccessKeys, or an optional package a role entry needs. */
export class ConfigurationError extends ApsaraMqDeviceError {
  declare readonly code: 'MissingAccessKey' | 'MissingDependency' | 'DependencyMismatch';
  /** @param remedy - replaces the catalog's, when the message knows better (the exact package to install). */
  constructor(code: 'MissingAccessKey' | 'MissingDependency' | 'DependencyMismatch', message: string, remedy?: string) {
    super(code, message, { ...localInfo(code), ...(remedy === undefined ? {} : { remedy }) });
    this.name = 'ConfigurationError';
  }
}

/** The operation was cancelled by its AbortSignal (code `Aborted`); the signal's reason is the `cause`. */
export class AbortedError extends ApsaraMqDeviceError {
  declare readonly code: 'Aborted';
  constructor(message: string, cause?: unknown) {
    super('Aborted', message, { ...localInfo('Aborted'), cause });
    this.name = 'AbortedError';
  }
}

/** The OpenAPI answered with an error code. `code` is the service's own code. */
export class ApiError extends ApsaraMqDeviceError {
  declare readonly code: ApiErrorCode;
  /** HTTP status of the answer. */
  readonly httpStatus: number;
  /** The service's RequestId, for support tickets. */
  readonly requestId: string | undefined;
  /** The API action that failed. */
  readonly action: string;
  /** The service's own message. */
  readonly serviceMessage: string;
  /** How retry policies treat it (from the one classification, {@link apiErrorInfo}). */
  readonly retryClass: RetryClass;

  /** `retryable` and `remedy` default to the code's classification; a caller that knows more (the action) may override them. */
  constructor(init: { code: ApiErrorCode; action: string; httpStatus: number; requestId?: string | undefined; serviceMessage: string; retryable?: boolean; remedy?: string }) {
    const classified = apiErrorInfo(init.code, init.httpStatus);
    const info = { retryable: init.retryable ?? classified.retryable, remedy: init.remedy ?? classified.remedy };
    const rid = init.requestId ? ` (RequestId ${init.requestId})` : '';
    super(init.code, `${init.action} failed: ${init.serviceMessage}${rid}. ${info.remedy}`, info);
    this.name = 'ApiError';
    this.httpStatus = init.httpStatus;
    this.requestId = init.requestId;
    this.action = init.action;
    this.serviceMessage = init.serviceMessage;
    this.retryClass = classified.retryClass;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), httpStatus: this.httpStatus, requestId: this.requestId, action: this.action };
  }
}

/** Codes of {@link NetworkError}. */
export type NetworkErrorCode = 'ConnectionRefused' | 'HostNotFound' | 'RequestTimeout' | 'NetworkError' | 'InvalidResponse';

/** The request never got a usable answer: refused, reset, timed out, not resolvable, or not the OpenAPI. */
export class NetworkError extends ApsaraMqDeviceError {
  declare readonly code: NetworkErrorCode;
  /** The endpoint that was called (no credentials in it). */
  readonly endpoint: string;
  /** HTTP status of the answer when one arrived (an HTML 502 page, a body cut short); undefined when none did. */
  readonly httpStatus: number | undefined;
  /** How retry policies treat it: `not-sent` or `unknown-outcome`. */
  readonly retryClass: RetryClass;
  /**
   * @param init - `httpStatus` of an answer that arrived; `retryable` and `remedy` replace the catalog's, e.g. for a
   *   request whose outcome is unknown and that is not safe to send twice.
   */
  constructor(
    code: NetworkErrorCode,
    message: string,
    endpoint: string,
    cause?: unknown,
    init: { httpStatus?: number | undefined; retryable?: boolean; remedy?: string } = {},
  ) {
    const info = LOCAL_ERROR_CATALOG[code];
    const remedy = init.remedy ?? info.remedy;
    super(code, `${message}. ${remedy}`, { retryable: init.retryable ?? info.retryable, remedy, cause });
    this.name = 'NetworkError';
    this.endpoint = endpoint;
    this.httpStatus = init.httpStatus;
    this.retryClass = info.retryClass;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), endpoint: this.endpoint, httpStatus: this.httpStatus };
  }
}

/** Codes of {@link StoreError}. */
export type StoreErrorCode = 'StoreCorrupt' | 'StoreIOError' | 'StoreInsecure' | 'StoreLockLost';

/** The credential store failed: unreadable, corrupt, or insecure. Nothing was overwritten. */
export class StoreError extends ApsaraMqDeviceError {
  declare readonly code: StoreErrorCode;
  /** The file or directory involved. */
  readonly path: string | undefined;
  constructor(code: StoreErrorCode, message: string, path?: string, cause?: unknown) {
    super(code, `${message}. ${LOCAL_ERROR_CATALOG[code].remedy}`, { ...localInfo(code), cause });
    this.name = 'StoreError';
    this.path = path;
  }
}

/** Codes of {@link EmulatorStateError}. */
export type EmulatorStateErrorCode = 'EmulatorStateCorrupt' | 'EmulatorStateInsecure' | 'EmulatorStateBusy' | 'EmulatorStateIOError';

/** The emulator's data directory (`dataDir`) cannot be used: corrupt, insecure, in use by another process, or unreadable. */
export class EmulatorStateError extends ApsaraMqDeviceError {
  declare readonly code: EmulatorStateErrorCode;
  /** The file or directory involved. */
  readonly path: string;
  constructor(code: EmulatorStateErrorCode, message: string, path: string, cause?: unknown) {
    super(code, `${message}. ${LOCAL_ERROR_CATALOG[code].remedy}`, { ...localInfo(code), cause });
    this.name = 'EmulatorStateError';
    this.path = path;
  }
}

/** CONNACK return codes of MQTT 3.1.1. */
export const CONNACK_CODES: Readonly<Record<number, string>> = Object.freeze({
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
});

/** Codes of {@link ConnectError}. */
export type ConnectErrorCode = 'ConnackRefused' | 'CredentialRejected' | 'TokenRejected' | 'IdentifierRejected' | 'BrokerUnreachable' | 'ConnectTimeout' | 'TakeoverLoop' | 'ProtocolError';

/** The MQTT broker could not be reached, refused the CONNECT, or the session could not be kept. */
export class ConnectError extends ApsaraMqDeviceError {
  declare readonly code: ConnectErrorCode;
  /** CONNACK return code (3.1.1) or reason code (5) when the broker answered with a refusal. */
  readonly connackCode: number | undefined;
  /** The ClientId that tried to connect. */
  readonly clientId: string;
  constructor(code: ConnectErrorCode, message: string, init: { clientId: string; connackCode?: number; cause?: unknown; retryable?: boolean; remedy?: string }) {
    const info = localInfo(code);
    const remedy = init.remedy ?? info.remedy;
    super(code, `${message}. ${remedy}`, { retryable: init.retryable ?? info.retryable, remedy, cause: init.cause });
    this.name = 'ConnectError';
    this.connackCode = init.connackCode;
    this.clientId = init.clientId;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), clientId: this.clientId, connackCode: this.connackCode };
  }
}

/** The broker refused a subscription (SUBACK 0x80, or a v5 reason code of 0x80 or more). */
export class SubscribeError extends ApsaraMqDeviceError {
  declare readonly code: 'SubscribeRejected';
  /** The refused topic filters. */
  readonly topics: readonly string[];
  constructor(message: string, topics: readonly string[], init: { reasonCode?: number } = {}) {
    super('SubscribeRejected', `${message}. ${LOCAL_ERROR_CATALOG.SubscribeRejected.remedy}`, localInfo('SubscribeRejected'));
    this.name = 'SubscribeError';
    this.topics = Object.freeze([...topics]);
    this.reasonCode = init.reasonCode;
  }

  /** The broker's reason code (128 for MQTT 3.1.1's failure). */
  readonly reasonCode: number | undefined;
}

/** The broker would not take a message: it closed the session each time the message was sent, or refused it (v5). */
export class PublishError extends ApsaraMqDeviceError {
  declare readonly code: 'PublishRejected';
  /** The topic of the message. */
  readonly topic: string;
  /** The v5 reason code when the broker gave one. */
  readonly reasonCode: number | undefined;
  constructor(message: string, topic: string, init: { reasonCode?: number; cause?: unknown } = {}) {
    super('PublishRejected', `${message}. ${LOCAL_ERROR_CATALOG.PublishRejected.remedy}`, { ...localInfo('PublishRejected'), cause: init.cause });
    this.name = 'PublishError';
    this.topic = topic;
    this.reasonCode = init.reasonCode;
  }
}

/**
 * The connection is closed for good (ended with `end()`, or given up after a permanent failure): an operation on it,
 * or one still waiting when it closed, fails with this. `cause` is the failure that closed it, if any.
 */
export class ConnectionClosedError extends ApsaraMqDeviceError {
  declare readonly code: 'ConnectionClosed';
  constructor(message: string, cause?: unknown) {
    super('ConnectionClosed', `${message}. ${LOCAL_ERROR_CATALOG.ConnectionClosed.remedy}`, { ...localInfo('ConnectionClosed'), cause });
    this.name = 'ConnectionClosedError';
  }
}

/** Codes of {@link SystemError}. */
export type SystemErrorCode = 'AddressInUse' | 'UnknownError';

/** A local system failure: a port in use, or something unexpected (with the original as `cause`). */
export class SystemError extends ApsaraMqDeviceError {
  declare readonly code: SystemErrorCode;
  constructor(code: SystemErrorCode, message: string, cause?: unknown) {
    super(code, message, { ...localInfo(code), cause });
    this.name = 'SystemError';
  }
}

/**
 * Type guard: is this one of ours? Optionally of one code (typed, so a misspelled code does not compile).
 * @throws ValidationError `InvalidOption` when `code` is not a code this library knows (a misspelling at run time).
 */
export function isApsaraMqDeviceError<C extends ErrorCode>(error: unknown, code?: C): error is ApsaraMqDeviceError & { readonly code: C } {
  if (code !== undefined && !isErrorCode(code)) {
    throw new ValidationError('InvalidOption', `isApsaraMqDeviceError: ${JSON.stringify(code)} is not an error code of apsaramq-device (see LOCAL_ERROR_CATALOG and API_ERROR_CATALOG)`);
  }
  return error instanceof ApsaraMqDeviceError && (code === undefined || error.code === code);
}

/** Wrap anything thrown into an ApsaraMqDeviceError (used at the CLI edge and in event payloads). */
export function toApsaraMqDeviceError(error: unknown): ApsaraMqDeviceError {
  if (error instanceof ApsaraMqDeviceError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new SystemError('UnknownError', message, error);
}
