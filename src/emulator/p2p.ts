/**
 * Point-to-point topics (reference §5.6): a message published to `<parent>/p2p/<ClientId>` reaches that client
 * without a subscription, and only that client.
 */

/**
 * The characters of a topic counted against the service's 64 (reference §5.6): all of them, but only the parent of
 * a P2P topic `<parent>/p2p/<ClientId>` (its ClientId is an address with a limit of its own). The connector's own
 * count, shared so that the two sides cannot disagree on which topics fit.
 */
export { countedTopicLength } from '../connector/validate.js';

/** The second topic level that marks a P2P topic. */
export const P2P_LEVEL = 'p2p';

/**
 * The ClientId a topic is addressed to when it is exactly `<parent>/p2p/<ClientId>`, else `undefined`. The parent
 * may be empty (`/p2p/<ClientId>`): the parent-topic rule refuses such a topic (no empty parent can be created),
 * and without that rule it is still private to its addressee, so that a `#` subscriber never sees it.
 */
export function p2pTarget(topic: string): string | undefined {
  const levels = topic.split('/');
  return levels.length === 3 && levels[1] === P2P_LEVEL && levels[2] !== '' ? levels[2] : undefined;
}

/**
 * May `clientId` subscribe to `filter`? Refused: filters whose second level is `p2p` and whose third level is
 * anything but the subscriber's own ClientId (another id, `+` or `#`), since they name other clients' P2P topics.
 * Broader filters (`#`, `Parent/#`, `Parent/+/x`) stay allowed: forwarding drops other clients' P2P messages
 * from them, see {@link p2pTarget}.
 */
export function mayP2pSubscribe(filter: string, clientId: string): boolean {
  const levels = filter.split('/');
  return !(levels[1] === P2P_LEVEL && levels.length >= 3 && levels[2] !== clientId);
}

/** The broker-side subscription that delivers a client's P2P messages under any parent topic. */
export function p2pInbox(clientId: string): string {
  return `+/${P2P_LEVEL}/${clientId}`;
}
