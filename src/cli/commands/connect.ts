import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { IClientPublishOptions } from 'mqtt';
type QoS = NonNullable<IClientPublishOptions['qos']>;
import { connectDevice, type DeviceConnection, type Transport } from '../../connector/connect.js';
import { CONNECT_DEFAULTS } from '../../connector/options.js';
import { MAX_PAYLOAD_BYTES, checkPayload, checkTopicFilter, checkTopicName } from '../../connector/validate.js';
import { assertClientId, assertInstanceId, type CredentialSource } from '../../credential.js';
import { ValidationError } from '../../errors.js';
import { defaultStoreDir } from '../../provisioner/env.js';
import { FileCredentialStore } from '../../provisioner/file-store.js';
import type { Provisioner } from '../../provisioner/provisioner.js';
import { loadProvisioner } from '../roles.js';
import { staticSource } from '../../connector/connect.js';
import { type CliIo, UsageError, choiceArg, cliLogger, intArg, jsonLine } from '../io.js';
import { readCredentialFile } from './sign.js';

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
    .addHelpText(
      'after',
      `
Without --credential-file this is the registrar path: it needs the account keys (ALIBABA_CLOUD_ACCESS_KEY_ID,
ALIBABA_CLOUD_ACCESS_KEY_SECRET), looks in the store first, then GetDeviceCredential, and registers only a ClientId
that has no credential yet. The credential is kept in the store, so the next run makes no API call.

Examples:
  $ apsaramq-device connect --endpoint http://127.0.0.1:8080 --broker-url mqtt://127.0.0.1:1883 \\
      --instance-id mqtt-emu-1 --client-id GID_demo@@@dev-1 --publish demo/hello --message hi
  $ apsaramq-device connect --credential-file dev-1.json --broker-url mqtt://127.0.0.1:1883 --subscribe 'demo/#' --count 1`,
    )
    .action(async (flags: ConnectFlags, command: Command) => {
      if ((flags.publish === undefined) === (flags.subscribe === undefined)) throw new UsageError('connect needs exactly one of --publish TOPIC or --subscribe TOPIC');
      if (flags.publish !== undefined && flags.message === undefined) throw new UsageError('--publish needs --message TEXT');
      // A message the service would refuse is refused here, before any I/O (exit 2), not after connecting.
      const rules = { apsaraMq: CONNECT_DEFAULTS.brokerIsApsaraMq, maxPayloadBytes: MAX_PAYLOAD_BYTES, persistentSession: false };
      if (flags.publish !== undefined) {
        checkTopicName(flags.publish, rules);
        checkPayload(flags.message ?? '', rules);
      }
      if (flags.subscribe !== undefined) checkTopicFilter(flags.subscribe, rules);
      const verbose = Boolean(command.optsWithGlobals()['verbose']);
      const logger = cliLogger(io, verbose);
      let source: CredentialSource;
      let provisioner: Provisioner | undefined;
      if (flags.credentialFile !== undefined) {
        source = staticSource(await readCredentialFile(flags.credentialFile));
      } else {
        if (flags.instanceId === undefined || flags.clientId === undefined) throw new UsageError('connect needs --instance-id and --client-id (or --credential-file)');
        if (flags.endpoint === undefined && flags.region === undefined) throw new UsageError('connect needs --endpoint URL or --region REGION to reach the OpenAPI (or --credential-file)');
        assertInstanceId(flags.instanceId);
        assertClientId(flags.clientId);
        const { Provisioner } = await loadProvisioner('connect without --credential-file (it calls the OpenAPI)');
        provisioner = new Provisioner({
          instanceId: flags.instanceId,
          env: io.env,
          retry: {}, // throttling and transient faults are retried with jittered backoff
          store: new FileCredentialStore(flags.store ?? defaultStoreDir(io.env)),
          ...(flags.endpoint === undefined ? {} : { endpoint: flags.endpoint }),
          ...(flags.region === undefined ? {} : { region: flags.region }),
        });
        source = provisioner.credentialSource(flags.clientId);
      }
      try {
        await connectAndRun(io, flags, source, logger);
      } finally {
        provisioner?.close(); // its keep-alive HTTP agent
      }
    });
}

/** Connect, then publish once or print what arrives. */
async function connectAndRun(io: CliIo, flags: ConnectFlags, source: CredentialSource, logger: ReturnType<typeof cliLogger>): Promise<void> {
  let ca: Buffer | undefined;
  if (flags.ca !== undefined) {
    ca = await readFile(flags.ca).catch(() => {
      throw new ValidationError('InvalidOption', `Cannot read --ca file ${flags.ca}`);
    });
  }
  const connection = await connectDevice({
    credential: source,
    transport: flags.transport,
    logger,
    ...(flags.brokerUrl === undefined ? {} : { brokerUrl: flags.brokerUrl }),
    ...(ca === undefined ? {} : { ca }),
    ...(flags.insecure ? { rejectUnauthorized: false } : {}),
  });
  connection.on('takeover', ({ confirmed }) => {
    io.stderr(
      `takeover: ${confirmed ? 'another client took over' : 'another client probably took over'} the session of ${connection.clientId} (every device needs its own ClientId); reconnecting with a longer delay\n`,
    );
  });
  try {
    if (flags.publish !== undefined) {
      await connection.publish(flags.publish, flags.message ?? '', { qos: flags.qos as QoS });
      io.stderr(`published to ${flags.publish} as ${connection.clientId}\n`);
    } else {
      await subscribeAndPrint(connection, io, flags);
    }
  } finally {
    await connection.end();
  }
}

async function subscribeAndPrint(connection: DeviceConnection, io: CliIo, flags: ConnectFlags): Promise<void> {
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
  await connection.subscribe(topic, { qos: flags.qos as QoS });
  io.stderr(`subscribed to ${topic} as ${connection.clientId}\n`);
  await Promise.race([done, io.interrupted()]);
  if (failure) throw failure;
}
