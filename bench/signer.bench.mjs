// Throughput of the library's DeviceCredential signer (dist/, Node's native HMAC) against crypto-js, the library
// Alibaba's own Node demo signs with. Both produce the same username and Base64 HMAC-SHA1 password.
// Target: >= 5x. BENCH_SIGNER_OPS and BENCH_ROUNDS override.
import CryptoJS from 'crypto-js';
import { hmacPassword, signDeviceCredential } from '../dist/signer/mqtt.js';
import { median, verdict } from './lib/child.mjs';

const OPS = Number(process.env.BENCH_SIGNER_OPS ?? 100_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const INSTANCE_ID = 'mqtt-cn-bench';
const SECRET = 'DeviceAccessKeySecret-0123456789abcdef';
const ids = Array.from({ length: 1_000 }, (_, i) => `GID_bench@@@device-${i}`);
const credentials = ids.map((clientId) => ({ clientId, instanceId: INSTANCE_ID, deviceAccessKeyId: `DC.${clientId.slice(-8)}`, deviceAccessKeySecret: SECRET }));

// What a peer SDK does per device with crypto-js (note its argument order: message first, key second).
function cryptoJsSign(c) {
  return {
    username: `DeviceCredential|${c.deviceAccessKeyId}|${c.instanceId}`,
    password: CryptoJS.HmacSHA1(c.clientId, c.deviceAccessKeySecret).toString(CryptoJS.enc.Base64),
    clientId: c.clientId,
  };
}

// Same answers, or the comparison means nothing.
for (const c of credentials.slice(0, 10)) {
  if (signDeviceCredential(c).password !== cryptoJsSign(c).password) throw new Error('crypto-js and the signer disagree');
}
if (hmacPassword('XXXXX', 'GID_test@@@0001') !== 'bGdOc9YXqL/kM2hYBkXR0I2IPOE=') throw new Error('known-answer check failed');

function opsPerSec(sign) {
  let sink = 0;
  const start = performance.now();
  for (let i = 0; i < OPS; i++) sink += sign(credentials[i % credentials.length]).password.length;
  const seconds = (performance.now() - start) / 1_000;
  if (sink === 0) throw new Error('unreachable');
  return OPS / seconds;
}

// Warm both up so neither is measured while still being compiled.
opsPerSec(signDeviceCredential);
opsPerSec(cryptoJsSign);
const ours = [];
const theirs = [];
for (let round = 0; round < ROUNDS; round++) {
  ours.push(opsPerSec(signDeviceCredential));
  theirs.push(opsPerSec(cryptoJsSign));
}
const fmt = (n) => `${Math.round(n).toLocaleString('en-US')}/s`;
console.log(`signDeviceCredential (dist): ${fmt(median(ours))}; crypto-js HmacSHA1 + Base64: ${fmt(median(theirs))} (median of ${ROUNDS} x ${OPS} signatures)`);
verdict('signer / crypto-js throughput', median(ours) / median(theirs), 5);
