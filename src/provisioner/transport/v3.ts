import { randomUUID } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { AbortedError } from '../../errors.js';
import { percentEncode } from '../../signer/openapi.js';
import { signV3Request, type V3Algorithm, V3_DEFAULT_ALGORITHM } from '../../signer/openapi-v3.js';
import { HOST_NOT_FOUND, type OpenApiTransport, type TransportAnswer, TransportError, type TransportOptions } from './transport.js';

/** Largest answer read: the service's answers are a few hundred bytes; a proxy's page may be more. */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024;
/**
 * The V3 transport: Alibaba Cloud's current request signature (`ACS3-HMAC-SHA256`, the default of today's official
 * SDKs), on Node's own HTTP client, without pop-core. Action and version travel in `x-acs-*` headers, the business
 * parameters in a form body (RPC style), signed over the canonical request with the body's SHA-256.
 */
export class V3Transport implements OpenApiTransport {
  readonly #options: TransportOptions;
  readonly #url: URL;
  readonly #agent: HttpAgent;
  readonly #algorithm: V3Algorithm;

  constructor(options: TransportOptions & { algorithm?: V3Algorithm }) {
    this.#options = options;
    this.#url = new URL(`${options.endpoint}/`);
    this.#agent = this.#url.protocol === 'https:' ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
    this.#algorithm = options.algorithm ?? V3_DEFAULT_ALGORITHM;
  }

  send(action: string, params: Readonly<Record<string, string>>, options: { signal?: AbortSignal } = {}): Promise<TransportAnswer> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(new AbortedError(`${action} was aborted`, signal.reason));
    // RFC 3986 encoding, so the bytes hashed are the bytes sent and no `+` can be read two ways.
    const body = Object.entries(params)
      .map(([k, v]) => `${percentEncode(k)}=${percentEncode(v)}`)
      .join('&');
    const { account } = this.#options;
    const headers = signV3Request({
      method: 'POST',
      host: this.#url.host,
      path: this.#url.pathname,
      action,
      version: this.#options.apiVersion,
      body,
      contentType: 'application/x-www-form-urlencoded',
      accessKeyId: account.accessKeyId,
      accessKeySecret: account.accessKeySecret,
      ...(account.securityToken === undefined ? {} : { securityToken: account.securityToken }),
      date: new Date(),
      nonce: randomUUID(),
      algorithm: this.#algorithm,
    });
    const send = this.#url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<TransportAnswer>((resolve, reject) => {
      let status: number | undefined;
      let contentType: string | undefined;
      let settled = false;
      const finish = (error: Error | undefined, answer?: TransportAnswer): void => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        if (error) {
          request.destroy();
          reject(error);
        } else {
          resolve(answer as TransportAnswer);
        }
      };
      const onAbort = (): void => finish(new AbortedError(`${action} was aborted`, signal?.reason));
      const request = send(this.#url, { method: 'POST', agent: this.#agent, headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } });
      // No byte for timeoutMs, connecting or waiting for the answer: the same budget pop-core gives each.
      request.setTimeout(this.#options.timeoutMs, () => finish(new TransportError('timeout', { status, reason: 'timeout' })));
      request.once('error', (error: NodeJS.ErrnoException) => finish(transportFailure(error, status)));
      request.once('response', (response: IncomingMessage) => {
        status = response.statusCode;
        contentType = response.headers['content-type'];
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES) finish(new TransportError('not-an-answer', { status, reason: 'answer too large' }));
          else chunks.push(chunk);
        });
        response.once('error', (error: NodeJS.ErrnoException) => finish(transportFailure(error, status)));
        response.once('aborted', () => finish(new TransportError('failed', { status, reason: 'ECONNRESET' })));
        response.once('end', () => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            finish(new TransportError('not-json', { status, contentType, reason: 'SyntaxError' }));
            return;
          }
          finish(undefined, { status, body: parsed });
        });
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      request.end(body);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}

function transportFailure(error: NodeJS.ErrnoException, status: number | undefined): TransportError {
  const code = error.code;
  if (code === 'ECONNREFUSED') return new TransportError('refused', { reason: code, cause: error });
  if (code !== undefined && HOST_NOT_FOUND.has(code)) return new TransportError('host-not-found', { reason: code, cause: error });
  if (code === 'ETIMEDOUT') return new TransportError('timeout', { status, reason: code, cause: error });
  return new TransportError('failed', { status, reason: code ?? error.name, cause: error });
}
