/**
 * `apsaramq-device gateway`: store and forward from any language. It holds the sessions of the devices listed in
 * --devices (credentials as `connect` gets them), keeps every message it reads on stdin in a durable outbox
 * (--outbox) before saying so, sends it until the broker acknowledged it, and reports each fate as a JSON line on
 * stdout. Its devices connect at --connect-rate; SIGHUP re-reads --devices (added devices connect, removed ones end,
 * the others are not touched); --metrics-port serves the gateway's Prometheus metrics. A thin layer over the library's
 * {@link Gateway} and the outbox store: the library does the work.
 */
import { readFile } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import type { Command } from 'commander';
import { CONNECT_DEFAULTS } from '../../connector/options.js';
import { MAX_MESSAGE_ID_BYTES, checkMessageId, checkPayload, checkTopicName, defaultMaxPayloadBytes } from '../../connector/validate.js';
import type { Transport } from '../../connector/connect.js';
import { assertClientId } from '../../credential.js';
import { ApsaraMqDeviceError, ValidationError, toApsaraMqDeviceError } from '../../errors.js';
import { DEFAULT_CONNECT_RATE, Gateway } from '../../gateway/gateway.js';
import type { OutboxDropReason, OutboxStore, WhenFull } from '../../outbox/index.js';
import { type CliIo, Interrupted, UsageError, readCaFlag, choiceArg, cliLogger, intArg, jsonLine } from '../io.js';
import { CredentialSources } from './connect.js';
// Help examples name the instance the `emulator` command serves by default, so that they work when copied.
import { CLI_DEFAULT_INSTANCE_ID as EXAMPLE_INSTANCE_ID } from './emulator.js';

interface GatewayFlags {
  devices?: string;
  outbox?: string;
  instanceId?: string;
  endpoint?: string;
  region?: string;
  brokerUrl?: string;
  transport: Transport;
  store?: string;
  ca?: string;
  insecure?: boolean;
  timeoutMs?: number;
  drainTimeoutMs: number;
  maxBytes?: number;
  maxMessages?: number;
  ttlMs?: number | 'none';
  whenFull?: WhenFull;
  connectRate: number;
  connectJitterMs: number;
  metricsPort?: number;
  metricsHost: string;
}

/** How long SIGINT/SIGTERM lets the gateway deliver what waits before it exits with the rest on disk. */
const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
/** Lines read and not yet accepted (on disk) at most: beyond, stdin is not read until the outbox catches up. */
const MAX_UNACCEPTED = 1000;
const LINE_KEYS = new Set(['id', 'clientId', 'topic', 'payload', 'qos', 'payloadEncoding']);
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function ttlArg(value: string): number | 'none' {
  if (value === 'none') return 'none';
  return intArg('--ttl-ms', 1)(value);
}

export function addGatewayCommand(program: Command, io: CliIo): void {
  program
    .command('gateway')
    .description('Hold the sessions of the devices in --devices and forward the messages read on stdin (JSON lines), kept on disk (--outbox) until the broker acknowledges them.')
    .option('--devices <file>', 'the devices: one ClientId per line (# starts a comment)')
    .option('--outbox <dir>', 'the durable outbox directory (created, mode 0700; one gateway process at a time)')
    .option('--instance-id <id>', 'instance id of the devices')
    .option('--endpoint <url>', 'OpenAPI endpoint, for devices without their credential in the store (e.g. the emulator\'s http://127.0.0.1:8080)')
    .option('--region <region>', 'region of the OpenAPI endpoint https://onsmqtt.<region>.aliyuncs.com')
    .option('--broker-url <url>', 'MQTT broker URL (default <instance-id>.mqtt.aliyuncs.com on the transport\'s port)')
    .option('--transport <t>', 'tcp (1883), tls (8883), ws (80) or wss (443); ignored with --broker-url', choiceArg('--transport', ['tcp', 'tls', 'ws', 'wss'] as const), 'tcp')
    .option('--store <dir>', 'credential store directory (default $APSARAMQ_DEVICE_STORE, else ~/.config/apsaramq-device/credentials)')
    .option('--ca <file>', 'CA certificate for tls/wss brokers')
    .option('--insecure', 'do not verify the broker\'s TLS certificate')
    .option('--timeout-ms <ms>', 'connect and answer timeout of each OpenAPI request (default 10000)', intArg('--timeout-ms', 1, 600_000))
    .option('--drain-timeout-ms <ms>', `on Ctrl+C or SIGTERM, how long to keep delivering before exiting with the rest on disk`, intArg('--drain-timeout-ms', 0, 3_600_000), DEFAULT_DRAIN_TIMEOUT_MS)
    .option('--max-bytes <n>', 'bound of the outbox: bytes of messages, all devices (default 67108864, 64 MiB)', intArg('--max-bytes', 4096))
    .option('--max-messages <n>', 'bound of the outbox: messages, all devices (default 100000)', intArg('--max-messages', 1))
    .option('--ttl-ms <ms>', 'time to live of a message from its acceptance, across restarts; "none" for no expiry (default 7200000, 2 h)', ttlArg)
    .option('--connect-rate <n>', 'CONNECTs per second across all devices: at start, after an uplink outage, after a broker restart', intArg('--connect-rate', 1, 1_000_000), DEFAULT_CONNECT_RATE)
    .option('--connect-jitter-ms <ms>', 'each CONNECT waits a further random 0 to MS ms (spreads gateways restarted together)', intArg('--connect-jitter-ms', 0, 3_600_000), 0)
    .option('--metrics-port <port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port; the address is printed on stderr); needs prom-client', intArg('--metrics-port', 0, 65_535))
    .option('--metrics-host <host>', 'the address --metrics-port listens on (0.0.0.0 for other hosts)', '127.0.0.1')
    .option('--when-full <policy>', 'at a bound: refuse-new (the line gets OutboxFull) or drop-oldest (reported as dropped "full") (default refuse-new)', choiceArg('--when-full', ['refuse-new', 'drop-oldest'] as const))
    .addHelpText(
      'after',
      `
Each line on stdin is one message:
  {"id": "r-1", "clientId": "GID_demo@@@dev-1", "topic": "demo/telemetry", "payload": "21.5", "qos": 1}
"id" is yours (optional, up to 255 bytes): it is kept on disk with the message and given back in every report, also
after a restart. "qos" is 1 (default) or 2: QoS 0 is not stored. "payloadEncoding": "base64" for binary payloads.

Each report is one JSON line on stdout:
  {"id": "r-1", "clientId": "…", "seq": 7, "accepted": true}      on disk (fsync'd): survives a crash or a power cut
  {"id": "r-1", "clientId": "…", "seq": 7, "delivered": true}     the broker acknowledged it (PUBACK); with
                                                                  "possibleDuplicate": true when it was sent twice
  {"id": "r-1", "clientId": "…", "seq": 7, "dropped": "expired"}  removed undelivered: expired, full (drop-oldest),
                                                                  corrupt, or rejected (by the broker, with "error")
  {"line": 3, "error": {"code": "InvalidLine", "message": "…"}}    a line that was not taken (the others go on)
  {"clientId": "…", "error": {"code": "CredentialRejected", …}}   a device that cannot connect
Messages accepted before a restart are delivered after it, reported with their ids.

Ctrl+C or SIGTERM: stop reading, deliver what can be within --drain-timeout-ms, keep the rest on disk, print a
summary on stderr, exit 130 (143). End of stdin: deliver everything, then exit 0.

Credentials come from the store (--store); a device without one is fetched or registered through the OpenAPI
(--endpoint or --region, and the account keys ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET).

Every CONNECT, first or reconnect, waits for its turn: --connect-rate per second across all devices (default
${DEFAULT_CONNECT_RATE}), so 10,000 devices come back after a reboot, an uplink outage or a broker restart at that pace,
not at once: each device backs off only 0.5 to 5 s between its own CONNECTs, so during an outage the whole fleet
stays queued and returns at the pace when the broker is back. Credentials are read from the store 32 at a time,
ahead of the pace; a device registered on first use is registered at the OpenAPI's pace (one registrar, its rate
limiter).

SIGHUP (kill -HUP <pid>): read --devices again; devices added connect (at the pace), devices removed end their
session (their undelivered messages stay in the outbox); the others are not touched. A file that cannot be read or
is invalid is reported on stderr and the devices held stay as they are.

--metrics-port: the gateway's Prometheus metrics (apsaramq_device_devices{state}, …_connects_total{outcome},
…_publishes_delivered_total, …_outbox_messages, …; README "Gateways") at http://127.0.0.1:PORT/metrics.

Examples:
  $ printf 'GID_demo@@@dev-1\\nGID_demo@@@dev-2\\n' > devices.txt
  $ my-modbus-reader | apsaramq-device gateway --devices devices.txt --outbox /var/lib/gw \\
      --instance-id ${EXAMPLE_INSTANCE_ID} --endpoint http://127.0.0.1:8080 --broker-url mqtt://127.0.0.1:1883
  $ echo '{"id":"a","clientId":"GID_demo@@@dev-1","topic":"demo/t","payload":"aGk=","payloadEncoding":"base64"}' \\
      | apsaramq-device gateway --devices devices.txt --outbox ./outbox --instance-id ${EXAMPLE_INSTANCE_ID} \\
          --broker-url mqtt://127.0.0.1:1883 --when-full drop-oldest --ttl-ms 3600000
  $ apsaramq-device gateway --devices devices.txt --outbox /var/lib/gw --instance-id ${EXAMPLE_INSTANCE_ID} \\
      --broker-url mqtt://127.0.0.1:1883 --connect-rate 200 --connect-jitter-ms 500 --metrics-port 9464 < my-fifo &
  $ curl -s http://127.0.0.1:9464/metrics | grep apsaramq_device_devices
  $ echo GID_demo@@@dev-3 >> devices.txt && kill -HUP %1`,
    )
    .action(async (flags: GatewayFlags, command: Command) => {
      if (flags.devices === undefined) throw new UsageError('gateway needs --devices FILE (one ClientId per line)', 'MissingOption');
      if (flags.outbox === undefined) throw new UsageError('gateway needs --outbox DIR (where messages are kept until delivered)', 'MissingOption');
      if (flags.instanceId === undefined) throw new UsageError('gateway needs --instance-id (the instance of the devices)', 'MissingOption');
      if (flags.endpoint !== undefined && flags.region !== undefined) throw new UsageError('--endpoint and --region cannot be used together: the endpoint is that of a region', 'ConflictingOptions');
      const clientIds = await readDevices(flags.devices);
      const sources = new CredentialSources(io, { instanceId: flags.instanceId, ...pick(flags, ['endpoint', 'region', 'store', 'timeoutMs']) }, 'gateway for a device without its credential in the store (it calls the OpenAPI)');
      const ca = await readCaFlag(flags.ca);
      const { openOutboxStore } = await import('../../outbox/index.js');
      const store = await openOutboxStore({
        dir: flags.outbox,
        ...(flags.maxBytes === undefined ? {} : { maxBytes: flags.maxBytes }),
        ...(flags.maxMessages === undefined ? {} : { maxMessages: flags.maxMessages }),
        ...(flags.ttlMs === undefined ? {} : { ttlMs: flags.ttlMs === 'none' ? Infinity : flags.ttlMs }),
        ...(flags.whenFull === undefined ? {} : { whenFull: flags.whenFull }),
      });
      try {
        await runGateway(io, flags, clientIds, store, sources, ca, Boolean(command.optsWithGlobals()['verbose']));
      } finally {
        sources.close();
        await store.close();
      }
    });
}

function pick<T extends object, K extends keyof T>(from: T, keys: readonly K[]): { [P in K]?: NonNullable<T[P]> } {
  const out: { [P in K]?: NonNullable<T[P]> } = {};
  for (const key of keys) if (from[key] !== undefined) out[key] = from[key] as NonNullable<T[K]>;
  return out;
}

/** The ClientIds of --devices: one per line, `#` starts a comment; each checked, none twice. */
async function readDevices(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new UsageError(`Cannot read --devices ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const seen = new Map<string, number>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const clientId = raw.replace(/#.*$/, '').trim();
    if (clientId === '') return;
    try {
      assertClientId(clientId);
    } catch (error) {
      throw new ValidationError('InvalidClientId', `--devices ${file} line ${i + 1}: ${(error as Error).message}`);
    }
    const before = seen.get(clientId);
    if (before !== undefined) throw new UsageError(`--devices ${file} lists ${clientId} twice (lines ${before} and ${i + 1}): a device has one session`);
    seen.set(clientId, i + 1);
  });
  if (seen.size === 0) throw new UsageError(`--devices ${file} lists no device: write one ClientId per line`);
  return [...seen.keys()];
}

/** One line of stdin, checked: a message for a device, or the error to report. */
function parseLine(text: string): { clientId: string; id: string | undefined; topic: string; payload: Buffer; qos: 1 | 2 } {
  const bad = (message: string): ValidationError => new ValidationError('InvalidLine', message);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw bad('not JSON: each line is one JSON object');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad('not a JSON object: each line is one {"clientId", "topic", "payload", …}');
  const line = value as Record<string, unknown>;
  const unknown = Object.keys(line).filter((key) => !LINE_KEYS.has(key));
  if (unknown.length > 0) throw bad(`unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')} (the keys are ${[...LINE_KEYS].join(', ')})`);
  const { id, clientId, topic, payload, qos = 1, payloadEncoding = 'utf8' } = line;
  try {
    checkMessageId(id);
  } catch {
    throw bad(`"id" must be a non-empty string of at most ${MAX_MESSAGE_ID_BYTES} bytes of UTF-8`);
  }
  if (typeof clientId !== 'string') throw bad('"clientId" is missing: which device sends it');
  if (typeof topic !== 'string') throw bad('"topic" is missing or not a string');
  if (typeof payload !== 'string') throw bad('"payload" is missing or not a string (binary: base64 with "payloadEncoding": "base64")');
  if (qos === 0) throw bad('"qos": 0 is not kept in the outbox (at most once): use 1 (the default) or 2');
  if (qos !== 1 && qos !== 2) throw bad('"qos" must be 1 or 2');
  if (payloadEncoding !== 'utf8' && payloadEncoding !== 'base64') throw bad('"payloadEncoding" must be "utf8" (the default) or "base64"');
  if (payloadEncoding === 'base64' && !BASE64.test(payload)) throw bad('"payload" is not base64 (standard alphabet, padded)');
  const rules = { apsaraMq: CONNECT_DEFAULTS.brokerIsApsaraMq, maxPayloadBytes: defaultMaxPayloadBytes(CONNECT_DEFAULTS.brokerIsApsaraMq), persistentSession: false };
  checkTopicName(topic, rules);
  const bytes = checkPayload(payloadEncoding === 'base64' ? Buffer.from(payload, 'base64') : payload, rules);
  return { clientId, id: id as string | undefined, topic, payload: bytes, qos };
}

function errorJson(error: ApsaraMqDeviceError): { code: string; message: string } {
  return { code: error.code, message: error.message };
}

async function runGateway(io: CliIo, flags: GatewayFlags, clientIds: string[], store: OutboxStore, sources: CredentialSources, ca: Buffer | undefined, verbose: boolean): Promise<void> {
  const out = (value: Record<string, unknown>): void => io.stdout(jsonLine(value));
  const counts = { lines: 0, accepted: 0, delivered: 0, possibleDuplicates: 0, invalid: 0, refused: 0, dropped: {} as Partial<Record<OutboxDropReason, number>> };
  store.on('warning', (warning) => io.stderr(`warning: ${warning.code}: ${warning.message}\n`));
  const devices = new Gateway({
    outbox: store,
    credentials: (clientId) => sources.sourceFor(clientId),
    connectRate: flags.connectRate,
    connectJitterMs: flags.connectJitterMs,
    connect: {
      transport: flags.transport,
      endTimeoutMs: flags.drainTimeoutMs,
      logger: cliLogger(io, verbose),
      ...(flags.brokerUrl === undefined ? {} : { brokerUrl: flags.brokerUrl }),
      ...(ca === undefined ? {} : { ca }),
      ...(flags.insecure ? { rejectUnauthorized: false } : {}),
    },
  });
  for (const clientId of clientIds) devices.add(clientId);
  // Metrics first: without prom-client the command stops here, before any device connects.
  const metricsServer = flags.metricsPort === undefined ? undefined : await serveMetrics(io, devices, flags.metricsPort, flags.metricsHost);
  const held = new Set(clientIds);
  const others = store.devices().filter((clientId) => !held.has(clientId));
  const waitingBefore = devices.waiting;
  io.stderr(`gateway: ${clientIds.length} device${clientIds.length === 1 ? '' : 's'}, outbox ${store.dir}${waitingBefore > 0 ? ` (${waitingBefore} messages accepted before, to deliver)` : ''}\n`);
  if (others.length > 0) {
    io.stderr(`warning: the outbox holds messages of ${others.length} device${others.length === 1 ? '' : 's'} not in --devices (${others.slice(0, 3).join(', ')}${others.length > 3 ? ', …' : ''}): they wait until a gateway holds them\n`);
  }

  // What happens to each message, and when the backlog is empty: checked on every event that can empty it.
  let settledCheck: () => void = () => undefined;
  devices.on('delivered', (report) => {
    counts.delivered += 1;
    if (report.possibleDuplicate) counts.possibleDuplicates += 1;
    out({ ...(report.id === undefined ? {} : { id: report.id }), clientId: report.clientId, seq: report.seq, delivered: true, ...(report.possibleDuplicate ? { possibleDuplicate: true } : {}) });
    settledCheck();
  });
  devices.on('dropped', (drop) => {
    counts.dropped[drop.reason] = (counts.dropped[drop.reason] ?? 0) + 1;
    out({ ...(drop.id === undefined ? {} : { id: drop.id }), clientId: drop.clientId, seq: drop.seq, dropped: drop.reason, ...(drop.error ? { error: errorJson(drop.error) } : {}) });
    settledCheck();
  });
  let firstFailure: ApsaraMqDeviceError | undefined;
  // One "offline" line per device per outage: a device that keeps failing to connect backs off and tries again every
  // few seconds (the pacer is the fleet's backoff), which is not news each time.
  const saidOffline = new Set<string>();
  devices.on('device', ({ clientId, state, error }) => {
    if (state === 'online') {
      saidOffline.delete(clientId);
      io.stderr(`online: ${clientId}\n`);
    } else if (state === 'backing-off' && !saidOffline.has(clientId)) {
      saidOffline.add(clientId);
      io.stderr(`offline: ${clientId}${error ? ` (${error.code}; retrying)` : ' (reconnecting)'}\n`);
    } else if (state === 'failed') {
      saidOffline.delete(clientId);
      firstFailure ??= error;
      io.stderr(`failed: ${clientId}: ${error ? `${error.code}: ${error.message}` : 'gave up'}; its messages stay in the outbox\n`);
      out({ clientId, error: errorJson(error ?? toApsaraMqDeviceError(new Error('gave up'))) });
      settledCheck();
    }
  });
  devices.on('warning', ({ clientId, error }) => io.stderr(`warning: ${clientId}: ${error.code}: ${error.message}\n`));
  devices.start();
  const stopHangup = io.onHangup?.(() => void reload(io, flags.devices as string, devices, held));

  let interruptedBy: NodeJS.Signals | undefined;
  const interrupted = io.interrupted().then((signal) => {
    interruptedBy = signal ?? 'SIGINT';
  });
  const input = io.stdinStream?.() ?? Readable.from(io.stdin ? [await io.stdin()] : []);
  const lines = createInterface({ input, crlfDelay: Infinity });
  let unaccepted = 0;
  let paused = false;
  const accepting = new Set<Promise<void>>();
  lines.on('line', (text) => {
    const n = ++counts.lines;
    if (text.trim() === '') return;
    let message: ReturnType<typeof parseLine>;
    try {
      message = parseLine(text);
      if (!held.has(message.clientId)) throw new ValidationError('UnknownDevice', `ClientId ${message.clientId} is not in --devices ${flags.devices}`);
    } catch (cause) {
      counts.invalid += 1;
      const error = toApsaraMqDeviceError(cause);
      const id = idOf(text);
      out({ ...(id === undefined ? {} : { id }), line: n, error: errorJson(error) });
      return;
    }
    const { clientId, id, topic, payload, qos } = message;
    unaccepted += 1;
    if (unaccepted >= MAX_UNACCEPTED && !paused) {
      paused = true;
      lines.pause();
    }
    const done = devices
      .publish(clientId, topic, payload, id === undefined ? { qos } : { qos, id })
      .then(
        ({ seq }) => {
          counts.accepted += 1;
          out({ ...(id === undefined ? {} : { id }), clientId, seq, accepted: true });
        },
        (cause: unknown) => {
          counts.refused += 1;
          out({ ...(id === undefined ? {} : { id }), line: n, clientId, error: errorJson(toApsaraMqDeviceError(cause)) });
        },
      )
      .finally(() => {
        unaccepted -= 1;
        accepting.delete(done);
        if (paused && unaccepted < MAX_UNACCEPTED / 2 && interruptedBy === undefined) {
          paused = false;
          lines.resume();
        }
      });
    accepting.add(done);
  });
  const ended = new Promise<void>((resolve) => lines.once('close', resolve));
  await Promise.race([ended, interrupted]);
  lines.close();
  await Promise.all(accepting);

  if (interruptedBy === undefined) {
    // End of stdin: deliver everything that waits, unless a signal comes first. A device that failed for good keeps
    // its messages on disk: nothing more will deliver them in this run.
    const failedWaiting = (): number => [...held].filter((id) => devices.state(id) === 'failed').reduce((sum, id) => sum + store.device(id).messages, 0);
    await Promise.race([
      interrupted,
      new Promise<void>((resolve) => {
        // Counted once the removals asked so far are written (a delivery is reported before its removal is).
        let checking = false;
        let again = false;
        settledCheck = () => {
          if (checking) {
            again = true;
            return;
          }
          checking = true;
          void store.flush().catch(() => undefined).then(() => {
            checking = false;
            if (devices.waiting - failedWaiting() === 0) resolve();
            else if (again) {
              again = false;
              settledCheck();
            }
          });
        };
        settledCheck();
      }),
    ]);
  }
  if (interruptedBy !== undefined) io.stderr(`interrupted: delivering what waits for up to ${flags.drainTimeoutMs} ms, keeping the rest in the outbox\n`);
  stopHangup?.();
  await devices.close();
  await new Promise<void>((resolve) => (metricsServer ? metricsServer.close(() => resolve()) : resolve()));
  await store.flush().catch(() => undefined);
  const waiting = devices.waiting;
  const dropped = Object.entries(counts.dropped).map(([reason, n]) => `${n} ${reason}`);
  io.stderr(
    `gateway: ${counts.accepted} accepted, ${counts.delivered} delivered${counts.possibleDuplicates > 0 ? ` (${counts.possibleDuplicates} possibly twice)` : ''}, ` +
      `${dropped.length > 0 ? `dropped ${dropped.join(', ')}` : '0 dropped'}, ${counts.refused} refused, ${counts.invalid} invalid line${counts.invalid === 1 ? '' : 's'}; ` +
      `${waiting} waiting in the outbox ${store.dir}${waiting > 0 ? ' (delivered by the next run on it)' : ''}\n`,
  );
  if (interruptedBy !== undefined) throw new Interrupted(interruptedBy);
  if (waiting > 0) {
    const cause = firstFailure ?? toApsaraMqDeviceError(new Error('a device could not connect'));
    throw new ApsaraMqDeviceError(cause.code, `${waiting} message${waiting === 1 ? '' : 's'} wait${waiting === 1 ? 's' : ''} in the outbox ${store.dir} for devices that could not connect; the first: ${cause.message}`, {
      retryable: cause.retryable,
      remedy: cause.remedy,
      cause,
    });
  }
}

/**
 * SIGHUP: read --devices again and apply the difference (devices added connect at the pace, devices removed end their
 * session, the others are not touched). A file that cannot be used changes nothing.
 */
async function reload(io: CliIo, file: string, gateway: Gateway, held: Set<string>): Promise<void> {
  let wanted: string[];
  try {
    wanted = await readDevices(file);
  } catch (error) {
    const e = toApsaraMqDeviceError(error);
    io.stderr(`warning: SIGHUP: --devices ${file} not reloaded (${e.code}: ${e.message}); the ${held.size} devices held stay\n`);
    return;
  }
  const next = new Set(wanted);
  const added = wanted.filter((clientId) => !held.has(clientId));
  const removed = [...held].filter((clientId) => !next.has(clientId));
  try {
    for (const clientId of added) {
      gateway.add(clientId);
      held.add(clientId);
    }
  } catch {
    return; // GatewayClosed: the command is stopping
  }
  // Lines for a removed device are refused from now on; its messages still on disk wait for a gateway that holds it.
  for (const clientId of removed) held.delete(clientId);
  io.stderr(`reloaded --devices ${file}: ${added.length} added, ${removed.length} removed, ${held.size} held\n`);
  await Promise.all(removed.map((clientId) => gateway.remove(clientId)));
  if (removed.length > 0) io.stderr(`removed: ${removed.length} device${removed.length === 1 ? '' : 's'} ended their session\n`);
}

/** Serve the gateway's metrics at /metrics; resolves once listening, having printed the address. */
async function serveMetrics(io: CliIo, gateway: Gateway, port: number, host: string): Promise<Server> {
  const metrics = await gateway.metrics();
  const server = createServer((request, response) => {
    if (request.method !== 'GET' || (request.url ?? '').split('?')[0] !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('Not found: the metrics are at /metrics\n');
      return;
    }
    metrics.text().then(
      (text) => response.writeHead(200, { 'content-type': metrics.contentType }).end(text),
      (error: unknown) => response.writeHead(500, { 'content-type': 'text/plain' }).end(`${(error as Error).message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(new UsageError(`--metrics-port ${port}: cannot listen on ${host}:${port} (${error.code ?? error.message})${error.code === 'EADDRINUSE' ? ': the port is taken, pick another or 0 for any free one' : ''}`)),
    );
    server.listen(port, host, resolve);
  });
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  io.stderr(`metrics: http://${shown}:${address.port}/metrics\n`);
  return server;
}

/** The "id" of a line that could not be taken, when it has one, for its error report. */
function idOf(text: string): string | undefined {
  try {
    const id = (JSON.parse(text) as { id?: unknown })?.id;
    return typeof id === 'string' ? id : undefined;
  } catch {
    return undefined;
  }
}

