import type { IncomingMessage } from 'node:http';
import { ApiFault } from './api-errors.js';
import type { RpcParams } from './gateway.js';

/** Largest request body accepted; the real API's parameters are a few hundred bytes. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** The HTTP methods of the emulated OpenAPI; the metadata declares POST for every action and GET for some. */
export const API_METHODS: ReadonlySet<string> = new Set(['GET', 'POST']);

/** A body over {@link MAX_BODY_BYTES}: refused, and the connection closed rather than drained. */
export class BodyTooLarge extends ApiFault {
  constructor() {
    super('ParameterCheckFailed', { suffix: 'The request body is too large.' });
  }
}

/** A request as the gateway sees it: raw pieces for the V3 signature, decoded parameters for everything else. */
export interface ParsedRequest {
  /** Upper-case HTTP method. */
  readonly method: string;
  /** The path as sent (still percent-encoded), without the query. */
  readonly path: string;
  /** Query-string parameters, decoded. */
  readonly query: RpcParams;
  /** Query parameters merged with those of a form or JSON body (the body wins a clash). */
  readonly params: RpcParams;
  /** Headers by lower-case name, every value kept (a header sent twice has two). */
  readonly headers: Readonly<Record<string, readonly string[]>>;
  /** The body bytes as received. */
  readonly body: Buffer;
}

/** A parameter map with no prototype: a parameter named `__proto__` is an ordinary key, not a reshaping of the object. */
export function emptyParams(): Record<string, string> {
  return Object.create(null) as Record<string, string>;
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** A name safe to quote in an answer (any other is described, not echoed). */
function quotable(name: string): string {
  return /^[A-Za-z0-9._-]{1,64}$/.test(name) ? `"${name}"` : 'a parameter';
}

/** The gateway's answer to a parameter that is not text: 400 `ParameterCheckFailed`, never a 5xx. */
function badEncoding(name: string | undefined, what: string): ApiFault {
  const subject = name === undefined ? 'A parameter name' : `The value of ${quotable(name)}`;
  return new ApiFault('ParameterCheckFailed', { suffix: `${subject} is not ${what}.` });
}

/**
 * Strictly decode one `application/x-www-form-urlencoded` component given as a latin1 string (one char per byte, as
 * Node hands over URLs): `+` is a space, `%XY` must have two hex digits, and the bytes must be UTF-8. `undefined`
 * when they are not (where `URLSearchParams` would silently keep a stray `%` or substitute U+FFFD).
 */
export function decodeFormComponent(raw: string): string | undefined {
  const bytes = new Uint8Array(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x25) {
      const hex = raw.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
      bytes[n++] = Number.parseInt(hex, 16);
      i += 2;
    } else if (c === 0x2b) {
      bytes[n++] = 0x20;
    } else if (c > 0xff) {
      return undefined; // not a byte: the text did not come off the wire
    } else {
      bytes[n++] = c;
    }
  }
  try {
    return STRICT_UTF8.decode(bytes.subarray(0, n));
  } catch {
    return undefined;
  }
}

/** Parse `a=1&b=2` strictly into `into`; a bad component is a 400 naming the parameter. */
export function parseFormInto(into: Record<string, string>, text: string): void {
  if (text === '') return;
  for (const pair of text.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const name = decodeFormComponent(eq < 0 ? pair : pair.slice(0, eq));
    if (name === undefined) throw badEncoding(undefined, 'valid percent-encoded UTF-8');
    const value = decodeFormComponent(eq < 0 ? '' : pair.slice(eq + 1));
    if (value === undefined) throw badEncoding(name, 'valid percent-encoded UTF-8');
    into[name] = value;
  }
}

/** A JSON body: one object of strings, numbers or booleans, each well-formed Unicode. */
function parseJsonInto(into: Record<string, string>, body: Buffer): void {
  let text: string;
  try {
    text = STRICT_UTF8.decode(body);
  } catch {
    throw new ApiFault('ParameterCheckFailed', { suffix: 'The JSON body is not valid UTF-8.' });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ApiFault('ParameterCheckFailed', { suffix: 'The JSON body does not parse.' });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ApiFault('ParameterCheckFailed', { suffix: 'The JSON body must be an object of parameters.' });
  }
  for (const [name, value] of Object.entries(parsed)) {
    // JSON can spell a lone surrogate (`"\ud800"`), which no percent-encoding or UTF-8 can carry.
    if (LONE_SURROGATE.test(name)) throw badEncoding(undefined, 'well-formed Unicode');
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
      throw new ApiFault('ParameterCheckFailed', { suffix: `The JSON parameter ${quotable(name)} is not a string, number or boolean.` });
    }
    const text = String(value);
    if (LONE_SURROGATE.test(text)) throw badEncoding(name, 'well-formed Unicode');
    into[name] = text;
  }
}

/** Read the whole body, or reject with {@link BodyTooLarge} as soon as it passes the limit. */
export function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) {
        chunks.push(chunk);
        return;
      }
      req.off('data', onData);
      req.pause();
      reject(new BodyTooLarge());
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

/** The media type of a Content-Type header, lower case, without parameters. */
export function mediaType(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

/** The raw query string of a request target (`/path?query`), without the `?`. */
function rawQuery(target: string): string {
  const q = target.indexOf('?');
  if (q < 0) return '';
  const hash = target.indexOf('#', q);
  return target.slice(q + 1, hash < 0 ? undefined : hash);
}

/** The raw path of a request target. */
function rawPath(target: string): string {
  const end = target.search(/[?#]/);
  const path = end < 0 ? target : target.slice(0, end);
  return path === '' ? '/' : path;
}

/** A body whose first non-blank byte opens a JSON object. */
function looksLikeJson(body: Buffer): boolean {
  for (const byte of body) {
    if (byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d) continue;
    return byte === 0x7b;
  }
  return false;
}

/**
 * Read a request: the query string, then a form body (`application/x-www-form-urlencoded`), a JSON body
 * (`application/json`, or, with `jsonWithoutType` as the emulator's own controls set it, any body that starts with
 * `{`, whatever its type: curl's `-d` sends JSON labelled as a form; a real form body is still read as one), merged with
 * the body winning a clash. Bodies of other types are kept as bytes (a V3 signature covers them) but give no
 * parameters. Every parameter must be well-formed: a stray `%`, invalid UTF-8 or a lone surrogate is a 400
 * `ParameterCheckFailed` that names the parameter.
 */
export async function readRequest(req: IncomingMessage, options: { jsonWithoutType?: boolean } = {}): Promise<ParsedRequest> {
  const target = req.url ?? '/';
  const query = emptyParams();
  parseFormInto(query, rawQuery(target));
  const body = await readBody(req);
  const params = emptyParams();
  Object.assign(params, query);
  const type = mediaType(req);
  if (body.length > 0) {
    // The emulator's controls read JSON whatever the type says: `curl -d '{…}'` labels its body a form.
    if (type === 'application/json' || (options.jsonWithoutType === true && looksLikeJson(body))) parseJsonInto(params, body);
    else if (type === 'application/x-www-form-urlencoded') parseFormInto(params, body.toString('latin1'));
  }
  const headers: Record<string, readonly string[]> = Object.create(null) as Record<string, readonly string[]>;
  for (const [name, values] of Object.entries(req.headersDistinct)) {
    if (values !== undefined) headers[name] = values;
  }
  return { method: (req.method ?? 'GET').toUpperCase(), path: rawPath(target), query, params, headers, body };
}

/**
 * The `Format` a request asks for, read leniently from the query string alone so that even a request whose
 * parameters do not parse gets its error in the format it asked for. `XML` in any case; anything else is JSON.
 */
export function requestedFormat(target: string, params?: RpcParams): 'XML' | 'JSON' {
  let format = params?.['Format'];
  if (format === undefined) {
    for (const pair of rawQuery(target).split('&')) {
      const eq = pair.indexOf('=');
      if (eq > 0 && pair.slice(0, eq) === 'Format') format = decodeFormComponent(pair.slice(eq + 1));
    }
  }
  return format?.toUpperCase() === 'XML' ? 'XML' : 'JSON';
}
