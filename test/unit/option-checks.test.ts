import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import { describeValue, optionChecks } from '../../src/util/option-checks.js';

const check = optionChecks();

/** The message of the ValidationError `fn` throws (and that it is one, with code InvalidOption). */
function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ code: 'InvalidOption', retryable: false });
    return (error as Error).message;
  }
  throw new Error('accepted');
}

describe('optionChecks: one refusal for a bad option, wherever it is given', () => {
  it('names the option after its subject, says what it must be and shows the value short and typed', () => {
    expect(refusal(() => check.integer('keepalive', -1, { min: 0, max: 65_535 }))).toBe('Option keepalive must be an integer from 0 to 65535, not -1');
    expect(refusal(() => optionChecks('Emulator option').integer('qpsLimit', 0, { min: 1, infinity: true }))).toBe('Emulator option qpsLimit must be an integer of 1 or more, or Infinity, not 0');
    expect(refusal(() => check.boolean('clean', 'no'))).toBe('Option clean must be true or false, not "no"');
    expect(describeValue('x'.repeat(50))).toBe(`"${'x'.repeat(40)}…"`);
    expect([describeValue({}), describeValue([]), describeValue(() => 1), describeValue(null), describeValue(undefined)]).toEqual(['a object', 'a object', 'a function', 'null', 'undefined']);
  });

  it('integer: whole, safe, in range; Infinity only where asked', () => {
    expect(check.integer('n', 5, { min: 1, max: 5 })).toBe(5);
    expect(check.integer('n', Infinity, { min: 1, infinity: true })).toBe(Infinity);
    for (const bad of [0, 6, 1.5, Number.NaN, Infinity, 2 ** 53, '3', undefined]) expect(refusal(() => check.integer('n', bad, { min: 1, max: 5 }))).toMatch(/^Option n must be an integer from 1 to 5, not /);
    expect(refusal(() => check.integer('n', 2 ** 53, { min: 1 }))).toMatch(/an integer of 1 or more, not/);
  });

  it('number and milliseconds: finite, in range (a duration up to the longest Node timer by default)', () => {
    expect(check.number('rate', 0.5, { min: 0, max: 1 })).toBe(0.5);
    expect(refusal(() => check.number('rate', 1.5, { min: 0, max: 1 }))).toBe('Option rate must be a number from 0 to 1, not 1.5');
    expect(check.milliseconds('delay', 1.5)).toBe(1.5);
    expect(refusal(() => check.milliseconds('delay', 2 ** 31))).toBe('Option delay must be a duration in ms from 0 to 2147483647, not 2147483648');
    expect(check.milliseconds('elapsed', Infinity, { max: Infinity, infinity: true })).toBe(Infinity);
    expect(refusal(() => check.milliseconds('max', 5, { min: 10, what: 'at least min (10)' }))).toBe('Option max must be at least min (10), not 5');
  });

  it('positive: above 0, finite unless Infinity is allowed', () => {
    expect(check.positive('qps', Infinity, 'requests per second', true)).toBe(Infinity);
    expect(refusal(() => check.positive('timeoutMs', 0, 'milliseconds'))).toBe('Option timeoutMs must be a positive number of milliseconds, not 0');
    expect(refusal(() => check.positive('timeoutMs', Infinity, 'milliseconds'))).toMatch(/not Infinity$/);
  });

  it('oneOf, func, object, logger', () => {
    expect(check.oneOf('policy', 'allow', ['refuse', 'ignore', 'allow'] as const)).toBe('allow');
    expect(refusal(() => check.oneOf('policy', 'deny', ['refuse', 'ignore', 'allow'] as const))).toBe("Option policy must be 'refuse', 'ignore' or 'allow', not \"deny\"");
    expect(refusal(() => check.oneOf('qos', 2, [0, 1] as const))).toBe('Option qos must be 0 or 1, not 2');
    expect(refusal(() => check.func('random', 0.5, 'a function returning [0, 1)'))).toBe('Option random must be a function returning [0, 1), not 0.5');
    expect(refusal(() => check.object('takeover', [], 'an object or false'))).toBe('Option takeover must be an object or false, not a object');
    expect(check.logger('logger', console)).toBe(console);
    expect(refusal(() => check.logger('logger', { info() {} }))).toBe('Option logger must be an object with debug, info, warn and error functions, not a object');
  });
});
