/**
 * The checks every resolver of options uses (connector, simulator, emulator, broker, OpenAPI client, retry policy,
 * rate limiter), so that a bad option is refused the same way wherever it is given: a `ValidationError` with code
 * `InvalidOption` and one message shape, `<Subject> <name> must be <what>, not <value>` (`Option keepalive must be
 * an integer from 0 to 65535, not -1`; `Emulator option qpsLimit must be an integer of 1 or more, or Infinity, not
 * 0`). The value is shown short and typed (strings quoted, objects by their type), so a message never carries a
 * long or structured value; options that hold a secret must not be passed to them.
 */
import { ValidationError } from '../errors.js';
import type { Logger } from './logger.js';
import { MAX_TIMER_MS } from './backoff.js';

/** The bounds of a number option. */
export interface NumberRange {
  /** Smallest value accepted. */
  readonly min: number;
  /** Largest value accepted (Infinity or absent: no upper bound but the safe integers'). */
  readonly max?: number;
  /** Infinity is accepted too ("no limit"). */
  readonly infinity?: boolean;
  /** The message's words for what the option must be, when the range's own would say less (`… (30 days)`). */
  readonly what?: string;
}

/** A value as an error message shows it: strings quoted and cut at 40 characters, objects as their type. */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value);
  return `a ${typeof value}`;
}

/** `a, b or c`. */
function either(words: readonly string[]): string {
  return words.length <= 1 ? (words[0] ?? '') : `${words.slice(0, -1).join(', ')} or ${words.at(-1) as string}`;
}

function bounded(max: number | undefined): max is number {
  return max !== undefined && max < Number.MAX_SAFE_INTEGER;
}

/** `an integer from 0 to 65535`, `a number of 1 or more`, with `, or Infinity` when that is accepted too. */
function rangeWords(kind: string, range: NumberRange): string {
  if (range.what !== undefined) return range.what;
  const span = bounded(range.max) ? `from ${range.min} to ${range.max}` : `of ${range.min} or more`;
  return `${kind} ${span}${range.infinity ? ', or Infinity' : ''}`;
}

function inRange(value: unknown, range: NumberRange, integer: boolean): value is number {
  if (typeof value !== 'number' || Number.isNaN(value)) return false;
  if (value === Number.POSITIVE_INFINITY) return range.infinity === true;
  const max = range.max ?? Number.MAX_SAFE_INTEGER;
  return Number.isFinite(value) && value >= range.min && value <= max && (!integer || Number.isSafeInteger(value));
}

/** The checks of one family of options, each naming the option as `<subject> <name>`. */
export interface OptionChecks {
  /** The error for an option that is not what it must be. */
  invalid(name: string, what: string, value: unknown): ValidationError;
  /** An integer in the range (or Infinity, when the range says so). */
  integer(name: string, value: unknown, range: NumberRange): number;
  /** A finite number in the range (or Infinity, when the range says so). */
  number(name: string, value: unknown, range: NumberRange): number;
  /** A duration in ms in the range: from 0 to the longest Node timer (about 24.8 days) unless the range says otherwise. */
  milliseconds(name: string, value: unknown, range?: Partial<NumberRange>): number;
  /** A number above 0 (`unit` names what it counts: `milliseconds`, `requests per second`), or Infinity when `infinity`. */
  positive(name: string, value: unknown, unit: string, infinity?: boolean): number;
  /** One of a few values; `shown` words each (default: strings quoted, numbers as they are). */
  oneOf<T>(name: string, value: unknown, allowed: readonly T[], shown?: (allowed: T) => string): T;
  boolean(name: string, value: unknown): boolean;
  /** A function; `what` says what it must do (`a function returning [0, 1)`). */
  func<T extends (...args: never[]) => unknown>(name: string, value: unknown, what?: string): T;
  /** A plain object (not null, not an array); `what` words it for the message. */
  object(name: string, value: unknown, what?: string): Record<string, unknown>;
  /** Something with debug, info, warn and error methods. */
  logger(name: string, value: unknown): Logger;
}

/**
 * The checks for options named `<subject> <name>` in messages: `optionChecks()` for `Option keepalive …`,
 * `optionChecks('Emulator option')` for `Emulator option qpsLimit …`. Every check returns the value, typed, or throws
 * `ValidationError('InvalidOption')`.
 */
export function optionChecks(subject = 'Option'): OptionChecks {
  const invalid = (name: string, what: string, value: unknown): ValidationError =>
    new ValidationError('InvalidOption', `${subject} ${name} must be ${what}, not ${describeValue(value)}`);
  const quoted = (allowed: unknown): string => (typeof allowed === 'string' ? `'${allowed}'` : String(allowed));
  return {
    invalid,
    integer(name, value, range) {
      if (!inRange(value, range, true)) throw invalid(name, rangeWords('an integer', range), value);
      return value;
    },
    number(name, value, range) {
      if (!inRange(value, range, false)) throw invalid(name, rangeWords('a number', range), value);
      return value;
    },
    milliseconds(name, value, given = {}) {
      const range: NumberRange = { min: 0, max: MAX_TIMER_MS, ...given };
      if (!inRange(value, range, false)) throw invalid(name, rangeWords('a duration in ms', range), value);
      return value;
    },
    positive(name, value, unit, infinity = false) {
      const ok = typeof value === 'number' && value > 0 && (Number.isFinite(value) || (infinity && value === Number.POSITIVE_INFINITY));
      if (!ok) throw invalid(name, `a positive number of ${unit}${infinity ? ', or Infinity' : ''}`, value);
      return value;
    },
    oneOf<T>(name: string, value: unknown, allowed: readonly T[], shown: (allowed: T) => string = quoted): T {
      if (!allowed.includes(value as T)) throw invalid(name, either(allowed.map(shown)), value);
      return value as T;
    },
    boolean(name, value) {
      if (typeof value !== 'boolean') throw invalid(name, 'true or false', value);
      return value;
    },
    func<T extends (...args: never[]) => unknown>(name: string, value: unknown, what = 'a function'): T {
      if (typeof value !== 'function') throw invalid(name, what, value);
      return value as T;
    },
    object(name, value, what = 'an object') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid(name, what, value);
      return value as Record<string, unknown>;
    },
    logger(name, value) {
      const methods = ['debug', 'info', 'warn', 'error'] as const;
      if (typeof value !== 'object' || value === null || methods.some((m) => typeof (value as Record<string, unknown>)[m] !== 'function')) {
        throw invalid(name, 'an object with debug, info, warn and error functions', value);
      }
      return value as Logger;
    },
  };
}
