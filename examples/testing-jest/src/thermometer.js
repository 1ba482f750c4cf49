// The code under test: a thermometer that reports readings over ApsaraMQ for MQTT with its device credential.
// Nothing in it knows about the emulator; the test hands it a credential and a broker URL. CommonJS, as most Jest
// projects are: require() of apsaramq-device loads its CommonJS build.
const { connectDevice } = require('apsaramq-device');

/** Connect a thermometer; `report(celsius)` publishes one reading (QoS 1) to `sensors/<device>/temp`. */
async function startThermometer({ credential, brokerUrl }) {
  const device = credential.clientId.split('@@@')[1];
  // Short reconnect delays: a test restarts the broker and wants the device back quickly.
  const connection = await connectDevice({ credential, brokerUrl, reconnect: { minDelayMs: 20, maxDelayMs: 200 } });
  return {
    connection,
    report: (celsius) => connection.publish(`sensors/${device}/temp`, String(celsius), { qos: 1 }),
    stop: () => connection.end(),
  };
}

module.exports = { startThermometer };
