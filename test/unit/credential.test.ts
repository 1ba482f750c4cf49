import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { AccountCredentials, DeviceCredential, clientIdProblem, groupIdProblem, redact } from '../../src/credential.js';
import { ApiError, apiErrorInfo, API_ERROR_CATALOG, isApsaraMqDeviceError, ValidationError } from '../../src/errors.js';

const SECRET = 'DC.BJMkn4eMQJK2vaApTSabcd';

describe('ClientId grammar', () => {
  it.each([
    ['GID_test@@@0001', undefined],
    ['GID-a@@@b_c-1', undefined],
    ['', /empty/],
    ['GID_test', /no "@@@"/],
    [`GID_a@@@${'x'.repeat(57)}`, /65 characters/],
    ['GID_tést@@@1', /non-ASCII/],
    ['GID_a b@@@1', /non-ASCII, space/],
    ['group@@@1', /must start with GID_/],
    ['GID_a@@@', /DeviceId/],
    ['GID_a@@@b@@@c', /DeviceId/],
  ])('%j', (clientId, problem) => {
    const found = clientIdProblem(clientId);
    if (problem === undefined) expect(found).toBeUndefined();
    else expect(found).toMatch(problem);
  });

  it('accepts exactly 64 characters', () => {
    expect(clientIdProblem(`GID_a@@@${'x'.repeat(56)}`)).toBeUndefined();
  });

  it('checks GroupIds', () => {
    expect(groupIdProblem('GID_demo')).toBeUndefined();
    expect(groupIdProblem('GID_a')).toBeUndefined(); // any group a valid ClientId can hold
    expect(groupIdProblem('GID_')).toMatch(/GID_/);
    expect(groupIdProblem(`GID_${'x'.repeat(57)}`)).toMatch(/64-character ClientId/);
    expect(groupIdProblem('XID_demo')).toMatch(/GID_/);
  });
});

describe('DeviceCredential', () => {
  const wire = {
    ClientId: 'GID_test@@@0001',
    InstanceId: 'mqtt-cn-test',
    DeviceAccessKeyId: 'DC.Z5fXh9sRRVufyLi6woAbCd',
    DeviceAccessKeySecret: SECRET,
    CreateTime: 1605541382000,
    UpdateTime: 1605541383000,
  };

  it('round-trips the wire shape, from the whole response or the bare object', () => {
    expect(DeviceCredential.fromWire(wire).toWire()).toEqual(wire);
    expect(DeviceCredential.fromWire({ RequestId: 'X', DeviceCredential: wire }).toWire()).toEqual(wire);
  });

  it('never shows the secret in JSON, inspect or toString', () => {
    const c = DeviceCredential.fromWire(wire);
    expect(c.deviceAccessKeySecret).toBe(SECRET);
    for (const text of [JSON.stringify(c), inspect(c), String(c), inspect({ nested: [c] }, { depth: 5 }), JSON.stringify({ c })]) {
      expect(text).not.toContain(SECRET);
    }
    expect(JSON.stringify(c)).toContain(redact(SECRET));
    expect(redact(SECRET)).toBe('DC.BJM…****');
    expect({ ...c }).not.toHaveProperty('deviceAccessKeySecret');
  });

  it('names every missing field', () => {
    expect(() => DeviceCredential.fromWire({ ClientId: 'GID_a@@@b' })).toThrow(/lacks InstanceId, DeviceAccessKeyId, DeviceAccessKeySecret/);
    expect(() => DeviceCredential.fromWire('nope')).toThrow(ValidationError);
    expect(() => DeviceCredential.fromWire({ ...wire, CreateTime: 'soon' })).toThrow(/non-numeric CreateTime/);
  });

  it('is immutable', () => {
    const c = DeviceCredential.fromWire(wire);
    expect(() => {
      (c as unknown as { clientId: string }).clientId = 'x';
    }).toThrow(TypeError);
  });

  it('compares key pairs', () => {
    const a = DeviceCredential.fromWire(wire);
    expect(a.sameKeyAs(DeviceCredential.fromWire(wire))).toBe(true);
    expect(a.sameKeyAs(DeviceCredential.fromWire({ ...wire, DeviceAccessKeySecret: 'DC.other' }))).toBe(false);
    expect(a.sameKeyAs(undefined)).toBe(false);
  });
});

describe('AccountCredentials', () => {
  it('redacts the secret and the token', () => {
    const a = new AccountCredentials('LTAI5tAbCdEf', 'S3cr3tS3cr3tS3cr3tS3cr3t', 'STS.tokentokentokentoken');
    for (const text of [JSON.stringify(a), inspect(a), String(a)]) {
      expect(text).not.toContain('S3cr3tS3cr3tS3cr3tS3cr3t');
      expect(text).not.toContain('STS.tokentokentokentoken');
    }
    expect(a.accessKeySecret).toBe('S3cr3tS3cr3tS3cr3tS3cr3t');
  });
});

describe('error classification', () => {
  it('every catalogued API code has a status, a retry verdict and a remedy', () => {
    for (const [code, info] of Object.entries(API_ERROR_CATALOG)) {
      expect(info.httpStatus, code).toBeGreaterThanOrEqual(400);
      expect(info.remedy.length, code).toBeGreaterThan(10);
      expect(info.message, code).toBeTruthy();
    }
  });

  it.each([
    ['Throttling.User', 400, true],
    ['SystemOverFlow', 403, true],
    ['InternalError', 417, true],
    ['ServiceUnavailable', 503, true],
    ['Throttling.Whatever', 400, true],
    ['Foo.Bar', 400, false],
    ['Foo.Bar', 502, true],
    ['SignatureDoesNotMatch', 400, false],
    ['DeviceCredentialNotFound', 400, false],
    ['InvalidParameter.Foo', 400, false],
  ])('%s (%i) retryable=%s', (code, status, retryable) => {
    expect(apiErrorInfo(code, status).retryable).toBe(retryable);
  });

  it('ApiError carries code, status, request id and remedy', () => {
    const e = new ApiError({ code: 'DeviceCredentialNotFound', action: 'GetDeviceCredential', httpStatus: 400, requestId: 'ABC', serviceMessage: 'Device Credential Not Found.' });
    expect(isApsaraMqDeviceError(e, 'DeviceCredentialNotFound')).toBe(true);
    expect(e).toMatchObject({ httpStatus: 400, requestId: 'ABC', retryable: false, action: 'GetDeviceCredential' });
    expect(e.message).toContain('RequestId ABC');
    expect(e.message).toContain('register');
    expect(JSON.parse(JSON.stringify(e))).toMatchObject({ code: 'DeviceCredentialNotFound', httpStatus: 400, requestId: 'ABC', retryable: false });
  });
});
