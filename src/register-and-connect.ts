/**
 * `registerAndConnect`: the registrar and the device in one call. It composes both roles (the provisioner gets the
 * credential, the connector opens the session), so it lives outside both folders: neither `connector/` nor
 * `provisioner/` imports the other. The registrar's entry (registrar.ts) exports it.
 */
import { type ConnectDeviceOptions, type DeviceConnection, connectDevice } from './connector/connect.js';
import { resolveConnectOptions } from './connector/options.js';
import { type CredentialSource, assertClientId } from './credential.js';
import { AbortedError, ValidationError, isApsaraMqDeviceError } from './errors.js';
import { Provisioner, type ProvisionerOptions } from './provisioner/provisioner.js';

/** Options of {@link registerAndConnect}: where the OpenAPI is, which device, and how to connect. */
export type RegisterAndConnectOptions = ProvisionerOptions &
  Omit<ConnectDeviceOptions, 'credential'> & {
    /** The device's ClientId, `GID_<group>@@@<device>`. */
    clientId: string;
    /** Retry policy of the OpenAPI calls. @default {} (the defaults of DEFAULT_RETRY_OPTIONS); `false` for none */
    retry?: ProvisionerOptions['retry'];
    /**
     * When the broker refuses the credential and the service no longer has one for this ClientId (it was
     * unregistered): `'fail'` stops with `CredentialRejected`; `'register'` registers a new one and reconnects.
     * @default 'fail'
     */
    onMissing?: 'fail' | 'register';
  };

/**
 * The provisioner's {@link Provisioner.credentialSource} (after a refusal: the store when it holds another key, else
 * GetDeviceCredential), plus, with `onMissing: 'register'`, RegisterDeviceCredential when the service no longer has
 * a credential for the ClientId. The request's signal reaches every call.
 */
export function recoveringSource(provisioner: Provisioner, clientId: string, onMissing: 'fail' | 'register'): CredentialSource {
  const source = provisioner.credentialSource(clientId);
  if (onMissing === 'fail') return source;
  return async (request) => {
    try {
      return await source(request);
    } catch (error) {
      // On connect, ensureCredential has already registered what the service lacked.
      if (request.reason !== 'rejected' || !isApsaraMqDeviceError(error, 'DeviceCredentialNotFound')) throw error;
      return (await provisioner.register(clientId, request.signal ? { signal: request.signal } : {})).credential;
    }
  };
}

/**
 * The whole path in one call, nothing to connected: the credential from the store, else GetDeviceCredential,
 * else RegisterDeviceCredential (never for a ClientId that already has one), then an authenticated session that
 * heals a rotated credential. Every option, the connection's included, is checked before the first API call.
 * Runs where the account AccessKey may live (a gateway, a test, a simulator).
 *
 * @example
 * const conn = await registerAndConnect({
 *   endpoint: emulator.apiEndpoint, instanceId: emulator.instanceId, clientId: 'GID_demo@@@dev-1',
 *   brokerUrl: emulator.mqttUrl, store: new FileCredentialStore('./credentials'),
 * });
 */
export async function registerAndConnect(options: RegisterAndConnectOptions): Promise<DeviceConnection> {
  if (options === null || typeof options !== 'object') throw new ValidationError('InvalidOption', 'registerAndConnect needs an options object');
  if ((options as { token?: unknown }).token !== undefined) {
    throw new ValidationError('InvalidOption', 'registerAndConnect connects with the device credential it obtains; for Token mode use connectDevice with option token');
  }
  assertClientId(options.clientId);
  const onMissing = options.onMissing ?? 'fail';
  if (onMissing !== 'fail' && onMissing !== 'register') {
    throw new ValidationError('InvalidOption', `Option onMissing must be 'fail' or 'register', not ${JSON.stringify(onMissing)}`);
  }
  // A Register is billed and issues a credential: a connect option that can never work must fail before it.
  resolveConnectOptions({ ...options, credential: async () => Promise.reject(new Error('not asked')) });
  if (options.signal?.aborted) throw new AbortedError(`Connecting ${options.clientId} was aborted`, options.signal.reason);
  // A device that boots with its fleet meets throttling: retry with jittered backoff unless told otherwise.
  const provisioner = new Provisioner({ ...options, retry: options.retry ?? {} });
  try {
    const connection = await connectDevice({ ...options, credential: recoveringSource(provisioner, options.clientId, onMissing) });
    // The provisioner keeps an HTTP keep-alive agent; release it with the session.
    connection.once('closed', () => provisioner.close());
    return connection;
  } catch (error) {
    provisioner.close();
    throw error;
  }
}
