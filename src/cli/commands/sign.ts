import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { DeviceCredential, assertInstanceId } from '../../credential.js';
import { ValidationError } from '../../errors.js';
import { resolveAccountCredentials } from '../../provisioner/env.js';
import { type MqttCredentials, signDeviceCredential, signSignature } from '../../signer/mqtt.js';
import { type CliIo, UsageError, choiceArg, conflicting, jsonLine } from '../io.js';

/** Read what `register` printed (or the bare DeviceCredential object) into a credential. */
export async function readCredentialFile(file: string): Promise<DeviceCredential> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EIO';
    const why = code === 'ENOENT' ? 'there is no such file (it is what `apsaramq-device register … > FILE` or `get … > FILE` writes)' : code === 'EACCES' ? 'permission denied' : code;
    throw new ValidationError('InvalidCredential', `Cannot read credential file ${file}: ${why}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ValidationError('InvalidCredential', `Credential file ${file} is not JSON`);
  }
  return DeviceCredential.fromWire(parsed, `credential file ${file}`);
}

export function addSignCommand(program: Command, io: CliIo): void {
  program
    .command('sign')
    .description('Print the MQTT username and password a device connects with.')
    .option('--credential-file <file>', 'DeviceCredential mode: a file holding what `register` prints, or the bare DeviceCredential object')
    .option('--mode <mode>', 'deviceCredential or signature', choiceArg('--mode', ['deviceCredential', 'signature'] as const), 'deviceCredential')
    .option('--instance-id <id>', 'signature mode: the instance id')
    .option('--client-id <clientId>', 'signature mode: the ClientId')
    .option('--json', 'print {"username", "password", "clientId"} on one line')
    .addHelpText(
      'after',
      `
Signature mode signs with the account AccessKey from ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET.
The output holds a password: treat it as a secret.

Examples:
  $ apsaramq-device sign --credential-file dev-1.json --json
  $ apsaramq-device sign --mode signature --instance-id mqtt-cn-xxx --client-id GID_demo@@@dev-1`,
    )
    .action(async (opts: { credentialFile?: string; mode: 'deviceCredential' | 'signature'; instanceId?: string; clientId?: string; json?: boolean }) => {
      let signed: MqttCredentials;
      if (opts.mode === 'signature') {
        if (opts.credentialFile !== undefined) throw conflicting('--mode signature', '--credential-file', 'Signature mode signs with the account key, not a device credential');
        if (opts.instanceId === undefined || opts.clientId === undefined) throw new UsageError('--mode signature needs --instance-id and --client-id', 'MissingOption');
        assertInstanceId(opts.instanceId);
        const account = resolveAccountCredentials({}, io.env);
        signed = signSignature({ accessKeyId: account.accessKeyId, accessKeySecret: account.accessKeySecret, instanceId: opts.instanceId, clientId: opts.clientId });
      } else {
        if (opts.credentialFile === undefined) throw new UsageError('sign needs --credential-file (or --mode signature)', 'MissingOption');
        for (const [flag, value] of [['--instance-id', opts.instanceId], ['--client-id', opts.clientId]] as const) {
          if (value !== undefined) throw conflicting('--credential-file', flag, `the credential file holds the ${flag === '--client-id' ? 'ClientId' : 'instance id'} it was issued for`);
        }
        signed = signDeviceCredential(await readCredentialFile(opts.credentialFile));
      }
      if (opts.json) {
        io.stdout(jsonLine({ username: signed.username, password: signed.password, clientId: signed.clientId }));
      } else {
        io.stdout(`clientId: ${signed.clientId}\nusername: ${signed.username}\npassword: ${signed.password}\n`);
      }
    });
}
