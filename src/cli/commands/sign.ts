import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import type { Command } from 'commander';
import { DeviceCredential, assertInstanceId } from '../../credential.js';
import { ValidationError } from '../../errors.js';
import { resolveAccountCredentials } from '../../provisioner/env.js';
import { MAX_CREDENTIAL_FILE_BYTES } from '../../provisioner/file-store.js';
import { type MqttCredentials, signDeviceCredential, signSignature } from '../../signer/mqtt.js';
import { type CliIo, UsageError, choiceArg, conflicting, jsonLine } from '../io.js';

/** Group and other permission bits: a credential file with any of them set is open to other users. */
const SHARED_BITS = 0o077;

/**
 * Read what `register` printed (or the bare DeviceCredential object) into a credential. The file is opened without
 * blocking (a FIFO or a device is refused, not waited on) and read no further than the credential store's cap: a
 * credential is a few hundred bytes, and a wrong path must not make the command read gigabytes. A file that other
 * users can read is used, and said on `warn`: it holds the device secret.
 * @throws ValidationError `InvalidCredential`
 */
export async function readCredentialFile(file: string, warn?: (message: string) => void): Promise<DeviceCredential> {
  const invalid = (why: string): ValidationError => new ValidationError('InvalidCredential', `Credential file ${file} ${why}`);
  let handle: FileHandle;
  try {
    handle = await open(file, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EIO';
    const why = code === 'ENOENT' ? 'there is no such file (it is what `apsaramq-device register … --out FILE` or `get … --out FILE` writes)' : code === 'EACCES' ? 'permission denied' : code;
    throw new ValidationError('InvalidCredential', `Cannot read credential file ${file}: ${why}`);
  }
  let text: string;
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw invalid('is not a regular file');
    if (info.size > MAX_CREDENTIAL_FILE_BYTES) throw invalid(`is ${info.size} bytes; a credential is a few hundred (at most ${MAX_CREDENTIAL_FILE_BYTES}): is it the right file?`);
    const buffer = Buffer.alloc(MAX_CREDENTIAL_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_CREDENTIAL_FILE_BYTES) throw invalid(`grew past ${MAX_CREDENTIAL_FILE_BYTES} bytes while it was read: is it the right file?`);
    }
    text = buffer.toString('utf8', 0, length);
    if ((info.mode & SHARED_BITS) !== 0) {
      const mode = (info.mode & 0o777).toString(8).padStart(3, '0');
      warn?.(`the credential file ${file} has mode ${mode}: other users can read the device secret in it; chmod 600 ${file}`);
    }
  } catch (error) {
    if (error instanceof ValidationError) throw error;
    throw new ValidationError('InvalidCredential', `Cannot read credential file ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  } finally {
    await handle.close().catch(() => undefined);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw invalid('is not JSON');
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
        signed = signDeviceCredential(await readCredentialFile(opts.credentialFile, (message) => io.stderr(`warning: ${message}\n`)));
      }
      if (opts.json) {
        io.stdout(jsonLine({ username: signed.username, password: signed.password, clientId: signed.clientId }));
      } else {
        io.stdout(`clientId: ${signed.clientId}\nusername: ${signed.username}\npassword: ${signed.password}\n`);
      }
    });
}
