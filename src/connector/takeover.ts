/**
 * Takeover detection (pure: the caller passes durations and randomness). Two clients with one ClientId kick each
 * other off: each CONNECT closes the other's session. A broker that restarts, or a network that drops, closes
 * sessions too, and must never be taken for a takeover. What tells them apart:
 *
 * - MQTT 5: the broker may say so: a DISCONNECT with reason 0x8E (session taken over, §3.1.4). Verdict:
 *   **confirmed**. A DISCONNECT with another reason (0x8B server shutting down, …) is not a takeover. Not every MQTT 5
 *   broker sends it: Mosquitto 2.0.11 closes the old connection without a DISCONNECT (measured), so a silent close is
 *   judged as over 3.1.1.
 * - MQTT 3.1.1 (and a silent close over MQTT 5): the broker closes the socket without a word either way. If a CONNECT fails before the next one is
 *   accepted (refused TCP connection, no CONNACK, "server unavailable"), the broker was down: not a takeover. If
 *   the first CONNECT after the loss is accepted, the broker was up all along: a "silent close". A takeover is
 *   **suspected** at the {@link SUSPECT_AFTER}th silent close in a row without a stable session in between (twins
 *   kick each other again and again; a broker restarting once, faster than the reconnect delay, looks like one
 *   silent close, which is why one is not enough, and why even a run of them is only suspected).
 * - A session that ends with a socket error (reset, keepalive timeout) or right after a message the broker took
 *   offence at (see the outbox) is the network's or the message's doing, not a twin's.
 *
 * A takeover, confirmed or suspected, is reported (an event) and makes the next reconnect wait longer, growing with
 * each takeover in a row, so twins settle into long turns instead of a tight loop. It never closes the connection,
 * unless the caller opted in with `giveUpAfter`.
 */

import { backoffCeiling } from '../util/backoff.js';

/** Settings of takeover handling. */
export interface TakeoverOptions {
  /** Ceiling of the delay before reconnecting after a first takeover, ms; it doubles with each one in a row. @default 5000 */
  minDelayMs: number;
  /** Largest delay after takeovers in a row, ms. @default 300000 */
  maxDelayMs: number;
  /**
   * Close the connection with `TakeoverLoop` after this many takeovers in a row (opt-in: a broker restart over
   * MQTT 3.1.1 can look like one). @default Infinity (never)
   */
  giveUpAfter: number;
}

/** Defaults of {@link TakeoverOptions}. */
export const TAKEOVER_DEFAULTS: Readonly<TakeoverOptions> = Object.freeze({ minDelayMs: 5_000, maxDelayMs: 300_000, giveUpAfter: Number.POSITIVE_INFINITY });

/** What the detector remembers between sessions. */
export interface TakeoverState {
  /** Takeovers (confirmed or suspected) in a row. */
  readonly streak: number;
  /** A 3.1.1 session the broker closed: the verdict waits for the next CONNECT's outcome. */
  readonly pending: boolean;
  /** Silent closes (3.1.1) in a row: sessions the broker closed, each followed by an accepted CONNECT. */
  readonly silent: number;
}

/** No takeover seen. */
export const NO_TAKEOVER: TakeoverState = Object.freeze({ streak: 0, pending: false, silent: 0 });

/** Silent closes in a row (MQTT 3.1.1) that make a suspected takeover. */
export const SUSPECT_AFTER = 2;

/** The MQTT 5 DISCONNECT reason code "Session taken over". */
export const SESSION_TAKEN_OVER = 0x8e;

/** How an accepted session ended. */
export type SessionEnd =
  /** The broker sent DISCONNECT (MQTT 5) with this reason code, then closed. */
  | { readonly kind: 'disconnect'; readonly reasonCode: number }
  /** The broker closed the connection without a word, with no error on our side. */
  | { readonly kind: 'closed' }
  /** A socket error, a keepalive timeout or a malformed packet: the network's doing. */
  | { readonly kind: 'error' }
  /** The broker closed the connection while a message was in flight: blamed on the message (see the outbox). */
  | { readonly kind: 'message' }
  /**
   * Token mode: the broker said why first, in `$SYS/tokenInvalidNotice` (`code`): a token ran out or was revoked
   * (the tokens are replaced before the next CONNECT), or an operation was outside them (4, 5). Never a takeover.
   */
  | { readonly kind: 'token'; readonly code: number };

/** A verdict, when there is one. */
export type TakeoverVerdict = 'confirmed' | 'suspected';

/** The delay ceiling after `streak` takeovers in a row. */
export function takeoverCeiling(streak: number, options: Pick<TakeoverOptions, 'minDelayMs' | 'maxDelayMs'>): number {
  return backoffCeiling(streak - 1, options);
}

/**
 * The delay before reconnecting after `streak` takeovers in a row: uniform in [ceiling / 2, ceiling] ("equal
 * jitter"), so it is never close to zero, which would kick the twin right back.
 */
export function takeoverDelay(streak: number, options: Pick<TakeoverOptions, 'minDelayMs' | 'maxDelayMs'>, random: () => number): number {
  const ceiling = takeoverCeiling(streak, options);
  return Math.floor(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * A session ended after lasting `lastedMs`. A session that lasted long enough ends the run of takeovers first:
 * `stableSessionMs`, or twice the current delay ceiling (twins each stay online for about the other's delay, so a
 * session that outlasts two ceilings was not cut short by one).
 */
export function onSessionEnd(
  state: TakeoverState,
  end: SessionEnd,
  context: { protocolVersion: 3 | 4 | 5; lastedMs: number; stableSessionMs: number; options: Pick<TakeoverOptions, 'minDelayMs' | 'maxDelayMs'> },
): { state: TakeoverState; verdict?: TakeoverVerdict } {
  const quiet = Math.max(context.stableSessionMs, state.streak > 0 ? 2 * takeoverCeiling(state.streak, context.options) : 0);
  const wasQuiet = context.lastedMs >= quiet;
  const streak = wasQuiet ? 0 : state.streak;
  const silent = wasQuiet ? 0 : state.silent;
  if (end.kind === 'disconnect' && end.reasonCode === SESSION_TAKEN_OVER) {
    return { state: { streak: streak + 1, pending: false, silent: 0 }, verdict: 'confirmed' };
  }
  // A silent close waits for the next CONNECT's outcome (over MQTT 5 too: not every broker announces a takeover).
  if (end.kind === 'closed') return { state: { streak, pending: true, silent } };
  return { state: { streak, pending: false, silent: 0 } };
}

/** What the first CONNECT after a loss came to. */
export type ConnectOutcome =
  /** CONNACK 0. */
  | 'accepted'
  /** CONNACK refused the credential or the ClientId: the loss is explained (a revoked key is dropped too). */
  | 'refused'
  /** No CONNACK (refused TCP connection, timeout) or "server unavailable": the broker was down. */
  | 'failed';

/** The outcome of a CONNECT; a suspected takeover is judged here. A broker that was down ends the run of takeovers. */
export function onConnectOutcome(state: TakeoverState, outcome: ConnectOutcome): { state: TakeoverState; verdict?: TakeoverVerdict } {
  switch (outcome) {
    case 'accepted': {
      if (!state.pending) return { state };
      const silent = state.silent + 1;
      if (silent < SUSPECT_AFTER) return { state: { streak: state.streak, pending: false, silent } };
      return { state: { streak: state.streak + 1, pending: false, silent }, verdict: 'suspected' };
    }
    case 'refused':
      return { state: { streak: state.streak, pending: false, silent: 0 } };
    case 'failed':
      return { state: NO_TAKEOVER };
  }
}

/** Has the run of takeovers reached the caller's opt-in limit? */
export function takeoverGiveUp(state: TakeoverState, options: Pick<TakeoverOptions, 'giveUpAfter'>): boolean {
  return state.streak >= options.giveUpAfter;
}
