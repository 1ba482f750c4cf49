import type { Command } from 'commander';
import { assertClientId, assertGroupId, assertInstanceId } from '../../credential.js';
import { ApsaraMqDeviceError, isApsaraMqDeviceError } from '../../errors.js';
import { defaultStoreDir } from '../../provisioner/env.js';
import type { FleetProgress, FleetResult } from '../../provisioner/fleet.js';
import { loadFleet } from '../roles.js';
import type { ProvisionStrategy } from '../../provisioner/provisioner.js';
import { DEFAULT_API_CONCURRENCY, DEFAULT_API_QPS } from '../../provisioner/rate-limit.js';
import { resolveEndpoint } from '../../provisioner/endpoint.js';
import { type CliIo, Interrupted, UsageError, choiceArg, conflicting, intArg, jsonLine } from '../io.js';
import { CheckedEndpointStore, EndpointCheck } from '../endpoint-check.js';
import { cliRemedyOf } from '../remedies.js';
import { Progress } from '../progress.js';
// Help examples name the instance the `emulator` command serves by default, so that they work when copied.
import { CLI_DEFAULT_INSTANCE_ID as EXAMPLE_INSTANCE_ID } from './emulator.js';

interface ProvisionFlags {
  instanceId?: string;
  groupId?: string;
  count?: number;
  prefix: string;
  start: number;
  qps: number;
  concurrency: number;
  strategy: ProvisionStrategy;
  store?: string;
  endpoint?: string;
  region?: string;
  timeoutMs?: number;
  maxServiceLatencyMs?: number;
  json?: boolean;
}

/** Failed ClientIds listed in the human summary; the rest are counted. */
const FAILURES_SHOWN = 20;

/** The ClientIds of `--count` devices: `<GID>@@@<prefix><index>` for index from `--start`. */
export function fleetClientIds(groupId: string, prefix: string, start: number, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${groupId}@@@${prefix}${start + i}`);
}

export function addProvisionCommand(program: Command, io: CliIo): void {
  program
    .command('provision')
    .description('Give a fleet of devices their credentials: store first, then the OpenAPI, paced under the account limit, retrying throttling and faults, never registering a ClientId that has a credential.')
    .option('--instance-id <id>', 'instance id (required)')
    .option('--group-id <gid>', 'GroupId of the devices, GID_… (required)')
    .option('--count <n>', 'number of devices (required)', intArg('--count', 1))
    .option('--prefix <prefix>', 'device id prefix: ClientIds are <GID>@@@<prefix><index>', 'dev-')
    .option('--start <n>', 'first index', intArg('--start', 0), 0)
    .option('--qps <n>', 'OpenAPI requests per second for the account', intArg('--qps', 1, 100_000), DEFAULT_API_QPS)
    .option('--concurrency <n>', 'devices (and requests) in flight at once', intArg('--concurrency', 1, 10_000), DEFAULT_API_CONCURRENCY)
    .option('--strategy <s>', 'get-first (safe for any fleet) or register-first (one call per device, for new fleets only)', choiceArg('--strategy', ['get-first', 'register-first'] as const), 'get-first')
    .option('--store <dir>', 'credential store directory (default $APSARAMQ_DEVICE_STORE, else ~/.config/apsaramq-device/credentials)')
    .option('--endpoint <url>', 'OpenAPI endpoint URL, e.g. the emulator\'s http://127.0.0.1:8080')
    .option('--region <region>', 'region, for https://onsmqtt.<region>.aliyuncs.com')
    .option('--timeout-ms <ms>', 'connect and answer timeout of each OpenAPI request (default 10000)', intArg('--timeout-ms', 1, 600_000))
    .option('--max-service-latency-ms <ms>', 'longest the service may take to apply a request: a Register whose answer was lost is checked with GetDeviceCredential once --timeout-ms plus this have passed (default 10000)', intArg('--max-service-latency-ms', 0, 3_600_000))
    .option('--json', 'print one summary line of JSON on stdout')
    .addHelpText(
      'after',
      `
Account keys come from ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (and ALIBABA_CLOUD_SECURITY_TOKEN for STS).
Credentials already in the store cost no API call, so running the command again is cheap and safe, also while other
provision or connect processes use the same store (each ClientId is locked while it is registered). Progress goes to
stderr; with --json, stdout gets {"requested","provisioned","fromStore","fetched","registered","failed":[{"clientId","code"}],
"apiCalls","retries","throttled","elapsedMs"}. Exit 0 when every device has its credential, 1 otherwise.

Example:
  $ apsaramq-device provision --endpoint http://127.0.0.1:8080 --instance-id ${EXAMPLE_INSTANCE_ID} --group-id GID_demo --count 1000 --qps 200 --json`,
    )
    .action(async (flags: ProvisionFlags) => {
      const { instanceId, groupId, count } = flags;
      if (instanceId === undefined) throw new UsageError('--instance-id is required', 'MissingOption');
      if (groupId === undefined) throw new UsageError('--group-id is required', 'MissingOption');
      if (count === undefined) throw new UsageError('--count is required', 'MissingOption');
      if (flags.endpoint === undefined && flags.region === undefined) throw new UsageError('pass --endpoint URL or --region REGION', 'MissingOption');
      if (flags.endpoint !== undefined && flags.region !== undefined) throw conflicting('--endpoint', '--region', 'the endpoint is that of a region');
      assertInstanceId(instanceId);
      assertGroupId(groupId);
      // The last index has the most digits: if its ClientId is valid, all are. Checked before any I/O.
      const longest = fleetClientIds(groupId, flags.prefix, flags.start + count - 1, 1)[0] ?? '';
      try {
        assertClientId(longest);
      } catch (error) {
        if (!isApsaraMqDeviceError(error)) throw error;
        throw new UsageError(`--group-id, --prefix, --start and --count make ClientIds such as ${longest} (${longest.length} characters): ${error.message}`);
      }

      const endpoint = resolveEndpoint({ ...(flags.endpoint === undefined ? {} : { endpoint: flags.endpoint }), ...(flags.region === undefined ? {} : { region: flags.region }) });
      const controller = new AbortController();
      let signal: NodeJS.Signals | void | undefined;
      void io.interrupted().then((s) => {
        signal = s ?? 'SIGINT';
        controller.abort(new Error('interrupted'));
      });
      // The endpoint is probed before the first call, not before the store: a warm store makes no request at all. A
      // dead or wrong endpoint still fails in seconds, naming the flag, and stops the run.
      const check = new EndpointCheck(endpoint, flags.endpoint === undefined ? '--region' : '--endpoint', {
        timeoutMs: flags.timeoutMs,
        signal: controller.signal,
        onFailure: (error) => controller.abort(error),
      });
      const store = new CheckedEndpointStore(flags.store ?? defaultStoreDir(io.env), check);
      const progress = new Progress({ label: 'provision', total: count, tty: io.stderrIsTTY === true, columns: () => io.columns?.(), write: (t) => io.stderr(t) });
      const update = (p: FleetProgress): void => {
        // Devices stopped by a failed probe are not progress: the probe's error is the one line to show.
        if (check.failure === undefined) progress.update(p.done, `${p.failed} failed · ${p.apiCalls} calls · ${p.retries} retries`);
      };
      const { provisionFleet } = await loadFleet('provision');
      const result = await provisionFleet(fleetClientIds(groupId, flags.prefix, flags.start, count), {
        instanceId,
        env: io.env,
        store,
        qps: flags.qps,
        concurrency: flags.concurrency,
        strategy: flags.strategy,
        signal: controller.signal,
        onProgress: update,
        endpoint,
        ...(flags.timeoutMs === undefined ? {} : { timeoutMs: flags.timeoutMs }),
        ...(flags.maxServiceLatencyMs === undefined ? {} : { maxServiceLatencyMs: flags.maxServiceLatencyMs }),
      });
      if (check.failure !== undefined) {
        if (progress.drewOnTerminal) io.stderr('\n');
        throw check.failure;
      }
      const interrupted = signal !== undefined;
      if (interrupted) {
        // Devices the interrupt stopped before they finished did not fail: they are left for the next run.
        const aborted = result.failed.filter((f) => f.code === 'Aborted').length;
        result.failed = result.failed.filter((f) => f.code !== 'Aborted');
        // Devices stopped by the interrupt were counted as settled while it ran; the bar ends at what was really done.
        progress.finish(`interrupted · ${result.provisioned} provisioned · ${result.failed.length} failed · ${aborted} left`, { done: result.provisioned + result.failed.length, stopped: true });
        io.stdout(flags.json ? jsonLine({ ...summary(result), interrupted: true, notProvisioned: aborted }) : humanSummary(result));
      } else {
        progress.finish(`${result.failed.length} failed · ${result.apiCalls} calls · ${result.retries} retries`);
        io.stdout(flags.json ? jsonLine(summary(result)) : humanSummary(result));
      }
      if (interrupted) {
        const left = result.requested - result.provisioned;
        io.stderr(`Interrupted: ${result.provisioned} of ${result.requested} devices provisioned, ${left} not yet. Run the same command again to resume: devices already provisioned come from the store at no cost.\n`);
        throw new Interrupted(signal);
      }
      if (result.failed.length > 0) throw failureError(result);
    });
}

/** The `--json` line: the result without the credentials (they hold device secrets). */
function summary(result: FleetResult): Omit<FleetResult, 'credentials'> {
  const { requested, provisioned, fromStore, fetched, registered, failed, apiCalls, retries, throttled, elapsedMs } = result;
  return { requested, provisioned, fromStore, fetched, registered, failed, apiCalls, retries, throttled, elapsedMs };
}

function humanSummary(r: FleetResult): string {
  const lines = [
    `provisioned ${r.provisioned} of ${r.requested} (from store ${r.fromStore}, fetched ${r.fetched}, registered ${r.registered}); failed ${r.failed.length}`,
    `${r.apiCalls} API calls, ${r.retries} retries, ${r.throttled} throttled, ${(r.elapsedMs / 1000).toFixed(1)} s`,
  ];
  // One line per failure code, not per device: a fleet-wide cause (a wrong secret) is one line with its remedy.
  for (const [code, ids] of byCode(r.failed)) {
    const shown = ids.slice(0, FAILURES_SHOWN).join(', ');
    lines.push(`  failed ${code} ×${ids.length}: ${shown}${ids.length > FAILURES_SHOWN ? `, … and ${ids.length - FAILURES_SHOWN} more` : ''}`);
    lines.push(`    ${cliRemedyOf(code)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Failed ClientIds grouped by code, the most frequent code first. */
function byCode(failed: readonly { clientId: string; code: string }[]): [string, string[]][] {
  const groups = new Map<string, string[]>();
  for (const { clientId, code } of failed) {
    const ids = groups.get(code);
    if (ids) ids.push(clientId);
    else groups.set(code, [clientId]);
  }
  return [...groups].sort((a, b) => b[1].length - a[1].length);
}

/** Exit 1 with the most frequent failure code first on stderr, as every other command does. */
function failureError(result: FleetResult): ApsaraMqDeviceError {
  const groups = byCode(result.failed);
  const [code = 'UnknownError'] = groups[0] ?? [];
  const breakdown = groups.map(([c, ids]) => `${c} ${ids.length}`).join(', ');
  const remedy = `${cliRemedyOf(code)} Then run the same command again: devices already provisioned come from the store at no cost.`;
  return new ApsaraMqDeviceError(code, `${result.failed.length} of ${result.requested} devices were not provisioned (${breakdown})`, { retryable: false, remedy });
}
