/**
 * `apsaramq-device/outbox`: the durable outbox engine (store and forward). A device role module: it loads neither
 * the registrar nor the emulator, and its engine, classic-level, only when a store is opened.
 */
export { OutboxError, type OutboxErrorCode } from '../errors.js';
export { MIN_OUTBOX_BYTES, OUTBOX_DEFAULTS, type OutboxStoreOptions, type WhenFull } from './options.js';
export { openOutboxStore, repairOutboxStore } from './open.js';
export { OutboxStore } from './store.js';
export {
  OutboxMessage,
  type OutboxDrop,
  type OutboxDropReason,
  type OutboxMessageInput,
  type OutboxRecovery,
  type OutboxStats,
  type OutboxStoreEvents,
} from './types.js';
