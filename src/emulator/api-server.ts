import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isApsaraMqDeviceError } from '../errors.js';
import { routeAction, type ActionContext } from './actions.js';
import { ApiFault, errorBody, httpStatusFor, type ErrorStatusMode } from './api-errors.js';
import type { FaultInjector } from './faults.js';
import type { Gateway, RpcParams } from './gateway.js';
import { closeServer, listen, trackSockets, urlHost } from './servers.js';
import type { EmulatorStats, StatsRecorder } from './stats.js';

/** Paths under this prefix belong to the emulator itself, not to the emulated OpenAPI. */
export const EMULATOR_PATH_PREFIX = '/_emulator/';
/** Largest request body accepted; the real API's parameters are a few hundred bytes. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** The emulator's own controls behind `POST /_emulator/disconnect` and `POST /_emulator/restart`. */
export interface EmulatorControls {
  disconnect(clientId: string): boolean;
  restart(): Promise<void>;
}

/** Everything the OpenAPI emulator needs. */
export interface ApiDependencies extends ActionContext {
  readonly gateway: Gateway;
  readonly faults: FaultInjector;
  readonly controls: EmulatorControls;
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
 * One RPC call through the whole pipeline: gateway authentication → throttling → injected faults → action routing
 * → the action (parameter validation, then state). Returns the success body without RequestId; failures throw
 * {@link ApiFault}.
 *
 * Injected faults come after the gateway: a real overloaded backend sheds load before doing any work, but it only
 * ever sees requests the gateway let through. So a badly signed request still gets `SignatureDoesNotMatch` (faults
 * never hide a client's signing bug), and a faulted call has changed nothing.
 */
function handleRpc(method: string, params: RpcParams, deps: ApiDependencies): Record<string, unknown> {
  deps.gateway.authenticate(method, params);
  deps.gateway.throttle(params);
  deps.faults.inject(params['Action'] ?? '');
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

/**
 * The emulator's own endpoints (not part of the emulated API, not counted in stats, never delayed or faulted):
 * `GET /_emulator/stats`, `POST /_emulator/disconnect` with JSON `{"clientId": "…"}`, `POST /_emulator/restart`,
 * `POST /_emulator/fail-next` with JSON `{"action": "…", "code": "…", "count": 1}` (like `Emulator.failNext`).
 * Anything else there is `InvalidAction.NotFound`.
 */
async function emulatorControl(req: IncomingMessage, url: URL, deps: ApiDependencies): Promise<object> {
  const route = `${req.method ?? 'GET'} ${url.pathname.slice(EMULATOR_PATH_PREFIX.length)}`;
  if (route === 'POST disconnect') {
    const clientId = (await readParams(req, url))['clientId'];
    if (!clientId) throw new ApiFault('ParameterCheckFailed', { suffix: 'Send a JSON body {"clientId": "<ClientId>"}.' });
    return { disconnected: deps.controls.disconnect(clientId) };
  }
  if (route === 'POST fail-next') {
    const { action, code, count = '1' } = await readParams(req, url);
    if (!action || !code) throw new ApiFault('ParameterCheckFailed', { suffix: 'Send a JSON body {"action": "<Action>", "code": "<Code>", "count": 1}.' });
    try {
      deps.faults.failNext(action, code, Number(count));
    } catch (error) {
      // The same checks as Emulator.failNext; their message names the bad value.
      if (isApsaraMqDeviceError(error)) throw new ApiFault('ParameterCheckFailed', { suffix: error.message });
      throw error;
    }
    return { queued: Number(count) };
  }
  req.resume(); // drain any body so the connection can be reused
  if (route === 'GET stats' || route === 'HEAD stats') return deps.snapshot();
  if (route === 'POST restart') {
    await deps.controls.restart();
    return { restarted: true };
  }
  throw new ApiFault('InvalidAction.NotFound');
}

/**
 * The fault to answer a failure with. Anything that is not an ApiFault is an emulator fault; the client sees
 * InternalError, as from the real service. A body that was too large also closes the connection, as it was not drained.
 */
function faultOf(error: unknown, res: ServerResponse): ApiFault {
  const fault = error instanceof ApiFault ? error : new ApiFault('InternalError');
  if (fault instanceof BodyTooLarge) res.setHeader('Connection', 'close');
  return fault;
}

/**
 * Wait `ms` (injected latency). The timer is tracked so that close() can cancel it: a held request then never
 * resumes (its socket is destroyed anyway) and no timer outlives the emulator.
 */
async function hold(ms: number, timers: Set<NodeJS.Timeout>): Promise<void> {
  if (ms <= 0) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      resolve();
    }, ms);
    timers.add(timer);
  });
}

async function handleRequest(req: IncomingMessage, res: ServerResponse, deps: ApiDependencies, timers: Set<NodeJS.Timeout>): Promise<void> {
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
    let reply: Reply;
    try {
      reply = { status: 200, body: await emulatorControl(req, url, deps) };
    } catch (error) {
      reply = fail(faultOf(error, res));
    }
    send(res, requestId, reply);
    return;
  }

  // Every other path is "/": the real gateway ignores the path (it is not part of the StringToSign).
  let action: string | undefined;
  try {
    const params = await readParams(req, url);
    action = params['Action'];
    await hold(deps.faults.delayMs(), timers);
    const body = handleRpc(req.method ?? 'GET', params, deps);
    send(res, requestId, { status: 200, body: { RequestId: requestId, ...body } });
    deps.stats.recordCall(action);
  } catch (error) {
    const fault = faultOf(error, res);
    send(res, requestId, fail(fault));
    deps.stats.recordCall(action, fault.code);
  }
}

/** Start the OpenAPI HTTP emulator. */
export async function startApiServer(deps: ApiDependencies): Promise<ApiServer> {
  const timers = new Set<NodeJS.Timeout>();
  const server = createServer((req, res) => {
    handleRequest(req, res, deps, timers).catch(() => {
      // Only a failed socket write can land here; the client has gone.
      res.destroy();
    });
  });
  const sockets = trackSockets(server);
  const port = await listen(server, deps.port, deps.host);
  return {
    endpoint: `http://${urlHost(deps.host)}:${port}`,
    close: () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      return closeServer(server, sockets);
    },
  };
}
