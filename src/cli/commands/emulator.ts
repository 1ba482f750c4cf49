import type { Command } from 'commander';
import { startEmulator, type EmulatorOptions } from '../../emulator/index.js';
import { type CliIo, choiceArg, intArg, jsonLine } from '../io.js';

interface EmulatorFlags {
  host: string;
  mqttPort: number;
  wsPort: number;
  noWs?: boolean;
  ws: boolean;
  apiPort: number;
  instanceId?: string;
  reRegister: 'rotate' | 'reject';
  errorStatuses: 'remapped' | 'legacy';
  qpsLimit: number;
  json?: boolean;
}

/** Defaults of the `emulator` command: fixed, well-known ports so the quick start can be pasted. */
export const EMULATOR_CLI_DEFAULTS = Object.freeze({ host: '127.0.0.1', mqttPort: 1883, wsPort: 8083, apiPort: 8080 });

export function addEmulatorCommand(program: Command, io: CliIo): void {
  program
    .command('emulator')
    .description('Run a local emulator of ApsaraMQ for MQTT: an MQTT broker (TCP and WebSocket /mqtt) and the OpenAPI, enforcing the real authentication.')
    .option('--host <host>', 'address to listen on', EMULATOR_CLI_DEFAULTS.host)
    .option('--mqtt-port <port>', 'MQTT over TCP port (0 = any free port)', intArg('--mqtt-port', 0, 65535), EMULATOR_CLI_DEFAULTS.mqttPort)
    .option('--ws-port <port>', 'MQTT over WebSocket port, path /mqtt (0 = any free port)', intArg('--ws-port', 0, 65535), EMULATOR_CLI_DEFAULTS.wsPort)
    .option('--no-ws', 'do not listen for WebSocket')
    .option('--api-port <port>', 'OpenAPI port (0 = any free port)', intArg('--api-port', 0, 65535), EMULATOR_CLI_DEFAULTS.apiPort)
    .option('--instance-id <id>', 'instance id (default: $APSARAMQ_INSTANCE_ID, else generated)')
    .option('--re-register <mode>', 'RegisterDeviceCredential on a ClientId that has a credential: rotate (latest wins) or reject (DeviceCredentialExsit)', choiceArg('--re-register', ['rotate', 'reject'] as const), 'rotate')
    .option('--error-statuses <set>', 'HTTP status of InternalError/SystemOverFlow: remapped (417/403) or legacy (500/500)', choiceArg('--error-statuses', ['remapped', 'legacy'] as const), 'remapped')
    .option('--qps-limit <n>', 'OpenAPI calls per second per account before Throttling.User', intArg('--qps-limit', 1), 500)
    .option('--json', 'once ready, print one JSON line {mqttUrl, wsUrl, apiEndpoint, instanceId, accessKeyId, accessKeySecret}')
    .addHelpText(
      'after',
      `
The account AccessKey comes from ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET when set,
else one is generated and printed. Runs until SIGINT or SIGTERM, then closes cleanly.

Examples:
  $ apsaramq-device emulator
  $ apsaramq-device emulator --mqtt-port 0 --ws-port 0 --api-port 0 --json`,
    )
    .action(async (flags: EmulatorFlags) => {
      const options: EmulatorOptions = {
        host: flags.host,
        mqttPort: flags.mqttPort,
        wsPort: flags.ws ? flags.wsPort : false,
        apiPort: flags.apiPort,
        reRegister: flags.reRegister,
        errorStatuses: flags.errorStatuses,
        qpsLimit: flags.qpsLimit,
        env: io.env,
        ...(flags.instanceId === undefined ? {} : { instanceId: flags.instanceId }),
      };
      const emulator = await startEmulator(options);
      const stopped = io.interrupted();
      if (flags.json) {
        io.stdout(
          jsonLine({
            mqttUrl: emulator.mqttUrl,
            wsUrl: emulator.wsUrl ?? null,
            apiEndpoint: emulator.apiEndpoint,
            instanceId: emulator.instanceId,
            accessKeyId: emulator.accessKeyId,
            accessKeySecret: emulator.accessKeySecret,
          }),
        );
      } else {
        io.stdout(
          [
            'ApsaraMQ for MQTT emulator is running.',
            `  MQTT (TCP):       ${emulator.mqttUrl}`,
            `  MQTT (WebSocket): ${emulator.wsUrl ?? 'off'}`,
            `  OpenAPI endpoint: ${emulator.apiEndpoint}`,
            `  Instance id:      ${emulator.instanceId}`,
            '',
            'In another terminal:',
            `  export ALIBABA_CLOUD_ACCESS_KEY_ID=${emulator.accessKeyId}`,
            `  export ALIBABA_CLOUD_ACCESS_KEY_SECRET=${emulator.accessKeySecret}`,
            `  apsaramq-device register --endpoint ${emulator.apiEndpoint} --instance-id ${emulator.instanceId} --client-id GID_demo@@@dev-1`,
            '',
            'Press Ctrl+C to stop.',
            '',
          ].join('\n'),
        );
      }
      await stopped;
      await emulator.close();
    });
}
