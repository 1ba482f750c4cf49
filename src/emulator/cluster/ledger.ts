/**
 * The OpenAPI's state, shared by every process of a cluster: a Redis stream of changes that every process applies in
 * the same order to its own copy (the credential and token registries), so that the rules stay written once, in
 * registry.ts, token-registry.ts and actions.ts, and every check a broker makes stays synchronous.
 *
 * A change is the call itself (its Action and parameters), with the proposer's clock and a random seed: applying it
 * runs the same handler against the same state with the same clock and the same random bytes, so every copy ends the
 * same, and the proposer's own copy gives its caller the answer (a credential, a token, or the service's error). Two
 * processes that register the same ClientId at once are ordered by the stream, and the second one's answer is what the
 * first one's change left (rotated, or `DeviceCredentialExsit`).
 *
 * Reads ({@link Ledger.barrier}) first catch up with the stream's end as it is when they start, so a credential
 * registered through one process authenticates at any broker the moment its Register has answered, and a revoked key
 * stops authenticating everywhere at once.
 */
import { createCipheriv, randomBytes, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { TurnBatch } from './redis.js';

/** One change of the state, as it is kept in the stream. */
export interface Change {
  /** The Action. */
  readonly action: string;
  /** Its business parameters (not the signature's). */
  readonly params: Readonly<Record<string, string>>;
  /** The proposer's clock (ms since the epoch) at the call: every copy applies the change at this time. */
  readonly now: number;
  /** 32 random bytes (base64) from which every copy draws the same key pairs and tokens. */
  readonly seed: string;
  /** Which call proposed it (the proposer waits for this one's outcome). */
  readonly request: string;
}

/** What applying a change gave: the success body, or what the handler threw (an ApiFault). */
export type Outcome = { readonly ok: true; readonly body: Record<string, unknown> } | { readonly ok: false; readonly error: unknown };

/** A stream id `<ms>-<seq>` as two numbers, for ordering. */
function order(id: string): [number, number] {
  const [ms, seq] = id.split('-');
  return [Number(ms), Number(seq ?? 0)];
}

/** Is stream id `a` at or past `b`? */
export function reached(a: string, b: string): boolean {
  const [am, as] = order(a);
  const [bm, bs] = order(b);
  return am > bm || (am === bm && as >= bs);
}

/**
 * Random bytes drawn from a seed (AES-256-CTR's key stream): the same seed gives every process the same bytes, in the
 * same order, whatever sizes they are asked in.
 */
export function seededBytes(seed: Buffer): (size: number) => Buffer {
  const cipher = createCipheriv('aes-256-ctr', seed, Buffer.alloc(16));
  return (size) => cipher.update(Buffer.alloc(size));
}

type Entry = [id: string, fields: string[]];

/** How many entries one read takes. */
const BATCH = 1_000;

/** The shared log of one cluster, applied to this process's copy of the state. */
export class Ledger {
  readonly #redis: Redis;
  /** A connection of its own: it spends its life blocked in XREAD. */
  readonly #reader: Redis;
  readonly #key: string;
  readonly #apply: (change: Change) => Outcome;
  readonly #onError: (error: unknown) => void;
  #last = '0-0';
  #closed = false;
  #following: Promise<void> | undefined;
  /** The barriers asked since the last read of the stream's end was sent: the next read answers them all. */
  readonly #barriers = new TurnBatch<undefined, undefined>(async (asked) => {
    await this.#catchUpToEnd();
    return asked;
  });
  readonly #proposals = new Map<string, { resolve: (outcome: Outcome) => void; reject: (error: Error) => void }>();
  readonly #waiters = new Set<{ id: string; resolve: () => void; reject: (error: Error) => void }>();

  constructor(redis: Redis, reader: Redis, key: string, apply: (change: Change) => Outcome, onError: (error: unknown) => void) {
    this.#redis = redis;
    this.#reader = reader;
    this.#key = key;
    this.#apply = apply;
    this.#onError = onError;
  }

  /** Apply every change the stream holds now (at start, before serving anything). */
  async catchUp(): Promise<void> {
    for (;;) {
      const entries = (await this.#redis.xrange(this.#key, `(${this.#last}`, '+', 'COUNT', BATCH)) as Entry[];
      this.#applyAll(entries);
      if (entries.length < BATCH) return;
    }
  }

  /** Follow the stream from here on: every change any process adds is applied as it comes. */
  follow(): void {
    this.#following ??= this.#loop();
  }

  async #loop(): Promise<void> {
    let pause = 100;
    while (!this.#closed) {
      let reply: [string, Entry[]][] | null;
      try {
        reply = (await this.#reader.xread('COUNT', BATCH, 'BLOCK', 0, 'STREAMS', this.#key, this.#last)) as [string, Entry[]][] | null;
        pause = 100;
      } catch (error) {
        if (this.#closed) return;
        // Redis went away: ioredis reconnects; read again from the last change applied, nothing is skipped.
        this.#onError(error);
        await new Promise((resolve) => setTimeout(resolve, pause).unref());
        pause = Math.min(pause * 2, 2_000);
        continue;
      }
      for (const [, entries] of reply ?? []) this.#applyAll(entries);
    }
  }

  #applyAll(entries: readonly Entry[]): void {
    for (const [id, fields] of entries) {
      const at = fields.indexOf('change');
      let change: Change | undefined;
      try {
        change = JSON.parse(fields[at + 1] ?? '') as Change;
      } catch (error) {
        this.#onError(new Error(`The cluster's log holds an entry ${id} that is not a change: skipped (${String(error)})`));
      }
      const outcome = change ? this.#apply(change) : undefined;
      this.#last = id;
      const proposal = change === undefined ? undefined : this.#proposals.get(change.request);
      if (change && proposal && outcome) {
        this.#proposals.delete(change.request);
        proposal.resolve(outcome);
      }
    }
    for (const waiter of this.#waiters) {
      if (reached(this.#last, waiter.id)) {
        this.#waiters.delete(waiter);
        waiter.resolve();
      }
    }
  }

  /**
   * Resolves once every change the stream holds now is applied here. Callers share reads of the stream's end (a
   * fleet's CONNECTs arrive in bursts): one read answers every caller asked before it was sent, and no caller joins a
   * read already sent ({@link TurnBatch}).
   */
  async barrier(): Promise<void> {
    await this.#barriers.add(undefined);
  }

  async #catchUpToEnd(): Promise<void> {
    const newest = (await this.#redis.xrevrange(this.#key, '+', '-', 'COUNT', 1)) as Entry[];
    const id = newest[0]?.[0];
    if (id === undefined || reached(this.#last, id)) return;
    await new Promise<void>((resolve, reject) => {
      if (this.#closed) reject(new Error('The emulator is closed'));
      else this.#waiters.add({ id, resolve, reject });
    });
  }

  /** Add a change (stamped with `now` and a fresh seed) and resolve with its outcome here, once it is applied. */
  async propose(action: string, params: Readonly<Record<string, string>>, now: number): Promise<Outcome> {
    if (this.#closed) throw new Error('The emulator is closed');
    const request = randomUUID();
    const change: Change = { action, params, now, seed: randomBytes(32).toString('base64'), request };
    const outcome = new Promise<Outcome>((resolve, reject) => this.#proposals.set(request, { resolve, reject }));
    try {
      await this.#redis.xadd(this.#key, '*', 'change', JSON.stringify(change));
    } catch (error) {
      this.#proposals.delete(request);
      throw error;
    }
    return outcome;
  }

  /** Stop following; whoever waits is told the emulator closed. */
  async close(): Promise<void> {
    this.#closed = true;
    // The loop's read ends with the connection, or (a Redis already gone) never: the loop is not waited for.
    this.#reader.disconnect();
    const closed = new Error('The emulator is closed');
    for (const proposal of this.#proposals.values()) proposal.reject(closed);
    for (const waiter of this.#waiters) waiter.reject(closed);
    this.#proposals.clear();
    this.#waiters.clear();
  }
}
