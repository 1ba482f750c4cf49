/**
 * What a connection puts in its outbox: a PUBLISH, SUBSCRIBE, UNSUBSCRIBE, or the SUBSCRIBE that restores the
 * subscriptions of a session the broker did not keep. Each item knows how to send itself on an mqtt.js client and
 * how to read the broker's answer; the outbox (outbox.ts) decides when it goes, the connection settles it.
 */
import type { IClientPublishOptions, ISubscriptionGrant, MqttClient } from 'mqtt';
import { type ApsaraMqDeviceError, PublishError, SubscribeError } from '../errors.js';
import { describeCode, hex } from './connection-errors.js';
import { ErrorWithReasonCode } from './mqtt-client.js';
import type { OutboxItem } from './outbox.js';
import { writePublish } from './publish-writer.js';

/** The answer to an item: acknowledged (with a value), refused (with the error), or no answer (the client closed). */
export type SendResult = { readonly ok: true; readonly value?: unknown } | { readonly ok: false; readonly error: ApsaraMqDeviceError } | { readonly ok: 'ignore' };

/** The answer of an acknowledged PUBLISH (one object for all). */
const ACKNOWLEDGED: SendResult = Object.freeze({ ok: true });

/** A settled answer: acknowledged or refused. */
export type Settled = SendResult & { ok: true | false };

/** A PUBLISH, SUBSCRIBE or UNSUBSCRIBE waiting in the outbox. */
export interface Item extends OutboxItem {
  readonly kind: 'publish' | 'subscribe' | 'unsubscribe' | 'resubscribe';
  /** For error messages: the topic or filters. */
  readonly topics: readonly string[];
  send(client: MqttClient, done: (result: SendResult) => void): void;
  settle(result: Settled): void;
}

/** The options of one subscription, kept to restore it on a session the broker did not keep. */
export interface Subscription {
  readonly qos: 0 | 1 | 2;
  readonly nl?: boolean;
  readonly rap?: boolean;
  readonly rh?: 0 | 1 | 2;
}

/** The bytes of topic filters, as an item counts them. */
export function topicBytes(filters: readonly string[]): number {
  return filters.reduce((sum, filter) => sum + Buffer.byteLength(filter), 0);
}

/** MQTT 5 user properties of a SUBSCRIBE or UNSUBSCRIBE. */
type UserProperties = { userProperties?: Record<string, string | string[]> } | undefined;

/** What is subscribed: the filters the broker granted, minus those unsubscribed since. */
export class Subscriptions {
  /** Made on the first grant: most devices only publish. */
  #granted: Map<string, Subscription> | undefined;

  grant(topic: string, subscription: Subscription): void {
    (this.#granted ??= new Map()).set(topic, subscription);
  }

  forget(topic: string): void {
    this.#granted?.delete(topic);
  }

  /** Every subscription as SUBSCRIBE's map, or `undefined` when there is none. */
  all(): Record<string, Subscription> | undefined {
    return this.#granted && this.#granted.size > 0 ? Object.fromEntries(this.#granted) : undefined;
  }
}

/**
 * A PUBLISH: acknowledged by PUBACK/PUBCOMP (QoS 1/2) or written (QoS 0); an MQTT 5 refusal is a `PublishRejected`.
 * A class, not a closure per item: a connection may hold thousands, and the durable outbox's items extend it.
 */
export class PublishItem implements Item {
  strikes = 0;
  session: number | undefined = undefined;
  readonly kind = 'publish' as const;
  readonly bytes: number;
  readonly seq: number;
  readonly topic: string;
  readonly payload: string | Buffer;
  readonly options: IClientPublishOptions;
  readonly #onSettle: ((result: Settled) => void) | undefined;

  constructor(seq: number, topic: string, payload: string | Buffer, options: IClientPublishOptions, onSettle?: (result: Settled) => void) {
    this.seq = seq;
    this.topic = topic;
    this.payload = payload;
    this.options = options;
    this.bytes = Buffer.byteLength(topic) + (typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length);
    this.#onSettle = onSettle;
  }

  get topics(): readonly string[] {
    return [this.topic];
  }

  send(client: MqttClient, done: (result: SendResult) => void): void {
    const { topic } = this;
    const answered = (error?: Error): void => {
      if (!error) done(ACKNOWLEDGED);
      else if (error instanceof ErrorWithReasonCode) {
        done({ ok: false, error: new PublishError(`The broker refused the message to ${topic}: ${describeCode(error.code, 5)}`, topic, { reasonCode: error.code }) });
      } else done({ ok: 'ignore' });
    };
    if (!writePublish(client, topic, this.payload, this.options, answered)) client.publish(topic, this.payload, this.options, answered);
  }

  settle(result: Settled): void {
    this.#onSettle?.(result);
  }
}

/** A PUBLISH settled by `settle`. */
export function publishItem(seq: number, topic: string, payload: string | Buffer, options: IClientPublishOptions, settle: (result: Settled) => void): Item {
  return new PublishItem(seq, topic, payload, options, settle);
}

/**
 * A SUBSCRIBE (or the resubscription of a session the broker did not keep): settles with the grants on SUBACK, or
 * with a {@link SubscribeError} naming the refused filters; the granted ones are remembered in `subscriptions`.
 */
export function subscribeItem(
  seq: number,
  kind: 'subscribe' | 'resubscribe',
  map: Record<string, Subscription>,
  properties: UserProperties,
  subscriptions: Subscriptions,
  settle: (result: Settled) => void,
): Item {
  const filters = Object.keys(map);
  return {
    seq,
    strikes: 0,
    session: undefined,
    kind,
    topics: filters,
    bytes: topicBytes(filters),
    send: (client, done) => {
      client.subscribe(map, properties ? { properties } : {}, (_error, _granted, packet) => {
        // A SUBACK, refusing or not, is the broker's answer; anything else (a closed client) is not.
        if (packet?.cmd !== 'suback') return done({ ok: 'ignore' });
        const codes = (packet.granted as unknown[]).map((g) => (typeof g === 'number' ? g : (g as { qos?: number }).qos));
        const grants: ISubscriptionGrant[] = filters.map((topic, i) => ({ topic, qos: (codes[i] ?? 0x80) as ISubscriptionGrant['qos'] }));
        for (const grant of grants) if (grant.qos < 0x80) subscriptions.grant(grant.topic, map[grant.topic] as Subscription);
        const refused = grants.filter((g) => g.qos >= 0x80);
        if (refused.length > 0) {
          const reasonCode = refused[0]?.qos;
          const message = `The broker refused the subscription to ${refused.map((g) => g.topic).join(', ')} (${refused.map((g) => hex(g.qos)).join(', ')})`;
          done({ ok: false, error: new SubscribeError(message, refused.map((g) => g.topic), reasonCode === undefined ? {} : { reasonCode }) });
        } else done({ ok: true, value: grants });
      });
    },
    settle,
  };
}

/** An UNSUBSCRIBE: settles on UNSUBACK; an MQTT 5 refusal (a reason code of 0x80 or more) is a `SubscribeRejected`. */
export function unsubscribeItem(seq: number, filters: readonly string[], properties: UserProperties, settle: (result: Settled) => void): Item {
  return {
    seq,
    strikes: 0,
    session: undefined,
    kind: 'unsubscribe',
    topics: filters,
    bytes: topicBytes(filters),
    send: (client, done) => {
      client.unsubscribe(filters as string[], properties ? { properties } : {}, (_error, packet) => {
        if (packet?.cmd !== 'unsuback') return done({ ok: 'ignore' });
        const codes = (packet as { granted?: unknown }).granted;
        const refused = Array.isArray(codes) ? filters.filter((_f, i) => typeof codes[i] === 'number' && codes[i] >= 0x80) : [];
        if (refused.length > 0) done({ ok: false, error: new SubscribeError(`The broker refused to unsubscribe from ${refused.join(', ')}`, refused) });
        else done({ ok: true });
      });
    },
    settle,
  };
}
