/**
 * The cloud's MQTT rules (mqtt-rules.ts) wired into aedes: its authorize hooks, P2P delivery, the repair of what aedes
 * stores of a persistent session's refused filters, and aedes' own refusals reported as rules. Token mode is checked
 * first (broker-token-mode.ts), so that a Token-mode client is told why.
 */
import type { Aedes, AedesOptions, Client, Subscription } from 'aedes';
import { aedesRefusal, onAccepted, onBrokerError, sessionStore } from './aedes-adapter.js';
import type { BrokerTokenMode } from './broker-token-mode.js';
import { acknowledgeOnceRouted, acknowledgeUnrouted, publishSize, type BrokerContext } from './broker-wire.js';
import { REASON, checkPublish, checkSubscribe, type SessionFacts } from './mqtt-rules.js';
import { p2pInbox, p2pTarget } from './p2p.js';

type RuleHooks = Required<Pick<AedesOptions, 'authorizeSubscribe' | 'authorizeForward'>>;

/** What the rules need to know of a client. */
function sessionFacts(client: Client): SessionFacts {
  // aedes sets `clean` from the clean-session flag (MQTT 3.1.1) or a zero session expiry (MQTT 5).
  return { clientId: client.id, persistent: !client.clean };
}

/** The cloud's rules of one broker. */
export class BrokerRules {
  readonly #context: BrokerContext;
  readonly #tokenMode: BrokerTokenMode;
  /** The subscriptions each client holds, by filter: for the subscriptions-per-client rule, and to repair what aedes stores of a persistent session. */
  readonly #held = new WeakMap<Client, Map<string, Subscription>>();
  /** A client's QoS 1 PUBLISH is acknowledged once routed (broker-wire.ts {@link acknowledgeOnceRouted}), not before. */
  readonly #ackOnceRouted: boolean;

  /** @param ackOnceRouted - clustered: queueing and routing a message are round trips to Redis. */
  constructor(context: BrokerContext, tokenMode: BrokerTokenMode, ackOnceRouted = false) {
    this.#context = context;
    this.#tokenMode = tokenMode;
    this.#ackOnceRouted = ackOnceRouted;
  }

  /** The hooks aedes is created with. */
  hooks(): RuleHooks {
    return {
      authorizeSubscribe: (client, subscription, done) => this.#authorizeSubscribe(client, subscription, done),
      authorizeForward: (client, packet) => this.#authorizeForward(client, packet),
    };
  }

  /** The publish rules (kept ahead of aedes' own), the broker's P2P subscription, and the events the rules follow. */
  install(broker: Aedes): void {
    const { options, report } = this.#context;
    // Keep aedes' own publish rules (no publishing to $SYS) after the service's.
    const aedesAuthorizePublish = broker.authorizePublish;
    broker.authorizePublish = (client, packet, done) => {
      if (client && this.#tokenMode.handlesPublish(client, packet, done)) return;
      const refusal = checkPublish(options, packet, client ? sessionFacts(client) : undefined);
      if (refusal) {
        report(refusal, client?.id);
        if (refusal.action === 'discard' && client) {
          // Acknowledged as if routed (the service discards silently), delivered to no one.
          acknowledgeUnrouted(client, packet, options.drainTimeoutMs);
          done(null);
          return;
        }
        if (refusal.action !== 'ignore') {
          // MQTT 3.1.1: aedes closes the connection on the error, as the service does (reference §5.4, §5.7).
          // A will being published (its client closed) is just dropped.
          const error = new Error(refusal.reason);
          this.#context.disconnectFor(client, refusal, () => done(error));
          return;
        }
        packet.retain = false;
      }
      // A retained P2P message would be re-sent to its addressee on every connect; the service has no such thing.
      if (p2pTarget(packet.topic) !== undefined) packet.retain = false;
      // A client's own QoS 1 PUBLISH (a will has no packet id), once aedes' rules let it through.
      if (this.#ackOnceRouted && client && packet.qos === 1 && packet.messageId !== undefined) {
        aedesAuthorizePublish.call(broker, client, packet, (error) => {
          if (error) done(error);
          else acknowledgeOnceRouted(broker, client, packet, options.drainTimeoutMs, () => done(null));
        });
        return;
      }
      aedesAuthorizePublish.call(broker, client, packet, done);
    };
    // Subscribed once aedes accepts the CONNECT, before the CONNACK is written, so the P2P subscription is in place
    // before the client can know it is connected: also while a takeover waits for the old connection's close, which
    // aedes' 'client' event (the registration) waits for and the CONNACK does not. Persistent sessions keep it (with
    // their queued P2P messages). aedes does not downgrade to a wildcard subscription's QoS, so P2P messages arrive at
    // the QoS they were sent with (QoS 1 at most in a persistent session while QoS 2 is refused there); and it
    // delivers a message once per client even when the client also subscribed to its own P2P topic.
    onAccepted(broker, (client) => {
      const qos = options.qos2PersistentSessions === 'refuse' && !client.clean ? 1 : 2;
      client.subscribe({ topic: p2pInbox(client.id), qos }, () => undefined);
    });
    // aedes has set each subscription's `qos` to what the SUBACK granted: 0x80 and up is a refusal.
    broker.on('subscribe', (subscriptions, client) => {
      const refused: string[] = [];
      for (const sub of subscriptions) {
        const granted = sub.qos as number;
        // MQTT 5: aedes answers `$share/` filters with SUBACK 0x9E itself, before the authorize hook.
        if (granted === 0x9e) {
          report({ rule: 'sharedSubscription', action: 'deny', reasonCode: 0x9e, reason: `a shared subscription '${sub.topic}' (MQTT 5: SUBACK 0x9E)` }, client.id);
        }
        if (granted >= 0x80) refused.push(sub.topic);
      }
      if (!client.clean && refused.length > 0) this.#repairStoredSession(broker, client, refused);
    });
    broker.on('unsubscribe', (filters, client) => {
      const mine = this.#held.get(client);
      for (const filter of filters) mine?.delete(filter);
    });
    reportAedesRefusals(broker, this.#context);
  }

  #heldBy(client: Client): Map<string, Subscription> {
    let filters = this.#held.get(client);
    if (!filters) {
      filters = new Map();
      this.#held.set(client, filters);
    }
    return filters;
  }

  #authorizeSubscribe(client: Client, subscription: Subscription, done: Parameters<RuleHooks['authorizeSubscribe']>[2]): void {
    // The broker's own P2P subscription (also when a persistent session restores it) is not the client's doing.
    if (subscription.topic === p2pInbox(client.id)) {
      done(null, subscription);
      return;
    }
    if (this.#tokenMode.refusesSubscribe(client, subscription, (error) => done(error))) return;
    const filters = this.#heldBy(client);
    const refusal = checkSubscribe(this.#context.options, subscription, sessionFacts(client), filters);
    if (!refusal) {
      filters.set(subscription.topic, subscription);
      done(null, subscription);
      return;
    }
    this.#context.report(refusal, client.id);
    if (refusal.action === 'disconnect') {
      this.#context.disconnectFor(client, refusal, () => done(new Error(refusal.reason)));
      return;
    }
    // null = a SUBACK failure for this filter only (3.1.1: 0x80, MQTT 5: 0x87); the client's other filters are granted.
    done(null, null);
  }

  #authorizeForward(client: Client, packet: Parameters<RuleHooks['authorizeForward']>[1]): ReturnType<RuleHooks['authorizeForward']> {
    // Broad filters (`#`, `Parent/#`) match other clients' P2P topics; only the addressee gets those messages.
    const target = p2pTarget(packet.topic);
    if (target !== undefined && (target !== client.id || this.#tokenMode.dropsP2p(client, packet.topic))) return null;
    return this.#exceedsClientLimit(client, packet) ? null : packet;
  }

  /**
   * MQTT-3.1.2-24/25: a PUBLISH larger than the Maximum Packet Size the client asked for is not sent to it; the
   * broker discards it as if sent (a persistent session's copy is cleared by aedes when this hook refuses it).
   */
  #exceedsClientLimit(client: Client, packet: Parameters<RuleHooks['authorizeForward']>[1]): boolean {
    const limit = this.#context.maximumPacketSize.get(client);
    if (limit === undefined) return false;
    // Cheap first: without properties, the header is at most 7 bytes beside the topic (3 bytes a character at most).
    if (!packet.properties && packet.payload.length + 3 * packet.topic.length + 7 <= limit) return false;
    const size = publishSize(packet, client.version);
    if (size <= limit) return false;
    this.#context.report({ rule: 'clientMaximumPacketSize', action: 'drop', reasonCode: 0, reason: `a PUBLISH to '${packet.topic}' of ${size} bytes, over the Maximum Packet Size of ${limit} the client asked for` }, client.id);
    return true;
  }

  /**
   * In a persistent session aedes stores every filter of a SUBSCRIBE once one of them is granted, the refused ones
   * too, and would then queue offline messages for them: put back what the client really holds.
   */
  #repairStoredSession(broker: Aedes, client: Client, refused: readonly string[]): void {
    const mine = this.#held.get(client);
    const store = sessionStore(broker);
    const removed = refused.filter((filter) => !mine?.has(filter));
    const restored = refused.flatMap((filter) => mine?.get(filter) ?? []);
    store.removeSubscriptions(client, removed)
      .then(() => (restored.length > 0 ? store.addSubscriptions(client, restored) : undefined))
      .catch((error: unknown) => this.#context.options.logger.error(`MQTT broker error: ${error instanceof Error ? error.message : String(error)}`));
  }
}

/**
 * Refusals aedes makes itself, reported like the rules' own. A drain timeout fails every write that waited for the
 * drain, each with its own error event: it is reported once per client.
 */
function reportAedesRefusals(broker: Aedes, context: BrokerContext): void {
  const { options, report } = context;
  const drainTimedOut = new WeakSet<Client>();
  const onError = (client: Client | null, error: Error): void => {
    const id = client?.id ?? undefined;
    const refusal = aedesRefusal(error);
    if (refusal?.kind === 'packetTooLarge') {
      report({ rule: 'packetSize', action: 'disconnect', reasonCode: REASON.PACKET_TOO_LARGE, reason: `a packet of ${String(refusal.size)} bytes, over the limit of ${options.maxPacketBytes}` }, id);
    } else if (refusal?.kind === 'drainTimeout' && client && !drainTimedOut.has(client)) {
      drainTimedOut.add(client);
      report({ rule: 'slowConsumer', action: 'disconnect', reasonCode: 0, reason: `a socket that took no data for ${options.drainTimeoutMs} ms` }, id);
    } else if (refusal?.kind === 'subscriptionIdentifier') {
      report({ rule: 'subscriptionIdentifier', action: 'disconnect', reasonCode: 0x82, reason: `${refusal.message} (MQTT 5 allows 1 to 268,435,455; DISCONNECT 0x82)` }, id);
    }
  };
  broker.on('clientError', onError);
  broker.on('connectionError', onError);
  // aedes reports persistence failures here; unheard, an 'error' event would end the process.
  onBrokerError(broker, (error) => options.logger.error(`MQTT broker error: ${error.message}`));
}
