/**
 * Limits of ApsaraMQ for MQTT that more than one role must agree on: the registrar refuses what the service would,
 * and the emulator enforces the same number. One place, so that the two cannot drift apart.
 */

/** Most resources (topics) one token may cover: ApplyToken's `Resources` (reference §2.1). */
export const MAX_TOKEN_RESOURCES = 100;
