import type { Command } from 'commander';
import type { IClientPublishOptions } from 'mqtt';
type QoS = NonNullable<IClientPublishOptions['qos']>;
import { connectDevice, type DeviceConnection, type Transport } from '../../connector/connect.js';
import { CONNECT_DEFAULTS } from '../../connector/options.js';
import { MAX_PAYLOAD_BYTES, checkPayload, checkTopicFilter, checkTopicName } from '../../connector/validate.js';
import { assertClientId, assertInstanceId, type CredentialSource } from '../../credential.js';
import { ConfigurationError, StoreError } from '../../errors.js';
import { ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, defaultStoreDir } from '../../provisioner/env.js';
import { resolveEndpoint } from '../../provisioner/endpoint.js';
import { FileCredentialStore } from '../../provisioner/file-store.js';
import type { Provisioner } from '../../provisioner/provisioner.js';
import { loadProvisioner } from '../roles.js';
import { staticSource } from '../../connector/connect.js';
import { type CliIo, Interrupted, UsageError, readCaFlag, choiceArg, cliLogger, conflicting, intArg, jsonLine } from '../io.js';
import { probeOpenApi } from '../probe.js';
import { readCredentialFile } from './sign.js';
// Help examples name the instance the `emulator` command serves by default, so that they work when copied.
import { CLI_DEFAULT_INSTANCE_ID as EXAMPLE_INSTANCE_ID } from './emulator.js';

interface ConnectFlags {
  instanceId?: string;
  clientId?: string;
  endpoint?: string;
  region?: string;
  brokerUrl?: string;
  transport: Transport;
  store?: string;
  credentialFile?: string;
  publish?: string;
  message?: string;
  qos: number;
  subscribe?: string;
  count?: number;
  json?: boolean;
  ca?: string;
  insecure?: boolean;
  timeoutMs?: number;
}

export function addConnectCommand(program: Command, io: CliIo): void {
  program
    .command('connect')
    .description('Ensure the device credential (store, then API), connect, then publish one message or print what arrives.')
    .option('--instance-id <id>', 'instance id (not needed with --credential-file)')
    .option('--client-id <clientId>', 'the device ClientId, GID_<group>@@@<device> (not needed with --credential-file)')
    .option('--endpoint <url>', 'OpenAPI endpoint, e.g. the emulator\'s http://127.0.0.1:8080')
    .option('--region <region>', 'region of the OpenAPI endpoint https://onsmqtt.<region>.aliyuncs.com')
    .option('--broker-url <url>', 'MQTT broker URL (default <instance-id>.mqtt.aliyuncs.com on the transport\'s port)')
    .option('--transport <t>', 'tcp (1883), tls (8883), ws (80) or wss (443); ignored with --broker-url', choiceArg('--transport', ['tcp', 'tls', 'ws', 'wss'] as const), 'tcp')
    .option('--store <dir>', 'credential store directory (default $APSARAMQ_DEVICE_STORE, else ~/.config/apsaramq-device/credentials)')
    .option('--credential-file <file>', 'use this credential (as printed by register) instead of the store and the API: no account keys needed')
    .option('--publish <topic>', 'publish --message to this topic, then exit')
    .option('--message <text>', 'the message to publish')
    .option('--qos <n>', 'QoS of the publish or subscription', intArg('--qos', 0, 1), 1)
    .option('--subscribe <topic>', 'subscribe and print each message that arrives (one line each)')
    .option('--count <n>', 'with --subscribe: exit after this many messages (default: run until Ctrl+C)', intArg('--count', 1))
    .option('--json', 'with --subscribe: print {"topic", "payload"} per message')
    .option('--ca <file>', 'CA certificate for tls/wss brokers')
    .option('--insecure', 'do not verify the broker\'s TLS certificate')
    .option('--timeout-ms <ms>', 'connect and answer timeout of each OpenAPI request, and of the check of --endpoint (default 10000)', intArg('--timeout-ms', 1, 600_000))
    .addHelpText(
      'after',
      `
Without --credential-file this is the registrar path: it needs the account keys (ALIBABA_CLOUD_ACCESS_KEY_ID,
ALIBABA_CLOUD_ACCESS_KEY_SECRET), looks in the store first, then GetDeviceCredential, and registers only a ClientId
that has no credential yet. The credential is kept in the store, so the next run makes no API call.

Examples:
  $ apsaramq-device connect --endpoint http://127.0.0.1:8080 --broker-url mqtt://127.0.0.1:1883 \\
      --instance-id ${EXAMPLE_INSTANCE_ID} --client-id GID_demo@@@dev-1 --publish demo/hello --message hi
  $ apsaramq-device connect --credential-file dev-1.json --broker-url mqtt://127.0.0.1:1883 --subscribe 'demo/#' --count 1`,
    )
    .action(async (flags: ConnectFlags, command: Command) => {
      if ((flags.publish === undefined) === (flags.subscribe === undefined)) {
        throw flags.publish === undefined ? new UsageError('connect needs --publish TOPIC or --subscribe TOPIC', 'MissingOption') : conflicting('--publish', '--subscribe', 'connect does one or the other');
      }
      if (flags.publish !== undefined && flags.message === undefined) throw new UsageError('--publish needs --message TEXT', 'MissingOption');
      // No flag is ignored silently.
      if (flags.subscribe !== undefined && flags.message !== undefined) throw conflicting('--subscribe', '--message', '--message is what --publish sends');
      if (flags.publish !== undefined && flags.count !== undefined) throw conflicting('--publish', '--count', '--count is how many messages --subscribe waits for');
      if (flags.publish !== undefined && flags.json) throw conflicting('--publish', '--json', '--json is how --subscribe prints messages');
      if (flags.endpoint !== undefined && flags.region !== undefined) throw conflicting('--endpoint', '--region', 'the endpoint is that of a region');
      if (flags.credentialFile !== undefined) {
        for (const [flag, value] of [['--endpoint', flags.endpoint], ['--region', flags.region], ['--store', flags.store], ['--timeout-ms', flags.timeoutMs]] as const) {
          if (value !== undefined) throw conflicting('--credential-file', flag, 'a credential file needs no OpenAPI and no store');
        }
      }
      const rules = { apsaraMq: CONNECT_DEFAULTS.brokerIsApsaraMq, maxPayloadBytes: MAX_PAYLOAD_BYTES, persistentSession: false };
      if (flags.publish !== undefined) {
        checkTopicName(flags.publish, rules);
        checkPayload(flags.message ?? '', rules);
      }
      if (flags.subscribe !== undefined) checkTopicFilter(flags.subscribe, rules);
      const verbose = Boolean(command.optsWithGlobals()['verbose']);
      const logger = cliLogger(io, verbose);
      let source: CredentialSource;
      let sources: CredentialSources | undefined;
      if (flags.credentialFile !== undefined) {
        const credential = await readCredentialFile(flags.credentialFile, (message) => io.stderr(`warning: ${message}\n`));
        // The file decides who connects: a --client-id or --instance-id that says otherwise is a mix-up, not ignored.
        if (flags.clientId !== undefined && flags.clientId !== credential.clientId) {
          throw conflicting('--credential-file', '--client-id', `the file is the credential of ${credential.clientId}, not ${flags.clientId}`);
        }
        if (flags.instanceId !== undefined && flags.instanceId !== credential.instanceId) {
          throw conflicting('--credential-file', '--instance-id', `the file is a credential of instance ${credential.instanceId}, not ${flags.instanceId}`);
        }
        source = staticSource(credential);
      } else {
        if (flags.instanceId === undefined || flags.clientId === undefined) throw new UsageError('connect needs --instance-id and --client-id (or --credential-file)', 'MissingOption');
        if (flags.endpoint === undefined && flags.region === undefined) throw new UsageError('connect needs --endpoint URL or --region REGION to reach the OpenAPI (or --credential-file)', 'MissingOption');
        assertInstanceId(flags.instanceId);
        assertClientId(flags.clientId);
        sources = new CredentialSources(io, flags as CredentialFlags, 'connect without --credential-file (it calls the OpenAPI)');
        source = await sources.sourceFor(flags.clientId);
      }
      try {
        await connectAndRun(io, flags, source, logger);
      } finally {
        sources?.close(); // the registrar's keep-alive HTTP agent
      }
    });
}

/** The flags that say where a device's credential comes from (`connect`, `gateway`). */
export interface CredentialFlags {
  instanceId: string;
  endpoint?: string;
  region?: string;
  store?: string;
  timeoutMs?: number;
}

/**
 * Where the credentials of devices come from on the command line, as `connect` does it for one device and `gateway`
 * for many: the credential store first; a device whose credential is stored connects without account keys; otherwise
 * the registrar (one for all devices, made on first need): GetDeviceCredential, and RegisterDeviceCredential only for
 * a ClientId that has none (said on stderr: it is billed). After the broker refuses a key, the ladder takes a newer one
 * from the store, else the OpenAPI's.
 */
export class CredentialSources {
  readonly #io: CliIo;
  readonly #flags: CredentialFlags;
  readonly #store: FileCredentialStore;
  /** Undefined without --endpoint or --region: then only devices with a stored credential (and no account keys) connect. */
  readonly #endpoint: string | undefined;
  /** What needs the registrar, for the error when its package is not installed. */
  readonly #what: string;
  #registrar: Promise<Provisioner> | undefined;
  #provisioner: Provisioner | undefined;
  /** The checks before the first request (the store's modes, the endpoint answering), once. */
  #checked: Promise<void> | undefined;
  #closed = false;

  /** @throws the endpoint's and the instance id's validation errors, before any I/O. */
  constructor(io: CliIo, flags: CredentialFlags, what: string) {
    assertInstanceId(flags.instanceId);
    this.#what = what;
    this.#io = io;
    this.#flags = flags;
    this.#store = new FileCredentialStore(flags.store ?? defaultStoreDir(io.env));
    this.#endpoint = flags.endpoint === undefined && flags.region === undefined ? undefined : resolveEndpoint({ endpoint: flags.endpoint, region: flags.region });
  }

  /** The credential source of one device. */
  async sourceFor(clientId: string): Promise<CredentialSource> {
    const io = this.#io;
    const { instanceId } = this.#flags;
    const store = this.#store;
    const stored = await store.load(instanceId, clientId);
    // A device with its credential in the store needs no account key: it connects with what it has, and only a
    // refused credential would need the OpenAPI (then the error says so).
    if (stored && !hasAccountKeys(io.env)) return storeOnlySource(store, instanceId, clientId);
    if (this.#endpoint === undefined) {
      throw new UsageError(
        stored
          ? `${clientId} would call the OpenAPI (the account keys are set): pass --endpoint URL or --region REGION, or unset the keys to connect with the stored credential alone`
          : `${clientId} has no credential in the store ${store.dir}: pass --endpoint URL or --region REGION to fetch or register it`,
        'MissingOption',
      );
    }
    const registrar = await this.#registrarFor(this.#endpoint);
    if (!stored) {
      // Every local check (the account keys above, the store's modes and files here) before the first request;
      // then a dead or wrong endpoint fails in seconds, naming the flag, not after the retries of a Get.
      this.#checked ??= (async () => {
        await store.prepare(instanceId);
        await probeOpenApi(this.#endpoint as string, this.#flags.endpoint === undefined ? '--region' : '--endpoint', this.#flags.timeoutMs);
      })();
      await this.#checked;
    }
    const ladder = registrar.credentialSource(clientId);
    return async (request) => {
      if (request.reason !== 'connect') {
        // The broker refused the key: the ladder takes a newer one from the store, else the OpenAPI's. Said on
        // stderr like every credential the OpenAPI gives: a key changed under the device is news to its owner.
        const before = await store.load(instanceId, clientId);
        const credential = await ladder(request);
        const refused = `the broker refused the key ${request.rejected?.deviceAccessKeyId ?? 'in use'} of ${clientId}`;
        if (request.rejected && credential.sameKeyAs(request.rejected)) return credential; // nothing new: the connector says what fails
        if (before && credential.sameKeyAs(before)) io.stderr(`${refused}: connecting with the newer key ${credential.deviceAccessKeyId} from the store\n`);
        else io.stderr(`${refused}: fetched its current key ${credential.deviceAccessKeyId} from the OpenAPI and kept it in the store\n`);
        return credential;
      }
      // Say what was billed: a ClientId with a typo registers a new credential, and the user must see it.
      const { credential, origin } = await registrar.obtainCredential(clientId, request.signal === undefined ? {} : { signal: request.signal });
      if (origin === 'registered') io.stderr(`registered a new credential for ${clientId} (${credential.deviceAccessKeyId}): it had none on instance ${instanceId}\n`);
      else if (origin === 'fetched') io.stderr(`fetched the credential of ${clientId} from the OpenAPI and kept it in the store\n`);
      return credential;
    };
  }

  #registrarFor(endpoint: string): Promise<Provisioner> {
    this.#registrar ??= (async () => {
      const { Provisioner } = await loadProvisioner(this.#what);
      const registrar = new Provisioner({
        instanceId: this.#flags.instanceId,
        env: this.#io.env,
        retry: {}, // throttling and transient faults are retried with jittered backoff
        store: this.#store,
        endpoint,
        ...(this.#flags.timeoutMs === undefined ? {} : { timeoutMs: this.#flags.timeoutMs }),
      });
      this.#provisioner = registrar;
      if (this.#closed) registrar.close();
      return registrar;
    })();
    return this.#registrar;
  }

  /** Release the registrar's keep-alive HTTP agent. */
  close(): void {
    this.#closed = true;
    this.#provisioner?.close();
  }
}

/** Are the account keys in the environment (both halves)? */
function hasAccountKeys(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env[ENV_ACCESS_KEY_ID] && env[ENV_ACCESS_KEY_SECRET]);
}

/**
 * The store, and nothing else: for a device whose credential is stored and that has no account key. On a refusal it
 * reads the store again (another process may have refreshed it); the same key refused again ends the ladder.
 */
function storeOnlySource(store: FileCredentialStore, instanceId: string, clientId: string): CredentialSource {
  return async (request) => {
    const credential = await store.load(instanceId, clientId);
    if (!credential) throw new StoreError('StoreIOError', `The credential of ${clientId} is no longer in the store ${store.dir}`);
    if (request.reason === 'rejected' && request.rejected && credential.sameKeyAs(request.rejected)) {
      throw new ConfigurationError('MissingAccessKey', `The broker refused the stored credential of ${clientId}, and without ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET connect cannot fetch a new one`);
    }
    return credential;
  };
}

/** Connect, then publish once or print what arrives. */
async function connectAndRun(io: CliIo, flags: ConnectFlags, source: CredentialSource, logger: ReturnType<typeof cliLogger>): Promise<void> {
  const ca = await readCaFlag(flags.ca);
  // Ctrl+C (or SIGTERM) at any point ends the connection: the signal is its lifetime.
  const controller = new AbortController();
  let interruptedBy: NodeJS.Signals | void | undefined;
  void io.interrupted().then((signal) => {
    interruptedBy = signal ?? 'SIGINT';
    controller.abort(new Error('interrupted'));
  });
  const stopped = (what: string): Interrupted => {
    io.stderr(`interrupted: ${what}\n`);
    return new Interrupted(interruptedBy);
  };
  let connection: DeviceConnection;
  try {
    connection = await connectDevice({
      credential: source,
      transport: flags.transport,
      logger,
      signal: controller.signal,
      ...(flags.brokerUrl === undefined ? {} : { brokerUrl: flags.brokerUrl }),
      ...(ca === undefined ? {} : { ca }),
      ...(flags.insecure ? { rejectUnauthorized: false } : {}),
    });
  } catch (error) {
    if (interruptedBy !== undefined) throw stopped('before the device was connected');
    throw error;
  }
  connection.on('takeover', ({ confirmed }) => {
    io.stderr(
      `takeover: ${confirmed ? 'another client took over' : 'another client probably took over'} the session of ${connection.clientId} (every device needs its own ClientId); reconnecting with a longer delay\n`,
    );
  });
  try {
    if (flags.publish !== undefined) {
      try {
        await connection.publish(flags.publish, flags.message ?? '', { qos: flags.qos as QoS });
      } catch (error) {
        if (interruptedBy !== undefined) throw stopped(`the message to ${flags.publish} was not ${flags.qos > 0 ? 'acknowledged' : 'sent'}`);
        throw error;
      }
      io.stderr(`published to ${flags.publish} as ${connection.clientId}\n`);
    } else {
      const received = await subscribeAndPrint(connection, io, flags, controller.signal);
      if (interruptedBy !== undefined) throw stopped(`${received} message${received === 1 ? '' : 's'} received on ${flags.subscribe}${flags.count === undefined ? '' : ` of the ${flags.count} asked for`}`);
    }
  } finally {
    await connection.end();
  }
}

/** Subscribe and print what arrives until `--count` messages, the connection closes, or `stop` fires; the count. */
async function subscribeAndPrint(connection: DeviceConnection, io: CliIo, flags: ConnectFlags, stop: AbortSignal): Promise<number> {
  const topic = flags.subscribe ?? '';
  let received = 0;
  let finish: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    finish = resolve;
  });
  connection.on('message', (t, payload) => {
    if (flags.count !== undefined && received >= flags.count) return;
    received += 1;
    io.stdout(flags.json ? jsonLine({ topic: t, payload: payload.toString('utf8') }) : `${payload.toString('utf8')}\n`);
    if (flags.count !== undefined && received >= flags.count) finish();
  });
  let failure: unknown;
  connection.on('closed', ({ error }) => {
    failure = error;
    finish();
  });
  stop.addEventListener('abort', () => finish(), { once: true });
  // The reader of stdout is gone (`| head -1` has its line): nobody would see another message, so stop quietly.
  void io.stdoutClosed?.().then(finish);
  try {
    await connection.subscribe(topic, { qos: flags.qos as QoS });
  } catch (error) {
    if (stop.aborted) return received; // interrupted while subscribing: the caller says so
    throw error;
  }
  io.stderr(`subscribed to ${topic} as ${connection.clientId}\n`);
  await done;
  if (failure && !stop.aborted) throw failure;
  return received;
}
