#!/usr/bin/env node
/**
 * The `apsaramq-device` executable. It takes DEBUG out of the environment before any dependency loads: pop-core's
 * HTTP client (`httpx:*`), mqtt-packet (`mqtt-packet:*`), mqtt.js and aedes log through the `debug` module on their
 * own, and with DEBUG set they print device secrets, account secrets and MQTT passwords in clear. The CLI's own
 * `--verbose` logs are scrubbed of secrets; use those. (`debug` reads DEBUG once, when it is first loaded, which is
 * why this happens here, before `main.js` and its dependencies are imported.)
 */
const debugValue = process.env['DEBUG'];
if (debugValue !== undefined) {
  delete process.env['DEBUG'];
  if (debugValue.trim() !== '') {
    process.stderr.write('notice: DEBUG is ignored: the debug output of apsaramq-device\'s dependencies would print secrets; use --verbose (scrubbed) instead\n');
  }
}

const { runCli } = await import('./main.js');
process.exitCode = await runCli(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(`UnknownError: ${String(error)}\n`);
  return 1;
});
