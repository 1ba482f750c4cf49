/**
 * What a run adds for a game day (`scenario`) or a backend subscriber (`consumer`): the scenario resolved against the
 * run and checked against its target before anything starts; then, around the devices, the fault relay and each
 * device's route through it, the heal tracker, the message ledger and the backend subscriber that fills it, the
 * credential ladder, the operator's OpenAPI client for revokes, and the emulator's controls and stats. At the end it
 * turns what it saw into the report's `faults`, `delivery`, `emulator` and `relay`.
 */
import type { CredentialSource } from '../credential.js';
import { MemoryCredentialStore } from '../provisioner/memory-store.js';
import { resolveAccountCredentials } from '../provisioner/env.js';
import { Provisioner } from '../provisioner/provisioner.js';
import { recoveringSource } from '../register-and-connect.js';
import { type BacklogOutcome, QUEUE_READ_TIMEOUT_MS, type ReadQueue, backlogWarning, settleBacklog } from './backlog.js';
import type { Clock } from './clock.js';
import { type Consumer, consumerClientId, startConsumer } from './consumer.js';
import type { BrokerAddress, DeviceRoute } from './device.js';
import { EmulatorControls } from './emulator-controls.js';
import { FaultRelay } from './fault-relay.js';
import { GameDay } from './game-day.js';
import { HealTracker } from './heal.js';
import { encodeHistogram, newLatencyHistogram, summarizeHistogram } from './histogram.js';
import { MessageLedger, payloadIdentity } from './ledger.js';
import type { SimulationMetrics } from './metrics.js';
import { type ResolvedSettings, simulatedClientId } from './options.js';
import type { DeliveryReport, FaultReport } from './report-format.js';
import type { GameDayPlan } from './game-day-plan.js';
import { EMULATOR_KINDS, type FaultPlan, NETWORK_KINDS, hits, invalidScenario } from './scenario.js';
import type { SimulationTarget } from './target.js';

/** The OpenAPI endpoint a target's provisioner calls, when it names one (a region's endpoint is the service's). */
function endpointOf(target: SimulationTarget): string | undefined {
  const endpoint = (target.provisioner as { endpoint?: unknown }).endpoint;
  return typeof endpoint === 'string' ? endpoint : undefined;
}

/** The controls of the emulator a target names by its endpoint, when it is one. */
export async function emulatorControlsOf(target: SimulationTarget): Promise<EmulatorControls | undefined> {
  const endpoint = endpointOf(target);
  return endpoint === undefined ? undefined : EmulatorControls.probe(endpoint);
}

/**
 * Check that a target whose controls are `controls` can play a game day: required when the scenario has a kind that
 * acts on an emulator (a broker restart, a revoke, an OpenAPI fault burst).
 * @throws InvalidScenarioError `InvalidScenario` naming the first such fault when the target is not an emulator.
 */
export function checkControls(plan: GameDayPlan, target: SimulationTarget, controls: EmulatorControls | undefined): void {
  const endpoint = endpointOf(target);
  const needs = plan.plans.find((p) => EMULATOR_KINDS.has(p.kind));
  if (needs && !controls) {
    throw invalidScenario(plan.source, `faults[${needs.fault}].kind`, `${needs.kind} acts on an emulator (its /_emulator controls), and the run's target ${endpoint === undefined ? 'has no OpenAPI endpoint of its own' : `${endpoint} does not answer GET /_emulator/stats`}: run it against the embedded emulator (no --endpoint) or an emulator you started`);
  }
}

/** Reads of the backend subscriber's queue at the emulator, when the target is one. */
function readQueueOf(controls: EmulatorControls | undefined, clientId: string): ReadQueue | undefined {
  return controls === undefined ? undefined : (options) => controls.queue(clientId, options);
}

/**
 * Before a game day against an emulator given by endpoint whose broker restarts: say so when it paces or bounds the
 * backend subscriber's queue (backlog.ts), once for the run (shard 1).
 */
async function warnOfBacklog(input: RigInput): Promise<void> {
  const { plan, settings, controls, target } = input;
  if (input.embedded || !controls || !plan.consumer || settings.qos === 0 || settings.shard.index !== 1) return;
  if (!plan.plans.some((p) => p.kind === 'broker-restart')) return;
  const view = await controls.queue(consumerClientId(settings.groupId, settings.shard), { countOnly: true, timeoutMs: QUEUE_READ_TIMEOUT_MS }).catch(() => undefined);
  const warning = backlogWarning(endpointOf(target) ?? target.brokerUrl, view, settings.backlogTimeoutMs);
  if (warning !== undefined) input.onWarning?.(warning);
}

/** What {@link GameDayRig.start} needs. */
export interface RigInput {
  readonly plan: GameDayPlan;
  readonly settings: ResolvedSettings;
  readonly target: SimulationTarget;
  /** The run's broker (devices dial it, or the relay does for them). */
  readonly broker: BrokerAddress;
  /** The target is the run's own embedded emulator. */
  readonly embedded: boolean;
  readonly controls: EmulatorControls | undefined;
  readonly clock: Clock;
  readonly metrics: SimulationMetrics;
  readonly onWarning?: (message: string) => void;
}

/** The game day's machinery around the devices of one run. */
export class GameDayRig {
  readonly heal: HealTracker | undefined;
  readonly ledger: MessageLedger | undefined;
  readonly #input: RigInput;
  readonly #relay: FaultRelay | undefined;
  /** Per device of the shard (local index), its relay group, or -1 to dial the broker. */
  readonly #groupOf: Int32Array | undefined;
  readonly #consumer: Consumer | undefined;
  readonly #ladder: Provisioner | undefined;
  readonly #operator: Provisioner | undefined;
  readonly #gameDay: GameDay | undefined;
  /** Listeners to the backend subscriber's arrivals (the backlog's wait). */
  readonly #arrivals: Set<() => void>;

  private constructor(input: RigInput, parts: {
    heal: HealTracker | undefined;
    ledger: MessageLedger | undefined;
    relay: FaultRelay | undefined;
    groupOf: Int32Array | undefined;
    groups: Map<FaultPlan, number[]>;
    consumer: Consumer | undefined;
    ladder: Provisioner | undefined;
    operator: Provisioner | undefined;
    arrivals: Set<() => void>;
  }) {
    this.#input = input;
    this.#arrivals = parts.arrivals;
    this.heal = parts.heal;
    this.ledger = parts.ledger;
    this.#relay = parts.relay;
    this.#groupOf = parts.groupOf;
    this.#consumer = parts.consumer;
    this.#ladder = parts.ladder;
    this.#operator = parts.operator;
    const { settings, plan, clock, controls } = input;
    const operator = parts.operator;
    this.#gameDay = plan.scenario
      ? new GameDay({
          plans: plan.plans,
          range: settings.range,
          clock,
          heal: parts.heal as HealTracker,
          ...(parts.ledger ? { ledger: parts.ledger } : {}),
          ...(controls ? { controls } : {}),
          // Every shard has an embedded emulator of its own; a shared one is restarted by shard 1 only.
          actsOnEmulator: input.embedded || settings.shard.index === 1,
          ...(parts.relay ? { relay: { relay: parts.relay, groups: parts.groups } } : {}),
          ...(operator ? { revoker: { refresh: (id: string) => operator.refresh(id), unregister: (id: string) => operator.unregister(id) } } : {}),
          clientIdOf: (index) => simulatedClientId(settings.groupId, index),
          ...(input.onWarning ? { onWarning: input.onWarning } : {}),
        })
      : undefined;
  }

  /** Start the relay, the backend subscriber and the clients a game day needs; nothing of it is left on failure. */
  static async start(input: RigInput): Promise<GameDayRig> {
    const { plan, settings, target, clock } = input;
    const [start, end] = settings.range;
    const ledger = plan.consumer ? new MessageLedger(settings.range, settings.qos) : undefined;
    const heal = plan.scenario ? new HealTracker(settings.range, clock, ledger) : undefined;
    const network = plan.plans.filter((p) => NETWORK_KINDS.has(p.kind));
    const revokes = plan.plans.some((p) => p.kind === 'revoke');
    let relay: FaultRelay | undefined;
    let consumer: Consumer | undefined;
    let ladder: Provisioner | undefined;
    let operator: Provisioner | undefined;
    const groups = new Map<FaultPlan, number[]>();
    let groupOf: Int32Array | undefined;
    const arrivals = new Set<() => void>();
    try {
      if (network.length > 0) {
        // Devices hit alike by the network faults share a relay port: one listener per distinct set of faults.
        groupOf = new Int32Array(end - start).fill(-1);
        const bySignature = new Map<string, number>();
        for (let index = start; index < end; index++) {
          const signature = network.map((p, k) => (hits(p, index) ? k : -1)).filter((k) => k >= 0).join(',');
          if (signature === '') continue;
          let group = bySignature.get(signature);
          if (group === undefined) {
            group = bySignature.size;
            bySignature.set(signature, group);
            for (const k of signature.split(',')) {
              const p = network[Number(k)] as FaultPlan;
              groups.set(p, [...(groups.get(p) ?? []), group]);
            }
          }
          groupOf[index - start] = group;
        }
        relay = await FaultRelay.start({ host: input.broker.host, port: input.broker.port }, bySignature.size);
      }
      if (ledger && plan.filter !== undefined) {
        const account = resolveAccountCredentials(target.provisioner, target.provisioner.env ?? process.env);
        consumer = await startConsumer({
          brokerUrl: target.brokerUrl,
          ...(target.ca === undefined ? {} : { ca: target.ca }),
          ...(target.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: target.rejectUnauthorized }),
          instanceId: target.provisioner.instanceId,
          account: { accessKeyId: account.accessKeyId, accessKeySecret: account.accessKeySecret },
          clientId: consumerClientId(settings.groupId, settings.shard),
          filter: plan.filter,
          qos: settings.qos,
          onMessage: (payload) => {
            const id = payloadIdentity(payload);
            if (id === undefined) ledger.foreign += 1;
            else ledger.delivered(id.index, id.seq);
            for (const listener of arrivals) listener();
          },
        });
      }
      // The devices' own ladder (their store, then Get, then Register), as registerAndConnect's devices climb it.
      if (settings.client === 'connector' || revokes) ladder = new Provisioner({ ...target.provisioner, retry: {} });
      // An operator elsewhere revokes: a store of its own, so the devices learn of it only by being refused.
      if (revokes) operator = new Provisioner({ ...target.provisioner, store: new MemoryCredentialStore(), retry: {} });
      await warnOfBacklog(input);
    } catch (error) {
      await relay?.close();
      await consumer?.close();
      ladder?.close();
      operator?.close();
      throw error;
    }
    return new GameDayRig(input, { heal, ledger, relay, groupOf, groups, consumer, ladder, operator, arrivals });
  }

  /** Where device `index` connects and how it heals. */
  route(index: number): Pick<DeviceRoute, 'dial' | 'ladder'> {
    const group = this.#groupOf?.[index - this.#input.settings.range[0]] ?? -1;
    const ladder: CredentialSource | undefined = this.#ladder ? recoveringSource(this.#ladder, simulatedClientId(this.#input.settings.groupId, index), 'register') : undefined;
    return {
      ...(group >= 0 && this.#relay ? { dial: this.#relay.address(group) } : {}),
      ...(ladder ? { ladder } : {}),
    };
  }

  /** The ladder for a device, for connector devices (raw devices get theirs in {@link route}). */
  ladderOf(index: number): CredentialSource | undefined {
    return this.route(index).ladder;
  }

  /** The connecting phase starts: the faults' clock starts. */
  begin(): void {
    this.#gameDay?.start();
  }

  /** Has the backend subscriber received every message the devices accepted? */
  delivered(): boolean {
    return this.ledger === undefined || this.ledger.outstanding === 0;
  }

  /**
   * The faults are over (lifted if still in force), and the devices are judged: call before they disconnect (a
   * device not back now is not healed; its disconnecting is no fault's doing).
   */
  async stop(): Promise<void> {
    await this.#gameDay?.stop();
    this.heal?.close();
  }

  /**
   * After the devices disconnected, before {@link results}: when the backend subscriber still misses messages, wait
   * (at most `backlogTimeoutMs`, ended by `signal`) while its backlog at the broker drains, then count what the
   * broker still queues for it as queued, not lost (backlog.ts). QoS 0: nothing is queued for it, nothing to wait for.
   */
  async settleBacklog(signal?: AbortSignal): Promise<BacklogOutcome | undefined> {
    const { settings, clock, controls, onWarning } = this.#input;
    const consumer = this.#consumer;
    if (!this.ledger || !consumer || settings.qos === 0) return undefined;
    return settleBacklog({
      ledger: this.ledger,
      readQueue: readQueueOf(controls, consumerClientId(settings.groupId, settings.shard)),
      clock,
      timeoutMs: settings.backlogTimeoutMs,
      signal,
      onArrival: (listener) => {
        this.#arrivals.add(listener);
        return () => this.#arrivals.delete(listener);
      },
      onWarning,
      subscriberInterrupted: () => consumer.interrupted,
    });
  }

  /**
   * What the report adds. Call after {@link stop} and after the devices disconnected: the messages a connector device
   * still held when its connection was ended are then known (held, not lost).
   */
  results(): { faults?: FaultReport[]; delivery?: DeliveryReport; relay?: FaultRelay['stats'] } {
    const epoch = (mono: number | undefined): string | null => (mono === undefined ? null : new Date(this.#input.metrics.epochOf(mono)).toISOString());
    const groupId = this.#input.settings.groupId;
    const faults = this.#gameDay?.results().map(({ fault, result }): FaultReport => {
      const heal = result?.heal;
      return {
        id: fault.plan.id,
        kind: fault.plan.kind,
        label: fault.plan.label ?? null,
        fault: fault.plan.fault,
        plannedAtMs: fault.plan.atMs,
        plannedForMs: fault.plan.forMs,
        startedAt: epoch(fault.startedAt),
        endedAt: epoch(fault.endedAt),
        targeted: result?.targeted ?? 0,
        hit: result?.hit ?? 0,
        offlineAtStart: result?.offlineAtStart ?? 0,
        healed: result?.healed ?? 0,
        notHealed: result?.notHealed ?? 0,
        notHealedDevices: (result?.notHealedDevices ?? []).map((d) => ({
          clientId: simulatedClientId(groupId, d.index),
          index: d.index,
          lostAt: epoch(d.lostAt) as string,
          connects: d.connects,
          lastConnectAt: epoch(d.lastConnectAt),
          nextConnectAt: epoch(d.nextConnectAt),
          held: d.held ?? null,
        })),
        healMs: summarizeHistogram(heal ?? newLatencyHistogram()),
        healUs: encodeHistogram(heal ?? newLatencyHistogram()),
        messages: result?.messages ?? null,
        errors: { ...fault.errors },
      };
    });
    const delivery = this.ledger ? { ...this.ledger.totals(), foreign: this.ledger.foreign } : undefined;
    return {
      ...(faults ? { faults } : {}),
      ...(delivery ? { delivery } : {}),
      ...(this.#relay ? { relay: { ...this.#relay.stats } } : {}),
    };
  }

  /** Stop everything the rig started. */
  async close(): Promise<void> {
    await this.#gameDay?.stop();
    this.heal?.close();
    await this.#consumer?.close();
    await this.#relay?.close();
    this.#ladder?.close();
    this.#operator?.close();
  }
}
