import { setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import { assertClientId, type DeviceCredential } from '../credential.js';
import { toApsaraMqDeviceError, ValidationError } from '../errors.js';
import { FileCredentialStore } from './file-store.js';
import { RegistrationJournal } from './journal.js';
import { DEFAULT_API_CONCURRENCY, checkConcurrency } from './rate-limit.js';
import { DEFAULT_RETRY_OPTIONS, resolveRetryOptions, type RetryOptions } from './retry.js';
import { type ProvisionStrategy, Provisioner, type ProvisionerOptions } from './provisioner.js';

/** Options of {@link provisionFleet}: a provisioner's, plus pacing, strategy, journal, cancellation and progress. */
export interface FleetOptions extends ProvisionerOptions {
  /**
   * Requests per second of this run, in a limiter of its own. Not together with `limiter`.
   * @default with neither `qps` nor `concurrency` nor `limiter`: the account's default limiter (500/s, shared)
   */
  qps?: number;
  /**
   * Devices provisioned at once. Without `limiter`, also the cap on this run's requests in flight.
   * @default 64
   */
  concurrency?: number;
  /** @default 'get-first' (see {@link ProvisionStrategy}) */
  strategy?: ProvisionStrategy;
  /**
   * Directory of the Register journal. @default `<store dir>/<instanceId>/.journal` when `store` is a
   * {@link FileCredentialStore} (shared with every Provisioner of that store); in memory otherwise.
   */
  journalDir?: string;
  /** @default {@link DEFAULT_RETRY_OPTIONS} (a fleet always retries unless given `false`) */
  retry?: RetryOptions | false;
  /** Stops starting devices and cancels those in flight; they are reported as failed with code `Aborted`. */
  signal?: AbortSignal;
  /** Called after each device settles. */
  onProgress?: (progress: FleetProgress) => void;
}

/** Progress of a fleet run so far. */
export interface FleetProgress {
  /** Devices in the run. */
  total: number;
  /** Devices settled (provisioned or failed). */
  done: number;
  provisioned: number;
  failed: number;
  apiCalls: number;
  retries: number;
  throttled: number;
  elapsedMs: number;
}

/** A device that could not be provisioned, with the code of its last error. */
export interface FleetFailure {
  clientId: string;
  code: string;
}

/** The outcome of {@link provisionFleet}. */
export interface FleetResult {
  /** Distinct ClientIds asked for. */
  requested: number;
  /** Devices that have a credential now: fromStore + fetched + registered. */
  provisioned: number;
  /** Found in the store: no API call. */
  fromStore: number;
  /** Fetched with GetDeviceCredential (registered earlier, by this tool or someone else). */
  fetched: number;
  /** Registered by this run. */
  registered: number;
  failed: FleetFailure[];
  /** OpenAPI requests sent, retries included. */
  apiCalls: number;
  /** Requests that repeated a failed one (a Register whose answer was lost, re-checked with a Get, counts too). */
  retries: number;
  /** Throttling answers (`Throttling*`, `SystemOverFlow`, `ApplyTokenOverFlow`). */
  throttled: number;
  elapsedMs: number;
  /** The credential of every provisioned device, by ClientId. Holds device secrets: never log it. */
  credentials: Map<string, DeviceCredential>;
}

/**
 * Errors every other device would meet too (wrong account key, instance, clock or store): after one, no new device
 * is started and the rest are reported with the same code, instead of spending a call each to learn it.
 */
const FLEET_WIDE_CODES: ReadonlySet<string> = new Set([
  'SignatureDoesNotMatch',
  'InvalidAccessKeyId.NotFound',
  'InvalidAccessKeyId.Inactive',
  'InvalidTimeStamp.Expired',
  'CheckAccountInfoFailed',
  'InstancePermissionCheckFailed',
  'PermissionCheckFailed',
  'MqttInstanceNotFound',
  'MqttOwnerCheckError',
  'InvalidParameter.InstanceId',
  'StoreIOError',
  'StoreInsecure',
]);

const STRATEGIES: readonly ProvisionStrategy[] = ['get-first', 'register-first'];

/**
 * Give every ClientId its credential, at fleet scale: from the store when it has one, else from the OpenAPI by
 * `strategy`, paced by its rate limiter (`limiter`, or `qps`), `concurrency` devices at a time, retrying
 * throttling and transient faults with full-jitter backoff. A ClientId that already has a credential is never
 * registered again (so its device keeps working), and with a journal a run killed mid-way never registers a device
 * twice. Failures do not stop the run: they are listed in `failed`.
 *
 * ```ts
 * const ids = Array.from({ length: 1000 }, (_, i) => `GID_demo@@@dev-${i}`);
 * const result = await provisionFleet(ids, { region: 'cn-hangzhou', instanceId, store: new FileCredentialStore(), qps: 200 });
 * ```
 *
 * @throws ValidationError (`InvalidClientId`, `InvalidInstanceId`, `InvalidOption`) or ConfigurationError
 *   (`MissingAccessKey`) before any I/O.
 */
export async function provisionFleet(clientIds: Iterable<string>, options: FleetOptions): Promise<FleetResult> {
  const ids = [...new Set(clientIds)];
  for (const id of ids) assertClientId(id);
  const strategy = options.strategy ?? 'get-first';
  if (!STRATEGIES.includes(strategy)) throw new ValidationError('InvalidOption', `Invalid strategy ${JSON.stringify(strategy)}: expected get-first or register-first`);
  const concurrency = options.concurrency ?? DEFAULT_API_CONCURRENCY;
  checkConcurrency(concurrency);
  const { signal, onProgress, journalDir, strategy: _fleetOnly, concurrency: _devices, ...provisionerOptions } = options;
  // With a shared limiter, `concurrency` counts devices only: the limiter has its own cap on requests.
  const provisioner = new Provisioner({
    ...provisionerOptions,
    ...(options.limiter === undefined && options.concurrency !== undefined ? { concurrency } : {}),
    retry: resolveRetryOptions(options.retry, DEFAULT_RETRY_OPTIONS),
  });
  // The provisioner keeps its store's journal by default; only an explicit directory replaces it.
  const journal = journalDir !== undefined ? new RegistrationJournal(journalDir) : undefined;

  // One listener on the caller's signal; the run's own signal is listened to by every device in flight.
  const cancel = new AbortController();
  setMaxListeners(0, cancel.signal);
  const stop = (): void => cancel.abort(signal?.reason);
  if (signal?.aborted) stop();
  else signal?.addEventListener('abort', stop, { once: true });

  const started = performance.now();
  const result: FleetResult = {
    requested: ids.length, provisioned: 0, fromStore: 0, fetched: 0, registered: 0, failed: [],
    apiCalls: 0, retries: 0, throttled: 0, elapsedMs: 0, credentials: new Map(),
  };
  const snapshot = (): void => {
    Object.assign(result, provisioner.stats(), { elapsedMs: Math.round(performance.now() - started) });
  };
  const progress = (): void => {
    if (!onProgress) return;
    snapshot();
    const { requested: total, provisioned, failed, apiCalls, retries, throttled, elapsedMs } = result;
    onProgress({ total, done: provisioned + failed.length, provisioned, failed: failed.length, apiCalls, retries, throttled, elapsedMs });
  };

  let next = 0;
  let stopCode: string | undefined;
  // A store that cannot keep credentials fails every device: say so before a single call is paid for.
  if (ids.length > 0) {
    await provisioner.prepare().catch((error: unknown) => {
      stopCode = toApsaraMqDeviceError(error).code;
    });
  }
  const worker = async (): Promise<void> => {
    while (next < ids.length) {
      const clientId = ids[next++] as string;
      if (cancel.signal.aborted || stopCode !== undefined) {
        result.failed.push({ clientId, code: stopCode ?? 'Aborted' });
        progress();
        continue;
      }
      try {
        const { credential, origin } = await provisioner.obtainCredential(clientId, {
          strategy,
          signal: cancel.signal,
          ...(journal === undefined ? {} : { journal }),
        });
        result.credentials.set(clientId, credential);
        result.provisioned += 1;
        if (origin === 'store') result.fromStore += 1;
        else if (origin === 'fetched') result.fetched += 1;
        else result.registered += 1;
      } catch (error) {
        const { code } = toApsaraMqDeviceError(error);
        if (FLEET_WIDE_CODES.has(code)) stopCode ??= code;
        result.failed.push({ clientId, code });
      }
      progress();
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, ids.length)) }, worker));
  } finally {
    signal?.removeEventListener('abort', stop);
    provisioner.close();
  }
  if (cancel.signal.aborted) {
    await provisioner.idle();
    await settleAborted(result, provisioner);
  }
  snapshot();
  const order = new Map(ids.map((id, index) => [id, index]));
  result.failed.sort((a, b) => (order.get(a.clientId) ?? 0) - (order.get(b.clientId) ?? 0));
  return result;
}

/**
 * A device stopped by the signal may still have finished: its caller stops waiting at once, while a Register that
 * was answered goes on to be saved. The store, not the race, says what was provisioned: a stopped device whose
 * credential is in the store counts as provisioned, so the summary of an interrupted run is exact.
 */
async function settleAborted(result: FleetResult, provisioner: Provisioner): Promise<void> {
  const still: FleetFailure[] = [];
  for (const failure of result.failed) {
    const stored = failure.code === 'Aborted' ? await provisioner.store.load(provisioner.instanceId, failure.clientId).catch(() => undefined) : undefined;
    if (stored) {
      result.credentials.set(failure.clientId, stored);
      result.provisioned += 1;
      result.fromStore += 1;
    } else {
      still.push(failure);
    }
  }
  result.failed = still;
}
