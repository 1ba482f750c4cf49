/** storeCredentials: the store first; the registrar made once, only when a device needs it. */
import { describe, expect, it } from 'vitest';
import { DeviceCredential } from '../../src/credential.js';
import { type GatewayRegistrar, storeCredentials } from '../../src/gateway/credentials.js';
import { MemoryCredentialStore } from '../../src/provisioner/memory-store.js';

const credential = (clientId: string, key = 'DC.k'): DeviceCredential => new DeviceCredential({ clientId, instanceId: 'mqtt-gw', deviceAccessKeyId: key, deviceAccessKeySecret: 'DC.s' });

describe('storeCredentials', () => {
  it('a device in the store connects with it and makes no registrar; one not in it makes the registrar once, shared', async () => {
    const store = new MemoryCredentialStore();
    await store.save(credential('GID_gw@@@stored'));
    const made: string[] = [];
    const calls: string[] = [];
    const registrar: GatewayRegistrar = {
      ensureCredential: async (clientId) => {
        calls.push(`ensure ${clientId}`);
        return credential(clientId, 'DC.new');
      },
      credentialSource: (clientId) => async () => {
        calls.push(`ladder ${clientId}`);
        return credential(clientId, 'DC.rotated');
      },
      unregister: async (clientId) => calls.push(`unregister ${clientId}`),
    };
    const credentials = storeCredentials({ instanceId: 'mqtt-gw', store, registrar: () => (made.push('registrar'), registrar) });
    const stored = await credentials.credentialFor('GID_gw@@@stored');
    expect((await stored({ reason: 'connect' })).deviceAccessKeyId).toBe('DC.k');
    expect(made).toEqual([]);
    const [a, b] = await Promise.all([credentials.credentialFor('GID_gw@@@new-1'), credentials.credentialFor('GID_gw@@@new-2')]);
    expect((await a({ reason: 'connect' })).deviceAccessKeyId).toBe('DC.new');
    expect((await b({ reason: 'connect' })).deviceAccessKeyId).toBe('DC.new');
    expect(made).toEqual(['registrar']);
    // A refused key climbs the registrar's ladder.
    expect((await stored({ reason: 'rejected', rejected: credential('GID_gw@@@stored') })).deviceAccessKeyId).toBe('DC.rotated');
    await credentials.unregister?.('GID_gw@@@new-1');
    expect(calls).toEqual(['ensure GID_gw@@@new-1', 'ensure GID_gw@@@new-2', 'ladder GID_gw@@@stored', 'unregister GID_gw@@@new-1']);
    expect(made).toEqual(['registrar']);
  });

  it('without a registrar, a device not in the store fails with MissingAccessKey, and there is no unregister', async () => {
    const credentials = storeCredentials({ instanceId: 'mqtt-gw', store: new MemoryCredentialStore() });
    await expect(credentials.credentialFor('GID_gw@@@none')).rejects.toMatchObject({ code: 'MissingAccessKey', retryable: false });
    expect(credentials.unregister).toBeUndefined();
  });

  it('a registrar that could not be made is made again for the next device', async () => {
    let attempts = 0;
    const credentials = storeCredentials({
      instanceId: 'mqtt-gw',
      store: new MemoryCredentialStore(),
      registrar: () => {
        attempts += 1;
        if (attempts === 1) throw new Error('pop-core is not installed');
        return { ensureCredential: async (clientId) => credential(clientId), credentialSource: () => async () => credential('x'), unregister: async () => undefined };
      },
    });
    await expect(credentials.credentialFor('GID_gw@@@a')).rejects.toThrow('pop-core is not installed');
    await expect(credentials.credentialFor('GID_gw@@@a')).resolves.toBeTypeOf('function');
    expect(attempts).toBe(2);
  });
});
