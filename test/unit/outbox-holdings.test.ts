import { describe, expect, it } from 'vitest';
import { Holdings } from '../../src/outbox/state.js';

/** Hold one written message of `clientId` (as a batch does). */
function holdOne(h: Holdings, clientId: string, seq: number, bytes = 10): void {
  h.queuedMessages += 1;
  h.queuedBytes += bytes;
  h.hold({ clientId, seq, bytes, acceptedAt: seq } as Parameters<Holdings['hold']>[0]);
}

describe("the store's device records", () => {
  it('a device that empties keeps its record, as a new one would be, with what is in flight still known', () => {
    const h = new Holdings();
    holdOne(h, 'a', 1);
    const record = h.device('a');
    record.inFlightHigh = 2;
    record.sentHigh = 1;
    h.account(1, 'a', 10);
    expect(h.devices.get('a')).toBe(record); // the same record: none made and deleted per message
    expect(record).toMatchObject({ messages: 0, bytes: 0, sentHigh: 0, inFlightHigh: 2, oldestAt: Infinity, oldestSeq: Infinity });
    expect(h.stats(false).devices).toBe(0);
    holdOne(h, 'a', 3);
    expect(record).toMatchObject({ messages: 1, oldestSeq: 3, oldestAt: 3 }); // its oldest is the new message
  });

  it('a device whose mark is in LevelDB loses its record when it empties, and is listed for the mark to be deleted', () => {
    const h = new Holdings();
    holdOne(h, 'b', 1);
    h.device('b').levelMark = true;
    h.account(1, 'b', 10);
    expect(h.devices.has('b')).toBe(false);
    expect([...h.emptied]).toEqual(['b']);
  });

  it('past the bound, the empty records nothing is in flight for are let go; those with messages or in flight stay', () => {
    const h = new Holdings();
    for (let i = 0; i < 5000; i++) {
      holdOne(h, `d${i}`, i + 1);
      if (i % 2 === 0) h.account(i + 1, `d${i}`, 10); // empty
    }
    h.device('d0').inFlightHigh = 1; // empty, something in flight: kept
    h.pruneEmpty();
    expect(h.devices.size).toBe(2501);
    expect(h.devices.has('d0')).toBe(true);
    expect(h.devices.has('d2')).toBe(false);
    expect(h.devices.get('d1')?.messages).toBe(1);
    // The bound is twice what was left: no scan per batch while the records grow back.
    for (let i = 0; i < 2000; i++) {
      holdOne(h, `e${i}`, 10_000 + i);
      h.account(10_000 + i, `e${i}`, 10);
    }
    h.pruneEmpty();
    expect(h.devices.size).toBe(4501);
  });
});
