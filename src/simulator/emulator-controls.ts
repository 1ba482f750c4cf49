/**
 * The emulator's own controls (`/_emulator/*` on its OpenAPI endpoint) as a game day uses them: restart the broker
 * (with downtime), a burst of OpenAPI faults, drop a client's session, and the stats (what the broker's rules refused,
 * which OpenAPI calls were made). Over HTTP, so it works the same for the embedded emulator (in its own process) and
 * for one the user started and passed with `--endpoint`.
 */

/** What the simulator reads of `GET /_emulator/stats`. */
export interface EmulatorStatsView {
  actions: Record<string, { ok: number; errors: Record<string, number> }>;
  mqtt: { rules: Record<string, number> };
}

/** What the simulator reads of `GET /_emulator/queue` (the emulator's queue-view.ts). */
export interface QueueReadout {
  count: number;
  /** Absent when only the count was asked. */
  messages?: Array<{ payload: string; sent: boolean }>;
  truncated: boolean;
  offline: {
    delivery: 'paced' | 'immediate';
    detectionDelayMs: { min: number; max: number };
    batchSize: number;
    batchIntervalMs: number;
    maxMessages: number | null;
    maxBytes: number | null;
    policy: string;
  };
}

/** How long a control may take beyond what it asks for (a restart's downtime). */
const CONTROL_TIMEOUT_MS = 30_000;

/** A client of one emulator's controls. */
export class EmulatorControls {
  readonly #base: string;

  private constructor(apiEndpoint: string) {
    this.#base = apiEndpoint.replace(/\/+$/, '');
  }

  /** The controls of an emulator at `apiEndpoint`, or `undefined` when that endpoint is not an emulator's. */
  static async probe(apiEndpoint: string, timeoutMs = 2_000): Promise<EmulatorControls | undefined> {
    const controls = new EmulatorControls(apiEndpoint);
    try {
      const stats = await controls.stats(timeoutMs);
      return typeof stats.actions === 'object' && typeof stats.mqtt?.rules === 'object' ? controls : undefined;
    } catch {
      return undefined;
    }
  }

  async #call(method: 'GET' | 'POST', path: string, body: Record<string, unknown> | undefined, timeoutMs: number, signal?: AbortSignal): Promise<Record<string, unknown>> {
    const timeout = AbortSignal.timeout(timeoutMs);
    const response = await fetch(`${this.#base}/_emulator/${path}`, {
      method,
      signal: signal === undefined ? timeout : AbortSignal.any([timeout, signal]),
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (!response.ok || typeof parsed !== 'object' || parsed === null) {
      const message = (parsed as { Message?: unknown } | undefined)?.Message;
      throw new Error(`${method} /_emulator/${path} answered ${response.status}${typeof message === 'string' ? `: ${message}` : ''}`);
    }
    return parsed as Record<string, unknown>;
  }

  async stats(timeoutMs = CONTROL_TIMEOUT_MS): Promise<EmulatorStatsView> {
    return (await this.#call('GET', 'stats', undefined, timeoutMs)) as unknown as EmulatorStatsView;
  }

  /** Restart the broker, down for `downMs`; resolves once it listens again. */
  async restart(downMs: number): Promise<void> {
    await this.#call('POST', 'restart', { downMs }, downMs + CONTROL_TIMEOUT_MS);
  }

  /** For `forMs`, fail a share `rate` of the OpenAPI calls with one of `codes`. */
  async faults(rate: number, codes: readonly string[], forMs: number): Promise<void> {
    await this.#call('POST', 'faults', { rate, codes: codes.join(','), forMs }, CONTROL_TIMEOUT_MS);
  }

  /**
   * One persistent session's queue at the emulator's broker: its count, and (unless `countOnly`) its messages, each
   * payload's first `payloadBytes`. Ends within `timeoutMs`, or when `signal` aborts. Rejects when the emulator has no
   * such control (an older version answers 404) or does not answer.
   */
  async queue(clientId: string, options: { countOnly?: boolean; payloadBytes?: number; timeoutMs: number; signal?: AbortSignal }): Promise<QueueReadout> {
    const query = new URLSearchParams({ clientId, ...(options.countOnly ? { count: '1' } : {}), ...(options.payloadBytes === undefined ? {} : { payloadBytes: String(options.payloadBytes) }) });
    const answer = await this.#call('GET', `queue?${query.toString()}`, undefined, options.timeoutMs, options.signal);
    if (typeof answer['count'] !== 'number' || typeof answer['offline'] !== 'object') throw new Error('GET /_emulator/queue answered without a count');
    return answer as unknown as QueueReadout;
  }

  /** Drop a client's session as a network cut would; whether it was connected. */
  async disconnect(clientId: string): Promise<boolean> {
    return (await this.#call('POST', 'disconnect', { clientId }, CONTROL_TIMEOUT_MS))['disconnected'] === true;
  }
}

/** What changed in the emulator's stats between two snapshots: OpenAPI calls by action, and the rules' refusals. */
export interface EmulatorDelta {
  /** OpenAPI calls by action: answered ok, and failed by error code. */
  actions: Record<string, { ok: number; errors: Record<string, number> }>;
  /** Refusals (and changes) by the broker's rules, by rule name. */
  rules: Record<string, number>;
}

/** `after` minus `before` (only what changed). */
export function statsDelta(before: EmulatorStatsView, after: EmulatorStatsView): EmulatorDelta {
  const actions: EmulatorDelta['actions'] = {};
  for (const [action, now] of Object.entries(after.actions)) {
    const then = before.actions[action] ?? { ok: 0, errors: {} };
    const errors: Record<string, number> = {};
    for (const [code, n] of Object.entries(now.errors)) {
      const d = n - (then.errors[code] ?? 0);
      if (d > 0) errors[code] = d;
    }
    const ok = now.ok - then.ok;
    if (ok > 0 || Object.keys(errors).length > 0) actions[action] = { ok, errors };
  }
  const rules: Record<string, number> = {};
  for (const [rule, n] of Object.entries(after.mqtt.rules)) {
    const d = n - (before.mqtt.rules[rule] ?? 0);
    if (d > 0) rules[rule] = d;
  }
  return { actions, rules };
}
