import { createHash, createHmac, randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { describe, expect, it } from 'vitest';
import { DeviceCredential } from '../../src/credential.js';
import type { Emulator } from '../../src/emulator/index.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { connackCode, useEmulator } from '../helpers/emulator.js';
import { officialCall, officialClient, officialFailure } from '../helpers/openapi-client.js';

interface CredentialBody {
  RequestId: string;
  DeviceCredential: { ClientId: string; InstanceId: string; DeviceAccessKeyId: string; DeviceAccessKeySecret: string; CreateTime: number; UpdateTime: number };
}

interface ListBody {
  RequestId: string;
  DeviceCredentialClientIdList: { Total: string; ClientIdList: string[]; PageNo: string; PageSize: string; NextToken?: string };
}

describe('Signature V3: the official @alicloud/openapi-client with its default configuration', () => {
  const emu = useEmulator();

  it('runs all five operations (parameters in the query, as the generated onsmqtt SDK sends them)', async () => {
    const e = emu();
    const client = officialClient(e);
    const params = { ClientId: 'GID_v3@@@dev-1', InstanceId: e.instanceId };
    const registered = await officialCall<CredentialBody>(client, 'RegisterDeviceCredential', params);
    expect(registered.statusCode).toBe(200);
    const credential = DeviceCredential.fromWire(registered.body);
    expect(credential.clientId).toBe('GID_v3@@@dev-1');
    expect(await connackCode(e.mqttUrl, signDeviceCredential(credential))).toBe(0);

    const got = await officialCall<CredentialBody>(client, 'GetDeviceCredential', params);
    expect(got.body.DeviceCredential).toEqual(registered.body.DeviceCredential);

    const refreshed = await officialCall<CredentialBody>(client, 'RefreshDeviceCredential', params);
    expect(refreshed.body.DeviceCredential.DeviceAccessKeyId).not.toBe(credential.deviceAccessKeyId);
    expect(refreshed.body.DeviceCredential.CreateTime).toBe(credential.createTime);

    const listed = await officialCall<ListBody>(client, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_v3', PageSize: '10' });
    expect(listed.body.DeviceCredentialClientIdList).toEqual({ Total: '1', ClientIdList: ['GID_v3@@@dev-1'], PageNo: '1', PageSize: '10' });

    const unregistered = await officialCall(client, 'UnRegisterDeviceCredential', params);
    expect(Object.keys(unregistered.body)).toEqual(['RequestId']);
    const gone = await officialFailure(officialCall(client, 'GetDeviceCredential', params));
    expect(gone.code).toBe('DeviceCredentialNotFound');
    expect(gone.data.statusCode).toBe(400);
    expect(e.stats().actions).toMatchObject({
      RegisterDeviceCredential: { ok: 1, errors: {} },
      GetDeviceCredential: { ok: 1, errors: { DeviceCredentialNotFound: 1 } },
      ListDeviceCredentialClientId: { ok: 1, errors: {} },
    });
  });

  it('signs a form body too (x-acs-content-sha256 of the body, content-type signed), and GET with the query', async () => {
    const e = emu();
    const client = officialClient(e);
    const params = { ClientId: 'GID_v3@@@form-1', InstanceId: e.instanceId };
    const registered = await officialCall<CredentialBody>(client, 'RegisterDeviceCredential', params, { where: 'body' });
    const got = await officialCall<CredentialBody>(client, 'GetDeviceCredential', params);
    expect(got.body.DeviceCredential).toEqual(registered.body.DeviceCredential);
    // GET with the query: ListDeviceCredentialClientId takes it (the credential operations are POST only).
    const listed = await officialCall<ListBody>(client, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_v3', PageSize: '100' }, { method: 'GET' });
    expect(listed.body.DeviceCredentialClientIdList.ClientIdList).toContain('GID_v3@@@form-1');
  });

  it('a wrong secret is SignatureDoesNotMatch with the server string to sign; a wrong key id is InvalidAccessKeyId.NotFound', async () => {
    const e = emu();
    const params = { ClientId: 'GID_v3@@@dev-2', InstanceId: e.instanceId };
    const badSecret = await officialFailure(officialCall(officialClient(e, { accessKeySecret: 'wrong-secret' }), 'GetDeviceCredential', params));
    expect(badSecret.code).toBe('SignatureDoesNotMatch');
    expect(badSecret.data.statusCode).toBe(400);
    expect(String(badSecret.data['Message'])).toMatch(/server string to sign is:ACS3-HMAC-SHA256\n[0-9a-f]{64}$/);
    expect(JSON.stringify(badSecret.data)).not.toContain(e.accessKeySecret);
    const badId = await officialFailure(officialCall(officialClient(e, { accessKeyId: 'LTAInobody' }), 'GetDeviceCredential', params));
    expect(badId.code).toBe('InvalidAccessKeyId.NotFound');
    expect(badId.data.statusCode).toBe(404);
  });

  it('the ACS3-HMAC-SM3 variant is verified too', async () => {
    const e = emu();
    const client = officialClient(e, { signatureAlgorithm: 'ACS3-HMAC-SM3' });
    const params = { ClientId: 'GID_v3@@@sm3-1', InstanceId: e.instanceId };
    const registered = await officialCall<CredentialBody>(client, 'RegisterDeviceCredential', params);
    expect((await officialCall<CredentialBody>(client, 'GetDeviceCredential', params)).body.DeviceCredential).toEqual(registered.body.DeviceCredential);
    const wrong = await officialFailure(officialCall(officialClient(e, { signatureAlgorithm: 'ACS3-HMAC-SM3', accessKeySecret: 'x' }), 'GetDeviceCredential', params));
    expect(String(wrong.data['Message'])).toMatch(/server string to sign is:ACS3-HMAC-SM3\n[0-9a-f]{64}$/);
  });

  it("with signatureAlgorithm 'v2' (the query-string method) it still works, through the V2 gateway", async () => {
    const e = emu();
    const client = officialClient(e, { signatureAlgorithm: 'v2' });
    const params = { ClientId: 'GID_v3@@@v2-1', InstanceId: e.instanceId };
    const registered = await officialCall<CredentialBody>(client, 'RegisterDeviceCredential', params);
    const got = await officialCall<CredentialBody>(client, 'GetDeviceCredential', params, { where: 'body' });
    expect(got.body.DeviceCredential).toEqual(registered.body.DeviceCredential);
    await officialCall(client, 'RefreshDeviceCredential', params);
    const listed = await officialCall<ListBody>(client, 'ListDeviceCredentialClientId', { InstanceId: e.instanceId, GroupId: 'GID_v3', PageSize: '10' });
    expect(listed.body.DeviceCredentialClientIdList.ClientIdList).toContain('GID_v3@@@v2-1');
    await officialCall(client, 'UnRegisterDeviceCredential', params);
    const wrong = await officialFailure(officialCall(officialClient(e, { signatureAlgorithm: 'v2', accessKeySecret: 'nope' }), 'GetDeviceCredential', params));
    expect(wrong.code).toBe('SignatureDoesNotMatch');
    // The V2 gateway's string to sign, not V3's: the request really went the V2 way.
    expect(String(wrong.data['Message'])).toContain('server string to sign is:POST&%2F&AccessKeyId');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// An independent V3 signer, written here from Alibaba's description of the method (reference §8.1) with nothing but
// node:crypto, so that the emulator's verification is checked against code it does not share.

const rfc3986 = (text: string): string =>
  encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const sha256 = (data: string): string => createHash('sha256').update(data, 'utf8').digest('hex');

interface HandRequest {
  method?: string;
  action?: string;
  version?: string;
  query?: Record<string, string>;
  body?: string;
  contentType?: string;
  secret?: string;
  keyId?: string;
  date?: string;
  nonce?: string;
  /** Change the headers after signing (to send what was not signed). */
  tamper?: (headers: Record<string, string>) => void;
  /** Sign these header names instead of all of them. */
  signOnly?: (names: string[]) => string[];
  /** Send this x-acs-content-sha256 (signed) instead of the body's hash. */
  claimedHash?: string;
}

interface HandReply {
  status: number;
  body: Record<string, unknown>;
}

/** Sign with the hand-written V3 signer and send over a raw http.request (so Host is exactly what was signed). */
function handSigned(e: Emulator, r: HandRequest = {}): Promise<HandReply> {
  const url = new URL(e.apiEndpoint);
  const method = r.method ?? 'POST';
  const query = r.query ?? { ClientId: 'GID_hand@@@dev', InstanceId: e.instanceId };
  const body = r.body ?? '';
  const headers: Record<string, string> = {
    host: url.host,
    'x-acs-action': r.action ?? 'GetDeviceCredential',
    'x-acs-version': r.version ?? '2020-04-20',
    'x-acs-date': r.date ?? new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    'x-acs-signature-nonce': r.nonce ?? randomUUID(),
    'x-acs-content-sha256': r.claimedHash ?? sha256(body),
  };
  if (r.contentType) headers['content-type'] = r.contentType;
  const allNames = Object.keys(headers).sort();
  const names = r.signOnly ? r.signOnly(allNames) : allNames;
  const canonicalQuery = Object.keys(query)
    .sort()
    .map((k) => `${rfc3986(k)}=${rfc3986(query[k] ?? '')}`)
    .join('&');
  const canonicalHeaders = names.map((n) => `${n}:${(headers[n] ?? '').trim()}\n`).join('');
  const canonicalRequest = [method, '/', canonicalQuery, canonicalHeaders, names.join(';'), headers['x-acs-content-sha256']].join('\n');
  const stringToSign = `ACS3-HMAC-SHA256\n${sha256(canonicalRequest)}`;
  const signature = createHmac('sha256', r.secret ?? e.accessKeySecret).update(stringToSign).digest('hex');
  headers['authorization'] = `ACS3-HMAC-SHA256 Credential=${r.keyId ?? e.accessKeyId},SignedHeaders=${names.join(';')},Signature=${signature}`;
  r.tamper?.(headers);
  return send(e, method, `/?${canonicalQuery}`, headers, body);
}

function send(e: Emulator, method: string, path: string, headers: Record<string, string>, body: string): Promise<HandReply> {
  const url = new URL(e.apiEndpoint);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, method, path, headers, setHost: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function expectCode(reply: HandReply, status: number, code: string, message?: RegExp): void {
  expect({ status: reply.status, code: reply.body['Code'] }).toEqual({ status, code });
  if (message) expect(String(reply.body['Message'])).toMatch(message);
}

describe('Signature V3: verified against a signer written independently in the test', () => {
  const emu = useEmulator();

  it('accepts a correctly signed request (query, form body, GET of List), which proves the hand signer agrees with the emulator', async () => {
    const e = emu();
    const registered = await handSigned(e, { action: 'RegisterDeviceCredential', query: { ClientId: 'GID_hand@@@ok', InstanceId: e.instanceId } });
    expect(registered.status).toBe(200);
    const form = `ClientId=${rfc3986('GID_hand@@@ok')}&InstanceId=${e.instanceId}`;
    const got = await handSigned(e, { query: {}, body: form, contentType: 'application/x-www-form-urlencoded' });
    expect(got.status).toBe(200);
    expect(got.body['DeviceCredential']).toEqual(registered.body['DeviceCredential']);
    // GET of an action that takes it (the credential operations are POST only).
    const viaGet = await handSigned(e, { method: 'GET', action: 'ListDeviceCredentialClientId', query: { GroupId: 'GID_hand', InstanceId: e.instanceId, PageSize: '10', 'Odd name*': "it's (odd) ~ ok" } });
    expect(viaGet.status).toBe(200);
  });

  it('a bad signature is SignatureDoesNotMatch (400) with the server string to sign', async () => {
    const e = emu();
    expectCode(await handSigned(e, { secret: 'not-the-secret' }), 400, 'SignatureDoesNotMatch', /server string to sign is:ACS3-HMAC-SHA256\n[0-9a-f]{64}$/);
    // A parameter changed after signing breaks it too.
    const tampered = await handSigned(e, { tamper: (h) => void (h['x-acs-action'] = 'RegisterDeviceCredential') });
    expectCode(tampered, 400, 'SignatureDoesNotMatch');
  });

  it('a replayed nonce is SignatureNonceUsed; a forged request does not burn the nonce', async () => {
    const e = emu();
    const nonce = randomUUID();
    expectCode(await handSigned(e, { nonce, secret: 'forged' }), 400, 'SignatureDoesNotMatch');
    expectCode(await handSigned(e, { nonce }), 400, 'DeviceCredentialNotFound');
    expectCode(await handSigned(e, { nonce }), 400, 'SignatureNonceUsed');
  });

  it('a stale or future date is InvalidTimeStamp.Expired; a malformed one InvalidTimeStamp.Format', async () => {
    const e = emu();
    const at = (ms: number): string => new Date(Date.now() + ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
    expectCode(await handSigned(e, { date: at(-16 * 60_000) }), 400, 'InvalidTimeStamp.Expired');
    expectCode(await handSigned(e, { date: at(16 * 60_000) }), 400, 'InvalidTimeStamp.Expired');
    expectCode(await handSigned(e, { date: at(-14 * 60_000) }), 400, 'DeviceCredentialNotFound');
    expectCode(await handSigned(e, { date: new Date().toUTCString() }), 400, 'InvalidTimeStamp.Format');
    expectCode(await handSigned(e, { date: '2026-13-40T25:61:61Z' }), 400, 'InvalidTimeStamp.Format');
  });

  it.each(['x-acs-action', 'x-acs-version', 'x-acs-date', 'x-acs-signature-nonce', 'x-acs-content-sha256', 'authorization'])(
    'a request without %s is MissingParameter naming it',
    async (name) => {
      const e = emu();
      const reply = await handSigned(e, { tamper: (h) => void delete h[name] });
      expectCode(reply, 400, 'MissingParameter', new RegExp(`"${name}"`));
    },
  );

  it('a body whose hash is not x-acs-content-sha256 is IncompleteSignature, even when that claimed hash is signed', async () => {
    const e = emu();
    const form = `ClientId=${rfc3986('GID_hand@@@ok')}&InstanceId=${e.instanceId}`;
    const reply = await handSigned(e, { query: {}, body: form, contentType: 'application/x-www-form-urlencoded', claimedHash: sha256('something else') });
    expectCode(reply, 400, 'IncompleteSignature', /x-acs-content-sha256/);
  });

  it('SignedHeaders must cover host, every x-acs-* header and content-type, and name only headers that were sent', async () => {
    const e = emu();
    expectCode(await handSigned(e, { signOnly: (n) => n.filter((x) => x !== 'x-acs-signature-nonce') }), 400, 'IncompleteSignature', /x-acs-signature-nonce/);
    expectCode(await handSigned(e, { signOnly: (n) => n.filter((x) => x !== 'host') }), 400, 'IncompleteSignature', /host/);
    const form = `ClientId=x&InstanceId=${e.instanceId}`;
    expectCode(await handSigned(e, { body: form, contentType: 'application/x-www-form-urlencoded', signOnly: (n) => n.filter((x) => x !== 'content-type') }), 400, 'IncompleteSignature', /content-type/);
    expectCode(await handSigned(e, { tamper: (h) => void (h['x-acs-extra'] = 'unsigned') }), 400, 'IncompleteSignature', /x-acs-extra/);
    expectCode(await handSigned(e, { signOnly: (n) => [...n, 'x-acs-missing'].sort() }), 400, 'IncompleteSignature', /x-acs-missing/);
  });

  it('an Authorization that does not parse is IncompleteSignature; an unknown key id InvalidAccessKeyId.NotFound', async () => {
    const e = emu();
    for (const value of ['ACS3-HMAC-SHA256', 'ACS3-HMAC-SHA256 Credential=x', 'HMAC-SHA1 Credential=a,SignedHeaders=host,Signature=b', 'ACS3-HMAC-SHA256 Credential=a,Credential=b,SignedHeaders=host,Signature=c']) {
      expectCode(await handSigned(e, { tamper: (h) => void (h['authorization'] = value) }), 400, 'IncompleteSignature');
    }
    expectCode(await handSigned(e, { keyId: 'LTAInobody' }), 404, 'InvalidAccessKeyId.NotFound');
  });

  it('Action and Version come from the headers: an unknown action is ApiNotSupport, another version InvalidVersion', async () => {
    const e = emu();
    expectCode(await handSigned(e, { action: 'DescribeInstances' }), 404, 'ApiNotSupport');
    expect(e.stats().actions['(unknown)']?.errors).toEqual({ ApiNotSupport: 1 });
    expectCode(await handSigned(e, { version: '2019-01-01' }), 400, 'InvalidVersion');
    // An Action parameter in the query does not override the signed header.
    expectCode(await handSigned(e, { query: { Action: 'RegisterDeviceCredential', ClientId: 'GID_hand@@@dev', InstanceId: e.instanceId } }), 400, 'DeviceCredentialNotFound');
  });
});
