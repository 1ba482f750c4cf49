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
import { ValidationError } from '../errors.js';
import type { Clock } from './clock.js';
import { type Consumer, consumerClientId, fleetFilter, startConsumer } from './consumer.js';
import type { BrokerAddress, DeviceRoute } from './device.js';
import { type EmulatorDelta, EmulatorControls, type EmulatorStatsView, statsDelta } from './emulator-controls.js';
import { FaultRelay } from './fault-relay.js';
import { GameDay } from './game-day.js';
import { HealTracker } from './heal.js';
import { encodeHistogram, newLatencyHistogram, summarizeHistogram } from './histogram.js';
import { MessageLedger, PAYLOAD_ID_SIZE, payloadIdentity } from './ledger.js';
import type { SimulationMetrics } from './metrics.js';
import { type ResolvedSettings, simulatedClientId } from './options.js';
import type { DeliveryReport, FaultReport } from './report-format.js';
import { EMULATOR_KINDS, type FaultPlan, NETWORK_KINDS, type Scenario, hits, invalidScenario, planScenario } from './scenario.js';
import type { SimulationTarget } from './target.js';

/** A game day resolved against its run, before anything starts. */
export interface GameDayPlan {
  readonly scenario: Scenario | undefined;
  /** How the scenario is named in errors (its file). */
  readonly source: string;
  readonly plans: readonly FaultPlan[];
  /** A backend subscriber counts deliveries. */
  readonly consumer: boolean;
  /** Its topic filter. */
  readonly filter: string | undefined;
}

/**
 * Resolve a scenario against the run's settings and check what it needs of them; `undefined` when the run has neither
 * a scenario nor a consumer.
 * @throws InvalidScenarioError `InvalidScenario`, ValidationError `InvalidOption` (a payload too small for the
 *   message's identity, a topic no subscriber can take, network faults for connector devices over TLS).
 */
export function planGameDay(settings: ResolvedSettings, scenario: Scenario | undefined, source: string | undefined, brokerTls: boolean): GameDayPlan | undefined {
  const consumer = settings.consumer ?? scenario !== undefined;
  if (!scenario && !consumer) return undefined;
  const name = source ?? scenario?.name ?? 'the scenario';
  const plans = scenario ? planScenario(scenario, { devices: settings.devices, durationMs: settings.durationMs, groupId: settings.groupId }, name) : [];
  let filter: string | undefined;
  if (consumer) {
    if (settings.payloadSize < PAYLOAD_ID_SIZE) {
      throw new ValidationError('InvalidOption', `Option payloadSize (--payload-size) is ${settings.payloadSize}: with a backend subscriber${scenario ? ' (a scenario has one)' : ''} each message carries its send time, device index and sequence, ${PAYLOAD_ID_SIZE} bytes at least`);
    }
    filter = fleetFilter(settings.topicTemplate, settings.topic);
  }
  const network = plans.find((p) => NETWORK_KINDS.has(p.kind));
  if (network && brokerTls && settings.client === 'connector') {
    throw invalidScenario(name, `faults[${network.fault}].kind`, `${network.kind} goes through the fault relay, which the connector's TLS check would see as 127.0.0.1, not the broker: run connector devices over mqtt:// for network faults, or raw devices`);
  }
  return { scenario, source: name, plans, consumer, filter };
}

/** The OpenAPI endpoint a target's provisioner calls, when it names one. */
function endpointOf(target: SimulationTarget): string | undefined {
  const endpoint = (target.provisioner as { endpoint?: unknown }).endpoint;
  return typeof endpoint === 'string' ? endpoint : undefined;
}

/**
 * The emulator's controls for a game day against a target given by the caller: required when the scenario has a
 * kind that acts on an emulator (a broker restart, a revoke, an OpenAPI fault burst).
 * @throws InvalidScenarioError `InvalidScenario` naming the first such fault when the target is not an emulator.
 */
export async function controlsOf(plan: GameDayPlan, target: SimulationTarget): Promise<EmulatorControls | undefined> {
  const endpoint = endpointOf(target);
  const controls = endpoint === undefined ? undefined : await EmulatorControls.probe(endpoint);
  const needs = plan.plans.find((p) => EMULATOR_KINDS.has(p.kind));
  if (needs && !controls) {
    throw invalidScenario(plan.source, `faults[${needs.fault}].kind`, `${needs.kind} acts on an emulator (its /_emulator controls), and the run's target ${endpoint === undefined ? 'has no OpenAPI endpoint of its own' : `${endpoint} does not answer GET /_emulator/stats`}: run it against the embedded emulator (no --endpoint) or an emulator you started`);
  }
  return controls;
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
  readonly #statsBefore: EmulatorStatsView | undefined;

  private constructor(input: RigInput, parts: {
    heal: HealTracker | undefined;
    ledger: MessageLedger | undefined;
    relay: FaultRelay | undefined;
    groupOf: Int32Array | undefined;
    groups: Map<FaultPlan, number[]>;
    consumer: Consumer | undefined;
    ladder: Provisioner | undefined;
    operator: Provisioner | undefined;
    statsBefore: EmulatorStatsView | undefined;
  }) {
    this.#input = input;
    this.heal = parts.heal;
    this.ledger = parts.ledger;
    this.#relay = parts.relay;
    this.#groupOf = parts.groupOf;
    this.#consumer = parts.consumer;
    this.#ladder = parts.ladder;
    this.#operator = parts.operator;
    this.#statsBefore = parts.statsBefore;
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
          },
        });
      }
      // The devices' own ladder (their store, then Get, then Register), as registerAndConnect's devices climb it.
      if (settings.client === 'connector' || revokes) ladder = new Provisioner({ ...target.provisioner, retry: {} });
      // An operator elsewhere revokes: a store of its own, so the devices learn of it only by being refused.
      if (revokes) operator = new Provisioner({ ...target.provisioner, store: new MemoryCredentialStore(), retry: {} });
    } catch (error) {
      await relay?.close();
      await consumer?.close();
      ladder?.close();
      operator?.close();
      throw error;
    }
    const statsBefore = await input.controls?.stats().catch(() => undefined);
    return new GameDayRig(input, { heal, ledger, relay, groupOf, groups, consumer, ladder, operator, statsBefore });
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
   * The faults are over (lifted if still in force), and the run's deliveries are in: what the report adds. Call
   * before the devices disconnect (a device not back now is not healed).
   */
  async finish(): Promise<{ faults?: FaultReport[]; delivery?: DeliveryReport; emulator?: EmulatorDelta; relay?: FaultRelay['stats'] }> {
    await this.#gameDay?.stop();
    const epoch = (mono: number | undefined): string | null => (mono === undefined ? null : new Date(this.#input.metrics.epochOf(mono)).toISOString());
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
        healed: result?.healed ?? 0,
        notHealed: result?.notHealed ?? 0,
        healMs: summarizeHistogram(heal ?? newLatencyHistogram()),
        healUs: encodeHistogram(heal ?? newLatencyHistogram()),
        messages: result?.messages ?? null,
        errors: { ...fault.errors },
      };
    });
    const delivery = this.ledger ? { ...this.ledger.totals(), foreign: this.ledger.foreign } : undefined;
    const after = this.#statsBefore ? await this.#input.controls?.stats().catch(() => undefined) : undefined;
    return {
      ...(faults ? { faults } : {}),
      ...(delivery ? { delivery } : {}),
      ...(this.#statsBefore && after ? { emulator: statsDelta(this.#statsBefore, after) } : {}),
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
