/** The MQTT protocol levels this library speaks: the protocol level byte of a CONNECT. */
export const PROTOCOL_LEVELS = Object.freeze([4, 5] as const);

/** 4 (MQTT 3.1.1) or 5 (MQTT 5). */
export type ProtocolLevel = (typeof PROTOCOL_LEVELS)[number];

/** A level as messages word it: `4 (MQTT 3.1.1)`, `5 (MQTT 5)`. */
export function describeProtocolLevel(level: ProtocolLevel): string {
  return `${level} (${level === 4 ? 'MQTT 3.1.1' : 'MQTT 5'})`;
}
