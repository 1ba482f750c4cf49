import { createHash, createHmac } from 'node:crypto';
import { percentEncode } from './openapi.js';

/**
 * Alibaba Cloud OpenAPI request signature V3 (`ACS3-HMAC-SHA256`, and its `ACS3-HMAC-SM3` variant), the method
 * today's official SDKs use by default: Action and Version travel in `x-acs-*` headers, the body is covered by its
 * SHA-256 (`x-acs-content-sha256`), and the `Authorization` header carries the signature.
 *
 * Pure functions: the clock, the nonce and the transport are the caller's, so the same code can sign (a client)
 * and verify (the emulator's gateway).
 */

/** The V3 signature algorithms: HMAC-SHA256 (what the SDKs send by default) and the SM3 variant. */
export const V3_ALGORITHMS = ['ACS3-HMAC-SHA256', 'ACS3-HMAC-SM3'] as const;
/** One of {@link V3_ALGORITHMS}. */
export type V3Algorithm = (typeof V3_ALGORITHMS)[number];
/** The default algorithm, `ACS3-HMAC-SHA256`. */
export const V3_DEFAULT_ALGORITHM: V3Algorithm = 'ACS3-HMAC-SHA256';

/** Header values as Node gives them: one string, or several for a header sent more than once. */
export type V3Headers = Readonly<Record<string, string | readonly string[] | undefined>>;

function digestName(algorithm: V3Algorithm): 'sha256' | 'sm3' {
  return algorithm === 'ACS3-HMAC-SM3' ? 'sm3' : 'sha256';
}

/** Lower-case hex digest of `payload` (UTF-8 for strings) with the algorithm's hash; `x-acs-content-sha256`. */
export function hashPayload(payload: string | Uint8Array, algorithm: V3Algorithm = V3_DEFAULT_ALGORITHM): string {
  return createHash(digestName(algorithm)).update(payload).digest('hex');
}

/**
 * Query parameters sorted by name, each name and value percent-encoded (RFC 3986: space `%20`, `*` `%2A`, `~`
 * literal), joined as `name=value&…`. Form-body parameters are not part of it: the payload hash covers them.
 */
export function v3CanonicalQueryString(query: Readonly<Record<string, string>>): string {
  return Object.keys(query)
    .sort()
    .map((name) => `${percentEncode(name)}=${percentEncode(query[name] ?? '')}`)
    .join('&');
}

/** Lower-case header names that must be signed when present: `host`, `content-type` and every `x-acs-*`. */
export function isV3SignableHeader(name: string): boolean {
  const lower = name.toLowerCase();
  return lower === 'host' || lower === 'content-type' || lower.startsWith('x-acs-');
}

/** The lower-cased headers whose names are listed, sorted, each value trimmed, repeated values sorted and joined with `,`. */
function canonicalHeaderLines(headers: V3Headers, signedHeaders: readonly string[]): string {
  const byName = new Map<string, string[]>();
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    const values = byName.get(lower) ?? [];
    for (const one of typeof value === 'string' ? [value] : value) values.push(one.trim());
    byName.set(lower, values);
  }
  return [...signedHeaders]
    .sort()
    .map((name) => `${name}:${[...(byName.get(name) ?? [])].sort().join(',')}\n`)
    .join('');
}

/** The parts of a request that the V3 signature covers. */
export interface V3RequestParts {
  /** HTTP method, any case (upper-cased here). */
  readonly method: string;
  /** The request path as sent, already percent-encoded; `/` for RPC-style APIs. */
  readonly path: string;
  /** Query-string parameters, decoded. */
  readonly query: Readonly<Record<string, string>>;
  /** Request headers (any case); only those in `signedHeaders` are used. */
  readonly headers: V3Headers;
  /** Lower-case names of the signed headers. */
  readonly signedHeaders: readonly string[];
  /** Hex hash of the body, as in `x-acs-content-sha256`. */
  readonly hashedPayload: string;
}

/**
 * The canonical request: `METHOD\nPATH\nCanonicalQueryString\nCanonicalHeaders\nSignedHeaders\nHashedPayload`,
 * where CanonicalHeaders is one `name:value\n` line per signed header (so a blank line follows it).
 */
export function v3CanonicalRequest(parts: V3RequestParts): string {
  const signed = [...parts.signedHeaders].sort();
  return [
    parts.method.toUpperCase(),
    parts.path,
    v3CanonicalQueryString(parts.query),
    canonicalHeaderLines(parts.headers, signed),
    signed.join(';'),
    parts.hashedPayload,
  ].join('\n');
}

/** `<algorithm>\n<hex hash of the canonical request>`. */
export function v3StringToSign(canonicalRequest: string, algorithm: V3Algorithm = V3_DEFAULT_ALGORITHM): string {
  return `${algorithm}\n${hashPayload(canonicalRequest, algorithm)}`;
}

/** Hex HMAC of the string to sign, keyed by the AccessKeySecret itself (V2 appended `&`; V3 does not). */
export function v3Signature(stringToSign: string, accessKeySecret: string, algorithm: V3Algorithm = V3_DEFAULT_ALGORITHM): string {
  return createHmac(digestName(algorithm), accessKeySecret).update(stringToSign, 'utf8').digest('hex');
}

/** The `Authorization` header: `<algorithm> Credential=<AccessKeyId>,SignedHeaders=<a;b;c>,Signature=<hex>`. */
export function v3Authorization(algorithm: V3Algorithm, accessKeyId: string, signedHeaders: readonly string[], signature: string): string {
  return `${algorithm} Credential=${accessKeyId},SignedHeaders=${[...signedHeaders].sort().join(';')},Signature=${signature}`;
}

/** What an `Authorization` header of V3 says. */
export interface V3AuthorizationFields {
  readonly algorithm: V3Algorithm;
  readonly accessKeyId: string;
  /** Lower-case, in the order given. */
  readonly signedHeaders: readonly string[];
  readonly signature: string;
}

/**
 * Read a V3 `Authorization` header; `undefined` when it is not exactly `<algorithm> Credential=…,SignedHeaders=…,
 * Signature=…` with a known algorithm, each field once and non-empty (spaces after commas are tolerated).
 */
export function parseV3Authorization(value: string): V3AuthorizationFields | undefined {
  const match = /^(\S+) +(.*)$/s.exec(value.trim());
  if (!match) return undefined;
  const algorithm = V3_ALGORITHMS.find((a) => a === match[1]);
  if (!algorithm) return undefined;
  const fields = new Map<string, string>();
  for (const part of (match[2] ?? '').split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) return undefined;
    const key = part.slice(0, eq).trim();
    if (fields.has(key)) return undefined;
    fields.set(key, part.slice(eq + 1).trim());
  }
  const accessKeyId = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (fields.size !== 3 || !accessKeyId || !signedHeaders || !signature) return undefined;
  const names = signedHeaders.split(';').map((name) => name.trim().toLowerCase());
  if (names.some((name) => name === '')) return undefined;
  return { algorithm, accessKeyId, signedHeaders: names, signature };
}

/** What {@link signV3Request} needs. */
export interface SignV3RequestInput {
  readonly method: string;
  /** `host[:port]` exactly as the `Host` header will carry it. */
  readonly host: string;
  /** Default `/`. */
  readonly path?: string;
  readonly action: string;
  readonly version: string;
  /** Parameters sent in the query string (the official SDK puts RPC business parameters there). */
  readonly query?: Readonly<Record<string, string>>;
  /** The exact body bytes that will be sent (form-encoded for RPC), if any. */
  readonly body?: string | Uint8Array;
  /** `Content-Type` of the body; signed when given. */
  readonly contentType?: string;
  readonly accessKeyId: string;
  readonly accessKeySecret: string;
  /** STS token: sent as `x-acs-security-token` (with `x-acs-accesskey-id`), both signed. */
  readonly securityToken?: string;
  /** The request time (`x-acs-date`, whole seconds, UTC). */
  readonly date: Date;
  /** A fresh random string per request (`x-acs-signature-nonce`). */
  readonly nonce: string;
  readonly algorithm?: V3Algorithm;
  /** More headers to send; `x-acs-*` ones are signed too. */
  readonly extraHeaders?: Readonly<Record<string, string>>;
}

/** `YYYY-MM-DDThh:mm:ssZ` in UTC, the `x-acs-date` format. */
export function v3Date(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Every header of a V3-signed request, `authorization` included, with lower-case names: send them as they are
 * (`host` too, so that the signed value is the one on the wire) with the same query and body.
 *
 * @example
 * const headers = signV3Request({ method: 'POST', host: '127.0.0.1:8080', action: 'GetDeviceCredential',
 *   version: '2020-04-20', query: { ClientId, InstanceId }, accessKeyId, accessKeySecret,
 *   date: new Date(), nonce: randomUUID() });
 */
export function signV3Request(input: SignV3RequestInput): Record<string, string> {
  const algorithm = input.algorithm ?? V3_DEFAULT_ALGORITHM;
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(input.extraHeaders ?? {})) headers[name.toLowerCase()] = value;
  Object.assign(headers, {
    host: input.host,
    'x-acs-action': input.action,
    'x-acs-version': input.version,
    'x-acs-date': v3Date(input.date),
    'x-acs-signature-nonce': input.nonce,
    'x-acs-content-sha256': hashPayload(input.body ?? '', algorithm),
  });
  if (input.contentType !== undefined) headers['content-type'] = input.contentType;
  if (input.securityToken !== undefined) {
    headers['x-acs-accesskey-id'] = input.accessKeyId;
    headers['x-acs-security-token'] = input.securityToken;
  }
  const signedHeaders = Object.keys(headers).filter(isV3SignableHeader).sort();
  const canonical = v3CanonicalRequest({
    method: input.method,
    path: input.path ?? '/',
    query: input.query ?? {},
    headers,
    signedHeaders,
    hashedPayload: headers['x-acs-content-sha256'] ?? '',
  });
  const signature = v3Signature(v3StringToSign(canonical, algorithm), input.accessKeySecret, algorithm);
  headers['authorization'] = v3Authorization(algorithm, input.accessKeyId, signedHeaders, signature);
  return headers;
}
