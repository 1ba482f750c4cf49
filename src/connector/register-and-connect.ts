import { assertClientId, type CredentialSource } from '../credential.js';
import { ValidationError, isApsaraMqDeviceError } from '../errors.js';
import { Provisioner, type ProvisionerOptions } from '../provisioner/provisioner.js';
import { type ConnectDeviceOptions, type DeviceConnection, connectDevice } from './connect.js';

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
 * The recovery ladder for a refused CONNECT: re-read the store (another process may have refreshed it), then
 * GetDeviceCredential (a changed key means rotation), then, only when allowed, RegisterDeviceCredential.
 */
export function recoveringSource(provisioner: Provisioner, clientId: string, onMissing: 'fail' | 'register'): CredentialSource {
  const base = provisioner.credentialSource(clientId);
  return async (request) => {
    try {
      return await base(request);
    } catch (error) {
      if (request.reason === 'rejected' && onMissing === 'register' && isApsaraMqDeviceError(error, 'DeviceCredentialNotFound')) {
        return (await provisioner.register(clientId, request.signal ? { signal: request.signal } : {})).credential;
      }
      throw error;
    }
  };
}

/**
 * The whole path in one call, nothing to connected: the credential from the store, else GetDeviceCredential,
 * else RegisterDeviceCredential (never for a ClientId that already has one), then an authenticated session that
 * heals a rotated credential. Runs where the account AccessKey may live (a gateway, a test, a simulator).
 *
 * @example
 * const conn = await registerAndConnect({
 *   endpoint: emulator.apiEndpoint, instanceId: emulator.instanceId, clientId: 'GID_demo@@@dev-1',
 *   brokerUrl: emulator.mqttUrl, store: new FileCredentialStore('./credentials'),
 * });
 */
export async function registerAndConnect(options: RegisterAndConnectOptions): Promise<DeviceConnection> {
  assertClientId(options.clientId);
  const onMissing = options.onMissing ?? 'fail';
  if (onMissing !== 'fail' && onMissing !== 'register') {
    throw new ValidationError('InvalidOption', `Option onMissing must be 'fail' or 'register', not ${JSON.stringify(onMissing)}`);
  }
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
