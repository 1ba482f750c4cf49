import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect, onTestFinished } from 'vitest';
import type { DeviceCredentialWire } from '../../src/credential.js';
import { ApsaraMqDeviceError } from '../../src/errors.js';

/** A real HTTP server on 127.0.0.1, port 0. */
export interface TestHttpServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** Requests received so far. */
  readonly requests: number;
  /** Resolves once `n` requests in all have arrived (at once if they already have): an event, not a poll. */
  received(n: number): Promise<void>;
  /** Close it and every connection to it (idempotent). */
  close(): Promise<void>;
}

/** Promises that resolve once a counter reaches their number. */
export class CountWaiters {
  #count = 0;
  readonly #waiting: { n: number; resolve: () => void }[] = [];

  get count(): number {
    return this.#count;
  }

  /** Count one, and wake whoever waited for the new total. */
  add(): void {
    this.#count += 1;
    for (const waiter of [...this.#waiting]) {
      if (waiter.n <= this.#count) {
        this.#waiting.splice(this.#waiting.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  }

  /** Resolves once the count is at least `n`. */
  reached(n: number): Promise<void> {
    if (this.#count >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.push({ n, resolve }));
  }
}

export type TestHandler = (request: IncomingMessage, response: ServerResponse, body: string) => void | Promise<void>;

/**
 * Start a server whose handler gets each request with its body read. Inside a test it is closed when the test
 * finishes; elsewhere (beforeAll) the caller closes it.
 */
export async function startHttpServer(handler: TestHandler): Promise<TestHttpServer> {
  const arrivals = new CountWaiters();
  const server: Server = createServer((request, response) => {
    arrivals.add();
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      Promise.resolve(handler(request, response, Buffer.concat(chunks).toString('utf8'))).catch((error: unknown) => {
        response.destroy(error instanceof Error ? error : new Error(String(error)));
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      // Also the connections the handler never answered.
      server.closeAllConnections();
    });
    return closed;
  };
  try {
    onTestFinished(close);
  } catch {
    // Not inside a test: the caller closes it.
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get requests() {
      return arrivals.count;
    },
    received: (n) => arrivals.reached(n),
    close,
  };
}

/** A port nothing listens on: bound on port 0, then released. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Send a JSON body (already serialised text, so tests can send exactly what they mean). */
export function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json;charset=utf-8' });
  response.end(text);
}

/** The form parameters of a pop-core POST (merged with any in the query string). */
export function formParams(request: IncomingMessage, body: string): Record<string, string> {
  const url = new URL(request.url ?? '/', 'http://localhost');
  return { ...Object.fromEntries(url.searchParams), ...Object.fromEntries(new URLSearchParams(body)) };
}

/** One credential as the fake API keeps it (the wire shape). */
export type FakeCredential = DeviceCredentialWire;

export interface FakeOpenApiOptions {
  /** Register on a ClientId that has a credential: replace it (latest wins) or answer DeviceCredentialExsit. @default 'rotate' */
  reRegister?: 'rotate' | 'reject';
  /** Delay before each answer, to let concurrent callers overlap. @default 0 */
  delayMs?: number;
  /** Return an answer to override the scripted one (e.g. inject an error), or undefined to carry on. */
  intercept?: (action: string, params: Record<string, string>) => { status: number; body: unknown } | undefined;
}

/** A real HTTP server that answers the device-credential actions the way the OpenAPI does (no signature check). */
export interface FakeOpenApi extends TestHttpServer {
  /** Credentials by ClientId (one instance is enough for these tests). */
  readonly credentials: Map<string, FakeCredential>;
  /** Requests per action, in arrival order. */
  readonly actions: string[];
  /** Parameters of every request, in arrival order. */
  readonly params: Record<string, string>[];
  count(action?: string): number;
}

let serial = 0;
function key(): string {
  serial += 1;
  return `DC.${String(serial).padStart(6, '0')}${Math.random().toString(36).slice(2, 12).padEnd(10, 'x')}abcdef`;
}
function requestId(): string {
  return randomUUID().toUpperCase();
}

export async function startFakeOpenApi(options: FakeOpenApiOptions = {}): Promise<FakeOpenApi> {
  const credentials = new Map<string, FakeCredential>();
  const actions: string[] = [];
  const params: Record<string, string>[] = [];
  const notFound = { status: 400, body: { Code: 'DeviceCredentialNotFound', Message: 'Device Credential Not Found. Check if the device certificate is registered.' } };
  const answer = (action: string, p: Record<string, string>): { status: number; body: Record<string, unknown> } => {
    const clientId = p['ClientId'] ?? '';
    const existing = credentials.get(clientId);
    const now = Date.now();
    const issue = (createTime: number): FakeCredential => {
      const credential = { ClientId: clientId, InstanceId: p['InstanceId'] ?? '', DeviceAccessKeyId: key(), DeviceAccessKeySecret: key(), CreateTime: createTime, UpdateTime: now };
      credentials.set(clientId, credential);
      return credential;
    };
    switch (action) {
      case 'GetDeviceCredential':
        return existing ? { status: 200, body: { DeviceCredential: existing } } : notFound;
      case 'RegisterDeviceCredential':
        if (existing && options.reRegister === 'reject') return { status: 400, body: { Code: 'DeviceCredentialExsit', Message: 'Device Credential Exsit' } };
        return { status: 200, body: { DeviceCredential: issue(now) } };
      case 'RefreshDeviceCredential':
        return existing ? { status: 200, body: { DeviceCredential: issue(existing.CreateTime) } } : notFound;
      case 'UnRegisterDeviceCredential':
        if (!existing) return notFound;
        credentials.delete(clientId);
        return { status: 200, body: {} };
      case 'ListDeviceCredentialClientId': {
        const ids = [...credentials.keys()].filter((id) => id.startsWith(`${p['GroupId']}@@@`)).sort();
        const size = Number(p['PageSize'] ?? 100);
        const page = Number(p['PageNo'] ?? 1);
        const slice = ids.slice((page - 1) * size, page * size);
        const more = page * size < ids.length;
        return {
          status: 200,
          body: {
            DeviceCredentialClientIdList: { Total: String(ids.length), ClientIdList: slice, PageNo: String(page), PageSize: String(size), ...(more ? { NextToken: `page-${page + 1}` } : {}) },
          },
        };
      }
      default:
        return { status: 404, body: { Code: 'InvalidAction.NotFound', Message: 'Specified api is not found, please check your url and method.' } };
    }
  };
  const server = await startHttpServer(async (request, response, body) => {
    const p = formParams(request, body);
    const action = p['Action'] ?? '';
    actions.push(action);
    params.push(p);
    if (options.delayMs) await new Promise((resolve) => setTimeout(resolve, options.delayMs));
    const result = options.intercept?.(action, p) ?? answer(action, p);
    const payload = typeof result.body === 'object' && result.body !== null ? { RequestId: requestId(), ...result.body } : result.body;
    sendJson(response, result.status, payload);
  });
  return {
    url: server.url,
    port: server.port,
    get requests() {
      return server.requests;
    },
    received: server.received,
    close: server.close,
    credentials,
    actions,
    params,
    count: (action?: string) => (action === undefined ? actions.length : actions.filter((a) => a === action).length),
  };
}

/** Run `fn`, which must throw one of our errors synchronously, and return that error. */
export function catchSync(fn: () => unknown): ApsaraMqDeviceError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ApsaraMqDeviceError);
    return error as ApsaraMqDeviceError;
  }
  throw new Error('expected a throw');
}

/** An OpenAPI answer seen by an {@link ApiProxy}. */
export interface ProxiedAnswer {
  action: string;
  status: number;
}

/** A reverse proxy in front of an OpenAPI endpoint that reports every answer as it passes. */
export interface ApiProxy {
  /** `http://127.0.0.1:<port>`: point clients here instead of at the target. */
  readonly url: string;
  /** Resolves once `n` answers of `action` with HTTP `status` (default 200) have passed through. */
  answered(action: string, n: number, status?: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Start a proxy that forwards each request to `target` unchanged and counts the answers by Action and status, so
 * that a test can wait for "the 50th successful Register has been answered" as an event instead of polling the
 * emulator's stats. The Action is read from the form body (or the query), as pop-core sends it.
 */
export async function startApiProxy(target: string): Promise<ApiProxy> {
  const counters = new Map<string, CountWaiters>();
  const counter = (key: string): CountWaiters => {
    let c = counters.get(key);
    if (!c) {
      c = new CountWaiters();
      counters.set(key, c);
    }
    return c;
  };
  const server = await startHttpServer(async (request, response, body) => {
    const action = formParams(request, body)['Action'] ?? '';
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers)) if (typeof value === 'string' && !['host', 'connection', 'content-length', 'transfer-encoding'].includes(name)) headers[name] = value;
    let answer: Response;
    try {
      answer = await fetch(new URL(request.url ?? '/', target), { method: request.method ?? 'POST', headers, ...(request.method === 'GET' ? {} : { body }) });
    } catch {
      response.destroy();
      return;
    }
    const text = await answer.text();
    response.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' });
    response.end(text, () => counter(`${action} ${answer.status}`).add());
  });
  return {
    url: server.url,
    answered: (action, n, status = 200) => counter(`${action} ${status}`).reached(n),
    close: server.close,
  };
}
