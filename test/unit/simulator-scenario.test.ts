import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import { InvalidScenarioError } from '../../src/simulator/errors.js';
import { planGameDay } from '../../src/simulator/game-day-plan.js';
import { resolveSettings } from '../../src/simulator/options.js';
import { type FaultPlan, devicesInRange, hits, parseScenario, planScenario, readScenarioFile } from '../../src/simulator/scenario.js';

/** The InvalidScenarioError of `fn`, whose field must be `field`; its message must match `words`. */
function refusal(fn: () => unknown, field: string | undefined, words: RegExp): InvalidScenarioError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidScenarioError);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ code: 'InvalidScenario', retryable: false, field });
    expect((error as Error).message).toMatch(words);
    return error as InvalidScenarioError;
  }
  throw new Error('accepted');
}

const RUN = { devices: 1_000, durationMs: 120_000, groupId: 'GID_sim' };

describe('parseScenario: every kind, its defaults, and the field at fault by its path', () => {
  it('fills in defaults and keeps the checked faults', () => {
    const scenario = parseScenario(
      {
        faults: [
          { at: 10, kind: 'broker-restart' },
          { at: 12, kind: 'partition', share: 0.5, for: 30 },
          { at: 12, kind: 'latency', ms: 200, devices: [1, 'GID_sim@@@sim-7'], for: 5 },
          { at: 12, kind: 'bandwidth', bytesPerSec: 1_000, for: 5 },
          { at: 20, kind: 'revoke', devices: 20 },
          { at: 30, kind: 'api-faults', rate: 0.5, for: 10, label: 'throttling' },
        ],
      },
      'scenarios/demo.json',
    );
    expect(scenario.name).toBe('demo');
    expect(scenario.seed).toBe(1);
    expect(scenario.faults).toEqual([
      { kind: 'broker-restart', at: 10, count: 1, every: 0, down: 0 },
      { kind: 'partition', at: 12, for: 30, devices: { share: 0.5 } },
      { kind: 'latency', at: 12, for: 5, ms: 200, devices: { list: [1, 'GID_sim@@@sim-7'] } },
      { kind: 'bandwidth', at: 12, for: 5, bytesPerSec: 1_000, devices: { all: true } },
      { kind: 'revoke', at: 20, mode: 'refresh', kick: true, devices: { count: 20 } },
      { kind: 'api-faults', at: 30, for: 10, rate: 0.5, codes: ['Throttling.User', 'InternalError'], label: 'throttling' },
    ]);
  });

  it('refuses what cannot be played, naming the field', () => {
    refusal(() => parseScenario([]), undefined, /is not an object with "faults"/);
    refusal(() => parseScenario({ faults: [] }), 'faults', /is empty/);
    refusal(() => parseScenario({ faults: [], extra: 1 }), 'extra', /is not a field of a scenario/);
    refusal(() => parseScenario({ faults: [{ kind: 'partition', for: 3 }] }), 'faults[0].at', /is missing \(a number of seconds, 0 or more/);
    refusal(() => parseScenario({ faults: [{ at: -1, kind: 'partition', for: 3 }] }), 'faults[0].at', /must be a number of seconds, 0 or more/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'earthquake' }] }), 'faults[0].kind', /must be one of broker-restart, partition, latency, bandwidth, revoke, api-faults, token-revoke/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'partition', for: 3, shares: 0.5 }] }), 'faults[0].shares', /is not a field of a partition fault \(it has at, kind, label, for, share, devices\)/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'partition' }] }), 'faults[0].for', /is missing/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'partition', for: 3, share: 1.5 }] }), 'faults[0].share', /above 0 and at most 1/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'partition', for: 3, share: 0.5, devices: 3 }] }), 'faults[0].share', /both given/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'revoke' }] }), 'faults[0].devices', /is missing \(how many devices/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'revoke', devices: 2, mode: 'delete' }] }), 'faults[0].mode', /"refresh".*"unregister"/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'revoke', devices: [-1] }] }), 'faults[0].devices[0]', /a device index \(0 or more\) or a ClientId/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'broker-restart', count: 3, every: 5, down: 5 }] }), 'faults[0].every', /not more than down/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'broker-restart', count: 2 }] }), 'faults[0].every', /is missing/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'api-faults', rate: 0.5, for: 3, codes: ['Nope'] }] }), 'faults[0].codes[0]', /an OpenAPI error code of the catalog/);
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'latency', ms: 0, for: 3 }] }), 'faults[0].ms', /an integer from 1 to 60000/);
  });

  it('refuses token-revoke with what to use instead: the simulator runs no Token-mode device', () => {
    refusal(() => parseScenario({ faults: [{ at: 1, kind: 'token-revoke' }] }), 'faults[0].kind', /token-revoke needs Token-mode devices.*use revoke/);
  });
});

describe('planScenario: the scenario against a run', () => {
  it('expands a restart into its occurrences and sorts every fault by its start', () => {
    const plans = planScenario(parseScenario({ faults: [{ at: 30, kind: 'partition', for: 5 }, { at: 10, kind: 'broker-restart', count: 3, every: 15, down: 2 }] }), RUN);
    expect(plans.map((p) => [p.id, p.kind, p.atMs, p.forMs])).toEqual([
      ['2.1', 'broker-restart', 10_000, 2_000],
      ['2.2', 'broker-restart', 25_000, 2_000],
      ['1', 'partition', 30_000, 5_000],
      ['2.3', 'broker-restart', 40_000, 2_000],
    ]);
  });

  it('refuses a fault that ends after the run, or devices the fleet does not have', () => {
    refusal(() => planScenario(parseScenario({ faults: [{ at: 100, kind: 'partition', for: 30 }] }), RUN, 'x.json'), 'faults[0].for', /end 130 s after the start of connecting, after the run's 120 s/);
    refusal(() => planScenario(parseScenario({ faults: [{ at: 110, kind: 'broker-restart', count: 2, every: 15 }] }), RUN), 'faults[0].at', /end 125 s/);
    refusal(() => planScenario(parseScenario({ faults: [{ at: 1, kind: 'revoke', devices: 2_000 }] }), RUN), 'faults[0].devices', /is 2000 devices, but the fleet has 1000/);
    refusal(() => planScenario(parseScenario({ faults: [{ at: 1, kind: 'revoke', devices: [5, 1_000] }] }), RUN), 'faults[0].devices[1]', /is device 1000, but the fleet has devices 0 to 999/);
    refusal(() => planScenario(parseScenario({ faults: [{ at: 1, kind: 'revoke', devices: ['GID_other@@@sim-1'] }] }), RUN), 'faults[0].devices[0]', /is not a ClientId of this run's devices \(GID_sim@@@sim-0 to GID_sim@@@sim-999\)/);
  });

  it('chooses exactly the share or count asked, the same devices whichever shard asks, and other devices for another seed', () => {
    const plan = (seed: number, fault: object): FaultPlan => planScenario(parseScenario({ seed, faults: [fault] }), RUN)[0] as FaultPlan;
    const half = plan(1, { at: 1, kind: 'partition', share: 0.5, for: 1 });
    expect(half.devices).not.toBe('all');
    expect(half.devices.length).toBe(500);
    // Shards see the plan through their own ranges: together they are the plan, each device once.
    const shards = [[0, 333], [333, 666], [666, 1_000]].flatMap(([s, e]) => devicesInRange(half, s as number, e as number));
    expect(shards).toEqual([...(half.devices as Uint32Array)]);
    for (let i = 0; i < 1_000; i++) expect(hits(half, i)).toBe((half.devices as Uint32Array).includes(i));
    expect([...(plan(1, { at: 1, kind: 'partition', share: 0.5, for: 1 }).devices as Uint32Array)]).toEqual([...(half.devices as Uint32Array)]);
    expect([...(plan(2, { at: 1, kind: 'partition', share: 0.5, for: 1 }).devices as Uint32Array)]).not.toEqual([...(half.devices as Uint32Array)]);
    expect((plan(1, { at: 1, kind: 'revoke', devices: 20 }).devices as Uint32Array).length).toBe(20);
    expect(plan(1, { at: 1, kind: 'partition', share: 1, for: 1 }).devices).toBe('all');
    expect([...(plan(1, { at: 1, kind: 'revoke', devices: [9, 'GID_sim@@@sim-3', 9] }).devices as Uint32Array)]).toEqual([3, 9]);
  });
});

describe('planGameDay: what a game day needs of the run', () => {
  const scenario = parseScenario({ faults: [{ at: 1, kind: 'partition', for: 1 }] });

  it('turns the backend subscriber on with a scenario, and subscribes it to the template with + for each placeholder level', () => {
    expect(planGameDay(resolveSettings({ topic: 'fleet/%i/telemetry' }), scenario, 'x.json', false)).toMatchObject({ consumer: true, filter: 'fleet/+/telemetry' });
    expect(planGameDay(resolveSettings({ topic: 'fleet/%i', consumer: false }), scenario, 'x.json', false)).toMatchObject({ consumer: false, filter: undefined });
    expect(planGameDay(resolveSettings({}), undefined, undefined, false)).toBeUndefined();
    expect(planGameDay(resolveSettings({ consumer: true }), undefined, undefined, false)).toMatchObject({ consumer: true, plans: [], filter: 'sim/+' });
  });

  it('refuses a payload too small for the message identity, a placeholder parent, and connector devices over TLS through the relay', () => {
    expect(() => planGameDay(resolveSettings({ payloadSize: 8 }), scenario, 'x.json', false)).toThrow(/payloadSize \(--payload-size\) is 8: .* 16 bytes at least/);
    expect(() => planGameDay(resolveSettings({ topic: '%g/%i' }), scenario, 'x.json', false)).toThrow(/placeholder in its first level/);
    refusal(() => planGameDay(resolveSettings({ client: 'connector' }), scenario, 'x.json', true), 'faults[0].kind', /connector's TLS check/);
  });
});

describe('readScenarioFile', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'apsaramq-scenario-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads JSON, and YAML by its extension', async () => {
    await writeFile(join(dir, 'a.json'), JSON.stringify({ faults: [{ at: 1, kind: 'partition', share: 0.25, for: 2 }] }));
    await writeFile(join(dir, 'b.yaml'), 'name: yaml one\nfaults:\n  - at: 1\n    kind: partition\n    share: 0.25\n    for: 2\n');
    const [a, b] = [await readScenarioFile(join(dir, 'a.json')), await readScenarioFile(join(dir, 'b.yaml'))];
    expect(a.name).toBe('a');
    expect(b.name).toBe('yaml one');
    expect(b.faults).toEqual(a.faults);
  });

  it('a file that is not there, or not JSON, is InvalidScenario naming it', async () => {
    await writeFile(join(dir, 'bad.json'), '{"faults": [');
    await expect(readScenarioFile(join(dir, 'missing.json'))).rejects.toMatchObject({ code: 'InvalidScenario', message: expect.stringMatching(/missing\.json is not a scenario this version can play: cannot be read \(ENOENT\)/) });
    await expect(readScenarioFile(join(dir, 'bad.json'))).rejects.toMatchObject({ code: 'InvalidScenario', message: expect.stringMatching(/bad\.json is not a scenario this version can play: is not JSON/) });
  });
});
