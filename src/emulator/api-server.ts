import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { isApsaraMqDeviceError, type KnownApiErrorCode, ValidationError } from '../errors.js';
import { routeAction, type ActionContext, type EmulatedAction } from './actions.js';
import { ApiFault, errorBody, httpStatusFor, type ErrorStatusMode } from './api-errors.js';
import type { ClusterApi } from './cluster/cluster.js';
import type { FaultInjector } from './faults.js';
import { isV3Request, type Gateway } from './gateway.js';
import { API_METHODS, BodyTooLarge, readRequest, requestedFormat, type ParsedRequest } from './request.js';
import { closeServer, listen, trackSockets, urlHost } from './servers.js';
import { PROMETHEUS_CONTENT_TYPE, prometheusText } from './prometheus.js';
import { parseQueueQuery, type QueueQuery, type QueueView } from './queue-view.js';
import type { EmulatorStats, StatsRecorder } from './stats.js';
import { XML_CONTENT_TYPE, xmlError, xmlSuccess } from './xml.js';
import type { Logger } from '../util/logger.js';

export { MAX_BODY_BYTES } from './request.js';

/** Paths under this prefix belong to the emulator itself, not to the emulated OpenAPI. */
export const EMULATOR_PATH_PREFIX = '/_emulator/';

/** Longest downtime of one restart (`Emulator.restart`, `POST /_emulator/restart`): ten minutes, longer than a game day's broker maintenance. */
export const MAX_RESTART_DOWN_MS = 600_000;

/** `restart`'s downtime, checked the same for the library and the HTTP control: a whole number of ms up to the cap. */
export function checkRestartDownMs(downMs: unknown): void {
  if (typeof downMs !== 'number' || !Number.isInteger(downMs) || downMs < 0 || downMs > MAX_RESTART_DOWN_MS) {
    throw new ValidationError('InvalidOption', `restart downMs must be an integer from 0 to ${MAX_RESTART_DOWN_MS}, not ${String(downMs)}`);
  }
}

/** The emulator's own controls behind `POST /_emulator/disconnect` and `POST /_emulator/restart`. */
export interface EmulatorControls {
  disconnect(clientId: string): boolean;
  /** `downMs`: how long the broker stays down between closing and starting again (already checked). */
  restart(downMs?: number): Promise<void>;
}

/** Everything the OpenAPI emulator needs. */
export interface ApiDependencies extends ActionContext {
  readonly gateway: Gateway;
  readonly faults: FaultInjector;
  readonly controls: EmulatorControls;
  readonly stats: StatsRecorder;
  /** The current stats (the broker owns the connected count; clustered, Redis holds the queues'). */
  readonly snapshot: () => EmulatorStats | Promise<EmulatorStats>;
  readonly host: string;
  readonly port: number;
  /** The `HostId` of error bodies (`onsmqtt.<regionId>.aliyuncs.com`). */
  readonly hostId: string;
  readonly errorStatuses: ErrorStatusMode;
  /** A GET of an action the metadata declares POST-only (actions.ts `POST_ONLY_ACTIONS`): refused with 404 `InvalidAction.NotFound`, or accepted. */
  readonly getOnPostOnly: 'refuse' | 'accept';
  /** `GET /_emulator/queue`: one persistent session's queue at the broker (queue-view.ts). */
  readonly queue: (query: QueueQuery) => Promise<QueueView>;
  /** Where a failure of the emulator itself (answered InternalError) is said, each distinct one once. */
  readonly logger: Logger;
  /**
   * Make the registry's current state durable (the data directory); awaited before answering a call that changed
   * it, so that an answered Register is never lost to a restart. Absent when the emulator keeps state in memory.
   */
  readonly persist?: () => Promise<void>;
  /**
   * Clustered (the `redis` option): the gateway's shared checks after the local ones, and every action run on the
   * cluster's state (a change through its log, a session query cluster-wide). Absent for a process of its own.
   */
  readonly cluster?: ClusterApi;
}

/** A response to write: status and body, in the format the request asked for. */
interface Reply {
  status: number;
  body: Record<string, unknown>;
  format: 'JSON' | 'XML';
  /** For an XML success body: the Action, which names its root element. */
  action?: string;
  /** An answer of the emulator's own controls: sent as it is, without a RequestId. */
  control?: boolean;
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

/**
 * One RPC call through the whole pipeline: gateway authentication (V3 when the request is signed that way, else
 * V2) → throttling (the account's, then the action's own) → injected faults → action routing (action, method,
 * version) → the action (parameter validation, then state) → making a changed state (credentials or tokens) durable.
 * Returns the Action and the success body without RequestId; failures throw {@link ApiFault}.
 *
 * Injected faults come after the gateway: a real overloaded backend sheds load before doing any work, but it only
 * ever sees requests the gateway let through. So a badly signed request still gets `SignatureDoesNotMatch` (faults
 * never hide a client's signing bug), and a faulted call has changed nothing.
 */
async function handleRpc(request: ParsedRequest, v3: boolean, deps: ApiDependencies): Promise<{ action: string; body: Record<string, unknown> }> {
  let action: string;
  let version: string;
  let accessKeyId: string;
  if (v3) {
    ({ action, version, accessKeyId } = deps.gateway.authenticateV3(request));
  } else {
    deps.gateway.authenticate(request.method, request.params);
    action = request.params['Action'] ?? '';
    version = request.params['Version'] ?? '';
    accessKeyId = request.params['AccessKeyId'] ?? '';
  }
  deps.gateway.throttle(accessKeyId);
  deps.gateway.throttleAction(accessKeyId, action);
  if (deps.cluster) {
    const nonce = v3 ? request.headers['x-acs-signature-nonce']?.[0] : request.params['SignatureNonce'];
    // The cluster's fault burst, not this process's, is what the call's draw is made from.
    deps.faults.inject(action, (await deps.cluster.admit({ nonce, accessKeyId, action })).burst);
  } else {
    deps.faults.inject(action);
  }
  const handler = routeAction(action, version, request.method, deps.getOnPostOnly);
  if (deps.cluster) return { action, body: await deps.cluster.run(action, request.params, handler, deps) };
  const body = handler(request.params, deps);
  // Every answer waits until the state it was made from is durable, not only a changing call's: a read (or a second
  // RevokeToken of one token) answered from a change another call made a moment ago, still on its way to the disk,
  // would tell of something a kill -9 then undoes. With nothing on its way this is a turn of the save queue.
  if (deps.persist) await deps.persist();
  return { action, body };
}

function send(res: ServerResponse, requestId: string, reply: Reply): void {
  let text: string;
  let type: string;
  if (reply.format === 'XML') {
    const isError = reply.status >= 400;
    text = isError ? xmlError(reply.body) : xmlSuccess(reply.action ?? '', requestId, reply.body);
    type = XML_CONTENT_TYPE;
  } else {
    text = JSON.stringify(reply.status >= 400 || reply.control === true ? reply.body : { RequestId: requestId, ...reply.body });
    type = 'application/json;charset=utf-8';
  }
  res.writeHead(reply.status, {
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(text),
    'x-acs-request-id': requestId,
  });
  res.end(text);
}

/** A whole number written as digits (a JSON number arrives as its text); NaN otherwise. */
function wholeParam(value: string | undefined): number {
  return value !== undefined && /^\d{1,15}$/.test(value) ? Number(value) : Number.NaN;
}

/**
 * The emulator's own endpoints (not part of the emulated API, not counted in stats, never delayed or faulted, always
 * JSON): `GET /_emulator/stats`, `POST /_emulator/disconnect` with JSON `{"clientId": "…"}`, `POST
 * /_emulator/restart`, `POST /_emulator/fail-next` with JSON `{"action": "…", "code": "…", "count": 1}` (like
 * `Emulator.failNext`, checked the same way). `POST /_emulator/restart` takes an optional JSON `{"downMs": 5000}` (the
 * broker stays down that long), `POST /_emulator/faults` a JSON `{"rate": 0.5, "codes": "Throttling.User,InternalError",
 * "forMs": 10000}` (like `Emulator.faultBurst`; rate 0 ends a burst), `GET /_emulator/queue?clientId=…` one persistent
 * session's queue (queue-view.ts). A JSON body is read whatever its Content-Type
 * says. Anything else there is `InvalidAction.NotFound`.
 */
async function emulatorControl(req: IncomingMessage, url: URL): Promise<(deps: ApiDependencies) => Promise<Record<string, unknown>>> {
  const route = `${req.method ?? 'GET'} ${url.pathname.slice(EMULATOR_PATH_PREFIX.length)}`;
  if (route === 'POST disconnect') {
    const { params } = await readRequest(req, { jsonWithoutType: true });
    const clientId = params['clientId'];
    if (!clientId) throw new ApiFault('ParameterCheckFailed', { suffix: 'Send a JSON body {"clientId": "<ClientId>"}.' });
    return async (deps) => ({ disconnected: deps.controls.disconnect(clientId) });
  }
  if (route === 'POST fail-next') {
    const { params } = await readRequest(req, { jsonWithoutType: true });
    const { action, code } = params;
    // How many calls fail-next fails: 1 unless given.
    const count = params['count'] === undefined ? 1 : wholeParam(params['count']);
    if (!action || !code) throw new ApiFault('ParameterCheckFailed', { suffix: 'Send a JSON body {"action": "<Action>", "code": "<Code>", "count": 1}.' });
    return async (deps) => {
      try {
        // The types hold for TypeScript callers; from HTTP, failNext's own run-time checks refuse what they would have.
        // Clustered, the faults are queued in Redis: answered once the cluster holds them.
        await deps.faults.failNext(action as EmulatedAction, code as KnownApiErrorCode, count);
      } catch (error) {
        // The same checks as Emulator.failNext; their message names the bad value and what is allowed.
        if (isApsaraMqDeviceError(error)) throw new ApiFault('ParameterCheckFailed', { suffix: error.message });
        throw error;
      }
      return { queued: count };
    };
  }
  if (route === 'POST restart') {
    const { params } = await readRequest(req, { jsonWithoutType: true });
    const downMs = params['downMs'] === undefined ? 0 : wholeParam(params['downMs']);
    try {
      checkRestartDownMs(downMs);
    } catch (error) {
      if (isApsaraMqDeviceError(error)) throw new ApiFault('ParameterCheckFailed', { suffix: `${error.message}: send a JSON body {"downMs": 5000} or none.` });
      throw error;
    }
    return async (deps) => {
      await deps.controls.restart(downMs);
      return { restarted: true, ...(downMs > 0 ? { downMs } : {}) };
    };
  }
  if (route === 'POST faults') {
    const { params } = await readRequest(req, { jsonWithoutType: true });
    const rate = Number(params['rate'] ?? Number.NaN);
    const forMs = wholeParam(params['forMs']);
    const codes = (params['codes'] ?? '').split(',').map((code) => code.trim()).filter((code) => code !== '');
    return async (deps) => {
      try {
        // Clustered, the burst is the cluster's: answered once Redis holds it.
        await deps.faults.burst(rate, codes, forMs);
      } catch (error) {
        if (isApsaraMqDeviceError(error)) throw new ApiFault('ParameterCheckFailed', { suffix: `${error.message}. Send a JSON body {"rate": 0.5, "codes": "Throttling.User,InternalError", "forMs": 10000}.` });
        throw error;
      }
      return { rate, codes, forMs };
    };
  }
  req.resume(); // drain any body so the connection can be reused
  if (route === 'GET stats' || route === 'HEAD stats') return async (deps) => ({ ...(await deps.snapshot()) });
  if (route === 'GET queue') {
    const query = parseQueueQuery(url.searchParams);
    return async (deps) => ({ ...(await deps.queue(query)) });
  }
  throw new ApiFault('InvalidAction.NotFound');
}

/** Messages of the emulator's own failures said so far (by logger): each once, not once per call that meets it. */
const said = new WeakMap<Logger, Set<string>>();
const MAX_SAID = 100;

function sayOnce(logger: Logger, error: unknown): void {
  const message = error instanceof Error ? error.message : String(error);
  let seen = said.get(logger);
  if (!seen) said.set(logger, (seen = new Set()));
  if (seen.has(message) || seen.size > MAX_SAID) return;
  seen.add(message);
  if (seen.size > MAX_SAID) logger.error(`OpenAPI calls answered InternalError for ${MAX_SAID} different reasons: further ones are not logged`);
  else logger.error(`OpenAPI call answered InternalError (a failure of the emulator, said once): ${message}`);
}

/**
 * The fault to answer a failure with. Anything that is not an ApiFault is an emulator fault; the client sees
 * InternalError, as from the real service. A body that was too large also closes the connection, as it was not drained.
 */
function faultOf(error: unknown, res: ServerResponse, logger: Logger): ApiFault {
  if (!(error instanceof ApiFault)) sayOnce(logger, error);
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
  const target = req.url ?? '/';
  const fail = (fault: ApiFault, format: 'JSON' | 'XML'): Reply => ({
    status: httpStatusFor(fault.code, deps.errorStatuses),
    body: { ...errorBody(fault, requestId, deps.hostId) },
    format,
  });

  let url: URL;
  try {
    url = new URL(target, 'http://emulator');
  } catch {
    req.resume();
    send(res, requestId, fail(new ApiFault('ParameterCheckFailed', { suffix: 'The request URL does not parse.' }), 'JSON'));
    return;
  }

  // Prometheus scrapes GET /metrics; the API's RPC calls carry an Action (the real gateway ignores the path).
  if (url.pathname === '/metrics' && (req.method === 'GET' || req.method === 'HEAD') && !url.searchParams.has('Action')) {
    req.resume();
    // Clustered, the statistics come from Redis too: without it, a scrape says why (503) instead of failing silently.
    const [status, text] = await Promise.resolve().then(() => deps.snapshot()).then(
      (stats) => [200, prometheusText(stats)] as const,
      (error: unknown) => [503, `# the emulator's statistics could not be read: ${error instanceof Error ? error.message : String(error)}\n`] as const,
    );
    res.writeHead(status, { 'Content-Type': PROMETHEUS_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(text), 'x-acs-request-id': requestId });
    res.end(req.method === 'HEAD' ? undefined : text);
    return;
  }

  if (url.pathname.startsWith(EMULATOR_PATH_PREFIX)) {
    let reply: Reply;
    try {
      const control = await emulatorControl(req, url);
      reply = { status: 200, body: await control(deps), format: 'JSON', control: true };
    } catch (error) {
      reply = fail(faultOf(error, res, deps.logger), 'JSON');
    }
    send(res, requestId, reply);
    return;
  }

  // Every other path is the API: the real gateway ignores the path of RPC calls (V2 does not sign it; V3 does).
  let format = requestedFormat(target);
  let action: string | undefined;
  try {
    if (!API_METHODS.has(req.method ?? '')) {
      // The gateway's own words for a call it cannot route: "please check your url and method".
      req.resume();
      throw new ApiFault('InvalidAction.NotFound');
    }
    const request = await readRequest(req);
    format = requestedFormat(target, request.params);
    const v3 = isV3Request(request.headers, request.params);
    action = v3 ? request.headers['x-acs-action']?.[0] : request.params['Action'];
    await hold(deps.faults.delayMs(), timers);
    const result = await handleRpc(request, v3, deps);
    send(res, requestId, { status: 200, body: result.body, format, action: result.action });
    deps.stats.recordCall(result.action);
  } catch (error) {
    const fault = faultOf(error, res, deps.logger);
    send(res, requestId, fail(fault, format));
    deps.stats.recordCall(action, fault.code);
  }
}

/**
 * An HTTP request Node cannot even parse (bad request line, header bytes, a header too large) still gets a
 * well-formed JSON error like every other answer, not Node's bare `400 Bad Request`.
 */
function answerUnparsable(hostId: string, error: NodeJS.ErrnoException, socket: Socket): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const requestId = newRequestId();
  const tooLarge = error.code === 'HPE_HEADER_OVERFLOW';
  const fault = new ApiFault('ParameterCheckFailed', { suffix: tooLarge ? 'The request headers are too large.' : 'The HTTP request does not parse.' });
  const text = JSON.stringify(errorBody(fault, requestId, hostId));
  const status = tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request';
  socket.end(
    `HTTP/1.1 ${status}\r\nContent-Type: application/json;charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\n` +
      `x-acs-request-id: ${requestId}\r\nConnection: close\r\n\r\n${text}`,
  );
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
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => answerUnparsable(deps.hostId, error, socket));
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
