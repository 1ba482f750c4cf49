/**
 * Every error a user of apsaramq-device can meet is an {@link ApsaraMqDeviceError}: it has a stable string
 * `code`, says whether retrying can help (`retryable`), carries a one-line `remedy`, and never carries a secret.
 *
 * Service errors keep the service's own code (`DeviceCredentialNotFound`, `Throttling.User`, …); errors that
 * happen on this side have codes of our own (`InvalidClientId`, `ConnectionRefused`, `StoreCorrupt`, …).
 * The full list, with remedies, is {@link API_ERROR_CATALOG} plus {@link LOCAL_ERROR_CATALOG}: one table, from
 * which `retryable`, the retry policy's classes and the README's errors table all derive.
 */

import {
  API_ERROR_CATALOG,
  type InvalidParameterCode,
  type KnownApiErrorCode,
  type RetryClass,
  apiErrorInfo,
  retryableOf,
} from './service-errors.js';

export {
  API_ERROR_CATALOG,
  type ApiErrorInfo,
  type ErrorInfo,
  type InvalidParameterCode,
  type KnownApiErrorCode,
  type RetryClass,
  apiErrorEntry,
  apiErrorInfo,
  isThrottlingCode,
} from './service-errors.js';

type LocalSpec = { readonly retryable: boolean; readonly remedy: string; readonly retryClass?: RetryClass };

/** A failure of the transport to the OpenAPI: its retry class decides `retryable`. */
function network(retryClass: RetryClass, remedy: string): { readonly retryable: boolean; readonly remedy: string; readonly retryClass: RetryClass } {
  return { retryable: retryableOf(retryClass), retryClass, remedy };
}

/** Codes of errors that happen on this side (validation, network, store, MQTT). */
export const LOCAL_ERROR_CATALOG = Object.freeze({
  InvalidClientId: { retryable: false, remedy: 'Use a ClientId of the form GID_<group>@@@<device>: letters, digits, - and _ only, at most 64 characters.' },
  InvalidInstanceId: { retryable: false, remedy: 'Pass the instance id from the ApsaraMQ for MQTT console (for example mqtt-cn-xxxxxxxx).' },
  InvalidGroupId: { retryable: false, remedy: 'Use a GroupId that starts with GID_ or GID- and has only letters, digits, - and _.' },
  InvalidOption: { retryable: false, remedy: 'Fix the option named in the message.' },
  MissingOption: { retryable: false, remedy: 'Pass the option named in the message.' },
  ConflictingOptions: { retryable: false, remedy: 'Pass only one of the options named in the message.' },
  UnknownCommand: { retryable: false, remedy: 'Use one of the commands the help lists.' },
  InvalidTopic: { retryable: false, remedy: 'Publish to a topic without + or #, not empty, at most 64 characters, of the form <parent topic>/<subtopic>…; subscribe to a valid filter.' },
  PayloadTooLarge: { retryable: false, remedy: 'The service accepts message bodies up to 64 KB: send less per message, or split it.' },
  UnsupportedByService: { retryable: false, remedy: 'ApsaraMQ for MQTT does not support this (retained messages, wills, shared subscriptions); leave it out, or pass brokerIsApsaraMq: false for another broker.' },
  MissingAccessKey: { retryable: false, remedy: 'Set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or pass accessKeyId and accessKeySecret.' },
  MissingDependency: { retryable: false, remedy: 'Install the optional package named in the message next to apsaramq-device (npm install <package>).' },
  InvalidCredential: { retryable: false, remedy: 'The credential must hold ClientId, InstanceId, DeviceAccessKeyId and DeviceAccessKeySecret (as RegisterDeviceCredential returns them).' },
  InvalidLine: { retryable: false, remedy: 'Give one JSON object per line: {"id": "…", "clientId": "…", "topic": "…", "payload": "…", "qos": 1}, with "payloadEncoding": "base64" for a binary payload.' },
  UnknownDevice: { retryable: false, remedy: 'Hand over messages only for the devices the gateway holds; add the device to them first.' },
  GatewayClosed: { retryable: false, remedy: 'The gateway was closed: make a new Gateway on the same outbox (what was not delivered is still on it).' },
  InvalidToken: { retryable: false, remedy: 'Tokens are an array of { type: \'R\' | \'W\' | \'RW\', token, expireTime? } (an IssuedToken from applyToken fits), at most one per type, no "|" in a token; a token source must resolve to such an array.' },
  InvalidResponse: network('unknown-outcome', 'The endpoint did not answer like the ApsaraMQ OpenAPI; check the endpoint (a proxy or load balancer may be in the way) and retry.'),
  ConnectionRefused: network('not-sent', 'Nothing listens at that address; check the endpoint or broker URL and that the service is up.'),
  HostNotFound: network('not-sent', 'The host name does not resolve; check the endpoint, the region and DNS.'),
  RequestTimeout: network('unknown-outcome', 'The service did not answer in time; retry, or raise the timeout.'),
  NetworkError: network('unknown-outcome', 'The connection failed or was reset; check the network and retry.'),
  StoreCorrupt: { retryable: false, remedy: 'The stored credential file is not valid: inspect it, move it aside, and put the credential the service holds (GetDeviceCredential) in its place.' },
  CredentialInStore: { retryable: false, remedy: 'Use the stored credential, or register a new one only if the device holding the old key may be refused from then on.' },
  StoreIOError: { retryable: false, remedy: 'The credential store could not be read or written; check the path, its permissions and free space.' },
  StoreInsecure: { retryable: false, remedy: 'The credential store is readable by other users; chmod 700 the directory and 600 its files.' },
  StoreLockLost: { retryable: true, remedy: 'Another registrar took over the lock of this ClientId because this process stalled past the lock\'s stale time; run again: the credential is confirmed with GetDeviceCredential before anything is registered.' },
  ConnackRefused: { retryable: false, remedy: 'The broker refused the CONNECT; the message gives the CONNACK return code.' },
  CredentialRejected: { retryable: false, remedy: 'The broker rejects this device credential even after fetching it again; check it was not unregistered, and that ClientId and instance match it.' },
  TokenRejected: { retryable: false, remedy: 'The broker refuses the tokens even after asking the token source again: check that they are neither expired nor revoked (QueryToken), that they were applied for this instance, that token.accessKeyId is the account that applied for them, and that the source hands out fresh ones.' },
  IdentifierRejected: { retryable: false, remedy: 'The broker rejected the ClientId: use GID_<group>@@@<device>, at most 64 characters, of a GroupId created on the instance (in the console).' },
  BrokerUnreachable: { retryable: true, remedy: 'The MQTT broker could not be reached; check the broker URL, port and network.' },
  ConnectTimeout: { retryable: true, remedy: 'No CONNACK arrived in time; check the broker URL and the network.' },
  TakeoverLoop: { retryable: false, remedy: 'Another client keeps connecting with the same ClientId; every device needs its own ClientId.' },
  SubscribeRejected: { retryable: false, remedy: 'Check the topic: its parent topic must exist on the instance, and a client may not subscribe to another client\'s p2p topic.' },
  PublishRejected: { retryable: false, remedy: 'Check that the parent topic exists and that the device may publish to it, and the message size (over MQTT 3.1.1 a broker refuses a message by closing the session; MQTT 5 gives a reason code).' },
  ConnectionClosed: { retryable: false, remedy: 'The connection was ended (end() or a permanent failure): open a new one with connectDevice.' },
  OutboxFull: { retryable: true, remedy: 'The outbox is at its bound: in memory, the connection\'s maxQueuedMessages or maxQueuedBytes; on disk, the durable outbox\'s maxMessages or maxBytes (whenFull: \'refuse-new\'). Publish again once the uplink has drained it, raise the bound, or (durable outbox) choose whenFull: \'drop-oldest\'.' },
  Aborted: { retryable: false, remedy: 'The operation was cancelled by its AbortSignal.' },
  AddressInUse: { retryable: false, remedy: 'Pick another port (the emulator options mqttPort, wsPort, apiPort, tlsPort, wssPort), or 0 for any free port.' },
  TooManyOpenFiles: { retryable: false, remedy: 'Each simulated device holds one socket: raise the open-file limit (ulimit -n 65536) or simulate fewer devices per process (option shard).' },
  SimulationFailed: { retryable: true, remedy: 'Some devices could not be provisioned or connected; the report counts them by error code under "errors".' },
  ReportMismatch: { retryable: false, remedy: 'Merge only the reports of one run: every shard started with the same settings (and startAt), each shard once.' },
  InvalidReport: { retryable: false, remedy: 'Pass reports written by a simulation run of this version (or merged from such reports).' },
  InvalidScenario: { retryable: false, remedy: 'Fix the field of the scenario the message names: an object with "faults", each with "at" (seconds from the start of connecting) and a "kind" (the README\'s game day section lists them and their fields).' },
  NothingPublished: { retryable: false, remedy: 'Check that the topic\'s parent topic exists on the instance and that the devices may publish to it; the message says what the broker did instead.' },
  ThresholdExceeded: { retryable: false, remedy: 'The run crossed a threshold it was given: the message names each one with the value measured; the report holds the details.' },
  ConsumerFailed: { retryable: true, remedy: 'The backend subscriber that counts deliveries (connected to the broker directly, in Signature mode with the account AccessKey) could not connect or subscribe: check the account keys and that the topic\'s parent topic exists.' },
  AddressSpaceTooSmall: { retryable: false, remedy: 'Spread the devices over more source addresses (option localAddress, e.g. 127.0.0.2-127.0.0.9 on loopback) or over more machines (option shard).' },
  EmulatorFailed: { retryable: false, remedy: 'The embedded emulator process could not start or died; start an emulator yourself (startEmulator) and pass it as the target.' },
  ShardFailed: { retryable: true, remedy: 'A shard process of a run in several processes ended without its report (it crashed, was killed, or could not start); the others were stopped. Its stderr is quoted; run that shard alone to see more.' },
  ConnectionLost: { retryable: true, remedy: 'The broker closed the connection during the run; the device reconnects with backoff.' },
  BrokerLost: { retryable: true, remedy: 'The broker stopped answering during the run and no device could reach it again: check that it is up and reachable from here, then run again.' },
  IncompleteAccessKey: { retryable: false, remedy: 'Set both ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or neither (the emulator then generates a key pair and prints it).' },
  EmulatorStateCorrupt: { retryable: false, remedy: 'The emulator\'s data file is not valid: repair it or move it away (it holds device secrets), or start with another dataDir or none (state in memory).' },
  EmulatorStateInsecure: { retryable: false, remedy: 'The emulator\'s data directory or file is readable by other users: chmod 700 the directory and 600 its files.' },
  EmulatorStateBusy: { retryable: false, remedy: 'Another emulator process uses this data directory: stop it, or start this one with another dataDir or none (state in memory).' },
  EmulatorStateIOError: { retryable: false, remedy: 'The emulator\'s data directory could not be read or written: check the path, its permissions and free space.' },
  EmulatorClusterUnavailable: { retryable: true, remedy: 'The cluster\'s Redis (the emulator\'s redis option) cannot be reached: check that it runs, its URL (host, port, database, password) and the network.' },
  EmulatorClusterMismatch: { retryable: false, remedy: 'Every emulator process of one cluster (one Redis database) serves one instance with one account and the same options: start this one with the options the message names as the running processes have them, stop those first, or use another Redis database (redis://host:6379/N).' },
  ProtocolError: { retryable: false, remedy: 'The peer does not speak MQTT; check the broker URL (is it the OpenAPI\'s HTTP port?).' },
  WaitTimeout: { retryable: false, remedy: 'What was waited for did not happen in time: check what should have made it happen (pass timeoutMs to wait longer on a slow machine).' },
  UnexpectedConnack: { retryable: false, remedy: 'The broker answered the CONNECT otherwise than expected: check the login and the broker\'s (emulator\'s) options.' },
  UnknownError: { retryable: false, remedy: 'Unexpected error; report it, with the stack of the error and of its cause.' },
  OutboxDiskFull: { retryable: true, remedy: 'The disk holding the outbox is full (or a file size or quota limit was hit): free space or move the outbox directory; messages already accepted are kept and still delivered, and new ones are accepted again once writing works.' },
  OutboxLocked: { retryable: false, remedy: 'Another process (or another open in this process) holds this outbox directory: close it first, or give each process its own directory.' },
  OutboxCorrupt: { retryable: false, remedy: 'The outbox directory cannot be opened as a store: move it aside (it holds message payloads) and start with an empty one; repairOutboxStore(dir) salvages what can still be read.' },
  OutboxIOError: { retryable: false, remedy: 'The outbox directory could not be read or written: check the path, its permissions and the disk.' },
  OutboxClosed: { retryable: false, remedy: 'The outbox store was closed: open it again with openOutboxStore.' },
  OutboxDropped: { retryable: false, remedy: 'The message was removed from the durable outbox without being delivered: its time to live passed (ttlMs), whenFull \'drop-oldest\' made room for newer ones, or its record was damaged on disk. Raise ttlMs, maxBytes or maxMessages of the outbox if such messages must wait longer; the drop event names the reason.' },
  OutboxRecovered: { retryable: false, remedy: 'A warning, not a failure: the outbox was not closed cleanly (a crash, kill -9 or power cut) or part of it was unreadable; every complete record before the damage was kept, nothing after it was invented, and messages that may have been in flight are sent again (counted as possible duplicates).' },
  DependencyMismatch: { retryable: false, remedy: 'Install the exact version of the package the message names next to apsaramq-device (npm install <package>@<version>).' },
} satisfies Record<string, LocalSpec>);

/** A code of {@link LOCAL_ERROR_CATALOG}. */
export type LocalErrorCode = keyof typeof LOCAL_ERROR_CATALOG;

/** Every code this library knows: the ones {@link isApsaraMqDeviceError} accepts. */
export type ErrorCode = KnownApiErrorCode | InvalidParameterCode | LocalErrorCode;

/**
 * The code of an {@link ApiError}: a documented one, or one the service sent that this library does not know yet
 * (it is kept as the service spelled it).
 */
export type ApiErrorCode = KnownApiErrorCode | InvalidParameterCode | (string & { readonly __uncatalogued?: never });

/** Is this a code this library knows (either catalog, or an `InvalidParameter.<Name>`)? */
export function isErrorCode(code: unknown): code is ErrorCode {
  return (
    typeof code === 'string' &&
    (Object.hasOwn(API_ERROR_CATALOG, code) || Object.hasOwn(LOCAL_ERROR_CATALOG, code) || /^InvalidParameter\.[A-Za-z0-9]+$/.test(code))
  );
}

/** Base class of every error this library throws. */
export class ApsaraMqDeviceError extends Error {
  /** Stable, machine-readable code: the service's own code for API errors, ours otherwise. */
  readonly code: ErrorCode | ApiErrorCode;
  /** True when the same call may succeed later unchanged (throttling, transient faults, network). */
  readonly retryable: boolean;
  /** One line saying what to do. */
  readonly remedy: string;

  constructor(code: ErrorCode | ApiErrorCode, message: string, options: { retryable: boolean; remedy: string; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ApsaraMqDeviceError';
    this.code = code;
    this.retryable = options.retryable;
    this.remedy = options.remedy;
  }

  /** A plain object for logs and JSON output: never contains a secret. */
  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, retryable: this.retryable, remedy: this.remedy };
  }
}

function localInfo(code: LocalErrorCode): { retryable: boolean; remedy: string } {
  const { retryable, remedy } = LOCAL_ERROR_CATALOG[code];
  return { retryable, remedy };
}

/** Codes of {@link ValidationError}. */
export type ValidationErrorCode =
  | 'InvalidClientId'
  | 'InvalidInstanceId'
  | 'InvalidGroupId'
  | 'InvalidOption'
  | 'InvalidCredential'
  | 'InvalidToken'
  | 'InvalidTopic'
  | 'PayloadTooLarge'
  | 'UnsupportedByService'
  | 'IncompleteAccessKey'
  | 'InvalidReport'
  | 'InvalidLine'
  | 'UnknownDevice'
  | 'GatewayClosed'
  | 'InvalidScenario';

/**
 * Bad input: a ClientId, instance id, option, credential, topic, message or simulation report that can never work.
 * Thrown before any I/O, so nothing was sent.
 */
export class ValidationError extends ApsaraMqDeviceError {
  declare readonly code: ValidationErrorCode;
  constructor(code: ValidationErrorCode, message: string) {
    super(code, message, localInfo(code));
    this.name = 'ValidationError';
  }
}

/** Missing or unusable configuration: account AccessKeys, or an optional package a role entry needs. */
export class ConfigurationError extends ApsaraMqDeviceError {
  declare readonly code: 'MissingAccessKey' | 'MissingDependency' | 'DependencyMismatch';
  /** @param remedy - replaces the catalog's, when the message knows better (the exact package to install). */
  constructor(code: 'MissingAccessKey' | 'MissingDependency' | 'DependencyMismatch', message: string, remedy?: string) {
    super(code, message, { ...localInfo(code), ...(remedy === undefined ? {} : { remedy }) });
    this.name = 'ConfigurationError';
  }
}

/** The operation was cancelled by its AbortSignal (code `Aborted`); the signal's reason is the `cause`. */
export class AbortedError extends ApsaraMqDeviceError {
  declare readonly code: 'Aborted';
  constructor(message: string, cause?: unknown) {
    super('Aborted', message, { ...localInfo('Aborted'), cause });
    this.name = 'AbortedError';
  }
}

/** The OpenAPI answered with an error code. `code` is the service's own code. */
export class ApiError extends ApsaraMqDeviceError {
  declare readonly code: ApiErrorCode;
  /** HTTP status of the answer. */
  readonly httpStatus: number;
  /** The service's RequestId, for support tickets. */
  readonly requestId: string | undefined;
  /** The API action that failed. */
  readonly action: string;
  /** The service's own message. */
  readonly serviceMessage: string;
  /** How retry policies treat it (from the one classification, {@link apiErrorInfo}). */
  readonly retryClass: RetryClass;

  /** `retryable` and `remedy` default to the code's classification; a caller that knows more (the action) may override them. */
  constructor(init: { code: ApiErrorCode; action: string; httpStatus: number; requestId?: string | undefined; serviceMessage: string; retryable?: boolean; remedy?: string }) {
    const classified = apiErrorInfo(init.code, init.httpStatus);
    const info = { retryable: init.retryable ?? classified.retryable, remedy: init.remedy ?? classified.remedy };
    const rid = init.requestId ? ` (RequestId ${init.requestId})` : '';
    super(init.code, `${init.action} failed: ${init.serviceMessage}${rid}. ${info.remedy}`, info);
    this.name = 'ApiError';
    this.httpStatus = init.httpStatus;
    this.requestId = init.requestId;
    this.action = init.action;
    this.serviceMessage = init.serviceMessage;
    this.retryClass = classified.retryClass;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), httpStatus: this.httpStatus, requestId: this.requestId, action: this.action };
  }
}

/** Codes of {@link NetworkError}. */
export type NetworkErrorCode = 'ConnectionRefused' | 'HostNotFound' | 'RequestTimeout' | 'NetworkError' | 'InvalidResponse';

/** The request never got a usable answer: refused, reset, timed out, not resolvable, or not the OpenAPI. */
export class NetworkError extends ApsaraMqDeviceError {
  declare readonly code: NetworkErrorCode;
  /** The endpoint that was called (no credentials in it). */
  readonly endpoint: string;
  /** HTTP status of the answer when one arrived (an HTML 502 page, a body cut short); undefined when none did. */
  readonly httpStatus: number | undefined;
  /** How retry policies treat it: `not-sent` or `unknown-outcome`. */
  readonly retryClass: RetryClass;
  /**
   * @param init - `httpStatus` of an answer that arrived; `retryable` and `remedy` replace the catalog's, e.g. for a
   *   request whose outcome is unknown and that is not safe to send twice.
   */
  constructor(
    code: NetworkErrorCode,
    message: string,
    endpoint: string,
    cause?: unknown,
    init: { httpStatus?: number | undefined; retryable?: boolean; remedy?: string } = {},
  ) {
    const info = LOCAL_ERROR_CATALOG[code];
    const remedy = init.remedy ?? info.remedy;
    super(code, `${message}. ${remedy}`, { retryable: init.retryable ?? info.retryable, remedy, cause });
    this.name = 'NetworkError';
    this.endpoint = endpoint;
    this.httpStatus = init.httpStatus;
    this.retryClass = info.retryClass;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), endpoint: this.endpoint, httpStatus: this.httpStatus };
  }
}

/** Codes of {@link StoreError}. */
export type StoreErrorCode = 'StoreCorrupt' | 'StoreIOError' | 'StoreInsecure' | 'StoreLockLost';

/** The credential store failed: unreadable, corrupt, or insecure. Nothing was overwritten. */
export class StoreError extends ApsaraMqDeviceError {
  declare readonly code: StoreErrorCode;
  /** The file or directory involved. */
  readonly path: string | undefined;
  constructor(code: StoreErrorCode, message: string, path?: string, cause?: unknown) {
    super(code, `${message}. ${LOCAL_ERROR_CATALOG[code].remedy}`, { ...localInfo(code), cause });
    this.name = 'StoreError';
    this.path = path;
  }
}

/** Codes of {@link EmulatorStateError}. */
export type EmulatorStateErrorCode = 'EmulatorStateCorrupt' | 'EmulatorStateInsecure' | 'EmulatorStateBusy' | 'EmulatorStateIOError' | 'EmulatorClusterUnavailable' | 'EmulatorClusterMismatch';

/**
 * The emulator's state cannot be used: its data directory (`dataDir`) is corrupt, insecure, in use by another process,
 * or unreadable; or, clustered (`redis`), its Redis cannot be reached or holds another instance, account or options.
 */
export class EmulatorStateError extends ApsaraMqDeviceError {
  declare readonly code: EmulatorStateErrorCode;
  /** The file or directory involved, or the cluster's Redis URL (its password hidden). */
  readonly path: string;
  constructor(code: EmulatorStateErrorCode, message: string, path: string, cause?: unknown) {
    super(code, `${message}. ${LOCAL_ERROR_CATALOG[code].remedy}`, { ...localInfo(code), cause });
    this.name = 'EmulatorStateError';
    this.path = path;
  }
}

/** CONNACK return codes of MQTT 3.1.1. */
export const CONNACK_CODES: Readonly<Record<number, string>> = Object.freeze({
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
});

/** Codes of {@link ConnectError}. */
export type ConnectErrorCode = 'ConnackRefused' | 'CredentialRejected' | 'TokenRejected' | 'IdentifierRejected' | 'BrokerUnreachable' | 'ConnectTimeout' | 'TakeoverLoop' | 'ProtocolError';

/** The MQTT broker could not be reached, refused the CONNECT, or the session could not be kept. */
export class ConnectError extends ApsaraMqDeviceError {
  declare readonly code: ConnectErrorCode;
  /** CONNACK return code (3.1.1) or reason code (5) when the broker answered with a refusal. */
  readonly connackCode: number | undefined;
  /** The ClientId that tried to connect. */
  readonly clientId: string;
  constructor(code: ConnectErrorCode, message: string, init: { clientId: string; connackCode?: number; cause?: unknown; retryable?: boolean; remedy?: string }) {
    const info = localInfo(code);
    const remedy = init.remedy ?? info.remedy;
    super(code, `${message}. ${remedy}`, { retryable: init.retryable ?? info.retryable, remedy, cause: init.cause });
    this.name = 'ConnectError';
    this.connackCode = init.connackCode;
    this.clientId = init.clientId;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), clientId: this.clientId, connackCode: this.connackCode };
  }
}

/** The broker refused a subscription (SUBACK 0x80, or a v5 reason code of 0x80 or more). */
export class SubscribeError extends ApsaraMqDeviceError {
  declare readonly code: 'SubscribeRejected';
  /** The refused topic filters. */
  readonly topics: readonly string[];
  constructor(message: string, topics: readonly string[], init: { reasonCode?: number } = {}) {
    super('SubscribeRejected', `${message}. ${LOCAL_ERROR_CATALOG.SubscribeRejected.remedy}`, localInfo('SubscribeRejected'));
    this.name = 'SubscribeError';
    this.topics = Object.freeze([...topics]);
    this.reasonCode = init.reasonCode;
  }

  /** The broker's reason code (128 for MQTT 3.1.1's failure). */
  readonly reasonCode: number | undefined;
}

/** The broker would not take a message: it closed the session each time the message was sent, or refused it (v5). */
export class PublishError extends ApsaraMqDeviceError {
  declare readonly code: 'PublishRejected';
  /** The topic of the message. */
  readonly topic: string;
  /** The v5 reason code when the broker gave one. */
  readonly reasonCode: number | undefined;
  constructor(message: string, topic: string, init: { reasonCode?: number; cause?: unknown } = {}) {
    super('PublishRejected', `${message}. ${LOCAL_ERROR_CATALOG.PublishRejected.remedy}`, { ...localInfo('PublishRejected'), cause: init.cause });
    this.name = 'PublishError';
    this.topic = topic;
    this.reasonCode = init.reasonCode;
  }
}

/**
 * The connection is closed for good (ended with `end()`, or given up after a permanent failure): an operation on it,
 * or one still waiting when it closed, fails with this. `cause` is the failure that closed it, if any.
 */
export class ConnectionClosedError extends ApsaraMqDeviceError {
  declare readonly code: 'ConnectionClosed';
  constructor(message: string, cause?: unknown) {
    super('ConnectionClosed', `${message}. ${LOCAL_ERROR_CATALOG.ConnectionClosed.remedy}`, { ...localInfo('ConnectionClosed'), cause });
    this.name = 'ConnectionClosedError';
  }
}

/** Codes of {@link SystemError}. */
export type SystemErrorCode = 'AddressInUse' | 'UnknownError';

/** A local system failure: a port in use, or something unexpected (with the original as `cause`). */
export class SystemError extends ApsaraMqDeviceError {
  declare readonly code: SystemErrorCode;
  constructor(code: SystemErrorCode, message: string, cause?: unknown) {
    super(code, message, { ...localInfo(code), cause });
    this.name = 'SystemError';
  }
}

/**
 * Type guard: is this one of ours? Optionally of one code (typed, so a misspelled code does not compile).
 * @throws ValidationError `InvalidOption` when `code` is not a code this library knows (a misspelling at run time).
 */
export function isApsaraMqDeviceError<C extends ErrorCode>(error: unknown, code?: C): error is ApsaraMqDeviceError & { readonly code: C } {
  if (code !== undefined && !isErrorCode(code)) {
    throw new ValidationError('InvalidOption', `isApsaraMqDeviceError: ${JSON.stringify(code)} is not an error code of apsaramq-device (see LOCAL_ERROR_CATALOG and API_ERROR_CATALOG)`);
  }
  return error instanceof ApsaraMqDeviceError && (code === undefined || error.code === code);
}

/** Wrap anything thrown into an ApsaraMqDeviceError (used at the CLI edge and in event payloads). */
export function toApsaraMqDeviceError(error: unknown): ApsaraMqDeviceError {
  if (error instanceof ApsaraMqDeviceError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new SystemError('UnknownError', message, error);
}

/** Codes of {@link OutboxError}. */
export type OutboxErrorCode = 'OutboxFull' | 'OutboxDiskFull' | 'OutboxLocked' | 'OutboxCorrupt' | 'OutboxIOError' | 'OutboxClosed' | 'OutboxDropped' | 'OutboxRecovered';

/**
 * The durable outbox (`apsaramq-device/outbox`) refused or could not do something: full (`OutboxFull`), out of disk
 * (`OutboxDiskFull`), held by another process (`OutboxLocked`), unreadable (`OutboxCorrupt`, `OutboxIOError`) or
 * closed (`OutboxClosed`); a connection's message was removed from it undelivered (`OutboxDropped`: expired, dropped at
 * the bound or damaged). `OutboxRecovered` is a warning, emitted (never thrown) when a store is reopened after a
 * crash or with damaged records. Never carries a message's payload or topic.
 */
export class OutboxError extends ApsaraMqDeviceError {
  declare readonly code: OutboxErrorCode;
  /** The outbox directory. */
  readonly path: string;
  /** @param init - `retryable` replaces the catalog's (a message larger than the whole outbox is not retryable). */
  constructor(code: OutboxErrorCode, message: string, path: string, init: { cause?: unknown; retryable?: boolean } = {}) {
    const info = localInfo(code);
    super(code, `${message}. ${info.remedy}`, { retryable: init.retryable ?? info.retryable, remedy: info.remedy, cause: init.cause });
    this.name = 'OutboxError';
    this.path = path;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), path: this.path };
  }
}
