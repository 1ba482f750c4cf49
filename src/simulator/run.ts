import { setMaxListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import type { DeviceCredential } from '../credential.js';
import { ValidationError } from '../errors.js';
// Types only: the store is opened by the caller, so the simulator never loads the outbox's engine.
import type { OutboxStore } from '../outbox/store.js';
import { type Clock, systemClock } from './clock.js';
import { type BrokerAddress, type DeviceContext, SimulatedDevice, parseBrokerUrl } from './device.js';
import { SimulatorError } from './errors.js';
import { checkAddressSpace } from './local-address.js';
import { SimulationMetrics, type SimulationProgress, type SimulationReport } from './metrics.js';
import { type ResolvedSettings, type SimulationSettings, checkStartAt, expandTopic, resolveSettings, simulatedClientId } from './options.js';
import { describeTarget, runIdentity } from './report-format.js';
import { runPaced } from './pacer.js';
import { type DeviceProvisioning, provisionDevices } from './provision.js';
import { ConnectorDevice } from './connector-device.js';
import { GameDayRig, checkControls, emulatorControlsOf } from './game-day-rig.js';
import { planGameDay } from './game-day-plan.js';
import { type EmulatorDelta, EmulatorControls, type EmulatorStatsView, statsDelta } from './emulator-controls.js';
import { type FaultPlan, NETWORK_KINDS, type Scenario, scenarioIdentity } from './scenario.js';
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
  /**
   * A game day: the faults to play during the run ({@link parseScenario} or {@link readScenarioFile} make one), each
   * `at` seconds from the start of connecting. The report then holds `faults` (each one's devices hit and time to
   * heal) and, with the backend subscriber it turns on, `delivery` (messages delivered, lost, duplicated).
   */
  scenario?: Scenario;
  /** How the scenario is named in its errors (its file name). @default its name */
  scenarioSource?: string;
  /**
   * A durable outbox for every device (`client: 'connector'` only): an `OutboxStore` opened with `openOutboxStore`
   * from `apsaramq-device/outbox`, given to each device's connection as its `outbox` option, so a game day measures
   * store and forward. The caller opens and closes it; what the devices still held when the run ended stays in it.
   * Use a fresh directory per run: a later run's devices have the same ClientIds and send what an earlier one left
   * (its backend subscriber counts those as foreign). @default none (the connector's outbox in memory)
   */
  outbox?: OutboxStore;
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
/** Time a run should leave after its last fault for the devices to come back (the connector's backoff reaches 60 s). */
const HEAL_MARGIN_MS = 30_000;
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

function preflightWarnings(settings: ResolvedSettings, plans: readonly FaultPlan[]): string[] {
  const warnings: string[] = [];
  const devices = settings.range[1] - settings.range[0];
  const limit = openFileLimit();
  // Each device relayed through the fault relay costs two more descriptors (the relay's two sides).
  const files = devices * (plans.some((p) => NETWORK_KINDS.has(p.kind)) ? 3 : 1) + RESERVED_FDS;
  if (limit !== undefined && files > limit) {
    warnings.push(`${devices} devices need about ${files} open files but the limit (ulimit -n) is ${limit}: raise it (ulimit -n ${Math.max(65_536, files * 2)}) or use --shard`);
  }
  const lastEnd = Math.max(0, ...plans.map((p) => p.atMs + p.forMs));
  if (plans.length > 0 && settings.durationMs - lastEnd < HEAL_MARGIN_MS) {
    warnings.push(`The last fault ends ${((settings.durationMs - lastEnd) / 1_000).toFixed(1)} s before the end of the run (--duration): devices not back online by then count as not healed; leave them ${HEAL_MARGIN_MS / 1_000} s or more`);
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
 * @throws ValidationError for a bad option (a `startAt` already past, a source address not on this machine, an `outbox`
 *   without `client: 'connector'`), before
 *   anything starts; SimulatorError `AddressSpaceTooSmall` when the shard's devices cannot all have a source port
 *   toward the broker, before anything starts; SimulatorError `EmulatorFailed` when the embedded emulator cannot
 *   start.
 * @param hooks Internal (the CLI's `--processes`); leave it out.
 */
export async function runSimulation(options: SimulationOptions = {}, hooks: RunHooks = {}): Promise<SimulationReport> {
  const settings = resolveSettings(options);
  if (options.outbox !== undefined && settings.client !== 'connector') {
    throw new ValidationError('InvalidOption', "Option outbox is the durable outbox of the library's devices: pass client: 'connector' too (a raw-socket device has no outbox)");
  }
  const given = options.target;
  const broker: BrokerAddress | undefined = given ? brokerOf(given) : undefined;
  const wallClock = options.wallClock ?? Date.now;
  // The embedded emulator listens on 127.0.0.1.
  checkAddressSpace(settings.range[1] - settings.range[0], settings.localAddresses, broker ?? { host: '127.0.0.1', port: 0 });
  if (settings.startAtMs !== null) checkStartAt(settings.startAtMs, wallClock());
  const gameDay = planGameDay(settings, options.scenario, options.scenarioSource, broker?.tls ?? false);
  // A scenario's faults that act on an emulator need one: a target given by endpoint is asked whether it is one
  // before anything starts (only then: a run against a warm store makes no request at all).
  const givenControls = gameDay && given ? await emulatorControlsOf(given) : undefined;
  if (gameDay && given) checkControls(gameDay, given, givenControls);
  for (const warning of preflightWarnings(settings, gameDay?.plans ?? [])) options.onWarning?.(warning);

  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const started = clock.now();
  const metrics = new SimulationMetrics({ clock, epochMs: wallClock() });
  metrics.devices = settings.range[1] - settings.range[0];
  const identity = runIdentity(settings, describeTarget(given), {
    startAt: settings.startAtMs === null ? null : new Date(settings.startAtMs).toISOString(),
    localAddresses: settings.localAddresses === null ? null : [...settings.localAddresses],
    client: settings.client,
    consumer: gameDay?.consumer ?? false,
    scenario: gameDay?.scenario ? scenarioIdentity(gameDay.scenario) : null,
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
  let rig: GameDayRig | undefined;
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
    const runBroker = broker ?? brokerOf(target);
    const controls = givenControls ?? (emulator ? await EmulatorControls.probe(emulator.target.provisioner.endpoint as string) : undefined);
    const statsBefore: EmulatorStatsView | undefined = await controls?.stats().catch(() => undefined);
    if (gameDay) {
      rig = await GameDayRig.start({
        plan: gameDay,
        settings,
        target,
        broker: runBroker,
        embedded: emulator !== undefined,
        controls,
        clock,
        metrics,
        ...(options.onWarning ? { onWarning: options.onWarning } : {}),
      });
    }
    const ctx: DeviceContext = {
      settings,
      broker: runBroker,
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
      ...(rig?.heal ? { heal: rig.heal } : {}),
      ...(rig?.ledger ? { ledger: rig.ledger } : {}),
    };
    const sources = settings.localAddresses;
    const simulated: FleetDevice[] = devices.map(({ index, credential }, k) => {
      const topic = expandTopic(settings.topicTemplate, { clientId: credential.clientId, index, group: settings.groupId });
      const route = rig?.route(index) ?? {};
      if (settings.client === 'connector') {
        const url = route.dial ? `${runBroker.tls ? 'mqtts' : 'mqtt'}://${route.dial.host}:${route.dial.port}` : target.brokerUrl;
        return new ConnectorDevice(index, credential, topic, ctx, {
          brokerUrl: url,
          ...(route.ladder ? { ladder: route.ladder } : {}),
          ...(options.outbox === undefined ? {} : { outbox: options.outbox }),
        });
      }
      return new SimulatedDevice(index, credential, topic, ctx, { ...route, ...(sources === null ? {} : { localAddress: sources[k % sources.length] as string }) });
    });
    // Each device keeps only what it connects with: let the credentials go. The embedded emulator's in-memory store is
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
    rig?.begin();
    let publishing = true;
    const ended = waitFor(clock, settings.durationMs, stop.signal);
    const startedCount = await runPaced(
      simulated.length,
      { rate: settings.shardConnectRate, maxInFlight: settings.maxConnectsInFlight, clock, random, signal: stop.signal },
      async (k) => {
        const device = simulated[k] as FleetDevice;
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
    // A game day's own fault in its last seconds (a partition of the whole fleet, say) is not a broker lost for good.
    const faultAtTheEnd = gameDay?.plans.some((p) => p.atMs + p.forMs > settings.durationMs - BROKER_LOST_MS) ?? false;
    if (!options.signal?.aborted && !faultAtTheEnd) metrics.brokerLost ??= metrics.judgeBrokerLost(BROKER_LOST_MS);

    enter('draining');
    for (const device of simulated) device.setPublishing(false);
    // Nothing more will be acknowledged by a broker that is gone.
    if (metrics.brokerLost === undefined) await drain(clock, metrics, settings, simulated, () => rig?.delivered() ?? true);
    // A device not back online now is not healed.
    await rig?.stop();
    const emulatorDelta = await emulatorStats(controls, statsBefore, given, metrics, settings);

    enter('disconnecting');
    await Promise.all(simulated.map((device) => device.stop()));
    // The backend subscriber's backlog at the broker (a paced one after a restart) drains, or is counted queued; a
    // broker gone for good holds nothing to wait for.
    if (metrics.brokerLost === undefined) await rig?.settleBacklog(options.signal);
    // What was not delivered now is lost, unless the device still held it or the broker still queues it.
    const played = rig?.results();
    enter('done');
    return { ...metrics.report(clock.now() - started, identity), ...played, ...emulatorDelta };
  } finally {
    if (progressTimer !== undefined) clock.clearTimeout(progressTimer);
    await rig?.close();
    await emulator?.close();
  }
}

/**
 * What the emulator saw during the run (its OpenAPI calls, its rules' refusals), for the report: from the run's
 * emulator (embedded, or given and probed for a game day); or, when the devices published and nothing was
 * acknowledged, from a target given by endpoint that turns out to be an emulator, whose rules then say why (its
 * counts since it started, as nothing was taken before).
 */
async function emulatorStats(
  controls: EmulatorControls | undefined,
  before: EmulatorStatsView | undefined,
  given: SimulationTarget | undefined,
  metrics: SimulationMetrics,
  settings: ResolvedSettings,
): Promise<{ emulator?: EmulatorDelta }> {
  if (controls && before) {
    const after = await controls.stats().catch(() => undefined);
    return after ? { emulator: statsDelta(before, after) } : {};
  }
  if (!given || settings.qos === 0 || metrics.published === 0 || metrics.acked > 0) return {};
  const after = await (await emulatorControlsOf(given))?.stats().catch(() => undefined);
  return after ? { emulator: statsDelta({ actions: {}, mqtt: { rules: {} } }, after) } : {};
}

/** What the run needs of a device, raw or connector. */
interface FleetDevice {
  readonly index: number;
  /** Connect (and subscribe); true once online. */
  start(): Promise<boolean>;
  setPublishing(on: boolean): void;
  /** Messages it still holds (the connector's outbox); 0 for a raw device. */
  readonly pending: number;
  stop(): Promise<void>;
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

/**
 * Wait until no device has a message on its way (awaiting its PUBACK, or held by the connector's outbox), every
 * message came back when subscribing, and `more` says the rest is in (the backend subscriber's deliveries), or the
 * drain timeout passes.
 */
function drain(clock: Clock, metrics: SimulationMetrics, settings: ResolvedSettings, devices: readonly FleetDevice[], more: () => boolean): Promise<void> {
  const deadline = clock.now() + settings.drainTimeoutMs;
  const settled = (): boolean =>
    devices.every((d) => d.pending === 0) && (!settings.subscribe || metrics.delivered >= metrics.published) && more();
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
 * not be provisioned or connected, `NothingPublished` when the devices published and not one message got through;
 * `undefined` otherwise.
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
  return nothingPublished(report);
}

/**
 * `NothingPublished` when the devices connected and published but not one message got through: no QoS 1 PUBACK, or
 * (with a backend subscriber) nothing delivered. The message names what the broker did instead: a refusal by reason
 * code (MQTT 5), the emulator's rule that refused them, or sessions closed after each PUBLISH (MQTT 3.1.1's refusal).
 */
function nothingPublished(report: SimulationReport): SimulatorError | undefined {
  if (report.interrupted || report.connected === 0 || report.run.publishIntervalMs === 0) return undefined;
  const unacked = report.run.qos === 1 && report.published > 0 && report.acked === 0;
  const undelivered = report.delivery !== undefined && report.delivery.accepted > 0 && report.delivery.delivered === 0;
  if (!unacked && !undelivered) return undefined;
  const what = unacked ? `${report.published} PUBLISH sent, 0 acknowledged` : `${report.delivery?.accepted} accepted, 0 delivered to the backend subscriber`;
  const causes: string[] = [];
  const refusals = Object.entries(report.errors).filter(([code]) => code.startsWith('PublishRejected'));
  if (refusals.length > 0) causes.push(`the broker refused them (${refusals.map(([code, n]) => `${code} ${n}`).join(', ')})`);
  for (const [rule, n] of Object.entries(report.emulator?.rules ?? {})) {
    if (rule === 'parentTopic') {
      const parent = report.run.topic.split('/')[0] ?? '';
      causes.push(`PublishRejected by the parentTopic rule (${n} times): the parent topic ${JSON.stringify(parent)} does not exist on the instance (create it, or start the emulator with --parent-topics ${parent})`);
    } else {
      causes.push(`the emulator's rule ${rule} refused ${n} (see the README's rule table)`);
    }
  }
  const lost = report.errors['ConnectionLost'] ?? 0;
  if (lost > 0) causes.push(`the broker closed the session after publishing (ConnectionLost ${lost}, reconnects ${report.reconnects}; over MQTT 3.1.1 that is how a broker refuses a message)`);
  return new SimulatorError('NothingPublished', `No message got through: ${what}${causes.length > 0 ? `; ${causes.join('; ')}` : ''}`);
}

/**
 * The parent topic a topic template publishes under, which the embedded emulator must have "created" (the service's
 * rule): the template's first level, or any parent when that level has a placeholder.
 */
export function parentTopicsOf(template: string): readonly string[] | '*' {
  const first = template.split('/')[0] ?? '';
  return first.includes('%') || first === '' ? '*' : [first];
}
