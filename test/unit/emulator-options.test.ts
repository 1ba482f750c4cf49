import { describe, expect, it } from 'vitest';
import { ValidationError, isApsaraMqDeviceError } from '../../src/errors.js';
import { EMULATOR_DEFAULTS, resolveOptions, type EmulatorOptions } from '../../src/emulator/options.js';

function invalidOption(options: unknown): ValidationError {
  try {
    resolveOptions(options as EmulatorOptions);
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    expect(isApsaraMqDeviceError(error, 'InvalidOption')).toBe(true);
    return error as ValidationError;
  }
  throw new Error(`accepted ${JSON.stringify(options)}`);
}

describe('emulator options', () => {
  it('fills in the documented defaults', () => {
    const now = (): number => 42;
    const o = resolveOptions({ env: {}, now });
    expect(o).toMatchObject({
      host: '127.0.0.1', mqttPort: 0, wsPort: 0, apiPort: 0, reRegister: 'rotate', errorStatuses: 'remapped',
      qpsLimit: 500, credentialQuota: Infinity, timestampWindowMs: 900_000, nonceWindowMs: 900_000,
    });
    expect(o.now).toBe(now);
    expect(resolveOptions({ env: {} }).now).toBe(Date.now);
    expect(EMULATOR_DEFAULTS.timestampWindowMs).toBe(15 * 60 * 1000);
    expect(Object.isFrozen(o)).toBe(true);
    expect(o).toMatchObject({ faultRate: 0, faultCodes: ['SystemOverFlow', 'InternalError'], latencyMs: undefined });
    expect(o).toMatchObject({ kickOnRevoke: false, maxPayloadBytes: 65_536, tls: undefined, tlsPort: false, wssPort: false });
    expect(o.random).toBe(Math.random);
    // Issue 23: the service's pace, GroupIds, discard, the strict QPS window, and the safe side where it is silent.
    expect(o).toMatchObject({
      groups: new Set(['GID_demo', 'GID_test', 'GID_sim']), unknownGroupRefusal: 'identifier-rejected', revokedCredentialRefusal: 'bad-username-or-password',
      mqtt31: 'refuse', p2pTopicLength: 'parent', keepAliveZero: 'cap', oversizedMessages: 'discard', offlineDelivery: 'paced',
      offlineDetectionDelayMs: { min: 5_000, max: 10_000 }, offlineBatchSize: 30, offlineBatchIntervalMs: 5_000,
      rateLimitMode: 'sliding-window', getOnPostOnly: 'refuse', unknownInstanceCode: 'InstancePermissionCheckFailed', regionId: 'cn-hangzhou',
    });
    expect(resolveOptions({ env: {}, lenient: true })).toMatchObject({ groups: undefined, mqtt31: 'accept', offlineDelivery: 'immediate' });
  });

  it('accepts fault injection settings', () => {
    const random = (): number => 0.5;
    const o = resolveOptions({ env: {}, faultRate: 1, faultCodes: ['Throttling.User', 'InvalidParameter.ClientId'], latencyMs: { min: 0, max: 0 }, random });
    expect(o).toMatchObject({ faultRate: 1, faultCodes: ['Throttling.User', 'InvalidParameter.ClientId'], latencyMs: { min: 0, max: 0 } });
    expect(o.random).toBe(random);
  });

  it('generates instance id and account keys in the documented formats, fresh each time', () => {
    const a = resolveOptions({ env: {} });
    const b = resolveOptions({ env: {} });
    expect(a.instanceId).toMatch(/^mqtt-emu-[0-9a-z]{8}$/);
    expect(a.accessKeyId).toMatch(/^LTAI[0-9A-Za-z]{20}$/);
    expect(a.accessKeySecret).toMatch(/^[0-9A-Za-z]{30}$/);
    expect(b.instanceId).not.toBe(a.instanceId);
    expect(b.accessKeyId).not.toBe(a.accessKeyId);
    expect(b.accessKeySecret).not.toBe(a.accessKeySecret);
  });

  it('takes instance id and keys from env when the options are absent, and prefers options', () => {
    const env = { APSARAMQ_INSTANCE_ID: 'mqtt-cn-fromenv', ALIBABA_CLOUD_ACCESS_KEY_ID: 'LTAIenv', ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'envsecret' };
    expect(resolveOptions({ env })).toMatchObject({ instanceId: 'mqtt-cn-fromenv', accessKeyId: 'LTAIenv', accessKeySecret: 'envsecret' });
    expect(resolveOptions({ env, instanceId: 'mqtt-cn-opt', accessKeyId: 'LTAIopt', accessKeySecret: 'optsecret' }))
      .toMatchObject({ instanceId: 'mqtt-cn-opt', accessKeyId: 'LTAIopt', accessKeySecret: 'optsecret' });
    // An empty variable is unset.
    expect(resolveOptions({ env: { APSARAMQ_INSTANCE_ID: '' } }).instanceId).toMatch(/^mqtt-emu-/);
  });

  it('reads process.env by default', () => {
    const saved = process.env['APSARAMQ_INSTANCE_ID'];
    process.env['APSARAMQ_INSTANCE_ID'] = 'mqtt-cn-process';
    try {
      expect(resolveOptions().instanceId).toBe('mqtt-cn-process');
    } finally {
      if (saved === undefined) delete process.env['APSARAMQ_INSTANCE_ID'];
      else process.env['APSARAMQ_INSTANCE_ID'] = saved;
    }
  });

  it('accepts the documented special values', () => {
    expect(resolveOptions({ env: {}, wsPort: false }).wsPort).toBe(false);
    expect(resolveOptions({ env: {}, qpsLimit: Infinity, credentialQuota: 0 })).toMatchObject({ qpsLimit: Infinity, credentialQuota: 0 });
    expect(resolveOptions({ env: {}, reRegister: 'reject', errorStatuses: 'legacy' })).toMatchObject({ reRegister: 'reject', errorStatuses: 'legacy' });
  });

  it.each<[string, Record<string, unknown>]>([
    ['host', { host: '' }],
    ['host', { host: 'local host' }],
    ['mqttPort', { mqttPort: -1 }],
    ['mqttPort', { mqttPort: 70000 }],
    ['apiPort', { apiPort: 1.5 }],
    ['wsPort', { wsPort: true }],
    ['wsPort', { wsPort: '8080' }],
    ['instanceId', { instanceId: 'has|pipe' }],
    ['instanceId', { instanceId: '' }],
    ['accessKeyId', { accessKeyId: 'LTAI|x' }],
    ['accessKeyId', { accessKeyId: '' }],
    ['accessKeySecret', { accessKeySecret: '' }],
    ['reRegister', { reRegister: 'replace' }],
    ['errorStatuses', { errorStatuses: 'new' }],
    ['qpsLimit', { qpsLimit: 0 }],
    ['qpsLimit', { qpsLimit: 2.5 }],
    ['credentialQuota', { credentialQuota: -1 }],
    ['credentialQuota', { credentialQuota: NaN }],
    ['timestampWindowMs', { timestampWindowMs: 0 }],
    ['nonceWindowMs', { nonceWindowMs: Infinity }],
    ['now', { now: 5 }],
    ['env', { env: null }],
    ['qpslimit', { qpslimit: 5 }],
    ['faultRate', { faultRate: 1.5 }],
    ['faultRate', { faultRate: -0.1 }],
    ['faultRate', { faultRate: NaN }],
    ['faultCodes', { faultCodes: [] }],
    ['faultCodes', { faultCodes: 'SystemOverFlow' }],
    ['faultCodes[1]', { faultCodes: ['SystemOverFlow', 'NotACode'] }],
    ['faultCodes[0]', { faultCodes: ['constructor'] }],
    ['latencyMs', { latencyMs: { min: 10, max: 5 } }],
    ['latencyMs', { latencyMs: { min: -1, max: 5 } }],
    ['latencyMs', { latencyMs: { min: 0, max: Infinity } }],
    ['latencyMs', { latencyMs: 100 }],
    ['random', { random: 0.5 }],
    ['kickOnRevoke', { kickOnRevoke: 'yes' }],
    ['maxPayloadBytes', { maxPayloadBytes: 0 }],
    ['maxPayloadBytes', { maxPayloadBytes: 1.5 }],
    ['tls', { tls: {} }],
    ['tls', { tls: 'cert.pem' }],
    ['tlsPort', { tlsPort: 8883 }],
    ['groups', { groups: 'GID_demo' }],
    ['groups[1]', { groups: ['GID_demo', 'demo'] }],
    ['groups[0]', { groups: ['GID_a/b'] }],
    ['unknownGroupRefusal', { unknownGroupRefusal: 2 }],
    ['revokedCredentialRefusal', { revokedCredentialRefusal: 'bad' }],
    ['mqtt31', { mqtt31: true }],
    ['p2pTopicLength', { p2pTopicLength: 'all' }],
    ['keepAliveZero', { keepAliveZero: 'keep' }],
    ['oversizedMessages', { oversizedMessages: 'drop' }],
    ['rateLimitMode', { rateLimitMode: 'bucket' }],
    ['unknownInstanceCode', { unknownInstanceCode: 'InstanceNotFound' }],
    ['regionId', { regionId: 'CN Hangzhou' }],
    ['regionId', { regionId: '' }],
  ])('throws InvalidOption naming %s', (name, bad) => {
    const error = invalidOption({ env: {}, ...bad });
    expect(error.message).toContain(name);
  });

  it('names the environment variable a bad value came from', () => {
    expect(invalidOption({ env: { APSARAMQ_INSTANCE_ID: 'bad id' } }).message).toContain('instanceId (from APSARAMQ_INSTANCE_ID)');
    expect(invalidOption({ env: { ALIBABA_CLOUD_ACCESS_KEY_ID: 'a|b' } }).message).toContain('ALIBABA_CLOUD_ACCESS_KEY_ID');
  });

  it('never shows a secret in its messages', () => {
    const error = invalidOption({ env: {}, accessKeySecret: 'SuperSecretValue', accessKeyId: 'bad|id' });
    expect(error.message).not.toContain('SuperSecretValue');
    expect(invalidOption({ env: {}, accessKeySecret: 12345 }).message).not.toContain('12345');
  });
});
