import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { brokerUrlFor } from '../../connector/connect.js';
import { isApsaraMqDeviceError, ValidationError } from '../../errors.js';
import { defaultStoreDir } from '../../provisioner/env.js';
import { FileCredentialStore } from '../../provisioner/file-store.js';
import type { SimulationProgress } from '../../simulator/metrics.js';
import { SIMULATION_DEFAULTS, resolveSettings, type SimulationSettings } from '../../simulator/options.js';
import { loadReports, loadSimulator } from '../roles.js';
import type { SimulationTarget } from '../../simulator/target.js';
import { type CliIo, UsageError, choiceArg, intArg, jsonLine } from '../io.js';

interface SimulateFlags {
  devices: number;
  groupId: string;
  connectRate: number;
  publishInterval: number;
  qos: number;
  payloadSize: number;
  topic: string;
  duration: number;
  subscribe?: boolean;
  shard?: string;
  startAt?: string;
  localAddress?: string;
  protocol: number;
  report?: string;
  html?: string;
  json?: boolean;
  endpoint?: string;
  region?: string;
  instanceId?: string;
  brokerUrl?: string;
  transport: 'tcp' | 'tls';
  store?: string;
  ca?: string;
  insecure?: boolean;
  apiQps: number;
  apiConcurrency: number;
  maxConnecting: number;
  progress: boolean;
}

const D = SIMULATION_DEFAULTS;
/** Non-TTY progress: one line this often. */
const PROGRESS_LINE_MS = 5_000;

/** Register `simulate`: a device fleet against the real service or an embedded emulator. */
export function addSimulateCommand(program: Command, io: CliIo): void {
  program
    .command('simulate')
    .description('Simulate a device fleet: provision each device\'s credential, connect at a paced rate, publish, and report latency percentiles. Without --endpoint/--region it runs against an embedded emulator (no account, no network).')
    .option('--devices <n>', 'devices in the whole fleet (all shards)', intArg('--devices', 1, 1_000_000), D.devices)
    .option('--group-id <gid>', 'GroupId of the ClientIds <gid>@@@sim-<index>', D.groupId)
    .option('--connect-rate <r>', 'CONNECTs started per second, fleet-wide, jittered (0 = as fast as possible)', intArg('--connect-rate', 0, 1_000_000), D.connectRate)
    .option('--publish-interval <ms>', 'milliseconds between two messages of one device (0 = connect only)', intArg('--publish-interval', 0, 3_600_000), D.publishIntervalMs)
    .option('--qos <n>', 'QoS of the messages and subscriptions', intArg('--qos', 0, 1), D.qos)
    .option('--payload-size <bytes>', 'bytes per message, 8 (the send time) to 65536', intArg('--payload-size', 8, 65_536), D.payloadSize)
    .option('--topic <template>', 'topic per device: %c ClientId, %i index, %g GroupId, %% a %', D.topic)
    .option('--duration <s>', 'seconds from the start of connecting until devices stop publishing (the run waits for every device to try)', intArg('--duration', 0, 7 * 86_400), D.durationMs / 1_000)
    .option('--subscribe', 'each device also subscribes to its own topic, so end-to-end latency is measured')
    .option('--shard <I/N>', 'simulate only slice I of N (1-based) of the fleet, so several processes or machines share one run')
    .option('--start-at <time>', 'start connecting at this ISO 8601 time with a zone (after provisioning), so shards on several machines start together')
    .option('--local-address <list>', 'source addresses to spread the devices over: a list (127.0.0.2,127.0.0.3) or IPv4 ranges (127.0.0.2-127.0.0.9)')
    .option('--protocol <level>', 'MQTT protocol level of the devices: 4 (3.1.1); 5 is refused until the emulator speaks MQTT 5', intArg('--protocol', 3, 5), 4)
    .option('--report <file>', 'also write the JSON report to this file (mergeable with report merge)')
    .option('--html <file>', 'also write the HTML report (one self-contained file) to this file')
    .option('--json', 'print the JSON report on stdout')
    .option('--endpoint <url>', 'OpenAPI endpoint of the real service (or of an emulator you started)')
    .option('--region <region>', 'region of the OpenAPI endpoint https://onsmqtt.<region>.aliyuncs.com')
    .option('--instance-id <id>', 'instance id (with --endpoint or --region)')
    .option('--broker-url <url>', 'mqtt:// or mqtts:// broker (default <instance-id>.mqtt.aliyuncs.com on the transport\'s port)')
    .option('--transport <t>', 'tcp (1883) or tls (8883); ignored with --broker-url', choiceArg('--transport', ['tcp', 'tls'] as const), 'tcp')
    .option('--store <dir>', 'credential store with --endpoint/--region (default $APSARAMQ_DEVICE_STORE, else ~/.config/apsaramq-device/credentials)')
    .option('--ca <file>', 'CA certificate for an mqtts:// broker')
    .option('--insecure', 'do not verify the broker\'s TLS certificate')
    .option('--api-qps <n>', 'OpenAPI calls per second while provisioning (also the embedded emulator\'s limit)', intArg('--api-qps', 1, 1_000_000), D.apiQps)
    .option('--api-concurrency <n>', 'OpenAPI calls in flight while provisioning', intArg('--api-concurrency', 1, 10_000), D.apiConcurrency)
    .option('--max-connecting <n>', 'CONNECTs awaiting their CONNACK at once', intArg('--max-connecting', 1, 1_000_000), D.maxConnectsInFlight)
    .option('--no-progress', 'no live progress on stderr')
    .addHelpText(
      'after',
      `
Defaults: ${D.devices} devices, ${D.durationMs / 1_000} s, ${D.connectRate} connects/s, a ${D.payloadSize}-byte QoS ${D.qos} message per device every
${D.publishIntervalMs} ms on ${D.topic}, against an emulator started for the run in its own process (\`npm start\` runs exactly this).

Against the real service: --endpoint or --region, --instance-id, and the account keys in ALIBABA_CLOUD_ACCESS_KEY_ID
and ALIBABA_CLOUD_ACCESS_KEY_SECRET. Credentials are kept in the store (a device is registered once, never again),
fetched at --api-qps. The GroupId and the topic's parent (first level) must exist on the instance.

With --shard, every process gets the same flags but its own I: the connect rate is fleet-wide and each shard takes
its share; --start-at makes them start connecting together, and \`apsaramq-device report merge\` combines their
--report files into the fleet's exact percentiles and series. Each device needs one socket: for thousands of
devices raise the open-file limit (ulimit -n 65536). One source address reaches one broker port over at most the
ephemeral port range (about 28,000 ports): beyond that, --local-address spreads devices over several addresses.

The report (--json, --report): format, run {parameters, version, startedAt, startAt, target}, shards, devices,
provisioned, connected, failedConnects, connectRatePerSec, connectLatencyMs {p50,p95,p99,max}, published, acked,
delivered, publishRatePerSec, e2eLatencyMs {p50,p95,p99,max}, errors {code: n}, reconnects, peakRssMB, elapsedMs,
windows, histograms (HdrHistogram, lossless), series (per second). --html writes it as a page with charts.
Exit code 1 (SimulationFailed, TooManyOpenFiles) when a device did not connect.

Examples:
  $ apsaramq-device simulate
  $ apsaramq-device simulate --devices 10000 --connect-rate 500 --duration 30 --publish-interval 5000 --json
  $ apsaramq-device simulate --devices 2000 --shard 1/2 --region cn-hangzhou --instance-id mqtt-cn-xxx \\
      --group-id GID_load --topic load/%i --subscribe --start-at 2026-12-01T10:00:00Z --report shard1.json
  $ apsaramq-device report merge shard1.json shard2.json --html fleet.html
  $ apsaramq-device simulate --devices 40000 --local-address 127.0.0.2-127.0.0.3 --html run.html`,
    )
    .action(async (flags: SimulateFlags) => {
      if (flags.protocol === 5) {
        throw new ValidationError('InvalidOption', '--protocol 5: MQTT 5 devices are not supported yet (the emulator does not speak MQTT 5 yet); use --protocol 4 (MQTT 3.1.1)');
      }
      if (flags.protocol !== 4) throw new ValidationError('InvalidOption', `--protocol ${flags.protocol}: the simulator speaks MQTT 3.1.1 (--protocol 4)`);
      const settings: SimulationSettings = {
        devices: flags.devices,
        groupId: flags.groupId,
        connectRate: flags.connectRate,
        publishIntervalMs: flags.publishInterval,
        qos: flags.qos as 0 | 1,
        payloadSize: flags.payloadSize,
        topic: flags.topic,
        durationMs: flags.duration * 1_000,
        subscribe: Boolean(flags.subscribe),
        apiQps: flags.apiQps,
        apiConcurrency: flags.apiConcurrency,
        maxConnectsInFlight: flags.maxConnecting,
        ...(flags.shard === undefined ? {} : { shard: flags.shard }),
        ...(flags.startAt === undefined ? {} : { startAt: flags.startAt }),
        ...(flags.localAddress === undefined ? {} : { localAddress: flags.localAddress }),
      };
      try {
        resolveSettings(settings);
      } catch (error) {
        // A flag that can never work is a usage error (exit 2), whichever check caught it.
        if (error instanceof ValidationError) throw new UsageError(error.message);
        throw error;
      }
      const target = await targetOf(flags, io);
      const stop = new AbortController();
      void io.interrupted().then(() => stop.abort());
      const progress = flags.progress ? progressPrinter(io, io.stderrIsTTY === true) : undefined;
      const { runSimulation, simulationFailure } = await loadSimulator('simulate');
      const { formatReport, renderReportHtml, writeFileWhole } = await loadReports('simulate');
      const report = await runSimulation({
        ...settings,
        signal: stop.signal,
        onWarning: (message) => io.stderr(`warning: ${message}\n`),
        ...(target === undefined ? {} : { target }),
        ...(progress === undefined ? {} : { onProgress: progress }),
      });
      if (progress) progress('end');
      io.stderr(formatReport(report));
      if (flags.report !== undefined) await writeOutput(writeFileWhole, '--report', flags.report, `${JSON.stringify(report, null, 2)}\n`);
      if (flags.html !== undefined) await writeOutput(writeFileWhole, '--html', flags.html, renderReportHtml(report));
      if (flags.json) io.stdout(jsonLine(report));
      const failure = simulationFailure(report);
      if (failure) throw failure;
    });
}

/** The real service (or a running emulator) when --endpoint or --region is given; `undefined` for the embedded emulator. */
async function targetOf(flags: SimulateFlags, io: CliIo): Promise<SimulationTarget | undefined> {
  const remote = flags.endpoint !== undefined || flags.region !== undefined;
  if (!remote) {
    const stray = (['instanceId', 'brokerUrl', 'store', 'ca'] as const).filter((k) => flags[k] !== undefined);
    if (stray.length > 0) {
      const flagsText = stray.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ');
      throw new UsageError(`${flagsText} ${stray.length === 1 ? 'needs' : 'need'} --endpoint or --region (without them the run uses an embedded emulator)`);
    }
    return undefined;
  }
  if (flags.instanceId === undefined) throw new UsageError('simulate with --endpoint or --region needs --instance-id');
  let brokerUrl: string;
  try {
    brokerUrl = brokerUrlFor(flags.instanceId, flags.transport, flags.brokerUrl);
  } catch (error) {
    if (error instanceof ValidationError) throw new UsageError(error.message);
    throw error;
  }
  let ca: Buffer | undefined;
  if (flags.ca !== undefined) {
    ca = await readFile(flags.ca).catch(() => {
      throw new ValidationError('InvalidOption', `Cannot read --ca file ${flags.ca}`);
    });
  }
  return {
    brokerUrl,
    strategy: 'get-first',
    provisioner: {
      instanceId: flags.instanceId,
      env: io.env,
      store: new FileCredentialStore(flags.store ?? defaultStoreDir(io.env)),
      ...(flags.endpoint === undefined ? {} : { endpoint: flags.endpoint }),
      ...(flags.region === undefined ? {} : { region: flags.region }),
    },
    ...(ca === undefined ? {} : { ca }),
    ...(flags.insecure ? { rejectUnauthorized: false } : {}),
  };
}

/** Write an output file whole, or fail with InvalidOption naming its flag. */
export async function writeOutput(write: (file: string, text: string) => Promise<void>, flag: string, file: string, text: string): Promise<void> {
  try {
    await write(file, text);
  } catch (error) {
    const reason = isApsaraMqDeviceError(error) ? error.message : error instanceof Error ? error.message : String(error);
    throw new ValidationError('InvalidOption', `Cannot write ${flag} file ${file}: ${reason}`);
  }
}

/**
 * Live progress on stderr: a bar redrawn in place on a TTY; otherwise a line at each phase change and every few
 * seconds, so logs stay readable. Call with `'end'` to finish the bar's line.
 */
function progressPrinter(io: CliIo, tty: boolean): (progress: SimulationProgress | 'end') => void {
  let lastPhase = '';
  let lastLineAt = Number.NEGATIVE_INFINITY;
  let drawn = false;
  return (progress) => {
    if (progress === 'end') {
      if (drawn) io.stderr('\n');
      return;
    }
    const seconds = `${Math.floor(progress.elapsedMs / 1_000)}s`;
    const provisioning = progress.phase === 'provisioning';
    const counts = provisioning
      ? `${progress.provisioned}/${progress.devices} provisioned, ${progress.errors} errors`
      : `${progress.online}/${progress.devices} connected, ${progress.messagesPerSec} msg/s, ${progress.errors} errors`;
    if (tty) {
      const width = 24;
      const done = provisioning ? progress.provisioned : progress.online;
      const filled = Math.round((done / Math.max(1, progress.devices)) * width);
      io.stderr(`\r\x1b[K[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${counts} · ${progress.phase} ${seconds}`);
      drawn = true;
      return;
    }
    if (progress.phase === lastPhase && progress.elapsedMs - lastLineAt < PROGRESS_LINE_MS) return;
    lastPhase = progress.phase;
    lastLineAt = progress.elapsedMs;
    io.stderr(`[${seconds}] ${progress.phase}: ${counts}\n`);
  };
}
