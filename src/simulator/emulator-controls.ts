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

  async #call(method: 'GET' | 'POST', path: string, body: Record<string, unknown> | undefined, timeoutMs: number): Promise<Record<string, unknown>> {
    const response = await fetch(`${this.#base}/_emulator/${path}`, {
      method,
      signal: AbortSignal.timeout(timeoutMs),
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
