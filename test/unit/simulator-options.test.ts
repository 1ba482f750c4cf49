import { describe, expect, it } from 'vitest';
import { clientIdProblem } from '../../src/credential.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { parseBrokerUrl } from '../../src/simulator/device.js';
import {
  SIMULATION_DEFAULTS,
  expandTopic,
  parseShard,
  parseTopicTemplate,
  resolveSettings,
  shardRange,
  simulatedClientId,
} from '../../src/simulator/options.js';

function invalid(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(isApsaraMqDeviceError(error)).toBe(true);
    return (error as Error).message;
  }
  throw new Error('expected a ValidationError');
}

describe('sharding', () => {
  it('splits any fleet into disjoint shards that cover it, sizes differing by at most one', () => {
    for (const devices of [1, 2, 7, 100, 1001, 10_000]) {
      for (const count of [1, 2, 3, 4, 7, 16]) {
        if (count > devices) continue;
        const seen = new Array<number>(devices).fill(0);
        const sizes: number[] = [];
        let previousEnd = 0;
        for (let index = 1; index <= count; index++) {
          const [start, end] = shardRange(devices, { index, count });
          expect(start).toBe(previousEnd);
          previousEnd = end;
          sizes.push(end - start);
          for (let i = start; i < end; i++) seen[i] = (seen[i] ?? 0) + 1;
        }
        expect(previousEnd).toBe(devices);
        expect(seen.every((n) => n === 1)).toBe(true);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      }
    }
  });

  it('parses I/N, 1-based', () => {
    expect(parseShard('2/5')).toEqual({ index: 2, count: 5 });
    expect(parseShard(' 1 / 1 ')).toEqual({ index: 1, count: 1 });
    for (const bad of ['0/3', '4/3', '1/0', '1', 'a/b', '1/2/3', '-1/2']) expect(invalid(() => parseShard(bad))).toMatch(/Shard/);
  });

  it('gives each shard its share of the fleet-wide connect rate', () => {
    const settings = resolveSettings({ devices: 1000, connectRate: 100, shard: '1/4' });
    expect(settings.range).toEqual([0, 250]);
    expect(settings.shardConnectRate).toBe(25);
  });
});

describe('topic templates', () => {
  it('expands %c, %i, %g and %%', () => {
    const template = parseTopicTemplate('load/%g/%i/%c/100%%');
    expect(expandTopic(template, { clientId: 'GID_a@@@sim-3', index: 3, group: 'GID_a' })).toBe('load/GID_a/3/GID_a@@@sim-3/100%');
  });

  it('rejects unknown placeholders, wildcards and empty templates', () => {
    expect(invalid(() => parseTopicTemplate('a/%x'))).toMatch(/%x/);
    expect(invalid(() => parseTopicTemplate('a/%'))).toMatch(/placeholder/);
    expect(invalid(() => parseTopicTemplate('a/+/b'))).toMatch(/\+/);
    expect(invalid(() => parseTopicTemplate('a/#'))).toMatch(/#/);
    expect(invalid(() => parseTopicTemplate(''))).toMatch(/empty/);
  });
});

describe('resolveSettings', () => {
  it('fills in the documented defaults (the no-flag `npm start` run)', () => {
    const settings = resolveSettings();
    expect(settings).toMatchObject({ devices: 200, durationMs: 20_000, groupId: 'GID_sim', topic: 'sim/%i', range: [0, 200], shard: { index: 1, count: 1 } });
    expect(settings.devices).toBe(SIMULATION_DEFAULTS.devices);
  });

  it('makes valid ClientIds of at most 64 characters', () => {
    const settings = resolveSettings({ devices: 10_000, groupId: 'GID_fleet' });
    expect(clientIdProblem(simulatedClientId(settings.groupId, 9_999))).toBeUndefined();
    const long = `GID_${'x'.repeat(52)}`;
    expect(invalid(() => resolveSettings({ devices: 1_000, groupId: long }))).toMatch(/64 are allowed/);
  });

  it('rejects a payload over 64 KB or under the 8-byte send time', () => {
    expect(resolveSettings({ payloadSize: 65_536 }).payloadSize).toBe(65_536);
    expect(invalid(() => resolveSettings({ payloadSize: 65_537 }))).toMatch(/payloadSize/);
    expect(invalid(() => resolveSettings({ payloadSize: 7 }))).toMatch(/payloadSize/);
  });

  it('rejects bad numbers, QoS, GroupIds and topics', () => {
    expect(invalid(() => resolveSettings({ devices: 0 }))).toMatch(/devices/);
    expect(invalid(() => resolveSettings({ devices: 1.5 }))).toMatch(/devices/);
    expect(invalid(() => resolveSettings({ connectRate: -1 }))).toMatch(/connectRate/);
    expect(invalid(() => resolveSettings({ qos: 2 as 0 }))).toMatch(/qos/);
    expect(invalid(() => resolveSettings({ groupId: 'sim' }))).toMatch(/GroupId/);
    expect(invalid(() => resolveSettings({ topic: `t/${'x'.repeat(60)}/%i` }))).toMatch(/64/);
    expect(invalid(() => resolveSettings({ devices: 3, shard: '1/4' }))).toMatch(/Shard count/);
  });

  it('with subscribe, needs a topic of its own per device', () => {
    expect(invalid(() => resolveSettings({ subscribe: true, topic: 'all/%g' }))).toMatch(/%c or %i/);
    expect(resolveSettings({ subscribe: true, topic: 'one/%c' }).subscribe).toBe(true);
  });
});

describe('parseBrokerUrl', () => {
  it('takes mqtt:// and mqtts:// with their default ports', () => {
    expect(parseBrokerUrl('mqtt://broker.example')).toEqual({ host: 'broker.example', port: 1883, tls: false });
    expect(parseBrokerUrl('mqtts://broker.example')).toEqual({ host: 'broker.example', port: 8883, tls: true });
    expect(parseBrokerUrl('tcp://[::1]:1999')).toEqual({ host: '::1', port: 1999, tls: false });
  });

  it('refuses WebSocket and anything that is not a broker URL', () => {
    expect(invalid(() => parseBrokerUrl('ws://h/mqtt'))).toMatch(/mqtt:\/\/ or mqtts:\/\//);
    expect(invalid(() => parseBrokerUrl('http://h'))).toMatch(/scheme/);
    expect(invalid(() => parseBrokerUrl('not a url'))).toMatch(/not a URL/);
  });
});

describe('the embedded emulator\'s parent topics', () => {
  it('are the first level of the topic template, or any when that level has a placeholder', async () => {
    const { parentTopicsOf } = await import('../../src/simulator/run.js');
    expect(parentTopicsOf('sim/%i')).toEqual(['sim']);
    expect(parentTopicsOf('load/%g/%c')).toEqual(['load']);
    expect(parentTopicsOf('%g/%i')).toBe('*');
    expect(parentTopicsOf('x%i/y')).toBe('*');
  });
});

describe('client and consumer', () => {
  it('raw by default; connector on request; anything else, or connector with source addresses, is refused', () => {
    expect(resolveSettings({}).client).toBe('raw');
    expect(resolveSettings({ client: 'connector' }).client).toBe('connector');
    expect(() => resolveSettings({ client: 'mosquitto' as 'raw' })).toThrow(/client \(--client\)/);
    expect(() => resolveSettings({ client: 'connector', localAddress: '127.0.0.2' })).toThrow(/connector devices \(--client connector\) connect from the address the system chooses/);
    expect(resolveSettings({}).consumer).toBeUndefined();
    expect(resolveSettings({ consumer: false }).consumer).toBe(false);
  });
});
