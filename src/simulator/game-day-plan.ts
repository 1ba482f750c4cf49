/**
 * A game day resolved against its run before anything starts (pure: no I/O, nothing loaded but the checks), so the
 * CLI can refuse a scenario that cannot be played before it starts a shard, an emulator or a device.
 */
import { ValidationError } from '../errors.js';
import { PAYLOAD_ID_SIZE } from './ledger.js';
import { type ResolvedSettings, fleetFilter } from './options.js';
import { type FaultPlan, NETWORK_KINDS, type Scenario, invalidScenario, planScenario } from './scenario.js';

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
