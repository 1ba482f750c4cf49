import { inspect } from 'node:util';
import { assertClientId, assertInstanceId, type CredentialRequest, type CredentialSource, type DeviceCredential } from '../credential.js';
import { isApsaraMqDeviceError } from '../errors.js';
import { type CallOptions, type ClientIdPage, type CredentialResponse, type ListClientIdsOptions, OpenApiClient, type OpenApiClientOptions } from './api-client.js';
import { MemoryCredentialStore } from './memory-store.js';
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
  readonly #ensuring = new SingleFlight<DeviceCredential>();

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
    assertClientId(clientId);
    return this.#ensuring.run(clientId, `ensureCredential(${clientId})`, options.signal, async (signal) => {
      const stored = await this.store.load(this.instanceId, clientId);
      if (stored) return stored;
      let credential: DeviceCredential;
      try {
        ({ credential } = await this.#client.getDeviceCredential(this.instanceId, clientId, { signal }));
      } catch (error) {
        if (!isApsaraMqDeviceError(error, 'DeviceCredentialNotFound')) throw error;
        credential = await this.#registerOrGet(clientId, signal);
      }
      await this.store.save(credential);
      return credential;
    });
  }

  /**
   * RegisterDeviceCredential, saving the result. Beware: where the latest registration wins, this replaces the
   * credential a running device holds; {@link ensureCredential} is the safe way to get one.
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

  async #registerOrGet(clientId: string, signal: AbortSignal): Promise<DeviceCredential> {
    try {
      return (await this.#client.registerDeviceCredential(this.instanceId, clientId, { signal })).credential;
    } catch (error) {
      // The service's own spelling.
      if (!isApsaraMqDeviceError(error, 'DeviceCredentialExsit')) throw error;
      return (await this.#client.getDeviceCredential(this.instanceId, clientId, { signal })).credential;
    }
  }

  async #saved(answer: Promise<CredentialResponse>): Promise<CredentialResponse> {
    const result = await answer;
    await this.store.save(result.credential);
    return result;
  }
}

/** Same as `new Provisioner(options)`. */
export function createProvisioner(options: ProvisionerOptions): Provisioner {
  return new Provisioner(options);
}
