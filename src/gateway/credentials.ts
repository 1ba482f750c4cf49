/**
 * Credentials of a gateway's devices: the store first, the registrar (a Provisioner) only for a device the store
 * does not hold, or whose stored key the broker refused. The registrar is made by a factory called once, on the
 * first such need, so a gateway whose devices are all in the store never loads the registrar's client.
 */
import type { CredentialSource, DeviceCredential } from '../credential.js';
import { ConfigurationError } from '../errors.js';

/** What a gateway needs of a registrar: a `Provisioner` from `apsaramq-device/provisioner` is one. */
export interface GatewayRegistrar {
  /** The credential of a device: the store, GetDeviceCredential, else RegisterDeviceCredential (at the account's rate). */
  ensureCredential(clientId: string, options?: { signal?: AbortSignal }): Promise<DeviceCredential>;
  /** The source a connection asks when the broker refused its key (the recovery ladder). */
  credentialSource(clientId: string): CredentialSource;
  /** UnRegister a device (remove with `unregister: true`). */
  unregister(clientId: string): Promise<unknown>;
}

/** Options of {@link storeCredentials}. */
export interface StoreCredentialsOptions {
  /** The instance of the devices. */
  readonly instanceId: string;
  /** Where credentials are kept (e.g. a `FileCredentialStore`); read before anything else. */
  readonly store: { load(instanceId: string, clientId: string): Promise<DeviceCredential | undefined> };
  /**
   * Makes the registrar, once, on the first device that needs it (not in the store, or its key refused); share its
   * store with the gateway's. Without it, a device not in the store fails for good with `MissingAccessKey` (nothing
   * can register it).
   */
  readonly registrar?: () => GatewayRegistrar | Promise<GatewayRegistrar>;
}

/** The credential sources of a gateway's devices, and their UnRegister. */
export interface GatewayCredentials {
  /** The source of one device (asked before its first CONNECT). */
  credentialFor(clientId: string, signal?: AbortSignal): Promise<CredentialSource>;
  /** UnRegister a device; `undefined` when there is no registrar to do it. */
  readonly unregister: ((clientId: string) => Promise<unknown>) | undefined;
}

/**
 * Store-first credentials for a {@link Gateway}: a device found in `store` connects with it; the registrar, made by
 * `registrar()` on first need, gets (or registers) the others and heals a refused key. Every device shares one
 * registrar, so its rate limiter paces the OpenAPI calls of all of them (the account's limit).
 */
export function storeCredentials(options: StoreCredentialsOptions): GatewayCredentials {
  const { instanceId, store } = options;
  let registrar: Promise<GatewayRegistrar> | undefined;
  const registrarNow = (clientId: string): Promise<GatewayRegistrar> => {
    if (!options.registrar) {
      return Promise.reject(
        new ConfigurationError(
          'MissingAccessKey',
          `${clientId} needs the OpenAPI (its credential is not in the store, or the broker refused it) and the gateway has no registrar`,
          'Save the credential in the store first (apsaramq-device provision), or pass the gateway a registrar.',
        ),
      );
    }
    const make = options.registrar;
    if (registrar === undefined) {
      const made = Promise.resolve().then(make);
      // A registrar that could not be made is tried again by the next device that needs it (one handler, not one per
      // device that asks).
      made.catch(() => {
        if (registrar === made) registrar = undefined;
      });
      registrar = made;
    }
    return registrar;
  };
  return {
    async credentialFor(clientId, signal) {
      const first = (await store.load(instanceId, clientId)) ?? (await (await registrarNow(clientId)).ensureCredential(clientId, signal ? { signal } : {}));
      let ladder: CredentialSource | undefined;
      return async (request) => {
        if (request.reason === 'connect') return first;
        ladder ??= (await registrarNow(clientId)).credentialSource(clientId);
        return ladder(request);
      };
    },
    unregister: options.registrar ? async (clientId) => (await registrarNow(clientId)).unregister(clientId) : undefined,
  };
}
