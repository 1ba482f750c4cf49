import { lookup } from 'node:dns/promises';
import { join } from 'node:path';
import type { Command, Option } from 'commander';
import { brokerUrlFor } from '../../connector/connect.js';
import { isApsaraMqDeviceError, NetworkError, ValidationError } from '../../errors.js';
import { resolveEndpoint } from '../../provisioner/endpoint.js';
import { defaultStoreDir } from '../../provisioner/env.js';
import type { SimulationProgress } from '../../simulator/metrics.js';
import { parseBrokerUrl } from '../../simulator/device.js';
import { checkAddressSpace } from '../../simulator/local-address.js';
import { type ResolvedSettings, SIMULATION_DEFAULTS, type Shard, checkStartAt, expandTopic, parseShard, resolveSettings, simulatedClientId, type SimulationSettings } from '../../simulator/options.js';
import { MAX_PAYLOAD_BYTES, checkTopicName } from '../../connector/validate.js';
import { resolveBrokerOptions } from '../../emulator/broker-options.js';
import { loadReports, loadSimulator, loadThresholds } from '../roles.js';
import { readScenarioFile, type Scenario } from '../../simulator/scenario.js';
import { planGameDay } from '../../simulator/game-day-plan.js';
import { InvalidScenarioError } from '../../simulator/errors.js';
import type { SimulationTarget } from '../../simulator/target.js';
import type { SimulationReport } from '../../simulator/report-format.js';
import type { OutboxStore } from '../../outbox/store.js';
import { type CliIo, Interrupted, UsageError, readCaFlag, checkOutputFile, choiceArg, exampleStartAt, intArg, jsonLine } from '../io.js';
import { CheckedEndpointStore, EndpointCheck } from '../endpoint-check.js';
import { Progress } from '../progress.js';
import { SHARD_CHILD_ENV, runInProcesses, shardChildHooks } from '../simulate-processes.js';
import { REDIS_MODE_ENV, checkRedisFlags, clusterMode, clusterTarget, resolveShardFlag } from '../simulate-cluster.js';
import { shownRedisUrl } from '../../emulator/cluster/redis.js';

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
  protocol: 4 | 5;
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
  processes: number;
  redis?: string;
  scenario?: string;
  client: 'raw' | 'connector';
  consumer?: boolean;
  backlogTimeout: number;
  outbox?: string;
  failOn?: string[];
}

const D = SIMULATION_DEFAULTS;

/** `--protocol`: the MQTT protocol level, 4 or 5 (a usage error otherwise). */
const protocolArg = (value: string): 4 | 5 => (choiceArg('--protocol', ['4', '5'] as const)(value.trim()) === '5' ? 5 : 4);
/** Non-TTY progress: one line this often. */
const PROGRESS_LINE_MS = 5_000;

/** Register `simulate`: a device fleet against the real service or an embedded emulator. */
export function addSimulateCommand(program: Command, io: CliIo): void {
  const startAt = exampleStartAt();
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
    .option('--shard <I/N>', 'simulate only slice I of N (1-based) of the fleet, so several processes or machines share one run; auto/N takes I from JOB_COMPLETION_INDEX + 1 (a Kubernetes Indexed Job)')
    .option('--start-at <time>', 'start connecting at this ISO 8601 time with a zone (after provisioning; not past, at most 7 days ahead), so shards on several machines start together')
    .option('--local-address <list>', 'source addresses to spread the devices over: a list (127.0.0.2,127.0.0.3) or IPv4 ranges (127.0.0.2-127.0.0.9)')
    .option('--protocol <level>', 'MQTT protocol level of the devices: 4 (MQTT 3.1.1) or 5 (MQTT 5)', protocolArg, D.protocol)
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
    .option('--processes <n>', 'spread the run (or its --shard) over n local processes started together and merged, each with its own embedded emulator', intArg('--processes', 1, 64), 1)
    .option('--redis <url>', 'run against the emulator cluster on this Redis (one logical broker): its running processes (shard I on process (I-1) mod M), else an emulator process per shard that joins it')
    .option('--scenario <file>', 'a game day: play the faults of this JSON (or YAML) file during the run and report each one\'s time to heal (see scenarios/)')
    .option('--client <kind>', 'what each device is: raw (the simulator\'s raw-socket device, for scale) or connector (the library\'s DeviceConnection)', choiceArg('--client', ['raw', 'connector'] as const), D.client)
    .option('--consumer', 'a backend subscriber counts every message: delivered, held, queued, lost, duplicated (on with --scenario)')
    .option('--no-consumer', 'no backend subscriber, even with --scenario')
    .option('--backlog-timeout <s>', 'seconds to wait after the run while the backend subscriber\'s backlog at the broker drains (a paced one after a broker restart); what is still queued then counts as queued, not lost (0 = no wait; Ctrl+C ends it; with a backend subscriber and --qos 1)', intArg('--backlog-timeout', 0, 600), D.backlogTimeoutMs / 1_000)
    .option('--outbox <dir>', 'with --client connector: every device keeps its messages in a durable outbox in this directory (with --processes, DIR/shard-<i> each); use a fresh one per run')
    .option('--fail-on <threshold>', 'exit 1 when a threshold holds: METRIC OP VALUE, e.g. lost>0, heal.p99>30s, errors>0, duplicates>10 (repeat, or a comma list)', (value: string, previous: string[] | undefined) => [...(previous ?? []), value])
    .option('--no-progress', 'no live progress on stderr')
    .addHelpText(
      'after',
      `
Defaults: ${D.devices} devices, ${D.durationMs / 1_000} s, ${D.connectRate} connects/s, a ${D.payloadSize}-byte QoS ${D.qos} message per device every
${D.publishIntervalMs} ms on ${D.topic}, against an emulator started for the run in its own process (\`npm start\` runs exactly this).

Against the real service: --endpoint or --region, --instance-id, and the account keys in ALIBABA_CLOUD_ACCESS_KEY_ID
and ALIBABA_CLOUD_ACCESS_KEY_SECRET. Credentials are kept in the store (a device is registered once, never again),
fetched at --api-qps. The GroupId and the topic's parent (first level) must exist on the instance.

--protocol 5 makes every device an MQTT 5 client (Clean Start, session expiry 0, no properties sent). Its refusals
are counted with their reason code (CredentialRejected:0x86, SubscribeRejected:0x87, PublishRejected:0x87 for a
DISCONNECT refusing its messages, after which the device stays off) and the broker's Reason String is shown once
per code on stderr.

With --shard, every process gets the same flags but its own I: the connect rate is fleet-wide and each shard takes
its share; --start-at makes them start connecting together, and \`apsaramq-device report merge\` combines their
--report files into the fleet's exact percentiles and series.

--processes <n> does that on this machine in one command: n processes of this CLI, shards 1/n to n/n, each with
its own embedded emulator (or all against --endpoint/--region); devices only use their own topics, so the run
measures the same things. Every shard provisions, then all start connecting at the same moment; one progress, and
the merged report is the result (summary, --json, --report, --html, exit code), with the fleet's exact percentiles.
No process holds more than its share of sockets, and the run uses more than one core. With --shard I/N too, the
n processes split slice I (they are shards (I-1)*n+1 to I*n of N*n) and the report is that slice's, mergeable with
the other slices' by report merge. With --start-at the shards wait for that time instead of each other. A shard that ends without its
report stops the others and fails the run (ShardFailed, naming it and quoting its stderr).

Game days: --scenario FILE plays a timeline of faults, each "at" seconds from the start of connecting:
broker-restart (the embedded emulator's broker; count, every, down), partition (a share or a list of devices lose
their network for "for" seconds, through a fault relay this process runs: connections reset, new ones refused),
latency (ms added each way) and bandwidth (bytes per second), revoke (devices' credentials refreshed or unregistered,
their sessions dropped: they climb the ladder store, GetDeviceCredential, RegisterDeviceCredential), api-faults (a
rate of the OpenAPI's calls fail with codes, for seconds). A backend subscriber, connected to the broker directly,
counts every message by the device index and sequence in its payload. The summary and the report give, per fault,
when it started and ended, the devices it hit, their time to heal (p50, p99, max, from the fault's end; a device not
back by the end is "not healed", the first 10 named with their CONNECTs since and their backoff) and what became of
their messages (lost; held: still in the outbox of a device not back at the end); the HTML report marks each fault on
its charts. When the backend subscriber still misses messages after the run (its persistent session's backlog after a
broker restart, which an emulator paces as the cloud does by default: a first batch 5 to 10 s after it is back, then 30
every 5 s), the run waits up to --backlog-timeout seconds while it drains; what the broker still queues for it then is
counted queued (read from the emulator's GET /_emulator/queue), not lost; when that queue cannot be read (the cloud) what
the broker acknowledged and did not deliver is counted maybeQueued if the subscriber lost its connection during the run. A game day against an emulator given by --endpoint
that paces or bounds its queues says so before it starts.
--client connector runs each device as the library's DeviceConnection (its defaults: reconnect backoff 1 to 60 s, an
in-memory outbox) instead of the raw-socket device; a raw device drops what it is handed while offline. With
--outbox DIR too, every device keeps its messages in the durable outbox (store and forward) in DIR, one store per
process (with --processes, DIR/shard-<i> for shard i): accepted once on disk, kept until the broker acknowledged
them. What the devices still hold when the run ends stays there (the summary says how many); a run on the same
directory would send it again, so give each run a fresh one.
--fail-on METRIC OP VALUE fails the run (exit 1, ThresholdExceeded) when it holds: lost, held, queued, maybe-queued,
delivered, duplicates, duplicated, refused, published, acked, connected, failed-connects, reconnects, errors,
errors.CODE, hit, offline-at-start, not-healed, heal.p50|p95|p99|max, connect.…, e2e.… (times in ms, s or m). Without it, a run whose
devices published and got not one message through fails too (NothingPublished, naming what the broker did instead).

Each device needs one socket: for thousands of devices raise the open-file limit (ulimit -n 65536). One source
address reaches one broker port over at most the ephemeral port range (about 28,000 ports): beyond that, --local-address spreads devices over several addresses.

The report (--json, --report): format, run {parameters, version, startedAt, startAt, target}, shards, devices,
provisioned, connected, failedConnects, connectRatePerSec, connectLatencyMs {p50,p95,p99,max}, published, acked,
delivered, publishRatePerSec, e2eLatencyMs {p50,p95,p99,max}, errors {code: n}, reconnects, peakRssMB, elapsedMs,
windows, histograms (HdrHistogram, lossless), series (per second). --html writes it as a page with charts.
Exit code 1 (SimulationFailed, TooManyOpenFiles) when a device did not connect.

Examples:
  $ apsaramq-device simulate
  $ apsaramq-device simulate --devices 10000 --connect-rate 500 --duration 30 --publish-interval 5000 --json
  $ apsaramq-device simulate --devices 2000 --shard 1/2 --region cn-hangzhou --instance-id mqtt-cn-xxx \\
      --group-id GID_load --topic load/%i --subscribe --start-at ${startAt} --report shard1.json
  $ apsaramq-device report merge shard1.json shard2.json --html fleet.html
  $ apsaramq-device simulate --devices 40000 --local-address 127.0.0.2-127.0.0.3 --html run.html
  $ apsaramq-device simulate --devices 1000 --duration 90 --client connector --scenario scenarios/broker-maintenance.json \\
      --fail-on 'not-healed>0,heal.p99>60s' --html gameday.html`,
    )
    .action(async (flags: SimulateFlags, command: Command) => {
      // A Kubernetes Indexed Job's pod: --shard auto/N is I/N with I from JOB_COMPLETION_INDEX.
      const shard = resolveShardFlag(flags.shard, io.env);
      if (shard !== undefined) flags.shard = shard;
      if (flags.redis !== undefined) await checkRedisFlags(flags);
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
        protocol: flags.protocol,
        client: flags.client,
        backlogTimeoutMs: flags.backlogTimeout * 1_000,
        ...(flags.consumer === undefined ? {} : { consumer: flags.consumer }),
        ...(flags.shard === undefined ? {} : { shard: flags.shard }),
        ...(flags.startAt === undefined ? {} : { startAt: flags.startAt }),
        ...(flags.localAddress === undefined ? {} : { localAddress: flags.localAddress }),
      };
      let outerShard: Shard | undefined;
      let resolved: ResolvedSettings;
      let thresholds: ReturnType<typeof parseThresholds> = [];
      // The scenario is read first: a file that cannot be played is InvalidScenario (exit 2) before anything starts.
      const scenario: Scenario | undefined = flags.scenario === undefined ? undefined : await readScenarioFile(flags.scenario);
      const outboxDir = outboxDirOf(flags, io.env);
      const { parseThresholds, checkThresholds, needsConsumer, needsScenario } = await loadThresholds('simulate');
      try {
        resolved = resolveSettings(settings);
        checkTopicFlag(resolved);
        if (flags.failOn !== undefined) thresholds = parseThresholds(flags.failOn);
        const tls = flags.brokerUrl !== undefined ? /^(mqtts|tls|ssl):/i.test(flags.brokerUrl.trim()) : (flags.endpoint !== undefined || flags.region !== undefined) && flags.transport === 'tls';
        planGameDay(resolved, scenario, flags.scenario, tls);
        const consumer = resolved.consumer ?? scenario !== undefined;
        for (const t of thresholds) {
          if (needsScenario(t) && !scenario) throw new UsageError(`--fail-on ${t.text} needs a game day: add --scenario FILE`);
          if (needsConsumer(t) && !consumer) throw new UsageError(`--fail-on ${t.text} needs the backend subscriber that counts deliveries: add --consumer (or --scenario, without --no-consumer)`);
        }
        if (flags.processes > 1) {
          const share = resolved.range[1] - resolved.range[0];
          const of = flags.shard === undefined ? `--devices ${flags.devices}` : `the ${share} devices of --shard ${flags.shard}`;
          if (flags.processes > share) throw new UsageError(`--processes ${flags.processes} is more than ${of}: every process needs at least one device`);
          // A shard process would refuse a --start-at already past only once started: say it here, like one process does.
          if (resolved.startAtMs !== null) checkStartAt(resolved.startAtMs, Date.now());
          if (flags.shard !== undefined) outerShard = parseShard(flags.shard);
        }
      } catch (error) {
        // A flag that can never work is a usage error (exit 2), whichever check caught it; a scenario keeps its own code.
        if (error instanceof ValidationError && !(error instanceof InvalidScenarioError)) throw new UsageError(error.message);
        throw error;
      }
      // Where the results go is checked before the run, not after it: a typo must not lose the report.
      for (const [flag, file] of [['--report', flags.report], ['--html', flags.html]] as const) if (file !== undefined) await checkOutputFile(flag, file, flag === '--html' ? 'report.html' : 'report.json');
      const stop = new AbortController();
      const remote = await targetOf(flags, io, stop);
      const { check } = remote;
      // --redis: the emulator cluster on that Redis is the broker (a --processes parent decides once for its shards).
      if (flags.redis !== undefined && flags.processes > 1) io.env[REDIS_MODE_ENV] = await clusterMode(flags.redis);
      const onCluster = flags.redis === undefined || flags.processes > 1 ? undefined : await clusterTarget({
        url: flags.redis,
        shard: flags.shard === undefined ? undefined : parseShard(flags.shard),
        apiQps: flags.apiQps,
        topic: flags.topic,
        env: io.env,
        mode: io.env[REDIS_MODE_ENV] === 'attach' || io.env[REDIS_MODE_ENV] === 'embedded' ? io.env[REDIS_MODE_ENV] : undefined,
      });
      void onCluster?.lost.then(() => stop.abort());
      const target = onCluster?.target ?? remote.target;
      // A shard process of a --processes run: its parent has checked the broker host already.
      if (target && io.env[SHARD_CHILD_ENV] !== '1') {
        // A broker host that does not resolve fails in seconds, naming it, before any device.
        await checkBrokerHost(target.brokerUrl, flags.brokerUrl === undefined ? flags.instanceId : undefined);
        // The shard processes share this machine's source ports toward the one broker: their devices must fit
        // together (each shard alone checks only its own). With embedded emulators every shard has its own port.
        if (flags.processes > 1) checkAddressSpace(resolved.range[1] - resolved.range[0], resolved.localAddresses, parseBrokerUrl(target.brokerUrl));
      }
      let interruptedBy: NodeJS.Signals | void | undefined;
      const interrupted = io.interrupted();
      void interrupted.then((signal) => {
        interruptedBy = signal ?? 'SIGINT';
        stop.abort();
      });
      const progress = flags.progress ? phaseProgress(io) : undefined;
      const { runSimulation, simulationFailure } = await loadSimulator('simulate');
      const { formatReport, renderReportHtml, writeFileWhole } = await loadReports('simulate');
      let report: SimulationReport;
      if (flags.processes > 1) {
        const verbose = (command.parent?.opts() as { verbose?: boolean } | undefined)?.verbose === true;
        report = await runInProcesses({
          processes: flags.processes,
          ...(outerShard === undefined ? {} : { shard: outerShard }),
          args: shardArgs(command),
          globalArgs: verbose ? ['--verbose'] : [],
          barrier: flags.startAt === undefined,
          io,
          onWarning: (message) => io.stderr(`warning: ${message}\n`),
          interrupted,
          ...(progress === undefined ? {} : { onProgress: progress.update }),
        });
      } else {
        // A shard process of a parent's --processes run: progress and warnings go to the parent, which also says
        // when to start connecting.
        const child = shardChildHooks(io.env, stop);
        let outbox: OutboxStore | undefined;
        try {
          if (outboxDir !== undefined) outbox = await openOutbox(outboxDir);
          report = await runSimulation(
            {
              ...settings,
              signal: stop.signal,
              onWarning: child?.onWarning ?? ((message) => io.stderr(`warning: ${message}\n`)),
              ...(target === undefined ? {} : { target }),
              ...(scenario === undefined ? {} : { scenario, scenarioSource: flags.scenario as string }),
              ...(outbox === undefined ? {} : { outbox }),
              // After a failed probe the devices only fail with it: the phases that follow are not progress.
              ...(child !== undefined ? { onProgress: child.onProgress } : progress === undefined ? {} : { onProgress: (p) => check?.failure === undefined && progress.update(p) }),
            },
            child === undefined ? {} : { beforeConnect: child.beforeConnect },
          );
        } finally {
          try {
            const held = outbox?.stats().messages ?? 0;
            await outbox?.close();
            if (held > 0) {
              const keeps = `--outbox ${outboxDir as string} keeps ${held} message${held === 1 ? '' : 's'} the devices had not delivered when the run ended (a run on the same directory would send ${held === 1 ? 'it' : 'them'})`;
              // A shard's stderr reaches nobody (its parent quotes it only when the shard fails): the parent prints it.
              if (child) child.onWarning(keeps);
              else io.stderr(`${keeps}\n`);
            }
          } finally {
            child?.done();
          }
          await onCluster?.close();
        }
        // Every shard on one cluster ran against one logical broker: the cluster (so their reports merge).
        if (flags.redis !== undefined) report.run.target = { kind: 'broker', brokerUrl: shownRedisUrl(flags.redis), instanceId: target?.provisioner.instanceId ?? null };
      }
      progress?.finish(interruptedBy !== undefined || check?.failure !== undefined);
      // The devices that failed because the endpoint is dead or wrong are not the result: the probe's line is.
      if (check?.failure !== undefined) throw check.failure;
      if (interruptedBy !== undefined) report.interrupted = true;
      // The summary is the command's result: stdout, like provision's. --json replaces it with the report.
      io.stdout(flags.json ? jsonLine(report) : formatReport(report));
      if (flags.report !== undefined) await writeOutput(writeFileWhole, '--report', flags.report, `${JSON.stringify(report, null, 2)}\n`);
      if (flags.html !== undefined) await writeOutput(writeFileWhole, '--html', flags.html, renderReportHtml(report));
      if (interruptedBy !== undefined) {
        // Only a run against an endpoint keeps credentials (in the store); the embedded emulator's are gone with it.
        const kept = target === undefined ? '' : ' Provisioned devices stay in the store: a new run does not register them again.';
        io.stderr(`Interrupted: ${report.connected} of ${report.devices} devices had connected when the run was stopped${flags.report === undefined ? '' : `; ${flags.report} is marked "interrupted"`}.${kept}\n`);
        throw new Interrupted(interruptedBy);
      }
      const failure = simulationFailure(report) ?? (flags.failOn === undefined ? undefined : checkThresholds(report, thresholds));
      if (failure) throw failure;
    });
}

/**
 * `--outbox DIR`: where this process's connector devices keep their durable outbox. A shard process of a
 * `--processes` run takes `DIR/shard-<i>` (one store per process: a store is locked by the process that opened it);
 * the parent opens none.
 */
function outboxDirOf(flags: SimulateFlags, env: NodeJS.ProcessEnv): string | undefined {
  if (flags.outbox === undefined) return undefined;
  if (flags.client !== 'connector') {
    throw new UsageError(`--outbox ${flags.outbox} is the durable outbox of the library's devices: add --client connector (the raw-socket devices have no outbox)`);
  }
  if (env[SHARD_CHILD_ENV] === '1' && flags.shard !== undefined) return join(flags.outbox, `shard-${parseShard(flags.shard).index}`);
  return flags.outbox;
}

/** Open the durable outbox (its engine, classic-level, is loaded only now: `MissingDependency` without it). */
async function openOutbox(dir: string): Promise<OutboxStore> {
  const { openOutboxStore } = await import('../../outbox/index.js');
  return openOutboxStore({ dir });
}

/** Flags of `simulate --processes` that the parent keeps: it writes the merged report and shows the progress. */
const PARENT_ONLY = new Set(['processes', 'shard', 'report', 'html', 'json', 'progress', 'failOn']);

/** The user's own flags (not the defaults), as a shard process of a `--processes` run gets them. */
function shardArgs(command: Command): string[] {
  const args: string[] = [];
  for (const option of command.options as Option[]) {
    const key = option.attributeName();
    if (PARENT_ONLY.has(key) || command.getOptionValueSource(key) !== 'cli' || option.long === undefined) continue;
    const value: unknown = command.getOptionValue(key);
    if (typeof value === 'boolean') {
      // `--consumer` and `--no-consumer` share one value: each flag is passed when it is the one that set it.
      if (value === !option.negate) args.push(option.long);
    } else if (value !== undefined) {
      args.push(option.long, String(value));
    }
  }
  return args;
}

/**
 * `--topic` makes topics the service (and the embedded emulator, which stands for it) would accept: MQTT's and the
 * service's topic rules, checked on the longest topic the template makes, and a parent topic (the first level) that
 * can exist on an instance. A template that cannot work is a usage error here, not a failed run (or an embedded
 * emulator that refuses to start) later.
 */
function checkTopicFlag(resolved: ResolvedSettings): void {
  const { topic, topicTemplate, groupId } = resolved;
  const last = resolved.devices - 1;
  const longest = expandTopic(topicTemplate, { clientId: simulatedClientId(groupId, last), index: last, group: groupId });
  if (longest.startsWith('$')) {
    throw new UsageError(`--topic ${topic}: topics under ${longest.split('/')[0] as string} are the broker's own; devices publish under a parent topic created on the instance`);
  }
  try {
    checkTopicName(longest, { apsaraMq: true, maxPayloadBytes: MAX_PAYLOAD_BYTES, persistentSession: false });
  } catch (error) {
    if (error instanceof ValidationError) throw new UsageError(`--topic ${topic} makes topics such as ${longest}: ${error.message}`);
    throw error;
  }
  // The parent is literal when the template's first level holds no placeholder (else any parent will do).
  const first = topicTemplate[0];
  const parent = typeof first !== 'string' ? undefined : first.includes('/') ? first.slice(0, first.indexOf('/')) : topicTemplate.length === 1 ? first : undefined;
  if (parent === undefined) return;
  try {
    resolveBrokerOptions({ parentTopics: [parent] });
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    throw new UsageError(`--topic ${topic}: its parent topic ${JSON.stringify(parent)} cannot exist on an instance (a parent topic is 1 to 64 letters, digits, - or _)`);
  }
}

/**
 * The broker's host must resolve. Without --broker-url the simulator connects to <instanceId>.mqtt.aliyuncs.com; for
 * an emulator that is never right, so the message says which host it tried and which flag to pass.
 */
async function checkBrokerHost(brokerUrl: string, defaultedFrom: string | undefined): Promise<void> {
  const host = new URL(brokerUrl).hostname.replace(/^\[|\]$/g, '');
  try {
    await lookup(host);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'ENOTFOUND';
    const hint = defaultedFrom === undefined ? 'check --broker-url' : `that is the default for --instance-id ${defaultedFrom}; against an emulator pass --broker-url (e.g. mqtt://127.0.0.1:1883)`;
    throw new NetworkError('HostNotFound', `The broker host ${host} does not resolve (${code}): ${hint}`, brokerUrl, error, { remedy: defaultedFrom === undefined ? 'Check --broker-url and DNS.' : 'Pass --broker-url with the broker\'s address.' });
  }
}

/** The phases that get a bar: their count grows toward the fleet's size. */
const SHOWN_PHASES: ReadonlySet<string> = new Set(['provisioning', 'connecting', 'publishing']);

/** The one progress display, one bar per phase: provisioned devices, then connected ones. */
function phaseProgress(io: CliIo): { update: (p: SimulationProgress) => void; finish: (stopped: boolean) => void } {
  let phase: string | undefined;
  let bar: Progress | undefined;
  let last: SimulationProgress | undefined;
  const counted = (p: SimulationProgress): number => (p.phase === 'provisioning' ? p.provisioned : p.online);
  const details = (p: SimulationProgress): string =>
    p.phase === 'provisioning' ? `${p.errors} errors` : `${p.online} online · ${p.messagesPerSec} msg/s · ${p.published} published · ${p.errors} errors`;
  return {
    update: (p) => {
      // Draining and disconnecting empty the fleet on purpose: the publishing bar's last state is the one to keep.
      if (!SHOWN_PHASES.has(p.phase)) return;
      last = p;
      if (p.phase !== phase) {
        bar?.finish();
        phase = p.phase;
        // The publishing bar starts with the whole fleet online: that is not a rate, only what comes after is.
        bar = new Progress({ label: `simulate ${p.phase}`, total: p.devices, initial: counted(p), tty: io.stderrIsTTY === true, columns: () => io.columns?.(), write: (t) => io.stderr(t) });
      }
      bar?.update(counted(p), details(p));
    },
    finish: (stopped) => {
      if (bar && last) bar.finish(details(last), { stopped });
    },
  };
}

/**
 * The real service (or a running emulator) when --endpoint or --region is given, with the check of its OpenAPI
 * endpoint that its store makes before the first call (a failed probe aborts `stop`); none for the embedded emulator.
 */
async function targetOf(flags: SimulateFlags, io: CliIo, stop: AbortController): Promise<{ target?: SimulationTarget; check?: EndpointCheck }> {
  const remote = flags.endpoint !== undefined || flags.region !== undefined;
  if (!remote) {
    const stray = (['instanceId', 'brokerUrl', 'store', 'ca'] as const).filter((k) => flags[k] !== undefined);
    if (stray.length > 0) {
      const flagsText = stray.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ');
      throw new UsageError(`${flagsText} ${stray.length === 1 ? 'needs' : 'need'} --endpoint or --region (without them the run uses an embedded emulator)`);
    }
    return {};
  }
  if (flags.instanceId === undefined) throw new UsageError('simulate with --endpoint or --region needs --instance-id');
  let brokerUrl: string;
  try {
    brokerUrl = brokerUrlFor(flags.instanceId, flags.transport, flags.brokerUrl);
  } catch (error) {
    if (error instanceof ValidationError) throw new UsageError(error.message);
    throw error;
  }
  const ca = await readCaFlag(flags.ca);
  // The OpenAPI is probed before the first call, not before the store: a warm store makes no request at all. A dead
  // or wrong endpoint still fails in seconds, naming the flag, and stops the run.
  const check = new EndpointCheck(resolveEndpoint({ endpoint: flags.endpoint, region: flags.region }), flags.endpoint === undefined ? '--region' : '--endpoint', {
    signal: stop.signal,
    onFailure: () => stop.abort(),
  });
  const target: SimulationTarget = {
    brokerUrl,
    strategy: 'get-first',
    provisioner: {
      instanceId: flags.instanceId,
      env: io.env,
      store: new CheckedEndpointStore(flags.store ?? defaultStoreDir(io.env), check),
      ...(flags.endpoint === undefined ? {} : { endpoint: flags.endpoint }),
      ...(flags.region === undefined ? {} : { region: flags.region }),
    },
    ...(ca === undefined ? {} : { ca }),
    ...(flags.insecure ? { rejectUnauthorized: false } : {}),
  };
  return { target, check };
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
