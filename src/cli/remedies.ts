/**
 * The error catalog's remedies as a command-line user acts on them. The library's remedies (src/errors.ts) name
 * options and API actions, since the library knows no CLI; the CLI says the same with its commands and flags. Only
 * the codes whose words differ are here: every other code prints as the catalog has it.
 */
import { CONNECT_REMEDY_WORDS } from '../connector/connection-errors.js';
import { type ApsaraMqDeviceError, type ErrorCode, LOCAL_ERROR_CATALOG, apiErrorInfo } from '../errors.js';

/** The CLI's words for a remedy, by error code. */
export const CLI_REMEDIES: Readonly<Partial<Record<ErrorCode, string>>> = Object.freeze({
  DeviceCredentialNotFound: 'Register the ClientId first (apsaramq-device register), or check the ClientId and instance id.',
  MissingOption: 'Pass the option named in the message (--help lists them with examples).',
  UnknownCommand: 'Run apsaramq-device --help for the list of commands.',
  InvalidCredential: 'The credential must hold ClientId, InstanceId, DeviceAccessKeyId and DeviceAccessKeySecret (as printed by apsaramq-device register).',
  InvalidResponse: 'The endpoint did not answer like the ApsaraMQ OpenAPI; check --endpoint (a proxy or load balancer may be in the way) and retry.',
  StoreCorrupt: 'The stored credential file is not valid: inspect it; apsaramq-device get --client-id <id> --store <dir> fetches the credential the service holds and puts it in place, keeping the bad file aside.',
  CredentialInStore: 'Use the stored credential (connect, sign --credential-file), or pass --rotate to register a new one: the device holding the old key is refused from then on.',
  TokenRejected: 'The broker refuses the tokens even after asking the token source again: check that they are neither expired nor revoked (apsaramq-device token query), that they were applied for this instance, that token.accessKeyId is the account that applied for them, and that the source hands out fresh ones.',
  AddressInUse: 'Pick another port (--mqtt-port, --ws-port, --api-port, --tls-port, --wss-port), or 0 for any free port.',
  TooManyOpenFiles: 'Each simulated device holds one socket: raise the open-file limit (ulimit -n 65536) or simulate fewer devices per process (--shard).',
  ReportMismatch: 'Merge only the reports of one run: every shard started with the same flags (and --start-at), each shard once.',
  InvalidReport: 'Pass report files written by simulate --report (or report merge --output) of this version.',
  AddressSpaceTooSmall: 'Spread the devices over more source addresses (--local-address 127.0.0.2-127.0.0.9 on loopback) or over more machines (--shard).',
  EmulatorFailed: 'The embedded emulator process could not start or died; start `apsaramq-device emulator` yourself and pass its endpoints.',
  ShardFailed: 'A shard process of simulate --processes ended without its report (it crashed, was killed, or could not start); the others were stopped. Its stderr is quoted; run that shard alone (--shard I/N) to see more.',
  EmulatorStateCorrupt: "The emulator's data file is not valid: repair it or move it away (it holds device secrets), or start with another --data-dir or --ephemeral.",
  EmulatorStateBusy: 'Another emulator process uses this data directory: stop it, or start this one with another --data-dir or --ephemeral.',
  EmulatorClusterUnavailable: "The cluster's Redis (--redis) cannot be reached: check that it runs, its URL (host, port, database, password) and the network.",
  EmulatorClusterMismatch: 'Every emulator process of one cluster (one Redis database) serves one instance with one account and the same flags: start this one with the flags the message names as the running processes have them, stop those first, or use another Redis database (--redis redis://host:6379/N).',
  ProtocolError: "The peer does not speak MQTT; check --broker-url (is it the OpenAPI's HTTP port?).",
  UnknownError: 'Unexpected error; run with --verbose and report it.',
  MissingAccessKey: 'Set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET in the environment (the account AccessKey, for the OpenAPI); a device whose credential is in --store (or, for connect, given by --credential-file) needs neither.',
  InvalidLine: 'Write one JSON object per line on stdin: {"id": "…", "clientId": "…", "topic": "…", "payload": "…", "qos": 1}, with "payloadEncoding": "base64" for a binary payload (apsaramq-device gateway --help).',
  UnknownDevice: 'Send messages only for the ClientIds in --devices; add the device to the file and start the gateway again.',
  InvalidScenario: 'Fix the field of the --scenario file the message names: an object with "faults", each with "at" (seconds from the start of connecting) and a "kind" (simulate --help and the README\'s game day section list them).',
  ThresholdExceeded: 'A --fail-on threshold was crossed: the message names each one with the value measured; --report and --html hold the details.',
});

/** The catalog's remedy of a code (either catalog, or the family of an API code it does not list). */
function catalogRemedy(code: string): string {
  return Object.hasOwn(LOCAL_ERROR_CATALOG, code) ? LOCAL_ERROR_CATALOG[code as keyof typeof LOCAL_ERROR_CATALOG].remedy : apiErrorInfo(code).remedy;
}

/** What to do about a code, in the CLI's words. */
export function cliRemedyOf(code: string): string {
  return (Object.hasOwn(CLI_REMEDIES, code) ? CLI_REMEDIES[code as ErrorCode] : undefined) ?? catalogRemedy(code);
}

/** The library's words in remedies written for one failure (naming its URL, say), and the CLI's for the same. */
const CLI_WORDS: ReadonlyArray<readonly [library: string, cli: string]> = [
  [CONNECT_REMEDY_WORDS.trust, 'pass --ca FILE with the CA that signed it, or --insecure for tests'],
  [CONNECT_REMEDY_WORDS.httpPort, 'did you mean --endpoint? The broker URL (--broker-url)'],
  [CONNECT_REMEDY_WORDS.brokerUrl, 'the broker URL (--broker-url)'],
];

/**
 * What to do about an error, in the CLI's words: the CLI's remedy of its code when the error carries the catalog's;
 * an error whose thrower wrote a remedy of its own (naming the URL it tried, say) keeps it, its option names said
 * as flags.
 */
export function cliRemedy(error: ApsaraMqDeviceError): string {
  if (error.remedy === catalogRemedy(error.code)) return cliRemedyOf(error.code);
  let remedy = error.remedy;
  for (const [library, cli] of CLI_WORDS) remedy = remedy.replaceAll(library, cli);
  return remedy;
}
