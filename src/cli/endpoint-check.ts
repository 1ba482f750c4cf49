/**
 * The OpenAPI probe of the fleet commands, run only when a call is about to be made. A fleet whose every credential
 * is in the store makes no network request at all (a gateway booting without OpenAPI access still starts), and the
 * store's own checks (modes, regular files) come first; the first device that must call the OpenAPI probes it once,
 * so that a dead or wrong endpoint still fails in seconds with one line naming the flag, not after every device has
 * spent its retries.
 */
import type { DeviceCredential } from '../credential.js';
import { FileCredentialStore } from '../provisioner/file-store.js';
import { probeOpenApi } from './probe.js';

/** One probe of an endpoint, made at most once, when {@link EndpointCheck.beforeCall} is first awaited. */
export class EndpointCheck {
  readonly #endpoint: string;
  readonly #flag: string;
  readonly #timeoutMs: number | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly #onFailure: (error: unknown) => void;
  #probe: Promise<void> | undefined;
  #failure: unknown;

  /**
   * @param flag - the flag the endpoint came from (`--endpoint` or `--region`), for the error's remedy.
   * @param options.signal - once aborted (Ctrl+C), no probe starts: nothing more will be called.
   * @param options.onFailure - called once when the probe fails (e.g. to stop the run at once).
   */
  constructor(endpoint: string, flag: string, options: { timeoutMs?: number | undefined; signal?: AbortSignal; onFailure?: (error: unknown) => void } = {}) {
    this.#endpoint = endpoint;
    this.#flag = flag;
    this.#timeoutMs = options.timeoutMs;
    this.#signal = options.signal;
    this.#onFailure = options.onFailure ?? (() => {});
  }

  /** Resolves once the endpoint answered like the OpenAPI (probing it the first time); rejects with the probe's error. */
  beforeCall(): Promise<void> {
    if (this.#probe === undefined && this.#signal?.aborted) return Promise.resolve();
    this.#probe ??= probeOpenApi(this.#endpoint, this.#flag, this.#timeoutMs).catch((error: unknown) => {
      this.#failure = error;
      this.#onFailure(error);
      throw error;
    });
    return this.#probe;
  }

  /** The probe's error, when it failed: the one line to show instead of a summary of devices that all failed with it. */
  get failure(): unknown {
    return this.#failure;
  }
}

/**
 * A file store whose miss checks the endpoint first: a provisioner that finds no credential in the store calls the
 * OpenAPI next (GetDeviceCredential or RegisterDeviceCredential), so this is the moment before its first call.
 */
export class CheckedEndpointStore extends FileCredentialStore {
  readonly #check: EndpointCheck;

  constructor(dir: string, check: EndpointCheck) {
    super(dir);
    this.#check = check;
  }

  override async load(instanceId: string, clientId: string): Promise<DeviceCredential | undefined> {
    const credential = await super.load(instanceId, clientId);
    if (credential === undefined) await this.#check.beforeCall();
    return credential;
  }
}
