import { setMaxListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import type { DeviceCredential } from '../credential.js';
import { type Clock, systemClock } from './clock.js';
import { type BrokerAddress, type DeviceContext, SimulatedDevice, parseBrokerUrl } from './device.js';
import { SimulatorError } from './errors.js';
import { checkAddressSpace } from './local-address.js';
import { SimulationMetrics, type SimulationProgress, type SimulationReport } from './metrics.js';
import { type ResolvedSettings, type SimulationSettings, checkStartAt, expandTopic, resolveSettings, simulatedClientId } from './options.js';
import { describeTarget, runIdentity } from './report-format.js';
import { runPaced } from './pacer.js';
import { type DeviceProvisioning, provisionDevices } from './provision.js';
import { type EmulatorProcess, type SimulationTarget, startEmulatorProcess } from './target.js';

/** Options of {@link runSimulation}: the settings, where to run, and hooks. */
export interface SimulationOptions extends SimulationSettings {
  /**
   * What to run against. @default an emulator started for the run in its own process (its OpenAPI limited to
   * `apiQps`) and closed afterwards. Use {@link emulatorTarget} for an emulator you started yourself.
   */
  target?: SimulationTarget;
  /** @default {@link systemClock} */
  clock?: Clock;
  /** Wall-clock time in epoch ms, for `startAt` and the report's time series. @default Date.now */
  wallClock?: () => number;
  /** Randomness in [0, 1) for jitter. @default Math.random */
  random?: () => number;
  /** Ends the run early: no new connects, publishing stops, devices disconnect cleanly, the report is returned. */
  signal?: AbortSignal;
  /** Called every `progressIntervalMs` and at each phase change. */
  onProgress?: (progress: SimulationProgress) => void;
  /**
   * Called with advice before the run (open-file limit, a connect rate too slow for the duration), and during an
   * MQTT 5 run with the broker's Reason String the first time each refusal code is counted.
   */
  onWarning?: (message: string) => void;
}

/**
 * Hooks of the CLI's `simulate --processes` (not part of the public API, not exported from any entry).
 * @internal
 */
export interface RunHooks {
  /**
   * Awaited after provisioning and before connecting (when there is no `startAt`): a shard process of a
   * `--processes` run reports that it is provisioned and waits for the parent's word, so every shard starts
   * connecting at the same moment. An abort of the run's signal must settle it.
   */
  beforeConnect?: () => Promise<void>;
}

/** Time between two checks of whether every PUBACK and delivery is in after the publishing ends. */
const DRAIN_POLL_MS = 50;
/**
 * A broker given by URL is lost for good when, at the end of the publishing phase, no device has been online for
 * this long and the devices' attempts to reach it failed (refused, reset, timed out) meanwhile. A device retries
 * within 0.5 to 10 s (its reconnect backoff), so in this time a fleet has tried and failed more than once.
 */
export const BROKER_LOST_MS = 5_000;
/** File descriptors a Node process uses besides the devices' sockets. */
const RESERVED_FDS = 64;

/** The soft open-file limit of this process, when the platform says (Linux `/proc/self/limits`). */
export function openFileLimit(): number | undefined {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8');
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
    if (!match) return undefined;
    return match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1]);
  } catch {
    return undefined;
  }
}

function preflightWarnings(settings: ResolvedSettings): string[] {
  const warnings: string[] = [];
  const devices = settings.range[1] - settings.range[0];
  const limit = openFileLimit();
  if (limit !== undefined && devices + RESERVED_FDS > limit) {
    warnings.push(`${devices} devices need about ${devices + RESERVED_FDS} open files but the limit (ulimit -n) is ${limit}: raise it (ulimit -n ${Math.max(65_536, devices * 2)}) or use --shard`);
  }
  if (settings.shardConnectRate > 0 && (devices / settings.shardConnectRate) * 1_000 > settings.durationMs) {
    warnings.push(`At ${settings.connectRate} connects/s the last devices connect after ${Math.ceil(devices / settings.shardConnectRate)} s, later than the ${settings.durationMs / 1_000} s duration: they will not publish`);
  }
  return warnings;
}

/**
 * Simulate a fleet: provision every device's credential (store first, rate-limited), connect them at the paced,
 * jittered connect rate, publish from each every `publishIntervalMs` for `durationMs`, then wait for outstanding
 * acknowledgements and disconnect cleanly. Resolves with the report; a device that fails is counted, not thrown.
 *
 * ```ts
 * const report = await runSimulation({ devices: 1000, connectRate: 200, durationMs: 30_000, subscribe: true });
 * console.log(report.connectLatencyMs.p99, report.e2eLatencyMs.p99);
 * ```
 *
 * @throws ValidationError for a bad option (a `startAt` already past, a source address not on this machine), before
 *   anything starts; SimulatorError `AddressSpaceTooSmall` when the shard's devices cannot all have a source port
 *   toward the broker, before anything starts; SimulatorError `EmulatorFailed` when the embedded emulator cannot
 *   start.
 * @param hooks Internal (the CLI's `--processes`); leave it out.
 */
export async function runSimulation(options: SimulationOptions = {}, hooks: RunHooks = {}): Promise<SimulationReport> {
  const settings = resolveSettings(options);
  const given = options.target;
  const broker: BrokerAddress | undefined = given ? brokerOf(given) : undefined;
  const wallClock = options.wallClock ?? Date.now;
  // The embedded emulator listens on 127.0.0.1.
  checkAddressSpace(settings.range[1] - settings.range[0], settings.localAddresses, broker ?? { host: '127.0.0.1', port: 0 });
  if (settings.startAtMs !== null) checkStartAt(settings.startAtMs, wallClock());
  for (const warning of preflightWarnings(settings)) options.onWarning?.(warning);

  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const started = clock.now();
  const metrics = new SimulationMetrics({ clock, epochMs: wallClock() });
  metrics.devices = settings.range[1] - settings.range[0];
  const identity = runIdentity(settings, describeTarget(given), {
    startAt: settings.startAtMs === null ? null : new Date(settings.startAtMs).toISOString(),
    localAddresses: settings.localAddresses === null ? null : [...settings.localAddresses],
  });

  let phase: SimulationProgress['phase'] = 'starting';
  let lastTick = started;
  let lastPublished = 0;
  const report = (): void => {
    const now = clock.now();
    const seconds = (now - lastTick) / 1_000;
    options.onProgress?.({
      phase,
      devices: metrics.devices,
      provisioned: metrics.provisioned,
      online: metrics.online,
      failedConnects: metrics.failedConnects,
      published: metrics.published,
      delivered: metrics.delivered,
      errors: metrics.errorTotal,
      messagesPerSec: seconds > 0 ? Math.round((metrics.published - lastPublished) / seconds) : 0,
      elapsedMs: Math.round(now - started),
    });
    lastTick = now;
    lastPublished = metrics.published;
  };
  const enter = (next: SimulationProgress['phase']): void => {
    phase = next;
    report();
  };
  let progressTimer: unknown;
  const tick = (): void => {
    progressTimer = clock.setTimeout(tick, settings.progressIntervalMs);
    report();
  };
  if (options.onProgress) progressTimer = clock.setTimeout(tick, settings.progressIntervalMs);

  let emulator: EmulatorProcess | undefined;
  // Fires when the run's broker is gone for good (its embedded emulator exited): the run stops as if aborted, and
  // its report says why (`brokerLost`), which fails it.
  const lost = new AbortController();
  try {
    enter('starting');
    if (!given) {
      const own = await startEmulatorProcess({ qpsLimit: settings.apiQps, parentTopics: parentTopicsOf(settings.topic), groups: [settings.groupId] });
      emulator = own;
      void own.lost.then((how) => {
        const of = settings.shard.count > 1 ? ` of shard ${settings.shard.index}/${settings.shard.count}` : '';
        metrics.brokerLost ??= {
          at: new Date(wallClock()).toISOString(),
          embeddedEmulator: true,
          cause: `The embedded emulator${of} (pid ${own.pid ?? '?'}) ${how} ${((clock.now() - started) / 1_000).toFixed(1)} s into the run, after ${metrics.connected} of ${metrics.devices} devices had connected: the run was stopped`,
        };
        lost.abort();
      });
    }
    const target = given ?? (emulator as EmulatorProcess).target;
    const provisionSignal = options.signal ? AbortSignal.any([options.signal, lost.signal]) : lost.signal;
    const devices = await provision(target, settings, metrics, provisionSignal, () => report(), () => enter('provisioning'));

    const stop = new AbortController();
    const onAbort = (): void => stop.abort();
    // Aborted while provisioning: an abort listener added now would never fire.
    if (options.signal?.aborted || lost.signal.aborted) stop.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    lost.signal.addEventListener('abort', onAbort, { once: true });
    const reasonsShown = new Set<string>();
    const ctx: DeviceContext = {
      settings,
      broker: broker ?? brokerOf(target),
      metrics,
      clock,
      random,
      payloadTemplate: Buffer.alloc(settings.payloadSize),
      // One device out of file descriptors means every later one would be too: stop starting them.
      onFileLimit: () => stop.abort(),
      onReason: (code, reasonString) => {
        // Once per code: a fleet refused for one cause would otherwise repeat the same words once per device.
        if (reasonsShown.has(code)) return;
        reasonsShown.add(code);
        options.onWarning?.(`The broker's reason for ${code} (shown once per code): ${JSON.stringify(reasonString)}`);
      },
    };
    const sources = settings.localAddresses;
    const simulated = devices.map(({ index, credential }, k) => {
      const topic = expandTopic(settings.topicTemplate, { clientId: credential.clientId, index, group: settings.groupId });
      return new SimulatedDevice(index, credential, topic, ctx, sources === null ? undefined : sources[k % sources.length]);
    });
    // Each device keeps only its signed CONNECT: let the credentials go. The embedded emulator's in-memory store is
    // ours and dies with the run; a store the caller gave is left alone.
    const provisionedIds = devices.map(({ credential }) => credential.clientId);
    devices.length = 0;
    const ownStore = emulator?.target.provisioner.store;
    if (ownStore) await Promise.all(provisionedIds.map((id) => ownStore.remove(target.provisioner.instanceId as string, id)));
    provisionedIds.length = 0;

    if (settings.startAtMs === null && hooks.beforeConnect && !lost.signal.aborted) {
      enter('waiting');
      await hooks.beforeConnect();
    }
    if (settings.startAtMs !== null) {
      const late = wallClock() - settings.startAtMs;
      if (late > 0) options.onWarning?.(`Provisioning ended ${(late / 1_000).toFixed(1)} s after startAt (--start-at): connecting now, later than the other shards`);
      else {
        enter('waiting');
        await waitFor(clock, -late, stop.signal);
      }
    }
    enter('connecting');
    let publishing = true;
    const ended = waitFor(clock, settings.durationMs, stop.signal);
    const startedCount = await runPaced(
      simulated.length,
      { rate: settings.shardConnectRate, maxInFlight: settings.maxConnectsInFlight, clock, random, signal: stop.signal },
      async (k) => {
        const device = simulated[k] as SimulatedDevice;
        if (!(await device.start())) metrics.failedConnects += 1;
        else if (publishing) device.setPublishing(true);
      },
    );
    const notStarted = simulated.length - startedCount;
    for (let i = 0; i < notStarted; i++) metrics.error('Aborted');
    enter('publishing');
    await ended;
    publishing = false;
    options.signal?.removeEventListener('abort', onAbort);
    lost.signal.removeEventListener('abort', onAbort);
    // A broker given by URL cannot say it is gone: judged by the devices, unless the user stopped the run.
    if (!options.signal?.aborted) metrics.brokerLost ??= metrics.judgeBrokerLost(BROKER_LOST_MS);

    enter('draining');
    for (const device of simulated) device.setPublishing(false);
    // Nothing more will be acknowledged by a broker that is gone.
    if (metrics.brokerLost === undefined) await drain(clock, metrics, settings);

    enter('disconnecting');
    await Promise.all(simulated.map((device) => device.stop()));
    enter('done');
    return metrics.report(clock.now() - started, identity);
  } finally {
    if (progressTimer !== undefined) clock.clearTimeout(progressTimer);
    await emulator?.close();
  }
}

function brokerOf(target: SimulationTarget): BrokerAddress {
  return {
    ...parseBrokerUrl(target.brokerUrl),
    ...(target.ca === undefined ? {} : { ca: target.ca }),
    ...(target.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: target.rejectUnauthorized }),
  };
}

/** The credentials of this shard's devices; failures are counted under their codes. */
async function provision(
  target: SimulationTarget,
  settings: ResolvedSettings,
  metrics: SimulationMetrics,
  signal: AbortSignal | undefined,
  onProgress: () => void,
  onStart: () => void,
): Promise<Array<{ index: number; credential: DeviceCredential }>> {
  const [start, end] = settings.range;
  const clientIds = Array.from({ length: end - start }, (_, i) => simulatedClientId(settings.groupId, start + i));
  onStart();
  // Every device in flight listens on the signal: a signal of our own, so the caller's does not warn of a leak.
  const provisioning = new AbortController();
  setMaxListeners(0, provisioning.signal);
  const onAbort = (): void => provisioning.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  let result: DeviceProvisioning;
  try {
    result = await provisionDevices(clientIds, {
      provisioner: target.provisioner,
      qps: settings.apiQps,
      concurrency: settings.apiConcurrency,
      strategy: target.strategy ?? 'get-first',
      signal: provisioning.signal,
      onProgress: (provisioned) => {
        metrics.provisioned = provisioned;
      },
    });
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  metrics.provisioned = result.credentials.size;
  for (const failure of result.failed) metrics.error(failure.code);
  onProgress();
  const devices: Array<{ index: number; credential: DeviceCredential }> = [];
  for (let i = 0; i < clientIds.length; i++) {
    const credential = result.credentials.get(clientIds[i] as string);
    if (credential) devices.push({ index: start + i, credential });
  }
  return devices;
}

/** Resolves after `ms`, or as soon as `signal` aborts. */
function waitFor(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = clock.setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    function onAbort(): void {
      clock.clearTimeout(timer);
      resolve();
    }
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Wait until every QoS 1 publish is acknowledged and (when subscribing) delivered, or the drain timeout passes. */
function drain(clock: Clock, metrics: SimulationMetrics, settings: ResolvedSettings): Promise<void> {
  const deadline = clock.now() + settings.drainTimeoutMs;
  const settled = (): boolean =>
    (settings.qos === 0 || metrics.acked >= metrics.published) && (!settings.subscribe || metrics.delivered >= metrics.published);
  return new Promise((resolve) => {
    const check = (): void => {
      if (settled() || clock.now() >= deadline) resolve();
      else clock.setTimeout(check, DRAIN_POLL_MS);
    };
    check();
  });
}

/**
 * The error a run should end with, judged from its report: `EmulatorFailed` or `BrokerLost` when it lost its broker
 * for good (`brokerLost`), `TooManyOpenFiles` when the open-file limit was hit, `SimulationFailed` when a device could
 * not be provisioned or connected; `undefined` when every device connected.
 */
export function simulationFailure(report: SimulationReport): SimulatorError | undefined {
  const lost = report.brokerLost;
  if (lost) return new SimulatorError(lost.embeddedEmulator ? 'EmulatorFailed' : 'BrokerLost', lost.cause);
  if ((report.errors['TooManyOpenFiles'] ?? 0) > 0) {
    const limit = openFileLimit();
    return new SimulatorError('TooManyOpenFiles', `The process ran out of file descriptors after ${report.connected} of ${report.devices} devices connected${limit === undefined ? '' : ` (ulimit -n is ${limit})`}`);
  }
  const unprovisioned = report.devices - report.provisioned;
  if (unprovisioned > 0 || report.failedConnects > 0 || report.connected < report.provisioned) {
    return new SimulatorError('SimulationFailed', `${report.connected} of ${report.devices} devices connected (${unprovisioned} not provisioned, ${report.failedConnects} failed to connect)`);
  }
  return undefined;
}

/**
 * The parent topic a topic template publishes under, which the embedded emulator must have "created" (the service's
 * rule): the template's first level, or any parent when that level has a placeholder.
 */
export function parentTopicsOf(template: string): readonly string[] | '*' {
  const first = template.split('/')[0] ?? '';
  return first.includes('%') || first === '' ? '*' : [first];
}
