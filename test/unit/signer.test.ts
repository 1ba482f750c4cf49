import { randomBytes, randomInt } from 'node:crypto';
import CryptoJS from 'crypto-js';
import { describe, expect, it } from 'vitest';
import { DeviceCredential } from '../../src/credential.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import {
  canonicalizedQueryString,
  hmacPassword,
  parseUsername,
  percentEncode,
  signDeviceCredential,
  signRpc,
  signSignature,
  signToken,
  stringToSign,
} from '../../src/signer/index.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
function randomString(min: number, max: number, alphabet = ALPHABET): string {
  const n = randomInt(min, max + 1);
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[randomInt(alphabet.length)];
  return s;
}

describe('MQTT password (HMAC-SHA1, Base64)', () => {
  it('matches the known answer', () => {
    expect(hmacPassword('XXXXX', 'GID_test@@@0001')).toBe('bGdOc9YXqL/kM2hYBkXR0I2IPOE=');
  });

  it('agrees byte for byte with crypto-js over 1,000 random secrets and ClientIds', () => {
    for (let i = 0; i < 1000; i++) {
      // Secrets: printable ASCII plus some UTF-8, to exercise the key encoding too.
      const secret = i % 10 === 0 ? `DC.${randomBytes(8).toString('hex')}é€` : `DC.${randomString(1, 40, ALPHABET + '.+/=')}`;
      const clientId = `GID_${randomString(1, 20)}@@@${randomString(1, 36)}`;
      const oracle = CryptoJS.HmacSHA1(clientId, secret).toString(CryptoJS.enc.Base64);
      expect(hmacPassword(secret, clientId)).toBe(oracle);
    }
  });

  it('is Base64 with padding, never hex', () => {
    const p = hmacPassword('secret', 'GID_a@@@b');
    expect(p).toMatch(/^[A-Za-z0-9+/]{27}=$/);
  });
});

describe('username formats', () => {
  const cred = new DeviceCredential({
    clientId: 'GID_test@@@0001',
    instanceId: 'mqtt-cn-test',
    deviceAccessKeyId: 'DC.Z5fXh9sRRVufyLi6woAbCd',
    deviceAccessKeySecret: 'XXXXX',
  });

  it('DeviceCredential mode', () => {
    expect(signDeviceCredential(cred)).toEqual({
      username: 'DeviceCredential|DC.Z5fXh9sRRVufyLi6woAbCd|mqtt-cn-test',
      password: 'bGdOc9YXqL/kM2hYBkXR0I2IPOE=',
      clientId: 'GID_test@@@0001',
    });
  });

  it('Signature mode keys the HMAC with the account secret', () => {
    expect(signSignature({ accessKeyId: 'LTAIkey', accessKeySecret: 'XXXXX', instanceId: 'mqtt-cn-test', clientId: 'GID_test@@@0001' })).toEqual({
      username: 'Signature|LTAIkey|mqtt-cn-test',
      password: 'bGdOc9YXqL/kM2hYBkXR0I2IPOE=',
      clientId: 'GID_test@@@0001',
    });
  });

  it('Token mode joins type|token pairs', () => {
    const s = signToken({ accessKeyId: 'LTAIkey', instanceId: 'mqtt-cn-test', clientId: 'GID_test@@@0001', tokens: [{ type: 'R', token: '123' }, { type: 'W', token: 'abcd' }] });
    expect(s.username).toBe('Token|LTAIkey|mqtt-cn-test');
    expect(s.password).toBe('R|123|W|abcd');
    expect(() => signToken({ accessKeyId: 'k', instanceId: 'i', clientId: 'GID_a@@@b', tokens: [{ type: 'R', token: '1' }, { type: 'R', token: '2' }] })).toThrow(/one token per type/);
    expect(() => signToken({ accessKeyId: 'k', instanceId: 'i', clientId: 'GID_a@@@b', tokens: [] })).toThrow(/at least one token/);
  });

  it('parses usernames back', () => {
    expect(parseUsername('DeviceCredential|DC.x|mqtt-1')).toEqual({ mode: 'DeviceCredential', keyId: 'DC.x', instanceId: 'mqtt-1' });
    expect(parseUsername('DeviceCredential|DC.x')).toBeUndefined();
    expect(parseUsername('a|b|c|d')).toBeUndefined();
    expect(parseUsername('||')).toBeUndefined();
    expect(parseUsername(undefined)).toBeUndefined();
  });

  it('refuses bad ClientIds with a typed error', () => {
    for (const bad of ['', 'GID_test', `GID_${'x'.repeat(58)}@@@y`, 'GID_tést@@@1', 'group@@@1', 'GID_a@@@']) {
      try {
        signDeviceCredential({ clientId: bad, instanceId: 'i', deviceAccessKeyId: 'k', deviceAccessKeySecret: 's' });
        expect.unreachable(`accepted ${bad}`);
      } catch (e) {
        expect(isApsaraMqDeviceError(e, 'InvalidClientId')).toBe(true);
      }
    }
  });
});

describe('OpenAPI signature method V2 (HMAC-SHA1)', () => {
  const params = {
    AccessKeyId: 'testid',
    Action: 'GetDeviceCredential',
    ClientId: 'GID_test@@@test',
    Format: 'JSON',
    InstanceId: 'mqtt-cn-test',
    SignatureMethod: 'HMAC-SHA1',
    SignatureNonce: '3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf',
    SignatureVersion: '1.0',
    Timestamp: '2020-05-19T10:33:56Z',
    Version: '2020-04-20',
  };

  it('percent-encodes like the gateway', () => {
    expect(percentEncode('GID_test@@@dev 1*(x)~')).toBe('GID_test%40%40%40dev%201%2A%28x%29~');
    expect(percentEncode("!'")).toBe('%21%27');
  });

  it('builds the reference StringToSign', () => {
    expect(stringToSign('GET', params)).toBe(
      'GET&%2F&AccessKeyId%3Dtestid%26Action%3DGetDeviceCredential%26ClientId%3DGID_test%2540%2540%2540test%26Format%3DJSON%26InstanceId%3Dmqtt-cn-test%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2020-05-19T10%253A33%253A56Z%26Version%3D2020-04-20',
    );
  });

  it('matches the reference GET and POST signatures', () => {
    expect(signRpc('GET', params, 'testsecret')).toBe('pHWkc3ADMq3E9X2BHpcigpS8n3g=');
    expect(signRpc('POST', params, 'testsecret')).toBe('7K8pdI/y1CsfrxiHe0LniV8macM=');
  });

  it('ignores a Signature parameter when canonicalizing', () => {
    expect(canonicalizedQueryString({ ...params, Signature: 'x' })).toBe(canonicalizedQueryString(params));
  });
});
