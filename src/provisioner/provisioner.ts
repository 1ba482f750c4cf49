import { inspect } from 'node:util';
import { assertClientId, assertInstanceId, type CredentialRequest, type CredentialSource, type DeviceCredential } from '../credential.js';
import { isApsaraMqDeviceError } from '../errors.js';
import { type ApiCallStats, type CallOptions, type ClientIdPage, type CredentialResponse, type ListClientIdsOptions, OpenApiClient, type OpenApiClientOptions } from './api-client.js';
import type { RegistrationJournal } from './journal.js';
import { MemoryCredentialStore } from './memory-store.js';
import { classifyFailure, RetryRun } from './retry.js';
import { SingleFlight } from './single-flight.js';
import type { CredentialStore } from './store.js';

/** Options of a {@link Provisioner}: how to reach the OpenAPI, which instance, and where to keep credentials. */
export interface ProvisionerOptions extends OpenApiClientOptions {
  /** The ApsaraMQ for MQTT instance the devices connect to. */
  instanceId: string;
  /** Where credentials are kept between runs. @default a new {@link MemoryCredentialStore} (nothing persists) */
  store?: CredentialStore;
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
  /** Write-ahead journal of Register calls (see {@link RegistrationJournal}); none by default. */
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
  readonly #client: OpenApiClient;
  readonly #ensuring = new SingleFlight<ObtainedCredential>();
  /** Registers whose answer was lost and that were looked up again with Get: retries the client does not see. */
  #reconciled = 0;

  /**
   * @throws ValidationError `InvalidInstanceId`, or `InvalidOption` for a bad endpoint/region/timeout.
   * @throws ConfigurationError `MissingAccessKey`.
   */
  constructor(options: ProvisionerOptions) {
    assertInstanceId(options.instanceId);
    this.instanceId = options.instanceId;
    this.store = options.store ?? new MemoryCredentialStore();
    this.#client = new OpenApiClient(options);
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
    const { journal } = options;
    return this.#ensuring.run(clientId, `ensureCredential(${clientId})`, options.signal, async (signal) => {
      const stored = await this.store.load(this.instanceId, clientId);
      if (stored) {
        await journal?.clear(clientId);
        return { credential: stored, origin: 'store' };
      }
      const registerFirst = options.strategy === 'register-first' && !(await journal?.has(clientId));
      const obtained = registerFirst ? await this.#registerOrGet(clientId, signal, journal) : await this.#getOrRegister(clientId, signal, journal);
      await this.store.save(obtained.credential);
      await journal?.clear(clientId);
      return obtained;
    });
  }

  /**
   * RegisterDeviceCredential, saving the result. Beware: where the latest registration wins, this replaces the
   * credential a running device holds; {@link ensureCredential} is the safe way to get one. It is never re-sent when
   * its outcome is unknown: that error says `retryable: false` (check with {@link get} before registering again).
   */
  register(clientId: string, options?: CallOptions): Promise<CredentialResponse> {
    return this.#saved(this.#client.registerDeviceCredential(this.instanceId, clientId, options));
  }

  /** GetDeviceCredential (bypassing the store), saving the result. */
  get(clientId: string, options?: CallOptions): Promise<CredentialResponse> {
    return this.#saved(this.#client.getDeviceCredential(this.instanceId, clientId, options));
  }

  /** RefreshDeviceCredential (new key pair), saving the result. */
  refresh(clientId: string, options?: CallOptions): Promise<CredentialResponse> {
    return this.#saved(this.#client.refreshDeviceCredential(this.instanceId, clientId, options));
  }

  /** UnRegisterDeviceCredential, then forget the stored credential. The store is left as it is if the call fails. */
  async unregister(clientId: string, options?: CallOptions): Promise<{ requestId: string }> {
    const answer = await this.#client.unregisterDeviceCredential(this.instanceId, clientId, options);
    await this.store.remove(this.instanceId, clientId);
    return answer;
  }

  /** One page of the ClientIds of a group that hold a credential. */
  list(options: ListClientIdsOptions): Promise<ClientIdPage> {
    return this.#client.listDeviceCredentialClientId(this.instanceId, options);
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

  async #getOrRegister(clientId: string, signal: AbortSignal, journal: RegistrationJournal | undefined): Promise<ObtainedCredential> {
    const fetched = await this.#fetch(clientId, signal);
    return fetched ?? this.#registerOrGet(clientId, signal, journal);
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

  async #registerOrGet(clientId: string, signal: AbortSignal, journal: RegistrationJournal | undefined): Promise<ObtainedCredential> {
    const run = new RetryRun(this.#client.retryPolicy, `RegisterDeviceCredential(${clientId})`, signal);
    for (;;) {
      // Durable before the request leaves, so that a crash after the answer cannot lead to a second Register.
      await journal?.record(clientId);
      try {
        return { credential: (await this.#client.registerDeviceCredential(this.instanceId, clientId, { signal })).credential, origin: 'registered' };
      } catch (error) {
        // The service's own spelling: another registrar got there first.
        if (isApsaraMqDeviceError(error, 'DeviceCredentialExsit')) {
          return { credential: (await this.#client.getDeviceCredential(this.instanceId, clientId, { signal })).credential, origin: 'fetched' };
        }
        // The client retries every other retryable failure itself; a lost answer is ours to settle.
        if (classifyFailure(error) !== 'unknown-outcome' || !(await run.backoff(true))) throw error;
        this.#reconciled += 1;
        const fetched = await this.#fetch(clientId, signal);
        if (fetched) return fetched;
      }
    }
  }

  async #saved(answer: Promise<CredentialResponse>): Promise<CredentialResponse> {
    const result = await answer;
    await this.store.save(result.credential);
    return result;
  }
}
