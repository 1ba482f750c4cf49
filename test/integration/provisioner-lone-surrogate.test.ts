/**
 * A parameter that cannot be sent (issue 24): a lone surrogate has no UTF-8 form, so it cannot be percent-encoded or
 * signed. Before, `queryToken('abc\ud800')` was a retryable NetworkError after 7 s of retries though nothing was sent
 * (a URIError inside the signing). Now it is a ValidationError naming the parameter, at once: the emulator counts no
 * request. The retry policy waits a minute between attempts, so a retry would time the test out.
 */
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import { OpenApiClient } from '../../src/provisioner/api-client.js';
import { MemoryCredentialStore } from '../../src/provisioner/memory-store.js';
import { Provisioner } from '../../src/provisioner/provisioner.js';
import { percentEncode } from '../../src/signer/openapi.js';
import { useEmulator } from '../helpers/emulator.js';

const emulator = useEmulator({}, 'test');
const SLOW_RETRIES = { maxAttempts: 8, minDelayMs: 60_000, maxDelayMs: 60_000 };

/** What `promise` rejects with, checked to be a ValidationError InvalidOption that does not show `secret`. */
async function refused(promise: Promise<unknown>, secret: string): Promise<ValidationError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(ValidationError);
  expect(error).toMatchObject({ code: 'InvalidOption', retryable: false });
  expect((error as Error).message).not.toContain(secret);
  return error as ValidationError;
}

describe.each(['pop-core', 'v3'] as const)('a lone surrogate in a parameter, signed with %s', (signature) => {
  it('queryToken / revokeToken: a ValidationError naming Token, at once, and the emulator counts no request', async () => {
    const e = emulator();
    const p = new Provisioner({ endpoint: e.apiEndpoint, instanceId: e.instanceId, accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret, signature, store: new MemoryCredentialStore(), retry: SLOW_RETRIES });
    const token = 'secret-token-abc\ud800';
    expect((await refused(p.queryToken(token), 'secret-token')).message).toBe('QueryToken: parameter Token holds a lone surrogate (half of a UTF-16 pair), which has no UTF-8 form: nothing was sent');
    expect((await refused(p.revokeToken(token), 'secret-token')).message).toMatch(/^RevokeToken: parameter Token /);
    expect(p.apiCalls).toBe(0);
    expect(e.stats().actions).toEqual({});
    p.close();
  });

  it('call() with any parameter, and an account key that cannot be signed with', async () => {
    const e = emulator();
    const client = new OpenApiClient({ endpoint: e.apiEndpoint, accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret, signature, retry: SLOW_RETRIES });
    expect((await refused(client.call('ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_\udc00' }), 'GID_')).message).toMatch(/parameter GroupId holds a lone surrogate/);
    expect(client.apiCalls).toBe(0);
    expect(() => new OpenApiClient({ endpoint: e.apiEndpoint, accessKeyId: e.accessKeyId, accessKeySecret: 'sec\ud83dret', signature })).toThrow(/^Option accessKeySecret holds a lone surrogate/);
    expect(e.stats().actions).toEqual({});
    client.close();
  });
});

it('percentEncode refuses a lone surrogate with a ValidationError, not a URIError; a well-formed pair encodes', () => {
  expect(() => percentEncode('a\ud800')).toThrow(ValidationError);
  expect(percentEncode('a😀')).toBe('a%F0%9F%98%80');
});
