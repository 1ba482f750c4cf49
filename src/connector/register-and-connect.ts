import { assertClientId } from '../credential.js';
import { Provisioner, type ProvisionerOptions } from '../provisioner/provisioner.js';
import { type ConnectDeviceOptions, type DeviceConnection, connectDevice } from './connect.js';

/** Options of {@link registerAndConnect}: where the OpenAPI is, which device, and how to connect. */
export type RegisterAndConnectOptions = ProvisionerOptions & Omit<ConnectDeviceOptions, 'credential'> & {
  /** The device's ClientId, `GID_<group>@@@<device>`. */
  clientId: string;
};

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
  const provisioner = new Provisioner(options);
  try {
    const connection = await connectDevice({ ...options, credential: provisioner.credentialSource(options.clientId) });
    // The provisioner keeps an HTTP keep-alive agent; release it with the session.
    connection.once('closed', () => provisioner.close());
    return connection;
  } catch (error) {
    provisioner.close();
    throw error;
  }
}
