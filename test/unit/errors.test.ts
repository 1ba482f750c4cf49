import { describe, expect, it } from 'vitest';
import {
  API_ERROR_CATALOG,
  AbortedError,
  ApiError,
  ApsaraMqDeviceError,
  ConnectionClosedError,
  LOCAL_ERROR_CATALOG,
  NetworkError,
  PublishError,
  SubscribeError,
  ValidationError,
  apiErrorInfo,
  isApsaraMqDeviceError,
  isErrorCode,
  toApsaraMqDeviceError,
} from '../../src/errors.js';
import { classifyFailure } from '../../src/provisioner/retry.js';

describe('one classification of failures', () => {
  it('derives retryable from the retry class for every documented API code', () => {
    for (const [code, info] of Object.entries(API_ERROR_CATALOG)) {
      expect(info.retryable, code).toBe(info.retryClass !== 'fatal');
    }
  });

  it('gives ApiError and the retry policy the same class for documented and undocumented codes', () => {
    const cases: [string, number, string, boolean][] = [
      ['Throttling.User', 400, 'throttled', true],
      ['SystemOverFlow', 403, 'throttled', true],
      ['InternalError', 417, 'transient', true],
      ['InternalError', 500, 'transient', true],
      ['SignatureNonceUsed', 400, 'unknown-outcome', true],
      ['DeviceCredentialNotFound', 400, 'fatal', false],
      // Undocumented codes, by family.
      ['Throttling.Something', 400, 'throttled', true],
      ['SomethingOverFlow', 400, 'throttled', true],
      ['InvalidParameter.Foo', 400, 'fatal', false],
      ['BadGateway', 502, 'unknown-outcome', true],
      ['Whatever', 400, 'fatal', false],
    ];
    for (const [code, status, retryClass, retryable] of cases) {
      const error = new ApiError({ code, action: 'GetDeviceCredential', httpStatus: status, serviceMessage: 'x' });
      expect([code, error.retryClass, error.retryable], `${code} ${status}`).toEqual([code, retryClass, retryable]);
      expect(classifyFailure(error), code).toBe(retryClass);
      expect(apiErrorInfo(code, status).retryClass, code).toBe(retryClass);
    }
  });

  it('classifies transport failures by their own catalog entries', () => {
    expect(classifyFailure(new NetworkError('ConnectionRefused', 'x', 'http://h'))).toBe('not-sent');
    expect(classifyFailure(new NetworkError('HostNotFound', 'x', 'http://h'))).toBe('not-sent');
    for (const code of ['RequestTimeout', 'NetworkError', 'InvalidResponse'] as const) {
      expect(classifyFailure(new NetworkError(code, 'x', 'http://h')), code).toBe('unknown-outcome');
    }
    expect(classifyFailure(new AbortedError('x'))).toBe('fatal');
    expect(classifyFailure(new ValidationError('InvalidOption', 'x'))).toBe('fatal');
    expect(classifyFailure(new Error('x'))).toBe('fatal');
  });
});

describe('error codes are typed and checked', () => {
  it('knows every catalog code and the InvalidParameter family, and nothing else', () => {
    for (const code of [...Object.keys(API_ERROR_CATALOG), ...Object.keys(LOCAL_ERROR_CATALOG), 'InvalidParameter.Topic']) {
      expect(isErrorCode(code), code).toBe(true);
    }
    for (const code of ['CredentialRejectd', '', 'toString', '__proto__', 'InvalidParameter.', 42]) {
      expect(isErrorCode(code), String(code)).toBe(false);
    }
  });

  it('refuses a misspelled code at compile time and at run time', () => {
    const error = new ConnectionClosedError('closed');
    expect(isApsaraMqDeviceError(error, 'ConnectionClosed')).toBe(true);
    expect(isApsaraMqDeviceError(error, 'PublishRejected')).toBe(false);
    expect(isApsaraMqDeviceError(new Error('x'))).toBe(false);
    // @ts-expect-error -- a typo must not type-check
    expect(() => isApsaraMqDeviceError(error, 'CredentialRejectd')).toThrow(ValidationError);
    try {
      // @ts-expect-error -- same typo, looking at the error
      isApsaraMqDeviceError(error, 'CredentialRejectd');
    } catch (e) {
      expect(isApsaraMqDeviceError(e, 'InvalidOption')).toBe(true);
      expect((e as Error).message).toContain('CredentialRejectd');
    }
  });

  it('narrows the code on each subclass and carries the catalog verdicts', () => {
    const sub = new SubscribeError('refused', ['a/#'], { reasonCode: 0x80 });
    const pub = new PublishError('refused', 'a/b');
    const closed = new ConnectionClosedError('ended');
    const narrow: 'SubscribeRejected' = sub.code;
    expect(narrow).toBe('SubscribeRejected');
    expect([pub.code, pub.retryable, pub.topic]).toEqual(['PublishRejected', false, 'a/b']);
    expect([closed.code, closed.retryable]).toEqual(['ConnectionClosed', false]);
    expect(sub.topics).toEqual(['a/#']);
    for (const e of [sub, pub, closed, new AbortedError('x')]) {
      expect(e).toBeInstanceOf(ApsaraMqDeviceError);
      expect(e.remedy, e.code).toBe(LOCAL_ERROR_CATALOG[e.code as keyof typeof LOCAL_ERROR_CATALOG].remedy);
    }
  });

  it('wraps foreign errors as UnknownError with the original as cause', () => {
    const original = new TypeError('boom');
    const wrapped = toApsaraMqDeviceError(original);
    expect([wrapped.code, wrapped.message, wrapped.cause]).toEqual(['UnknownError', 'boom', original]);
  });
});
