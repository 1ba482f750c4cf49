import { clientIdProblem, groupIdOf, groupIdProblem } from '../credential.js';
import { ApiFault, invalidParameter } from './api-errors.js';
import type { RpcParams } from './gateway.js';
import type { GroupDirectory } from './groups.js';
import type { CredentialRecord, CredentialRegistry } from './registry.js';
import type { TokenRegistry } from './token-registry.js';
import { parentOf } from './mqtt-rules.js';
import { countedTopicLength } from './p2p.js';
import { parseResources, resolveExpireTime, tokenTypeOfActions, type Parsed } from './token-rules.js';

/** The only API version of the onsmqtt product the emulator serves. */
export const API_VERSION = '2020-04-20';

/**
 * Who is connected to the broker right now: what the session queries answer from. The emulator feeds it from the
 * broker's own connect and disconnect events, so it follows whatever broker runs behind it.
 */
export interface SessionDirectory {
  /** Is a client with this ClientId connected (authenticated, its session up) at this moment? */
  isOnline(clientId: string): boolean;
}

/** What an action handler works with. */
export interface ActionContext {
  readonly registry: CredentialRegistry;
  readonly tokens: TokenRegistry;
  readonly sessions: SessionDirectory;
  /** The emulated instance; any other InstanceId is not the caller's. */
  readonly instanceId: string;
  /** The answer to any other InstanceId (default `InstancePermissionCheckFailed`). */
  readonly unknownInstanceCode?: 'InstancePermissionCheckFailed' | 'MqttInstanceNotFound';
  /** The GroupIds that exist on the instance (default: any). */
  readonly groups?: GroupDirectory;
  /** The parent topics that exist on the instance, which ApplyToken's resources must be under (`undefined`: any). */
  readonly parentTopics?: ReadonlySet<string> | undefined;
  /** How a P2P resource's length counts (default `parent`, as the broker counts P2P topics). */
  readonly p2pTopicLength?: 'parent' | 'whole';
  /** The emulator's clock, ms since the epoch (ApplyToken's ExpireTime is checked against it). */
  readonly now: () => number;
}

/** An action: validated params in, success body (without RequestId) out; failures are thrown {@link ApiFault}s. */
export type ActionHandler = (params: RpcParams, context: ActionContext) => Record<string, unknown>;

/** Largest page of ListDeviceCredentialClientId. */
export const MAX_PAGE_SIZE = 100;

/** Missing or empty business parameter → `InvalidParameter.<name>`. */
function required(params: RpcParams, name: string): string {
  const value = params[name];
  if (!value) throw invalidParameter(name);
  return value;
}

/** The emulator hosts one instance; asking for another is asking for someone else's (or for none at all). */
function checkInstance(instanceId: string, context: ActionContext): void {
  if (instanceId !== context.instanceId) throw new ApiFault(context.unknownInstanceCode ?? 'InstancePermissionCheckFailed');
}

/**
 * A GroupId that was not created on the instance: 400 `PermissionCheckFailed`, the code whose message names the
 * GroupId ("check the account that created the instance, topic, and GroupId"), which every credential operation
 * lists (reference §1.1).
 */
function checkGroup(groupId: string, context: ActionContext): void {
  if (context.groups && !context.groups.has(groupId)) {
    throw new ApiFault('PermissionCheckFailed', { suffix: `GroupId ${groupId} was not created on instance ${context.instanceId}.` });
  }
}

/** ClientId and InstanceId of an action on one client: presence, then grammar, then instance. */
function clientTarget(params: RpcParams, context: ActionContext): { instanceId: string; clientId: string } {
  const clientId = required(params, 'ClientId');
  const instanceId = required(params, 'InstanceId');
  if (clientIdProblem(clientId)) throw invalidParameter('ClientId');
  checkInstance(instanceId, context);
  return { instanceId, clientId };
}

/** The credential operations' target: {@link clientTarget}, then its GroupId must exist. */
function credentialTarget(params: RpcParams, context: ActionContext): { instanceId: string; clientId: string } {
  const target = clientTarget(params, context);
  checkGroup(groupIdOf(target.clientId), context);
  return target;
}

/**
 * What the actions answer by besides the state, from the emulator's options: the GroupIds and parent topics that
 * exist, how a P2P resource's length counts, the code of another instance. The same in every process of a cluster
 * (its options are shared), so that a change applies alike everywhere.
 */
export function actionRules(
  options: { readonly parentTopics: ReadonlySet<string> | undefined; readonly p2pTopicLength: 'parent' | 'whole'; readonly unknownInstanceCode: 'InstancePermissionCheckFailed' | 'MqttInstanceNotFound' },
  groups: GroupDirectory,
): Pick<ActionContext, 'groups' | 'parentTopics' | 'p2pTopicLength' | 'unknownInstanceCode'> {
  return { groups, parentTopics: options.parentTopics, p2pTopicLength: options.p2pTopicLength, unknownInstanceCode: options.unknownInstanceCode };
}

/** Copy, so the response never shares (or later mutates with) registry state. */
function credentialBody(record: CredentialRecord): Record<string, unknown> {
  return { DeviceCredential: { ...record } };
}

/** A decimal integer parameter within bounds, else `InvalidParameter.<name>`. */
function integer(params: RpcParams, name: string, min: number, max: number, fallback?: number): number {
  const raw = params[name];
  if (!raw && fallback !== undefined) return fallback;
  if (!raw || !/^\d{1,15}$/.test(raw)) throw invalidParameter(name);
  const value = Number(raw);
  if (value < min || value > max) throw invalidParameter(name);
  return value;
}

/**
 * NextToken: opaque to clients; here base64url of `<offset>:<GroupId>`, so it is stateless and a token from
 * another group's listing is refused rather than silently misread.
 */
function encodeNextToken(offset: number, groupId: string): string {
  return Buffer.from(`${offset}:${groupId}`, 'utf8').toString('base64url');
}

function decodeNextToken(token: string, groupId: string): number {
  const text = Buffer.from(token, 'base64url').toString('utf8');
  const match = /^(\d{1,15}):(.*)$/s.exec(text);
  if (!match || match[2] !== groupId || encodeNextToken(Number(match[1]), groupId) !== token) {
    throw invalidParameter('NextToken');
  }
  return Number(match[1]);
}

function listClientIds(params: RpcParams, context: ActionContext): Record<string, unknown> {
  const instanceId = required(params, 'InstanceId');
  const groupId = params['GroupId'] ?? '';
  if (groupIdProblem(groupId)) throw invalidParameter('GroupId');
  const pageSize = integer(params, 'PageSize', 1, MAX_PAGE_SIZE);
  const pageNo = integer(params, 'PageNo', 1, Number.MAX_SAFE_INTEGER, 1);
  // NextToken wins over PageNo when both are sent (reference §1.6 DESIGN); an empty one counts as absent.
  const token = params['NextToken'];
  const offset = token ? decodeNextToken(token, groupId) : (pageNo - 1) * pageSize;
  checkInstance(instanceId, context);
  checkGroup(groupId, context);

  const all = context.registry.listClientIds(instanceId, groupId);
  const end = offset + pageSize;
  return {
    DeviceCredentialClientIdList: {
      Total: String(all.length),
      ClientIdList: all.slice(offset, end),
      PageNo: String(Math.floor(offset / pageSize) + 1),
      PageSize: String(pageSize),
      // Omitted on the last page, so "has NextToken" means "there is more".
      ...(end < all.length ? { NextToken: encodeNextToken(end, groupId) } : {}),
    },
  };
}

/** A parsed parameter's value, or `InvalidParameter.<name>` saying what is wrong with it. */
function valid<T>(name: string, parsed: Parsed<T>): T {
  if (!parsed.ok) throw new ApiFault(`InvalidParameter.${name}`, { suffix: `${name}: ${parsed.problem}.` });
  return parsed.value;
}

/** Most ClientIds of one BatchQuerySessionByClientIds (reference §2.5). */
export const MAX_BATCH_CLIENT_IDS = 10;

const LIST_ENTRY = /^ClientIdList\.([1-9][0-9]{0,8})$/;

/**
 * BatchQuerySessionByClientIds' repeat list: `ClientIdList.1` … `ClientIdList.<n>`, 1 ≤ n ≤ 10, no gaps, each a
 * ClientId; order kept and duplicates answered as asked. A bare `ClientIdList`, another `ClientIdList.<x>` name, an
 * empty or malformed ClientId, a gap or more than 10 entries are `InvalidParameter.ClientIdList`.
 */
function clientIdList(params: RpcParams): string[] {
  const byIndex = new Map<number, string>();
  const refuse = (problem: string): never => {
    throw new ApiFault('InvalidParameter.ClientIdList', { suffix: `ClientIdList: ${problem}.` });
  };
  for (const [name, value] of Object.entries(params)) {
    if (name !== 'ClientIdList' && !name.startsWith('ClientIdList.')) continue;
    const match = LIST_ENTRY.exec(name);
    if (!match) refuse(name === 'ClientIdList' ? 'send the list as ClientIdList.1, ClientIdList.2, …' : 'entries are named ClientIdList.1 to ClientIdList.10');
    byIndex.set(Number(match?.[1]), value);
  }
  if (byIndex.size === 0) throw invalidParameter('ClientIdList');
  if (byIndex.size > MAX_BATCH_CLIENT_IDS || Math.max(...byIndex.keys()) > MAX_BATCH_CLIENT_IDS) refuse(`at most ${MAX_BATCH_CLIENT_IDS} ClientIds`);
  const clientIds: string[] = [];
  for (let i = 1; i <= byIndex.size; i++) {
    const clientId = byIndex.get(i);
    if (clientId === undefined) return refuse(`ClientIdList.${i} is missing`);
    if (clientIdProblem(clientId)) refuse(`ClientIdList.${i} is not a ClientId of the form <GroupId>@@@<DeviceId>`);
    clientIds.push(clientId);
  }
  return clientIds;
}

/** Token and InstanceId of QueryToken and RevokeToken: presence, then instance. */
function tokenTarget(params: RpcParams, context: ActionContext): { instanceId: string; token: string } {
  const token = required(params, 'Token');
  const instanceId = required(params, 'InstanceId');
  checkInstance(instanceId, context);
  return { instanceId, token };
}

/**
 * ApplyToken: every parameter present (Resources, InstanceId, ExpireTime, Actions, in the metadata's order), then
 * each valid in the same order, then the instance.
 */
function applyToken(params: RpcParams, context: ActionContext): Record<string, unknown> {
  const rawResources = required(params, 'Resources');
  const instanceId = required(params, 'InstanceId');
  const rawExpireTime = required(params, 'ExpireTime');
  const actions = required(params, 'Actions');
  const resources = valid('Resources', parseResources(rawResources, context.p2pTopicLength === 'whole' ? undefined : countedTopicLength));
  const expireTime = valid('ExpireTime', resolveExpireTime(rawExpireTime, context.now()));
  const type = tokenTypeOfActions(actions);
  if (type === undefined) throw new ApiFault('InvalidParameter.Actions', { suffix: 'Actions: must be R, W or R,W.' });
  checkInstance(instanceId, context);
  checkParentTopics(resources, context);
  return { Token: context.tokens.apply({ instanceId, type, resources, expireTime }).token };
}

/**
 * Every resource of a token must be under a parent topic created on the instance: else 400 `PermissionCheckFailed`
 * (its message names the topic), as a token for a topic that does not exist could never be used.
 */
function checkParentTopics(resources: readonly string[], context: ActionContext): void {
  if (!context.parentTopics) return;
  const missing = resources.find((resource) => !context.parentTopics?.has(parentOf(resource)));
  if (missing !== undefined) {
    throw new ApiFault('PermissionCheckFailed', { suffix: `Parent topic ${parentOf(missing)} (of resource ${missing}) was not created on instance ${context.instanceId}.` });
  }
}

/** The onsmqtt actions the emulator implements (reference §1 and §2). */
export const EMULATED_ACTIONS = Object.freeze([
  'RegisterDeviceCredential',
  'GetDeviceCredential',
  'RefreshDeviceCredential',
  'UnRegisterDeviceCredential',
  'ListDeviceCredentialClientId',
  'ApplyToken',
  'QueryToken',
  'RevokeToken',
  'QuerySessionByClientId',
  'BatchQuerySessionByClientIds',
] as const);

/** The name of an action the emulator implements: one of {@link EMULATED_ACTIONS}. */
export type EmulatedAction = (typeof EMULATED_ACTIONS)[number];

/** Is this the name of an action the emulator implements? */
export function isEmulatedAction(action: string): action is EmulatedAction {
  return (EMULATED_ACTIONS as readonly string[]).includes(action);
}

/** The handlers of {@link EMULATED_ACTIONS}, by Action name. */
export const ACTIONS: Readonly<Record<EmulatedAction, ActionHandler>> = Object.freeze({
  RegisterDeviceCredential(params, context) {
    const { instanceId, clientId } = credentialTarget(params, context);
    return credentialBody(context.registry.register(instanceId, clientId));
  },
  GetDeviceCredential(params, context) {
    const { instanceId, clientId } = credentialTarget(params, context);
    return credentialBody(context.registry.get(instanceId, clientId));
  },
  RefreshDeviceCredential(params, context) {
    const { instanceId, clientId } = credentialTarget(params, context);
    return credentialBody(context.registry.refresh(instanceId, clientId));
  },
  UnRegisterDeviceCredential(params, context) {
    const { instanceId, clientId } = credentialTarget(params, context);
    context.registry.unregister(instanceId, clientId);
    return {};
  },
  ListDeviceCredentialClientId: listClientIds,
  ApplyToken: applyToken,
  QueryToken(params, context) {
    const { instanceId, token } = tokenTarget(params, context);
    return { TokenStatus: context.tokens.isValid(instanceId, token) };
  },
  RevokeToken(params, context) {
    const { instanceId, token } = tokenTarget(params, context);
    context.tokens.revoke(instanceId, token);
    return {};
  },
  QuerySessionByClientId(params, context) {
    // A ClientId of a GroupId that does not exist is simply never online.
    const { clientId } = clientTarget(params, context);
    return { OnlineStatus: context.sessions.isOnline(clientId) };
  },
  BatchQuerySessionByClientIds(params, context) {
    const instanceId = required(params, 'InstanceId');
    const clientIds = clientIdList(params);
    checkInstance(instanceId, context);
    return { OnlineStatusList: clientIds.map((clientId) => ({ ClientId: clientId, OnlineStatus: context.sessions.isOnline(clientId) })) };
  },
});

/**
 * Actions the metadata declares POST-only, all held to one rule (`getOnPostOnly`): ListDeviceCredentialClientId,
 * QueryToken and the two session queries are declared `post` and `get`.
 */
export const POST_ONLY_ACTIONS: ReadonlySet<string> = new Set<EmulatedAction>([
  'RegisterDeviceCredential', 'GetDeviceCredential', 'RefreshDeviceCredential', 'UnRegisterDeviceCredential', 'ApplyToken', 'RevokeToken',
]);

/**
 * Find the handler: unknown Action → 404 `ApiNotSupport`; a GET of a POST-only action (when refused) → 404
 * `InvalidAction.NotFound`, the gateway's "please check your url and method"; then a Version other than 2020-04-20 →
 * `InvalidVersion`.
 */
export function routeAction(action: string, version: string, method = 'POST', getOnPostOnly: 'refuse' | 'accept' = 'refuse'): ActionHandler {
  if (!isEmulatedAction(action)) throw new ApiFault('ApiNotSupport');
  const handler = ACTIONS[action];
  if (method === 'GET' && getOnPostOnly === 'refuse' && POST_ONLY_ACTIONS.has(action)) throw new ApiFault('InvalidAction.NotFound');
  if (version !== API_VERSION) throw new ApiFault('InvalidVersion');
  return handler;
}
