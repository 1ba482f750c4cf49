import { describe, expect, it } from 'vitest';
import { CONNECT_DEFAULTS, brokerUrlFor, resolveConnectOptions, type ConnectDeviceOptions } from '../../src/connector/options.js';
import { DeviceCredential } from '../../src/credential.js';
import { ValidationError } from '../../src/errors.js';

const credential = new DeviceCredential({ clientId: 'GID_o@@@d', instanceId: 'mqtt-x', deviceAccessKeyId: 'DC.k', deviceAccessKeySecret: 'DC.s' });

function problem(options: Partial<ConnectDeviceOptions> & Record<string, unknown>): string | undefined {
  try {
    resolveConnectOptions({ credential, ...options } as ConnectDeviceOptions);
    return undefined;
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return `${(error as ValidationError).code}: ${(error as Error).message}`;
  }
}

describe('connect options', () => {
  it('fills in the documented defaults', () => {
    const resolved = resolveConnectOptions({ credential });
    expect(resolved).toMatchObject({
      explicitUrl: undefined,
      protocolVersion: 4,
      keepalive: 90,
      clean: true,
      connectTimeoutMs: 10_000,
      reconnect: { minDelayMs: 1_000, maxDelayMs: 60_000 },
      stableSessionMs: 10_000,
      takeover: { minDelayMs: 5_000, maxDelayMs: 300_000, giveUpAfter: Number.POSITIVE_INFINITY },
      maxDeliveryAttempts: 3,
      maxRefetches: 3,
      endTimeoutMs: 5_000,
      queueLimits: { maxMessages: 10_000, maxBytes: 16 * 1024 * 1024 },
      durable: undefined,
      rules: { apsaraMq: true, maxPayloadBytes: 65_536, persistentSession: false },
    });
    expect(resolveConnectOptions({ credential, maxQueuedMessages: Number.POSITIVE_INFINITY, maxQueuedBytes: Number.POSITIVE_INFINITY }).queueLimits).toEqual({
      maxMessages: Number.POSITIVE_INFINITY,
      maxBytes: Number.POSITIVE_INFINITY,
    });
    expect(CONNECT_DEFAULTS.protocolVersion).toBe(4);
  });

  it.each([
    [{ keepalive: -1 }, /InvalidOption: Option keepalive must be an integer from 0 to 65535/],
    [{ keepalive: 1.5 }, /keepalive/],
    [{ connectTimeoutMs: 0 }, /connectTimeoutMs/],
    [{ reconnect: { minDelayMs: 10, maxDelayMs: 5 } }, /reconnect.maxDelayMs must be at least/],
    [{ reconnect: { minDelayMs: Number.NaN } }, /reconnect.minDelayMs/],
    [{ takeover: { giveUpAfter: 0 } }, /takeover.giveUpAfter/],
    [{ maxDeliveryAttempts: 0 }, /maxDeliveryAttempts/],
    [{ maxQueuedMessages: 0 }, /InvalidOption: Option maxQueuedMessages must be an integer of 1 or more, or Infinity, not 0/],
    [{ maxQueuedMessages: 1.5 }, /maxQueuedMessages/],
    [{ maxQueuedBytes: -1 }, /maxQueuedBytes/],
    [{ maxQueuedBytes: '16MB' }, /maxQueuedBytes/],
    [{ protocolVersion: 3 }, /protocolVersion must be 4/],
    [{ sessionExpiryInterval: 60 }, /sessionExpiryInterval needs protocolVersion: 5/],
    [{ userProperties: { a: 'b' } }, /userProperties needs protocolVersion: 5/],
    [{ protocolVersion: 5, userProperties: { a: 1 } }, /userProperties.a/],
    [{ brokerUrl: 'http://x' }, /scheme http/],
    [{ brokerUrl: 'mqtt://user:pw@host' }, /must not carry a user name/],
    [{ transport: 'udp' }, /transport/],
    [{ clean: 'no' }, /clean must be true or false/],
    [{ signal: {} }, /signal must be an AbortSignal/],
    [{ logger: console.log }, /logger/],
    [{ will: { topic: 'w', payload: 'x', qos: 0, retain: false } }, /UnsupportedByService: ApsaraMQ for MQTT does not support will messages/],
    [{ credential: 'x' }, /credential must be a DeviceCredential/],
  ])('%j: %s', (options, expected) => {
    expect(problem(options as Record<string, unknown>)).toMatch(expected);
  });

  it('brokerIsApsaraMq: false lifts the service rules (will, payload limit)', () => {
    const other = resolveConnectOptions({ credential, brokerIsApsaraMq: false, will: { topic: 'w', payload: Buffer.from('x'), qos: 0, retain: false } });
    expect(other.rules).toEqual({ apsaraMq: false, maxPayloadBytes: 268_435_451, persistentSession: false });
    expect(other.will).toMatchObject({ topic: 'w' });
  });

  it('a persistent session is clean: false (3.1.1) or a session expiry above 0 (5)', () => {
    expect(resolveConnectOptions({ credential, clean: false }).rules.persistentSession).toBe(true);
    expect(resolveConnectOptions({ credential, protocolVersion: 5, clean: false }).rules.persistentSession).toBe(false);
    expect(resolveConnectOptions({ credential, protocolVersion: 5, sessionExpiryInterval: 3600 }).rules.persistentSession).toBe(true);
  });

  it('the broker URL: the service endpoint per transport, or the explicit one (WebSocket at /mqtt)', () => {
    expect(brokerUrlFor('mqtt-x')).toBe('mqtt://mqtt-x.mqtt.aliyuncs.com:1883');
    expect(brokerUrlFor('mqtt-x', 'wss')).toBe('wss://mqtt-x.mqtt.aliyuncs.com:443/mqtt');
    expect(brokerUrlFor('mqtt-x', 'tcp', 'ws://127.0.0.1:8083')).toBe('ws://127.0.0.1:8083/mqtt');
    expect(resolveConnectOptions({ credential, brokerUrl: 'mqtt://127.0.0.1:1883' }).explicitUrl).toBe('mqtt://127.0.0.1:1883');
  });
});
