/**
 * A seeded, bounded fuzz of the broker with raw MQTT bytes over real sockets (issue 9): random bytes, truncated and
 * oversized lengths, malformed CONNECT / PUBLISH / SUBSCRIBE of MQTT 3.1.1 and 5, before and after logging in. The
 * broker must never crash (an uncaught exception fails the run) or hang (each case ends when the broker closes
 * the socket after ours), and must serve a well-behaved client afterwards. Set APSARAMQ_FUZZ_SEED to replay a run,
 * APSARAMQ_FUZZ_CASES for more cases (`npm run fuzz`).
 */
import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import type { MqttCredentials } from '../../src/signer/mqtt.js';
import { accountLogin } from '../helpers/broker.js';
import { useEmulator } from '../helpers/emulator.js';
import { bytes, fuzzCases, fuzzSeed, int, pick, runCase, runCases, stillServes, type FuzzCase, type Random } from '../helpers/fuzz.js';
import { connectPacket } from '../helpers/raw-mqtt.js';

const SEED = fuzzSeed(0x5eed_2026);
const CASES = fuzzCases(3_000);
const CONCURRENCY = 32;

const TOPICS = ['demo/x', 'demo/#', '#', '+', 'demo/+/y', '', '/', '//', '$SYS/#', '$share/g/demo/x', 'constructor', '__proto__', 'other/p2p/GID_fuzz@@@0', '/p2p/GID_fuzz@@@0', 'demo/\u0000', 'demo/\ud800', `demo/${'l'.repeat(200)}`, 'a/'.repeat(150), 'démo/ü'];

/** A well-formed packet of a random kind with random fields, or undefined when mqtt-packet refuses to encode it. */
function randomPacket(r: Random, version: 4 | 5): Buffer | undefined {
  const v5 = version === 5;
  const properties = v5 && r() < 0.5
    ? pick<Record<string, unknown>>(r, [{ subscriptionIdentifier: int(r, 300_000_000) }, { userProperties: { k: 'v'.repeat(int(r, 50)) } }, { topicAlias: int(r, 70_000) }, { messageExpiryInterval: int(r, 2 ** 32) }, { responseTopic: pick(r, TOPICS) }, { reasonString: 'x' }])
    : undefined;
  const packets: Packet[] = [
    { cmd: 'publish', topic: pick(r, TOPICS), payload: int(r, 20) === 0 ? Buffer.alloc(70_000, int(r, 256)) : bytes(r, int(r, 64)), qos: int(r, 3) as 0 | 1 | 2, retain: r() < 0.3, dup: r() < 0.1, messageId: int(r, 65_536), ...(properties ? { properties } : {}) },
    { cmd: 'subscribe', messageId: int(r, 65_536), subscriptions: Array.from({ length: 1 + int(r, 4) }, () => ({ topic: pick(r, TOPICS), qos: int(r, 3) as 0 | 1 | 2, ...(v5 ? { nl: r() < 0.5, rap: r() < 0.5, rh: int(r, 3) } : {}) })), ...(properties ? { properties } : {}) },
    { cmd: 'unsubscribe', messageId: int(r, 65_536), unsubscriptions: [pick(r, TOPICS), pick(r, TOPICS)] },
    { cmd: 'puback', messageId: int(r, 65_536) },
    { cmd: 'pubrec', messageId: int(r, 65_536) },
    { cmd: 'pubrel', messageId: int(r, 65_536) },
    { cmd: 'pubcomp', messageId: int(r, 65_536) },
    { cmd: 'pingreq' },
    { cmd: 'disconnect', ...(v5 ? { reasonCode: pick(r, [0, 4, 0x80]), properties: { sessionExpiryInterval: int(r, 100) } } : {}) },
    { cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clientId: 'GID_fuzz@@@again', clean: true, keepalive: 0 },
  ];
  try {
    return mqttPacket.generate(pick(r, packets), { protocolVersion: version });
  } catch {
    return undefined;
  }
}

/** Damage a well-formed packet: flip bits, cut it short, append garbage, or rewrite its length. */
function mutate(r: Random, packet: Buffer): Buffer {
  const copy = Buffer.from(packet);
  switch (int(r, 5)) {
    case 0:
      for (let i = 0; i < 1 + int(r, 4); i++) {
        const at = int(r, copy.length);
        copy[at] = (copy[at] ?? 0) ^ (1 << int(r, 8));
      }
      return copy;
    case 1:
      return copy.subarray(0, int(r, copy.length));
    case 2:
      return Buffer.concat([copy, bytes(r, int(r, 40))]);
    case 3:
      // A remaining length that says more than follows, or a malformed five-byte length.
      return Buffer.concat([copy.subarray(0, 1), pick(r, [Buffer.from([0xff, 0xff, 0xff, 0x7f]), Buffer.from([0x80, 0x80, 0x80, 0x80, 0x01]), Buffer.from([int(r, 128)])]), copy.subarray(2)]);
    default:
      return Buffer.concat([copy, copy]);
  }
}

/** Hand-made malformed packets that random mutation rarely finds. */
const MALFORMED: readonly Buffer[] = [
  Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x58, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00]), // protocol name MQTX
  Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x06, 0x02, 0x00, 0x3c, 0x00, 0x00]), // protocol version 6
  Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x03, 0x00, 0x3c, 0x00, 0x00]), // reserved flag set
  Buffer.from([0x10, 0x0d, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x05, 0x02, 0x00, 0x3c, 0x7f, 0x00, 0x00]), // v5 properties longer than the packet
  Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]), // 256 MB CONNECT
  Buffer.from([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01]), // PUBLISH QoS 3
  Buffer.from([0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00]), // SUBSCRIBE with wrong fixed-header flags
  Buffer.from([0x82, 0x02, 0x00, 0x01]), // SUBSCRIBE without a filter
  Buffer.from([0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x03]), // SUBSCRIBE QoS 3
  Buffer.from([0xf0, 0x00]), // AUTH / reserved type 15
  Buffer.from([0x00, 0x00]), // reserved type 0
];

function fuzzCase(r: Random, login: (version: 3 | 4 | 5) => Buffer): FuzzCase {
  const version = pick(r, [4, 5] as const);
  switch (int(r, 7)) {
    case 0:
      return { bytes: bytes(r, int(r, 300)) };
    case 1:
      return { bytes: pick(r, MALFORMED) };
    case 2:
      return { bytes: mutate(r, login(pick(r, [3, 4, 5] as const))) };
    case 3:
      return { login: login(version), bytes: bytes(r, 1 + int(r, 200)) };
    case 4:
      return { login: login(version), bytes: pick(r, MALFORMED) };
    case 5: {
      // A QoS 2 exchange out of order: PUBRELs repeated, early, or for another packet id.
      const id = 1 + int(r, 65_535);
      const publish = mqttPacket.generate({ cmd: 'publish', topic: 'demo/x', payload: bytes(r, int(r, 32)), qos: 2, messageId: id, retain: false, dup: r() < 0.5 }, { protocolVersion: version });
      const pubrel = (messageId: number): Buffer => mqttPacket.generate({ cmd: 'pubrel', messageId }, { protocolVersion: version });
      return { login: login(version), bytes: Buffer.concat(pick(r, [[publish, pubrel(id), pubrel(id)], [pubrel(id), publish, publish], [publish, publish, pubrel(id), pubrel(id + 1)]])) };
    }
    default: {
      const chunks: Buffer[] = [];
      for (let i = 0; i < 1 + int(r, 4); i++) {
        const packet = randomPacket(r, version);
        if (packet) chunks.push(r() < 0.5 ? mutate(r, packet) : packet);
      }
      return { login: login(version), bytes: Buffer.concat(chunks) };
    }
  }
}

describe(`fuzz: raw MQTT packets at the broker (seed ${SEED}, ${CASES} cases)`, () => {
  const strict = useEmulator({ maxQueuedBytes: 1024 * 1024 });
  const lenient = useEmulator({ lenient: true });

  it('never crashes or hangs, and serves a well-behaved client afterwards', async () => {
    const emulators = [strict(), lenient()];
    const logins = emulators.map((e) => {
      const credentials: MqttCredentials[] = Array.from({ length: 8 }, (_, i) => accountLogin(e, `GID_fuzz@@@${i}`));
      return (r: Random) => (version: 3 | 4 | 5) => mqttPacket.generate(connectPacket(pick(r, credentials), version, { keepalive: int(r, 2) * 60 }), { protocolVersion: version });
    });
    const outcomes = await runCases(SEED, CASES, CONCURRENCY, (i, caseRandom) => {
      const which = i % 2;
      const login = (logins[which] as (r: Random) => (v: 3 | 4 | 5) => Buffer)(caseRandom);
      return runCase((emulators[which] as Emulator).mqttUrl, fuzzCase(caseRandom, login), caseRandom);
    });
    // The fuzz reached logged-in sessions (some of which read it to the end), not only connections refused at once.
    expect(outcomes.filter((o) => o.loggedIn).length).toBeGreaterThan(CASES / 4);
    expect(outcomes.filter((o) => o.pinged).length).toBeGreaterThan(CASES / 50);
    for (const [i, e] of emulators.entries()) await stillServes(e, `GID_fuzz@@@good-${i}`);
  }, Math.max(60_000, CASES * 20));
});
