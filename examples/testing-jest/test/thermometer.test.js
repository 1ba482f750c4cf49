const { useEmulator } = require('apsaramq-device/testing/jest');
const { startThermometer } = require('../src/thermometer.js');

// One emulator for this file, on free ports; stopped after the last test, even when one failed.
const emulator = useEmulator({ parentTopics: ['sensors'], groups: ['GID_sensors'] }); // the parent topics and GroupIds the instance has

test('reports a reading, and reports again after the broker dropped it', async () => {
  const emu = emulator();
  const { credential } = await emu.registerDevice('GID_sensors@@@kitchen');
  const thermometer = await startThermometer({ credential, brokerUrl: emu.mqttUrl });

  const first = emu.waitForMessage('sensors/+/temp');
  await thermometer.report(21.5);
  expect((await first).payload.toString()).toBe('21.5');

  // A fault: the broker cuts the connection. The thermometer must come back by itself.
  const dropped = emu.waitForOffline(credential.clientId);
  emu.disconnect(credential.clientId);
  await dropped;
  await emu.waitForOnline(credential.clientId);

  const second = emu.waitForMessage('sensors/kitchen/temp');
  await thermometer.report(22);
  expect((await second).payload.toString()).toBe('22');
  await thermometer.stop();
});
