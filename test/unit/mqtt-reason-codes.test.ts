import { describe, expect, it } from 'vitest';
import { type CoreOptions, initialModel, step } from '../../src/connector/state.js';
import { MESSAGE_REFUSAL_REASONS, type RefusalClass, classifyRefusal, refusesMessage } from '../../src/mqtt/reason-codes.js';
import { connackFailure } from '../../src/simulator/device.js';

const ALL_CODES = Array.from({ length: 256 }, (_, code) => code);

/** The codes of one class, for one protocol version. */
function codesOf(kind: RefusalClass, version: 4 | 5): number[] {
  return (version === 5 ? ALL_CODES.filter((c) => c >= 0x80) : [1, 2, 3, 4, 5]).filter((c) => classifyRefusal(c, version) === kind);
}

describe('CONNACK refusals: one classification', () => {
  it('MQTT 3.1.1: 2 identifier, 3 unavailable, 4 and 5 credential, 1 permanent', () => {
    expect(codesOf('identifier', 4)).toEqual([2]);
    expect(codesOf('unavailable', 4)).toEqual([3]);
    expect(codesOf('credential', 4)).toEqual([4, 5]);
    expect(codesOf('permanent', 4)).toEqual([1]);
  });

  it('MQTT 5: 0x85 identifier; 0x86, 0x87 credential; 0x88, 0x89, 0x97, 0x9F passing; every other refusal permanent', () => {
    expect(codesOf('identifier', 5)).toEqual([0x85]);
    expect(codesOf('credential', 5)).toEqual([0x86, 0x87]);
    expect(codesOf('unavailable', 5)).toEqual([0x88, 0x89, 0x97, 0x9f]);
    expect(codesOf('permanent', 5)).toHaveLength(128 - 7);
    expect(codesOf('permanent', 5)).toEqual(expect.arrayContaining([0x80, 0x84, 0x8a, 0x8c, 0x9c, 0x9d]));
  });

  it.each([4, 5] as const)('MQTT %i: the simulator counts and retries every refusal as the connector treats it', (version) => {
    const core: CoreOptions = { protocolVersion: version, reconnect: { minDelayMs: 1, maxDelayMs: 1 }, takeover: false, stableSessionMs: 1, maxRefetches: 3 };
    for (const code of version === 5 ? ALL_CODES.slice(0x80) : [1, 2, 3, 4, 5]) {
      const { effects } = step(initialModel(), { type: 'refused', code }, core, () => 0.5);
      const closed = effects.find((e) => e.type === 'close');
      // The connector asks for a new credential where the simulator (which has no source to ask) stops.
      const connector = closed?.type === 'close' && closed.problem && 'retryable' in closed.problem
        ? { code: closed.problem.code, retryable: closed.problem.retryable }
        : { code: 'CredentialRejected', retryable: false };
      const simulator = connackFailure(code, version);
      expect(simulator.retryable, `CONNACK ${code}`).toBe(connector.retryable);
      expect(simulator.code, `CONNACK ${code}`).toBe(version === 5 ? `${connector.code}:0x${code.toString(16).padStart(2, '0')}` : connector.code);
    }
  });
});

describe('MQTT 5 DISCONNECT reasons that refuse the message just sent', () => {
  it('are the reasons the same packet would be refused for again: malformed, protocol error, not authorized, bad topic, too large, unsupported feature', () => {
    expect([...MESSAGE_REFUSAL_REASONS].sort((a, b) => a - b)).toEqual([0x81, 0x82, 0x87, 0x8f, 0x90, 0x95, 0x99, 0x9a, 0x9b, 0x9e, 0xa1, 0xa2]);
  });

  it('leave out flow control and passing limits (0x93 Receive Maximum exceeded, 0x94 Topic Alias invalid, 0x96 rate, 0x97 quota): the session is at fault, the message is resent', () => {
    for (const reason of [0x93, 0x94, 0x96, 0x97]) expect(refusesMessage(reason)).toBe(false);
  });

  it('leave out every session reason: normal, unspecified, busy, shutting down, keep alive, takeover, administrative action, another server', () => {
    for (const reason of [0x00, 0x04, 0x80, 0x83, 0x89, 0x8b, 0x8d, 0x8e, 0x98, 0x9c, 0x9d, 0x9f, 0xa0]) expect(refusesMessage(reason)).toBe(false);
  });
});
