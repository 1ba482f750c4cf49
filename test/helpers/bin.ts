import { statSync } from 'node:fs';
import { join } from 'node:path';

/** Absolute path of a program, looking in PATH and in /usr/sbin (where Debian puts mosquitto); undefined when absent. */
export function which(binary: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(':').concat('/usr/sbin', '/usr/bin')) {
    if (dir && statSync(join(dir, binary), { throwIfNoEntry: false })?.isFile()) return join(dir, binary);
  }
  return undefined;
}

/** Debian's mosquitto broker and clients (the names alone when not installed: a spawn then fails clearly). */
export const MOSQUITTO = {
  mosquitto: which('mosquitto') ?? 'mosquitto',
  pub: which('mosquitto_pub') ?? 'mosquitto_pub',
  sub: which('mosquitto_sub') ?? 'mosquitto_sub',
  passwd: which('mosquitto_passwd') ?? 'mosquitto_passwd',
};
