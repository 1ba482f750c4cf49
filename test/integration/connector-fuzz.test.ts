/**
 * A seeded fuzz of the connector by a fake broker (issue 24): after each CONNACK the broker sends one case, then
 * closes the socket. The cases: every prefix of valid PUBLISH (QoS 0, 1, 2), PUBACK, PUBREC, PUBREL, PUBCOMP,
 * SUBACK, UNSUBACK, DISCONNECT, PINGRESP, CONNACK and (MQTT 5) AUTH packets, as sent (cut short) and with the
 * remaining length rewritten to fit (complete, but missing fields); random bytes; impossible and lying remaining
 * lengths; and MQTT 5 packets with random property bytes. MQTT 3.1.1 and 5, a few thousand cases.
 *
 * The connector must survive every case: no uncaught exception, never `closed`, every `error` a typed
 * `ProtocolError`, and a reconnect after each case to the next, well-behaved CONNACK; after the last, a QoS 1
 * publish goes through. Set APSARAMQ_FUZZ_SEED to replay a run, APSARAMQ_FUZZ_CASES to run more (or fewer) cases.
 */
import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import { DeviceCredential } from '../../src/credential.js';
import { type ApsaraMqDeviceError, ConnectError } from '../../src/errors.js';
import { PacketViolation } from '../../src/connector/packet-guard.js';
import { type Random, bytes, int, noUncaughtException, prng, varint } from '../helpers/fuzz.js';
import { scriptedBroker } from '../helpers/scripted-broker.js';

const SEED = Number(process.env['APSARAMQ_FUZZ_SEED'] ?? 0x5eed_0024);
const CASES = Number(process.env['APSARAMQ_FUZZ_CASES'] ?? 3_000);
/** Connectors fuzzed at once, each with its own broker and its share of the cases. */
const LANES = 4;

/** Well-formed packets a broker may send a client, with random fields. */
function validPackets(r: Random, version: 4 | 5): Buffer[] {
  const v5 = version === 5;
  const id = (): number => 1 + int(r, 65_535);
  const props = (p: Record<string, unknown>): Record<string, unknown> => (v5 ? { properties: p } : {});
  const packets: Packet[] = [
    { cmd: 'publish', topic: 'fuzz/a', payload: bytes(r, int(r, 24)), qos: 0, retain: false, dup: false, ...props({ payloadFormatIndicator: true, contentType: 'text/plain' }) },
    { cmd: 'publish', topic: 'fuzz/b', payload: bytes(r, int(r, 24)), qos: 1, messageId: id(), retain: false, dup: r() < 0.5, ...props({ messageExpiryInterval: int(r, 1000), responseTopic: 'fuzz/r', correlationData: bytes(r, 4), userProperties: { k: 'v' } }) },
    { cmd: 'publish', topic: 'fuzz/c', payload: bytes(r, int(r, 24)), qos: 2, messageId: id(), retain: false, dup: false, ...props({ subscriptionIdentifier: 1 + int(r, 1000) }) },
    { cmd: 'puback', messageId: id(), ...(v5 ? { reasonCode: 0x10, properties: { reasonString: 'no subscribers' } } : {}) },
    { cmd: 'pubrec', messageId: id() },
    { cmd: 'pubrel', messageId: id() },
    { cmd: 'pubcomp', messageId: id() },
    { cmd: 'suback', messageId: id(), granted: [0, 1, 0x80], ...props({ reasonString: 'x' }) },
    { cmd: 'unsuback', messageId: id(), granted: [0, 0x11] },
    { cmd: 'disconnect', ...(v5 ? { reasonCode: [0, 0x8b, 0x8e, 0x95][int(r, 4)], properties: { reasonString: 'bye', serverReference: 'elsewhere' } } : {}) },
    { cmd: 'pingresp' },
    { cmd: 'connack', sessionPresent: r() < 0.5, returnCode: 0, reasonCode: 0 },
    ...(v5 ? [{ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'x', authenticationData: bytes(r, 3) } } as Packet] : []),
  ];
  return packets.map((packet) => mqttPacket.generate(packet, { protocolVersion: version }));
}

/** The fixed header's length (type byte and remaining length) of a well-formed packet. */
function headerLength(packet: Buffer): number {
  let i = 1;
  while (((packet[i] ?? 0) & 0x80) !== 0) i += 1;
  return i + 1;
}

/** A v5 packet with a packet identifier and random property bytes: PUBLISH, PUBACK, SUBACK or DISCONNECT. */
function randomProperties(r: Random): Buffer {
  const properties = bytes(r, int(r, 24));
  const id = Buffer.from([int(r, 256), 1 + int(r, 255)]);
  const body = [
    () => Buffer.concat([Buffer.from([0, 6]), Buffer.from('fuzz/p'), id, varint(properties.length), properties, bytes(r, int(r, 8))]),
    () => Buffer.concat([id, Buffer.from([int(r, 256)]), varint(properties.length), properties]),
    () => Buffer.concat([id, varint(properties.length), properties, Buffer.from([0, 1])]),
    () => Buffer.concat([Buffer.from([int(r, 256)]), varint(properties.length), properties]),
  ];
  const kind = int(r, body.length);
  const first = [0x32, 0x40, 0x90, 0xe0][kind] as number;
  const payload = (body[kind] as () => Buffer)();
  return Buffer.concat([Buffer.from([first]), varint(payload.length), payload]);
}

/** The cases of one protocol version, shuffled by the seed. */
function cases(r: Random, version: 4 | 5, count: number): Buffer[] {
  const out: Buffer[] = [];
  for (const packet of validPackets(r, version)) {
    const header = headerLength(packet);
    for (let cut = 1; cut < packet.length; cut++) {
      out.push(packet.subarray(0, cut));
      // The same bytes claiming to be whole: a complete packet missing its last fields.
      if (cut >= 2 && header === 2) out.push(Buffer.concat([Buffer.from([packet[0] as number, cut - 2]), packet.subarray(2, cut)]));
    }
  }
  for (let type = 0; type < 16; type++) {
    const first = (type << 4) | int(r, 16);
    out.push(Buffer.from([first, 0x80, 0x80, 0x80, 0x80, 0x01])); // a remaining length of 5 bytes
    out.push(Buffer.from([first, 0x00])); // nothing at all
    out.push(Buffer.concat([Buffer.from([first, 0x7f]), bytes(r, int(r, 40))])); // claims 127 bytes, sends fewer
    out.push(Buffer.concat([Buffer.from([first, 0xff, 0xff, 0xff, 0x7f]), bytes(r, 16)])); // claims 256 MB
  }
  while (out.length < count) {
    if (version === 5 && r() < 0.5) out.push(randomProperties(r));
    else {
      const random = bytes(r, 1 + int(r, 48));
      // Mostly a plausible fixed header, so the bytes reach the packet parsers.
      if (r() < 0.7 && random.length > 1) random[1] = Math.min(random.length - 2, 127);
      out.push(random);
    }
  }
  // Shuffle (Fisher–Yates), then keep `count`.
  for (let i = out.length - 1; i > 0; i--) {
    const j = int(r, i + 1);
    [out[i], out[j]] = [out[j] as Buffer, out[i] as Buffer];
  }
  return out.slice(0, count);
}

interface LaneResult {
  /** Errors the connection emitted, with the case that was sent on that session. */
  errors: { error: ApsaraMqDeviceError; sent: string }[];
  closed: unknown[];
  onlines: number;
}

/** One connector against one fake broker, for `list` cases, then a well-behaved session. */
async function lane(list: Buffer[], version: 4 | 5): Promise<LaneResult> {
  // Connection n (from 1) gets case n-1 after its CONNACK, then the broker closes; the last one stays and behaves.
  const broker = await scriptedBroker({
    protocolVersion: version,
    onConnect: (connection) => {
      connection.send({ cmd: 'connack', sessionPresent: false, returnCode: 0, reasonCode: 0 });
      const bytes = list[connection.n - 1];
      if (bytes === undefined) return;
      connection.write(bytes);
      connection.socket.end();
    },
  });
  const result: LaneResult = { errors: [], closed: [], onlines: 0 };
  const credential = new DeviceCredential({ clientId: `GID_fuzz@@@v${version}-${list.length}-${SEED}`, instanceId: 'mqtt-fuzz', deviceAccessKeyId: 'DC.fuzzKey', deviceAccessKeySecret: 'DC.fuzzSecret' });
  let conn: DeviceConnection | undefined;
  const lastOnline = new Promise<void>((resolve) => {
    const count = (): void => {
      result.onlines += 1;
      if (result.onlines === list.length + 1) resolve();
    };
    void connectDevice({
      credential,
      brokerUrl: broker.url,
      protocolVersion: version,
      reconnect: { minDelayMs: 0, maxDelayMs: 1 },
      // A DISCONNECT 0x8E is a takeover: wait as little after it as after any loss.
      takeover: { minDelayMs: 1, maxDelayMs: 2 },
      keepalive: 0,
    }).then((c) => {
      conn = c;
      onTestFinished(() => c.end(true));
      c.on('error', (error) => result.errors.push({ error, sent: list[broker.connects.length - 1]?.toString('hex') ?? '(none)' }));
      c.on('closed', (info) => result.closed.push(info));
      c.on('online', count);
      count(); // the first session, which connectDevice resolved with
    });
  });
  await lastOnline;
  if (!conn) throw new Error('never connected');
  await (conn as DeviceConnection).publish('fuzz/after', 'fine', { qos: 1 });
  return result;
}

describe(`the connector under a fuzzing broker (seed ${SEED}, ${CASES} cases)`, () => {
  it('survives every case with a typed error, reconnects after each, and works afterwards', async () => {
    noUncaughtException();
    const r = prng(SEED);
    const perVersion = Math.ceil(CASES / 2);
    const lanes: Promise<LaneResult>[] = [];
    for (const version of [4, 5] as const) {
      const list = cases(r, version, perVersion);
      const share = Math.ceil(list.length / (LANES / 2));
      for (let i = 0; i < list.length; i += share) lanes.push(lane(list.slice(i, i + share), version));
    }
    const results = await Promise.all(lanes);
    expect(results.flatMap((lane) => lane.closed)).toEqual([]);
    const untyped = results.flatMap((lane) => lane.errors).filter(({ error }) => !(error instanceof ConnectError) || error.code !== 'ProtocolError');
    expect(untyped.map(({ error, sent }) => `${sent}: ${error.code} ${error.message}`)).toEqual([]);
    // The fuzz reached both lines of defence, not only clean closes: the guard (a PacketViolation behind the error)
    // and mqtt.js's own parser (anything else).
    const causes = results.flatMap((lane) => lane.errors).map(({ error }) => (error.cause instanceof PacketViolation ? 'guard' : 'mqtt.js'));
    expect(new Set(causes)).toEqual(new Set(['guard', 'mqtt.js']));
  });
});
