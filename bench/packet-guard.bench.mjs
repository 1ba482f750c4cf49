// What the connector's packet guard (dist/connector/packet-guard.js) adds to every byte a broker sends: the time its
// framer takes over a stream of packets, against the time mqtt-packet's parser (what mqtt.js runs on the same bytes
// anyway) takes over them, same process, same bytes, interleaved rounds. Two streams: small QoS 1 PUBLISHes (100-byte
// payloads, where per-packet work dominates) and 64 KB ones (the service's largest), cut in 64 KB chunks as a socket
// delivers them. Target: the guard costs at most 10% of the parse (ratio <= 0.10). BENCH_GUARD_MB and BENCH_ROUNDS
// override.
import mqttPacket from 'mqtt-packet';
import { PacketFramer } from '../dist/connector/packet-guard.js';
import { median, verdict } from './lib/child.mjs';

const MB = Number(process.env.BENCH_GUARD_MB ?? 64);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const CHUNK = 64 * 1024;

function stream(payloadBytes) {
  const one = mqttPacket.generate({ cmd: 'publish', topic: 'bench/guard/x', payload: Buffer.alloc(payloadBytes, 0x61), qos: 1, messageId: 7, retain: false, dup: false });
  const bytes = Buffer.concat(Array.from({ length: Math.ceil((MB * 2 ** 20) / one.length) }, () => one));
  const chunks = [];
  for (let i = 0; i < bytes.length; i += CHUNK) chunks.push(bytes.subarray(i, i + CHUNK));
  return { chunks, packets: bytes.length / one.length };
}

function guardMs(chunks) {
  const framer = new PacketFramer(1024 * 1024);
  const start = performance.now();
  for (const chunk of chunks) if (framer.inspect(chunk)) throw new Error('the guard refused a well-formed stream');
  return performance.now() - start;
}

function parseMs(chunks, packets) {
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  let seen = 0;
  parser.on('packet', () => (seen += 1));
  const start = performance.now();
  for (const chunk of chunks) parser.parse(chunk);
  const ms = performance.now() - start;
  if (seen !== packets) throw new Error(`parsed ${seen} of ${packets} packets`);
  return ms;
}

for (const [name, payload] of [['100-byte PUBLISHes', 100], ['64 KB PUBLISHes', 64 * 1024 - 20]]) {
  const { chunks, packets } = stream(payload);
  guardMs(chunks);
  parseMs(chunks, packets); // warm both
  const guard = [];
  const parse = [];
  for (let round = 0; round < ROUNDS; round++) {
    guard.push(guardMs(chunks));
    parse.push(parseMs(chunks, packets));
  }
  const g = median(guard);
  const p = median(parse);
  console.log(`${name}: ${MB} MB, ${Math.round(packets)} packets: guard ${g.toFixed(1)} ms, mqtt-packet parse ${p.toFixed(1)} ms (median of ${ROUNDS})`);
  verdict(`guard / parse, ${name}`, g / p, 0.1, false);
}
