/**
 * The one progress display of every long CLI command, on stderr: on a terminal, one line redrawn in place that fits
 * the terminal's width (a bar, count, rate and ETA, then the command's details); otherwise a plain line every few
 * seconds, so a CI log shows the job is alive without being flooded.
 */

/** Where and how progress is drawn. */
export interface ProgressOptions {
  /** The command's name, first on every line (e.g. `provision`). */
  label: string;
  /** How many items make 100%. */
  total: number;
  /** Redraw one line in place (stderr is a terminal) or print whole lines. */
  tty: boolean;
  /** The terminal's width in columns (asked at every redraw: a terminal can be resized). @default 80 */
  columns?: () => number | undefined;
  write: (text: string) => void;
  /** Monotonic clock in ms. @default performance.now */
  now?: () => number;
  /** Without a terminal, one line this often. @default 5000 */
  lineEveryMs?: number;
  /** On a terminal, redraw at most this often. @default 100 */
  redrawEveryMs?: number;
  /**
   * The count already done when the display starts (a phase that begins where the previous one ended): the rate
   * counts only what is done from then on. @default 0
   */
  initial?: number;
}

/** How far back the rate looks: long enough to be steady, short enough to follow a change of pace. */
const RATE_WINDOW_MS = 5_000;
const DEFAULT_COLUMNS = 80;

/** `1m05s`, `42s`, `2h03m`. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** `950/s`, `12.5/s`, `0.3/s`. */
function formatRate(perSecond: number): string {
  return `${perSecond >= 100 ? Math.round(perSecond) : perSecond.toFixed(1)}/s`;
}

export class Progress {
  readonly #options: Required<Omit<ProgressOptions, 'columns'>> & { columns: () => number | undefined };
  readonly #samples: { at: number; done: number }[] = [];
  readonly #started: number;
  #lastDraw = Number.NEGATIVE_INFINITY;
  #done = 0;
  #details = '';
  /** The most done so far: what the rate counts, so that a count that goes down (devices going offline) never makes it negative. */
  #peak = 0;
  #drawn = false;
  #finished = false;
  /** The run was stopped before its end: the last line says so instead of "done" or an ETA. */
  #stopped = false;

  constructor(options: ProgressOptions) {
    this.#options = {
      columns: () => DEFAULT_COLUMNS,
      now: () => performance.now(),
      lineEveryMs: 5_000,
      redrawEveryMs: 100,
      initial: 0,
      ...options,
    };
    this.#started = this.#options.now();
    this.#done = this.#options.initial;
    this.#peak = this.#done;
    this.#samples.push({ at: this.#started, done: this.#peak });
  }

  /** Record progress; draws when it is time to. `details` is the command's own short status (counts, errors). */
  update(done: number, details = ''): void {
    if (this.#finished) return;
    const now = this.#options.now();
    this.#done = done;
    this.#peak = Math.max(this.#peak, done);
    this.#details = details;
    this.#samples.push({ at: now, done: this.#peak });
    while (this.#samples.length > 2 && (this.#samples[1]?.at ?? now) <= now - RATE_WINDOW_MS) this.#samples.shift();
    const every = this.#options.tty ? this.#options.redrawEveryMs : this.#options.lineEveryMs;
    if (now - this.#lastDraw >= every) this.#draw(now);
  }

  /**
   * Draw the final state and end the line (on a terminal). Idempotent. `end.done` replaces the count (what was really
   * done, when items given up count as settled in the updates); `end.stopped`: the run was interrupted, and the line
   * says `stopped` instead of `done` or an ETA.
   */
  finish(details?: string, end: { done?: number; stopped?: boolean } = {}): void {
    if (this.#finished) return;
    if (details !== undefined) this.#details = details;
    if (end.done !== undefined) this.#done = end.done;
    if (end.stopped === true) this.#stopped = true;
    this.#draw(this.#options.now());
    if (this.#options.tty) this.#options.write('\n');
    this.#finished = true;
  }

  /** Items per second over the last few seconds. */
  rate(now = this.#options.now()): number {
    const first = this.#samples[0];
    if (!first || now - first.at <= 0) return 0;
    return ((this.#peak - first.done) * 1000) / (now - first.at);
  }

  /** The text of one progress line (without the carriage return), fitted to `columns` when given. */
  line(now = this.#options.now(), columns?: number): string {
    const { label, total } = this.#options;
    const rate = this.rate(now);
    const remaining = total - this.#done;
    const eta = this.#stopped ? 'stopped' : remaining <= 0 ? 'done' : rate > 0 ? `ETA ${formatDuration((remaining / rate) * 1000)}` : 'ETA --';
    const percent = total > 0 ? Math.floor((this.#done / total) * 100) : 100;
    const head = `${this.#done}/${total} ${percent}% ${formatRate(rate)} ${eta} ${formatDuration(now - this.#started)}`;
    const details = this.#details ? ` · ${this.#details}` : '';
    if (columns === undefined) return `${label}: ${head}${details}`;
    // Room for a bar only when the terminal is wide enough to keep the numbers.
    const barWidth = Math.min(30, columns - (label.length + head.length + 6));
    const bar = barWidth >= 10 ? ` [${'#'.repeat(Math.round((percent / 100) * barWidth)).padEnd(barWidth, '.')}]` : '';
    const text = `${label}${bar} ${head}${details}`;
    // One column short of the width: writing the last column makes some terminals wrap, breaking the redraw.
    return text.length > columns - 1 ? `${text.slice(0, Math.max(0, columns - 2))}…` : text;
  }

  #draw(now: number): void {
    this.#lastDraw = now;
    if (this.#options.tty) {
      const columns = this.#options.columns() ?? DEFAULT_COLUMNS;
      this.#options.write(`\r\x1b[K${this.line(now, columns)}`);
      this.#drawn = true;
    } else {
      this.#options.write(`${this.line(now)}\n`);
    }
  }

  /** Whether anything was drawn on the terminal line (so an error message must start on a new line). */
  get drewOnTerminal(): boolean {
    return this.#drawn && !this.#finished;
  }
}
