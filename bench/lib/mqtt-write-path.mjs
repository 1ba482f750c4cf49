// How much of mqtt.js's CPU per QoS 1 publish is its write path (BENCHMARKS.md, "Stop 32", issue 18): <devices> bare
// mqtt.js clients (protocolVersion 4) connected to <brokerUrl> (bench/lib/hmac-broker.mjs prints one), <messages> QoS 1
// publishes in batches of 1,000 spread over them as gateway-run.mjs sends them, CPU per 10,000 publishes. <mode>:
// `mqtt` (client.publishAsync, the gateway bench's baseline), `mqttnr` (the same with reschedulePings: false),
// `mqttns` (the same with an outgoingStore that keeps nothing), `raw` (the PUBLISH encoded into one buffer and written
// to client.stream, its packet id from the client's messageIdProvider, its PUBACK taken from 'packetreceive'). An
// experiment, not part of `npm run bench`: run the modes alternately, in the same minutes.
// Usage: node --expose-gc mqtt-write-path.mjs <mode> <brokerUrl> <devices> <messages>
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import { credentialsFor } from './hmac-broker.mjs';
const [mode, url, devicesText, messagesText] = process.argv.slice(2);
const devices = Number(devicesText), messages = Number(messagesText);
const ids = Array.from({ length: devices }, (_, i) => `GID_bench@@@gw-${i}`);
const payload = Buffer.alloc(64, 'x');
const cpuMs = () => { const { user, system } = process.cpuUsage(); return (user + system) / 1000; };
import { Readable } from 'node:stream';
class NullStore { put(p, cb) { cb?.(); return this; } del(p, cb) { cb?.(null, p); return this; } get(p, cb) { cb?.(new Error('missing packet')); return this; } createStream() { return Readable.from([]); } close(cb) { cb?.(); } }
const clients = [];
for (let start = 0; start < devices; start += 500) {
  await Promise.all(ids.slice(start, start + 500).map((clientId) => {
    const client = mqtt.connect(url, { ...credentialsFor(clientId), protocolVersion: 4, keepalive: 90, reconnectPeriod: 0, connectTimeout: 30000, ...(mode === 'mqttnr' ? { reschedulePings: false } : {}), ...(mode === 'mqttns' ? { outgoingStore: new NullStore() } : {}) });
    clients.push(client);
    return new Promise((resolve, reject) => { client.once('connect', resolve); client.once('error', reject); });
  }));
}
const topic = Buffer.from('demo/bench');
if (mode === 'raw') for (const c of clients) { c.pending = new Map(); c.on('packetreceive', (p) => { if (p.cmd === 'puback') { const r = c.pending.get(p.messageId); if (r) { c.pending.delete(p.messageId); c.messageIdProvider.deallocate(p.messageId); r(); } } }); }
function rawPublish(c) {
  const id = c.messageIdProvider.allocate();
  const rl = 2 + topic.length + 2 + payload.length;
  const b = Buffer.allocUnsafe(2 + rl); let o = 0;
  // A 64-byte payload: the remaining length fits in one byte.
  b[o++] = 0x32; b[o++] = rl; b.writeUInt16BE(topic.length, o); o += 2; topic.copy(b, o); o += topic.length; b.writeUInt16BE(id, o); o += 2; payload.copy(b, o);
  return new Promise((resolve) => { c.pending.set(id, resolve); c.stream.write(b); });
}
globalThis.gc?.(); await sleep(300);
const before = cpuMs(); const t = performance.now();
for (let start = 0; start < messages; start += 1000) {
  await Promise.all(Array.from({ length: Math.min(1000, messages - start) }, (_, k) => { const c = clients[(start + k) % devices]; return mode === 'raw' ? rawPublish(c) : c.publishAsync('demo/bench', payload, { qos: 1 }); }));
}
const cpu = cpuMs() - before;
await Promise.all(clients.map((c) => c.endAsync().catch(() => undefined)));
console.log(JSON.stringify({ mode, devices, messages, publishCpuMsPer10k: Math.round(cpu * 10000 / messages), ms: Math.round(performance.now() - t) }));
