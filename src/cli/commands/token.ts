import type { Command } from 'commander';
import { assertClientId } from '../../credential.js';
import { type CliIo, UsageError, jsonLine } from '../io.js';
import { API_HELP, type ApiFlags, apiOptions, withProvisioner } from './credential.js';

const DURATION = /^(\d+)(s|m|h|d)$/;
const UNIT_MS: Readonly<Record<string, number>> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `90s`, `15m`, `1h`, `30d` → ms; `undefined` when it is not one of those. */
export function parseDuration(value: string): number | undefined {
  const m = DURATION.exec(value.trim());
  return m ? Number(m[1]) * (UNIT_MS[m[2] ?? ''] ?? Number.NaN) : undefined;
}

/** The token from `--token`, or from stdin with `--token -` (a token on a command line shows in `ps`). */
async function readToken(flag: string | undefined, io: CliIo): Promise<string> {
  if (flag === undefined) throw new UsageError('--token is required (or --token - to read it from stdin)', 'MissingOption');
  if (flag !== '-') return flag;
  const token = ((await io.stdin?.()) ?? '').trim();
  if (token === '') throw new UsageError('--token - read no token from stdin');
  return token;
}

export function addTokenCommands(program: Command, io: CliIo): void {
  const token = program.command('token').description('Token mode: apply for, query and revoke tokens (ApplyToken, QueryToken, RevokeToken).');

  apiOptions(token.command('apply').description('ApplyToken: a token that lets a client publish (W), subscribe (R) or both on some topics until it expires.'))
    .option('--resources <topics>', 'comma-separated topics the token covers, e.g. demo/a,demo/+ (required; sent sorted)')
    .option('--actions <actions>', 'R (subscribe), W (publish) or R,W (required)')
    .option('--expire-in <duration>', 'lifetime: 90s, 15m, 1h or 30d (at least 60 s; the service caps it at 30 days)', '1h')
    .option('--json', 'print {"token","type","resources","expireTime"} on one line')
    .addHelpText('after', `${API_HELP}\nPrints the token on stdout: it is a credential, treat it as one.\n\nExample:\n  $ apsaramq-device token apply --endpoint http://127.0.0.1:8080 --instance-id mqtt-emu-local --resources demo/# --actions R,W --expire-in 1h`)
    .action(async (flags: ApiFlags & { resources?: string; actions?: string; expireIn: string; json?: boolean }) => {
      if (flags.resources === undefined) throw new UsageError('--resources is required (comma-separated topics)', 'MissingOption');
      if (flags.actions === undefined) throw new UsageError('--actions is required: R, W or R,W', 'MissingOption');
      if (!['R', 'W', 'R,W'].includes(flags.actions)) throw new UsageError(`--actions ${flags.actions} is invalid: use R, W or R,W`);
      const lifetime = parseDuration(flags.expireIn);
      if (lifetime === undefined || lifetime < 60_000) throw new UsageError(`--expire-in ${flags.expireIn} is invalid: use a duration of at least 60s, such as 90s, 15m, 1h or 30d`);
      const resources = flags.resources.split(',').map((r) => r.trim()).filter(Boolean);
      await withProvisioner(flags, io, async (provisioner) => {
        const issued = await provisioner.applyToken({ resources, actions: flags.actions as 'R' | 'W' | 'R,W', expireTime: Date.now() + lifetime });
        // The one place a token is printed on purpose: the registrar hands it to the client.
        io.stdout(flags.json ? jsonLine({ token: issued.token, type: issued.type, resources: issued.resources, expireTime: issued.expireTime }) : `${issued.token}\n`);
      });
    });

  for (const [name, description] of [
    ['query', 'QueryToken: prints "valid" (exit 0) or "invalid" (exit 1: expired, revoked or unknown).'],
    ['revoke', 'RevokeToken: the token stops working at once; sessions using it are disconnected.'],
  ] as const) {
    apiOptions(token.command(name).description(description))
      .option('--token <token>', 'the token, or - to read it from stdin (required)')
      .addHelpText('after', `${API_HELP}\n\nExample:\n  $ apsaramq-device token ${name} --endpoint http://127.0.0.1:8080 --instance-id mqtt-emu-local --token - < token.txt`)
      .action(async (flags: ApiFlags & { token?: string }) => {
        const value = await readToken(flags.token, io);
        await withProvisioner(flags, io, async (provisioner) => {
          if (name === 'revoke') {
            await provisioner.revokeToken(value);
            io.stdout('revoked\n');
          } else {
            const valid = await provisioner.queryToken(value);
            io.stdout(valid ? 'valid\n' : 'invalid\n');
            if (!valid) io.exitCode = 1;
          }
        });
      });
  }

  apiOptions(program.command('status').description('Whether devices are online now: QuerySessionByClientId for one ClientId, BatchQuerySessionByClientIds for up to 10.'))
    .option('--client-id <clientId...>', 'one or more ClientIds, up to 10 (required)')
    .option('--json', 'print [{"clientId","online"}] on one line')
    .addHelpText('after', `${API_HELP}\nPrints "<ClientId> online|offline" per line. Exit 0 when every ClientId is online, 1 otherwise.\n\nExample:\n  $ apsaramq-device status --endpoint http://127.0.0.1:8080 --instance-id mqtt-emu-local --client-id GID_demo@@@dev-1 GID_demo@@@dev-2`)
    .action(async (flags: ApiFlags & { clientId?: string[]; json?: boolean }) => {
      const ids = flags.clientId ?? [];
      if (ids.length === 0) throw new UsageError('--client-id is required (one or more ClientIds)', 'MissingOption');
      if (ids.length > 10) throw new UsageError(`--client-id takes at most 10 ClientIds, not ${ids.length}`);
      for (const id of ids) assertClientId(id);
      await withProvisioner(flags, io, async (provisioner) => {
        const sessions = ids.length === 1 ? [{ clientId: ids[0] as string, online: await provisioner.isOnline(ids[0] as string) }] : await provisioner.onlineStatus(ids);
        io.stdout(flags.json ? jsonLine(sessions) : sessions.map((s) => `${s.clientId} ${s.online ? 'online' : 'offline'}\n`).join(''));
        if (sessions.some((s) => !s.online)) io.exitCode = 1;
      });
    });
}
