import { Command, CommanderError } from 'commander';
import { ApiError, type ApsaraMqDeviceError, ValidationError, toApsaraMqDeviceError } from '../errors.js';
import { addConnectCommand } from './commands/connect.js';
import { addCredentialCommands } from './commands/credential.js';
import { addEmulatorCommand } from './commands/emulator.js';
import { addGatewayCommand } from './commands/gateway.js';
import { addProvisionCommand } from './commands/provision.js';
import { addReportCommand } from './commands/report.js';
import { addSignCommand } from './commands/sign.js';
import { addSimulateCommand } from './commands/simulate.js';
import { addTokenCommands } from './commands/token.js';
import { type CliIo, Interrupted, UsageError, type UsageErrorCode, processIo } from './io.js';
import { cliRemedy } from './remedies.js';
import { VERSION } from '../version.js';

/** Build the `apsaramq-device` program. Exported for tests, which run it in-process with their own io. */
export function buildProgram(io: CliIo): Command {
  const program = new Command('apsaramq-device')
    .description(
      'Register, then connect: ApsaraMQ for MQTT devices in unique-certificate-per-device mode, and a local emulator of the service.\n\n' +
        'Account keys (registrar commands) come from ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET\n' +
        'and, for STS, ALIBABA_CLOUD_SECURITY_TOKEN. They are never needed on a device that has its credential file.',
    )
    .version(VERSION)
    .option('--verbose', 'print stack traces and debug logs on stderr')
    .exitOverride();
  program.addHelpText(
    'after',
    `
Quick start (two terminals):
  $ apsaramq-device emulator
  $ export ALIBABA_CLOUD_ACCESS_KEY_ID=… ALIBABA_CLOUD_ACCESS_KEY_SECRET=…   # as printed by the emulator
  $ apsaramq-device connect --endpoint http://127.0.0.1:8080 --broker-url mqtt://127.0.0.1:1883 \\
      --instance-id <id> --client-id GID_demo@@@dev-1 --publish demo/hello --message hi

Exit codes: 0 success, 1 failure (stderr starts with the error code), 2 usage error or input that can
never work (also with the error code first when there is one, e.g. InvalidClientId).`,
  );
  addEmulatorCommand(program, io);
  addCredentialCommands(program, io);
  addSignCommand(program, io);
  addConnectCommand(program, io);
  addGatewayCommand(program, io);
  addSimulateCommand(program, io);
  addProvisionCommand(program, io);
  addTokenCommands(program, io);
  addReportCommand(program, io);
  for (const command of [program, ...program.commands, ...program.commands.flatMap((c) => c.commands)]) {
    // Commander's own error lines ("error: …") are not printed: runCli prints one line that starts with a code.
    command.exitOverride().configureOutput({ writeOut: (s) => io.stdout(s), writeErr: (s) => io.stderr(s), outputError: () => undefined });
  }
  return program;
}

/** Commander's parse errors, as our codes. */
const COMMANDER_CODES: Readonly<Record<string, UsageErrorCode>> = {
  'commander.unknownCommand': 'UnknownCommand',
  'commander.missingMandatoryOptionValue': 'MissingOption',
  'commander.missingArgument': 'MissingOption',
  'commander.optionMissingArgument': 'MissingOption',
};

/**
 * Commander's message as one line in the user's terms: without its `error: ` prefix, with its "(Did you mean …?)"
 * hint on the same line.
 */
function commanderMessage(error: CommanderError): string {
  return error.message
    .replace(/^error: /, '')
    .replace(/^option '(--[\w-]+)[^']*' argument '([^']*)' is invalid\. (.*?)\.?$/s, '$1 $2 is invalid: $3')
    .replace(/^option '(--[\w-]+)[^']*' argument missing$/, '$1 needs a value')
    .replace(/\n\(Did you mean (.*)\?\)$/s, ' (did you mean $1?)')
    .replace(/\s*\n\s*/g, ' ')
    .replace(/\.$/, '');
}

/**
 * Commander suggests a flag a typo away (`--cliend-id`), not one the user cut short: `--broker` for `--broker-url`,
 * `--client` for `--client-id`. Those get the same hint.
 */
function prefixSuggestion(error: CommanderError, command: Command): string {
  if (error.code !== 'commander.unknownOption' || /Did you mean/.test(error.message)) return '';
  const typed = /unknown option '(--[^'=]+)/.exec(error.message)?.[1];
  if (typed === undefined || typed.length < 5) return '';
  const flags = command.options.map((o) => o.long).filter((long): long is string => long !== undefined && long.startsWith(`${typed}-`));
  return flags.length === 0 ? '' : ` (did you mean ${flags.join(' or ')}?)`;
}

/**
 * One line for an error: what happened in the user's terms, then what to do. The service's SignatureDoesNotMatch
 * message carries its whole string to sign (hundreds of characters); that part is left to --verbose.
 */
function errorLine(error: ApsaraMqDeviceError, command: Command, verbose: boolean): string {
  // The remedy in the CLI's words (flags, commands), also where the message already carries the library's.
  const remedy = cliRemedy(error);
  let message = inUserTerms(error.message.replace(error.remedy, remedy), command);
  if (!verbose && error instanceof ApiError && error.code === 'SignatureDoesNotMatch') {
    message = message.replace(/\s*server string to sign is:\S*/, '');
  }
  if (!message.includes(remedy)) message = `${message.replace(/\.?$/, '.')} ${remedy}`;
  return `${error.code}: ${message}`;
}

/** The command a run of `argv` is for (the program itself when there is no known command word). */
function commandOf(program: Command, argv: readonly string[]): Command {
  let command = program;
  for (const word of argv.filter((a) => !a.startsWith('-'))) {
    const sub = command.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (!sub) break;
    command = sub;
  }
  return command;
}

/** `apsaramq-device token apply` for a subcommand. */
function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/**
 * The library names its options as they are spelled in code (`Option brokerUrl …`); on the command line the user
 * typed `--broker-url`. Say it their way where the command has such a flag.
 */
function inUserTerms(message: string, command: Command): string {
  return message.replace(/\b[Oo]ption ([a-z][A-Za-z.]*)( \((--[a-z-]+)\))?/g, (whole, name: string, _paren: string | undefined, named: string | undefined) => {
    // The library sometimes names the flag itself ("Option startAt (--start-at)"): keep one.
    if (named !== undefined) return `Option ${named}`;
    const flag = command.options.find((o) => o.attributeName() === name.split('.')[0]);
    return flag?.long ? `Option ${flag.long}` : whole;
  });
}

/** Run the CLI; returns the exit code instead of exiting, so tests can call it. */
export async function runCli(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  const program = buildProgram(io);
  const command = commandOf(program, argv);
  const help = `${commandPath(command)} --help`;
  try {
    await program.parseAsync(argv as string[], { from: 'user' });
    return io.exitCode ?? 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') return 0;
      const code = COMMANDER_CODES[error.code] ?? 'InvalidOption';
      io.stderr(`${code}: ${commanderMessage(error)}${prefixSuggestion(error, command)}; see ${help}\n`);
      return 2;
    }
    if (error instanceof Interrupted) return error.exitCode;
    if (error instanceof UsageError) {
      io.stderr(`${error.code}: ${error.message}; see ${help}\n`);
      return 2;
    }
    const e = toApsaraMqDeviceError(error);
    const verbose = program.opts()['verbose'] === true;
    io.stderr(`${errorLine(e, command, verbose)}\n`);
    if (verbose && error instanceof Error && error.stack) io.stderr(`${error.stack}\n`);
    // Input that can never work (a bad ClientId, option value or credential file) is a usage error too.
    return error instanceof ValidationError ? 2 : 1;
  }
}
