import type { AccountCredentials } from '../../credential.js';

/**
 * What the OpenAPI client needs from a transport: send one signed RPC request, return what came back. Signing,
 * HTTP and the quirks of the library that does them live behind it; retries, pacing, the meaning of an answer and
 * the errors a caller sees live in the client (api-client.ts), the same whatever the transport.
 *
 * Two transports: pop-core (signature method V2, HMAC-SHA1; pop-core.ts), the default, and Node's HTTP client
 * signing V3 (`ACS3-HMAC-SHA256`; v3.ts).
 */
export interface OpenApiTransport {
  /**
   * Send `action` with `params` (sent exactly as given: no renaming, no added business parameters) by POST.
   *
   * Resolves with every answer whose body is JSON, error answers included (`Code` in the body): interpreting it is
   * the caller's job. Rejects with a {@link TransportError} when no such answer came back, or with the caller's
   * AbortedError when `signal` fires (the request is then destroyed).
   */
  send(action: string, params: Readonly<Record<string, string>>, options?: { signal?: AbortSignal }): Promise<TransportAnswer>;
  /** Close idle keep-alive connections; later sends open new ones. */
  close(): void;
}

/** An answer whose body parsed as JSON. */
export interface TransportAnswer {
  /** HTTP status, when the transport saw it. */
  status: number | undefined;
  /** The parsed body (any JSON value; objects may have a null prototype). */
  body: unknown;
}

/** What a transport is made from. */
export interface TransportOptions {
  /** Checked, normalised http(s) URL without a trailing `/`. */
  endpoint: string;
  apiVersion: string;
  account: AccountCredentials;
  /** Connect timeout and answer timeout, each, in ms. */
  timeoutMs: number;
}

/**
 * Why no JSON answer came back:
 * - `timeout`: no connection or no (complete) answer within the timeout;
 * - `refused`: nothing listens there (the request was never sent);
 * - `host-not-found`: the host name does not resolve (never sent);
 * - `not-json`: an answer arrived whose body is not JSON (`status`, `contentType` set);
 * - `not-an-answer`: an answer arrived that the transport could not read as one (`status` set);
 * - `failed`: the connection failed or was reset (`status` set when the answer's head had arrived).
 */
export type TransportFailureKind = 'timeout' | 'refused' | 'host-not-found' | 'not-json' | 'not-an-answer' | 'failed';

/** A transport's failure, before the client turns it into a NetworkError. Never carries a secret or the URL's query. */
export class TransportError extends Error {
  override readonly name = 'TransportError';
  readonly kind: TransportFailureKind;
  /** HTTP status of the answer's head, when it had arrived. */
  readonly status: number | undefined;
  /** Content-Type of the answer, when it had arrived. */
  readonly contentType: string | undefined;
  /** The system error code (`ECONNRESET`, …) or error name behind it. */
  readonly reason: string;

  constructor(kind: TransportFailureKind, init: { status?: number | undefined; contentType?: string | undefined; reason?: string; cause?: unknown } = {}) {
    super(`${kind}${init.reason ? ` (${init.reason})` : ''}`, { cause: init.cause });
    this.kind = kind;
    this.status = init.status;
    this.contentType = init.contentType;
    this.reason = init.reason ?? kind;
  }
}

/** Error codes of a host name that does not resolve (getaddrinfo's), whichever transport looked it up. */
export const HOST_NOT_FOUND: ReadonlySet<string> = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_NODATA']);
