/**
 * The PUBACK path of the connector's own PUBLISH writes (src/connector/publish-writer.ts, packet-guard.ts): a PUBACK
 * the packet guard takes out of the stream must leave the session as mqtt.js's own handling of it would. Real
 * emulator on port 0, real mqtt.js clients; the network between them is the simulator's fault relay (a real TCP
 * relay) where a test needs a slow link.
 */
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice } from '../../src/connector/connect.js';
import { FaultRelay } from '../../src/simulator/fault-relay.js';
import { registerDevice, useEmulator } from '../helpers/emulator.js';

const emulator = useEmulator({ parentTopics: ['lp'] });

describe('taken PUBACKs and the keepalive', () => {
  it('a slow uplink kept busy by acknowledged QoS 1 messages keeps its session: a taken PUBACK counts for the keepalive as one mqtt.js handles', async () => {
    const e = emulator();
    const credential = await registerDevice(e, 'GID_lp@@@uplink-1');
    const broker = new URL(e.mqttUrl);
    const relay = await FaultRelay.start({ host: broker.hostname, port: Number(broker.port) }, 1);
    onTestFinished(() => relay.close());
    const { host, port } = relay.address(0);
    // Keepalive 1 s: mqtt.js pings after 1 s without an acknowledgement it handled, and gives up 0.5 s later.
    const conn = await connectDevice({ credential, brokerUrl: `mqtt://${host}:${port}`, keepalive: 1, reconnect: { minDelayMs: 5, maxDelayMs: 20 } });
    onTestFinished(() => conn.end(true));
    let offline = 0;
    conn.on('offline', () => (offline += 1));
    const errors: Error[] = [];
    conn.on('error', (error) => errors.push(error));
    // 200 KB/s each way; 150 messages of 4 KB: about 3 s of upload, a PUBACK every 20 ms or so all along. A PINGREQ
    // written after 1 s waits behind 2 s of messages in the link: only the PUBACKs can keep the session alive.
    relay.apply('slow', [0], { kind: 'bandwidth', bytesPerSec: 200_000 });
    const payload = Buffer.alloc(4_000, 1);
    const sent = Array.from({ length: 150 }, (_, i) => conn.publish(`lp/up/${i}`, payload, { qos: 1 }));
    await Promise.all(sent);
    expect(errors).toEqual([]);
    expect(offline).toBe(0);
  });
});
