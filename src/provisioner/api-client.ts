import { inspect } from 'node:util';
import { type AccountCredentials, assertClientId, assertGroupId, assertInstanceId, DeviceCredential, isRecord } from '../credential.js';
import { apiErrorEntry, ApiError, LOCAL_ERROR_CATALOG, isApsaraMqDeviceError, NetworkError, ValidationError } from '../errors.js';
import { percentEncode } from '../signer/openapi.js';
import { IssuedToken } from './token.js';
import { type ApplyTokenRequest, checkApplyToken, checkResources, tokenString } from './token-request.js';
import { abortError } from '../util/abort.js';
import { optionChecks } from '../util/option-checks.js';
import { hasLoneSurrogate } from '../util/unicode.js';
import { resolveEndpoint } from './endpoint.js';
import { type AccountKeyOptions, resolveAccountCredentials } from './env.js';
import { type LimiterOptions, type RateLimiter, resolveLimiter } from './rate-limit.js';
import {
  classifyFailure,
  IDEMPOTENT_ACTIONS,
  isRetryableFailure,
  type ResolvedRetryOptions,
  resolveRetryOptions,
  RetryRun,
  type RetryOptions,
  unknownOutcomeRemedy,
} from './retry.js';
import { PopCoreTransport } from './transport/pop-core.js';
import { V3Transport } from './transport/v3.js';
import { type OpenApiTransport, TransportError } from './transport/transport.js';

/** OpenAPI version of the ApsaraMQ for MQTT (`onsmqtt`) product. */
export const API_VERSION = '2020-04-20';
/** Default time allowed for connecting and for the answer, each, in ms. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Default (and largest) page size of ListDeviceCredentialClientId. */
export const DEFAULT_PAGE_SIZE = 100;

const check = optionChecks();

/** How to reach and authenticate to the OpenAPI, and how fast and how persistently to call it. */
export interface OpenApiClientOptions extends AccountKeyOptions, LimiterOptions {
  /**
   * Full http(s) URL of the OpenAPI, e.g. an emulator's `http://127.0.0.1:port`.
   * @default `https://onsmqtt.<region>.aliyuncs.com`
   */
  endpoint?: string;
  /** Region id such as `cn-hangzhou`; required when `endpoint` is not given. */
  region?: string;
  /** Where account keys are looked up when not passed. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Connect timeout and answer timeout, each, in ms. @default 10000 */
  timeoutMs?: number;
  /**
   * Retry policy for failed calls (failures are classified by the one table in errors.ts); `{}` for the defaults of
   * `DEFAULT_RETRY_OPTIONS`. @default false: no retries; errors say whether they are `retryable`.
   */
  retry?: RetryOptions | false;
  /**
   * How requests are signed and sent. `'pop-core'`: through `@alicloud/pop-core` (the HMAC-SHA1 signature method,
   * `SignatureVersion=1.0`, which Alibaba's SDK documentation calls V2 and marks as superseded). `'v3'`: the
   * `ACS3-HMAC-SHA256` signature of today's official SDKs, on Node's own HTTP client (pop-core is then not used).
   * Retries, rate limits and errors are the same with both. @default 'pop-core'
   */
  signature?: OpenApiSignature;
}

/** The request signatures an {@link OpenApiClient} can send. */
export type OpenApiSignature = 'pop-core' | 'v3';

/** Counters of one client (every attempt counted, retries included). */
export interface ApiCallStats {
  /** Requests sent. */
  apiCalls: number;
  /** Attempts that repeated a failed one. */
  retries: number;
  /** Answers that were throttling (`Throttling*`, `SystemOverFlow`, `ApplyTokenOverFlow`). */
  throttled: number;
}

/** Per-call options. */
export interface CallOptions {
  /** Cancels the call; it then rejects with code `Aborted`. */
  signal?: AbortSignal;
}

/** Business parameters of one call; `undefined` values are left out. */
export type ApiParams = Readonly<Record<string, string | number | undefined>>;

/** A successful answer: its RequestId and the whole parsed body (null-prototype objects, as json-bigint makes them). */
export interface ApiResponse {
  requestId: string;
  body: Record<string, unknown>;
  /** HTTP status of the answer (2xx), when the transport reported it. */
  httpStatus?: number;
}

/** Answer of Register/Get/RefreshDeviceCredential. */
export interface CredentialResponse {
  requestId: string;
  credential: DeviceCredential;
}

/** Paging of ListDeviceCredentialClientId. */
export interface ListClientIdsOptions extends CallOptions {
  /** Only ClientIds of this GroupId (the API requires one). */
  groupId: string;
  /** 1-based page number; not sent when absent. */
  pageNo?: number;
  /** 1 to 100. @default 100 */
  pageSize?: number;
  /** Token from the previous page. */
  nextToken?: string;
}

/** One page of ListDeviceCredentialClientId, numbers as numbers (the wire has strings). */
export interface ClientIdPage {
  requestId: string;
  /** ClientIds with a credential in the group, over all pages. */
  total: number;
  clientIds: string[];
  pageNo: number;
  pageSize: number;
  /** Absent on the last page. */
  nextToken?: string;
}

export { regionEndpoint, resolveEndpoint } from './endpoint.js';

/** Codes pop-core (and so the service's SDKs) take for success when an answer carries one. */
const SUCCESS_CODES: ReadonlySet<unknown> = new Set([200, '200', 'OK', 'Success', 'success']);

/**
 * Calls the ApsaraMQ for MQTT OpenAPI (RPC style, signature method V2) through pop-core, always by POST, and turns every
 * outcome into a checked answer or one of this library's typed errors.
 *
 * The account AccessKey stays in private fields: `util.inspect` and `JSON.stringify` show the endpoint and the
 * AccessKeyId only.
 */
export class OpenApiClient {
  /** The OpenAPI URL called (never contains credentials). */
  readonly endpoint: string;
  /** Connect and answer timeout, each, in ms. */
  readonly timeoutMs: number;
  /** How requests are signed and sent. */
  readonly signature: OpenApiSignature;
  readonly #account: AccountCredentials;
  readonly #transport: OpenApiTransport;
  readonly #calls = new Map<string, number>();
  readonly #retry: ResolvedRetryOptions;
  readonly #limiter: RateLimiter;
  #retries = 0;
  #throttled = 0;

  /**
   * @throws ValidationError `InvalidOption` for a bad endpoint, region, timeout, qps, concurrency, limiter or retry
   *   option (or `limiter` together with `qps`/`concurrency`).
   * @throws ConfigurationError `MissingAccessKey` when no account key is passed or set in the environment.
   */
  constructor(options: OpenApiClientOptions = {}) {
    this.endpoint = resolveEndpoint(options);
    const timeoutMs = check.positive('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 'milliseconds');
    this.timeoutMs = timeoutMs;
    this.#account = resolveAccountCredentials(options, options.env ?? process.env);
    // Sent (or signed with) on every request: refused now rather than on each call.
    for (const [name, value] of [['accessKeyId', this.#account.accessKeyId], ['accessKeySecret', this.#account.accessKeySecret], ['securityToken', this.#account.securityToken]] as const) {
      if (value !== undefined && hasLoneSurrogate(value)) throw new ValidationError('InvalidOption', `Option ${name} holds a lone surrogate (half of a UTF-16 pair), which has no UTF-8 form: it cannot be sent or signed`);
    }
    this.#retry = resolveRetryOptions(options.retry);
    this.#limiter = resolveLimiter(options, this.#account.accessKeyId);
    const signature = options.signature ?? 'pop-core';
    if (signature !== 'pop-core' && signature !== 'v3') {
      throw new ValidationError('InvalidOption', `Invalid signature ${JSON.stringify(signature)}: expected 'pop-core' or 'v3'`);
    }
    this.signature = signature;
    const transportOptions = { endpoint: this.endpoint, apiVersion: API_VERSION, account: this.#account, timeoutMs };
    this.#transport = signature === 'v3' ? new V3Transport(transportOptions) : new PopCoreTransport(transportOptions);
  }

  /** The account AccessKeyId (not secret). */
  get accessKeyId(): string {
    return this.#account.accessKeyId;
  }

  /** Requests sent so far (every attempt that reached the transport, whatever its outcome). */
  get apiCalls(): number {
    let total = 0;
    for (const n of this.#calls.values()) total += n;
    return total;
  }

  /** Requests sent so far, per action. */
  apiCallsByAction(): Record<string, number> {
    return Object.fromEntries(this.#calls);
  }

  /** Requests, retries and throttled answers so far. */
  stats(): ApiCallStats {
    return { apiCalls: this.apiCalls, retries: this.#retries, throttled: this.#throttled };
  }

  /** The rate limiter every request of this client passes. */
  get limiter(): RateLimiter {
    return this.#limiter;
  }

  /** The retry policy in force (`maxAttempts` 1 when retries are off). */
  get retryPolicy(): Readonly<ResolvedRetryOptions> {
    return this.#retry;
  }

  /**
   * Send one OpenAPI action and check the answer's envelope. Every request of this client goes through here: each
   * attempt waits for the client's {@link RateLimiter} (see `OpenApiClientOptions.limiter`), and
   * failed attempts are retried per the client's `retry` policy: throttling, service faults and requests that never
   * left are repeated for every action; an unknown outcome (timeout, reset, a proxy's page, a replayed nonce, an
   * uncatalogued 5xx) only for actions in `IDEMPOTENT_ACTIONS`. pop-core signs each attempt with a fresh
   * SignatureNonce.
   *
   * An unknown-outcome error of an action that is not idempotent (Register, Refresh, UnRegister) is thrown with
   * `retryable: false` and a remedy saying to check with GetDeviceCredential first (see `unknownOutcomeRemedy`).
   *
   * @throws ApiError when the service answers with an error `Code`.
   * @throws NetworkError `InvalidResponse` (not JSON, not an object, no RequestId, or HTTP ≥ 300 without `Code`;
   *   `httpStatus` set), `ConnectionRefused`, `HostNotFound`, `RequestTimeout` or `NetworkError` (`httpStatus` set
   *   when the answer's head had arrived).
   * @throws ApsaraMqDeviceError `Aborted` when `options.signal` fires.
   * @throws ValidationError `InvalidOption` at once, before any request, for a parameter that has no UTF-8 form (a
   *   lone surrogate).
   */
  async call(action: string, params: ApiParams = {}, options: CallOptions = {}): Promise<ApiResponse> {
    const wire: Record<string, string> = {};
    // pop-core would send an undefined value as the string "undefined".
    for (const [key, value] of Object.entries(params)) if (value !== undefined) wire[key] = String(value);
    checkSendable(action, wire);
    if (options.signal?.aborted) throw abortError(action, options.signal);
    const run = new RetryRun(this.#retry, action, options.signal);
    for (;;) {
      try {
        return await this.#limiter.run(action, options.signal, () => this.#attempt(action, wire, options));
      } catch (error) {
        const kind = classifyFailure(error);
        if (kind === 'throttled') this.#throttled += 1;
        if (!(await run.backoff(isRetryableFailure(error, action)))) throw error;
        this.#retries += 1;
      }
    }
  }

  async #attempt(action: string, wire: Record<string, string>, options: CallOptions): Promise<ApiResponse> {
    this.#calls.set(action, (this.#calls.get(action) ?? 0) + 1);
    let answer;
    try {
      answer = await this.#transport.send(action, wire, options.signal === undefined ? {} : { signal: options.signal });
    } catch (error) {
      throw this.#mapFailure(action, error);
    }
    const { status, body } = answer;
    if (isRecord(body) && body['Code'] && !SUCCESS_CODES.has(body['Code'])) throw this.#apiError(action, body, status, wire['Token']);
    return this.#checkEnvelope(action, body, status);
  }

  /** RegisterDeviceCredential: issue a credential. On a ClientId that has one, the service may replace it (latest wins). */
  registerDeviceCredential(instanceId: string, clientId: string, options?: CallOptions): Promise<CredentialResponse> {
    return this.#credentialCall('RegisterDeviceCredential', instanceId, clientId, options);
  }

  /** GetDeviceCredential: the current credential, secret included; ApiError `DeviceCredentialNotFound` when none. */
  getDeviceCredential(instanceId: string, clientId: string, options?: CallOptions): Promise<CredentialResponse> {
    return this.#credentialCall('GetDeviceCredential', instanceId, clientId, options);
  }

  /** RefreshDeviceCredential: replace the key pair of an existing credential. */
  refreshDeviceCredential(instanceId: string, clientId: string, options?: CallOptions): Promise<CredentialResponse> {
    return this.#credentialCall('RefreshDeviceCredential', instanceId, clientId, options);
  }

  /** UnRegisterDeviceCredential: revoke a credential (live sessions stay up; new CONNECTs fail). */
  async unregisterDeviceCredential(instanceId: string, clientId: string, options?: CallOptions): Promise<{ requestId: string }> {
    assertInstanceId(instanceId);
    assertClientId(clientId);
    const { requestId } = await this.call('UnRegisterDeviceCredential', { InstanceId: instanceId, ClientId: clientId }, options);
    return { requestId };
  }

  /** ListDeviceCredentialClientId: one page of the ClientIds of a group that hold a credential. */
  async listDeviceCredentialClientId(instanceId: string, options: ListClientIdsOptions): Promise<ClientIdPage> {
    const action = 'ListDeviceCredentialClientId';
    assertInstanceId(instanceId);
    assertGroupId(options.groupId);
    const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    check.integer('pageSize', pageSize, { min: 1, max: DEFAULT_PAGE_SIZE });
    if (options.pageNo !== undefined) check.integer('pageNo', options.pageNo, { min: 1 });
    if (options.nextToken !== undefined && typeof options.nextToken !== 'string') {
      throw new ValidationError('InvalidOption', 'Invalid nextToken: expected the string from the previous page');
    }
    const { requestId, body, httpStatus } = await this.call(
      action,
      { InstanceId: instanceId, GroupId: options.groupId, PageNo: options.pageNo, PageSize: pageSize, NextToken: options.nextToken || undefined },
      options.signal === undefined ? {} : { signal: options.signal },
    );
    const list = body['DeviceCredentialClientIdList'];
    if (!isRecord(list)) throw this.#invalid(action, `${action}: the answer has no DeviceCredentialClientIdList object`, httpStatus);
    const total = toCount(list['Total']);
    if (total === undefined) throw this.#invalid(action, `${action}: the answer's Total is missing or not a count`, httpStatus);
    const ids = list['ClientIdList'] ?? [];
    if (!Array.isArray(ids) || !ids.every((id): id is string => typeof id === 'string')) {
      throw this.#invalid(action, `${action}: the answer's ClientIdList is not a list of strings`, httpStatus);
    }
    const pageNo = list['PageNo'] === undefined ? (options.pageNo ?? 1) : toCount(list['PageNo']);
    const pageSizeAnswered = list['PageSize'] === undefined ? pageSize : toCount(list['PageSize']);
    if (pageNo === undefined || pageSizeAnswered === undefined) throw this.#invalid(action, `${action}: the answer's PageNo or PageSize is not a number`, httpStatus);
    const nextToken = list['NextToken'];
    if (nextToken !== undefined && nextToken !== null && typeof nextToken !== 'string') {
      throw this.#invalid(action, `${action}: the answer's NextToken is not a string`, httpStatus);
    }
    return {
      requestId,
      total,
      clientIds: [...ids],
      pageNo,
      pageSize: pageSizeAnswered,
      // An empty token marks the last page as well as an absent one.
      ...(nextToken ? { nextToken } : {}),
    };
  }

  /**
   * ApplyToken: a Token-mode token for `resources` (topics; `+` and `#` allowed), permission `actions`, valid until
   * `expireTime` (ms since the epoch; the service wants it at least 60 s ahead and caps it at 30 days). Resources are
   * sent sorted, as the service requires. The token is a credential: it is redacted from logs, JSON and inspect.
   * @throws ValidationError `InvalidOption` before any I/O for an empty or oversized resource list, bad actions or an
   *   expireTime that is not a future integer.
   */
  async applyToken(instanceId: string, request: ApplyTokenRequest, options: CallOptions = {}): Promise<{ requestId: string; token: IssuedToken }> {
    const action = 'ApplyToken';
    assertInstanceId(instanceId);
    const { resources, type } = checkApplyToken(request);
    const { requestId, body, httpStatus } = await this.call(
      action,
      { InstanceId: instanceId, Resources: resources.join(','), Actions: request.actions, ExpireTime: request.expireTime },
      options,
    );
    const token = body['Token'];
    if (typeof token !== 'string' || token === '') throw this.#invalid(action, `${action}: the answer has no Token`, httpStatus);
    return { requestId, token: new IssuedToken(token, { instanceId, type, resources, expireTime: request.expireTime }) };
  }

  /** QueryToken: whether a token is still valid (false for an expired, revoked or unknown one). */
  async queryToken(instanceId: string, token: string | IssuedToken, options: CallOptions = {}): Promise<{ requestId: string; valid: boolean }> {
    const action = 'QueryToken';
    assertInstanceId(instanceId);
    const { requestId, body, httpStatus } = await this.call(action, { InstanceId: instanceId, Token: tokenString(token) }, options);
    const status = body['TokenStatus'];
    if (typeof status !== 'boolean') throw this.#invalid(action, `${action}: the answer's TokenStatus is not a boolean`, httpStatus);
    return { requestId, valid: status };
  }

  /** RevokeToken: the token stops authorizing at once; sessions using it are disconnected by the service. */
  async revokeToken(instanceId: string, token: string | IssuedToken, options: CallOptions = {}): Promise<{ requestId: string }> {
    assertInstanceId(instanceId);
    const { requestId } = await this.call('RevokeToken', { InstanceId: instanceId, Token: tokenString(token) }, options);
    return { requestId };
  }

  /** QuerySessionByClientId: is this ClientId connected now? */
  async querySessionByClientId(instanceId: string, clientId: string, options: CallOptions = {}): Promise<{ requestId: string; online: boolean }> {
    const action = 'QuerySessionByClientId';
    assertInstanceId(instanceId);
    assertClientId(clientId);
    const { requestId, body, httpStatus } = await this.call(action, { InstanceId: instanceId, ClientId: clientId }, options);
    const online = body['OnlineStatus'];
    if (typeof online !== 'boolean') throw this.#invalid(action, `${action}: the answer's OnlineStatus is not a boolean`, httpStatus);
    return { requestId, online };
  }

  /** BatchQuerySessionByClientIds: the online status of 1 to 10 ClientIds, in the order given. */
  async batchQuerySessionByClientIds(instanceId: string, clientIds: readonly string[], options: CallOptions = {}): Promise<{ requestId: string; sessions: SessionStatus[] }> {
    const action = 'BatchQuerySessionByClientIds';
    assertInstanceId(instanceId);
    if (!Array.isArray(clientIds) || clientIds.length < 1 || clientIds.length > MAX_BATCH_SESSION_QUERY) {
      throw new ValidationError('InvalidOption', `Invalid clientIds: expected 1 to ${MAX_BATCH_SESSION_QUERY} ClientIds, not ${Array.isArray(clientIds) ? clientIds.length : typeof clientIds}`);
    }
    for (const clientId of clientIds) assertClientId(clientId);
    const params: Record<string, string> = { InstanceId: instanceId };
    clientIds.forEach((clientId, i) => {
      params[`ClientIdList.${i + 1}`] = clientId;
    });
    const { requestId, body, httpStatus } = await this.call(action, params, options);
    const list = body['OnlineStatusList'];
    const sessions = Array.isArray(list)
      ? list.map((entry: unknown) => (isRecord(entry) && typeof entry['ClientId'] === 'string' && typeof entry['OnlineStatus'] === 'boolean' ? { clientId: entry['ClientId'], online: entry['OnlineStatus'] } : undefined))
      : undefined;
    if (!sessions || sessions.some((entry) => entry === undefined)) {
      throw this.#invalid(action, `${action}: the answer's OnlineStatusList is not a list of {ClientId, OnlineStatus}`, httpStatus);
    }
    return { requestId, sessions: sessions as SessionStatus[] };
  }

  /** Close idle keep-alive connections. Calls made afterwards still work (they open new ones). */
  close(): void {
    this.#transport.close();
  }

  toJSON(): Record<string, unknown> {
    return { endpoint: this.endpoint, accessKeyId: this.#account.accessKeyId, signature: this.signature };
  }

  toString(): string {
    return `OpenApiClient(${this.endpoint}, ${this.#account.accessKeyId})`;
  }

  [inspect.custom](): string {
    return `OpenApiClient ${inspect(this.toJSON())}`;
  }

  async #credentialCall(action: string, instanceId: string, clientId: string, options: CallOptions = {}): Promise<CredentialResponse> {
    assertInstanceId(instanceId);
    assertClientId(clientId);
    const { requestId, body, httpStatus } = await this.call(action, { InstanceId: instanceId, ClientId: clientId }, options);
    // A malformed credential in a 2xx answer: the action did run, but its result is lost all the same.
    const invalid = (message: string): NetworkError => this.#invalid(action, message, httpStatus);
    const wire = body['DeviceCredential'];
    if (!isRecord(wire)) throw invalid(`${action}: the answer has no DeviceCredential object`);
    let credential: DeviceCredential;
    try {
      credential = DeviceCredential.fromWire(wire, `DeviceCredential in the ${action} answer`);
    } catch (error) {
      // fromWire's messages name fields, never values, so they are safe to pass on. Anything else it throws
      // (String() of a null-prototype object, say) is just as much a malformed answer.
      throw invalid(`${action}: ${error instanceof ValidationError ? error.message : 'the DeviceCredential in the answer is malformed'}`);
    }
    if (credential.clientId !== clientId || credential.instanceId !== instanceId) {
      throw invalid(`${action}: the answer is the credential of ${credential.clientId} on ${credential.instanceId}, not of ${clientId} on ${instanceId}`);
    }
    return { requestId, credential };
  }

  #checkEnvelope(action: string, body: unknown, status: number | undefined): ApiResponse {
    if (status !== undefined && (status < 200 || status > 299)) {
      throw this.#invalid(action, `${action}: the endpoint answered HTTP ${status} with JSON that has no error Code`, status);
    }
    if (!isRecord(body)) throw this.#invalid(action, `${action}: the answer is JSON but not an object`, status);
    const requestId = body['RequestId'];
    if (typeof requestId !== 'string' || requestId === '') throw this.#invalid(action, `${action}: the answer has no RequestId`, status);
    return { requestId, body, ...(status === undefined ? {} : { httpStatus: status }) };
  }

  /** An answer with an error `Code`. */
  #apiError(action: string, body: Record<string, unknown>, status: number | undefined, token?: string): Error {
    const { Code: code, RequestId: requestId, Message: message } = body;
    if (typeof code !== 'string') return this.#invalid(action, `${action}: the endpoint answered HTTP ${status ?? '?'} with a Code that is not a string`, status);
    return forCaller(action, new ApiError({
      code,
      action,
      // A transport that could not see the status: the catalog's (then 400, the usual status of the product's errors).
      httpStatus: status ?? apiErrorEntry(code)?.httpStatus ?? 400,
      requestId: typeof requestId === 'string' ? requestId : undefined,
      serviceMessage: typeof message === 'string' ? this.#scrub(message, token) : '',
    }));
  }

  /** A transport failure as a NetworkError (an abort passes through as it is). */
  #mapFailure(action: string, error: unknown): Error {
    if (isApsaraMqDeviceError(error)) return error; // Aborted
    if (!(error instanceof TransportError)) {
      return this.#networkError('NetworkError', action, `${action}: the connection to ${this.endpoint} failed (${error instanceof Error ? error.name : 'unknown error'})`, undefined, error);
    }
    const { status } = error;
    switch (error.kind) {
      case 'not-json': {
        const type = error.contentType ? ` (${error.contentType})` : '';
        return this.#invalid(action, `${action}: the endpoint answered HTTP ${status ?? '?'} with a body that is not JSON${type}`, status);
      }
      case 'timeout':
        return this.#networkError('RequestTimeout', action, `${action}: no answer from ${this.endpoint} within ${this.timeoutMs} ms`, status, error.cause);
      case 'refused':
        return this.#networkError('ConnectionRefused', action, `${action}: connection to ${this.endpoint} refused`, undefined, error.cause);
      case 'host-not-found':
        return this.#networkError('HostNotFound', action, `${action}: the host of ${this.endpoint} could not be resolved (${error.reason})`, undefined, error.cause);
      case 'not-an-answer':
        return this.#invalid(action, `${action}: the endpoint answered HTTP ${status ?? '?'} with a body that is not an OpenAPI answer`, status);
      case 'failed':
        return this.#networkError('NetworkError', action, `${action}: the connection to ${this.endpoint} failed (${error.reason})`, status, error.cause);
    }
  }

  /**
   * Remove account secrets from text the service sends back. SignatureDoesNotMatch echoes the server's string to
   * sign, which holds every parameter, the STS SecurityToken included (percent-encoded once or twice).
   */
  #scrub(text: string, token?: string): string {
    let result = text;
    // A Token parameter (QueryToken, RevokeToken) is a credential too.
    for (const secret of [this.#account.securityToken, this.#account.accessKeySecret, token]) {
      if (!secret) continue;
      const once = percentEncode(secret);
      for (const form of new Set([secret, once, percentEncode(once)])) result = result.split(form).join('****');
    }
    return result;
  }

  /** The endpoint answered (HTTP `status`), but not with a usable OpenAPI answer. */
  #invalid(action: string, message: string, status: number | undefined): NetworkError {
    return this.#networkError('InvalidResponse', action, message, status);
  }

  /**
   * A NetworkError of `action`. When its code is an unknown outcome and `action` is not idempotent, it says
   * `retryable: false` with {@link unknownOutcomeRemedy}: the request may have been applied.
   */
  #networkError(code: NetworkErrorCode, action: string, message: string, status: number | undefined, cause?: unknown): NetworkError {
    const unsafe = LOCAL_ERROR_CATALOG[code].retryClass === 'unknown-outcome' && !IDEMPOTENT_ACTIONS.has(action);
    return new NetworkError(code, message, this.endpoint, cause, {
      httpStatus: status,
      ...(unsafe ? { retryable: false, remedy: unknownOutcomeRemedy(action) } : {}),
    });
  }
}

type NetworkErrorCode = ConstructorParameters<typeof NetworkError>[0];

/**
 * An ApiError as the caller of `action` sees it. A code whose outcome is unknown (`SignatureNonceUsed`, an
 * uncatalogued 5xx) on an action that is not idempotent says `retryable: false` with {@link unknownOutcomeRemedy}
 * instead of the catalog's "retry": sending such a request again may apply it twice.
 */
function forCaller(action: string, error: ApiError): ApiError {
  if (classifyFailure(error) !== 'unknown-outcome' || IDEMPOTENT_ACTIONS.has(action)) return error;
  // The code's catalog says "retry"; for an action that is not safe to repeat, the action decides.
  return new ApiError({
    code: error.code,
    action: error.action,
    httpStatus: error.httpStatus,
    requestId: error.requestId,
    serviceMessage: error.serviceMessage,
    retryable: false,
    remedy: unknownOutcomeRemedy(action),
  });
}

/**
 * A non-negative integer from the wire: a number, a decimal string (the List API's documented type), or a
 * json-bigint BigNumber. `undefined` for anything else.
 */
function toCount(value: unknown): number | undefined {
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'string' && /^\d+$/.test(value)) n = Number(value);
  else if (isBigNumber(value)) n = Number(String(value));
  else return undefined;
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** json-bigint turns integers longer than 15 digits into bignumber.js objects. */
function isBigNumber(value: unknown): value is { toFixed(): string } {
  return typeof value === 'object' && value !== null && typeof (value as { toFixed?: unknown }).toFixed === 'function';
}

/**
 * Every parameter must have a UTF-8 form to be percent-encoded and signed: a lone surrogate (`'abc\ud800'`) has
 * none. Checked before the rate limiter and the transport, so nothing is sent, nothing is retried, and the error
 * names the parameter (never its value: a Token is a credential).
 * @throws ValidationError `InvalidOption`
 */
function checkSendable(action: string, wire: Readonly<Record<string, string>>): void {
  for (const [name, value] of Object.entries(wire)) {
    if (hasLoneSurrogate(name) || hasLoneSurrogate(value)) {
      throw new ValidationError('InvalidOption', `${action}: parameter ${hasLoneSurrogate(name) ? JSON.stringify(name) : name} holds a lone surrogate (half of a UTF-16 pair), which has no UTF-8 form: nothing was sent`);
    }
  }
}

/** Most ClientIds in one BatchQuerySessionByClientIds call. */
export const MAX_BATCH_SESSION_QUERY = 10;
export { MAX_TOKEN_RESOURCES } from '../mqtt/service-limits.js';
export { type ApplyTokenRequest, checkResources };

/** One ClientId's online status. */
export interface SessionStatus {
  clientId: string;
  online: boolean;
}
