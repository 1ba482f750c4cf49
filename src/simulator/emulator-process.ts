/**
 * Entry point of the embedded emulator's own process (forked by {@link startEmulatorProcess}), so that the broker
 * does not share the simulator's event loop or show up in its memory. Speaks over the IPC channel:
 * sends `{type: 'ready', ...target}` or `{type: 'failed', message}`; on `{type: 'close'}` (or when the parent goes
 * away) it closes the emulator and exits.
 */
import { startEmulator } from '../emulator/index.js';
import { GAME_DAY_EMULATOR_OPTIONS } from './target.js';

/** Messages the emulator process sends to its parent. */
export type EmulatorProcessMessage =
  | { type: 'ready'; mqttUrl: string; apiEndpoint: string; instanceId: string; accessKeyId: string; accessKeySecret: string }
  | { type: 'failed'; message: string };

async function main(): Promise<void> {
  const send = (message: EmulatorProcessMessage): void => {
    process.send?.(message);
  };
  const qpsLimit = Number(process.env['APSARAMQ_SIM_QPS_LIMIT'] ?? '500');
  // The fleet's topics are the simulation's own: the parent topic they publish under exists in this emulator.
  const parents = process.env['APSARAMQ_SIM_PARENT_TOPICS'];
  const parentTopics = parents === undefined ? {} : { parentTopics: parents === '*' ? (false as const) : parents.split(',') };
  // And its GroupId: the simulated devices' GroupId exists on the instance.
  const groupList = process.env['APSARAMQ_SIM_GROUPS'];
  const groups = groupList === undefined ? {} : { groups: groupList.split(',') };
  const redis = process.env['APSARAMQ_SIM_REDIS'];
  let emulator;
  try {
    // The backend subscriber of a game day is the measuring instrument: its queue unbounded, delivered at once (target.ts).
    emulator = await startEmulator({ env: {}, mqttPort: 0, apiPort: 0, wsPort: false, qpsLimit, ...parentTopics, ...groups, ...GAME_DAY_EMULATOR_OPTIONS, ...(redis === undefined ? {} : { redis }) });
  } catch (error) {
    send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
    process.exit(1);
  }
  const running = emulator;
  let closing = false;
  const close = (): void => {
    if (closing) return;
    closing = true;
    void running.close().finally(() => process.exit(0));
  };
  process.on('message', (message: { type?: string }) => {
    if (message?.type === 'close') close();
  });
  process.on('disconnect', close);
  process.on('SIGTERM', close);
  // Ctrl+C reaches the whole process group: the parent decides when the emulator closes (after its devices left).
  process.on('SIGINT', () => undefined);
  send({
    type: 'ready',
    mqttUrl: running.mqttUrl,
    apiEndpoint: running.apiEndpoint,
    instanceId: running.instanceId,
    accessKeyId: running.accessKeyId,
    accessKeySecret: running.accessKeySecret,
  });
}

void main();
