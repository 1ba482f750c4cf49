/**
 * What MQTT's CONNACK return codes (3.1.1) and reason codes (MQTT 5) mean for a device: the one reading of them, used
 * by the connector (mqtt.js) and by the simulator's raw devices alike, so that both give up, fetch a new credential or
 * try again for the same codes. Pure data and functions, no mqtt.js: the simulator and the device entry stay light.
 */

/** What a refused CONNACK means. */
export type RefusalClass = 'credential' | 'identifier' | 'unavailable' | 'permanent';

/**
 * Classify a CONNACK refusal by its number. 3.1.1: 2 identifier, 3 unavailable, 4 and 5 credential, 1 permanent.
 * MQTT 5: 0x85 identifier; 0x86 and 0x87 credential; 0x88 server unavailable, 0x89 busy, 0x97 quota exceeded and
 * 0x9F connection rate exceeded are passing (`unavailable`: the same CONNECT may be accepted later); the rest
 * (protocol, banned, bad authentication method, use another server, …) permanent.
 */
export function classifyRefusal(code: number, protocolVersion: 3 | 4 | 5): RefusalClass {
  if (protocolVersion === 5) {
    if (code === 0x85) return 'identifier';
    if (code === 0x86 || code === 0x87) return 'credential';
    if (code === 0x88 || code === 0x89 || code === 0x97 || code === 0x9f) return 'unavailable';
    return 'permanent';
  }
  if (code === 2) return 'identifier';
  if (code === 3) return 'unavailable';
  if (code === 4 || code === 5) return 'credential';
  return 'permanent';
}

/**
 * MQTT 5 reason codes of a broker's DISCONNECT (or a refusing PUBACK) that refuse the message or subscription the
 * device just sent, rather than end the session: sent again, the same PUBLISH or SUBSCRIBE would be refused again,
 * so it fails at once instead of being resent on the next session (the connector), and the device does not reconnect
 * to repeat it (the simulator).
 *
 * The test for each code is "would the same packet be refused again on a fresh session?" (MQTT 5.0 §3.14.2.1):
 * - in: 0x81 Malformed Packet and 0x82 Protocol Error (the broker could not accept the packet itself: its topic,
 *   properties or flags; the emulator answers an invalid Subscription Identifier with 0x82), 0x87 Not authorized,
 *   0x8F Topic Filter invalid, 0x90 Topic Name invalid, 0x95 Packet too large, 0x99 Payload format invalid,
 *   0x9A Retain not supported, 0x9B QoS not supported, 0x9E Shared Subscriptions not supported, 0xA1 Subscription
 *   Identifiers not supported, 0xA2 Wildcard Subscriptions not supported.
 * - out: 0x93 Receive Maximum exceeded (too many in flight at once: flow control of the session, the packet itself is
 *   fine), 0x97 Quota exceeded (a passing limit, as in a CONNACK; the emulator sends it for a session hoarding
 *   unreleased QoS 2 messages), 0x94 Topic Alias invalid (aliases live and die with the connection), 0x96 Message
 *   rate too high, and every session-level reason (server busy or shutting down, keep alive timeout, session taken
 *   over, administrative action, …): a lost session, reconnected with backoff, what was in flight sent again.
 */
export const MESSAGE_REFUSAL_REASONS: ReadonlySet<number> = new Set([0x81, 0x82, 0x87, 0x8f, 0x90, 0x95, 0x99, 0x9a, 0x9b, 0x9e, 0xa1, 0xa2]);

/** Does this MQTT 5 DISCONNECT reason refuse the message or subscription just sent (see {@link MESSAGE_REFUSAL_REASONS})? */
export function refusesMessage(reasonCode: number): boolean {
  return MESSAGE_REFUSAL_REASONS.has(reasonCode);
}
