import { describe, expect, it } from 'vitest';
import { type KnownApiErrorCode, ValidationError } from '../../src/errors.js';
import { EMULATED_ACTIONS, type EmulatedAction } from '../../src/emulator/actions.js';
import { FaultInjector, MAX_FAIL_NEXT_COUNT, type FaultConfig } from '../../src/emulator/faults.js';
import { apiFaultCode } from '../helpers/emulator.js';
import { catchSync } from '../helpers/http.js';

/** A `random` that returns the scripted draws in order and counts how many were taken. */
function scripted(...draws: number[]): { random: () => number; taken: () => number } {
  let taken = 0;
  return {
    random: () => {
      const value = draws[taken];
      taken += 1;
      if (value === undefined) throw new Error('more draws than scripted');
      return value;
    },
    taken: () => taken,
  };
}

function injector(overrides: Partial<FaultConfig>): FaultInjector {
  return new FaultInjector({ faultRate: 0, faultCodes: ['SystemOverFlow', 'InternalError'], latencyMs: undefined, random: Math.random, ...overrides });
}

/** The code `inject` throws, or undefined when the call goes through. */
function injected(faults: FaultInjector, action: string): string | undefined {
  return apiFaultCode(() => faults.inject(action));
}

describe('FaultInjector', () => {
  it('takes no draw and injects nothing by default', () => {
    const r = scripted();
    const faults = injector({ random: r.random });
    expect(injected(faults, 'GetDeviceCredential')).toBeUndefined();
    expect(faults.delayMs()).toBe(0);
    expect(r.taken()).toBe(0);
  });

  it('faults when the draw is below faultRate and picks the code with a second draw', () => {
    const r = scripted(0.49, 0.99, 0.5, 0.2, 0.49);
    const faults = injector({ faultRate: 0.5, random: r.random });
    expect(injected(faults, 'A')).toBe('InternalError'); // 0.49 < 0.5, then floor(0.99 * 2) = 1
    expect(injected(faults, 'A')).toBeUndefined(); // 0.5 is not below 0.5
    expect(injected(faults, 'A')).toBe('SystemOverFlow'); // 0.2, then floor(0.49 * 2) = 0
    expect(r.taken()).toBe(5);
  });

  it('answers queued codes first, per action, in order, without drawing', () => {
    const r = scripted();
    const faults = injector({ faultRate: 1, random: r.random });
    faults.failNext('RegisterDeviceCredential', 'Throttling.User', 2);
    faults.failNext('RegisterDeviceCredential', 'DeviceCredentialNumExceed');
    faults.failNext('GetDeviceCredential', 'InternalError');
    expect(injected(faults, 'GetDeviceCredential')).toBe('InternalError');
    expect(injected(faults, 'RegisterDeviceCredential')).toBe('Throttling.User');
    expect(injected(faults, 'RegisterDeviceCredential')).toBe('Throttling.User');
    expect(injected(faults, 'RegisterDeviceCredential')).toBe('DeviceCredentialNumExceed');
    expect(r.taken()).toBe(0);
  });

  it('draws latency uniformly in [min, max] and never past max, even from a random that returns 1', () => {
    const r = scripted(0, 0.5, 1);
    const faults = injector({ latencyMs: { min: 100, max: 300 }, random: r.random });
    expect(faults.delayMs()).toBe(100);
    expect(faults.delayMs()).toBe(200);
    expect(faults.delayMs()).toBeLessThanOrEqual(300);
  });

  it('refuses unknown codes and bad counts with InvalidOption', () => {
    const faults = injector({});
    for (const [code, count] of [['NoSuchCode', 1], ['toString', 1], ['InternalError', 0], ['InternalError', 1.5], ['InternalError', 10_001], ['InternalError', 2e8]] as const) {
      expect(() => faults.failNext('GetDeviceCredential', code as KnownApiErrorCode, count)).toThrow(ValidationError);
    }
    expect(injected(faults, 'GetDeviceCredential')).toBeUndefined();
  });

  it('names the limit of count, and takes the largest count as one entry', () => {
    const faults = injector({});
    const error = catchSync(() => faults.failNext('GetDeviceCredential', 'InternalError', MAX_FAIL_NEXT_COUNT + 1));
    expect(error.code).toBe('InvalidOption');
    expect(error.message).toContain('from 1 to 10000');
    faults.failNext('GetDeviceCredential', 'InternalError', MAX_FAIL_NEXT_COUNT);
    faults.failNext('GetDeviceCredential', 'SystemOverFlow');
    for (let i = 0; i < MAX_FAIL_NEXT_COUNT; i++) expect(injected(faults, 'GetDeviceCredential')).toBe('InternalError');
    expect(injected(faults, 'GetDeviceCredential')).toBe('SystemOverFlow');
    expect(injected(faults, 'GetDeviceCredential')).toBeUndefined();
  });

  it('refuses an action it does not emulate (a typo would never fire), naming the known ones', () => {
    const faults = injector({});
    // @ts-expect-error -- a misspelled action is refused by the types, and at run time for JavaScript callers
    const error = catchSync(() => faults.failNext('RegisterDeviceCredentail', 'InternalError'));
    expect(error.code).toBe('InvalidOption');
    expect(error.message).toContain('"RegisterDeviceCredentail"');
    for (const action of EMULATED_ACTIONS) expect(error.message).toContain(action);
    expect(catchSync(() => faults.failNext('__proto__' as EmulatedAction, 'InternalError')).code).toBe('InvalidOption');
    expect(catchSync(() => faults.failNext(42 as unknown as EmulatedAction, 'InternalError')).message).toContain('a number');
  });
});

describe('FaultInjector.burst: a share of the calls fails for a while (a game day\'s OpenAPI outage)', () => {
  it('replaces faultRate and faultCodes until it ends; rate 0 ends it early; checked like the options', () => {
    let now = 1_000;
    const r = scripted(0.1, 0.9, 0.6, 0.2, 0.3);
    const faults = injector({ faultRate: 0, random: r.random, rateClock: () => now });
    faults.burst(0.5, ['Throttling.User', 'InternalError'], 2_000);
    // Draw 0.1 < 0.5: a fault, coded by draw 0.9 (the second code); draw 0.6: none.
    expect(injected(faults, 'GetDeviceCredential')).toBe('InternalError');
    expect(injected(faults, 'GetDeviceCredential')).toBeUndefined();
    now += 1_999;
    expect(injected(faults, 'RegisterDeviceCredential')).toBe('Throttling.User');
    now += 1;
    // Over: back to faultRate 0, which takes no draw.
    expect(injected(faults, 'RegisterDeviceCredential')).toBeUndefined();
    expect(r.taken()).toBe(5);
    faults.burst(1, ['SystemOverFlow'], 60_000);
    faults.burst(0, ['SystemOverFlow'], 60_000);
    expect(injected(faults, 'GetDeviceCredential')).toBeUndefined();
    expect(catchSync(() => faults.burst(1.5, ['InternalError'], 1))).toMatchObject({ code: 'InvalidOption', message: expect.stringMatching(/rate must be a number from 0 to 1/) });
    expect(catchSync(() => faults.burst(0.5, ['Nope' as KnownApiErrorCode], 1))).toMatchObject({ code: 'InvalidOption', message: expect.stringMatching(/codes\[0\]/) });
    expect(catchSync(() => faults.burst(0.5, [], 1))).toMatchObject({ code: 'InvalidOption' });
    expect(catchSync(() => faults.burst(0.5, ['InternalError'], 1.5))).toBeInstanceOf(ValidationError);
  });
});
