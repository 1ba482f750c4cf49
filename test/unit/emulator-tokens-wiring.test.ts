import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { ACTIONS, POST_ONLY_ACTIONS, routeAction, type ActionContext } from '../../src/emulator/actions.js';
import { parseState, serializeState } from '../../src/emulator/data-dir.js';
import { Gateway } from '../../src/emulator/gateway.js';
import type { EmulatorEvents } from '../../src/emulator/emulator.js';
import { resolveOptions, type EmulatorOptions } from '../../src/emulator/options.js';
import { CredentialRegistry } from '../../src/emulator/registry.js';
import { OnlineClients } from '../../src/emulator/online-clients.js';
import { TokenRegistry, type TokenRecord } from '../../src/emulator/token-registry.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { apiFaultCode as codeOf } from '../helpers/emulator.js';

describe('emulator options of the token and session actions', () => {
  const invalid = (options: Record<string, unknown>): string => {
    try {
      resolveOptions({ env: {}, ...options } as EmulatorOptions);
    } catch (error) {
      expect(isApsaraMqDeviceError(error, 'InvalidOption')).toBe(true);
      return (error as Error).message;
    }
    throw new Error(`accepted ${JSON.stringify(options)}`);
  };

  it('defaults: the documented limits, SystemOverFlow, refuse GET, performance.now', () => {
    const o = resolveOptions({ env: {} });
    expect(o.actionQpsLimits).toEqual({ ApplyToken: 100, QueryToken: 100, RevokeToken: 5, QuerySessionByClientId: 500, BatchQuerySessionByClientIds: 100 });
    expect(o.actionThrottleCode).toBe('SystemOverFlow');
    expect(o.getOnPostOnly).toBe('refuse');
    const before = performance.now();
    const reading = o.rateClock();
    expect(reading).toBeGreaterThanOrEqual(before);
    expect(reading).toBeLessThanOrEqual(performance.now());
  });

  it('the default limits are what the gateway enforces: the N+1th call of an action in one instant is refused with its code', () => {
    // The emulator's own wiring: the resolved defaults into the gateway, on a frozen rate clock.
    const g = new Gateway(resolveOptions({ env: {}, rateClock: () => 0 }));
    const expected = { ApplyToken: [100, 'ApplyTokenOverFlow'], QueryToken: [100, 'QueryTokenOverFlow'], RevokeToken: [5, 'RevokeTokenOverFlow'], QuerySessionByClientId: [500, 'SystemOverFlow'], BatchQuerySessionByClientIds: [100, 'SystemOverFlow'] } as const;
    for (const [action, [limit, code]] of Object.entries(expected)) {
      const answers = Array.from({ length: limit + 1 }, () => codeOf(() => g.throttleAction('k', action)));
      expect(answers.slice(0, limit).every((answer) => answer === undefined), action).toBe(true);
      expect(answers[limit], action).toBe(code);
    }
  });

  it('takes some limits and keeps the others', () => {
    const rateClock = (): number => 7;
    const o = resolveOptions({ env: {}, actionQpsLimits: { RevokeToken: 1, QueryToken: Number.POSITIVE_INFINITY }, actionThrottleCode: 'Throttling.Api', rateClock, getOnPostOnly: 'accept' });
    expect(o.actionQpsLimits).toEqual({ ApplyToken: 100, QueryToken: Number.POSITIVE_INFINITY, RevokeToken: 1, QuerySessionByClientId: 500, BatchQuerySessionByClientIds: 100 });
    expect(o.actionThrottleCode).toBe('Throttling.Api');
    expect(o.rateClock).toBe(rateClock);
    expect(o.getOnPostOnly).toBe('accept');
  });

  it('refuses bad values, naming the option', () => {
    expect(invalid({ actionQpsLimits: { RegisterDeviceCredential: 5 } })).toBe(
      'Emulator option actionQpsLimits names "RegisterDeviceCredential", which has no limit of its own; use one of ApplyToken, QueryToken, RevokeToken, QuerySessionByClientId, BatchQuerySessionByClientIds',
    );
    expect(invalid({ actionQpsLimits: { RevokeToken: 0 } })).toBe('Emulator option actionQpsLimits.RevokeToken must be an integer of 1 or more, or Infinity, not 0');
    expect(invalid({ actionQpsLimits: { RevokeToken: 2.5 } })).toBe('Emulator option actionQpsLimits.RevokeToken must be an integer of 1 or more, or Infinity, not 2.5');
    expect(invalid({ actionQpsLimits: 5 })).toBe('Emulator option actionQpsLimits must be an object of action → calls per second, not 5');
    expect(invalid({ actionQpsLimits: [] })).toBe('Emulator option actionQpsLimits must be an object of action → calls per second, not a object');
    expect(invalid({ actionThrottleCode: 'Throttling.User' })).toBe("Emulator option actionThrottleCode must be 'SystemOverFlow' or 'Throttling.Api', not \"Throttling.User\"");
    expect(invalid({ getOnPostOnly: true })).toBe("Emulator option getOnPostOnly must be 'refuse' or 'accept', not true");
    expect(invalid({ rateClock: 5 })).toBe('Emulator option rateClock must be a function returning monotonic ms, not 5');
  });
});

describe('per-action throttling in the gateway', () => {
  const KEY = { accessKeyId: 'LTAItest', accessKeySecret: 'testsecret' };
  let clock = 0;
  const gateway = (limits: Record<string, number>, code?: string): Gateway =>
    new Gateway({
      ...KEY, timestampWindowMs: 900_000, nonceWindowMs: 900_000, qpsLimit: 500, now: () => 0,
      actionQpsLimits: limits, rateClock: () => clock, ...(code === undefined ? {} : { actionThrottleCode: code }),
    });

  it('answers each action its own OverFlow code, the others actionThrottleCode, and leaves unlimited actions alone', () => {
    clock = 0;
    const g = gateway({ ApplyToken: 1, QueryToken: 1, RevokeToken: 1, QuerySessionByClientId: 1 });
    for (const action of ['ApplyToken', 'QueryToken', 'RevokeToken', 'QuerySessionByClientId']) expect(codeOf(() => g.throttleAction('k', action))).toBeUndefined();
    expect(codeOf(() => g.throttleAction('k', 'ApplyToken'))).toBe('ApplyTokenOverFlow');
    expect(codeOf(() => g.throttleAction('k', 'QueryToken'))).toBe('QueryTokenOverFlow');
    expect(codeOf(() => g.throttleAction('k', 'RevokeToken'))).toBe('RevokeTokenOverFlow');
    expect(codeOf(() => g.throttleAction('k', 'QuerySessionByClientId'))).toBe('SystemOverFlow');
    expect(codeOf(() => g.throttleAction('other-key', 'ApplyToken'))).toBeUndefined(); // per AccessKeyId
    for (let i = 0; i < 1000; i++) expect(codeOf(() => g.throttleAction('k', 'GetDeviceCredential'))).toBeUndefined();
    expect(codeOf(() => g.throttleAction('k', '__proto__'))).toBeUndefined();
    const api = gateway({ BatchQuerySessionByClientIds: 1 }, 'Throttling.Api');
    expect(codeOf(() => api.throttleAction('k', 'BatchQuerySessionByClientIds'))).toBeUndefined();
    expect(codeOf(() => api.throttleAction('k', 'BatchQuerySessionByClientIds'))).toBe('Throttling.Api');
  });

  it('counts on the rate clock: 5 a second are 5 in any one second, the next once the first is a second old', () => {
    clock = 0;
    const g = gateway({ RevokeToken: 5 }, 'Throttling.Api');
    const take = (): string | undefined => codeOf(() => g.throttleAction('k', 'RevokeToken'));
    expect([take(), take(), take(), take(), take(), take()]).toEqual([undefined, undefined, undefined, undefined, undefined, 'RevokeTokenOverFlow']);
    clock = 999;
    expect(take()).toBe('RevokeTokenOverFlow');
    clock = 1000;
    expect(Array.from({ length: 6 }, take)).toEqual([undefined, undefined, undefined, undefined, undefined, 'RevokeTokenOverFlow']);
    clock = 60_000;
    expect(Array.from({ length: 6 }, take)).toEqual([undefined, undefined, undefined, undefined, undefined, 'RevokeTokenOverFlow']);
  });

  it('the account limit runs on the same rate clock', () => {
    clock = 0;
    const g = new Gateway({ ...KEY, timestampWindowMs: 1, nonceWindowMs: 1, qpsLimit: 2, now: () => 0, rateClock: () => clock });
    expect([codeOf(() => g.throttle('k')), codeOf(() => g.throttle('k')), codeOf(() => g.throttle('k'))]).toEqual([undefined, undefined, 'Throttling.User']);
    clock = 500;
    expect(codeOf(() => g.throttle('k'))).toBe('Throttling.User');
    clock = 1000;
    expect([codeOf(() => g.throttle('k')), codeOf(() => g.throttle('k')), codeOf(() => g.throttle('k'))]).toEqual([undefined, undefined, 'Throttling.User']);
  });
});

describe('routing by method', () => {
  it('refuses GET of the POST-only actions unless accepted; everything else takes GET', () => {
    // Every action the metadata declares `post` only (reference §1.0, §2): one rule for all of them.
    expect([...POST_ONLY_ACTIONS]).toEqual(['RegisterDeviceCredential', 'GetDeviceCredential', 'RefreshDeviceCredential', 'UnRegisterDeviceCredential', 'ApplyToken', 'RevokeToken']);
    for (const action of Object.keys(ACTIONS)) {
      const expected = POST_ONLY_ACTIONS.has(action) ? 'InvalidAction.NotFound' : undefined;
      expect(codeOf(() => routeAction(action, '2020-04-20', 'GET', 'refuse')), action).toBe(expected);
      expect(codeOf(() => routeAction(action, '2020-04-20', 'GET', 'accept')), action).toBeUndefined();
      expect(codeOf(() => routeAction(action, '2020-04-20', 'POST', 'refuse')), action).toBeUndefined();
    }
    // Unknown action first, then the method, then the version.
    expect(codeOf(() => routeAction('Nope', '1999-01-01', 'GET'))).toBe('ApiNotSupport');
    expect(codeOf(() => routeAction('ApplyToken', '1999-01-01', 'GET'))).toBe('InvalidAction.NotFound');
    expect(codeOf(() => routeAction('ApplyToken', '1999-01-01', 'POST'))).toBe('InvalidVersion');
  });

  it('the handlers see the context they are given: sessions and tokens', () => {
    const now = (): number => 1_000_000;
    const context: ActionContext = {
      registry: new CredentialRegistry({ reRegister: 'rotate', credentialQuota: Infinity, now }),
      tokens: new TokenRegistry({ now }),
      sessions: { isOnline: (clientId) => clientId === 'GID_a@@@on' },
      instanceId: 'mqtt-test',
      now,
    };
    expect(ACTIONS.QuerySessionByClientId({ ClientId: 'GID_a@@@on', InstanceId: 'mqtt-test' }, context)).toEqual({ OnlineStatus: true });
    expect(ACTIONS.BatchQuerySessionByClientIds({ InstanceId: 'mqtt-test', 'ClientIdList.1': 'GID_a@@@off', 'ClientIdList.2': 'GID_a@@@on' }, context)).toEqual({
      OnlineStatusList: [{ ClientId: 'GID_a@@@off', OnlineStatus: false }, { ClientId: 'GID_a@@@on', OnlineStatus: true }],
    });
    const applied = ACTIONS.ApplyToken({ Resources: 'a/+', InstanceId: 'mqtt-test', ExpireTime: '1060000', Actions: 'R' }, context);
    expect(Object.keys(applied)).toEqual(['Token']);
    expect(context.tokens.all()).toEqual([expect.objectContaining({ type: 'R', resources: ['a/+'], createTime: 1_000_000, expireTime: 1_060_000 })]);
    expect(codeOf(() => ACTIONS.ApplyToken({ Resources: 'a/+', InstanceId: 'mqtt-test', ExpireTime: '1059999', Actions: 'R' }, context))).toBe('InvalidParameter.ExpireTime');
    expect(ACTIONS.QueryToken({ Token: String(applied['Token']), InstanceId: 'mqtt-test' }, context)).toEqual({ TokenStatus: true });
  });
});

describe('who is online, from the broker events', () => {
  it('counts connections per ClientId, whichever order a takeover is reported in', () => {
    const events = new EventEmitter<EmulatorEvents>();
    const online = new OnlineClients(events);
    events.emit('clientConnected', 'a');
    expect([online.isOnline('a'), online.isOnline('b')]).toEqual([true, false]);
    // Takeover reported as: new connection first, then the old one's end.
    events.emit('clientConnected', 'a');
    events.emit('clientDisconnected', 'a');
    expect(online.isOnline('a')).toBe(true);
    // ... or the old one's end first.
    events.emit('clientDisconnected', 'a');
    events.emit('clientConnected', 'a');
    expect(online.isOnline('a')).toBe(true);
    events.emit('clientDisconnected', 'a');
    expect(online.isOnline('a')).toBe(false);
    // A stray end never makes the count negative: the next connection is online.
    events.emit('clientDisconnected', 'a');
    events.emit('clientConnected', 'a');
    expect(online.isOnline('a')).toBe(true);
    expect(online.size).toBe(1);
    online.close();
    events.emit('clientDisconnected', 'a');
    expect(online.isOnline('a')).toBe(true); // no longer listening
    expect(events.listenerCount('clientConnected') + events.listenerCount('clientDisconnected')).toBe(0);
  });
});

describe('tokens in the state file', () => {
  const base = { kind: 'apsaramq-device-emulator-state', version: 1, instanceId: 'mqtt-x', credentials: [] };
  const record: TokenRecord = {
    id: '0123456789abcdef0123456789abcdef',
    secretSha256: 'a'.repeat(64),
    instanceId: 'mqtt-x',
    type: 'RW',
    resources: ['TopicA/+', 'TopicB'],
    createTime: 1,
    expireTime: 2,
  };
  const parse = (tokens: unknown): ReturnType<typeof parseState> => parseState(JSON.stringify({ ...base, tokens }), '/s.json');
  const corrupt = (tokens: unknown): string => {
    try {
      parse(tokens);
    } catch (error) {
      expect(isApsaraMqDeviceError(error, 'EmulatorStateCorrupt')).toBe(true);
      return (error as Error).message.replace(/\. The emulator's data file is not valid.*$/s, '');
    }
    throw new Error('accepted');
  };

  it('round-trips token records; a file without tokens (written before them) reads as none', () => {
    const revoked = { ...record, id: 'f'.repeat(32), revokeTime: 2 };
    const text = serializeState({ instanceId: 'mqtt-x', credentials: [], tokens: [record, revoked] });
    expect(parseState(text, '/s.json').tokens).toEqual([record, revoked]);
    expect(JSON.parse(serializeState({ instanceId: 'mqtt-x', credentials: [] }))).toEqual({ ...base, tokens: [] });
    expect(parseState(JSON.stringify(base), '/s.json').tokens).toEqual([]);
  });

  it('refuses a malformed token record, naming it', () => {
    expect(corrupt({})).toBe('The emulator data file /s.json is not valid: tokens is not a list');
    expect(corrupt([1])).toBe('The emulator data file /s.json is not valid: tokens[0] is not an object');
    expect(corrupt([{ ...record, id: 'XYZ' }])).toBe('The emulator data file /s.json is not valid: tokens[0].id is not 32 hex digits');
    expect(corrupt([record, record])).toBe('The emulator data file /s.json is not valid: tokens[1]: a token id appears twice');
    expect(corrupt([{ ...record, secretSha256: 'token' }])).toBe('The emulator data file /s.json is not valid: tokens[0].secretSha256 is not 64 hex digits');
    expect(corrupt([{ ...record, instanceId: '' }])).toBe('The emulator data file /s.json is not valid: tokens[0].instanceId is not an instance id');
    expect(corrupt([{ ...record, type: 'R,W' }])).toBe('The emulator data file /s.json is not valid: tokens[0].type is not R, W or RW');
    for (const resources of [[], ['b', 'a'], ['+/x'], 'a', [1], ['a,b']]) {
      expect(corrupt([{ ...record, resources }]), JSON.stringify(resources)).toBe('The emulator data file /s.json is not valid: tokens[0].resources is not a list of 1 to 100 resources in order');
    }
    expect(corrupt([{ ...record, expireTime: -1 }])).toBe('The emulator data file /s.json is not valid: tokens[0]: createTime, expireTime and revokeTime must be ms since the epoch');
    expect(corrupt([{ ...record, revokeTime: 'now' }])).toBe('The emulator data file /s.json is not valid: tokens[0]: createTime, expireTime and revokeTime must be ms since the epoch');
    expect(corrupt([{ ...record, token: 'x' }])).toBe('The emulator data file /s.json is not valid: tokens[0] has fields other than those of a token record');
  });
});
