import { rename } from 'node:fs/promises';
import type { Command } from 'commander';
import { ApsaraMqDeviceError, LOCAL_ERROR_CATALOG, StoreError } from '../../errors.js';
import { assertClientId, assertGroupId, assertInstanceId } from '../../credential.js';
import { FileCredentialStore } from '../../provisioner/file-store.js';
import type { Provisioner } from '../../provisioner/provisioner.js';
import { loadProvisioner } from '../roles.js';
import { explainCallFailure } from '../probe.js';
import { type CliIo, UsageError, checkOutputFile, intArg, jsonLine, writePrivateFile } from '../io.js';
// Help examples name the instance the `emulator` command serves by default, so that they work when copied.
import { CLI_DEFAULT_INSTANCE_ID as EXAMPLE_INSTANCE_ID } from './emulator.js';

export interface ApiFlags {
  instanceId?: string;
  endpoint?: string;
  region?: string;
  store?: string;
}

export const API_HELP = `
Account keys come from ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (and ALIBABA_CLOUD_SECURITY_TOKEN for STS).
The OpenAPI endpoint is --endpoint URL (e.g. the emulator's http://127.0.0.1:8080) or https://onsmqtt.<region>.aliyuncs.com for --region.`;

/**
 * Run a command's calls with a provisioner built from the common registrar flags (checked first: usage errors exit
 * 2), closed afterwards. A call that fails on the network because `--endpoint` is not the OpenAPI at all (the MQTT
 * or WebSocket port) says so, naming the flag, rather than the call's "outcome unknown".
 */
export async function withProvisioner(flags: ApiFlags, io: CliIo, run: (provisioner: Provisioner) => Promise<void>): Promise<void> {
  const provisioner = await provisionerFromFlags(flags, io);
  try {
    await run(provisioner).catch((error: unknown) => explainCallFailure(error, provisioner.endpoint, flags.endpoint === undefined ? '--region' : '--endpoint'));
  } finally {
    provisioner.close();
  }
}

/** Build a provisioner from the common registrar flags, checking them first (usage errors exit 2). */
async function provisionerFromFlags(flags: ApiFlags, io: CliIo): Promise<Provisioner> {
  if (flags.instanceId === undefined) throw new UsageError('--instance-id is required');
  if (flags.endpoint === undefined && flags.region === undefined) throw new UsageError('pass --endpoint URL or --region REGION');
  if (flags.endpoint !== undefined && flags.region !== undefined) throw new UsageError('pass --endpoint or --region, not both');
  assertInstanceId(flags.instanceId);
  const { Provisioner } = await loadProvisioner('apsaramq-device, to call the OpenAPI,');
  return new Provisioner({
    instanceId: flags.instanceId,
    env: io.env,
    ...(flags.store === undefined ? {} : { store: new FileCredentialStore(flags.store) }),
    ...(flags.endpoint === undefined ? {} : { endpoint: flags.endpoint }),
    ...(flags.region === undefined ? {} : { region: flags.region }),
  });
}

export function apiOptions(command: Command): Command {
  return command
    .option('--instance-id <id>', 'instance id (required)')
    .option('--endpoint <url>', 'OpenAPI endpoint URL')
    .option('--region <region>', 'region, for https://onsmqtt.<region>.aliyuncs.com');
}

export function addCredentialCommands(program: Command, io: CliIo): void {
  const credentialActions = [
    ['register', 'RegisterDeviceCredential: issue a credential for a ClientId. Careful: on a ClientId that already has one, the service may replace it (latest wins), breaking the device that holds it; `connect` and `provision` never do that.'],
    ['get', 'GetDeviceCredential: print the credential of a ClientId.'],
    ['refresh', 'RefreshDeviceCredential: rotate the key pair of a ClientId.'],
  ] as const;
  for (const [name, description] of credentialActions) {
    const command = apiOptions(program.command(name).description(description))
      .option('--client-id <clientId>', 'the device ClientId, GID_<group>@@@<device> (required)')
      .option('--store <dir>', 'also save the credential in this store directory')
      .option('--out <file>', 'write the response JSON to this file instead of stdout, with mode 600 (it holds the device secret)');
    if (name === 'register') command.option('--rotate', 'with --store: register even though the store holds a credential for the ClientId (the device holding it is refused from then on)');
    command
      .addHelpText(
        'after',
        `${API_HELP}\nPrints the API's response JSON on stdout (or writes it to --out FILE, mode 600); it holds the device secret: treat it as one.\n\nExample:\n  $ apsaramq-device ${name} --endpoint http://127.0.0.1:8080 --instance-id ${EXAMPLE_INSTANCE_ID} --client-id GID_demo@@@dev-1 --out dev-1.json`,
      )
      .action(async (flags: ApiFlags & { clientId?: string; rotate?: boolean; out?: string }) => {
        if (flags.clientId === undefined) throw new UsageError('--client-id is required', 'MissingOption');
        assertClientId(flags.clientId);
        if (flags.rotate && flags.store === undefined) throw new UsageError('--rotate only means something with --store (a register without a store always registers)');
        if (flags.out !== undefined) await checkOutputFile('--out', flags.out, 'dev-1.json');
        const { store: storeDir, rotate, out, ...apiFlags } = flags;
        const clientId = flags.clientId;
        await withProvisioner(apiFlags, io, async (provisioner) => {
          // Check the store before the call (insecure or corrupt is refused now), and save only after printing: a
          // Register or Refresh changes the credential on the service, so its answer must never be lost.
          const store = storeDir === undefined ? undefined : new FileCredentialStore(storeDir);
          await store?.prepare(provisioner.instanceId);
          let corrupt: string | undefined;
          let stored;
          try {
            stored = await store?.load(provisioner.instanceId, clientId);
          } catch (error) {
            // get --store is how a corrupt entry is mended: the fetched credential replaces it, the bad file is kept aside.
            if (name !== 'get' || !(error instanceof StoreError) || error.code !== 'StoreCorrupt' || error.path === undefined) throw error;
            corrupt = error.path;
          }
          if (name === 'register' && stored && !rotate) {
            throw new ApsaraMqDeviceError('CredentialInStore', `The store ${storeDir} already holds a credential for ${clientId} (${stored.deviceAccessKeyId}); register would replace it and lock out the device that holds it`, LOCAL_ERROR_CATALOG.CredentialInStore);
          }
          const answer = await provisioner[name](clientId);
          // The one place a secret is printed on purpose: the registrar hands it to the device.
          const json = `${JSON.stringify({ RequestId: answer.requestId, DeviceCredential: answer.credential.toWire() }, null, 2)}\n`;
          if (out === undefined) {
            io.stdout(json);
            const mode = io.stdoutFileMode?.();
            if (mode !== undefined && (mode & 0o077) !== 0) {
              io.stderr(`warning: stdout is a file with mode ${mode.toString(8).padStart(3, '0')}: other users can read the device secret in it; chmod 600 it, or write it with --out FILE (mode 600)\n`);
            }
          } else {
            try {
              await writePrivateFile(out, json);
            } catch (error) {
              // The service has issued the credential: its only copy must not be lost to a file that cannot be written.
              io.stdout(json);
              // Not a usage error (exit 1): the call was made.
              throw new ApsaraMqDeviceError('InvalidOption', `Cannot write --out ${out} (${(error as NodeJS.ErrnoException).code ?? String(error)}): the credential is on stdout instead`, LOCAL_ERROR_CATALOG.InvalidOption);
            }
            io.stderr(`wrote the credential of ${clientId} to ${out} (mode 600)\n`);
          }
          if (corrupt !== undefined) {
            const aside = `${corrupt}.corrupt-${Date.now()}`;
            await rename(corrupt, aside);
            io.stderr(`replaced the corrupt ${corrupt} with the credential the service holds; the bad file is kept as ${aside}\n`);
          }
          await store?.save(answer.credential);
        });
      });
  }

  apiOptions(program.command('unregister').description('UnRegisterDeviceCredential: revoke the credential of a ClientId. Live sessions stay up until they disconnect.'))
    .option('--client-id <clientId>', 'the device ClientId (required)')
    .option('--store <dir>', 'also remove the credential from this store directory')
    .addHelpText('after', `${API_HELP}\nPrints the API's response JSON on stdout.\n\nExample:\n  $ apsaramq-device unregister --endpoint http://127.0.0.1:8080 --instance-id ${EXAMPLE_INSTANCE_ID} --client-id GID_demo@@@dev-1`)
    .action(async (flags: ApiFlags & { clientId?: string }) => {
      if (flags.clientId === undefined) throw new UsageError('--client-id is required');
      const clientId = flags.clientId;
      assertClientId(clientId);
      await withProvisioner(flags, io, async (provisioner) => {
        const answer = await provisioner.unregister(clientId);
        io.stdout(`${JSON.stringify({ RequestId: answer.requestId }, null, 2)}\n`);
      });
    });

  apiOptions(program.command('list').description('ListDeviceCredentialClientId: list the ClientIds of a group that hold a credential.'))
    .option('--group-id <gid>', 'GroupId, GID_… (required)')
    .option('--page-size <n>', 'page size, 1 to 100', intArg('--page-size', 1, 100), 100)
    .option('--page-no <n>', 'page number, from 1', intArg('--page-no', 1))
    .option('--next-token <token>', 'token of the next page, from the previous answer')
    .addHelpText('after', `${API_HELP}\nPrints the API's response JSON on stdout; pass its NextToken to --next-token for the next page.\n\nExample:\n  $ apsaramq-device list --endpoint http://127.0.0.1:8080 --instance-id ${EXAMPLE_INSTANCE_ID} --group-id GID_demo --page-size 50`)
    .action(async (flags: ApiFlags & { groupId?: string; pageSize: number; pageNo?: number; nextToken?: string }) => {
      if (flags.groupId === undefined) throw new UsageError('--group-id is required');
      const groupId = flags.groupId;
      assertGroupId(groupId);
      await withProvisioner(flags, io, async (provisioner) => {
        const page = await provisioner.list({
          groupId,
          pageSize: flags.pageSize,
          ...(flags.pageNo === undefined ? {} : { pageNo: flags.pageNo }),
          ...(flags.nextToken === undefined ? {} : { nextToken: flags.nextToken }),
        });
        io.stdout(
          `${JSON.stringify(
            {
              RequestId: page.requestId,
              DeviceCredentialClientIdList: {
                Total: String(page.total),
                ClientIdList: page.clientIds,
                PageNo: String(page.pageNo),
                PageSize: String(page.pageSize),
                ...(page.nextToken ? { NextToken: page.nextToken } : {}),
              },
            },
            null,
            2,
          )}\n`,
        );
      });
    });
}
