import { clientIdProblem, groupIdProblem } from '../credential.js';
import { ApiFault, invalidParameter } from './api-errors.js';
import type { RpcParams } from './gateway.js';
import type { CredentialRecord, CredentialRegistry } from './registry.js';

/** The only API version of the onsmqtt product the emulator serves. */
export const API_VERSION = '2020-04-20';

/** What an action handler works with. */
export interface ActionContext {
  readonly registry: CredentialRegistry;
  /** The emulated instance; any other InstanceId is not the caller's. */
  readonly instanceId: string;
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

/** The emulator hosts one instance; asking for another is asking for someone else's. */
function checkInstance(instanceId: string, context: ActionContext): void {
  if (instanceId !== context.instanceId) throw new ApiFault('InstancePermissionCheckFailed');
}

/** ClientId and InstanceId of the four credential operations: presence, then grammar, then instance. */
function credentialTarget(params: RpcParams, context: ActionContext): { instanceId: string; clientId: string } {
  const clientId = required(params, 'ClientId');
  const instanceId = required(params, 'InstanceId');
  if (clientIdProblem(clientId)) throw invalidParameter('ClientId');
  checkInstance(instanceId, context);
  return { instanceId, clientId };
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

/** The onsmqtt actions the emulator implements (reference §1). */
export const EMULATED_ACTIONS = Object.freeze([
  'RegisterDeviceCredential',
  'GetDeviceCredential',
  'RefreshDeviceCredential',
  'UnRegisterDeviceCredential',
  'ListDeviceCredentialClientId',
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
});

/** Find the handler: unknown Action → 404 `ApiNotSupport`, then a Version other than 2020-04-20 → `InvalidVersion`. */
export function routeAction(action: string, version: string): ActionHandler {
  if (!isEmulatedAction(action)) throw new ApiFault('ApiNotSupport');
  const handler = ACTIONS[action];
  if (version !== API_VERSION) throw new ApiFault('InvalidVersion');
  return handler;
}
