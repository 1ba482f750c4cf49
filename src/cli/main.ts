import { Command, CommanderError } from 'commander';
import { ValidationError, toApsaraMqDeviceError } from '../errors.js';
import { addConnectCommand } from './commands/connect.js';
import { addCredentialCommands } from './commands/credential.js';
import { addEmulatorCommand } from './commands/emulator.js';
import { addProvisionCommand } from './commands/provision.js';
import { addReportCommand } from './commands/report.js';
import { addSignCommand } from './commands/sign.js';
import { addSimulateCommand } from './commands/simulate.js';
import { type CliIo, UsageError, processIo } from './io.js';
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
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: (s) => io.stdout(s), writeErr: (s) => io.stderr(s) })
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
  addSimulateCommand(program, io);
  addProvisionCommand(program, io);
  addReportCommand(program, io);
  for (const command of program.commands) command.exitOverride().configureOutput({ writeOut: (s) => io.stdout(s), writeErr: (s) => io.stderr(s) });
  return program;
}

/** Run the CLI; returns the exit code instead of exiting, so tests can call it. */
export async function runCli(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv as string[], { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') return 0;
      return 2; // commander already printed the message
    }
    if (error instanceof UsageError) {
      io.stderr(`error: ${error.message}\n(run with --help for usage)\n`);
      return 2;
    }
    const e = toApsaraMqDeviceError(error);
    io.stderr(`${e.code}: ${e.message}\n`);
    if (program.opts()['verbose'] && error instanceof Error && error.stack) io.stderr(`${error.stack}\n`);
    // Input that can never work (a bad ClientId, option value or credential file) is a usage error too.
    return error instanceof ValidationError ? 2 : 1;
  }
}
