import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { routeAction, type ActionContext } from './actions.js';
import { ApiFault, errorBody, httpStatusFor, type ErrorStatusMode } from './api-errors.js';
import type { Gateway, RpcParams } from './gateway.js';
import { closeServer, listen, trackSockets, urlHost } from './servers.js';
import type { EmulatorStats, StatsRecorder } from './stats.js';

/** Paths under this prefix belong to the emulator itself, not to the emulated OpenAPI. */
export const EMULATOR_PATH_PREFIX = '/_emulator/';
/** Largest request body accepted; the real API's parameters are a few hundred bytes. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** Everything the OpenAPI emulator needs. */
export interface ApiDependencies extends ActionContext {
  readonly gateway: Gateway;
  readonly stats: StatsRecorder;
  /** The current stats (the broker owns the connected count). */
  readonly snapshot: () => EmulatorStats;
  readonly host: string;
  readonly port: number;
  readonly errorStatuses: ErrorStatusMode;
}

/** A response to write: status and JSON body. */
interface Reply {
  status: number;
  body: object;
}

/** The running HTTP server. */
export interface ApiServer {
  /** `http://host:port` */
  readonly endpoint: string;
  /** Stop listening and close every connection (keep-alive ones too). Never rejects. */
  close(): Promise<void>;
}

/** Upper-case UUID, like the service's RequestIds. */
function newRequestId(): string {
  return randomUUID().toUpperCase();
}

function emptyParams(): Record<string, string> {
  // No prototype: a parameter named `__proto__` becomes an ordinary key instead of reshaping the object.
  return Object.create(null) as Record<string, string>;
}

/** A body over {@link MAX_BODY_BYTES}: refused, and the connection closed rather than drained. */
class BodyTooLarge extends ApiFault {
  constructor() {
    super('ParameterCheckFailed', { suffix: 'The request body is too large.' });
  }
}

/** Read the whole body, or reject with {@link BodyTooLarge} as soon as it passes the limit. */
function readBody(req: IncomingMessage): Promise<Buffer> {
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

/**
 * Query parameters merged with a form or JSON body (body wins on a clash). A JSON body must be one object of
 * strings, numbers or booleans; anything else is `ParameterCheckFailed`. Bodies of other types are ignored.
 */
async function readParams(req: IncomingMessage, url: URL): Promise<RpcParams> {
  const params = emptyParams();
  for (const [k, v] of url.searchParams) params[k] = v;
  const body = await readBody(req);
  if (body.length === 0) return params;
  const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') {
    for (const [k, v] of new URLSearchParams(body.toString('utf8'))) params[k] = v;
  } else if (type === 'application/json') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw new ApiFault('ParameterCheckFailed', { suffix: 'The JSON body does not parse.' });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new ApiFault('ParameterCheckFailed', { suffix: 'The JSON body must be an object of parameters.' });
    }
    for (const [k, v] of Object.entries(parsed)) {
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
        throw new ApiFault('ParameterCheckFailed', { suffix: `The JSON parameter ${JSON.stringify(k)} is not a string, number or boolean.` });
      }
      params[k] = String(v);
    }
  }
  return params;
}

/**
 * One RPC call through the whole pipeline: gateway authentication → throttling → action routing → the action
 * (parameter validation, then state). Returns the success body without RequestId; failures throw {@link ApiFault}.
 */
function handleRpc(method: string, params: RpcParams, deps: ApiDependencies): Record<string, unknown> {
  deps.gateway.authenticate(method, params);
  deps.gateway.throttle(params);
  const handler = routeAction(params['Action'] ?? '', params['Version'] ?? '');
  return handler(params, deps);
}

function send(res: ServerResponse, requestId: string, reply: Reply): void {
  const json = JSON.stringify(reply.body);
  res.writeHead(reply.status, {
    'Content-Type': 'application/json;charset=utf-8',
    'Content-Length': Buffer.byteLength(json),
    'x-acs-request-id': requestId,
  });
  res.end(json);
}

async function handleRequest(req: IncomingMessage, res: ServerResponse, deps: ApiDependencies): Promise<void> {
  const requestId = newRequestId();
  const fail = (fault: ApiFault): Reply => ({
    status: httpStatusFor(fault.code, deps.errorStatuses),
    body: errorBody(fault, requestId, deps.host),
  });

  let url: URL;
  try {
    url = new URL(req.url ?? '/', 'http://emulator');
  } catch {
    send(res, requestId, fail(new ApiFault('ParameterCheckFailed', { suffix: 'The request URL does not parse.' })));
    return;
  }

  if (url.pathname.startsWith(EMULATOR_PATH_PREFIX)) {
    req.resume(); // drain any body so the connection can be reused
    const isStats = url.pathname === `${EMULATOR_PATH_PREFIX}stats` && (req.method === 'GET' || req.method === 'HEAD');
    send(res, requestId, isStats
      ? { status: 200, body: deps.snapshot() }
      : fail(new ApiFault('InvalidAction.NotFound')));
    return;
  }

  // Every other path is "/": the real gateway ignores the path (it is not part of the StringToSign).
  let action: string | undefined;
  try {
    const params = await readParams(req, url);
    action = params['Action'];
    const body = handleRpc(req.method ?? 'GET', params, deps);
    send(res, requestId, { status: 200, body: { RequestId: requestId, ...body } });
    deps.stats.recordCall(action);
  } catch (error) {
    // Anything that is not an ApiFault is an emulator fault; the client sees InternalError, as from the real service.
    const fault = error instanceof ApiFault ? error : new ApiFault('InternalError');
    if (fault instanceof BodyTooLarge) res.setHeader('Connection', 'close');
    send(res, requestId, fail(fault));
    deps.stats.recordCall(action, fault.code);
  }
}

/** Start the OpenAPI HTTP emulator. */
export async function startApiServer(deps: ApiDependencies): Promise<ApiServer> {
  const server = createServer((req, res) => {
    handleRequest(req, res, deps).catch(() => {
      // Only a failed socket write can land here; the client has gone.
      res.destroy();
    });
  });
  const sockets = trackSockets(server);
  const port = await listen(server, deps.port, deps.host);
  return {
    endpoint: `http://${urlHost(deps.host)}:${port}`,
    close: () => closeServer(server, sockets),
  };
}
