import { assertClientId, assertInstanceId } from '../credential.js';
import { ValidationError } from '../errors.js';

/**
 * Check the (instance id, ClientId) pair that names a stored credential. Beyond the usual grammar, the instance id
 * must not be `.` or `..`: the instance id grammar allows dots and a file store uses it as a directory name.
 */
export function assertStoreKey(instanceId: string, clientId: string): void {
  assertInstanceId(instanceId);
  assertClientId(clientId);
  if (/^\.+$/.test(instanceId)) throw new ValidationError('InvalidInstanceId', `Invalid instance id ${JSON.stringify(instanceId)}`);
}
