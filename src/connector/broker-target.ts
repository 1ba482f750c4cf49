/**
 * Where mqtt.js connects, read from the broker URL once per URL, not by mqtt.js for every client (attempt.ts).
 */
import { parse as parseUrl } from 'node:url';
import type { IClientOptions } from 'mqtt';

/** Where mqtt.js connects: what its `connect(url, options)` takes from the URL (protocol, host, port, a WebSocket's path). */
export interface BrokerTarget {
  readonly protocol: NonNullable<IClientOptions['protocol']>;
  readonly host: string;
  readonly port?: number;
  readonly path?: string;
}

let lastUrl: string | undefined;
let lastTarget: BrokerTarget | undefined;

/**
 * The broker URL as mqtt.js would read it (the same legacy `url.parse`, the same fields), read once per URL, not per
 * client: given the URL, mqtt.js parses it again for every client, keeps the parsed query as an object of its own and
 * deletes `path` from the options it keeps, which turns them into a dictionary (about 0.2 KB of heap per connection
 * in a gateway of 2,000 devices: BENCHMARKS.md, "Stop 29"). The last URL is kept (a gateway's devices share one).
 */
export function brokerTarget(url: string): BrokerTarget {
  if (url === lastUrl && lastTarget !== undefined) return lastTarget;
  const parsed = parseUrl(url);
  // The schemes are checked by the options (mqtt, mqtts, ws, wss): each is one of mqtt.js's protocols.
  const protocol = (parsed.protocol ?? '').replace(/:$/, '') as BrokerTarget['protocol'];
  // mqtt.js keeps `path` for WebSocket URLs only (its TCP and TLS streams would take it for a Unix socket's).
  const path = protocol.startsWith('ws') && parsed.path !== null ? parsed.path : undefined;
  const target: BrokerTarget = Object.freeze({
    protocol,
    host: parsed.hostname ?? '',
    ...(parsed.port !== null ? { port: Number(parsed.port) } : {}),
    ...(path !== undefined ? { path } : {}),
  });
  lastUrl = url;
  lastTarget = target;
  return target;
}
