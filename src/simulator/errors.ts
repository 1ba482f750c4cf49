import { ApsaraMqDeviceError, LOCAL_ERROR_CATALOG, ValidationError } from '../errors.js';

/** Codes of {@link SimulatorError}, with what to do about each (they live in the shared catalog, so the README lists them). */
export const SIMULATOR_ERROR_CATALOG = Object.freeze({
  TooManyOpenFiles: LOCAL_ERROR_CATALOG.TooManyOpenFiles,
  SimulationFailed: LOCAL_ERROR_CATALOG.SimulationFailed,
  EmulatorFailed: LOCAL_ERROR_CATALOG.EmulatorFailed,
  ShardFailed: LOCAL_ERROR_CATALOG.ShardFailed,
  ConnectionLost: LOCAL_ERROR_CATALOG.ConnectionLost,
  BrokerLost: LOCAL_ERROR_CATALOG.BrokerLost,
  ProtocolError: LOCAL_ERROR_CATALOG.ProtocolError,
  ReportMismatch: LOCAL_ERROR_CATALOG.ReportMismatch,
  AddressSpaceTooSmall: LOCAL_ERROR_CATALOG.AddressSpaceTooSmall,
  NothingPublished: LOCAL_ERROR_CATALOG.NothingPublished,
  ThresholdExceeded: LOCAL_ERROR_CATALOG.ThresholdExceeded,
  ConsumerFailed: LOCAL_ERROR_CATALOG.ConsumerFailed,
});

/** A code of {@link SimulatorError}. */
export type SimulatorErrorCode = keyof typeof SIMULATOR_ERROR_CATALOG;

/**
 * A failure of a simulation run as a whole (not of one device): too many open files, devices that never
 * connected, an embedded emulator that did not start or died, a fleet too large for its source addresses; or
 * reports that are not of one run.
 */
export class SimulatorError extends ApsaraMqDeviceError {
  constructor(code: SimulatorErrorCode, message: string, cause?: unknown) {
    const info = SIMULATOR_ERROR_CATALOG[code];
    super(code, `${message}. ${info.remedy}`, { retryable: info.retryable, remedy: info.remedy, cause });
    this.name = 'SimulatorError';
  }
}

/**
 * Input read from a file that names where it is wrong: the file (`source`) and the field's path in it (`field`). The
 * base of {@link InvalidReportError} and {@link InvalidScenarioError}.
 */
abstract class FileFieldError extends ValidationError {
  /** The file at fault, as the caller named it (a file name). */
  readonly source: string;
  /** The field at fault as a path into the file; `undefined` when the file as a whole is (unreadable, not JSON). */
  readonly field: string | undefined;

  constructor(code: 'InvalidReport' | 'InvalidScenario', message: string, init: { source: string; field?: string }) {
    super(code, message);
    this.source = init.source;
    this.field = init.field;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), source: this.source, field: this.field };
  }
}

/**
 * A simulation report that cannot be read or merged (code `InvalidReport`, not retryable): not a file, not JSON, not
 * of this version's format, or a field outside the report's schema or its bounds (see `REPORT_LIMITS`). A
 * `ValidationError`: bad input, refused before anything is merged (the CLI exits 2, as for its other input errors).
 * Its `field` is a path into the report (`shards[0].count`, `series.errors.ConnectionLost[3]`).
 */
export class InvalidReportError extends FileFieldError {
  declare readonly code: 'InvalidReport';

  constructor(message: string, init: { source: string; field?: string }) {
    super('InvalidReport', message, init);
    this.name = 'InvalidReportError';
  }
}

/**
 * A game-day scenario file that cannot be run (code `InvalidScenario`, not retryable): not readable, not JSON or YAML,
 * or a fault whose field is missing, unknown, out of its bounds, or impossible for this run (a device the fleet does
 * not have, a fault that ends after the run, a kind that needs an emulator against a broker that is not one). A
 * `ValidationError`: refused before anything starts (the CLI exits 2). Its `field` is a path into the scenario
 * (`faults[2].share`).
 */
export class InvalidScenarioError extends FileFieldError {
  declare readonly code: 'InvalidScenario';

  constructor(message: string, init: { source: string; field?: string }) {
    super('InvalidScenario', message, init);
    this.name = 'InvalidScenarioError';
  }
}
