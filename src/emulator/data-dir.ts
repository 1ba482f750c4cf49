import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { clientIdProblem } from '../credential.js';
import { EmulatorStateError } from '../errors.js';
import { ioError, takeLock, type HeldLock, type TakeLockOptions } from './data-dir-lock.js';
import type { CredentialRecord } from './registry.js';
import type { TokenRecord } from './token-registry.js';
import { MAX_TOKEN_RESOURCES, parseResources, type TokenType } from './token-rules.js';
import { syncDir } from '../util/fs.js';

/**
 * The emulator's data directory: the OpenAPI's state, kept across restarts (issue #10).
 *
 * One file, `state.json`, rewritten whole and atomically on every change (temp file 0600, fsync, rename, fsync of
 * the directory), so a crash leaves either the old or the new state, never half of one. A lock file held for the
 * emulator's life keeps a second emulator off the same directory. What is kept: the instance id, the device
 * credentials, the tokens ApplyToken issued (their records: never a usable token, only a hash of its secret), and
 * the account key pair only when the emulator generated it (a key pair from options or the environment may be a real
 * one and is never written). `tokens` is optional on reading, so a file written before tokens existed still loads,
 * and an older emulator, which ignores fields it does not know, still reads a newer file.
 */

/** Name of the state file in the data directory. */
export const STATE_FILE = 'state.json';
export { LOCK_FILE } from './data-dir-lock.js';
/** `kind` of the state file, so that another JSON file is never mistaken for one. */
export const STATE_KIND = 'apsaramq-device-emulator-state';
/** Format version of the state file. */
export const STATE_VERSION = 1;
/** Largest state file read (about a million credentials); a bigger one is refused rather than read whole. */
export const MAX_STATE_BYTES = 256 * 1024 * 1024;

/** What the state file holds. */
export interface EmulatorState {
  readonly instanceId: string;
  /** Only a key pair the emulator generated. */
  readonly account?: { readonly accessKeyId: string; readonly accessKeySecret: string } | undefined;
  readonly credentials: readonly CredentialRecord[];
  /** Absent in files written before Token mode; read as none. */
  readonly tokens?: readonly TokenRecord[] | undefined;
}

const TEMP_FILE = /^state\.json\.[0-9a-f]+\.tmp$/;
const INSTANCE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const KEY = /^[\x21-\x7e]{1,128}$/;



function corrupt(path: string, why: string, cause?: unknown): EmulatorStateError {
  return new EmulatorStateError('EmulatorStateCorrupt', `The emulator data file ${path} is not valid: ${why}`, path, cause);
}

/** Group or other may read, write or enter: refused, as the directory holds device secrets. */
function checkPrivate(path: string, mode: number, what: 'directory' | 'file'): void {
  if ((mode & 0o077) !== 0) {
    const octal = (mode & 0o777).toString(8).padStart(3, '0');
    throw new EmulatorStateError('EmulatorStateInsecure', `The emulator data ${what} ${path} has mode ${octal}; it holds device secrets and must be ${what === 'directory' ? '700' : '600'}`, path);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isTime(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

const TOKEN_FIELDS = ['id', 'secretSha256', 'instanceId', 'type', 'resources', 'createTime', 'expireTime', 'revokeTime'];

/** The kept tokens, each validated as completely as a credential; distinct ids. */
function parseTokens(value: unknown, path: string): TokenRecord[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw corrupt(path, 'tokens is not a list');
  const ids = new Set<string>();
  return value.map((item: unknown, i): TokenRecord => {
    const where = `tokens[${i}]`;
    if (!isRecord(item)) throw corrupt(path, `${where} is not an object`);
    const { id, secretSha256, instanceId, type, resources, createTime, expireTime, revokeTime } = item;
    if (typeof id !== 'string' || !/^[0-9a-f]{32}$/.test(id)) throw corrupt(path, `${where}.id is not 32 hex digits`);
    if (ids.has(id)) throw corrupt(path, `${where}: a token id appears twice`);
    ids.add(id);
    if (typeof secretSha256 !== 'string' || !/^[0-9a-f]{64}$/.test(secretSha256)) throw corrupt(path, `${where}.secretSha256 is not 64 hex digits`);
    if (typeof instanceId !== 'string' || !INSTANCE_ID.test(instanceId)) throw corrupt(path, `${where}.instanceId is not an instance id`);
    if (type !== 'R' && type !== 'W' && type !== 'RW') throw corrupt(path, `${where}.type is not R, W or RW`);
    const list = Array.isArray(resources) && resources.length <= MAX_TOKEN_RESOURCES && resources.every((r) => typeof r === 'string') ? (resources as string[]) : undefined;
    const parsed = list === undefined ? undefined : parseResources(list.join(','));
    if (!parsed?.ok || parsed.value.length !== list?.length) throw corrupt(path, `${where}.resources is not a list of 1 to ${MAX_TOKEN_RESOURCES} resources in order`);
    if (!isTime(createTime) || !isTime(expireTime) || (revokeTime !== undefined && !isTime(revokeTime))) {
      throw corrupt(path, `${where}: createTime, expireTime and revokeTime must be ms since the epoch`);
    }
    if (Object.keys(item).some((key) => !TOKEN_FIELDS.includes(key))) throw corrupt(path, `${where} has fields other than those of a token record`);
    return { id, secretSha256, instanceId, type: type as TokenType, resources: parsed.value, createTime, expireTime, ...(revokeTime === undefined ? {} : { revokeTime }) };
  });
}

/** Validate a parsed state file completely; any flaw is `EmulatorStateCorrupt` naming it (never a secret). */
export function parseState(text: string, path: string): EmulatorState {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw corrupt(path, 'it is not JSON', error);
  }
  if (!isRecord(parsed) || parsed['kind'] !== STATE_KIND) throw corrupt(path, `it is not an emulator state file (no "kind": "${STATE_KIND}")`);
  if (parsed['version'] !== STATE_VERSION) throw corrupt(path, `version ${JSON.stringify(parsed['version'])} is not ${STATE_VERSION}`);
  const instanceId = parsed['instanceId'];
  if (typeof instanceId !== 'string' || !INSTANCE_ID.test(instanceId)) throw corrupt(path, 'instanceId is missing or not an instance id');
  const account = parsed['account'];
  if (account !== undefined && (!isRecord(account) || typeof account['accessKeyId'] !== 'string' || !KEY.test(account['accessKeyId']) || account['accessKeyId'].includes('|') || typeof account['accessKeySecret'] !== 'string' || account['accessKeySecret'] === '')) {
    throw corrupt(path, 'account must be {"accessKeyId", "accessKeySecret"}');
  }
  const list = parsed['credentials'];
  if (!Array.isArray(list)) throw corrupt(path, 'credentials is not a list');
  const clientIds = new Set<string>();
  const keyIds = new Set<string>();
  const credentials = list.map((item: unknown, i): CredentialRecord => {
    const where = `credentials[${i}]`;
    if (!isRecord(item)) throw corrupt(path, `${where} is not an object`);
    const { ClientId, InstanceId, DeviceAccessKeyId, DeviceAccessKeySecret, CreateTime, UpdateTime } = item;
    if (typeof ClientId !== 'string' || clientIdProblem(ClientId) !== undefined) throw corrupt(path, `${where}.ClientId is not a valid ClientId`);
    if (typeof InstanceId !== 'string' || !INSTANCE_ID.test(InstanceId)) throw corrupt(path, `${where}.InstanceId is not an instance id`);
    if (typeof DeviceAccessKeyId !== 'string' || !KEY.test(DeviceAccessKeyId)) throw corrupt(path, `${where}.DeviceAccessKeyId is not a key id`);
    if (typeof DeviceAccessKeySecret !== 'string' || !KEY.test(DeviceAccessKeySecret)) throw corrupt(path, `${where}.DeviceAccessKeySecret is missing or malformed`);
    if (!isTime(CreateTime) || !isTime(UpdateTime)) throw corrupt(path, `${where}: CreateTime and UpdateTime must be ms since the epoch`);
    const clientKey = `${InstanceId}\n${ClientId}`;
    if (clientIds.has(clientKey)) throw corrupt(path, `${where}: ClientId ${ClientId} appears twice`);
    if (keyIds.has(DeviceAccessKeyId)) throw corrupt(path, `${where}: a DeviceAccessKeyId appears twice`);
    clientIds.add(clientKey);
    keyIds.add(DeviceAccessKeyId);
    if (Object.keys(item).length !== 6) throw corrupt(path, `${where} has fields other than those of a DeviceCredential`);
    return { ClientId, InstanceId, DeviceAccessKeyId, DeviceAccessKeySecret, CreateTime, UpdateTime };
  });
  const tokens = parseTokens(parsed['tokens'], path);
  return { instanceId, ...(account === undefined ? {} : { account: { accessKeyId: account['accessKeyId'] as string, accessKeySecret: account['accessKeySecret'] as string } }), credentials, tokens };
}

/** The state file's text. */
export function serializeState(state: EmulatorState): string {
  const body = { kind: STATE_KIND, version: STATE_VERSION, instanceId: state.instanceId, ...(state.account ? { account: state.account } : {}), credentials: state.credentials, tokens: state.tokens ?? [] };
  return `${JSON.stringify(body, null, 1)}\n`;
}

/**
 * An open data directory: locked for this emulator, its state read. {@link DataDir.save} writes a new state;
 * {@link DataDir.close} releases the lock.
 */
export class DataDir {
  /** Absolute path of the directory. */
  readonly path: string;
  /** The state found at open, or `undefined` for a new directory. */
  readonly initial: EmulatorState | undefined;
  readonly #lock: HeldLock;
  #closed = false;

  private constructor(path: string, initial: EmulatorState | undefined, lock: HeldLock) {
    this.path = path;
    this.initial = initial;
    this.#lock = lock;
  }

  /**
   * Create the directory (0700) if needed, check that it and its state file are private, lock it, remove temp files
   * a killed write left behind, and read the state. Throws {@link EmulatorStateError} and leaves nothing locked.
   */
  static async open(dir: string, lockOptions: TakeLockOptions = {}): Promise<DataDir> {
    const path = resolve(dir);
    try {
      await mkdir(path, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw ioError(`Cannot create the emulator data directory ${path}`, path, error);
    }
    const info = await stat(path).catch((error: unknown) => {
      throw ioError(`Cannot read the emulator data directory ${path}`, path, error);
    });
    if (!info.isDirectory()) throw ioError(`The emulator data directory ${path} is not a directory`, path, new Error('ENOTDIR'));
    checkPrivate(path, info.mode, 'directory');

    const lock = await takeLock(path, lockOptions);
    try {
      await removeTempFiles(path);
      const initial = await readState(join(path, STATE_FILE));
      return new DataDir(path, initial, lock);
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  /** Replace the state file atomically: temp file (0600), write, fsync, rename over, fsync the directory. */
  async save(state: EmulatorState): Promise<void> {
    if (this.#closed) throw new Error('Emulator bug: save() after close()');
    // Never two writers: a lock another process took over (this one stalled, or its lock was removed) is not ours.
    if (this.#lock.compromised()) throw new EmulatorStateError('EmulatorStateBusy', `The lock of the emulator data directory ${this.path} was lost (removed, or taken over by another process): nothing more is saved`, this.path);
    const file = join(this.path, STATE_FILE);
    const temp = join(this.path, `${STATE_FILE}.${randomBytes(8).toString('hex')}.tmp`);
    try {
      const handle = await open(temp, 'wx', 0o600);
      try {
        await handle.writeFile(serializeState(state));
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, file);
      await syncDir(this.path);
    } catch (error) {
      await rm(temp, { force: true }).catch(() => undefined);
      throw ioError(`Cannot write the emulator data file ${file}`, file, error);
    }
  }

  /** Release the lock. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#lock.release();
  }
}

/** A killed emulator may leave a temp file (holding secrets) behind; it was never the state, so it goes. */
async function removeTempFiles(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    throw ioError(`Cannot list the emulator data directory ${dir}`, dir, error);
  }
  for (const name of names.filter((n) => TEMP_FILE.test(n))) {
    await rm(join(dir, name), { force: true }).catch((error: unknown) => {
      throw ioError(`Cannot remove the leftover temp file ${join(dir, name)}`, dir, error);
    });
  }
}

async function readState(file: string): Promise<EmulatorState | undefined> {
  let info;
  try {
    info = await lstat(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError(`Cannot read the emulator data file ${file}`, file, error);
  }
  // Not followed: a link or a FIFO where the state should be is something else's file.
  if (!info.isFile()) throw corrupt(file, 'it is not a regular file');
  checkPrivate(file, info.mode, 'file');
  if (info.size > MAX_STATE_BYTES) throw corrupt(file, `it is larger than ${MAX_STATE_BYTES} bytes`);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw ioError(`Cannot read the emulator data file ${file}`, file, error);
  }
  return parseState(text, file);
}

/**
 * Coalesces saves: {@link StateWriter.flush} resolves once a save that began after the call has finished, so a
 * caller's change is on disk; saves never overlap, and changes that arrive during one save share the next.
 */
export class StateWriter {
  readonly #save: () => Promise<void>;
  /** The save not yet begun, which every flush arriving now joins. */
  #queued: Promise<void> | undefined;
  /** The save in progress. */
  #running: Promise<void> = Promise.resolve();

  constructor(save: () => Promise<void>) {
    this.#save = save;
  }

  flush(): Promise<void> {
    if (this.#queued) return this.#queued;
    const next = this.#running
      .catch(() => undefined)
      .then(() => {
        // From here on, a new flush needs a save that sees its change: queue another one.
        this.#queued = undefined;
        return this.#save();
      });
    this.#queued = next;
    this.#running = next;
    return next;
  }

  /** Wait for the saves under way (their failures are the flushing callers' to see). */
  async idle(): Promise<void> {
    await this.#running.catch(() => undefined);
  }
}
