/**
 * A seeded, bounded fuzz of the broker with raw MQTT bytes over real sockets (issue 9): random bytes, truncated and
 * oversized lengths, malformed CONNECT / PUBLISH / SUBSCRIBE of MQTT 3.1.1 and 5, before and after logging in. The
 * broker must never crash (an uncaught exception fails the run) or hang (each case ends when the broker closes
 * the socket after ours), and must serve a well-behaved client afterwards. Set APSARAMQ_FUZZ_SEED to replay a run.
 */
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import type { MqttCredentials } from '../../src/signer/mqtt.js';
import { accountLogin } from '../helpers/broker.js';
import { connectMqtt, connectWithInbox, useEmulator } from '../helpers/emulator.js';
import { connectPacket, hostPort } from '../helpers/raw-mqtt.js';

const SEED = Number(process.env['APSARAMQ_FUZZ_SEED'] ?? 0x5eed_2026);
const CASES = 3_000;
const CONCURRENCY = 32;

/** mulberry32: a small seeded PRNG, so that a failing run can be replayed exactly. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

type Random = ReturnType<typeof prng>;
const int = (r: Random, max: number): number => Math.floor(r() * max);
const pick = <T>(r: Random, items: readonly T[]): T => items[int(r, items.length)] as T;
function bytes(r: Random, n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = int(r, 256);
  return out;
}

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

/** One case: a valid CONNECT to send first (and wait for its answer), if any, then the fuzz. */
interface FuzzCase {
  readonly login?: Buffer;
  readonly bytes: Buffer;
}

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

const PINGREQ = Buffer.from([0xc0, 0x00]);
const PINGRESP = Buffer.from([0xd0, 0x00]);

/**
 * How long to wait for the PINGRESP that shows the broker has read a case's packets. Only a case that ends inside a
 * packet (the broker rightly waits for the rest, and swallows the PINGREQ) waits this long; every other case ends on
 * the PINGRESP or on the broker closing the connection.
 */
const PING_WAIT_MS = 100;

/** What became of one case. */
interface Outcome {
  /** The CONNECT was accepted: the fuzz went to a logged-in session. */
  readonly loggedIn: boolean;
  /** The broker answered the PINGREQ after the fuzz: it read all of it and kept the session. */
  readonly pinged: boolean;
}

/**
 * Send one case: the CONNECT (waiting for its CONNACK, so that what follows is read by a logged-in session), the
 * fuzz split at random places as a network would, and after a login a PINGREQ; end our side, and resolve once the
 * broker has closed the connection too.
 */
async function run(url: string, fuzz: FuzzCase, r: Random): Promise<Outcome> {
  const { host, port } = hostPort(url);
  const socket = netConnect(port, host);
  socket.on('error', () => undefined);
  let received = Buffer.alloc(0);
  let onData = (): void => undefined;
  socket.on('data', (data: Buffer) => {
    received = Buffer.concat([received, data]);
    onData();
  });
  // Not events.once: it rejects on 'error', and a reset by the broker is one of the expected endings.
  let isClosed = false;
  const closed = new Promise<void>((resolve) => socket.once('close', () => {
    isClosed = true;
    onData();
    resolve();
  }));
  /** Resolves when `test` holds for what was received, or the socket closed. */
  const until = (test: () => boolean, waitMs?: number): Promise<void> => new Promise((resolve) => {
    const timer = waitMs === undefined ? undefined : setTimeout(resolve, waitMs);
    onData = () => {
      if (isClosed || test()) {
        clearTimeout(timer);
        resolve();
      }
    };
    onData();
  });
  await once(socket, 'connect').catch(() => undefined);
  if (fuzz.login) {
    socket.write(fuzz.login);
    await until(() => received.length >= 4);
  }
  // CONNACK with session-present 0 and return / reason code 0.
  const loggedIn = received[0] === 0x20 && received[2] === 0 && received[3] === 0;
  const start = received.length;
  for (let at = 0; at < fuzz.bytes.length;) {
    const size = r() < 0.5 ? fuzz.bytes.length : 1 + int(r, 64);
    socket.write(fuzz.bytes.subarray(at, at + size));
    at += size;
  }
  const answered = (): boolean => received.subarray(start).includes(PINGRESP);
  if (loggedIn) {
    socket.write(PINGREQ);
    await until(answered, PING_WAIT_MS);
  }
  const pinged = answered();
  socket.end();
  await closed;
  return { loggedIn, pinged };
}

/** The well-behaved client: logs in, subscribes, publishes and receives its message. */
async function stillServes(e: Emulator, clientId: string): Promise<void> {
  const client = await connectWithInbox(e.mqttUrl, accountLogin(e, clientId));
  await client.client.subscribeAsync('demo/after-fuzz', { qos: 1 });
  const publisher = await connectMqtt(e.mqttUrl, accountLogin(e, `${clientId}-pub`), { protocolVersion: 5 });
  await publisher.publishAsync('demo/after-fuzz', 'served', { qos: 1 });
  expect(await client.next()).toEqual(['demo/after-fuzz', 'served']);
  await Promise.all([client.client.endAsync(), publisher.endAsync()]);
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
    // Each case draws from its own generator, seeded in order from the run's: the cases are the same whatever order
    // the sockets finish in. CONCURRENCY workers take the next case as soon as theirs is over.
    const r = prng(SEED);
    const seeds = Array.from({ length: CASES }, () => int(r, 2 ** 32));
    const outcomes: Outcome[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < CASES; i = next++) {
        const which = i % 2;
        const caseRandom = prng(seeds[i] as number);
        const login = (logins[which] as (r: Random) => (v: 3 | 4 | 5) => Buffer)(caseRandom);
        outcomes.push(await run((emulators[which] as Emulator).mqttUrl, fuzzCase(caseRandom, login), caseRandom));
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    // The fuzz reached logged-in sessions (some of which read it to the end), not only connections refused at once.
    expect(outcomes.filter((o) => o.loggedIn).length).toBeGreaterThan(CASES / 4);
    expect(outcomes.filter((o) => o.pinged).length).toBeGreaterThan(CASES / 50);
    for (const [i, e] of emulators.entries()) {
      await stillServes(e, `GID_fuzz@@@good-${i}`);
      expect((await fetch(new URL('/_emulator/stats', e.apiEndpoint))).status).toBe(200);
    }
  }, 60_000);
});
