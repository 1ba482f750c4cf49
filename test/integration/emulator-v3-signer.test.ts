import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import {
  hashPayload,
  parseV3Authorization,
  signV3Request,
  v3CanonicalQueryString,
  v3CanonicalRequest,
  v3Signature,
  v3StringToSign,
  type V3Algorithm,
} from '../../src/signer/openapi-v3.js';
import { startHttpServer } from '../helpers/http.js';
import { officialCall, officialClient, officialFailure } from '../helpers/openapi-client.js';

/** What the official client put on the wire. */
interface Captured {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  body: string;
}

/**
 * Let `@alicloud/openapi-client` sign one request against a plain server that records it: the known answer is
 * the Authorization its own signer computed, for a date and nonce it chose.
 */
async function captureOfficial(algorithm: string | undefined, where: 'query' | 'body', secret: string): Promise<Captured> {
  let captured: Captured | undefined;
  const server = await startHttpServer((req: IncomingMessage, res, body) => {
    const url = new URL(req.url ?? '/', 'http://x');
    captured = {
      method: req.method ?? '',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)])),
      body,
    };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"RequestId":"X"}');
  });
  const client = officialClient({ apiEndpoint: server.url, accessKeyId: 'LTAItestkey', accessKeySecret: secret }, algorithm === undefined ? {} : { signatureAlgorithm: algorithm });
  // Values of every kind; names stay in the unreserved set, as every real parameter name is. (For a name outside it,
  // openapi-util signs the name unencoded while Alibaba's description encodes it; the emulator follows the description.)
  await officialCall(client, 'GetDeviceCredential', { ClientId: 'GID_kat@@@dev 1*(x)~', InstanceId: 'mqtt-cn-kat', Odd_Name: "v'a l!+&=%" }, { where });
  if (!captured) throw new Error('no request captured');
  return captured;
}

describe('src/signer/openapi-v3 against the official client signer (known answers)', () => {
  it.each([
    [undefined, 'query'],
    [undefined, 'body'],
    ['ACS3-HMAC-SM3', 'query'],
  ] as const)('signatureAlgorithm %s, parameters in the %s: same canonical request, same Authorization', async (algorithm, where) => {
    const secret = 'kat-secret/+=';
    const wire = await captureOfficial(algorithm, where, secret);
    const auth = parseV3Authorization(wire.headers['authorization'] ?? '');
    expect(auth).toBeDefined();
    if (!auth) return;
    const expectedAlgorithm: V3Algorithm = algorithm ?? 'ACS3-HMAC-SHA256';
    expect(auth.algorithm).toBe(expectedAlgorithm);
    expect(auth.accessKeyId).toBe('LTAItestkey');
    expect(wire.headers['x-acs-content-sha256']).toBe(hashPayload(wire.body, expectedAlgorithm));

    // Verify: our canonical request over what was on the wire gives the client's signature.
    const canonical = v3CanonicalRequest({
      method: wire.method,
      path: wire.path,
      query: wire.query,
      headers: wire.headers,
      signedHeaders: auth.signedHeaders,
      hashedPayload: wire.headers['x-acs-content-sha256'] ?? '',
    });
    expect(v3Signature(v3StringToSign(canonical, expectedAlgorithm), secret, expectedAlgorithm)).toBe(auth.signature);

    // Sign: the same inputs (its date and nonce) give the very same Authorization header.
    const extraHeaders = Object.fromEntries(Object.entries(wire.headers).filter(([k]) => k.startsWith('x-acs-') && !['x-acs-action', 'x-acs-version', 'x-acs-date', 'x-acs-signature-nonce', 'x-acs-content-sha256'].includes(k)));
    const headers = signV3Request({
      method: wire.method,
      host: wire.headers['host'] ?? '',
      action: wire.headers['x-acs-action'] ?? '',
      version: wire.headers['x-acs-version'] ?? '',
      query: wire.query,
      ...(wire.body === '' ? {} : { body: wire.body }),
      ...(wire.headers['content-type'] === undefined ? {} : { contentType: wire.headers['content-type'] }),
      accessKeyId: 'LTAItestkey',
      accessKeySecret: secret,
      date: new Date(wire.headers['x-acs-date'] ?? ''),
      nonce: wire.headers['x-acs-signature-nonce'] ?? '',
      algorithm: expectedAlgorithm,
      extraHeaders,
    });
    expect(headers['authorization']).toBe(wire.headers['authorization']);
  });

  it('canonical query string: sorted by name, RFC 3986 both sides (space %20, * %2A, ~ kept)', () => {
    expect(v3CanonicalQueryString({ b: 'x y*~', a: "it's (1)!", 'c d': '' })).toBe('a=it%27s%20%281%29%21&b=x%20y%2A~&c%20d=');
  });

  it('parses Authorization strictly', () => {
    expect(parseV3Authorization('ACS3-HMAC-SHA256 Credential=id,SignedHeaders=host;x-acs-date,Signature=ab')).toEqual({
      algorithm: 'ACS3-HMAC-SHA256', accessKeyId: 'id', signedHeaders: ['host', 'x-acs-date'], signature: 'ab',
    });
    expect(parseV3Authorization('ACS3-HMAC-SHA256 Credential=id, SignedHeaders=HOST, Signature=ab')?.signedHeaders).toEqual(['host']);
    for (const bad of ['', 'ACS3-HMAC-SHA256', 'ACS3-RSA-SHA256 Credential=a,SignedHeaders=host,Signature=b', 'ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host', 'ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host;;x,Signature=b', 'ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=b,Extra=c']) {
      expect(parseV3Authorization(bad), bad).toBeUndefined();
    }
  });

  it('the official client reads the emulator-side error of a plain server as a Tea error (sanity of the helper)', async () => {
    const server = await startHttpServer((_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end('{"RequestId":"R","Code":"SignatureDoesNotMatch","Message":"m"}');
    });
    const error = await officialFailure(officialCall(officialClient({ apiEndpoint: server.url, accessKeyId: 'a', accessKeySecret: 'b' }), 'GetDeviceCredential', {}));
    expect(error.code).toBe('SignatureDoesNotMatch');
  });
});
