import assert from 'node:assert/strict';
import { test } from 'node:test';
import { useEmulator } from 'apsaramq-device/testing/node-test';
import { startThermometer } from '../src/thermometer.mjs';

// One emulator for this file, on free ports; stopped after the last test, even when one failed.
const emulator = useEmulator({ parentTopics: ['sensors'], groups: ['GID_sensors'] }); // the parent topics and GroupIds the instance has

test('reports a reading, and reports again after the broker dropped it', async () => {
  const emu = emulator();
  const { credential } = await emu.registerDevice('GID_sensors@@@kitchen');
  const thermometer = await startThermometer({ credential, brokerUrl: emu.mqttUrl });

  const first = emu.waitForMessage('sensors/+/temp');
  await thermometer.report(21.5);
  assert.equal((await first).payload.toString(), '21.5');

  // A fault: the broker cuts the connection. The thermometer must come back by itself.
  const dropped = emu.waitForOffline(credential.clientId);
  emu.disconnect(credential.clientId);
  await dropped;
  await emu.waitForOnline(credential.clientId);

  const second = emu.waitForMessage('sensors/kitchen/temp');
  await thermometer.report(22);
  assert.equal((await second).payload.toString(), '22');
  await thermometer.stop();
});
