/**
 * Token mode in the broker (reference §5.3): a PUBLISH must be within a W token of the session and a SUBSCRIBE within
 * an R token; `$SYS/uploadToken` replaces a token; `$SYS/tokenExpireNotice` and `$SYS/tokenInvalidNotice` are sent,
 * the latter before the disconnect. The per-session state and timers are broker-token-sessions.ts's, the rules
 * token-rules.ts's; this turns their outcomes into notices, disconnects and hook answers.
 */
import type { Aedes, Client, Subscription } from 'aedes';
import { onAnsweredConnectionEnd } from './aedes-adapter.js';
import { TokenSessions, type TokenOutcome } from './broker-token-sessions.js';
import { acknowledgeUnrouted, type BrokerContext } from './broker-wire.js';
import { REASON, type Refusal } from './mqtt-rules.js';
import type { TokenRecord, TokenRegistry } from './token-registry.js';
import {
  TOKEN_TOPICS,
  authorizeSubscribe,
  describeTokenCode,
  expireNoticePayload,
  invalidNoticePayload,
  parseUploadToken,
  type TokenInvalidCode,
  type TokenType,
} from './token-rules.js';

type PublishPacket = Parameters<Aedes['authorizePublish']>[1];
type Refused = Extract<TokenOutcome, { allowed: false }>;

/** Token mode of one broker; without a token registry every check passes and nothing is sent. */
export class BrokerTokenMode {
  readonly #context: BrokerContext;
  readonly #sessions: TokenSessions | undefined;

  constructor(context: BrokerContext, tokens: TokenRegistry | undefined) {
    this.#context = context;
    const { options } = context;
    this.#sessions = tokens
      ? new TokenSessions(tokens, { now: options.now, leadMs: options.tokenExpireNoticeLeadMs, instanceId: options.instanceId }, {
        expiring: (client, record) => context.sendPublish(client, TOKEN_TOPICS.expireNotice, expireNoticePayload(record.expireTime, record.type)),
        invalid: (client, code, type) => {
          const refusal = tokenRefusal('tokenInvalid', code, type, 'the session');
          context.report(refusal, client.id);
          this.#noticeThenDisconnect(client, code, type, refusal, () => client.close());
        },
      })
      : undefined;
  }

  /** A Token-mode CONNECT was accepted with these tokens. */
  admit(client: Client, records: readonly TokenRecord[]): void {
    this.#sessions?.admit(client, records);
  }

  /**
   * Notices may be sent once the CONNACK is out (aedes' `connackSent`, not `clientReady`, which waits for a resumed
   * session's offline messages, paced over seconds); the tokens' timers end with the connection, registered or not
   * (one whose takeover waits got its CONNACK, and may close unregistered).
   */
  install(broker: Aedes): void {
    broker.on('connackSent', (_packet, client) => this.#sessions?.ready(client));
    onAnsweredConnectionEnd(broker, (client) => this.#sessions?.end(client));
  }

  /** Look at every Token-mode session against the `now` clock at once. */
  checkAll(): void {
    this.#sessions?.checkAll();
  }

  close(): void {
    this.#sessions?.close();
  }

  /**
   * A filter must be within an R token (reference §5.3), checked before the service's other rules so that the client
   * is told why. `$` filters ($SYS, $share/) are the rules' to refuse. True when refused (and `done` was called).
   */
  refusesSubscribe(client: Client, subscription: Subscription, done: (error: Error) => void): boolean {
    if (!this.#sessions?.has(client) || subscription.topic.startsWith('$')) return false;
    const outcome = this.#sessions.authorize(client, 'R', subscription.topic);
    if (outcome.allowed) return false;
    this.#refuse(client, outcome, `SUBSCRIBE to '${subscription.topic}'`, done);
    return true;
  }

  /**
   * A PUBLISH of a Token-mode session: an upload is the broker's own business; any other topic must be within a W
   * token. True when this answered the PUBLISH (and `done` was called).
   */
  handlesPublish(client: Client | null, packet: PublishPacket, done: (error?: Error | null) => void): boolean {
    if (!this.#sessions?.has(client)) return false;
    if (packet.topic === TOKEN_TOPICS.upload) {
      this.#upload(client, packet, done);
      return true;
    }
    if (packet.topic.startsWith('$')) return false;
    const outcome = this.#sessions.authorize(client, 'W', packet.topic);
    if (outcome.allowed) return false;
    this.#refuse(client, outcome, `PUBLISH to '${packet.topic}'`, done);
    return true;
  }

  /**
   * With `tokenP2pNeedsRead`: a P2P message to a Token-mode client none of whose R tokens covers the topic is not
   * delivered (counted, logged; no notice: the receiver did nothing). True when it is not to be delivered.
   */
  dropsP2p(client: Client, topic: string): boolean {
    const { options, stats } = this.#context;
    if (!options.tokenP2pNeedsRead || !this.#sessions?.has(client) || authorizeSubscribe(this.#sessions.held(client), topic).allowed) return false;
    stats.recordRule('tokenResource');
    options.logger.warn(`MQTT rule tokenResource (option tokenP2pNeedsRead): ${client.id}: a P2P message on '${topic}' not delivered: no R token of the session covers it`, { rule: 'tokenResource', clientId: client.id });
    return true;
  }

  /** The reference's order: $SYS/tokenInvalidNotice {code, type}, then the disconnect (MQTT 5: DISCONNECT 0x87). */
  #noticeThenDisconnect(client: Client, code: TokenInvalidCode, type: TokenType, refusal: Refusal, then: () => void): void {
    this.#context.sendPublish(client, TOKEN_TOPICS.invalidNotice, invalidNoticePayload(code, type), () => this.#context.disconnectFor(client, refusal, then));
  }

  /** A PUBLISH, SUBSCRIBE or upload refused by the session's tokens: the notice, then the disconnect, then `then`. */
  #refuse(client: Client, outcome: Refused, what: string, then: (error: Error) => void): void {
    const refusal = tokenRefusal(outcome.rule, outcome.code, outcome.type, what);
    const error = new Error(refusal.reason);
    // A packet behind the one that ended the session: it is being told and disconnected already.
    if (outcome.repeated) {
      then(error);
      return;
    }
    this.#context.report(refusal, client.id);
    this.#noticeThenDisconnect(client, outcome.code, outcome.type, refusal, () => then(error));
  }

  /**
   * `$SYS/uploadToken` (reference §5.3): `{"Token": "…", "type": "R|W|RW"}` replaces the session's token of that type
   * (or adds one) before the PUBACK, so a client that waited for its PUBACK holds the new token. A payload that is
   * not that is refused as a protocol error without a notice (there is no token to name): the client is disconnected
   * (MQTT 5: DISCONNECT 0x99 Payload format invalid). A token that does not verify gets $SYS/tokenInvalidNotice with
   * its code, then the disconnect, like any invalid token of the session.
   */
  #upload(client: Client, packet: PublishPacket, done: (error?: Error | null) => void): void {
    const context = this.#context;
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload, 'utf8') : packet.payload;
    const parsed = parseUploadToken(payload);
    if (!parsed.ok) {
      const refusal: Refusal = { rule: 'tokenUpload', action: 'disconnect', reasonCode: REASON.PAYLOAD_FORMAT_INVALID, reason: `a ${TOKEN_TOPICS.upload} payload that is not {"Token": "…", "type": "R|W|RW"}: ${parsed.problem}` };
      context.report(refusal, client.id);
      context.disconnectFor(client, refusal, () => done(new Error(refusal.reason)));
      return;
    }
    const outcome = this.#sessions?.upload(client, parsed.value) ?? { allowed: true };
    if (!outcome.allowed) {
      this.#refuse(client, outcome, `the ${parsed.value.type} token uploaded to ${TOKEN_TOPICS.upload}`, done);
      return;
    }
    // The upload is the broker's business and its payload a credential: it is acknowledged here and never routed.
    acknowledgeUnrouted(client, packet, context.options.drainTimeoutMs);
    done(null);
  }
}

function tokenRefusal(rule: 'tokenResource' | 'tokenInvalid', code: TokenInvalidCode, type: TokenType, what: string): Refusal {
  return { rule, action: 'disconnect', reasonCode: REASON.NOT_AUTHORIZED, reason: `${what}: the ${type} token is ${describeTokenCode(code)}; $SYS/tokenInvalidNotice sent` };
}
