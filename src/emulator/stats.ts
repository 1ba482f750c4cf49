/** Counters of one API action. */
export interface ActionStats {
  /** Successful calls. */
  ok: number;
  /** Failed calls by error Code. */
  errors: Record<string, number>;
}

/** What the persistent sessions hold for their clients: QoS 1/2 messages queued while offline or not yet acknowledged. */
export interface QueueStats {
  /** Sessions holding at least one message. */
  sessions: number;
  /** Messages held, all sessions together. */
  messages: number;
  /** Their bytes (topics and payloads). */
  bytes: number;
  /** The most messages one session holds (at most `maxOfflineMessages`). */
  largestMessages: number;
  /** The most bytes one session holds (at most `maxOfflineBytes`). */
  largestBytes: number;
}

/** What `GET /_emulator/stats` and `Emulator.stats()` return. */
export interface EmulatorStats {
  /**
   * By the request's Action (the `Action` parameter, or V3's `x-acs-action` header), including calls the gateway
   * refused: an action the emulator implements under its name, any other under `(unknown)`, none under `(none)`.
   */
  actions: Record<string, ActionStats>;
  mqtt: {
    /** Clients connected right now. */
    connected: number;
    /** CONNACKs sent, by return code (`"0"` = accepted; MQTT 5 reason codes as hex, such as `"0x86"`). */
    connacks: Record<string, number>;
    /** What the broker's rules and guards refused or changed, by rule name (see the README's rule table). */
    rules: Record<string, number>;
    /** What the persistent sessions hold now; what did not fit is counted under `rules.offlineQueue`. */
    queues: QueueStats;
  };
  /**
   * Clustered (the `redis` option) only: this process's id, the live processes, and the clients connected to any of
   * them. The counters above are this process's own; `mqtt.queues` is the cluster's (its queues are shared).
   */
  cluster?: { processId: string; processes: number; online: number };
}

/** Stats key of a request without an Action. */
export const NO_ACTION = '(none)';
/** Stats key of every Action the emulator does not implement, so that made-up names cannot grow the stats. */
export const UNKNOWN_ACTION = '(unknown)';

/**
 * Counters behind {@link EmulatorStats}. Keys are bounded: the known actions plus two, each with error codes from
 * the catalog, so no request can make them grow. Maps, not plain objects, so that no name reshapes them.
 */
export class StatsRecorder {
  readonly #actions = new Map<string, { ok: number; errors: Map<string, number> }>();
  readonly #connacks = new Map<number, number>();
  readonly #rules = new Map<string, number>();
  readonly #known: ReadonlySet<string>;

  /** @param knownActions - the actions counted under their own names (by default none: all are `(unknown)`). */
  constructor(knownActions: Iterable<string> = []) {
    this.#known = new Set(knownActions);
  }

  /** Count one API call under its Action (`undefined`/empty → `(none)`, unknown → `(unknown)`); `errorCode` undefined means success. */
  recordCall(action: string | undefined, errorCode?: string): void {
    const key = !action ? NO_ACTION : this.#known.has(action) ? action : UNKNOWN_ACTION;
    let entry = this.#actions.get(key);
    if (!entry) {
      entry = { ok: 0, errors: new Map() };
      this.#actions.set(key, entry);
    }
    if (errorCode === undefined) entry.ok++;
    else entry.errors.set(errorCode, (entry.errors.get(errorCode) ?? 0) + 1);
  }

  /** Count one CONNACK sent with this return code. */
  recordConnack(returnCode: number): void {
    this.#connacks.set(returnCode, (this.#connacks.get(returnCode) ?? 0) + 1);
  }

  /** Count one refusal (or change, such as a capped Keep Alive) by the broker rule `rule`. */
  recordRule(rule: string): void {
    this.#rules.set(rule, (this.#rules.get(rule) ?? 0) + 1);
  }

  /** A fresh plain-object snapshot; `connected` and `queues` come from the broker, which owns those numbers. */
  snapshot(connected: number, queues: QueueStats = EMPTY_QUEUES): EmulatorStats {
    const actions = Object.fromEntries(
      [...this.#actions].map(([action, { ok, errors }]) => [action, { ok, errors: Object.fromEntries(errors) }]),
    );
    // MQTT 3.1.1 return codes are 0 to 5, MQTT 5 failure reason codes 0x80 and up: one map holds both unambiguously.
    const connacks = Object.fromEntries(
      [...this.#connacks].sort(([a], [b]) => a - b).map(([rc, n]) => [rc >= 0x80 ? `0x${rc.toString(16)}` : String(rc), n]),
    );
    const rules = Object.fromEntries([...this.#rules].sort(([a], [b]) => a.localeCompare(b)));
    return { actions, mqtt: { connected, connacks, rules, queues: { ...queues } } };
  }
}

const EMPTY_QUEUES: QueueStats = Object.freeze({ sessions: 0, messages: 0, bytes: 0, largestMessages: 0, largestBytes: 0 });
