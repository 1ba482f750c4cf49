import { apiErrorEntry } from '../errors.js';

/** How the emulator reports `InternalError` / `SystemOverFlow` (reference §0). */
export type ErrorStatusMode = 'remapped' | 'legacy';

/**
 * Statuses of the older documents, before Alibaba re-mapped these two codes (reference §1.1). In `remapped`
 * mode the catalog's own statuses (417 / 403) apply.
 */
const LEGACY_STATUSES: Readonly<Record<string, number>> = Object.freeze({ InternalError: 500, SystemOverFlow: 500 });

/**
 * An error the emulated service answers with. `code` must be in {@link API_ERROR_CATALOG}, which supplies the
 * HTTP status and the default (verbatim) message, so no message is duplicated here.
 * The message goes to the client as is: it must never hold a secret.
 */
export class ApiFault extends Error {
  readonly code: string;

  /**
   * @param detail.message replaces the catalog message (for messages that name a parameter);
   *   `detail.suffix` is appended to it after a space.
   */
  constructor(code: string, detail: { message?: string; suffix?: string } = {}) {
    const info = apiErrorEntry(code);
    // A code outside the catalog is a bug in the emulator, not a client error.
    if (!info?.message) throw new Error(`Emulator bug: error code ${code} is not in API_ERROR_CATALOG`);
    const message = detail.message ?? info.message;
    super(detail.suffix === undefined ? message : `${message} ${detail.suffix}`);
    this.name = 'ApiFault';
    this.code = code;
  }
}

/** `InvalidParameter.<Name>`, the product's answer to a missing or malformed business parameter. */
export function invalidParameter(name: string): ApiFault {
  return new ApiFault(`InvalidParameter.${name}`);
}

/** The HTTP status the emulator sends for an error code, honouring the `errorStatuses` switch. */
export function httpStatusFor(code: string, mode: ErrorStatusMode): number {
  if (mode === 'legacy') {
    const legacy = LEGACY_STATUSES[code];
    if (legacy !== undefined) return legacy;
  }
  return apiErrorEntry(code)?.httpStatus ?? 500;
}

/** The error body every failed call gets (reference §1.1 and §3.6). */
export interface ErrorBody {
  RequestId: string;
  HostId: string;
  Code: string;
  Message: string;
  Recommend: string;
}

/** The `HostId` of the error bodies: the product endpoint of the region, as the real gateway names itself (reference §1.1). */
export function hostIdOf(regionId: string): string {
  return `onsmqtt.${regionId}.aliyuncs.com`;
}

/** Build the error body: `HostId` as given ({@link hostIdOf}), `Recommend` the troubleshooting URL of the real gateway. */
export function errorBody(fault: ApiFault, requestId: string, hostId: string): ErrorBody {
  const recommend = `https://api.aliyun.com/troubleshoot?q=${encodeURIComponent(fault.code)}&product=OnsMqtt&requestId=${requestId}`;
  return { RequestId: requestId, HostId: hostId, Code: fault.code, Message: fault.message, Recommend: recommend };
}
