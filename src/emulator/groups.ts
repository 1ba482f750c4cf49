/**
 * The GroupIds that exist on the emulated instance (reference §5.1: a GroupId is created in the console before a
 * device of it can connect). A plain directory with no I/O: the OpenAPI's credential operations and the broker's
 * CONNECT both ask it, so that the two cannot disagree on which groups exist.
 */
import { groupIdOf } from '../credential.js';

/** Which GroupIds exist. */
export interface GroupDirectory {
  /** Does this GroupId exist on the instance? */
  has(groupId: string): boolean;
  /** Does the GroupId of this (well-formed) ClientId exist? */
  hasClientId(clientId: string): boolean;
  /** The GroupIds that exist, sorted; `undefined` when every GroupId is accepted. */
  list(): readonly string[] | undefined;
}

/** A directory of the listed GroupIds, or of every GroupId when `groups` is `undefined` (the rule off). */
export function groupDirectory(groups: ReadonlySet<string> | undefined): GroupDirectory {
  const sorted = groups === undefined ? undefined : Object.freeze([...groups].sort());
  const has = (groupId: string): boolean => groups === undefined || groups.has(groupId);
  return {
    has,
    hasClientId: (clientId) => has(groupIdOf(clientId)),
    list: () => sorted,
  };
}
