import { AsyncLocalStorage } from 'node:async_hooks';
import { Agent as HttpAgent, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import RPCClient from '@alicloud/pop-core';
import { isRecord } from '../../credential.js';
import { isApsaraMqDeviceError } from '../../errors.js';
import { raceAbort } from '../../util/abort.js';
import { HOST_NOT_FOUND, type OpenApiTransport, type TransportAnswer, TransportError, type TransportOptions } from './transport.js';

/**
 * The pop-core transport: `@alicloud/pop-core`'s RPCClient (signature method V2, HMAC-SHA1, a fresh
 * SignatureNonce per request), always POST, parameters sent exactly as given. Everything this project knows about
 * pop-core's habits is in this file (reference §4):
 *
 * - It hides the HTTP exchange: when the body is not JSON it throws without the status, and it cannot cancel a
 *   request. Each send runs inside an async context; the keep-alive agent below attaches the ClientRequest it is
 *   handed to the context of the send that created it, so the status and content type are known and the request
 *   can be destroyed, while connections are still reused.
 * - It throws on an answer whose `Code` is not a success code, with the parsed body as `data` and the exchange as
 *   `entry`: that is an answer, returned like any other.
 * - json-bigint throws a plain object named `SyntaxError` for a body that is not JSON; httpx names timeouts
 *   `RequestTimeoutError`; a JSON `null` body makes pop-core itself throw a TypeError.
 */
export class PopCoreTransport implements OpenApiTransport {
  readonly #rpc: RPCClient;
  readonly #agent: HttpAgent;
  readonly #timeoutMs: number;

  constructor(options: TransportOptions) {
    this.#timeoutMs = options.timeoutMs;
    this.#agent = trackingAgent(options.endpoint.startsWith('https:'));
    const { account } = options;
    this.#rpc = new RPCClient({
      endpoint: options.endpoint,
      apiVersion: options.apiVersion,
      accessKeyId: account.accessKeyId,
      accessKeySecret: account.accessKeySecret,
      ...(account.securityToken === undefined ? {} : { securityToken: account.securityToken }),
    });
  }

  async send(action: string, params: Readonly<Record<string, string>>, options: { signal?: AbortSignal } = {}): Promise<TransportAnswer> {
    const exchange: Exchange = {};
    const release = (): void => {
      // Frees the socket of a request that will not be read to the end (timeout, abort, bad body).
      exchange.released = true;
      exchange.request?.destroy();
    };
    const sent = raceAbort(
      exchanges.run(exchange, () =>
        // formatAction/formatParams off: send exactly the names given instead of pop-core's upper-casing.
        this.#rpc.request<unknown>(action, { ...params }, {
          method: 'POST',
          timeout: this.#timeoutMs,
          agent: this.#agent,
          formatAction: false,
          formatParams: false,
        }),
      ),
      action,
      options.signal,
      release,
    );
    try {
      const body = await sent;
      return { status: exchange.status, body };
    } catch (error) {
      if (isApsaraMqDeviceError(error)) throw error; // Aborted
      const e: PopCoreError = isRecord(error) || error instanceof Error ? (error as PopCoreError) : {};
      // An error answer, read to the end: its connection can be reused.
      if (isRecord(e.data) && e.entry !== undefined) return { status: e.entry?.response?.statusCode ?? exchange.status, body: e.data };
      release();
      throw failure(e, error, exchange);
    }
  }

  close(): void {
    this.#agent.destroy();
  }
}

/** What the transport learns about one HTTP exchange, which pop-core does not report when it fails. */
interface Exchange {
  request?: ClientRequest;
  /** The send gave up (aborted) before its request was created: destroy the request as soon as it is. */
  released?: boolean;
  status?: number;
  contentType?: string;
}

const exchanges = new AsyncLocalStorage<Exchange>();

type AddRequest = (request: ClientRequest, options: unknown) => void;

function trackingAgent(secure: boolean): HttpAgent {
  const agent = secure ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  // addRequest is how http.request hands a request to its agent; it is public API in Node but missing from @types/node.
  const internals = agent as unknown as { addRequest: AddRequest };
  const addRequest = internals.addRequest.bind(agent);
  internals.addRequest = (request, options) => {
    const exchange = exchanges.getStore();
    if (exchange) {
      exchange.request = request;
      request.once('response', (response: IncomingMessage) => {
        if (response.statusCode !== undefined) exchange.status = response.statusCode;
        const type = response.headers['content-type'];
        if (type !== undefined) exchange.contentType = type;
      });
    }
    addRequest(request, options);
    if (exchange?.released) request.destroy();
  };
  return agent;
}

/** The fields pop-core (and httpx, json-bigint under it) put on what they throw. */
interface PopCoreError {
  name?: unknown;
  code?: unknown;
  data?: unknown;
  entry?: { response?: { statusCode?: number } | null };
}

const TIMED_OUT = new Set(['ETIMEDOUT', 'ESOCKETTIMEDOUT']);

function failure(e: PopCoreError, error: unknown, exchange: Exchange): TransportError {
  const status = exchange.status;
  if (e.name === 'SyntaxError') return new TransportError('not-json', { status, contentType: exchange.contentType, reason: 'SyntaxError' });
  const code = typeof e.code === 'string' ? e.code : undefined;
  if (e.name === 'RequestTimeoutError' || (code !== undefined && TIMED_OUT.has(code))) {
    return new TransportError('timeout', { status, reason: code ?? 'RequestTimeoutError', cause: error });
  }
  if (code === 'ECONNREFUSED') return new TransportError('refused', { reason: code, cause: error });
  if (code !== undefined && HOST_NOT_FOUND.has(code)) return new TransportError('host-not-found', { reason: code, cause: error });
  // An answer arrived but pop-core could not handle it, e.g. a JSON `null` body (it reads null.Code).
  if (code === undefined && status !== undefined) return new TransportError('not-an-answer', { status, reason: error instanceof Error ? error.name : 'unknown error' });
  // A reset after the answer's head arrived (a body cut short) keeps its status.
  return new TransportError('failed', { status, reason: code ?? (error instanceof Error ? error.name : 'unknown error'), cause: error });
}
