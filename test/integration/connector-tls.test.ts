import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice } from '../../src/connector/connect.js';
import { registerDevice, useEmulator } from '../helpers/emulator.js';

const tlsDir = resolve(import.meta.dirname, '../../fixtures/tls');
const ca = readFileSync(resolve(tlsDir, 'ca.pem'));
const emulator = useEmulator({ tls: { cert: readFileSync(resolve(tlsDir, 'server.pem')), key: readFileSync(resolve(tlsDir, 'server-key.pem')) } });

describe('connector over TLS and secure WebSocket', () => {
  it.each(['mqttsUrl', 'wssUrl'] as const)('connects over %s with the test CA', async (which) => {
    const e = emulator();
    const credential = await registerDevice(e, `GID_tls@@@${which}`);
    const conn = await connectDevice({ credential, brokerUrl: e[which]!, ca });
    onTestFinished(() => conn.end(true));
    expect(conn.online).toBe(true);
  });

  it.each(['mqttsUrl', 'wssUrl'] as const)('refuses a broker at %s whose certificate it cannot verify: BrokerUnreachable naming the TLS error, options ca and rejectUnauthorized', async (which) => {
    const e = emulator();
    const credential = await registerDevice(e, `GID_tls@@@noca-${which}`);
    const error = await connectDevice({ credential, brokerUrl: e[which]!, reconnect: false }).catch((err: unknown) => err);
    expect(error).toMatchObject({ code: 'BrokerUnreachable', retryable: false });
    expect((error as Error).message).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT/);
    expect((error as { remedy: string }).remedy).toBe("The broker's certificate is not trusted: pass option ca with the CA that signed it, or rejectUnauthorized: false for tests.");
  });

  it('rejectUnauthorized: false skips verification (tests only)', async () => {
    const e = emulator();
    const credential = await registerDevice(e, 'GID_tls@@@insecure');
    const conn = await connectDevice({ credential, brokerUrl: e.mqttsUrl!, rejectUnauthorized: false });
    onTestFinished(() => conn.end(true));
    expect(conn.online).toBe(true);
  });
});
