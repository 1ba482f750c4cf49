import { inspect } from 'node:util';
import { assertClientId, assertInstanceId, type CredentialRequest, type CredentialSource, type DeviceCredential, type TokenRequest, type TokenSource } from '../credential.js';
import { ApiError, ApsaraMqDeviceError, isApsaraMqDeviceError, LOCAL_ERROR_CATALOG, NetworkError, StoreError, ValidationError } from '../errors.js';
import { sleep } from '../util/backoff.js';
import { abortError } from '../util/abort.js';
import { type ApiCallStats, type ApplyTokenRequest, type CallOptions, type ClientIdPage, type CredentialResponse, type ListClientIdsOptions, OpenApiClient, type OpenApiClientOptions, type SessionStatus, checkResources } from './api-client.js';
import type { IssuedToken } from './token.js';
import { FileCredentialStore } from './file-store.js';
import { type PendingRegister, type RegisterLog, RegistrationJournal } from './journal.js';
import type { CredentialLock } from './lock.js';
import { MemoryCredentialStore } from './memory-store.js';
import { classifyFailure, RetryRun } from './retry.js';
import { SingleFlight } from './single-flight.js';
import type { CredentialStore } from './store.js';

/**
 * Default of {@link ProvisionerOptions.maxServiceLatencyMs}: how long the service may still act on a request after
 * the client gave up on it.
 */
export const DEFAULT_MAX_SERVICE_LATENCY_MS = 10_000;

/** Options of {@link Provisioner.waitForOnline}. */
export interface WaitForSessionOptions {
  /** Wait for this status. @default true */
  online?: boolean;
  /** @default 10000 */
  timeoutMs?: number;
  /** Time between two QuerySessionByClientId calls. @default 250 */
  intervalMs?: number;
  signal?: AbortSignal;
}

/** One kind of token a {@link Provisioner.tokenSource} applies for: a permission and the topics it covers. */
export interface TokenSourceGrant {
  /** `R` (subscribe), `W` (publish) or `R,W` (both): one ApplyToken each, as a token has one type. */
  actions: 'R' | 'W' | 'R,W';
  /** Topics the token covers (`Parent/sub`, `Parent/+`, `Parent/#`), 1 to 100. */
  resources: readonly string[];
}

/** Options of {@link Provisioner.tokenSource}. */
export interface TokenSourceOptions {
  /** How long each token lasts, ms: 60 s to 30 days. @default 3600000 (1 hour) */
  lifetimeMs?: number;
  /** The clock ExpireTime is counted from, ms since the epoch. @default Date.now */
  now?: () => number;
}

/** Options of a {@link Provisioner}: how to reach the OpenAPI, which instance, and where to keep credentials. */
export interface ProvisionerOptions extends OpenApiClientOptions {
  /** The ApsaraMQ for MQTT instance the devices connect to. */
  instanceId: string;
  /** Where credentials are kept between runs. @default a new {@link MemoryCredentialStore} (nothing persists) */
  store?: CredentialStore;
  /**
   * The longest the service may take to apply a request once it has it, in ms. After a Register whose outcome is
   * unknown (timeout, reset, a proxy's page…), the credential is confirmed with GetDeviceCredential only once
   * `timeoutMs + maxServiceLatencyMs` have passed since the Register was sent: from then on a late Register can no
   * longer land and revoke the credential that gets stored. Set it to the emulator's `latencyMs.max` in tests.
   * @default 10000
   */
  maxServiceLatencyMs?: number;
}

/**
 * How a credential the store lacks is obtained.
 * - `get-first` (safe whatever the service does on a second Register): GetDeviceCredential, and
 *   RegisterDeviceCredential only on `DeviceCredentialNotFound`. Two calls per new device.
 * - `register-first` (for fleets known to be new): RegisterDeviceCredential, and GetDeviceCredential when it answers
 *   `DeviceCredentialExsit`. One call per new device, but on a service where the latest registration wins it
 *   rotates the credential of a ClientId registered elsewhere: use it only for ClientIds nobody else registers.
 *   A ClientId with a pending journal entry (an earlier run may have registered it) is always looked up first.
 */
export type ProvisionStrategy = 'get-first' | 'register-first';

/** Where {@link Provisioner.obtainCredential} found a credential. */
export type CredentialOrigin = 'store' | 'fetched' | 'registered';

/** A credential and where it came from. */
export interface ObtainedCredential {
  credential: DeviceCredential;
  origin: CredentialOrigin;
}

/** Options of {@link Provisioner.obtainCredential}. */
export interface ObtainOptions extends CallOptions {
  /** @default 'get-first' */
  strategy?: ProvisionStrategy;
  /**
   * Write-ahead journal of Register calls (see {@link RegistrationJournal}).
   * @default the store's (`<dir>/<instanceId>/.journal`) for a {@link FileCredentialStore}; else one in memory
   */
  journal?: RegistrationJournal;
}

/**
 * The registrar: holds the account AccessKey, gets each device its credential once, and keeps it in a store so
 * that a device is not registered again on every boot.
 *
 * ```ts
 * const provisioner = new Provisioner({ region: 'cn-hangzhou', instanceId, store: new FileCredentialStore() });
 * const credential = await provisioner.ensureCredential('GID_demo@@@dev-1');
 * ```
 */
export class Provisioner {
  /** The instance every call of this provisioner is about. */
  readonly instanceId: string;
  /** Where credentials are kept. */
  readonly store: CredentialStore;
  /**
   * How long after a Register was sent it may still land, in ms: `timeoutMs + maxServiceLatencyMs`. A Register
   * whose outcome is unknown is confirmed with GetDeviceCredential once this has passed.
   */
  readonly settleWindowMs: number;
  readonly #client: OpenApiClient;
  readonly #ensuring = new SingleFlight<ObtainedCredential>();
  readonly #log: RegisterLog;
  #prepared: Promise<void> | undefined;
  /** Registers whose answer was lost and that were looked up again with Get: retries the client does not see. */
  #reconciled = 0;

  /**
   * @throws ValidationError `InvalidInstanceId`, or `InvalidOption` for a bad endpoint/region/timeout/limiter or
   *   maxServiceLatencyMs.
   * @throws ConfigurationError `MissingAccessKey`.
   */
  constructor(options: ProvisionerOptions) {
    assertInstanceId(options.instanceId);
    const latency = options.maxServiceLatencyMs ?? DEFAULT_MAX_SERVICE_LATENCY_MS;
    if (!Number.isFinite(latency) || latency < 0) {
      throw new ValidationError('InvalidOption', `Invalid maxServiceLatencyMs ${String(latency)}: expected a number of milliseconds, 0 or more`);
    }
    this.instanceId = options.instanceId;
    this.store = options.store ?? new MemoryCredentialStore();
    this.#client = new OpenApiClient(options);
    this.settleWindowMs = this.#client.timeoutMs + latency;
    this.#log = this.store instanceof FileCredentialStore ? RegistrationJournal.forStore(this.store.dir, this.instanceId) : new MemoryRegisterLog();
  }

  /**
   * Check the store for this instance before anything costs money (for a {@link FileCredentialStore}: directory
   * modes, regular files only, leftover temp files removed; see `FileCredentialStore.prepare`). Every method that
   * uses the store runs it before its first API call, once per provisioner (again after a failure); call it
   * yourself to fail early.
   * @throws StoreError `StoreInsecure`, `StoreCorrupt` or `StoreIOError`.
   */
  prepare(): Promise<void> {
    this.#prepared ??= Promise.resolve()
      .then(() => this.store.prepare?.(this.instanceId))
      .catch((error: unknown) => {
        this.#prepared = undefined;
        throw error;
      });
    return this.#prepared;
  }

  /** The OpenAPI URL called. */
  get endpoint(): string {
    return this.#client.endpoint;
  }

  /** OpenAPI requests sent so far. */
  get apiCalls(): number {
    return this.#client.apiCalls;
  }

  /** OpenAPI requests sent so far, per action. */
  apiCallsByAction(): Record<string, number> {
    return this.#client.apiCallsByAction();
  }

  /** Requests, retries (a Register reconciled with a Get counts as one) and throttled answers so far. */
  stats(): ApiCallStats {
    const stats = this.#client.stats();
    return { ...stats, retries: stats.retries + this.#reconciled };
  }

  /**
   * The credential of a ClientId, calling the OpenAPI only when the store has none:
   * store → GetDeviceCredential → (only on `DeviceCredentialNotFound`) RegisterDeviceCredential, and the result is
   * saved. A ClientId that already has a credential is never registered again: on a service where the latest
   * registration wins, that would silently lock out the device holding the current one. When Register answers
   * `DeviceCredentialExsit` (another registrar got there first), the credential is fetched instead.
   *
   * Concurrent calls for the same ClientId share one sequence of calls. A corrupt or insecure store entry is
   * reported (StoreError) without calling the OpenAPI or overwriting it.
   *
   * @throws ValidationError `InvalidClientId` before any I/O; ApiError, NetworkError, StoreError.
   */
  async ensureCredential(clientId: string, options: CallOptions = {}): Promise<DeviceCredential> {
    return (await this.obtainCredential(clientId, options)).credential;
  }

  /**
   * {@link ensureCredential} with a choice of {@link ProvisionStrategy} and journal, saying where the credential
   * came from. Concurrent calls for one ClientId share one sequence (the first caller's strategy and journal).
   *
   * With a retry policy, a Register whose outcome is unknown (timeout, reset, a proxy's page, `SignatureNonceUsed`,
   * an uncatalogued 5xx) is never sent again blindly: the credential is looked up with Get, and registered again
   * only if the service has none.
   *
   * @throws ValidationError `InvalidClientId` before any I/O; ApiError, NetworkError, StoreError.
   */
  obtainCredential(clientId: string, options: ObtainOptions = {}): Promise<ObtainedCredential> {
    assertClientId(clientId);
    const log = options.journal ?? this.#log;
    return this.#ensuring.run(clientId, `ensureCredential(${clientId})`, options.signal, async (signal) => {
      await this.prepare();
      const stored = await this.store.load(this.instanceId, clientId);
      if (stored) {
        await log.clear(clientId);
        return { credential: stored, origin: 'store' };
      }
      const lock = await this.store.lock?.(this.instanceId, clientId, { signal });
      try {
        return await this.#obtainLocked(clientId, options.strategy ?? 'get-first', signal, log, lock);
      } finally {
        await lock?.release();
      }
    });
  }

  /** The registrar's critical section: nobody else registers this ClientId through this store meanwhile. */
  async #obtainLocked(clientId: string, strategy: ProvisionStrategy, signal: AbortSignal, log: RegisterLog, lock: CredentialLock | undefined): Promise<ObtainedCredential> {
    // Another registrar may have finished while this one waited for the lock.
    const stored = await this.store.load(this.instanceId, clientId);
    if (stored) {
      await log.clear(clientId);
      return { credential: stored, origin: 'store' };
    }
    let obtained: ObtainedCredential | undefined;
    const pending = await log.entry(clientId);
    if (pending) {
      // A Register was sent (by a process that died, or whose answer was lost): ask once it can no longer land.
      obtained = await this.#confirm(clientId, pending, signal);
    }
    obtained ??= strategy === 'register-first' || pending ? await this.#registerOrGet(clientId, signal, log, lock) : await this.#getOrRegister(clientId, signal, log, lock);
    assertHeld(lock, this.store, this.instanceId, clientId);
    await this.store.save(obtained.credential);
    await log.clear(clientId);
    return obtained;
  }

  /**
   * RegisterDeviceCredential, saving the result. Beware: where the latest registration wins, this replaces the
   * credential a running device holds; {@link ensureCredential} is the safe way to get one. It is never re-sent when
   * its outcome is unknown: that error says `retryable: false` (check with {@link get} before registering again).
   */
  register(clientId: string, options?: CallOptions): Promise<CredentialResponse> {
    return this.#saved(clientId, () => this.#client.registerDeviceCredential(this.instanceId, clientId, options));
  }

  /** GetDeviceCredential (bypassing the store), saving the result. */
  get(clientId: string, options?: CallOptions): Promise<CredentialResponse> {
    return this.#saved(clientId, () => this.#client.getDeviceCredential(this.instanceId, clientId, options));
  }

  /** RefreshDeviceCredential (new key pair), saving the result. */
  refresh(clientId: string, options?: CallOptions): Promise<CredentialResponse> {
    return this.#saved(clientId, () => this.#client.refreshDeviceCredential(this.instanceId, clientId, options));
  }

  /** UnRegisterDeviceCredential, then forget the stored credential. The store is left as it is if the call fails. */
  async unregister(clientId: string, options?: CallOptions): Promise<{ requestId: string }> {
    assertClientId(clientId);
    await this.prepare();
    const answer = await this.#client.unregisterDeviceCredential(this.instanceId, clientId, options);
    await this.store.remove(this.instanceId, clientId);
    return answer;
  }

  /** One page of the ClientIds of a group that hold a credential. */
  list(options: ListClientIdsOptions): Promise<ClientIdPage> {
    return this.#client.listDeviceCredentialClientId(this.instanceId, options);
  }

  /** ApplyToken on this instance (see {@link OpenApiClient.applyToken}). */
  async applyToken(request: ApplyTokenRequest, options?: CallOptions): Promise<IssuedToken> {
    return (await this.#client.applyToken(this.instanceId, request, options)).token;
  }

  /** QueryToken: is the token still valid? */
  async queryToken(token: string | IssuedToken, options?: CallOptions): Promise<boolean> {
    return (await this.#client.queryToken(this.instanceId, token, options)).valid;
  }

  /** RevokeToken: the token stops working, and the service disconnects the sessions that use it. */
  async revokeToken(token: string | IssuedToken, options?: CallOptions): Promise<void> {
    await this.#client.revokeToken(this.instanceId, token, options);
  }

  /** QuerySessionByClientId: is the device connected now? */
  async isOnline(clientId: string, options?: CallOptions): Promise<boolean> {
    return (await this.#client.querySessionByClientId(this.instanceId, clientId, options)).online;
  }

  /** BatchQuerySessionByClientIds: the online status of 1 to 10 devices, in the order given. */
  async onlineStatus(clientIds: readonly string[], options?: CallOptions): Promise<SessionStatus[]> {
    return (await this.#client.batchQuerySessionByClientIds(this.instanceId, clientIds, options)).sessions;
  }

  /**
   * Resolve once QuerySessionByClientId says the device is online (or, with `online: false`, offline). The service
   * has no notification of this, so it asks every `intervalMs` (default 250 ms; each ask is an API call within the
   * client's rate limit) until `timeoutMs` (default 10 s) has passed, then rejects with `WaitTimeout`.
   */
  async waitForOnline(clientId: string, options: WaitForSessionOptions = {}): Promise<void> {
    assertClientId(clientId);
    const want = options.online ?? true;
    const timeoutMs = options.timeoutMs ?? 10_000;
    const intervalMs = options.intervalMs ?? 250;
    for (const [name, value] of [['timeoutMs', timeoutMs], ['intervalMs', intervalMs]] as const) {
      if (!Number.isFinite(value) || value <= 0) throw new ValidationError('InvalidOption', `Invalid ${name} ${String(value)}: expected a positive number of ms`);
    }
    const deadline = Date.now() + timeoutMs;
    const call: CallOptions = options.signal === undefined ? {} : { signal: options.signal };
    for (;;) {
      if ((await this.isOnline(clientId, call)) === want) return;
      const left = deadline - Date.now();
      if (left <= 0) {
        const { retryable, remedy } = LOCAL_ERROR_CATALOG.WaitTimeout;
        throw new ApsaraMqDeviceError('WaitTimeout', `${clientId} was not ${want ? 'online' : 'offline'} within ${timeoutMs} ms. ${remedy}`, { retryable, remedy });
      }
      try {
        await sleep(Math.min(intervalMs, left), options.signal);
      } catch {
        throw abortError(`waitForOnline(${clientId})`, options.signal as AbortSignal);
      }
    }
  }

  /**
   * A {@link CredentialSource} for a connector:
   * - `connect`: {@link ensureCredential}.
   * - `rejected`: the stored credential when it differs from the refused one (another process may have refreshed
   *   it), else GetDeviceCredential, saved and returned even when it is the same key (the connector then knows the
   *   credential really is refused). It never registers: a refused credential may have been revoked on purpose.
   *
   * @throws ValidationError `InvalidClientId` at once, before any I/O.
   */
  credentialSource(clientId: string): CredentialSource {
    assertClientId(clientId);
    return async (request: CredentialRequest): Promise<DeviceCredential> => {
      const options: CallOptions = request.signal === undefined ? {} : { signal: request.signal };
      if (request.reason === 'connect') return this.ensureCredential(clientId, options);
      const stored = await this.store.load(this.instanceId, clientId);
      if (stored && request.rejected && !stored.sameKeyAs(request.rejected)) return stored;
      return (await this.get(clientId, options)).credential;
    };
  }

  /**
   * A {@link TokenSource} for a connector in Token mode (`connectDevice({ clientId, token: { accessKeyId,
   * instanceId, source } })`): ApplyToken for each grant (one token per permission type), each lasting `lifetimeMs`.
   * Asked to renew or after a refusal, it applies again for the types asked only. It runs where the account key is
   * (an application server handing tokens to its devices, a gateway, a test); a device gets the tokens, never the key.
   *
   * @example
   * const source = provisioner.tokenSource([{ actions: 'W', resources: ['demo/#'] }, { actions: 'R', resources: ['demo/in'] }]);
   * @throws ValidationError `InvalidOption` at once, before any I/O: no grant, two of one type, bad resources or lifetime.
   */
  tokenSource(grants: readonly TokenSourceGrant[], options: TokenSourceOptions = {}): TokenSource {
    if (!Array.isArray(grants) || grants.length === 0) throw new ValidationError('InvalidOption', 'tokenSource needs at least one grant { actions, resources }');
    const TYPES = { R: 'R', W: 'W', 'R,W': 'RW' } as const;
    const checked = grants.map((grant) => {
      const type = TYPES[grant?.actions as keyof typeof TYPES];
      if (type === undefined) throw new ValidationError('InvalidOption', `Invalid actions ${JSON.stringify(grant?.actions)}: expected 'R', 'W' or 'R,W'`);
      return { type, actions: grant.actions, resources: checkResources(grant.resources) };
    });
    if (new Set(checked.map((grant) => grant.type)).size !== checked.length) {
      throw new ValidationError('InvalidOption', 'tokenSource takes at most one grant per permission type (R, W, R,W): a Token-mode password holds one token of each');
    }
    const lifetimeMs = options.lifetimeMs ?? 3_600_000;
    if (typeof lifetimeMs !== 'number' || !Number.isInteger(lifetimeMs) || lifetimeMs < 60_000 || lifetimeMs > 30 * 24 * 3_600_000) {
      throw new ValidationError('InvalidOption', `Invalid lifetimeMs ${String(lifetimeMs)}: expected an integer from 60000 (60 s) to 2592000000 (30 days)`);
    }
    const now = options.now ?? Date.now;
    if (typeof now !== 'function') throw new ValidationError('InvalidOption', 'Option now must be a function returning ms since the epoch');
    return async (request: TokenRequest) => {
      const call: CallOptions = request.signal === undefined ? {} : { signal: request.signal };
      const asked = checked.filter((grant) => request.types.includes(grant.type));
      return Promise.all((asked.length > 0 ? asked : checked).map((grant) =>
        this.applyToken({ resources: grant.resources, actions: grant.actions, expireTime: Math.floor(now()) + lifetimeMs }, call)));
    };
  }

  /**
   * @internal Resolves once every credential flight started so far has settled, those whose callers were aborted
   * included (they stop at their next step, but a Register already answered is still saved).
   */
  idle(): Promise<void> {
    return this.#ensuring.idle();
  }

  /** Close idle OpenAPI connections. */
  close(): void {
    this.#client.close();
  }

  toJSON(): Record<string, unknown> {
    return { instanceId: this.instanceId, client: this.#client.toJSON() };
  }

  [inspect.custom](): string {
    return `Provisioner ${inspect(this.toJSON())}`;
  }

  async #getOrRegister(clientId: string, signal: AbortSignal, log: RegisterLog, lock: CredentialLock | undefined): Promise<ObtainedCredential> {
    const fetched = await this.#fetch(clientId, signal);
    return fetched ?? this.#registerOrGet(clientId, signal, log, lock);
  }

  /** GetDeviceCredential, or `undefined` on `DeviceCredentialNotFound`. */
  async #fetch(clientId: string, signal: AbortSignal): Promise<ObtainedCredential | undefined> {
    try {
      return { credential: (await this.#client.getDeviceCredential(this.instanceId, clientId, { signal })).credential, origin: 'fetched' };
    } catch (error) {
      if (isApsaraMqDeviceError(error, 'DeviceCredentialNotFound')) return undefined;
      throw error;
    }
  }

  /**
   * The credential the service holds once a possibly-sent Register can no longer land: wait until its window has
   * passed (the longer of the sender's and this provisioner's), then GetDeviceCredential; `undefined` when the
   * service has none (the Register never took effect).
   */
  async #confirm(clientId: string, pending: PendingRegister, signal: AbortSignal): Promise<ObtainedCredential | undefined> {
    const settledAt = Math.max(pending.settledAt ?? 0, pending.at + this.settleWindowMs);
    // Never longer than one window from now, whatever the entry says (a clock ahead of ours); a sender's window is
    // believed up to an hour (a damaged entry must not block a ClientId for ever).
    const senderWindow = Math.min((pending.settledAt ?? pending.at) - pending.at, 3_600_000);
    const longest = Math.max(this.settleWindowMs, senderWindow);
    const wait = Math.min(settledAt - Date.now(), longest);
    if (wait > 0) {
      await sleep(wait, signal).catch(() => {
        throw abortError(`ensureCredential(${clientId})`, signal);
      });
    }
    return this.#fetch(clientId, signal);
  }

  async #registerOrGet(clientId: string, signal: AbortSignal, log: RegisterLog, lock: CredentialLock | undefined): Promise<ObtainedCredential> {
    const run = new RetryRun(this.#client.retryPolicy, `RegisterDeviceCredential(${clientId})`, signal);
    for (;;) {
      assertHeld(lock, this.store, this.instanceId, clientId);
      // Durable before the request leaves, so that a crash after the answer cannot lead to a second Register.
      const sentAt = Date.now();
      await log.record(clientId, this.settleWindowMs);
      try {
        return { credential: (await this.#client.registerDeviceCredential(this.instanceId, clientId, { signal })).credential, origin: 'registered' };
      } catch (error) {
        // The service's own spelling: another registrar got there first.
        if (isApsaraMqDeviceError(error, 'DeviceCredentialExsit')) {
          return { credential: (await this.#client.getDeviceCredential(this.instanceId, clientId, { signal })).credential, origin: 'fetched' };
        }
        const kind = classifyFailure(error);
        // The service answered with an error, or the request never left: nothing was registered. Anything else (a
        // lost answer, an abort mid-request) may have been, and its entry stays until it is settled.
        if ((error instanceof ApiError && kind !== 'unknown-outcome') || (error instanceof NetworkError && kind === 'not-sent')) await log.clear(clientId);
        // The client retries every other retryable failure itself; a lost answer is ours to settle.
        if (kind !== 'unknown-outcome' || !(await run.backoff(true))) throw error;
        this.#reconciled += 1;
        const confirmed = await this.#confirm(clientId, { at: sentAt }, signal);
        if (confirmed) return confirmed;
      }
    }
  }

  async #saved(clientId: string, call: () => Promise<CredentialResponse>): Promise<CredentialResponse> {
    assertClientId(clientId);
    // An answer that changes the service (Register, Refresh) must be storable before it is asked for.
    await this.prepare();
    const result = await call();
    await this.store.save(result.credential);
    return result;
  }
}

/** Throw instead of registering or saving under a lock that was lost (its holder stalled past the stale time). */
function assertHeld(lock: CredentialLock | undefined, store: CredentialStore, instanceId: string, clientId: string): void {
  if (!lock?.compromised) return;
  const path = store instanceof FileCredentialStore ? store.pathOf(instanceId, clientId) : undefined;
  throw new StoreError('StoreLockLost', `The lock of ${clientId} was taken over by another registrar while this one held it`, path);
}

/** The Register log of a store that keeps none: in memory, for the callers of one Provisioner. */
class MemoryRegisterLog implements RegisterLog {
  readonly #entries = new Map<string, PendingRegister>();

  entry(clientId: string): Promise<PendingRegister | undefined> {
    return Promise.resolve(this.#entries.get(clientId));
  }

  record(clientId: string, settleWindowMs: number): Promise<void> {
    const at = Date.now();
    this.#entries.set(clientId, { at, settledAt: at + settleWindowMs });
    return Promise.resolve();
  }

  clear(clientId: string): Promise<void> {
    this.#entries.delete(clientId);
    return Promise.resolve();
  }
}
