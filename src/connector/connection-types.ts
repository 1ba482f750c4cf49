/**
 * The public shapes of a {@link DeviceConnection}: its events and the options of its operations. Types only; the
 * connection is in connection.ts, the door (`connectDevice`) in connect.ts.
 */
import type { IClientPublishOptions, IPublishPacket } from 'mqtt';
import type { DeviceCredential } from '../credential.js';
import type { ApsaraMqDeviceError } from '../errors.js';
import type { TokenGrant } from '../signer/mqtt.js';
// Types only: the device entry never loads the outbox's engine (the application passes the store in).
import type { OutboxDropReason } from '../outbox/store.js';
import type { ConnectionState } from './state.js';
// For the {@link} links of the TSDoc only.
import type { DeviceConnection } from './connection.js';

/** MQTT 5 properties a publish may carry (passed through to the broker). */
export type PublishProperties = Pick<
  NonNullable<IClientPublishOptions['properties']>,
  'userProperties' | 'messageExpiryInterval' | 'contentType' | 'responseTopic' | 'correlationData' | 'payloadFormatIndicator'
>;

/** Options of {@link DeviceConnection.publish}. */
export interface PublishOptions {
  /** @default 0 ({@link DeviceConnection.enqueue}: 1) */
  qos?: 0 | 1 | 2;
  /** Not supported by ApsaraMQ (needs `brokerIsApsaraMq: false`). @default false */
  retain?: boolean;
  /** MQTT 5 only. */
  properties?: PublishProperties;
  /**
   * The application's own id of the message (a non-empty string of at most 255 bytes of UTF-8; not sent to the
   * broker). With a durable outbox it is kept on disk with the message and given back in the `accepted`,
   * `delivered` and `dropped` events, so that an application that restarted can match the deliveries of messages it
   * handed over before; without one, it is given back in `accepted` only.
   */
  id?: string;
}

/** A message the connection took: durable (on disk) with a durable outbox and QoS 1 or 2, else held in memory. */
export interface PublishAccepted {
  readonly clientId: string;
  /** Its seq in the durable outbox (store-wide, increasing with acceptance); `undefined` when not durable. */
  readonly seq: number | undefined;
  /** The application's id, when it gave one. */
  readonly id?: string;
  /** On disk (fsync'd): it survives a crash, a kill -9 or a power cut, and is sent by the next connection. */
  readonly durable: boolean;
}

/**
 * What {@link DeviceConnection.publish} returns: a promise of the delivery (PUBACK for QoS 1 and 2, written to the
 * socket for QoS 0) that also carries `accepted`, a promise of the moment the connection took the message (with a
 * durable outbox and QoS 1 or 2: once it is on disk).
 */
export type Publishing = Promise<void> & { readonly accepted: Promise<PublishAccepted> };

/** Which message of the durable outbox an event is about. */
export interface OutboxReport {
  readonly clientId: string;
  /** Its seq in the durable outbox. */
  readonly seq: number;
  /** The application's id, when it gave one. */
  readonly id?: string;
}


/** Options of {@link DeviceConnection.subscribe}. */
export interface SubscribeOptions {
  /** @default 1 */
  qos?: 0 | 1 | 2;
  /** MQTT 5: no local (do not receive your own messages). */
  nl?: boolean;
  /** MQTT 5: retain as published. */
  rap?: boolean;
  /** MQTT 5: retain handling, 0 to 2. */
  rh?: 0 | 1 | 2;
  /** MQTT 5 only: user properties of the SUBSCRIBE. */
  properties?: { userProperties?: Record<string, string | string[]> };
}

/** Events of a {@link DeviceConnection}. */
export interface DeviceConnectionEvents {
  /** The state machine moved (see {@link ConnectionState}). */
  state: [info: { from: ConnectionState; to: ConnectionState }];
  /** CONNACK 0 received (first connect and every reconnect); `sessionPresent` as the broker said. */
  online: [info: { sessionPresent: boolean }];
  /** The session was lost; a reconnect follows unless `closed` is emitted. */
  offline: [];
  /** A reconnect is scheduled. */
  reconnecting: [info: { attempt: number; delayMs: number }];
  /** A refused CONNECT led to a new credential from the source. */
  'credential-refreshed': [info: { credential: DeviceCredential }];
  /** The broker refused the credential or the tokens (3.1.1 CONNACK 4 or 5, MQTT 5 reason 0x86 or 0x87). */
  'auth-failed': [info: { rc: number }];
  /**
   * Token mode: new tokens are in use. `inSession`: uploaded to `$SYS/uploadToken` and acknowledged, the session
   * went on (a renewal before expiry); otherwise they are for the next CONNECT (after a refusal or an invalid notice,
   * or a renewal while offline). `types`: the types that changed.
   */
  'token-renewed': [info: { types: TokenGrant['type'][]; inSession: boolean }];
  /** Token mode: the broker's `$SYS/tokenExpireNotice`: the token of `type` expires at `expireTime` (ms since the epoch). */
  'token-expiring': [info: { type: TokenGrant['type']; expireTime: number }];
  /**
   * Token mode: the broker's `$SYS/tokenInvalidNotice`, before it disconnects: `code` 1 forged, 2 expired, 3 revoked,
   * 8 bad signature, -1 account (the tokens are replaced from the source before the next CONNECT), or 4 resource and
   * 5 permission type mismatch (the operation in flight fails, the tokens are kept).
   */
  'token-invalid': [info: { code: number; type: TokenGrant['type'] | undefined }];
  /**
   * Another client with this ClientId took the session over: `confirmed` when the broker said so (MQTT 5
   * DISCONNECT 0x8E), else suspected (MQTT 3.1.1: the broker closed the session and accepted the next CONNECT at
   * once). `inARow` counts takeovers without a stable session in between. The next reconnects wait longer.
   */
  takeover: [info: { confirmed: boolean; inARow: number }];
  /** Something went wrong; emitted only when someone listens, so an unobserved error never crashes the process. */
  error: [error: ApsaraMqDeviceError];
  /** An application message arrived. */
  message: [topic: string, payload: Buffer, packet: IPublishPacket];
  /** The connection is finished for good: by `end()` (no error) or because it gave up (with the error). */
  closed: [info: { error?: ApsaraMqDeviceError }];
  /** Durable outbox: a message is on disk (fsync'd), and will be sent until delivered, dropped or refused. */
  accepted: [report: OutboxReport];
  /**
   * Durable outbox: the broker acknowledged a message (also one accepted before a restart of the process).
   * `possibleDuplicate`: it had been sent before (in flight when a session or the process ended), so the broker may
   * have it twice.
   */
  delivered: [report: OutboxReport & { readonly possibleDuplicate: boolean }];
  /** Durable outbox: a message was removed undelivered; `error` is the broker's refusal (reason `rejected`). */
  dropped: [report: OutboxReport & { readonly reason: OutboxDropReason; readonly error?: ApsaraMqDeviceError }];
}

/** How a connection logs in: with a device credential, or with tokens (`connectDevice`'s `token` option). */
export type ConnectionMode = 'DeviceCredential' | 'Token';

export type { OutboxDropReason };
