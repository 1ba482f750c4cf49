/**
 * Latency histograms that can be written into a report and added up again without loss: HdrHistogram (the
 * `hdr-histogram-js` port), encoded in HdrHistogram's standard compressed Base64 form, so that the report of a whole
 * fleet is the exact sum of its shards' and any HdrHistogram tool (Java, Go, Rust, Python) can read them.
 *
 * Values are microseconds. Percentiles are HdrHistogram's (the highest value equivalent to the sample at that rank,
 * as `node:perf_hooks` histograms report them), at 3 significant figures.
 */
import { inflateSync } from 'node:zlib';
import { type Histogram, build, decodeFromCompressedBase64, encodeIntoCompressedBase64 } from 'hdr-histogram-js';
import type { LatencySummary } from './metrics.js';

/** Lowest and highest latency a histogram tracks, in microseconds: 1 µs to one hour. */
export const HISTOGRAM_RANGE_US = Object.freeze({ lowest: 1, highest: 3_600_000_000, figures: 3 as const });

/** A new, empty latency histogram (64-bit counts, so a long run at a high rate cannot overflow a bucket). */
export function newLatencyHistogram(): Histogram {
  return build({
    lowestDiscernibleValue: HISTOGRAM_RANGE_US.lowest,
    highestTrackableValue: HISTOGRAM_RANGE_US.highest,
    numberOfSignificantValueDigits: HISTOGRAM_RANGE_US.figures,
    bitBucketSize: 64,
    useWebAssembly: false,
  });
}

/** Record a latency in milliseconds (kept at microsecond resolution, clamped into the tracked range). */
export function recordMs(histogram: Histogram, latencyMs: number): void {
  const micros = Math.round(latencyMs * 1_000);
  histogram.recordValue(Math.min(HISTOGRAM_RANGE_US.highest, Math.max(HISTOGRAM_RANGE_US.lowest, micros)));
}

/** The histogram in HdrHistogram's compressed Base64 encoding (V2, the `HISTFAAA…` form). */
export function encodeHistogram(histogram: Histogram): string {
  return encodeIntoCompressedBase64(histogram);
}

/** Buckets of a latency histogram (1 µs to 1 h at 3 significant figures): 23,552. */
const BUCKETS = (newLatencyHistogram() as unknown as { countsArrayLength: number }).countsArrayLength;

/**
 * Longest encoding of a latency histogram: every bucket holding a large count encodes to about 137,000 characters.
 * What a report may hold (and what is inflated) stays within a few times that.
 */
export const MAX_HISTOGRAM_CHARS = 256 * 1024;

/** HdrHistogram's V2 cookies (the low bits of the word-size byte vary). */
const COMPRESSED_COOKIE = 0x1c849304;
const COOKIE = 0x1c849303;
/** The V2 header: cookie, payload length, normalizing offset, significant figures, lowest, highest, ratio. */
const HEADER_BYTES = 40;

/**
 * Why an encoding is not one of the simulator's latency histograms, or `undefined` when it is one. Read before the
 * library decodes it, since it trusts what it reads: a short string can inflate without end (the library's inflate
 * has no bound), declare a range that allocates gigabytes, or run its decoder over billions of empty buckets. Here
 * the inflated size is bounded, the range must be the simulator's own (1 µs to 1 h, 3 figures) and the counts must
 * fit its buckets.
 */
export function histogramEncodingProblem(encoded: string): string | undefined {
  if (encoded.length > MAX_HISTOGRAM_CHARS) return `${encoded.length} characters, more than ${MAX_HISTOGRAM_CHARS}`;
  const bytes = Buffer.from(encoded, 'base64');
  if (bytes.length < 8 || (bytes.readInt32BE(0) & ~0xf0) !== COMPRESSED_COOKIE) return 'not a compressed V2 encoding';
  let raw: Buffer;
  try {
    // A full histogram is HEADER_BYTES + 9 bytes per bucket at the most.
    raw = inflateSync(bytes.subarray(8, 8 + Math.max(0, bytes.readInt32BE(4))), { maxOutputLength: HEADER_BYTES + 9 * BUCKETS });
  } catch {
    return 'its counts do not inflate, or inflate past the size of a full histogram';
  }
  if (raw.length < HEADER_BYTES || (raw.readInt32BE(0) & ~0xf0) !== COOKIE) return 'no V2 header';
  const figures = raw.readInt32BE(12);
  const lowest = raw.readBigInt64BE(16);
  const highest = raw.readBigInt64BE(24);
  if (figures !== HISTOGRAM_RANGE_US.figures || lowest !== BigInt(HISTOGRAM_RANGE_US.lowest) || highest !== BigInt(HISTOGRAM_RANGE_US.highest)) {
    return `it covers ${lowest} to ${highest} at ${figures} figures, not ${HISTOGRAM_RANGE_US.lowest} to ${HISTOGRAM_RANGE_US.highest} µs at ${HISTOGRAM_RANGE_US.figures}`;
  }
  const end = HEADER_BYTES + raw.readInt32BE(4);
  if (end < HEADER_BYTES || end > raw.length) return 'its payload length is not the length of its counts';
  // ZigZag LEB128 words (the 9th byte whole): a count fills one bucket, a negative word skips that many empty ones.
  let bucket = 0n;
  for (let at = HEADER_BYTES; at < end; ) {
    let word = 0n;
    for (let k = 0; k < 9; k++) {
      const byte = BigInt(raw[at++] ?? 0);
      word |= (k === 8 ? byte : byte & 0x7fn) << BigInt(7 * k);
      if (k === 8 || (byte & 0x80n) === 0n) break;
    }
    const value = (word >> 1n) ^ -(word & 1n);
    bucket += value < 0n ? -value : 1n;
    if (bucket > BigInt(BUCKETS)) return `its counts fill more than its ${BUCKETS} buckets`;
  }
  return undefined;
}

/** A histogram from its compressed Base64 encoding; throws on anything that is not one. */
export function decodeHistogram(encoded: string): Histogram {
  const decoded = decodeFromCompressedBase64(encoded, 64, false);
  // Decoded histograms keep their own range; one like ours keeps every sum exact.
  const histogram = newLatencyHistogram();
  histogram.add(decoded);
  return histogram;
}

/** The sum of several histograms: exactly the histogram of all their samples. */
export function addHistograms(histograms: readonly Histogram[]): Histogram {
  const sum = newLatencyHistogram();
  for (const h of histograms) sum.add(h);
  return sum;
}

function toMs(micros: number): number {
  return Math.round(micros) / 1_000;
}

/** p50/p95/p99/max in ms; all `null` when nothing was recorded. */
export function summarizeHistogram(histogram: Histogram): LatencySummary {
  if (histogram.totalCount === 0) return { p50: null, p95: null, p99: null, max: null };
  return {
    p50: toMs(histogram.getValueAtPercentile(50)),
    p95: toMs(histogram.getValueAtPercentile(95)),
    p99: toMs(histogram.getValueAtPercentile(99)),
    // The top of the largest sample's bucket, as perf_hooks reports `max`: the same after encoding and merging.
    max: toMs(histogram.getValueAtPercentile(100)),
  };
}

/** One row of a percentile table. */
export interface PercentileRow {
  /** 0 to 100. */
  percentile: number;
  /** Latency at that percentile, ms. */
  valueMs: number;
}

/** The percentiles people read (p50 … p99.99, max) of a histogram; empty when it has no sample. */
export function percentileTable(histogram: Histogram): PercentileRow[] {
  if (histogram.totalCount === 0) return [];
  return [50, 75, 90, 95, 99, 99.9, 99.99, 100].map((percentile) => ({ percentile, valueMs: toMs(histogram.getValueAtPercentile(percentile)) }));
}

/**
 * The percentile distribution for a chart: x in "nines" (x = -log10(1 - p/100), so 1 is p90, 2 is p99, 3 is p99.9),
 * y the latency in ms, in steps of 1/20 of a nine up to where the sample count still resolves, then the maximum.
 */
export function percentileCurve(histogram: Histogram): { nines: number[]; valueMs: number[] } {
  const nines: number[] = [];
  const valueMs: number[] = [];
  const count = histogram.totalCount;
  if (count === 0) return { nines, valueMs };
  // Beyond log10(count) nines every point is the maximum.
  const top = Math.min(6, Math.log10(Math.max(count, 1)));
  for (let step = 0; step / 20 <= top; step++) {
    const x = step / 20;
    nines.push(x);
    valueMs.push(toMs(histogram.getValueAtPercentile(100 * (1 - 10 ** -x))));
  }
  nines.push(Math.max(top, nines.at(-1) ?? 0) + 0.05);
  valueMs.push(toMs(histogram.getValueAtPercentile(100)));
  return { nines, valueMs };
}

export type { Histogram };
