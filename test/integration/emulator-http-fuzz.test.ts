import { createConnection } from 'node:net';
import TeaXmlModule from '@alicloud/tea-xml';
import { describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import { signV3Request } from '../../src/signer/openapi-v3.js';
import { callApi, commonParams, signed, useEmulator } from '../helpers/emulator.js';
import { int, pick, prng, type Random } from '../helpers/fuzz.js';

/**
 * A seeded, bounded fuzz of the OpenAPI side: random and malformed parameter names, values, percent-encodings,
 * bytes, methods, content types and signatures (none, V2, V3, broken) against one running emulator. Every answer
 * must be well-formed: a status below 500, never 417 (InternalError is the emulator failing, never the client's
 * garbage), a JSON or XML body (per its Content-Type) with RequestId, and Code when it is an error. The emulator
 * must still serve a real call at the end. Same seed, same cases: a failure names its seed and case.
 */

const SEED = Number(process.env['FUZZ_SEED'] ?? 20261128);
const CASES = 2500;
const CONCURRENCY = 8;

type Rng = Random;

const NAMES = ['Action', 'Version', 'AccessKeyId', 'Signature', 'SignatureMethod', 'SignatureVersion', 'SignatureNonce', 'Timestamp', 'Format', 'ClientId', 'InstanceId', 'GroupId', 'PageSize', 'PageNo', 'NextToken', '__proto__', 'constructor', ''];
const ACTIONS = ['RegisterDeviceCredential', 'GetDeviceCredential', 'RefreshDeviceCredential', 'UnRegisterDeviceCredential', 'ListDeviceCredentialClientId', 'Bogus', ''];

/** A random string of one of several nasty kinds (already decoded text; how it is encoded is chosen later). */
function text(rng: Rng): string {
  switch (int(rng, 9)) {
    case 0:
      return '';
    case 1:
      return 'GID_fuzz@@@dev-' + String(int(rng, 50));
    case 2:
      return Array.from({ length: int(rng, 40) }, () => String.fromCharCode(0x20 + int(rng, 95))).join('');
    case 3:
      return Array.from({ length: int(rng, 20) }, () => String.fromCodePoint(int(rng, 0x2ffff))).join('');
    case 4:
      return String.fromCharCode(0xd800 + int(rng, 0x800)); // a lone surrogate
    case 5:
      return 'x'.repeat(int(rng, 5000));
    case 6:
      return Array.from({ length: int(rng, 10) }, () => String.fromCharCode(int(rng, 32))).join(''); // controls
    case 7:
      return pick(rng, ['XML', 'xml', 'JSON', '2020-04-20', 'HMAC-SHA1', '1.0', '100', '-1', '0', '1e9', 'true']);
    default:
      return pick(rng, ACTIONS);
  }
}

/** Percent-encode, sometimes wrongly (unless `clean`): a stray %, a truncated escape, raw bytes, invalid UTF-8. */
function encode(rng: Rng, value: string, clean = false): string {
  switch (clean ? 2 : int(rng, 6)) {
    case 0:
      return value + pick(rng, ['%', '%z', '%E0%A4', '%FF', '%C0%AF', '%ED%A0%80']);
    case 1:
      return Buffer.from(value, 'utf8').toString('latin1'); // raw bytes on the wire
    default:
      try {
        return encodeURIComponent(value);
      } catch {
        return '%ED%A0%80'; // what a lone surrogate would look like as (invalid) UTF-8
      }
  }
}

interface Case {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
}

function form(rng: Rng, params: Record<string, string>, clean: boolean): string {
  return Object.entries(params)
    .map(([k, v]) => `${encode(rng, k, clean)}=${encode(rng, v, clean)}`)
    .join('&');
}

function randomCase(rng: Rng, e: Emulator): Case {
  const host = new URL(e.apiEndpoint).host;
  const shape = int(rng, 4);
  const method = shape >= 2 && rng() < 0.8 ? pick(rng, ['POST', 'GET']) : pick(rng, ['POST', 'POST', 'POST', 'GET', 'GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'FUZZ']);
  const params: Record<string, string> = {};
  // Signed shapes (2: V2, 3: V3) mostly keep their parameters sane and cleanly encoded, so that many get past the
  // gateway into routing and the actions; the others are garbage from the first byte.
  const signedShape = shape >= 2;
  const clean = signedShape && rng() < 0.9;
  const clientId = signedShape && rng() < 0.6 ? `GID_fuzz@@@dev-${int(rng, 20)}` : text(rng);
  if (shape > 0) Object.assign(params, commonParams(e, pick(rng, ACTIONS), { ClientId: clientId, InstanceId: rng() < 0.7 ? e.instanceId : text(rng), GroupId: 'GID_fuzz', PageSize: String(int(rng, 120)) }));
  for (let i = int(rng, signedShape ? 3 : 6); i > 0; i--) {
    const name = rng() < 0.7 ? pick(rng, NAMES) : text(rng);
    if (signedShape && name in params && rng() < 0.8) continue;
    params[name] = text(rng);
  }
  let signedParams = params;
  if (shape === 2) {
    try {
      signedParams = signed(params, method, e.accessKeySecret); // a valid V2 signature over whatever the params are
    } catch {
      signedParams = params; // a lone surrogate cannot even be signed
    }
  }
  const contentType = signedShape && rng() < 0.7 ? 'application/x-www-form-urlencoded' : pick(rng, ['application/x-www-form-urlencoded', 'application/json', 'text/plain', '', 'application/json; charset=latin1', 'multipart/form-data; boundary=x']);
  const inBody = method !== 'GET' && rng() < 0.6;
  let body = Buffer.alloc(0);
  let query = '';
  if (inBody) {
    body = contentType.startsWith('application/json') ? Buffer.from(rng() < 0.8 ? JSON.stringify(signedParams) : `{"ClientId": "${text(rng)}"`, 'utf8') : Buffer.from(form(rng, signedParams, clean), 'latin1');
    if (!clean && rng() < 0.1) body = Buffer.from(Array.from({ length: int(rng, 200) }, () => int(rng, 256)));
  } else {
    query = form(rng, signedParams, clean);
  }
  const headers: Record<string, string> = { host };
  if (contentType !== '') headers['content-type'] = contentType;
  if (shape === 3) {
    // V3, signed right or broken in one random way.
    try {
      const v3 = signV3Request({ method, host, action: pick(rng, ACTIONS), version: '2020-04-20', query: {}, body, ...(contentType === '' ? {} : { contentType }), accessKeyId: e.accessKeyId, accessKeySecret: e.accessKeySecret, date: new Date(), nonce: String(rng()) });
      Object.assign(headers, v3);
      const broken = int(rng, 5);
      if (broken === 0) headers['authorization'] = text(rng).replace(/[^\x20-\x7e]/g, '');
      if (broken === 1) delete headers['x-acs-date'];
      if (broken === 2) headers['x-acs-content-sha256'] = 'ff';
      if (broken === 3) headers['x-acs-date'] = 'yesterday';
      query = '';
    } catch {
      // nothing: sent unsigned
    }
  }
  const path = (signedShape && rng() < 0.9 ? '/' : pick(rng, ['/', '/', '/', '/x/y', '/_emulator/stats', '/_emulator/nothing', '//', '/?'])) + (query === '' ? '' : (rng() < 0.5 ? '?' : '?&') + query);
  return { method, path, headers, body };
}

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Send exactly these bytes as one HTTP/1.1 request and read the answer. */
function sendRaw(e: Emulator, c: Case): Promise<RawAnswer> {
  const url = new URL(e.apiEndpoint);
  const lines = [`${c.method} ${c.path.replace(/[\r\n ]/g, '')} HTTP/1.1`];
  for (const [k, v] of Object.entries({ ...c.headers, 'content-length': String(c.body.length), connection: 'close' })) lines.push(`${k}: ${v.replace(/[\r\n]/g, '')}`);
  const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: url.hostname, port: Number(url.port) }, () => socket.end(Buffer.concat([head, c.body])));
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', reject);
    socket.on('close', () => {
      const all = Buffer.concat(chunks).toString('utf8');
      const split = all.indexOf('\r\n\r\n');
      const headerLines = all.slice(0, split).split('\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(headerLines[0] ?? '')?.[1]);
      const headers = Object.fromEntries(headerLines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      resolve({ status, headers, body: all.slice(split + 4) });
    });
  });
}

type TeaXmlClass = typeof TeaXmlModule.default;
const xmlImported: unknown = TeaXmlModule;
const TeaXml = (typeof xmlImported === 'function' ? xmlImported : (xmlImported as { default: TeaXmlClass }).default) as TeaXmlClass;

/** The answer's body as an object, by its Content-Type; throws when it does not parse. */
function bodyOf(answer: RawAnswer): Record<string, unknown> {
  const type = answer.headers['content-type'] ?? '';
  if (type === 'text/xml;charset=utf-8') {
    const doc = TeaXml.parseXml(answer.body, null) as Record<string, Record<string, unknown>>;
    const [root] = Object.values(doc);
    return root ?? {};
  }
  expect(type).toBe('application/json;charset=utf-8');
  return JSON.parse(answer.body) as Record<string, unknown>;
}

describe(`OpenAPI fuzz (seed ${SEED}, ${CASES} cases)`, () => {
  // GET reaches every action's handler (getOnPostOnly: accept): the fuzz is about what the handlers survive.
  const emu = useEmulator({ qpsLimit: Number.POSITIVE_INFINITY, getOnPostOnly: 'accept' });

  it('answers every case with a well-formed error or success, never a 5xx or 417, and keeps serving', async () => {
    const e = emu();
    const rng = prng(SEED);
    const cases = Array.from({ length: CASES }, () => randomCase(rng, e));
    const statuses = new Map<number, number>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < cases.length) {
        const index = next++;
        const c = cases[index] as Case;
        const answer = await sendRaw(e, c);
        const where = `seed ${SEED} case ${index}: ${c.method} ${c.path.slice(0, 120)}`;
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        expect(answer.status, where).toBeGreaterThanOrEqual(200);
        expect(answer.status, where).toBeLessThan(500);
        expect(answer.status, where).not.toBe(417);
        if (c.method === 'HEAD') continue;
        let body: Record<string, unknown>;
        try {
          body = bodyOf(answer);
        } catch (error) {
          throw new Error(`${where}: the body does not parse (${String(error)}): ${answer.body.slice(0, 200)}`);
        }
        if (c.path.startsWith('/_emulator/stats') && answer.status === 200) continue;
        if (answer.status >= 400) {
          expect(typeof body['Code'], where).toBe('string');
          expect(body['Code'], where).not.toBe('InternalError');
        }
        if (!c.path.startsWith('/_emulator/')) expect(body['RequestId'], where).toMatch(/^[0-9A-F-]{36}$/);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    // FUZZ_DEBUG=1 shows how far the cases got (statuses, codes per action), to keep the generator honest.
    if (process.env["FUZZ_DEBUG"]) console.log([...statuses], JSON.stringify(e.stats().actions));
    // Some cases got past the gateway and some did not: the fuzz reached more than the first check.
    const served = Object.values(e.stats().actions).reduce((n, a) => n + a.ok, 0);
    expect(served).toBeGreaterThan(CASES / 50);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(0);
    // Still alive, and its stats stayed small.
    await callApi(e, 'RegisterDeviceCredential', { ClientId: 'GID_fuzz@@@after', InstanceId: e.instanceId });
    expect(Object.keys(e.stats().actions).length).toBeLessThanOrEqual(7);
  });
});
