/**
 * The connection as an explicit state machine (pure: inputs in, a new model and effects out; the caller passes the
 * time and the randomness). `DeviceConnection` feeds it what the network did and carries out the effects (open a
 * CONNECT, start the reconnect timer, ask the credential source, emit events, close); everything it decides lives
 * here, so every path can be tested without a broker or a clock.
 *
 * ```
 *                 accepted                    lost (reconnect on)
 *  connecting ───────────────► online ──────────────────────────► backing-off
 *    ▲  │ │ refused credential   │ end()                              │ timer
 *    │  │ └────────► refetching-credential                            │
 *    │  │                │ new credential ──► connecting ◄───────────┘
 *    │  │  online ──token invalid (Token mode)──► refetching-credential
 *    │  └─ failed ─► backing-off (after the first connect) / closed (first connect)
 *    │               online ──end()──► closing ──flushed / lost──► closed
 * ```
 */
import { classifyRefusal } from '../mqtt/reason-codes.js';
import { fullJitterDelay, type BackoffOptions } from '../util/backoff.js';
import { type SourceVerdict, refusalDecision } from './ladder.js';
import { isOperationCode } from './token-rules.js';
import {
  type SessionEnd,
  type TakeoverOptions,
  type TakeoverState,
  NO_TAKEOVER,
  onConnectOutcome,
  onSessionEnd,
  takeoverDelay,
  takeoverGiveUp,
} from './takeover.js';

/** The CONNACK classification lives with the rest of MQTT's reason codes; re-exported for the state machine's readers. */
export { classifyRefusal, type RefusalClass } from '../mqtt/reason-codes.js';

/** Where a connection is. */
export type ConnectionState = 'connecting' | 'online' | 'backing-off' | 'refetching-credential' | 'closing' | 'closed';

/** Why a CONNECT got no CONNACK. */
export type ConnectFailure =
  /** Nothing answered (refused, reset, unresolvable, unreachable). */
  | 'unreachable'
  /** No CONNACK within connectTimeoutMs. */
  | 'timeout'
  /** The broker's TLS certificate could not be verified. */
  | 'untrusted'
  /** The peer answered in HTTP. */
  | 'http'
  /** The peer answered something that is not MQTT. */
  | 'protocol';

/** What a connection stops with (the connection builds the error, adding the URL, the ClientId and the cause). */
export type Problem =
  | { readonly code: 'CredentialRejected'; readonly connackCode?: number; readonly why: 'exhausted' | 'same-key' | 'source-failed' }
  | { readonly code: 'IdentifierRejected' | 'ConnackRefused'; readonly connackCode: number; readonly retryable: boolean }
  | { readonly code: 'ConnectFailed'; readonly failure: ConnectFailure }
  | { readonly code: 'InvalidCredential'; readonly verdict: Exclude<SourceVerdict, 'use' | 'same-key'> }
  | { readonly code: 'TakeoverLoop'; readonly streak: number }
  | { readonly code: 'ConnectionLost' }
  | { readonly code: 'SourceFailed' }
  | { readonly code: 'Aborted' };

/** Settings of the state machine, resolved from the connect options. */
export interface CoreOptions {
  readonly protocolVersion: 3 | 4 | 5;
  readonly reconnect: Readonly<BackoffOptions> | false;
  readonly takeover: Readonly<TakeoverOptions> | false;
  /** A session that lasted this long resets the backoff and ends a run of takeovers. */
  readonly stableSessionMs: number;
  readonly maxRefetches: number;
}

/** What the state machine remembers. */
export interface Model {
  readonly state: ConnectionState;
  /** connectDevice() is still waiting: a failure rejects it instead of backing off. */
  readonly first: boolean;
  /** Reconnect attempts since the last stable session (the backoff exponent). */
  readonly attempt: number;
  /** Credentials asked for since the last accepted CONNECT. */
  readonly refetches: number;
  readonly takeover: TakeoverState;
  /** When the current session was accepted (ms, the caller's clock). */
  readonly onlineSince: number;
}

/** The model of a connection about to send its first CONNECT. */
export function initialModel(): Model {
  return { state: 'connecting', first: true, attempt: 0, refetches: 0, takeover: NO_TAKEOVER, onlineSince: 0 };
}

/** What happened. */
export type Input =
  /** CONNACK 0. */
  | { readonly type: 'accepted'; readonly now: number }
  /** CONNACK with a refusal: the 3.1.1 return code or the MQTT 5 reason code. */
  | { readonly type: 'refused'; readonly code: number }
  /** The CONNECT got no CONNACK. */
  | { readonly type: 'failed'; readonly failure: ConnectFailure }
  /** The accepted session ended. */
  | { readonly type: 'lost'; readonly end: SessionEnd; readonly now: number }
  /** The reconnect delay is over. */
  | { readonly type: 'timer' }
  /** The credential source answered the `rejected` request. */
  | { readonly type: 'credential'; readonly verdict: SourceVerdict }
  /** The credential source threw. */
  | { readonly type: 'source-failed'; readonly retryable: boolean }
  /** `end()`: `graceful` lets an online session finish what is in flight first. */
  | { readonly type: 'end'; readonly graceful: boolean }
  /** The caller's AbortSignal fired. */
  | { readonly type: 'abort' }
  /** The graceful end is done: nothing in flight any more, or its time is up. */
  | { readonly type: 'flushed' };

/** What the connection must do, in order. */
export type Effect =
  /** Send a CONNECT with the current credential. */
  | { readonly type: 'connect' }
  /** Emit `online` (and resolve connectDevice() the first time). */
  | { readonly type: 'online' }
  /** Emit `offline`: the session is gone. */
  | { readonly type: 'offline' }
  /** Start the reconnect timer and emit `reconnecting`. */
  | { readonly type: 'wait'; readonly delayMs: number; readonly attempt: number }
  /** Emit `auth-failed` with the refusal code. */
  | { readonly type: 'auth-failed'; readonly code: number }
  /** Ask the credential (or token) source for another credential (`{ reason: 'rejected' }`). */
  | { readonly type: 'refetch' }
  /** Use the credential the source just handed out (emit `credential-refreshed`). */
  | { readonly type: 'use-credential' }
  /** Emit `takeover`. */
  | { readonly type: 'takeover'; readonly confirmed: boolean }
  /** Report a problem that does not close the connection (emit `error`). */
  | { readonly type: 'report'; readonly problem: Problem }
  /** Let what is in flight finish, then feed `flushed`. */
  | { readonly type: 'flush' }
  /** Close for good: reject what is pending, emit `closed` (with the problem, if any). */
  | { readonly type: 'close'; readonly problem?: Problem };

/** A model and the effects to carry out. */
export interface Step {
  readonly model: Model;
  readonly effects: readonly Effect[];
}

function close(model: Model, problem?: Problem): Step {
  return { model: { ...model, state: 'closed' }, effects: [problem ? { type: 'close', problem } : { type: 'close' }] };
}

/** Back off before the next CONNECT (or close, when reconnecting is off). */
function backOff(model: Model, options: CoreOptions, random: () => number, before: Effect[] = []): Step {
  if (!options.reconnect) return { model: { ...model, state: 'closed' }, effects: [...before, { type: 'close', problem: { code: 'ConnectionLost' } }] };
  const streak = model.takeover.streak;
  const delayMs = options.takeover && streak > 0 ? takeoverDelay(streak, options.takeover, random) : fullJitterDelay(model.attempt, options.reconnect, random);
  const attempt = model.attempt + 1;
  return { model: { ...model, state: 'backing-off', attempt }, effects: [...before, { type: 'wait', delayMs, attempt }] };
}

/**
 * One transition. Inputs that make no sense in a state (a timer that fired after `end()`, a CONNACK after the
 * connection closed) leave the model as it is and do nothing.
 */
export function step(model: Model, input: Input, options: CoreOptions, random: () => number): Step {
  const none: Step = { model, effects: [] };
  if (model.state === 'closed') return none;
  switch (input.type) {
    case 'abort':
      return close(model, { code: 'Aborted' });
    case 'end':
      if (model.state === 'online' && input.graceful) return { model: { ...model, state: 'closing' }, effects: [{ type: 'flush' }] };
      return close(model);
    case 'flushed':
      return model.state === 'closing' ? close(model) : none;
    case 'accepted': {
      if (model.state !== 'connecting') return none;
      const judged = options.takeover ? onConnectOutcome(model.takeover, 'accepted') : { state: NO_TAKEOVER };
      const next: Model = { ...model, state: 'online', first: false, refetches: 0, takeover: judged.state, onlineSince: input.now };
      const effects: Effect[] = [{ type: 'online' }];
      if (judged.verdict) effects.push({ type: 'takeover', confirmed: false });
      if (options.takeover && takeoverGiveUp(judged.state, options.takeover)) {
        return { model: { ...next, state: 'closed' }, effects: [...effects, { type: 'close', problem: { code: 'TakeoverLoop', streak: judged.state.streak } }] };
      }
      return { model: next, effects };
    }
    case 'refused': {
      if (model.state !== 'connecting') return none;
      const kind = classifyRefusal(input.code, options.protocolVersion);
      const takeover = options.takeover ? onConnectOutcome(model.takeover, kind === 'unavailable' ? 'failed' : 'refused').state : NO_TAKEOVER;
      const current: Model = { ...model, takeover };
      if (kind === 'identifier') return close(current, { code: 'IdentifierRejected', connackCode: input.code, retryable: false });
      if (kind === 'permanent') return close(current, { code: 'ConnackRefused', connackCode: input.code, retryable: false });
      if (kind === 'unavailable') {
        if (model.first) return close(current, { code: 'ConnackRefused', connackCode: input.code, retryable: true });
        return backOff(current, options, random);
      }
      const decision = refusalDecision(model.refetches, options.maxRefetches);
      const failed: Effect = { type: 'auth-failed', code: input.code };
      if (decision.action === 'give-up') {
        return { model: { ...current, state: 'closed' }, effects: [failed, { type: 'close', problem: { code: 'CredentialRejected', connackCode: input.code, why: 'exhausted' } }] };
      }
      return { model: { ...current, state: 'refetching-credential', refetches: decision.refetches }, effects: [failed, { type: 'refetch' }] };
    }
    case 'failed': {
      if (model.state !== 'connecting') return none;
      const current: Model = { ...model, takeover: options.takeover ? onConnectOutcome(model.takeover, 'failed').state : NO_TAKEOVER };
      if (model.first) return close(current, { code: 'ConnectFailed', failure: input.failure });
      // After the first connect, keep trying: the broker may come back, a certificate may be fixed. Report what
      // cannot heal by itself, so that someone hears of it.
      const report: Effect[] = input.failure === 'untrusted' || input.failure === 'http' || input.failure === 'protocol' ? [{ type: 'report', problem: { code: 'ConnectFailed', failure: input.failure } }] : [];
      return backOff(current, options, random, report);
    }
    case 'lost': {
      if (model.state === 'closing') return close(model);
      if (model.state !== 'online') return none;
      const lastedMs = input.now - model.onlineSince;
      const stable = lastedMs >= options.stableSessionMs;
      const ended = options.takeover
        ? onSessionEnd(model.takeover, input.end, { protocolVersion: options.protocolVersion, lastedMs, stableSessionMs: options.stableSessionMs, options: options.takeover })
        : { state: NO_TAKEOVER };
      const current: Model = { ...model, attempt: stable ? 0 : model.attempt, takeover: ended.state };
      const effects: Effect[] = [{ type: 'offline' }];
      if (ended.verdict) effects.push({ type: 'takeover', confirmed: true });
      if (options.takeover && takeoverGiveUp(ended.state, options.takeover)) {
        return { model: { ...current, state: 'closed' }, effects: [...effects, { type: 'close', problem: { code: 'TakeoverLoop', streak: ended.state.streak } }] };
      }
      // Token mode: the broker said a token is no longer valid. A CONNECT with it would be refused: ask the source
      // at once, on the same bounded ladder as a refused CONNECT.
      if (input.end.kind === 'token' && !isOperationCode(input.end.code) && options.reconnect) {
        const decision = refusalDecision(model.refetches, options.maxRefetches);
        if (decision.action === 'give-up') {
          return { model: { ...current, state: 'closed' }, effects: [...effects, { type: 'close', problem: { code: 'CredentialRejected', why: 'exhausted' } }] };
        }
        return { model: { ...current, state: 'refetching-credential', refetches: decision.refetches }, effects: [...effects, { type: 'refetch' }] };
      }
      return backOff(current, options, random, effects);
    }
    case 'timer':
      return model.state === 'backing-off' ? { model: { ...model, state: 'connecting' }, effects: [{ type: 'connect' }] } : none;
    case 'credential': {
      if (model.state !== 'refetching-credential') return none;
      switch (input.verdict) {
        case 'use':
          return { model: { ...model, state: 'connecting' }, effects: [{ type: 'use-credential' }, { type: 'connect' }] };
        case 'same-key':
          return close(model, { code: 'CredentialRejected', why: 'same-key' });
        default:
          return close(model, { code: 'InvalidCredential', verdict: input.verdict });
      }
    }
    case 'source-failed': {
      if (model.state !== 'refetching-credential') return none;
      // The source is unreachable for now (the OpenAPI is down, throttling): climb again later, this step not counted.
      if (input.retryable && !model.first) {
        return backOff({ ...model, refetches: Math.max(0, model.refetches - 1) }, options, random, [{ type: 'report', problem: { code: 'SourceFailed' } }]);
      }
      return close(model, { code: 'CredentialRejected', why: 'source-failed' });
    }
  }
}
