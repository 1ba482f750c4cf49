import { describe, expect, it } from 'vitest';
import { checkAddressSpace, ephemeralPortRange, parseLocalAddresses } from '../../src/simulator/local-address.js';
import { checkStartAt, parseStartAt, resolveSettings } from '../../src/simulator/options.js';

describe('parseLocalAddresses', () => {
  it('expands IPv4 ranges (full or on the last part) and lists, in order', () => {
    expect(parseLocalAddresses('127.0.0.2-127.0.0.5')).toEqual(['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5']);
    expect(parseLocalAddresses('127.0.0.2-4, 10.0.0.1')).toEqual(['127.0.0.2', '127.0.0.3', '127.0.0.4', '10.0.0.1']);
    expect(parseLocalAddresses('127.0.0.255-127.0.1.1')).toEqual(['127.0.0.255', '127.0.1.0', '127.0.1.1']);
    expect(parseLocalAddresses(['::1'])).toEqual(['::1']);
  });

  it('names the bad item', () => {
    expect(() => parseLocalAddresses('127.0.0.9-127.0.0.2')).toThrow(expect.objectContaining({ code: 'InvalidOption', message: expect.stringMatching(/--local-address.*ends before it starts/) }));
    expect(() => parseLocalAddresses('localhost')).toThrow(/"localhost" is neither an IP address nor an IPv4 range/);
    expect(() => parseLocalAddresses('127.0.0.2,127.0.0.2')).toThrow(/listed twice/);
    expect(() => parseLocalAddresses('10.0.0.0-10.1.0.0')).toThrow(/more than 65536/);
    expect(() => parseLocalAddresses(' , ')).toThrow(/no address given/);
  });
});

describe('checkAddressSpace', () => {
  const ports = { low: 32_768, high: 60_999, count: 28_232 };
  const broker = { host: '127.0.0.1', port: 1883 };

  it('reads the ephemeral port range of this machine', () => {
    const range = ephemeralPortRange();
    if (process.platform === 'linux') expect(range?.count).toBe((range?.high ?? 0) - (range?.low ?? 0) + 1);
    expect(ephemeralPortRange('/nonexistent')).toBeUndefined();
  });

  it('accepts a fleet that fits one port per device and source address', () => {
    expect(() => checkAddressSpace(28_232, null, broker, ports)).not.toThrow();
    expect(() => checkAddressSpace(50_000, ['127.0.0.2', '127.0.0.3'], broker, ports)).not.toThrow();
  });

  it('refuses, before connecting, a fleet larger than its address and port space, and says how many addresses it needs', () => {
    expect(() => checkAddressSpace(28_233, null, broker, ports)).toThrow(
      expect.objectContaining({ name: 'SimulatorError', code: 'AddressSpaceTooSmall', message: expect.stringMatching(/28233 devices from one source address toward 127\.0\.0\.1:1883 .*28232 ephemeral ports \(32768-60999.*at least 2 source addresses/) }),
    );
    expect(() => checkAddressSpace(100_000, ['127.0.0.2', '127.0.0.3', '127.0.0.4'], broker, ports)).toThrow(/33334 connections per address .*at least 4 source addresses/);
  });

  it('refuses a source address that is not on this machine or cannot reach the broker', () => {
    expect(() => checkAddressSpace(10, ['192.0.2.77'], broker, ports)).toThrow(/192\.0\.2\.77 is not an address of this machine/);
    expect(() => checkAddressSpace(10, ['127.0.0.2'], { host: '::1', port: 1 }, ports)).toThrow(/not an IPv6 address like the broker/);
    expect(() => checkAddressSpace(10, ['127.0.0.2'], { host: '198.51.100.1', port: 1 }, ports)).toThrow(/loopback address 127\.0\.0\.2 cannot reach/);
  });
});

describe('startAt and protocol', () => {
  it('parses ISO 8601 with a zone, Dates and epoch ms; refuses a time without a zone', () => {
    expect(parseStartAt('2026-12-01T10:00:00Z')).toBe(Date.UTC(2026, 11, 1, 10));
    expect(parseStartAt('2026-12-01T18:00:00+08:00')).toBe(Date.UTC(2026, 11, 1, 10));
    expect(parseStartAt(new Date(5))).toBe(5);
    expect(() => parseStartAt('2026-12-01T10:00:00')).toThrow(/--start-at.*with a time zone/);
    expect(() => parseStartAt('2026-13-45T10:00:00Z')).toThrow(/not a valid time/);
  });

  it('refuses a start already past or more than 7 days ahead', () => {
    expect(() => checkStartAt(1_000, 3_500)).toThrow(/2\.5 s in the past/);
    expect(() => checkStartAt(8 * 86_400_000, 0)).toThrow(/more than 7 days ahead/);
    expect(() => checkStartAt(5_000, 5_000)).not.toThrow();
  });

  it('takes protocol 4 (the default) or 5, and refuses any other level with a ValidationError naming the option', () => {
    expect(resolveSettings({}).protocol).toBe(4);
    expect(resolveSettings({ protocol: 4 }).protocol).toBe(4);
    expect(resolveSettings({ protocol: 5 }).protocol).toBe(5);
    for (const protocol of [3, 6, '5', 4.5]) {
      expect(() => resolveSettings({ protocol: protocol as unknown as 5 })).toThrow(expect.objectContaining({ name: 'ValidationError', code: 'InvalidOption', message: expect.stringMatching(/^Option protocol \(--protocol\) must be 4 \(MQTT 3\.1\.1\) or 5 \(MQTT 5\), not /) }));
    }
    expect(resolveSettings({ localAddress: '127.0.0.2-3' }).localAddresses).toEqual(['127.0.0.2', '127.0.0.3']);
  });
});
