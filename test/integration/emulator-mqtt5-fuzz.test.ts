/**
 * A seeded fuzz of AUTHENTICATED MQTT 5 clients (issue 24): after a real login, PUBLISH, SUBSCRIBE, UNSUBSCRIBE,
 * PUBACK, PUBREC, PUBREL, PUBCOMP, PINGREQ, DISCONNECT and AUTH packets whose property blocks hold every property id
 * (and ids that do not exist), values of the right type, of the wrong type, cut short, extreme, given twice, and
 * blocks whose length says more or less than they hold; some CONNECTs carry fuzzed properties too. One authenticated
 * v5 PUBLISH with a truncated Response Topic used to end the emulator's process. The emulator must never crash (an
 * uncaught exception fails the run) or hang, must answer what it refuses with DISCONNECT 0x81 or 0x82, and must serve
 * a well-behaved client (and its OpenAPI) afterwards. APSARAMQ_FUZZ_SEED replays a run, APSARAMQ_FUZZ_CASES sets the
 * number of cases (3,000 here; `npm run fuzz` runs 10,000).
 */
import { describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import type { MqttCredentials } from '../../src/signer/mqtt.js';
import { accountLogin } from '../helpers/broker.js';
import { useEmulator } from '../helpers/emulator.js';
import { bytes, fuzzCases, fuzzSeed, int, pick, runCase, runCases, stillServes, type FuzzCase, type Random } from '../helpers/fuzz.js';

const SEED = fuzzSeed(0x5eed_0005);
const CASES = fuzzCases(3_000);
const CONCURRENCY = 32;

// ---------------------------------------------------------------- encoding, by hand: nothing here validates

function varInt(n: number): Buffer {
  const out: number[] = [];
  do {
    const digit = n % 128;
    n = Math.floor(n / 128);
    out.push(n > 0 ? digit | 0x80 : digit);
  } while (n > 0 && out.length < 4);
  return Buffer.from(out);
}

function u16(n: number): Buffer {
  const out = Buffer.alloc(2);
  out.writeUInt16BE(n & 0xffff);
  return out;
}

function u32(n: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(n >>> 0);
  return out;
}

/** An MQTT string or binary: two-byte length, then the bytes. */
function lengthPrefixed(data: Buffer | string): Buffer {
  const body = typeof data === 'string' ? Buffer.from(data) : data;
  return Buffer.concat([u16(body.length), body]);
}

function packet(first: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([first]), varInt(body.length), body]);
}

// ---------------------------------------------------------------- properties

type Kind = 'byte' | 'int16' | 'int32' | 'var' | 'string' | 'binary' | 'pair';

/** Every MQTT 5 property id, with its type (MQTT 5.0 §2.2.2.2). */
const PROPERTIES: ReadonlyArray<readonly [number, Kind]> = [
  [0x01, 'byte'], [0x02, 'int32'], [0x03, 'string'], [0x08, 'string'], [0x09, 'binary'], [0x0b, 'var'], [0x11, 'int32'],
  [0x12, 'string'], [0x13, 'int16'], [0x15, 'string'], [0x16, 'binary'], [0x17, 'byte'], [0x18, 'int32'], [0x19, 'byte'],
  [0x1a, 'string'], [0x1c, 'string'], [0x1f, 'string'], [0x21, 'int16'], [0x22, 'int16'], [0x23, 'int16'], [0x24, 'byte'],
  [0x25, 'byte'], [0x26, 'pair'], [0x27, 'int32'], [0x28, 'byte'], [0x29, 'byte'], [0x2a, 'byte'],
];
/** Ids no property has. */
const NOT_PROPERTIES = [0x00, 0x04, 0x0a, 0x14, 0x2b, 0x7f, 0x80, 0xff];
const STRINGS = ['demo/x', 'demo/+', 'demo/#', '', 'constructor', '__proto__', 'demo/p2p/GID_v5fuzz@@@0', '$SYS/x', 'ü', '\u0000', 'x'.repeat(300)];

/** A value of `kind`, well-formed. */
function value(r: Random, kind: Kind): Buffer {
  switch (kind) {
    case 'byte':
      return Buffer.from([pick(r, [0, 1, 1, 2, 0xff])]);
    case 'int16':
      return u16(pick(r, [0, 1, 2, 32, 33, 0xffff, int(r, 0x10000)]));
    case 'int32':
      return u32(pick(r, [0, 1, 20, 100, 0xffffffff, int(r, 2 ** 32)]));
    case 'var':
      return varInt(pick(r, [0, 1, 127, 128, 268_435_455, int(r, 268_435_456)]));
    case 'string':
      return lengthPrefixed(pick(r, STRINGS));
    case 'binary':
      return lengthPrefixed(bytes(r, int(r, 20)));
    case 'pair':
      return Buffer.concat([lengthPrefixed(pick(r, STRINGS)), lengthPrefixed(pick(r, STRINGS))]);
  }
}

/** The properties each packet a client sends may carry (MQTT 5.0 §3.x.2.x): a fuzzed block mostly uses these. */
const OWN: Readonly<Record<string, readonly number[]>> = {
  connect: [0x11, 0x21, 0x27, 0x22, 0x19, 0x17, 0x26, 0x15, 0x16],
  publish: [0x01, 0x02, 0x03, 0x08, 0x09, 0x23, 0x26],
  subscribe: [0x0b, 0x26],
  unsubscribe: [0x26],
  ack: [0x1f, 0x26],
  disconnect: [0x11, 0x1f, 0x26, 0x1c],
  auth: [0x15, 0x16, 0x1f, 0x26],
};

/** One property: mostly one of the packet's own, right; at times of another packet, of another type, cut short, or an id that does not exist. */
function property(r: Random, own: readonly number[]): Buffer {
  const roll = int(r, 20);
  if (roll === 0) return Buffer.concat([Buffer.from([pick(r, NOT_PROPERTIES)]), bytes(r, int(r, 6))]);
  const ownId = pick(r, own);
  const [id, kind] = r() < 0.7 ? (PROPERTIES.find(([p]) => p === ownId) as readonly [number, Kind]) : pick(r, PROPERTIES);
  const kinds: Kind[] = ['byte', 'int16', 'int32', 'var', 'string', 'binary', 'pair'];
  const encoded = roll === 1 ? value(r, pick(r, kinds)) : value(r, kind);
  // Cut short: the value's declared length (or width) says more than follows.
  const cut = roll === 2 || roll === 3 ? encoded.subarray(0, int(r, encoded.length)) : encoded;
  return Buffer.concat([Buffer.from([id]), cut]);
}

/** A property block: its length (mostly right, at times off either way), then properties, some given twice. */
function propertyBlock(r: Random, own: readonly number[]): Buffer {
  if (r() < 0.1) return varInt(0);
  const props: Buffer[] = [];
  for (let i = 0; i < 1 + int(r, 4); i++) {
    const one = property(r, own);
    props.push(one);
    if (r() < 0.25) props.push(r() < 0.5 ? one : property(r, own));
  }
  const body = Buffer.concat(props);
  const length = r() < 0.8 ? body.length : pick(r, [body.length + 1 + int(r, 10), Math.max(0, body.length - 1 - int(r, 3)), 268_435_455]);
  return Buffer.concat([varInt(length), body]);
}

// ---------------------------------------------------------------- packets of a logged-in MQTT 5 client

const TOPICS = ['demo/x', 'demo/x/y', 'sim/1', 'demo/p2p/GID_v5fuzz@@@1', '', 'demo/#', 'other/x', '$SYS/x', 'constructor', '__proto__'];

function v5Packet(r: Random): Buffer {
  const id = u16(pick(r, [0, 1, 2, int(r, 65_536)]));
  const props = (own: readonly number[]): Buffer => propertyBlock(r, own);
  switch (int(r, 11)) {
    case 0:
    case 1: {
      const qos = pick(r, [0, 1, 1, 2, 3]);
      const first = 0x30 | (r() < 0.1 ? 0x08 : 0) | (qos << 1) | (r() < 0.2 ? 1 : 0);
      return packet(first, lengthPrefixed(pick(r, TOPICS)), qos > 0 ? id : Buffer.alloc(0), props(OWN['publish'] ?? []), bytes(r, int(r, 40)));
    }
    case 2: {
      const filters = Array.from({ length: 1 + int(r, 3) }, () => Buffer.concat([lengthPrefixed(pick(r, TOPICS)), Buffer.from([pick(r, [0, 1, 2, 0x04 | 1, 0x08, 0x20 | 1, 0xc0])])]));
      return packet(0x82, id, props(OWN['subscribe'] ?? []), ...filters);
    }
    case 3:
      return packet(0xa2, id, props(OWN['unsubscribe'] ?? []), ...Array.from({ length: 1 + int(r, 2) }, () => lengthPrefixed(pick(r, TOPICS))));
    case 4:
      return packet(0x40, id, Buffer.from([pick(r, [0, 0x10, 0x80, 0x97])]), props(OWN['ack'] ?? []));
    case 5:
      return packet(0x50, id, Buffer.from([pick(r, [0, 0x10, 0x80])]), props(OWN['ack'] ?? []));
    case 6:
      return packet(0x62, id, Buffer.from([pick(r, [0, 0x92])]), props(OWN['ack'] ?? []));
    case 7:
      return packet(0x70, id, Buffer.from([pick(r, [0, 0x92])]), props(OWN['ack'] ?? []));
    case 8:
      return Buffer.from([0xc0, 0x00]);
    case 9:
      return packet(0xe0, Buffer.from([pick(r, [0, 0x04, 0x80])]), props(OWN['disconnect'] ?? []));
    default:
      return packet(0xf0, Buffer.from([pick(r, [0, 0x18, 0x19])]), props(OWN['auth'] ?? []));
  }
}

/** An MQTT 5 CONNECT of `login`: clean start, keep alive 60, and (at times) a fuzzed property block. */
function connect(r: Random, login: MqttCredentials, fuzzed: boolean): Buffer {
  const properties = fuzzed ? propertyBlock(r, OWN['connect'] ?? []) : Buffer.concat([varInt(5), Buffer.from([0x11]), u32(r() < 0.5 ? 0 : 60)]);
  return packet(0x10, lengthPrefixed('MQTT'), Buffer.from([5, 0xc2]), u16(60), properties, lengthPrefixed(login.clientId), lengthPrefixed(login.username), lengthPrefixed(login.password));
}

function fuzzCase(r: Random, logins: readonly MqttCredentials[]): FuzzCase {
  const login = pick(r, logins);
  const packets = Array.from({ length: 1 + int(r, 4) }, () => v5Packet(r));
  // Now and then a packet cut short at the end, so that the broker waits for the rest of it.
  if (r() < 0.05) packets.push(v5Packet(r).subarray(0, 1 + int(r, 8)));
  return { login: connect(r, login, r() < 0.1), bytes: Buffer.concat(packets) };
}

describe(`fuzz: authenticated MQTT 5 packets and their properties (seed ${SEED}, ${CASES} cases)`, () => {
  const strict = useEmulator({ wsPort: false, maxQueuedBytes: 1024 * 1024 });
  const lenient = useEmulator({ wsPort: false, lenient: true });

  it('never crashes or hangs, answers 0x81 / 0x82 to what it refuses, and serves a well-behaved client afterwards', async () => {
    const emulators = [strict(), lenient()];
    const logins = emulators.map((e) => Array.from({ length: 8 }, (_, i) => accountLogin(e, `GID_v5fuzz@@@${i}`)));
    const outcomes = await runCases(SEED, CASES, CONCURRENCY, (i, r) => {
      const which = i % 2;
      return runCase((emulators[which] as Emulator).mqttUrl, fuzzCase(r, logins[which] as MqttCredentials[]), r);
    });
    const loggedIn = outcomes.filter((o) => o.loggedIn);
    const reasons = (code: number): number => outcomes.filter((o) => o.disconnect === code).length;
    // The fuzz reached logged-in sessions, and both kinds of refusal came up; some sessions read it all and lived.
    expect(loggedIn.length).toBeGreaterThan(CASES * 0.8);
    expect(reasons(0x81)).toBeGreaterThan(CASES / 20);
    expect(reasons(0x82)).toBeGreaterThan(CASES / 200);
    expect(outcomes.filter((o) => o.pinged).length).toBeGreaterThan(CASES / 50);
    for (const [i, e] of emulators.entries()) {
      await stillServes(e, `GID_v5fuzz@@@good-${i}`);
      expect(e.stats().mqtt.rules['malformedPacket']).toBeGreaterThan(0);
    }
    // eslint-disable-next-line no-console -- the numbers a long run is reported with
    console.log(`MQTT 5 fuzz, seed ${SEED}: ${CASES} cases, ${loggedIn.length} logged in, ${reasons(0x81)} DISCONNECT 0x81, ${reasons(0x82)} DISCONNECT 0x82, ${outcomes.filter((o) => o.pinged).length} read to the end`);
  }, Math.max(60_000, CASES * 20));
});
