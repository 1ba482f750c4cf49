import { createServer as createHttpServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { MAX_CLIENT_ID_LENGTH, clientIdProblem } from '../credential.js';
import { hmacPassword, parseUsername } from '../signer/mqtt.js';
import { safeEqual } from './crypto.js';
import type { ResolvedEmulatorOptions } from './options.js';
import type { CredentialRegistry } from './registry.js';
import { closeServer, listen, trackSockets, urlHost } from './servers.js';
import type { StatsRecorder } from './stats.js';

/** The WebSocket path of the real service (reference §5.2). */
export const WS_PATH = '/mqtt';

/** CONNACK return codes of MQTT 3.1.1 the authenticate hook uses (aedes' `AuthErrorCode` is an ambient const enum). */
const IDENTIFIER_REJECTED = 2;
const SERVER_UNAVAILABLE = 3;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;

/** Why a CONNECT is refused: its CONNACK return code and a message that names no secret. */
export class ConnectRefusal extends Error {
  readonly returnCode: number;
  constructor(returnCode: number, message: string) {
    super(message);
    this.name = 'ConnectRefusal';
    this.returnCode = returnCode;
  }
}

/** What the broker authenticates against. */
export interface BrokerAuthConfig {
  readonly instanceId: string;
  readonly accessKeyId: string;
  readonly accessKeySecret: string;
  readonly registry: CredentialRegistry;
}

/**
 * Decide a CONNECT per reference §0 / §5.3, or throw {@link ConnectRefusal}:
 * rc 2 for a ClientId breaking the grammar; rc 4 when username/password cannot be verified (malformed username,
 * unknown mode or key id, wrong password); rc 5 when they verify but are not allowed here (another instance, or
 * a device credential bound to another ClientId).
 *
 * Token mode is not emulated (it needs ApplyToken and the token lifecycle): it always gets rc 4.
 */
export function checkConnect(config: BrokerAuthConfig, clientId: string, username: string | undefined, password: Buffer | undefined): void {
  if (clientIdProblem(clientId)) throw new ConnectRefusal(IDENTIFIER_REJECTED, 'identifier rejected');
  const parsed = parseUsername(username);
  if (!parsed) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'username is not <Mode>|<KeyId>|<InstanceId>');

  let boundClientId: string;
  let boundInstanceId: string;
  let secret: string;
  if (parsed.mode === 'DeviceCredential') {
    const record = config.registry.findByKeyId(parsed.keyId);
    if (!record) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'unknown or revoked DeviceAccessKeyId');
    ({ ClientId: boundClientId, InstanceId: boundInstanceId, DeviceAccessKeySecret: secret } = record);
  } else if (parsed.mode === 'Signature') {
    if (parsed.keyId !== config.accessKeyId) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'unknown AccessKeyId');
    // The account key may connect any ClientId of its instance.
    [boundClientId, boundInstanceId, secret] = [clientId, config.instanceId, config.accessKeySecret];
  } else {
    throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, `authentication mode ${parsed.mode} is not supported by the emulator`);
  }

  // The password is keyed by the secret over the CONNECT's own ClientId, so it verifies the key holder even when
  // the credential belongs to another ClientId; that case is then "not authorized", not "bad password".
  if (!safeEqual(password, hmacPassword(secret, clientId))) throw new ConnectRefusal(BAD_USERNAME_OR_PASSWORD, 'wrong password');
  if (parsed.instanceId !== config.instanceId || boundInstanceId !== parsed.instanceId) {
    throw new ConnectRefusal(NOT_AUTHORIZED, 'the username names another instance');
  }
  if (boundClientId !== clientId) throw new ConnectRefusal(NOT_AUTHORIZED, 'the credential belongs to another ClientId');
}

/** The running broker and its listeners. */
export interface BrokerHandle {
  readonly broker: Aedes;
  readonly mqttUrl: string;
  readonly wsUrl: string | undefined;
  /** Close the broker, every client socket and both listeners. Never rejects. */
  close(): Promise<void>;
}

/** Start aedes with the emulator's authentication, a TCP listener and (unless off) a WebSocket listener. */
export async function startBroker(
  options: ResolvedEmulatorOptions,
  deps: { registry: CredentialRegistry; stats: StatsRecorder },
): Promise<BrokerHandle> {
  const auth: BrokerAuthConfig = { ...options, registry: deps.registry };
  // CONNACKs decided by our hook are counted when decided, so the count is already right when the client reads its
  // CONNACK (aedes emits connackSent only after the write). CONNACKs aedes decides alone are counted on connackSent.
  const counted = new WeakSet<Client>();
  const decide = (client: Client, returnCode: number): void => {
    counted.add(client);
    deps.stats.recordConnack(returnCode);
  };
  const broker = await Aedes.createBroker({
    // aedes refuses MQTT 3.1 ClientIds over 23 characters by default; the service allows 64.
    maxClientsIdLength: MAX_CLIENT_ID_LENGTH,
    authenticate(client: Client, username, password, done) {
      try {
        // client.id is the CONNECT ClientId, or aedes' own `aedes_<uuid>` when it was empty: that fails the grammar.
        checkConnect(auth, client.id, username, password);
        decide(client, 0);
        done(null, true);
      } catch (error) {
        // An unexpected failure must not crash the broker's process: refuse as "server unavailable".
        const refusal = error instanceof ConnectRefusal ? error : new ConnectRefusal(SERVER_UNAVAILABLE, 'emulator failure');
        decide(client, refusal.returnCode);
        done(refusal as AuthenticateError, false);
      }
    },
  });
  broker.on('connackSent', (packet, client) => {
    if (!counted.has(client)) deps.stats.recordConnack(packet.returnCode ?? 0);
  });

  const host = urlHost(options.host);
  const tcp = createNetServer((socket) => broker.handle(socket));
  const tcpSockets = trackSockets(tcp);
  const http = createHttpServer((_req, res) => {
    // Only the WebSocket upgrade on /mqtt is served here.
    res.writeHead(426, { 'Content-Type': 'text/plain', Connection: 'close' }).end(`Upgrade to WebSocket at ${WS_PATH}\n`);
  });
  const httpSockets = trackSockets(http);
  const wss = new WebSocketServer({ server: http, path: WS_PATH });
  // ws re-emits the HTTP server's errors (EADDRINUSE) on itself, where nobody listens: they would be thrown
  // before listen() sees them. listen() reports them.
  wss.on('error', () => undefined);
  wss.on('connection', (ws, req) => {
    const stream = createWebSocketStream(ws);
    broker.handle(stream, req);
  });

  const close = async (): Promise<void> => {
    await new Promise<void>((resolve) => broker.close(() => resolve()));
    for (const ws of wss.clients) ws.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    await Promise.all([closeServer(tcp, tcpSockets), closeServer(http, httpSockets)]);
  };

  try {
    const mqttPort = await listen(tcp, options.mqttPort, options.host);
    const wsPort = options.wsPort === false ? undefined : await listen(http, options.wsPort, options.host);
    return {
      broker,
      mqttUrl: `mqtt://${host}:${mqttPort}`,
      wsUrl: wsPort === undefined ? undefined : `ws://${host}:${wsPort}${WS_PATH}`,
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
