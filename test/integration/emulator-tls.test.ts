import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { startEmulator } from '../../src/emulator/index.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { connectMqtt, connectWithInbox, registerDevice, useEmulator } from '../helpers/emulator.js';

const TLS_DIR = resolve(import.meta.dirname, '../../fixtures/tls');
const ca = readFileSync(resolve(TLS_DIR, 'ca.pem'));
const cert = readFileSync(resolve(TLS_DIR, 'server.pem'));
const key = readFileSync(resolve(TLS_DIR, 'server-key.pem'), 'utf8');

describe('broker: MQTT over TLS and secure WebSocket', () => {
  const emu = useEmulator({ tls: { cert, key }, parentTopics: ['Parent'] });

  it('listens on mqtts:// and wss://…/mqtt beside the plain listeners', () => {
    const e = emu();
    expect(e.mqttsUrl).toMatch(/^mqtts:\/\/127\.0\.0\.1:\d+$/);
    expect(e.wssUrl).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/mqtt$/);
    expect(new Set([e.mqttUrl, e.wsUrl, e.mqttsUrl, e.wssUrl].map((url) => new URL(url ?? '').port)).size).toBe(4);
  });

  it('accepts a client that trusts the test CA, over mqtts and wss, and routes between all transports', async () => {
    const e = emu();
    const sub = await connectWithInbox(e.mqttsUrl ?? '', signDeviceCredential(await registerDevice(e, 'GID_tls@@@sub')), { ca });
    const pub = await connectMqtt(e.wssUrl ?? '', signDeviceCredential(await registerDevice(e, 'GID_tls@@@pub')), { ca });
    try {
      await sub.client.subscribeAsync('Parent/tls', { qos: 1 });
      await pub.publishAsync('Parent/tls', 'secret', { qos: 1 });
      expect(await sub.next()).toEqual(['Parent/tls', 'secret']);
      await pub.publishAsync('Parent/p2p/GID_tls@@@sub', 'p2p over tls', { qos: 1 });
      expect(await sub.next()).toEqual(['Parent/p2p/GID_tls@@@sub', 'p2p over tls']);
      await vi.waitFor(() => expect(e.stats().mqtt.connected).toBe(2));
    } finally {
      await Promise.all([sub.client.endAsync(), pub.endAsync()]);
    }
  });

  it('is refused by a client that does not trust the CA (rejectUnauthorized), and never reaches authentication', async () => {
    const e = emu();
    const creds = signDeviceCredential(await registerDevice(e, 'GID_tls@@@untrusting'));
    const before = e.stats().mqtt.connacks;
    for (const url of [e.mqttsUrl, e.wssUrl]) {
      const error = await connectMqtt(url ?? '', creds).then(
        (client) => client.endAsync().then(() => undefined),
        (e: unknown) => e as NodeJS.ErrnoException,
      );
      expect(error?.code).toMatch(/SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY/);
    }
    expect(e.stats().mqtt.connacks).toEqual(before);
  });

  it('keeps TLS ports across restart', async () => {
    const e = emu();
    const before = [e.mqttsUrl, e.wssUrl];
    await e.restart();
    expect([e.mqttsUrl, e.wssUrl]).toEqual(before);
    const client = await connectMqtt(e.mqttsUrl ?? '', signDeviceCredential(await registerDevice(e, 'GID_tls@@@restart')), { ca });
    await client.endAsync();
  });
});

describe('emulator: TLS options', () => {
  it('has no TLS URLs without tls, and can turn wss off', async () => {
    const plain = await startEmulator({ env: {} });
    expect([plain.mqttsUrl, plain.wssUrl]).toEqual([undefined, undefined]);
    await plain.close();
    const noWss = await startEmulator({ env: {}, tls: { cert, key }, wssPort: false });
    try {
      expect(noWss.mqttsUrl).toBeDefined();
      expect(noWss.wssUrl).toBeUndefined();
    } finally {
      await noWss.close();
    }
  });

  it.each([
    ['tlsPort without tls', { tlsPort: 0 }],
    ['wssPort without tls', { wssPort: 0 }],
    ['a key that is not PEM', { tls: { cert, key: 'not a key' } }],
    ['the CA instead of the key', { tls: { cert, key: ca } }],
    ['an empty cert', { tls: { cert: '', key } }],
  ])('refuses %s with InvalidOption, starting nothing', async (_name, bad) => {
    const error: unknown = await startEmulator({ env: {}, ...bad }).then(
      (e) => e.close().then(() => undefined),
      (e: unknown) => e,
    );
    expect(isApsaraMqDeviceError(error, 'InvalidOption')).toBe(true);
    expect((error as Error).message).not.toContain('PRIVATE KEY');
  });
});
