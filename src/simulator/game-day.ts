/**
 * Plays a scenario's faults during a run, on the run's clock from the start of connecting, and records each: when it
 * started and ended, and (through the heal tracker) which devices it knocked offline and how long each took to heal.
 *
 * Who does what: the fault relay (partition, latency, bandwidth) is this shard's own, for its own devices; a revoke
 * refreshes or unregisters this shard's chosen devices' credentials through the OpenAPI (as an operator would, with a
 * store of its own, so the devices learn of it only by being refused) and drops their sessions at the emulator; a
 * broker restart and an OpenAPI fault burst act on the emulator, which every shard of a run has to itself when it is
 * embedded, and which only shard 1 acts on when the shards share one (the others record the same timeline).
 */
import type { Clock } from './clock.js';
import type { EmulatorControls } from './emulator-controls.js';
import type { FaultRelay, NetworkEffect } from './fault-relay.js';
import { type FaultWatch, HIT_GRACE_MS, type HealTracker, type WatchResult } from './heal.js';
import type { MessageLedger } from './ledger.js';
import { type FaultPlan, devicesInRange } from './scenario.js';

/** What a revoke needs of the OpenAPI: an operator's calls, with a store apart from the devices'. */
export interface Revoker {
  refresh(clientId: string): Promise<unknown>;
  unregister(clientId: string): Promise<unknown>;
}

/** What a game day acts through. */
export interface GameDayContext {
  readonly plans: readonly FaultPlan[];
  /** This shard's device indexes, `[start, end)`. */
  readonly range: readonly [number, number];
  readonly clock: Clock;
  readonly heal: HealTracker;
  readonly ledger?: MessageLedger;
  /** The emulator's controls, when the target is an emulator. */
  readonly controls?: EmulatorControls;
  /** This shard acts on the broker and the OpenAPI (broker-restart, api-faults). */
  readonly actsOnEmulator: boolean;
  /** The fault relay, and the relay groups each network fault cuts. */
  readonly relay?: { readonly relay: FaultRelay; readonly groups: ReadonlyMap<FaultPlan, readonly number[]> };
  readonly revoker?: Revoker;
  readonly clientIdOf: (index: number) => string;
  readonly onWarning?: (message: string) => void;
}

/** What happened to one planned fault. */
export interface PlayedFault {
  readonly plan: FaultPlan;
  /** Run-clock times; `undefined` when it never started (the run ended first). */
  startedAt: number | undefined;
  endedAt: number | undefined;
  watch: FaultWatch | undefined;
  /** Failures of the fault's own actions, by code (a revoke call that failed, a control the emulator refused). */
  readonly errors: Record<string, number>;
}

/** Revokes in flight at once: the OpenAPI's rate limit is the provisioner's, this only bounds the sockets. */
const REVOKE_CONCURRENCY = 16;

/** The scenario of a run being played. */
export class GameDay {
  readonly #ctx: GameDayContext;
  readonly played: PlayedFault[];
  readonly #timers = new Set<unknown>();
  readonly #running = new Set<Promise<void>>();
  /** Network effects in force, to lift at the end. */
  readonly #active = new Map<FaultPlan, readonly number[]>();
  #stopped = false;

  constructor(ctx: GameDayContext) {
    this.#ctx = ctx;
    this.played = ctx.plans.map((plan) => ({ plan, startedAt: undefined, endedAt: undefined, watch: undefined, errors: {} }));
  }

  /** Schedule every fault from now (the start of connecting). */
  start(): void {
    for (const fault of this.played) this.#after(fault.plan.atMs, () => this.#track(this.#play(fault)));
  }

  #after(ms: number, run: () => void): void {
    const timer = this.#ctx.clock.setTimeout(() => {
      this.#timers.delete(timer);
      if (!this.#stopped) run();
    }, ms);
    this.#timers.add(timer);
  }

  #track(task: Promise<void>): void {
    this.#running.add(task);
    void task.finally(() => this.#running.delete(task));
  }

  /** Resolves after `ms`, or at once when the game day stops. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        this.#wakers.delete(wake);
        this.#ctx.clock.clearTimeout(timer);
        this.#timers.delete(timer);
        resolve();
      };
      const timer = this.#ctx.clock.setTimeout(wake, ms);
      this.#timers.add(timer);
      this.#wakers.add(wake);
    });
  }

  readonly #wakers = new Set<() => void>();

  #fail(fault: PlayedFault, code: string, message: string): void {
    fault.errors[code] = (fault.errors[code] ?? 0) + 1;
    if (fault.errors[code] === 1) this.#ctx.onWarning?.(`Fault ${fault.plan.id} (${fault.plan.kind}): ${message}`);
  }

  /** `elsewhere`: another shard acts (a shared broker), maybe a moment earlier by this shard's clock. */
  #begin(fault: PlayedFault, targets: readonly number[] | 'all', elsewhere = false): void {
    fault.startedAt = this.#ctx.clock.now();
    fault.watch = this.#ctx.heal.watch(targets, { lookbackMs: elsewhere ? HIT_GRACE_MS : 0, fromLoss: fault.plan.kind === 'revoke' });
  }

  #end(fault: PlayedFault): void {
    if (fault.endedAt !== undefined || fault.watch === undefined) return;
    fault.endedAt = this.#ctx.clock.now();
    this.#ctx.heal.end(fault.watch);
  }

  async #play(fault: PlayedFault): Promise<void> {
    const { plan } = fault;
    const [start, end] = this.#ctx.range;
    const targets = plan.devices === 'all' ? 'all' : devicesInRange(plan, start, end);
    switch (plan.kind) {
      case 'broker-restart': {
        this.#begin(fault, 'all', !this.#ctx.actsOnEmulator);
        if (this.#ctx.actsOnEmulator && this.#ctx.controls) {
          try {
            await this.#ctx.controls.restart(plan.forMs);
          } catch (error) {
            this.#fail(fault, 'ControlFailed', `the emulator did not restart its broker (${(error as Error).message})`);
          }
        } else {
          // Another shard restarts the shared broker: this one keeps the same timeline.
          await this.#sleep(plan.forMs);
        }
        this.#end(fault);
        return;
      }
      case 'partition':
      case 'latency':
      case 'bandwidth': {
        this.#begin(fault, targets);
        const relay = this.#ctx.relay;
        const groups = relay?.groups.get(plan) ?? [];
        const spec = plan.spec;
        const effect: NetworkEffect =
          spec.kind === 'latency' ? { kind: 'latency', ms: spec.ms } : spec.kind === 'bandwidth' ? { kind: 'bandwidth', bytesPerSec: spec.bytesPerSec } : { kind: 'partition' };
        relay?.relay.apply(plan.id, groups, effect);
        this.#active.set(plan, groups);
        await this.#sleep(plan.forMs);
        this.#lift(plan);
        this.#end(fault);
        return;
      }
      case 'revoke': {
        this.#begin(fault, targets);
        const spec = plan.spec;
        if (spec.kind !== 'revoke') return;
        const indexes = targets === 'all' ? Array.from({ length: end - start }, (_, i) => start + i) : targets;
        await this.#revoke(fault, indexes, spec.mode, spec.kick);
        this.#end(fault);
        return;
      }
      case 'api-faults': {
        this.#begin(fault, 'all', !this.#ctx.actsOnEmulator);
        const spec = plan.spec;
        if (spec.kind === 'api-faults' && this.#ctx.actsOnEmulator && this.#ctx.controls) {
          try {
            await this.#ctx.controls.faults(spec.rate, spec.codes, plan.forMs);
          } catch (error) {
            this.#fail(fault, 'ControlFailed', `the emulator did not start the fault burst (${(error as Error).message})`);
          }
        }
        await this.#sleep(Math.max(0, plan.forMs - (this.#ctx.clock.now() - (fault.startedAt as number))));
        this.#end(fault);
        return;
      }
    }
  }

  async #revoke(fault: PlayedFault, indexes: readonly number[], mode: 'refresh' | 'unregister', kick: boolean): Promise<void> {
    const { revoker, controls } = this.#ctx;
    if (!revoker) return;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < indexes.length && !this.#stopped) {
        const clientId = this.#ctx.clientIdOf(indexes[next++] as number);
        try {
          await (mode === 'refresh' ? revoker.refresh(clientId) : revoker.unregister(clientId));
        } catch (error) {
          this.#fail(fault, (error as { code?: string }).code ?? 'UnknownError', `${mode} of ${clientId} failed (${(error as Error).message})`);
          continue;
        }
        if (!kick || !controls) continue;
        try {
          await controls.disconnect(clientId);
        } catch (error) {
          this.#fail(fault, 'ControlFailed', `the emulator did not drop ${clientId}'s session (${(error as Error).message})`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(REVOKE_CONCURRENCY, indexes.length) }, worker));
  }

  #lift(plan: FaultPlan): void {
    const groups = this.#active.get(plan);
    if (groups === undefined) return;
    this.#active.delete(plan);
    this.#ctx.relay?.relay.lift(plan.id, groups);
  }

  /** Stop: no fault starts any more, network faults in force are lifted, faults being played end now. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const timer of this.#timers) this.#ctx.clock.clearTimeout(timer);
    this.#timers.clear();
    for (const wake of [...this.#wakers]) wake();
    for (const plan of [...this.#active.keys()]) this.#lift(plan);
    for (const fault of this.played) if (fault.startedAt !== undefined) this.#end(fault);
    await Promise.allSettled([...this.#running]);
  }

  /** Each fault's outcome: call after the run (deliveries in), with the ledger when there is one. */
  results(): Array<{ fault: PlayedFault; result: WatchResult | undefined }> {
    return this.played.map((fault) => ({ fault, result: fault.watch?.result(this.#ctx.ledger) }));
  }
}
