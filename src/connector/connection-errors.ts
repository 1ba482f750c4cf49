/**
 * The wording of a connection's errors (pure): what the state machine's problems, a refused CONNACK, a message the
 * broker would not take and a session broken by the broker's bytes are called, with the URL, the ClientId and what
 * is known of the cause. The connection decides when; this decides what the error says.
 */
import { AbortedError, ApsaraMqDeviceError, CONNACK_CODES, LOCAL_ERROR_CATALOG, ConnectError, PublishError, SubscribeError, ValidationError, toApsaraMqDeviceError } from '../errors.js';
import type { TokenGrant } from '../signer/mqtt.js';
import { errorCode } from './attempt.js';
import type { Login } from './login.js';
import { ReasonCodes } from './mqtt-client.js';
import { PacketViolation } from './packet-guard.js';
import type { ConnectFailure, Problem } from './state.js';
import type { SessionEnd } from './takeover.js';

/** What to do about a packet over `maxIncomingPacketBytes`. */
const TOO_LARGE_REMEDY = 'Raise maxIncomingPacketBytes if messages this large are expected (an MQTT 5 broker is told the limit in the CONNECT); else find what publishes them.';

/** `0x8e`. */
export function hex(code: number): string {
  return `0x${code.toString(16).padStart(2, '0')}`;
}

/** "bad user name or password (CONNACK 4)" / "Not authorized (reason 0x87)". */
export function describeCode(code: number, protocolVersion: 3 | 4 | 5): string {
  if (protocolVersion === 5) return `${ReasonCodes[code as keyof typeof ReasonCodes] ?? 'reason'} (reason ${hex(code)})`;
  return `${CONNACK_CODES[code] ?? 'refused'} (CONNACK ${code})`;
}

/** Token mode: the broker's `$SYS/tokenInvalidNotice` of the session. */
export interface InvalidNotice {
  readonly code: number;
  readonly type: TokenGrant['type'] | undefined;
}

/** The latest refusal of the login: a CONNACK, or (Token mode) an invalid notice about the tokens. */
export type Refusal = { readonly kind: 'connack'; readonly code: number } | ({ readonly kind: 'notice' } & InvalidNotice);

/** What a connection is, for the wording of its errors. */
export interface ConnectionFacts {
  readonly clientId: string;
  readonly url: string;
  readonly protocolVersion: 4 | 5;
  readonly connectTimeoutMs: number;
  readonly login: Login;
  /** The caller's AbortSignal, for the reason it fired with. */
  readonly signal: AbortSignal | undefined;
}

/** What a connection remembers of its latest failures. */
export interface Failures {
  /** The error behind the latest failure. */
  cause: unknown;
  /** The latest refusal code. */
  refusedCode: number | undefined;
  lastRefusal: Refusal | undefined;
}

/** What a connection knows when it words an error: what it is, and its latest failures. */
export type ErrorContext = ConnectionFacts & Readonly<Failures>;

/** The latest failures of a connection, kept to word the error that reports them. */
export class FailureRecord implements Failures {
  readonly facts: ConnectionFacts;
  cause: unknown;
  refusedCode: number | undefined;
  lastRefusal: Refusal | undefined;

  constructor(facts: ConnectionFacts) {
    this.facts = facts;
  }

  /** The broker refused the CONNECT with `code`. */
  refused(code: number): void {
    this.cause = undefined;
    this.refusedCode = code;
    this.lastRefusal = { kind: 'connack', code };
  }

  /** The error for a problem the state machine reported. */
  error(problem: Problem): ApsaraMqDeviceError {
    return problemError(problem, { ...this.facts, cause: this.cause, refusedCode: this.refusedCode, lastRefusal: this.lastRefusal });
  }
}

/** The error for a problem the state machine reported, with what is known of its cause. */
export function problemError(problem: Problem, context: ErrorContext): ApsaraMqDeviceError {
  const { clientId, url, protocolVersion: version, cause, login } = context;
  switch (problem.code) {
    case 'CredentialRejected': {
      const tokens = login.mode === 'Token';
      const notice = problem.connackCode === undefined ? context.lastRefusal : undefined;
      const code = problem.connackCode ?? (notice?.kind === 'connack' ? notice.code : context.refusedCode) ?? 0;
      const subject = tokens ? `the tokens (${login.tokens.map((t) => t.type).join(', ')}) of ${clientId}` : `credential ${login.current.deviceAccessKeyId} of ${clientId}`;
      const refusal =
        notice?.kind === 'notice'
          ? `The broker ended the session of ${clientId}: a token is invalid ($SYS/tokenInvalidNotice code ${notice.code}${notice.type ? `, ${notice.type} token` : ''})`
          : `The broker refused ${subject}: ${describeCode(code, version)}`;
      const tail =
        problem.why === 'same-key'
          ? tokens ? ', and the token source handed out the same tokens again' : ', and the credential source handed out the same key again'
          : problem.why === 'source-failed'
            ? `, and asking for ${tokens ? 'new ones' : 'a new one'} failed with ${(cause as ApsaraMqDeviceError | undefined)?.code ?? 'an error'}`
            : '';
      const connackCode = notice?.kind === 'notice' ? {} : { connackCode: code };
      return new ConnectError(tokens ? 'TokenRejected' : 'CredentialRejected', refusal + tail, { clientId, ...connackCode, ...(problem.why === 'source-failed' ? { cause } : {}) });
    }
    case 'IdentifierRejected':
      return new ConnectError('IdentifierRejected', `The broker rejected ClientId ${clientId}: ${describeCode(problem.connackCode, version)}`, { clientId, connackCode: problem.connackCode });
    case 'ConnackRefused':
      return new ConnectError('ConnackRefused', `The broker at ${url} refused the CONNECT: ${describeCode(problem.connackCode, version)}`, {
        clientId,
        connackCode: problem.connackCode,
        retryable: problem.retryable,
      });
    case 'ConnectFailed':
      return connectFailedError(problem.failure, cause instanceof Error ? cause : undefined, context);
    case 'InvalidCredential': {
      if (login.mode === 'Token') return new ValidationError('InvalidToken', login.problem ?? 'The token source did not return tokens');
      return new ValidationError(
        'InvalidCredential',
        problem.verdict === 'other-client'
          ? `The credential source returned a credential for ${login.foreignClientId ?? 'another ClientId'}, not ${clientId}`
          : 'The credential source did not return a DeviceCredential (build one with DeviceCredential.fromWire)',
      );
    }
    case 'TakeoverLoop':
      return new ConnectError('TakeoverLoop', `The session of ${clientId} was taken over ${problem.streak} times in a row (takeover.giveUpAfter)`, { clientId });
    case 'ConnectionLost':
      return new ConnectError('BrokerUnreachable', `The session to ${url} was lost and reconnect is off`, { clientId, retryable: true, ...(cause ? { cause } : {}) });
    case 'SourceFailed':
      return cause instanceof Error ? toApsaraMqDeviceError(cause) : toApsaraMqDeviceError(new Error('The credential source failed'));
    case 'Aborted':
      return new AbortedError(`The connection of ${clientId} was aborted by its signal`, context.signal?.reason);
  }
}

/**
 * The words of the connect remedies that name options. The library knows no CLI: the CLI says the same with its
 * flags (`src/cli/remedies.ts` replaces each of these).
 */
export const CONNECT_REMEDY_WORDS = Object.freeze({
  trust: 'pass option ca with the CA that signed it, or rejectUnauthorized: false for tests',
  httpPort: 'is brokerUrl the OpenAPI endpoint? Option brokerUrl',
  brokerUrl: 'the broker URL (option brokerUrl)',
});

/** The error of a CONNECT that got no CONNACK. */
export function connectFailedError(failure: ConnectFailure, cause: Error | undefined, context: Pick<ErrorContext, 'clientId' | 'url' | 'connectTimeoutMs'>): ConnectError {
  const { clientId, url } = context;
  const code = errorCode(cause);
  const detail = cause ? ` (${code ? `${code}: ` : ''}${cause.message})` : '';
  switch (failure) {
    case 'timeout':
      return new ConnectError('ConnectTimeout', `No CONNACK from ${url} within ${context.connectTimeoutMs} ms`, { clientId, ...(cause ? { cause } : {}) });
    case 'untrusted':
      return new ConnectError('BrokerUnreachable', `The TLS certificate of ${url} could not be verified${detail}`, {
        clientId,
        cause,
        retryable: false,
        remedy: `The broker's certificate is not trusted: ${CONNECT_REMEDY_WORDS.trust}.`,
      });
    case 'http':
      return new ConnectError('ProtocolError', `${url} answered in HTTP, not MQTT`, {
        clientId,
        ...(cause ? { cause } : {}),
        remedy: `This port speaks HTTP: ${CONNECT_REMEDY_WORDS.httpPort} must name the MQTT port (1883 on the service and the emulator).`,
      });
    case 'protocol':
      if (cause instanceof PacketViolation && cause.kind === 'too-large') {
        return new ConnectError('ProtocolError', `${url} sent ${cause.message} before its CONNACK, over maxIncomingPacketBytes`, { clientId, cause, remedy: TOO_LARGE_REMEDY });
      }
      return new ConnectError('ProtocolError', `${url} did not answer in MQTT${detail}`, { clientId, ...(cause ? { cause } : {}) });
    case 'unreachable': {
      const host = new URL(url).host;
      const remedy =
        code === 'ECONNREFUSED'
          ? `Nothing answers at ${url}: is the broker (or the emulator) running? Check ${CONNECT_REMEDY_WORDS.brokerUrl}.`
          : code === 'ENOTFOUND' || code === 'EAI_AGAIN'
            ? `The host ${host} does not resolve: check ${CONNECT_REMEDY_WORDS.brokerUrl} and DNS.`
            : `Could not reach ${url}: check ${CONNECT_REMEDY_WORDS.brokerUrl}, the port and the network.`;
      return new ConnectError('BrokerUnreachable', `Could not reach the broker at ${url}${detail}`, { clientId, ...(cause ? { cause } : {}), remedy });
    }
  }
}

/** What a message or (un)subscription the broker refused was, for its error. */
export interface RefusedItem {
  readonly kind: 'publish' | 'subscribe' | 'unsubscribe' | 'resubscribe';
  readonly topics: readonly string[];
  /** Sessions that ended while it was in flight. */
  readonly strikes: number;
}

/** The error of an item failed after the session ended while it was in flight (`end`), or after the broker's notice. */
export function rejectedError(item: RefusedItem, end: SessionEnd, notice: InvalidNotice | undefined): ApsaraMqDeviceError {
  const topics = item.topics.join(', ');
  const what = item.kind === 'publish' ? `the message to ${topics}` : `the ${item.kind === 'unsubscribe' ? 'UNSUBSCRIBE' : 'SUBSCRIBE'} of ${topics}`;
  const why = notice
    ? `The broker refused ${what}: ${notice.code === 4 ? 'no token of the session covers it' : notice.code === 5 ? 'the token covering it does not give that permission' : 'a token is no longer valid'} ($SYS/tokenInvalidNotice code ${notice.code}${notice.type ? `, ${notice.type} token` : ''})`
    : end.kind === 'disconnect'
      ? `The broker disconnected right after ${what} with ${describeCode(end.reasonCode, 5)}`
      : `The broker closed the session right after ${item.strikes === 1 ? `${what} was sent` : `each of the ${item.strikes} times ${what} was sent`}`;
  if (item.kind === 'publish') return new PublishError(why, topics, end.kind === 'disconnect' ? { reasonCode: end.reasonCode } : {});
  return new SubscribeError(why, item.topics, end.kind === 'disconnect' ? { reasonCode: end.reasonCode } : {});
}

/** A publish, subscribe or unsubscribe refused because the outbox is at its bound (nothing was queued). */
export function outboxFullError(what: string, held: { messages: number; bytes: number }, limits: { maxMessages: number; maxBytes: number }): ApsaraMqDeviceError {
  const { retryable, remedy } = LOCAL_ERROR_CATALOG.OutboxFull;
  const bound = held.messages >= limits.maxMessages ? `${held.messages} messages (maxQueuedMessages ${limits.maxMessages})` : `${held.bytes} bytes of messages (maxQueuedBytes ${limits.maxBytes})`;
  return new ApsaraMqDeviceError('OutboxFull', `Cannot ${what}: the connection already holds ${bound}. ${remedy}`, { retryable, remedy });
}

/**
 * The broker broke MQTT on a live session (a packet the guard stopped, or one mqtt.js could not parse or act on): the
 * session was closed, and the connection reconnects as after any loss.
 */
export function sessionProtocolError(violation: Error, context: Pick<ConnectionFacts, 'clientId' | 'url'>): ConnectError {
  const { clientId, url } = context;
  if (violation instanceof PacketViolation && violation.kind === 'too-large') {
    return new ConnectError('ProtocolError', `The broker at ${url} sent ${violation.message}, over maxIncomingPacketBytes: the session was closed before reading it, and will be opened again`, {
      clientId,
      cause: violation,
      retryable: true,
      remedy: TOO_LARGE_REMEDY,
    });
  }
  const what = violation instanceof PacketViolation ? violation.message : `a packet MQTT does not allow (${violation.message})`;
  return new ConnectError('ProtocolError', `The broker at ${url} sent ${what}: the session was closed, and will be opened again`, {
    clientId,
    cause: violation,
    retryable: true,
    remedy: 'The broker, or something between it and the device, sent bytes that break MQTT; the connection reconnects by itself. If it keeps happening, capture the traffic and report it to whoever runs the broker.',
  });
}
