/**
 * The house pattern of the broker's seeded fuzzes (test/integration/emulator-mqtt-fuzz.test.ts and
 * emulator-mqtt5-fuzz.test.ts): a small seeded PRNG, one case per socket, workers that take the next case as soon as
 * theirs is over, and the well-behaved client that must still be served afterwards. APSARAMQ_FUZZ_SEED replays a
 * run; APSARAMQ_FUZZ_CASES sets the number of cases (`npm run fuzz` runs 10,000 of each). Also the connector's fuzzing
 * fake broker's tools: MQTT's variable byte integer, and a check that nothing escaped as an uncaught exception.
 */
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { expect, onTestFinished } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import { accountLogin } from './broker.js';
import { connectMqtt, connectWithInbox } from './emulator.js';
import { hostPort } from './raw-mqtt.js';

/** The run's seed: APSARAMQ_FUZZ_SEED, else `fallback` (each fuzz its own). */
export function fuzzSeed(fallback: number): number {
  return Number(process.env['APSARAMQ_FUZZ_SEED'] ?? fallback);
}

/** How many cases: APSARAMQ_FUZZ_CASES, else `fallback` (what CI runs in seconds). */
export function fuzzCases(fallback: number): number {
  const cases = Number(process.env['APSARAMQ_FUZZ_CASES'] ?? fallback);
  if (!Number.isSafeInteger(cases) || cases < 1) throw new Error(`APSARAMQ_FUZZ_CASES must be a whole number of 1 or more, not ${process.env['APSARAMQ_FUZZ_CASES']}`);
  return cases;
}

/** Fail the current test if an uncaught exception happens before it finishes (vitest would report it too, after the fact). */
export function noUncaughtException(): void {
  const seen: unknown[] = [];
  const record = (error: unknown): void => {
    seen.push(error);
  };
  process.on('uncaughtException', record);
  onTestFinished(() => {
    process.off('uncaughtException', record);
    expect(seen).toEqual([]);
  });
}

/** mulberry32: a small seeded PRNG, so that a failing run can be replayed exactly. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

export type Random = ReturnType<typeof prng>;
export const int = (r: Random, max: number): number => Math.floor(r() * max);
export const pick = <T>(r: Random, items: readonly T[]): T => items[int(r, items.length)] as T;
export function bytes(r: Random, n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = int(r, 256);
  return out;
}

/** One case: a valid CONNECT to send first (and wait for its answer), if any, then the fuzz. */
export interface FuzzCase {
  readonly login?: Buffer;
  readonly bytes: Buffer;
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
export interface Outcome {
  /** The CONNECT was accepted: the fuzz went to a logged-in session. */
  readonly loggedIn: boolean;
  /** The broker answered the PINGREQ after the fuzz: it read all of it and kept the session. */
  readonly pinged: boolean;
  /** The reason code of the DISCONNECT the broker sent after the login (MQTT 5), if it sent one. */
  readonly disconnect: number | undefined;
}

/** The reason code of the first DISCONNECT in what an MQTT 5 broker sent, if its bytes parse that far. */
function disconnectIn(received: Buffer): number | undefined {
  const parser = mqttPacket.parser({ protocolVersion: 5 });
  let found: number | undefined;
  parser.on('packet', (packet: Packet) => {
    if (packet.cmd === 'disconnect' && found === undefined) found = packet.reasonCode ?? 0;
  });
  parser.on('error', () => undefined);
  parser.parse(received);
  return found;
}

/**
 * Send one case: the CONNECT (waiting for its CONNACK, so that what follows is read by a logged-in session), the
 * fuzz split at random places as a network would, and after a login a PINGREQ; end our side, and resolve once the
 * broker has closed the connection too.
 */
export async function runCase(url: string, fuzz: FuzzCase, r: Random): Promise<Outcome> {
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
  return { loggedIn, pinged, disconnect: loggedIn ? disconnectIn(received) : undefined };
}

/**
 * Run `cases` cases, CONCURRENCY at a time. Each case draws from its own generator, seeded in order from the run's:
 * the cases are the same whatever order the sockets finish in.
 */
export async function runCases(seed: number, cases: number, concurrency: number, one: (i: number, r: Random) => Promise<Outcome>): Promise<Outcome[]> {
  const r = prng(seed);
  const seeds = Array.from({ length: cases }, () => int(r, 2 ** 32));
  const outcomes: Outcome[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < cases; i = next++) outcomes.push(await one(i, prng(seeds[i] as number)));
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return outcomes;
}

/** The well-behaved client after a run: logs in, subscribes, publishes and receives its message; the OpenAPI answers. */
export async function stillServes(e: Emulator, clientId: string): Promise<void> {
  const client = await connectWithInbox(e.mqttUrl, accountLogin(e, clientId));
  await client.client.subscribeAsync('demo/after-fuzz', { qos: 1 });
  const publisher = await connectMqtt(e.mqttUrl, accountLogin(e, `${clientId}-pub`), { protocolVersion: 5 });
  await publisher.publishAsync('demo/after-fuzz', 'served', { qos: 1 });
  expect(await client.next()).toEqual(['demo/after-fuzz', 'served']);
  await Promise.all([client.client.endAsync(), publisher.endAsync()]);
  expect((await fetch(new URL('/_emulator/stats', e.apiEndpoint))).status).toBe(200);
}

/** MQTT's variable byte integer (a remaining length, a property length). */
export function varint(value: number): Buffer {
  const out: number[] = [];
  let left = value;
  do {
    let byte = left % 128;
    left = Math.floor(left / 128);
    if (left > 0) byte |= 0x80;
    out.push(byte);
  } while (left > 0);
  return Buffer.from(out);
}
