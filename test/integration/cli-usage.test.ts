/**
 * A person who mistypes: every usage error is one line on stderr that starts with a code, names the flag as they
 * typed it, says where to look, and exits 2 before any I/O. In-process runs (the same runCli the executable runs).
 */
import { describe, expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cli, tempDir } from '../helpers/cli.js';

describe('usage errors say what happened in the user\'s terms', () => {
  it.each([
    [['connect', '--cliend-id', 'x'], /^InvalidOption: unknown option '--cliend-id' \(did you mean --client-id\?\); see apsaramq-device connect --help\n$/],
    [['conect'], /^UnknownCommand: unknown command 'conect' \(did you mean connect\?\); see apsaramq-device --help\n$/],
    [['connect', '--qos', '5'], /^InvalidOption: --qos 5 is invalid: --qos must be from 0 to 1; see apsaramq-device connect --help\n$/],
    [['list', '--page-size'], /^MissingOption: --page-size needs a value; see apsaramq-device list --help\n$/],
    [['sign', 'extra'], /^InvalidOption: too many arguments for 'sign'\. Expected 0 arguments but got 1; see apsaramq-device sign --help\n$/],
    [['connect', '--credential-file', 'x.json', '--publish', 'a/b'], /^MissingOption: --publish needs --message TEXT; see apsaramq-device connect --help\n$/],
  ])('%j', async (args, expected) => {
    const run = await cli(args);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(expected);
  });

  it('names the flag, not the library\'s option name, for a value the library refuses', async () => {
    const file = join(await tempDir(), 'dev-1.json');
    await writeFile(file, JSON.stringify({ ClientId: 'GID_demo@@@dev-1', InstanceId: 'mqtt-demo', DeviceAccessKeyId: 'DC.id', DeviceAccessKeySecret: 'DC.secret' }), { mode: 0o600 });
    const run = await cli(['connect', '--credential-file', file, '--broker-url', 'foo://127.0.0.1:1883', '--publish', 'a/b', '--message', 'b']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^InvalidOption: Option --broker-url has scheme foo:/);
    expect(run.stderr).not.toContain('brokerUrl');
  });
});
