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

  it('refuses a broker whose certificate it cannot verify, as BrokerUnreachable naming the TLS error', async () => {
    const e = emulator();
    const credential = await registerDevice(e, 'GID_tls@@@noca');
    const error = await connectDevice({ credential, brokerUrl: e.mqttsUrl!, reconnect: false }).catch((err: unknown) => err);
    expect(error).toMatchObject({ code: 'BrokerUnreachable', retryable: false });
    expect((error as Error).message).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|unable to verify|self.signed/i);
  });

  it('rejectUnauthorized: false skips verification (tests only)', async () => {
    const e = emulator();
    const credential = await registerDevice(e, 'GID_tls@@@insecure');
    const conn = await connectDevice({ credential, brokerUrl: e.mqttsUrl!, rejectUnauthorized: false });
    onTestFinished(() => conn.end(true));
    expect(conn.online).toBe(true);
  });
});
