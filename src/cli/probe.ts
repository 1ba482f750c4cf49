import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { NetworkError } from '../errors.js';

/**
 * How long a probe waits for an answer when the command has no `--timeout-ms`: the OpenAPI client's own default
 * (`DEFAULT_TIMEOUT_MS` of api-client.ts, not imported: that module loads pop-core), so that the probe never gives up
 * on an endpoint that the calls themselves would wait for.
 */
export const PROBE_TIMEOUT_MS = 10_000;

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname.startsWith('127.') || hostname === '[::1]' || hostname === '::1';
}

/** The system error code behind a failed fetch (undici wraps it in `cause`). */
function causeCode(error: unknown): string | undefined {
  let e: unknown = error;
  for (let depth = 0; depth < 4 && e; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'ABORT_ERR') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Ask the OpenAPI endpoint one unsigned question before fleet-scale work, so that a dead or wrong address fails in
 * seconds with a line that names it, instead of after every device has spent its retries. The real gateway and the
 * emulator both answer an empty POST with a JSON error (`MissingParameter`); anything else is not the OpenAPI.
 *
 * @param flag - the flag the endpoint came from, for the remedy (`--endpoint`).
 * @throws NetworkError `ConnectionRefused`, `HostNotFound`, `RequestTimeout`, `InvalidResponse` or `NetworkError`, with
 *   a remedy that names the endpoint.
 */
export async function probeOpenApi(endpoint: string, flag = '--endpoint', timeoutMs: number = PROBE_TIMEOUT_MS): Promise<void> {
  const url = new URL(`${endpoint}/`);
  const local = isLoopback(url.hostname);
  let response: { status: number; type: string; text: string };
  try {
    response = await post(url, timeoutMs);
  } catch (error) {
    const code = causeCode(error);
    if (code === 'ECONNREFUSED') {
      throw new NetworkError('ConnectionRefused', `Nothing answers at ${endpoint}`, endpoint, error, {
        remedy: local ? `Is the emulator running? Start it with apsaramq-device emulator, or fix ${flag}.` : `Check ${flag} (the OpenAPI URL, https://onsmqtt.<region>.aliyuncs.com) and the network.`,
      });
    }
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
      throw new NetworkError('HostNotFound', `The host of ${endpoint} (${url.hostname}) does not resolve`, endpoint, error, { remedy: `Check ${flag} and the region; is DNS reachable?` });
    }
    if (code === 'PROBE_TIMEOUT') {
      throw new NetworkError('RequestTimeout', `${endpoint} did not answer within ${timeoutMs} ms`, endpoint, error, { remedy: `Check ${flag}, a firewall or proxy in between, and the network.` });
    }
    // A peer that takes the connection and then closes it, or answers bytes that are not HTTP: an MQTT port.
    throw new NetworkError('NetworkError', `${endpoint} took the connection but did not answer HTTP (${code ?? 'closed'})`, endpoint, error, {
      remedy: `This port does not speak HTTP: is it the MQTT port? ${flag} takes the OpenAPI URL (the emulator prints it as its API endpoint, port 8080 by default).`,
      retryable: false,
    });
  }
  const { type, text } = response;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const looksLikeOpenApi = typeof body === 'object' && body !== null && ('RequestId' in body || 'Code' in body);
  if (!looksLikeOpenApi && response.status === 426) {
    // Upgrade Required: a WebSocket server, e.g. the broker's MQTT-over-WebSocket port.
    throw new NetworkError('InvalidResponse', `${endpoint} answered HTTP 426 (Upgrade Required): it speaks WebSocket, not the ApsaraMQ OpenAPI`, endpoint, undefined, {
      httpStatus: response.status,
      retryable: false,
      remedy: `Is it the MQTT port (MQTT over WebSocket)? ${flag} takes the OpenAPI URL (the emulator prints it as its API endpoint, port 8080 by default).`,
    });
  }
  if (!looksLikeOpenApi) {
    throw new NetworkError('InvalidResponse', `${endpoint} answered HTTP ${response.status}${type ? ` (${type.split(';')[0]})` : ''}, not like the ApsaraMQ OpenAPI`, endpoint, undefined, {
      httpStatus: response.status,
      retryable: false,
      remedy: `Check ${flag}: it must be the OpenAPI URL (the emulator's API endpoint, or https://onsmqtt.<region>.aliyuncs.com), not a web page, proxy or broker.`,
    });
  }
}

/**
 * A call failed on the network: find out whether the endpoint is the OpenAPI at all. When the probe shows it is
 * something else (the MQTT port, which closes the connection on HTTP; the WebSocket port or a web page, which answer
 * HTTP that is not the OpenAPI's), that is the error to show, naming the flag, as `connect` and `provision` do; the
 * call's own "outcome unknown" would send the user checking a Register that never reached the service. Otherwise
 * (a dead or slow network, a probe that answers well) the call's error stands.
 */
export async function explainCallFailure(error: unknown, endpoint: string, flag: string, timeoutMs?: number): Promise<never> {
  if (!(error instanceof NetworkError) || error.code === 'ConnectionRefused' || error.code === 'HostNotFound') throw error;
  try {
    await probeOpenApi(endpoint, flag, timeoutMs);
  } catch (probed) {
    if (probed instanceof NetworkError && !probed.retryable && (probed.code === 'NetworkError' || probed.code === 'InvalidResponse')) throw probed;
  }
  throw error;
}

/** One empty form POST with Node's HTTP client (fetch refuses some ports outright, which would hide the real answer). */
function post(url: URL, timeoutMs: number): Promise<{ status: number; type: string; text: string }> {
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const request = send(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '0' }, agent: false });
    const timer = setTimeout(() => request.destroy(Object.assign(new Error('no answer'), { code: 'PROBE_TIMEOUT' })), timeoutMs);
    request.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    request.once('response', (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= 64 * 1024) chunks.push(chunk);
      });
      response.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      response.once('end', () => {
        clearTimeout(timer);
        resolve({ status: response.statusCode ?? 0, type: String(response.headers['content-type'] ?? ''), text: Buffer.concat(chunks).toString('utf8') });
      });
    });
    request.end();
  });
}
