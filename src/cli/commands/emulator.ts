import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import type { Emulator, EmulatorOptions } from '../../emulator/index.js';
import type { Logger } from '../../util/logger.js';
import { loadEmulator } from '../roles.js';
import { type CliIo, UsageError, choiceArg, intArg, jsonLine } from '../io.js';
import { CLUSTER_CHILD_ENV, runCluster } from '../emulator-cluster.js';

/**
 * The flags named as the emulator's options (the cloud's rules and the OpenAPI's choices): passed on as they are when
 * given, so that their types and defaults have one home, the options (broker-options.ts, options.ts).
 */
const SAME_NAME_OPTIONS = [
  'parentTopics', 'maxTopicLength', 'maxSubscriptions', 'maxPayloadBytes', 'retainedMessages', 'willMessages',
  'sharedSubscriptions', 'qos2PersistentSessions', 'lenient', 'maxPacketBytes', 'maxQueuedBytes', 'drainTimeoutMs',
  'maxOfflineMessages', 'maxOfflineBytes', 'offlineQueuePolicy', 'groups', 'unknownGroupRefusal',
  'revokedCredentialRefusal', 'mqtt31', 'p2pTopicLength', 'keepAliveZero', 'offlineDelivery', 'offlineDetectionDelayMs',
  'offlineBatchSize', 'offlineBatchIntervalMs', 'oversizedMessages', 'rateLimitMode', 'getOnPostOnly',
  'unknownInstanceCode', 'regionId',
] as const satisfies ReadonlyArray<keyof EmulatorOptions>;

interface EmulatorFlags extends Pick<EmulatorOptions, (typeof SAME_NAME_OPTIONS)[number]> {
  host: string;
  mqttPort: number;
  wsPort: number;
  ws: boolean;
  apiPort: number;
  instanceId?: string;
  reRegister: 'rotate' | 'reject';
  errorStatuses: 'remapped' | 'legacy';
  qpsLimit: number;
  faultRate: number;
  faultCodes?: string[];
  latencyMs?: { min: number; max: number };
  kickOnRevoke?: boolean;
  tokenExpireNoticeLeadMs?: number;
  tokenP2pNeedsRead?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  tlsPort?: number;
  wssPort?: number;
  dataDir?: string;
  ephemeral?: boolean;
  json?: boolean;
  maxKeepAlive?: number;
  redis?: string;
  cluster?: number;
}

/** `--parent-topics a,b` and `--groups A,B` (`*`: any, the rule off). The names themselves are checked by the emulator's options. */
function listOrAnyArg(value: string): string[] | false {
  return value.trim() === '*' ? false : listArg(value);
}

/** A limit: a whole number from `min`, or `none` (also `Infinity`) for no limit. */
function limitArg(name: string, min: number): (value: string) => number {
  return (value: string) => {
    if (/^\s*(none|infinity)\s*$/i.test(value)) return Number.POSITIVE_INFINITY;
    const n = Number(value.trim());
    if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be a whole number of ${min} or more, or none.`);
    return n;
  };
}

/** The options of the flags named as options, and `--max-keep-alive`: only those given, so that `--lenient` decides the others. */
function givenOptions(flags: EmulatorFlags): EmulatorOptions {
  const options: Record<string, unknown> = {};
  for (const name of SAME_NAME_OPTIONS) if (flags[name] !== undefined) options[name] = flags[name];
  if (flags.maxKeepAlive !== undefined) options['maxKeepAliveSeconds'] = flags.maxKeepAlive;
  return options as EmulatorOptions;
}

/**
 * The variables the emulator reads (EMULATOR_ENV of the emulator's options), spelled out here so that this command
 * does not load the emulator's modules before it runs.
 */
const EMULATOR_ENV = { instanceId: 'APSARAMQ_INSTANCE_ID', accessKeyId: 'ALIBABA_CLOUD_ACCESS_KEY_ID', accessKeySecret: 'ALIBABA_CLOUD_ACCESS_KEY_SECRET' } as const;

/** The instance id the `emulator` command serves when none is given (flag or APSARAMQ_INSTANCE_ID): fixed, so that its default data directory is the same at every start. */
export const CLI_DEFAULT_INSTANCE_ID = 'mqtt-emu-local';

/**
 * The default data directory of the `emulator` command for an instance: `$XDG_STATE_HOME/apsaramq-device/emulator/<id>`
 * (an absolute XDG_STATE_HOME only, as the XDG specification says), else `$HOME/.local/state/…`. `undefined` when the
 * environment has neither, and then the state stays in memory: the command never guesses a home directory that
 * its environment did not name.
 */
export function defaultEmulatorDataDir(env: NodeJS.ProcessEnv, instanceId: string): string | undefined {
  const xdg = env['XDG_STATE_HOME'];
  const stateHome = xdg && isAbsolute(xdg) ? xdg : env['HOME'] ? join(env['HOME'], '.local', 'state') : undefined;
  return stateHome === undefined ? undefined : join(stateHome, 'apsaramq-device', 'emulator', instanceId);
}

/** `--redis` and `--cluster` keep the state in Redis: a flag that keeps it here contradicts them. */
function refuseLocalState(flags: EmulatorFlags, cluster: '--redis' | '--cluster'): void {
  const stray = flags.dataDir !== undefined ? '--data-dir' : flags.ephemeral ? '--ephemeral' : undefined;
  if (stray) throw new UsageError(`${stray} and ${cluster} contradict each other: a cluster keeps its state in Redis.`);
}

/**
 * Where the state goes and which instance id to ask for: `--ephemeral` keeps it in memory; `--data-dir DIR` keeps it
 * there (the instance id, unless given, comes from the directory); `--redis URL` keeps it in the cluster's Redis (the
 * instance id, unless given, is the cluster's); by default it goes to the directory of
 * {@link defaultEmulatorDataDir}, keyed by the instance id (the flag, APSARAMQ_INSTANCE_ID, or
 * {@link CLI_DEFAULT_INSTANCE_ID}), so that running the same command again finds the same credentials.
 */
function stateOptions(flags: EmulatorFlags, env: NodeJS.ProcessEnv): Pick<EmulatorOptions, 'dataDir' | 'instanceId' | 'redis'> {
  if (flags.ephemeral && flags.dataDir !== undefined) throw new UsageError('--ephemeral and --data-dir contradict each other: keep the state in memory, or in DIR.');
  const given = flags.instanceId ?? (env[EMULATOR_ENV.instanceId] || undefined);
  const flagged = flags.instanceId === undefined ? {} : { instanceId: flags.instanceId };
  if (flags.redis !== undefined) {
    refuseLocalState(flags, '--redis');
    return { redis: flags.redis, ...flagged };
  }
  if (flags.dataDir !== undefined) return { dataDir: flags.dataDir, ...flagged };
  const instanceId = given ?? CLI_DEFAULT_INSTANCE_ID;
  const dataDir = flags.ephemeral ? undefined : defaultEmulatorDataDir(env, instanceId);
  return { instanceId, ...(dataDir === undefined ? {} : { dataDir }) };
}

/** The `--json` line: a secret is printed only when the emulator generated it. */
function readyLine(emulator: Emulator): Record<string, unknown> {
  const generated = emulator.accessKeySource === 'generated';
  return {
    mqttUrl: emulator.mqttUrl,
    wsUrl: emulator.wsUrl ?? null,
    // Only with TLS on, so that the line's shape without TLS stays what scripts already parse.
    ...(emulator.mqttsUrl === undefined ? {} : { mqttsUrl: emulator.mqttsUrl, wssUrl: emulator.wssUrl ?? null }),
    apiEndpoint: emulator.apiEndpoint,
    instanceId: emulator.instanceId,
    accessKeyId: emulator.accessKeyId,
    // A key pair from the environment may be a real one: the line says where it is instead of echoing it.
    ...(generated ? { accessKeySecret: emulator.accessKeySecret } : { accessKeySecret: null, accessKeySource: emulator.accessKeySource }),
    ...(emulator.dataDir === undefined ? {} : { dataDir: emulator.dataDir }),
    ...(emulator.cluster === undefined ? {} : { cluster: { processId: emulator.cluster.processId, redisUrl: emulator.cluster.redisUrl } }),
  };
}

/** The human banner: where everything listens, where the state is kept, and what to run next (never `register`, which rotates keys). */
function banner(emulator: Emulator, env: NodeJS.ProcessEnv): string {
  const opts = `--endpoint ${emulator.apiEndpoint} --broker-url ${emulator.mqttUrl} --instance-id ${emulator.instanceId}`;
  const state = emulator.cluster !== undefined
    ? `in Redis at ${emulator.cluster.redisUrl}, shared by every emulator process started with it (this one is ${emulator.cluster.processId})`
    : emulator.dataDir !== undefined
      ? `${emulator.dataDir} (kept across restarts; --ephemeral keeps it in memory)`
      : `in memory, lost when the emulator stops${env['HOME'] || env['XDG_STATE_HOME'] ? '' : ' (no HOME or XDG_STATE_HOME to keep it under)'}; --data-dir DIR keeps it`;
  return [
    'ApsaraMQ for MQTT emulator is running.',
    `  MQTT (TCP):       ${emulator.mqttUrl}`,
    `  MQTT (WebSocket): ${emulator.wsUrl ?? 'off'}`,
    `  MQTT (TLS):       ${emulator.mqttsUrl ?? 'off (--tls-cert/--tls-key)'}`,
    `  MQTT (WSS):       ${emulator.wssUrl ?? 'off (--tls-cert/--tls-key)'}`,
    `  OpenAPI endpoint: ${emulator.apiEndpoint}`,
    `  Instance id:      ${emulator.instanceId}`,
    `  State:            ${state}`,
    '',
    'In another terminal:',
    ...(emulator.accessKeySource === 'generated'
      ? [`  export ${EMULATOR_ENV.accessKeyId}=${emulator.accessKeyId}`, `  export ${EMULATOR_ENV.accessKeySecret}=${emulator.accessKeySecret}`]
      : // The keys came from this environment: they may be real ones, so the secret is not echoed.
        [`  (use the same ${EMULATOR_ENV.accessKeyId} and ${EMULATOR_ENV.accessKeySecret} as this terminal)`]),
    `  apsaramq-device connect ${opts} --client-id GID_demo@@@dev-1 --subscribe 'demo/#'`,
    `  apsaramq-device connect ${opts} --client-id GID_demo@@@dev-2 --publish demo/hello --message hi`,
    `  apsaramq-device get --endpoint ${emulator.apiEndpoint} --instance-id ${emulator.instanceId} --client-id GID_demo@@@dev-1`,
    '  (connect registers a ClientId only when it has no credential; register would replace the key of a running device)',
    '',
    'Press Ctrl+C to stop.',
    '',
  ].join('\n');
}

/** `--fault-rate`: a probability. */
function probabilityArg(value: string): number {
  const n = Number(value.trim());
  if (value.trim() === '' || !(n >= 0 && n <= 1)) throw new InvalidArgumentError('--fault-rate must be a number from 0 to 1.');
  return n;
}

/** `--fault-codes A,B`: the codes themselves are checked by the emulator's options (one list of valid codes). */
function listArg(value: string): string[] {
  return value.split(',').map((code) => code.trim()).filter((code) => code !== '');
}

/** `--latency-ms MIN-MAX` and `--offline-detection-delay-ms MIN-MAX` (or a single N for a fixed delay), whole milliseconds. */
function rangeArg(name: string): (value: string) => { min: number; max: number } {
  return (value: string) => {
    const match = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(value);
    const min = Number(match?.[1]);
    const max = match?.[2] === undefined ? min : Number(match[2]);
    if (!match || min > max) throw new InvalidArgumentError(`${name} must be MIN-MAX in whole ms with MIN <= MAX, or one number.`);
    return { min, max };
  };
}

/** Defaults of the `emulator` command: fixed, well-known ports so the quick start can be pasted. */
export const EMULATOR_CLI_DEFAULTS = Object.freeze({ host: '127.0.0.1', mqttPort: 1883, wsPort: 8083, apiPort: 8080, tlsPort: 8883, wssPort: 8084 });

/**
 * The TLS options from `--tls-cert`/`--tls-key` (read here, checked by the emulator) and their ports. The ports
 * have defaults only with TLS on; a TLS port without the files is a usage error rather than silently ignored.
 */
async function tlsOptions(flags: EmulatorFlags): Promise<Pick<EmulatorOptions, 'tls' | 'tlsPort' | 'wssPort'>> {
  if (flags.tlsCert === undefined && flags.tlsKey === undefined) {
    if (flags.tlsPort !== undefined || flags.wssPort !== undefined) throw new UsageError('--tls-port and --wss-port need --tls-cert and --tls-key.');
    return {};
  }
  if (flags.tlsCert === undefined || flags.tlsKey === undefined) throw new UsageError('--tls-cert and --tls-key go together.');
  const [cert, key] = await Promise.all([readFile(flags.tlsCert), readFile(flags.tlsKey)]);
  return {
    tls: { cert, key },
    tlsPort: flags.tlsPort ?? EMULATOR_CLI_DEFAULTS.tlsPort,
    wssPort: flags.wssPort ?? EMULATOR_CLI_DEFAULTS.wssPort,
  };
}

/** The broker's rule refusals go to stderr, one line each, whatever --verbose says: they explain a disconnect. */
function ruleLogger(io: CliIo): Logger {
  const line = (level: string) => (message: string): void => io.stderr(`${level} ${message}\n`);
  const quiet = (): void => undefined;
  return { debug: quiet, info: quiet, warn: line('warn'), error: line('error') };
}

export function addEmulatorCommand(program: Command, io: CliIo): void {
  program
    .command('emulator')
    .description('Run a local emulator of ApsaraMQ for MQTT: an MQTT broker (TCP and WebSocket /mqtt; with --tls-cert also TLS and secure WebSocket) and the OpenAPI, enforcing the real authentication.')
    .option('--host <host>', 'address to listen on', EMULATOR_CLI_DEFAULTS.host)
    .option('--mqtt-port <port>', 'MQTT over TCP port (0 = any free port)', intArg('--mqtt-port', 0, 65535), EMULATOR_CLI_DEFAULTS.mqttPort)
    .option('--ws-port <port>', 'MQTT over WebSocket port, path /mqtt (0 = any free port)', intArg('--ws-port', 0, 65535), EMULATOR_CLI_DEFAULTS.wsPort)
    .option('--no-ws', 'do not listen for WebSocket')
    .option('--api-port <port>', 'OpenAPI port (0 = any free port)', intArg('--api-port', 0, 65535), EMULATOR_CLI_DEFAULTS.apiPort)
    .option('--instance-id <id>', `instance id (default: $APSARAMQ_INSTANCE_ID, else the one kept in --data-dir or by the cluster of --redis, else ${CLI_DEFAULT_INSTANCE_ID})`)
    .option('--re-register <mode>', 'RegisterDeviceCredential on a ClientId that has a credential: rotate (latest wins) or reject (DeviceCredentialExsit)', choiceArg('--re-register', ['rotate', 'reject'] as const), 'rotate')
    .option('--error-statuses <set>', 'HTTP status of InternalError/SystemOverFlow: remapped (417/403) or legacy (500/500)', choiceArg('--error-statuses', ['remapped', 'legacy'] as const), 'remapped')
    .option('--qps-limit <n>', 'OpenAPI calls per second per account before Throttling.User', intArg('--qps-limit', 1), 500)
    .option('--fault-rate <p>', 'share (0 to 1) of the OpenAPI calls that pass the signature check and --qps-limit answered with an injected error, changing nothing', probabilityArg, 0)
    .option('--fault-codes <codes>', 'comma-separated error codes injected faults answer with (default SystemOverFlow,InternalError)', listArg)
    .option('--latency-ms <min-max>', 'delay each OpenAPI request by a uniformly drawn MIN to MAX ms (or exactly N)', rangeArg('--latency-ms'))
    .option('--rate-limit-mode <mode>', 'how --qps-limit and the actions\' own limits count: sliding-window (at most the limit in any second; default) or token-bucket (a second\'s worth of burst)', choiceArg('--rate-limit-mode', ['sliding-window', 'token-bucket'] as const))
    .option('--get-on-post-only <policy>', 'a GET of an action the API metadata declares POST-only (Register, Get, Refresh, UnRegisterDeviceCredential, ApplyToken, RevokeToken): refuse (404 InvalidAction.NotFound; default) or accept', choiceArg('--get-on-post-only', ['refuse', 'accept'] as const))
    .option('--unknown-instance-code <code>', 'the answer to another InstanceId: InstancePermissionCheckFailed (default) or MqttInstanceNotFound', choiceArg('--unknown-instance-code', ['InstancePermissionCheckFailed', 'MqttInstanceNotFound'] as const))
    .option('--region-id <id>', 'the region the endpoint stands for, named in error bodies as HostId onsmqtt.<id>.aliyuncs.com (default cn-hangzhou)')
    .option('--kick-on-revoke', 'drop live MQTT sessions of a credential as soon as Refresh, UnRegister or a repeated Register revokes it')
    .option('--token-expire-notice-lead-ms <ms>', 'Token mode: how long before a token expires its $SYS/tokenExpireNotice is sent (default 300000)', intArg('--token-expire-notice-lead-ms', 0, 30 * 24 * 3_600_000))
    .option('--token-p2p-needs-read', 'Token mode: a P2P message reaches a client only if one of its R tokens covers the topic')
    .option('--tls-cert <file>', 'PEM server certificate (chain): turns on MQTT over TLS and over secure WebSocket (/mqtt)')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option('--tls-port <port>', `MQTT over TLS port (default ${EMULATOR_CLI_DEFAULTS.tlsPort}; 0 = any free port)`, intArg('--tls-port', 0, 65535))
    .option('--wss-port <port>', `MQTT over secure WebSocket port (default ${EMULATOR_CLI_DEFAULTS.wssPort}; 0 = any free port)`, intArg('--wss-port', 0, 65535))
    .option('--data-dir <dir>', 'keep the OpenAPI state (credentials, instance id, generated keys) in DIR across restarts (default: $XDG_STATE_HOME or ~/.local/state, /apsaramq-device/emulator/<instance id>)')
    .option('--ephemeral', 'keep the state in memory only: every credential is forgotten when the emulator stops')
    .option('--parent-topics <list>', 'comma-separated parent topics that exist on the instance (default demo,sim; * = any); PUBLISH or SUBSCRIBE under another disconnects the client, ApplyToken refuses it', listOrAnyArg)
    .option('--groups <list>', 'comma-separated GroupIds that exist on the instance (default GID_demo,GID_test,GID_sim; * = any); a CONNECT of another is refused, the credential API answers PermissionCheckFailed', listOrAnyArg)
    .option('--unknown-group-refusal <code>', 'CONNACK of a GroupId that does not exist: identifier-rejected (2 / 0x85; default) or not-authorized (5 / 0x87)', choiceArg('--unknown-group-refusal', ['identifier-rejected', 'not-authorized'] as const))
    .option('--revoked-credential-refusal <code>', 'CONNACK of a revoked DeviceCredential whose password verifies: bad-username-or-password (4 / 0x86; default) or not-authorized (5 / 0x87)', choiceArg('--revoked-credential-refusal', ['bad-username-or-password', 'not-authorized'] as const))
    .option('--mqtt31 <policy>', 'MQTT 3.1 CONNECTs: refuse (CONNACK 1; default) or accept', choiceArg('--mqtt31', ['refuse', 'accept'] as const))
    .option('--max-topic-length <n>', 'longest topic or filter in characters (default 64; none = no limit)', limitArg('--max-topic-length', 1))
    .option('--max-subscriptions <n>', 'subscriptions per client (default 30; none = no limit)', limitArg('--max-subscriptions', 1))
    .option('--p2p-topic-length <count>', 'what of a P2P topic <parent>/p2p/<ClientId> counts against --max-topic-length: parent (default) or whole', choiceArg('--p2p-topic-length', ['parent', 'whole'] as const))
    .option('--max-keep-alive <s>', 'Keep Alive cap in seconds (default 480; none = no cap)', limitArg('--max-keep-alive', 1))
    .option('--keep-alive-zero <policy>', 'a Keep Alive of 0: cap (lowered to --max-keep-alive; default) or allow', choiceArg('--keep-alive-zero', ['cap', 'allow'] as const))
    .option('--max-payload-bytes <n>', 'largest PUBLISH payload (default 65536; none = no limit); see --oversized-messages', limitArg('--max-payload-bytes', 1))
    .option('--oversized-messages <policy>', 'a PUBLISH over --max-payload-bytes: discard (acknowledged, delivered to no one; default) or disconnect the client', choiceArg('--oversized-messages', ['discard', 'disconnect'] as const))
    .option('--retained-messages <policy>', 'retained PUBLISH: refuse (disconnect), ignore (drop the flag) or allow', choiceArg('--retained-messages', ['refuse', 'ignore', 'allow'] as const))
    .option('--will-messages <policy>', 'CONNECT with a will: refuse (CONNACK 5 / 0x83), ignore (drop the will) or allow', choiceArg('--will-messages', ['refuse', 'ignore', 'allow'] as const))
    .option('--shared-subscriptions <policy>', '$share/ filters: refuse (SUBACK failure) or allow', choiceArg('--shared-subscriptions', ['refuse', 'allow'] as const))
    .option('--qos2-persistent-sessions <policy>', 'QoS 2 in a persistent session: refuse or allow', choiceArg('--qos2-persistent-sessions', ['refuse', 'allow'] as const))
    .option('--lenient', 'turn every rule above off (a plain MQTT broker); rule flags given explicitly still apply')
    .option('--max-packet-bytes <n>', 'largest MQTT packet, checked before authentication (default 131072)', intArg('--max-packet-bytes', 2, 268_435_460))
    .option('--max-queued-bytes <n>', 'bytes waiting for one slow subscriber before it is disconnected (default 8388608)', intArg('--max-queued-bytes', 1024))
    .option('--drain-timeout-ms <ms>', 'how long a subscriber\'s socket may stay full before it is disconnected (default 10000)', intArg('--drain-timeout-ms', 1, 2_147_483_647))
    .option('--max-offline-messages <n>', 'QoS 1/2 messages one persistent session holds for its client, offline or unacknowledged (default 1000; none = no limit)', limitArg('--max-offline-messages', 1))
    .option('--max-offline-bytes <n>', 'bytes (topics and payloads) of those messages per session (default 8388608; none = no limit)', limitArg('--max-offline-bytes', 1))
    .option('--offline-queue-policy <policy>', 'a message for a full session: drop-oldest (the oldest not yet sent goes) or refuse-new', choiceArg('--offline-queue-policy', ['drop-oldest', 'refuse-new'] as const))
    .option('--offline-delivery <pace>', 'a resumed session\'s queued messages: paced (the cloud\'s: first batch after --offline-detection-delay-ms, then one every --offline-batch-interval-ms; default) or immediate', choiceArg('--offline-delivery', ['paced', 'immediate'] as const))
    .option('--offline-detection-delay-ms <min-max>', 'paced: ms from the reconnect to the first batch, drawn from MIN-MAX (or exactly N; default 5000-10000)', rangeArg('--offline-detection-delay-ms'))
    .option('--offline-batch-size <n>', 'paced: messages per batch (default 30)', intArg('--offline-batch-size', 1))
    .option('--offline-batch-interval-ms <ms>', 'paced: ms between batches (default 5000)', intArg('--offline-batch-interval-ms', 0, 2_147_483_647))
    .option('--redis <url>', 'join the cluster of this Redis (redis://host:6379[/db]): every emulator process started with it is one service (messages, sessions, credentials, tokens, rate limits shared); the state lives there')
    .option('--cluster <n>', 'run n emulator processes on this machine as one cluster, on --redis or on a redis-server started for it (when on the PATH); each listens on its own ports (the given ones + its index, else free ones)', intArg('--cluster', 1, 64))
    .option('--json', 'once ready, print one JSON line {mqttUrl, wsUrl, [mqttsUrl, wssUrl with TLS,] apiEndpoint, instanceId, accessKeyId, accessKeySecret (null, with accessKeySource, for keys from the environment)[, dataDir][, cluster {processId, redisUrl}]}; with --cluster {redisUrl, redisStarted, instanceId, accessKeyId, accessKeySecret, processes [{processId, mqttUrl, wsUrl, apiEndpoint}]}')
    .addHelpText(
      'after',
      `
The account AccessKey comes from ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET when both are set
(one without the other is refused), else one is generated, printed, and kept in the data directory (a secret taken
from the environment is never echoed nor written). The state (device credentials) is kept in the data directory,
so running the same command again serves the same credentials; --ephemeral forgets them at exit.
Runs until SIGINT or SIGTERM, then closes cleanly.
The broker enforces the service's MQTT rules (GroupIds and parent topics that exist, topic length, subscriptions
per client, Keep Alive, message size; no MQTT 3.1, retained, will or shared-subscription messages, no QoS 2 in a
persistent session; offline messages at the cloud's pace) and says on stderr which rule refused what;
GET /_emulator/stats counts them under mqtt.rules. --lenient turns them off.
Test controls on the OpenAPI port: GET /_emulator/stats (GET /metrics: the same as Prometheus text),
POST /_emulator/disconnect {"clientId": "…"}, POST /_emulator/restart {"downMs": 5000} (the body optional),
POST /_emulator/fail-next {"action": "…", "code": "…", "count": 1},
POST /_emulator/faults {"rate": 0.5, "codes": "Throttling.User", "forMs": 10000}.
With --redis every emulator process on that Redis database is one service: a credential registered through any
OpenAPI logs in at any broker, a subscriber on one gets what is published on another, QuerySession answers for all,
the rate limits and failNext's faults are the cluster's; restart, disconnect and stats' counters are the process's.
All processes of a cluster serve one instance and account with the same rule flags (EmulatorClusterMismatch else).
--cluster N starts N such processes here (and a redis-server when --redis is not given); Ctrl+C stops them all.

Examples:
  $ apsaramq-device emulator
  $ apsaramq-device emulator --mqtt-port 0 --ws-port 0 --api-port 0 --json
  $ apsaramq-device emulator --fault-rate 0.2 --fault-codes SystemOverFlow,Throttling.User --latency-ms 50-300
  $ apsaramq-device emulator --tls-cert fixtures/tls/server.pem --tls-key fixtures/tls/server-key.pem
  $ apsaramq-device emulator --instance-id mqtt-demo --data-dir ./emulator-state
  $ apsaramq-device emulator --ephemeral --mqtt-port 0 --api-port 0 --json
  $ apsaramq-device emulator --parent-topics demo,sensors,alerts --groups GID_demo,GID_sensors --max-subscriptions 100
  $ apsaramq-device emulator --offline-delivery immediate
  $ apsaramq-device emulator --lenient
  $ apsaramq-device emulator --redis redis://127.0.0.1:6379 --mqtt-port 1884 --api-port 8081
  $ apsaramq-device emulator --cluster 2 --json`,
    )
    .action(async (flags: EmulatorFlags, command: Command) => {
      if (flags.cluster !== undefined) {
        refuseLocalState(flags, '--cluster');
        await runCluster({
          processes: flags.cluster,
          redis: flags.redis,
          rawArgs: emulatorArgs(command),
          globalArgs: (command.parent?.opts() as { verbose?: boolean } | undefined)?.verbose === true ? ['--verbose'] : [],
          ports: clusterPorts(command),
          tls: flags.tlsCert !== undefined,
          json: flags.json === true,
          io,
        });
        return;
      }
      const options: EmulatorOptions = {
        ...givenOptions(flags),
        logger: ruleLogger(io),
        host: flags.host,
        mqttPort: flags.mqttPort,
        wsPort: flags.ws ? flags.wsPort : false,
        apiPort: flags.apiPort,
        reRegister: flags.reRegister,
        errorStatuses: flags.errorStatuses,
        qpsLimit: flags.qpsLimit,
        faultRate: flags.faultRate,
        ...(flags.faultCodes === undefined ? {} : { faultCodes: flags.faultCodes }),
        ...(flags.latencyMs === undefined ? {} : { latencyMs: flags.latencyMs }),
        kickOnRevoke: flags.kickOnRevoke === true,
        ...(flags.tokenExpireNoticeLeadMs === undefined ? {} : { tokenExpireNoticeLeadMs: flags.tokenExpireNoticeLeadMs }),
        ...(flags.tokenP2pNeedsRead ? { tokenP2pNeedsRead: true } : {}),
        ...(await tlsOptions(flags)),
        env: io.env,
        ...stateOptions(flags, io.env),
      };
      const { startEmulator } = await loadEmulator('The emulator');
      const emulator = await startEmulator(options);
      // A process of `emulator --cluster`: its parent gone (its stdin closed), it stops like on Ctrl+C.
      const stopped = io.env[CLUSTER_CHILD_ENV] === '1' ? Promise.race([io.interrupted(), parentGone()]) : io.interrupted();
      io.stdout(flags.json ? jsonLine(readyLine(emulator)) : banner(emulator, io.env));
      await stopped;
      await emulator.close();
      // Read only to see the parent go: it must not keep this process alive.
      if (io.env[CLUSTER_CHILD_ENV] === '1') process.stdin.destroy();
    });
}

/** The command line after `emulator`, as typed (the program's rawArgs hold every word the user gave). */
function emulatorArgs(command: Command): string[] {
  const raw = (command.parent as { rawArgs?: string[] } | null)?.rawArgs ?? [];
  const at = raw.indexOf(command.name());
  return at < 0 ? [] : raw.slice(at + 1);
}

/** The listener ports given on the command line (not defaulted): a cluster's process i listens on port + i. */
function clusterPorts(command: Command): Partial<Record<'mqtt' | 'ws' | 'api' | 'tls' | 'wss', number>> {
  const ports: Partial<Record<'mqtt' | 'ws' | 'api' | 'tls' | 'wss', number>> = {};
  for (const name of ['mqtt', 'ws', 'api', 'tls', 'wss'] as const) {
    const key = `${name}Port`;
    const value: unknown = command.getOptionValue(key);
    if (command.getOptionValueSource(key) === 'cli' && typeof value === 'number' && value !== 0) ports[name] = value;
  }
  return ports;
}

/** Resolves when standard input ends: the parent of a cluster's process has gone. */
function parentGone(): Promise<void> {
  return new Promise((resolve) => {
    process.stdin.once('end', resolve);
    process.stdin.once('close', resolve);
    process.stdin.once('error', () => resolve());
    process.stdin.resume();
  });
}
