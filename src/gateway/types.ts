/** The gateway's public types (gateway.ts): its options, events, per-device view and counts. */
import type { IPublishPacket } from 'mqtt';
import type { ConnectDeviceOptions, DeviceConnection } from '../connector/connect.js';
import type { DeviceConnectionEvents } from '../connector/connection-types.js';
import type { CredentialSource } from '../credential.js';
import type { ApsaraMqDeviceError } from '../errors.js';
import type { OutboxDropReason, OutboxStore } from '../outbox/store.js';
import type { BackoffOptions } from '../util/backoff.js';
import type { GatewayCredentials } from './credentials.js';

/**
 * Where a device is: `connecting` (waiting for its connect slot, or its CONNECT under way), `online`,
 * `backing-off` (waiting to reconnect, or asking for another credential), `failed` (gave up for good: its messages
 * stay on disk) or `closed` (removed, or the gateway closed).
 */
export type GatewayDeviceState = 'connecting' | 'online' | 'backing-off' | 'failed' | 'closed';

/** How a CONNECT ended: accepted (CONNACK 0), refused (the broker refused the credential or ClientId), or failed (no CONNACK). */
export type ConnectOutcome = 'accepted' | 'refused' | 'failed';

/** Options of {@link Gateway}. */
export interface GatewayOptions {
  /** The durable outbox of every device (opened by the application with `openOutboxStore`; it closes it after {@link Gateway.close}). */
  readonly outbox: OutboxStore;
  /** The credentials: {@link storeCredentials} (store first, a registrar on first need), or a function giving each device's source. */
  readonly credentials: GatewayCredentials | ((clientId: string, signal?: AbortSignal) => CredentialSource | Promise<CredentialSource>);
  /**
   * Options of every connection (`endTimeoutMs`: how long each may drain in {@link Gateway.close} and
   * {@link Gateway.remove}; `reconnect` defaults to {@link GATEWAY_BACKOFF}, 0.5 s to 5 s: the pacer is the fleet's backoff).
   */
  readonly connect: Omit<ConnectDeviceOptions, 'credential' | 'outbox' | 'signal' | 'connectGate'>;
  /** CONNECTs per second across all devices (first connects and reconnects alike); `Infinity` for no pacing. @default 100 */
  readonly connectRate?: number;
  /** Each CONNECT let through waits a further uniform [0, connectJitterMs) ms. @default 0 */
  readonly connectJitterMs?: number;
  /** Delays between failed first CONNECTs of a device (a connection reconnects by itself once it was online). @default {@link GATEWAY_BACKOFF}: 0.5 s to 5 s */
  readonly retry?: BackoffOptions;
  /** Randomness of the jitters, [0, 1). @default Math.random */
  readonly random?: () => number;
}

/** A device's message (from a subscription of its connection). */
export interface GatewayMessage {
  readonly clientId: string;
  readonly topic: string;
  readonly payload: Buffer;
  readonly packet: IPublishPacket;
}

/** Events of {@link Gateway}. */
export interface GatewayEvents {
  /** A message arrived for a device (subscribe through {@link Gateway.connection}). */
  message: [message: GatewayMessage];
  /** A device's message was delivered (PUBACK): also one accepted before a restart. */
  delivered: DeviceConnectionEvents['delivered'];
  /**
   * A device's message left the outbox undelivered: the store's bounds, its time to live or damage (also for a device
   * whose connection is not open), or the broker refused it (with the broker's `error`).
   */
  dropped: DeviceConnectionEvents['dropped'];
  /** A device changed state; `error` says why it is backing off or failed. */
  device: [info: { clientId: string; state: GatewayDeviceState; from: GatewayDeviceState; error?: ApsaraMqDeviceError }];
  /** A CONNECT was answered (or not): `reconnect` once the device was online before; `durationMs` from its slot to the answer. */
  connect: [info: { clientId: string; reconnect: boolean; outcome: ConnectOutcome; durationMs: number }];
  /** A connection reported something that went wrong without closing it (its `error` event). */
  warning: [info: { clientId: string; error: ApsaraMqDeviceError }];
}

/** What {@link Gateway.device} tells of one device. */
export interface GatewayDeviceInfo {
  readonly clientId: string;
  readonly state: GatewayDeviceState;
  /** Its connection while it has one (to subscribe, or publish QoS 0). */
  readonly connection: DeviceConnection | undefined;
  /** Its messages in the outbox now. */
  readonly outbox: { readonly messages: number; readonly bytes: number };
}

/** The aggregate of {@link Gateway.counts}. */
export interface GatewayCounts {
  /** Devices held, and how many are in each state. */
  readonly devices: number;
  readonly states: Readonly<Record<Exclude<GatewayDeviceState, 'closed'>, number>>;
  /** Devices waiting for their connect slot now. */
  readonly waitingToConnect: number;
  /** First CONNECTs of a device (until it was online once), by outcome. */
  readonly connects: Readonly<Record<ConnectOutcome, number>>;
  /** CONNECTs of a device that was online before, by outcome. */
  readonly reconnects: Readonly<Record<ConnectOutcome, number>>;
  /** Messages accepted through {@link Gateway.publish}, delivered, and dropped by reason (this run). */
  readonly accepted: number;
  readonly delivered: number;
  readonly possibleDuplicates: number;
  readonly dropped: Readonly<Record<OutboxDropReason, number>>;
  /** The outbox now (all devices, held or not). */
  readonly outbox: { readonly messages: number; readonly bytes: number };
}
