import { ApsaraMqDeviceError, LOCAL_ERROR_CATALOG } from '../errors.js';

/** Codes of {@link SimulatorError}, with what to do about each (they live in the shared catalog, so the README lists them). */
export const SIMULATOR_ERROR_CATALOG = Object.freeze({
  TooManyOpenFiles: LOCAL_ERROR_CATALOG.TooManyOpenFiles,
  SimulationFailed: LOCAL_ERROR_CATALOG.SimulationFailed,
  EmulatorFailed: LOCAL_ERROR_CATALOG.EmulatorFailed,
  ShardFailed: LOCAL_ERROR_CATALOG.ShardFailed,
  ConnectionLost: LOCAL_ERROR_CATALOG.ConnectionLost,
  ProtocolError: LOCAL_ERROR_CATALOG.ProtocolError,
  ReportMismatch: LOCAL_ERROR_CATALOG.ReportMismatch,
  InvalidReport: LOCAL_ERROR_CATALOG.InvalidReport,
  AddressSpaceTooSmall: LOCAL_ERROR_CATALOG.AddressSpaceTooSmall,
});

/** A code of {@link SimulatorError}. */
export type SimulatorErrorCode = keyof typeof SIMULATOR_ERROR_CATALOG;

/**
 * A failure of a simulation run as a whole (not of one device): too many open files, devices that never
 * connected, an embedded emulator that did not start, a fleet too large for its source addresses; or a report
 * that cannot be read or merged.
 */
export class SimulatorError extends ApsaraMqDeviceError {
  constructor(code: SimulatorErrorCode, message: string, cause?: unknown) {
    const info = SIMULATOR_ERROR_CATALOG[code];
    super(code, `${message}. ${info.remedy}`, { retryable: info.retryable, remedy: info.remedy, cause });
    this.name = 'SimulatorError';
  }
}
