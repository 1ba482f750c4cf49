import { describe, expect, it } from 'vitest';
import { ConnectRefusal, checkConnect } from '../../src/emulator/broker-login.js';
import { CredentialRegistry } from '../../src/emulator/registry.js';
import { StatsRecorder } from '../../src/emulator/stats.js';
import { hmacPassword } from '../../src/signer/mqtt.js';
import { apiFaultCode as faultCode } from '../helpers/emulator.js';

const INSTANCE = 'mqtt-test';
const DEVICE_KEY = /^DC\.[0-9A-Za-z]{22}$/;

describe('credential registry', () => {
  let clock = 1_000.7;
  const policy = { reRegister: 'rotate' as const, credentialQuota: Infinity, now: () => clock };

  it('issues DC. keys, integer times, and indexes by ClientId and key id', () => {
    const r = new CredentialRegistry(policy);
    const c = r.register(INSTANCE, 'GID_a@@@1');
    expect(c.DeviceAccessKeyId).toMatch(DEVICE_KEY);
    expect(c.DeviceAccessKeySecret).toMatch(DEVICE_KEY);
    expect(c.CreateTime).toBe(1_000);
    expect(c.UpdateTime).toBe(1_000);
    expect(r.get(INSTANCE, 'GID_a@@@1')).toBe(c);
    expect(r.findByKeyId(c.DeviceAccessKeyId)).toBe(c);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('rotates on re-register (CreateTime = now) and on refresh (CreateTime kept); old keys stop resolving', () => {
    const r = new CredentialRegistry(policy);
    clock = 1_000;
    const first = r.register(INSTANCE, 'GID_a@@@1');
    clock = 2_000;
    const second = r.register(INSTANCE, 'GID_a@@@1');
    expect(second).toMatchObject({ CreateTime: 2_000, UpdateTime: 2_000 });
    expect(r.findByKeyId(first.DeviceAccessKeyId)).toBeUndefined();
    clock = 3_000;
    const third = r.refresh(INSTANCE, 'GID_a@@@1');
    expect(third).toMatchObject({ CreateTime: 2_000, UpdateTime: 3_000 });
    expect(third.DeviceAccessKeyId).not.toBe(second.DeviceAccessKeyId);
    expect(r.findByKeyId(second.DeviceAccessKeyId)).toBeUndefined();
    expect(r.count(INSTANCE)).toBe(1);
    r.unregister(INSTANCE, 'GID_a@@@1');
    expect(r.findByKeyId(third.DeviceAccessKeyId)).toBeUndefined();
    expect(r.count(INSTANCE)).toBe(0);
  });

  it('refuses per policy: DeviceCredentialExsit, DeviceCredentialNumExceed, DeviceCredentialNotFound', () => {
    const reject = new CredentialRegistry({ ...policy, reRegister: 'reject' });
    reject.register(INSTANCE, 'GID_a@@@1');
    expect(faultCode(() => reject.register(INSTANCE, 'GID_a@@@1'))).toBe('DeviceCredentialExsit');
    const quota = new CredentialRegistry({ ...policy, credentialQuota: 1 });
    quota.register(INSTANCE, 'GID_a@@@1');
    expect(faultCode(() => quota.register(INSTANCE, 'GID_a@@@2'))).toBe('DeviceCredentialNumExceed');
    expect(faultCode(() => quota.register(INSTANCE, 'GID_a@@@1'))).toBeUndefined();
    expect(faultCode(() => quota.register('mqtt-other', 'GID_a@@@2'))).toBeUndefined(); // the quota is per instance
    for (const op of ['get', 'refresh', 'unregister'] as const) {
      expect(faultCode(() => quota[op](INSTANCE, 'GID_a@@@none'))).toBe('DeviceCredentialNotFound');
    }
  });

  it('lists one GroupId, sorted', () => {
    const r = new CredentialRegistry(policy);
    for (const id of ['GID_b@@@2', 'GID_a@@@3', 'GID_a@@@1', 'GID_ab@@@0', 'GID_a@@@2']) r.register(INSTANCE, id);
    expect(r.listClientIds(INSTANCE, 'GID_a')).toEqual(['GID_a@@@1', 'GID_a@@@2', 'GID_a@@@3']);
    expect(r.listClientIds('mqtt-other', 'GID_a')).toEqual([]);
  });
});

describe('CONNECT decision', () => {
  const registry = new CredentialRegistry({ reRegister: 'rotate', credentialQuota: Infinity, now: () => 0 });
  const config = { instanceId: INSTANCE, accessKeyId: 'LTAIacct', accessKeySecret: 'acctsecret', registry };
  const cred = registry.register(INSTANCE, 'GID_a@@@1');
  const rc = (clientId: string, username: string | undefined, password: string | undefined): number => {
    try {
      checkConnect(config, clientId, username, password === undefined ? undefined : Buffer.from(password));
      return 0;
    } catch (error) {
      expect(error).toBeInstanceOf(ConnectRefusal);
      expect((error as Error).message).not.toContain(cred.DeviceAccessKeySecret);
      return (error as ConnectRefusal).returnCode;
    }
  };
  const dcUser = `DeviceCredential|${cred.DeviceAccessKeyId}|${INSTANCE}`;

  it('returns rc 0 / 2 / 4 / 5 per the reference', () => {
    expect(rc('GID_a@@@1', dcUser, hmacPassword(cred.DeviceAccessKeySecret, 'GID_a@@@1'))).toBe(0);
    expect(rc('GID_a@@@1', `Signature|LTAIacct|${INSTANCE}`, hmacPassword('acctsecret', 'GID_a@@@1'))).toBe(0);
    expect(rc('bad', dcUser, hmacPassword(cred.DeviceAccessKeySecret, 'bad'))).toBe(2);
    expect(rc('GID_a@@@1', undefined, undefined)).toBe(4);
    expect(rc('GID_a@@@1', dcUser, undefined)).toBe(4);
    expect(rc('GID_a@@@1', dcUser, hmacPassword(cred.DeviceAccessKeySecret, 'GID_a@@@1').slice(1))).toBe(4);
    expect(rc('GID_a@@@1', `Token|LTAIacct|${INSTANCE}`, 'R|token')).toBe(4);
    expect(rc('GID_a@@@1', `DeviceCredential|${cred.DeviceAccessKeyId}|mqtt-other`, hmacPassword(cred.DeviceAccessKeySecret, 'GID_a@@@1'))).toBe(5);
    expect(rc('GID_a@@@2', dcUser, hmacPassword(cred.DeviceAccessKeySecret, 'GID_a@@@2'))).toBe(5);
  });
});

describe('stats recorder', () => {
  it('keeps known Action names as plain keys (even __proto__), sorts return codes', () => {
    const s = new StatsRecorder(['__proto__', 'GetDeviceCredential']);
    s.recordCall('__proto__', 'MissingParameter');
    s.recordCall(undefined, 'MissingParameter');
    s.recordCall('');
    s.recordConnack(5);
    s.recordConnack(0);
    const snap = s.snapshot(3);
    expect(Object.getPrototypeOf(snap.actions)).toBe(Object.prototype);
    expect(Object.keys(snap.actions)).toEqual(['__proto__', '(none)']);
    expect(JSON.parse(JSON.stringify(snap))).toEqual({
      actions: { ['__proto__']: { ok: 0, errors: { MissingParameter: 1 } }, '(none)': { ok: 1, errors: { MissingParameter: 1 } } },
      mqtt: { connected: 3, connacks: { 0: 1, 5: 1 }, rules: {}, queues: { sessions: 0, messages: 0, bytes: 0, largestMessages: 0, largestBytes: 0 } },
    });
  });

  it('counts every other Action under one (unknown) key, so made-up names cannot grow it', () => {
    const s = new StatsRecorder(['GetDeviceCredential']);
    for (let i = 0; i < 1000; i++) s.recordCall(`Made-up-${i}`, i % 2 === 0 ? 'ApiNotSupport' : 'SignatureDoesNotMatch');
    s.recordCall('GetDeviceCredential');
    s.recordCall('constructor');
    expect(s.snapshot(0).actions).toEqual({
      '(unknown)': { ok: 1, errors: { ApiNotSupport: 500, SignatureDoesNotMatch: 500 } },
      GetDeviceCredential: { ok: 1, errors: {} },
    });
  });
});
