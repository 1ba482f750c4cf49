// What reading the emulator's data-dir journal (state.journal) costs when it is damaged: the reader looks for a whole
// record after the first bad one, at every byte, and a CRC over a long body at many of them would make that quadratic.
// Journals of several sizes, built with the real encoder (writes of 8 changes), whole and damaged in the ways a disk
// or a power cut damages them; each read (the real readJournal, as the emulator's start does) is timed, best of 3, and
// compared to reading the whole journal of the same size, in the same run.
//   BENCH_JOURNAL_MIB                sizes in MiB (default 1,4,16)
//   BENCH_JOURNAL_BASELINE           another build's dist/ (e.g. main's): its readFrames on the same damage, the
//                                    journal as version 1 (records without their write), which that build reads
//   BENCH_JOURNAL_BASELINE_MAX_MIB   sizes up to this for the baseline (default 1: main's scan of the "plausible
//                                    lengths" tail is quadratic, 4 MiB took minutes)
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { readJournal } from '../dist/emulator/data-dir-format.js';
import { encodeFrame, encodeWrite } from '../dist/emulator/journal.js';

const SIZES = (process.env.BENCH_JOURNAL_MIB ?? '1,4,16').split(',').map(Number);
const BASELINE = process.env.BENCH_JOURNAL_BASELINE;
const BASELINE_MAX = Number(process.env.BENCH_JOURNAL_BASELINE_MAX_MIB ?? 1);
const baseline = BASELINE ? await import(pathToFileURL(join(resolve(BASELINE), 'emulator', 'journal.js')).href) : undefined;

const change = (i) => Buffer.from(JSON.stringify({ op: 'credential', record: { ClientId: `GID_bench@@@dev-${i}`, InstanceId: 'mqtt-bench', DeviceAccessKeyId: randomBytes(12).toString('hex'), DeviceAccessKeySecret: randomBytes(20).toString('base64'), CreateTime: 1_700_000_000_000 + i, UpdateTime: 1_700_000_000_000 + i } }));
const header = (version) => encodeFrame(JSON.stringify({ kind: 'apsaramq-device-emulator-journal', version, snapshot: '0'.repeat(64) }));

/** A journal of `mib` MiB (version 2) and the same changes as version 1 wrote them, byte for byte apart from framing. */
function journals(mib) {
  const v2 = [header(2)];
  const v1 = [header(1)];
  let length = v2[0].length;
  for (let i = 0; length < mib * 2 ** 20; ) {
    const payloads = Array.from({ length: 8 }, () => change(i++));
    const write = encodeWrite(payloads, length);
    v2.push(write);
    v1.push(...payloads.map((p) => encodeFrame(p)));
    length += write.length;
  }
  return { v2: Buffer.concat(v2), v1: Buffer.concat(v1) };
}

/** Damage as a disk or a power cut leaves it, at byte 200 and on (the first write after the header). */
const LAYOUTS = [
  ['whole', (b) => b],
  ['a byte flipped at 300 (whole records after it)', (b) => (b[300] ^= 0x5a, b)],
  ['bytes 150 to 4096 zeros (whole records after them)', (b) => b.fill(0, 150, 4096)],
  ['zeros from byte 200 to the end', (b) => b.fill(0, 200)],
  ['garbage from byte 200 to the end', (b) => (randomBytes(b.length - 200).copy(b, 200), b)],
  ['plausible lengths from byte 200 (00 00 0f 00 ...)', (b) => { for (let k = 200; k < b.length; k++) b[k] = k % 4 === 2 ? 0x0f : 0; return b; }],
];

function best(read, bytes) {
  let ms = Infinity;
  let tail;
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    tail = read(bytes).tail;
    ms = Math.min(ms, performance.now() - started);
  }
  return { ms, tail };
}

console.log(`readJournal of a damaged journal vs the whole one of the same size${BASELINE ? `; baseline ${BASELINE} (its readFrames, version 1 journal, sizes up to ${BASELINE_MAX} MiB)` : ''}`);
for (const mib of SIZES) {
  const { v2, v1 } = journals(mib);
  let whole;
  for (const [name, damage] of LAYOUTS) {
    const { ms, tail } = best((bytes) => readJournal(bytes, 'state.journal').frames, damage(Buffer.from(v2)));
    whole ??= ms;
    let line = `${String(mib).padStart(3)} MiB  ${name.padEnd(52)} ${ms.toFixed(1).padStart(8)} ms  ${(ms / whole).toFixed(1).padStart(6)}x  (${tail ?? 'whole'})`;
    if (baseline && mib <= BASELINE_MAX) {
      const base = best((bytes) => baseline.readFrames(bytes), damage(Buffer.from(v1)));
      line += `; baseline ${base.ms.toFixed(1)} ms (${base.tail ?? 'whole'})`;
    }
    console.log(line);
  }
}
