import { createHash } from 'node:crypto';
import { clientIdProblem } from '../credential.js';
import { EmulatorStateError } from '../errors.js';
import { encodeFrame, FRAME_HEADER_BYTES, frameAt, readFrames, type Frames } from './journal.js';
import type { CredentialChange, CredentialRecord } from './registry.js';
import type { TokenChange, TokenRecord } from './token-registry.js';
import { MAX_TOKEN_RESOURCES, parseResources, type TokenType } from './token-rules.js';

/**
 * The formats of the emulator's data directory (data-dir.ts): the snapshot `state.json` and the records of the journal
 * `state.journal` (framed by journal.ts), each validated completely when read (any flaw is `EmulatorStateCorrupt`
 * naming where, never a value), and the replay of a journal onto its snapshot. Pure: no file is touched here.
 */

/** Name of the state file (the snapshot) in the data directory. */
export const STATE_FILE = 'state.json';
/** Name of the journal of the changes made since the snapshot. */
export const JOURNAL_FILE = 'state.journal';
/** `kind` of the state file, so that another JSON file is never mistaken for one. */
export const STATE_KIND = 'apsaramq-device-emulator-state';
/** Format version of the state file. */
export const STATE_VERSION = 1;
/** `kind` of the journal's first record. */
export const JOURNAL_KIND = 'apsaramq-device-emulator-journal';
/**
 * Format version of the journal written: 2, each record naming the write it came in (journal.ts), so that a power cut
 * that left the last write's pages in any order is told from damage in place. Version 1 journals are read too.
 */
export const JOURNAL_VERSION = 2;
/** Largest state file or journal read (about a million credentials); a bigger one is refused rather than read whole. */
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

/** One change of the state, as a journal record holds it. */
export type StateChange = CredentialChange | TokenChange;

const INSTANCE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const KEY = /^[\x21-\x7e]{1,128}$/;

export function corrupt(path: string, why: string): EmulatorStateError {
  return new EmulatorStateError('EmulatorStateCorrupt', `The emulator data file ${path} is not valid: ${why}`, path);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isTime(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

const TOKEN_FIELDS = ['id', 'secretSha256', 'instanceId', 'type', 'resources', 'createTime', 'expireTime', 'revokeTime'];

/** A kept token record, validated completely (`where` names it in the error, never a value of it). */
function tokenOf(item: unknown, where: string, path: string): TokenRecord {
  if (!isRecord(item)) throw corrupt(path, `${where} is not an object`);
  const { id, secretSha256, instanceId, type, resources, createTime, expireTime, revokeTime } = item;
  if (typeof id !== 'string' || !/^[0-9a-f]{32}$/.test(id)) throw corrupt(path, `${where}.id is not 32 hex digits`);
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
}

/** A kept DeviceCredential, validated completely (`where` names it in the error, never a value of it). */
function credentialOf(item: unknown, where: string, path: string): CredentialRecord {
  if (!isRecord(item)) throw corrupt(path, `${where} is not an object`);
  const { ClientId, InstanceId, DeviceAccessKeyId, DeviceAccessKeySecret, CreateTime, UpdateTime } = item;
  if (typeof ClientId !== 'string' || clientIdProblem(ClientId) !== undefined) throw corrupt(path, `${where}.ClientId is not a valid ClientId`);
  if (typeof InstanceId !== 'string' || !INSTANCE_ID.test(InstanceId)) throw corrupt(path, `${where}.InstanceId is not an instance id`);
  if (typeof DeviceAccessKeyId !== 'string' || !KEY.test(DeviceAccessKeyId)) throw corrupt(path, `${where}.DeviceAccessKeyId is not a key id`);
  if (typeof DeviceAccessKeySecret !== 'string' || !KEY.test(DeviceAccessKeySecret)) throw corrupt(path, `${where}.DeviceAccessKeySecret is missing or malformed`);
  if (!isTime(CreateTime) || !isTime(UpdateTime)) throw corrupt(path, `${where}: CreateTime and UpdateTime must be ms since the epoch`);
  if (Object.keys(item).length !== 6) throw corrupt(path, `${where} has fields other than those of a DeviceCredential`);
  return { ClientId, InstanceId, DeviceAccessKeyId, DeviceAccessKeySecret, CreateTime, UpdateTime };
}

/** The key under which a credential is kept: one per ClientId of an instance. */
function clientKey(instanceId: string, clientId: string): string {
  return `${instanceId}\n${clientId}`;
}

/** No two credentials hold one DeviceAccessKeyId (a key authenticates one device). */
function checkDistinctKeys(credentials: Iterable<CredentialRecord>, path: string, where: (i: number) => string): void {
  const keyIds = new Set<string>();
  let i = 0;
  for (const credential of credentials) {
    if (keyIds.has(credential.DeviceAccessKeyId)) throw corrupt(path, `${where(i)}: a DeviceAccessKeyId appears twice`);
    keyIds.add(credential.DeviceAccessKeyId);
    i++;
  }
}

/** Validate a parsed state file completely; any flaw is `EmulatorStateCorrupt` naming it (never a secret). */
export function parseState(text: string, path: string): EmulatorState {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    // Not the parser's error as the cause: its message quotes the text around the fault, which may be a secret.
    const at = /at position (\d+)/.exec(String((error as Error).message))?.[1];
    throw corrupt(path, at === undefined ? 'it is not JSON' : `it is not JSON (at byte ${at})`);
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
  const credentials = list.map((item: unknown, i): CredentialRecord => {
    const credential = credentialOf(item, `credentials[${i}]`, path);
    const key = clientKey(credential.InstanceId, credential.ClientId);
    if (clientIds.has(key)) throw corrupt(path, `credentials[${i}]: ClientId ${credential.ClientId} appears twice`);
    clientIds.add(key);
    return credential;
  });
  checkDistinctKeys(credentials, path, (i) => `credentials[${i}]`);
  const tokenList = parsed['tokens'];
  if (tokenList !== undefined && !Array.isArray(tokenList)) throw corrupt(path, 'tokens is not a list');
  const tokenIds = new Set<string>();
  const tokens = (tokenList ?? []).map((item: unknown, i): TokenRecord => {
    const token = tokenOf(item, `tokens[${i}]`, path);
    if (tokenIds.has(token.id)) throw corrupt(path, `tokens[${i}]: a token id appears twice`);
    tokenIds.add(token.id);
    return token;
  });
  return { instanceId, ...(account === undefined ? {} : { account: { accessKeyId: account['accessKeyId'] as string, accessKeySecret: account['accessKeySecret'] as string } }), credentials, tokens };
}

/** The state file's text. */
export function serializeState(state: EmulatorState): string {
  const body = { kind: STATE_KIND, version: STATE_VERSION, instanceId: state.instanceId, ...(state.account ? { account: state.account } : {}), credentials: state.credentials, tokens: state.tokens ?? [] };
  return `${JSON.stringify(body, null, 1)}\n`;
}

/** A journal record's text. */
export function serializeChange(change: StateChange): string {
  return JSON.stringify(change);
}

export function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The first record of a journal that follows the snapshot of this hash. */
export function journalHeader(snapshotSha256: string): Buffer {
  return encodeFrame(JSON.stringify({ kind: JOURNAL_KIND, version: JOURNAL_VERSION, snapshot: snapshotSha256 }));
}

/** A journal record's change, validated as completely as the snapshot's records. */
function changeOf(payload: Buffer, where: string, path: string): StateChange {
  let item: unknown;
  try {
    item = JSON.parse(payload.toString('utf8'));
  } catch {
    // No cause: JSON.parse's message quotes the text, which may hold a secret.
    throw corrupt(path, `${where} is not JSON`);
  }
  if (!isRecord(item)) throw corrupt(path, `${where} is not an object`);
  const fields = Object.keys(item).length;
  switch (item['op']) {
    case 'credential':
      if (fields === 2) return { op: 'credential', record: credentialOf(item['record'], `${where}.record`, path) };
      break;
    case 'credential-removed': {
      const { instanceId, clientId } = item;
      if (typeof instanceId !== 'string' || !INSTANCE_ID.test(instanceId)) throw corrupt(path, `${where}.instanceId is not an instance id`);
      if (typeof clientId !== 'string' || clientIdProblem(clientId) !== undefined) throw corrupt(path, `${where}.clientId is not a valid ClientId`);
      if (fields === 3) return { op: 'credential-removed', instanceId, clientId };
      break;
    }
    case 'token':
      if (fields === 2) return { op: 'token', record: tokenOf(item['record'], `${where}.record`, path) };
      break;
    case 'token-removed': {
      const { id } = item;
      if (typeof id !== 'string' || !/^[0-9a-f]{32}$/.test(id)) throw corrupt(path, `${where}.id is not 32 hex digits`);
      if (fields === 2) return { op: 'token-removed', id };
      break;
    }
    default:
      throw corrupt(path, `${where} is not a change the emulator journals`);
  }
  throw corrupt(path, `${where} has fields other than those of its change`);
}

/** A journal's header (`undefined` when it is not whole) and its records, read in the format the header names. */
export function readJournal(journal: Buffer, path: string): { readonly header: JournalHeader | undefined; readonly frames: Frames } {
  const first = frameAt(journal, 0);
  // No whole header: read as version 1 (from byte 0), whose rules keep a file with whole records after it from loading.
  if (first === undefined) return { header: undefined, frames: readFrames(journal) };
  const header = headerOf(first, path);
  return { header, frames: readFrames(journal, FRAME_HEADER_BYTES + first.length, header.version >= 2) };
}

/**
 * The snapshot's state with the journal's changes applied, in order. Each change sets or removes one credential or
 * token whole, so applying changes that the snapshot already holds changes nothing.
 */
export function replay(state: EmulatorState, journal: Buffer, snapshotSha256: string, path: string, warn: (message: string) => void): EmulatorState {
  const { header, frames } = readJournal(journal, path);
  if (header !== undefined && header.snapshot !== snapshotSha256) {
    warn(`Emulator data directory: ${path} follows another ${STATE_FILE} than the one there (a compaction cut short after writing the new ${STATE_FILE}, or an older emulator rewrote it), whose state it is already in or superseded by: set aside`);
    return state;
  }
  const records = frames.payloads;
  const namedWrites = header !== undefined && header.version >= 2;
  if (frames.tail === 'damaged') {
    const why = namedWrites
      ? 'a later write follows it (each write was durable before the next began: the file was damaged where it lies, not cut short by a crash)'
      : 'whole records follow it (the file was damaged where it lies, not cut short by a crash)';
    throw corrupt(path, `the record at byte ${frames.bad} is damaged and ${why}; moving ${JOURNAL_FILE} away starts from ${STATE_FILE} alone, without the changes made since it was written`);
  }
  if (frames.tail === 'torn' && namedWrites) {
    warn(`Emulator data directory: the last write to ${path}, its ${journal.length - frames.end} bytes from byte ${frames.end}, is not whole (an append cut short by a crash or power cut, which may leave a write's pages on the disk in any order; no call was answered for any of its changes): cut off after ${records.length} whole changes`);
  } else if (frames.tail === 'torn') {
    warn(`Emulator data directory: the last ${journal.length - frames.end} bytes of ${path} are not a whole record (an append cut short by a crash or power cut; its change was never answered): cut off after ${records.length} whole changes`);
  }
  const credentials = new Map(state.credentials.map((c) => [clientKey(c.InstanceId, c.ClientId), c]));
  const tokens = new Map((state.tokens ?? []).map((t) => [t.id, t]));
  records.forEach((payload, i) => {
    const change = changeOf(payload, `record ${i + 1} (byte ${frames.offsets[i] ?? 0})`, path);
    if (change.op === 'credential') credentials.set(clientKey(change.record.InstanceId, change.record.ClientId), change.record);
    else if (change.op === 'credential-removed') credentials.delete(clientKey(change.instanceId, change.clientId));
    else if (change.op === 'token') tokens.set(change.record.id, change.record);
    else tokens.delete(change.id);
  });
  checkDistinctKeys(credentials.values(), path, (i) => `after its changes, credential ${i}`);
  return { ...state, credentials: [...credentials.values()], tokens: [...tokens.values()] };
}

/** What a journal's first record says. */
export interface JournalHeader {
  /** SHA-256 of the snapshot the journal follows. */
  readonly snapshot: string;
  /** 1: records as they were; 2: each names its write. */
  readonly version: 1 | 2;
}

/** The journal's first record: what it is, and which snapshot it follows. */
function headerOf(payload: Buffer, path: string): JournalHeader {
  let item: unknown;
  try {
    item = JSON.parse(payload.toString('utf8'));
  } catch {
    throw corrupt(path, 'its first record is not JSON');
  }
  if (!isRecord(item) || item['kind'] !== JOURNAL_KIND) throw corrupt(path, `it is not an emulator journal (no "kind": "${JOURNAL_KIND}")`);
  const version = item['version'];
  if (version !== 1 && version !== JOURNAL_VERSION) throw corrupt(path, `version ${JSON.stringify(version)} is not one this emulator reads (1 or ${JOURNAL_VERSION})`);
  const snapshot = item['snapshot'];
  if (typeof snapshot !== 'string' || !/^[0-9a-f]{64}$/.test(snapshot)) throw corrupt(path, 'its first record does not name the snapshot it follows');
  return { snapshot, version };
}
