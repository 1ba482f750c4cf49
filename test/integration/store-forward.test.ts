/**
 * Store and forward end to end (issue 17), at CI's scale: 1,000 QoS 1 messages at 200/s from one device through a
 * relay to a persistent Mosquitto, with a 3 s outage (every connection cut, new ones refused), two broker restarts and a
 * kill -9 of the publishing process, restarted on the same outbox. An independent subscriber (mosquitto_sub, on the
 * broker directly) must receive every message the publisher reported accepted; a duplicate sent by the publisher must
 * be one it reported as possibly twice. Once with the library (connectDevice + enqueueDurable), once with the
 * `gateway` command fed JSON lines. The run itself is bench/lib/store-forward.mjs (bench/store-forward.bench.mjs runs
 * it at the scale).
 */
import { describe, expect, it } from 'vitest';
// @ts-expect-error -- a plain ESM module shared with the benchmarks
import { runStoreForward } from '../../bench/lib/store-forward.mjs';
import { mosquittoPrograms } from '../helpers/mosquitto.js';

const { available, skipped } = mosquittoPrograms(['mosquitto', 'passwd', 'sub']);

interface Outcome {
  handed: number;
  accepted: number;
  refused: number;
  dropped: number;
  lost: number;
  lostIds: number[];
  publisherDuplicates: number;
  reportedPossibleDuplicates: number;
  outOfOrder: number;
  events: Array<{ at: number; what: string }>;
  gatewayExit?: { code: number | null };
}

const SCENARIO = { messages: 1000, rate: 200, outage: { at: 1500, ms: 3000 }, restarts: [800, 2500], kill: 3000, deadlineMs: 60_000 };

describe.skipIf(!available)(`store and forward through an outage, broker restarts and a kill -9${skipped}`, () => {
  it.each(['library', 'cli'])('%s: every accepted message reaches the subscriber; each duplicate the publisher sent was reported as possible', async (mode) => {
    const outcome = (await runStoreForward({ mode, ...SCENARIO })) as Outcome;
    const timeline = outcome.events.map((e) => `${e.at} ms ${e.what}`).join('\n');
    // The run did what it says: the outage, both restarts and the kill happened while messages flowed.
    expect(timeline).toMatch(/uplink down[\s\S]*publisher killed[\s\S]*uplink up/);
    expect(outcome.events.filter((e) => e.what === 'broker restarted')).toHaveLength(2);
    expect(outcome.handed, timeline).toBe(1000);
    // Accepted: all but those handed to the killed process and not yet on disk when it died.
    expect(outcome.accepted).toBeGreaterThan(900);
    expect(outcome.refused + outcome.dropped).toBe(0);
    expect({ lost: outcome.lost, lostIds: outcome.lostIds }, timeline).toEqual({ lost: 0, lostIds: [] });
    expect(outcome.publisherDuplicates).toBeLessThanOrEqual(outcome.reportedPossibleDuplicates);
    expect(outcome.outOfOrder).toBe(0);
    if (mode === 'cli') expect(outcome.gatewayExit).toMatchObject({ code: 0 });
  });
});
