import { describe, expect, it } from 'vitest';
import { Outbox, type OutboxItem } from '../../src/connector/outbox.js';

interface Named extends OutboxItem {
  readonly name: string;
}

let seq = 0;
const item = (name: string, bytes = 1): Named => ({ name, seq: seq++, strikes: 0, session: undefined, bytes });
const names = (items: Named[]): string[] => items.map((i) => i.name);

describe('the outbox', () => {
  it('sends everything queued, in order, on the next session', () => {
    const box = new Outbox<Named>(3);
    const [a, b, c] = [item('a'), item('b'), item('c')];
    box.add(b);
    box.add(a);
    box.add(c);
    expect(names(box.take(1))).toEqual(['a', 'b', 'c']);
    expect(box.inFlight).toBe(3);
    expect(box.settle(b, 1)).toBe(true);
    expect(box.settle(b, 1)).toBe(false); // once
    expect(box.settle(a, 2)).toBe(false); // not on that session
    expect(box.size).toBe(2);
  });

  it('one item in flight, then more sent beside it: each settles once, on its session, and a loss or a drain gives them back in order', () => {
    const box = new Outbox<Named>(3);
    const [a, b, c] = [item('a'), item('b'), item('c')];
    box.add(a);
    expect(names(box.take(1))).toEqual(['a']); // alone in flight
    expect(box.inFlight).toBe(1);
    expect(box.settle(a, 2)).toBe(false); // not on that session
    box.add(b);
    box.add(c);
    expect(names(box.take(1))).toEqual(['b', 'c']); // beside it
    expect(box.inFlight).toBe(3);
    expect(box.settle(b, 1)).toBe(true);
    expect(box.settle(b, 1)).toBe(false);
    expect(names(box.lost().failed)).toEqual([]);
    expect(box.inFlight).toBe(0);
    expect(names(box.take(2))).toEqual(['a']); // careful now: one at a time, in order
    expect(box.settle(a, 2)).toBe(true);
    expect(box.size).toBe(1);
    expect(names(box.take(3))).toEqual(['c']);
    expect(box.settle(a, 3)).toBe(false); // settled already
    expect(names(box.drain())).toEqual(['c']);
    expect(box.size).toBe(0);
    expect(box.settle(c, 3)).toBe(false); // drained: not in flight any more
  });

  it('is careful exactly while an item with a strike is here: it ends when that item settles or fails', () => {
    const box = new Outbox<Named>(2);
    const [a, b] = [item('a'), item('b')];
    box.add(a);
    box.add(b);
    box.take(1);
    box.lost();
    expect(box.careful).toBe(true);
    expect(names(box.take(2))).toEqual(['a']);
    expect(box.settle(a, 2)).toBe(true);
    expect(box.careful).toBe(true); // b still has its strike
    expect(names(box.take(3))).toEqual(['b']);
    expect(box.settle(b, 3)).toBe(true);
    expect(box.careful).toBe(false);
    const c = item('c');
    box.add(c);
    box.take(4);
    box.lost();
    box.take(5);
    expect(names(box.lost().failed)).toEqual(['c']); // its second strike: failed, gone
    expect(box.careful).toBe(false);
    const d = item('d');
    box.add(d);
    box.take(6);
    box.lost();
    expect(box.careful).toBe(true);
    expect(names(box.drain())).toEqual(['d']);
    expect(box.careful).toBe(false);
  });

  it('a refused message fails after maxAttempts sessions; its innocent neighbours are sent one at a time and go through', () => {
    const box = new Outbox<Named>(3);
    const [bad, good1, good2] = [item('bad'), item('good1'), item('good2')];
    [bad, good1, good2].forEach((i) => box.add(i));
    // Session 1: all three go out in one burst; the broker closes the session.
    expect(names(box.take(1))).toEqual(['bad', 'good1', 'good2']);
    expect(box.lost()).toEqual({ failed: [], struck: true });
    expect(box.careful).toBe(true);
    // Session 2: one at a time.
    expect(names(box.take(2))).toEqual(['bad']);
    expect(box.take(2)).toEqual([]);
    expect(box.lost().failed).toEqual([]);
    expect(names(box.take(3))).toEqual(['bad']);
    expect(names(box.lost().failed)).toEqual(['bad']);
    expect(bad.strikes).toBe(3);
    // Session 4: the neighbours, one at a time while they carry a strike, then in bursts again.
    expect(names(box.take(4))).toEqual(['good1']);
    box.settle(good1, 4);
    expect(names(box.take(4))).toEqual(['good2']);
    box.settle(good2, 4);
    expect(box.careful).toBe(false);
    const [d, e] = [item('d'), item('e')];
    box.add(d);
    box.add(e);
    expect(names(box.take(4))).toEqual(['d', 'e']);
  });

  it('maxAttempts 1: the first session lost with the item in flight fails it', () => {
    const box = new Outbox<Named>(1);
    const a = item('a');
    box.add(a);
    box.take(1);
    expect(names(box.lost().failed)).toEqual(['a']);
    expect(box.size).toBe(0);
  });

  it('a loss blamed on a message (an MQTT 5 reason) fails the single item in flight at once', () => {
    const box = new Outbox<Named>(3);
    const a = item('a');
    box.add(a);
    box.take(1);
    expect(names(box.lost({ aboutMessage: true }).failed)).toEqual(['a']);
    const [b, c] = [item('b'), item('c')];
    box.add(b);
    box.add(c);
    box.take(2);
    expect(box.lost({ aboutMessage: true }).failed).toEqual([]); // two in flight: cannot tell which
  });

  it('a loss with nothing in flight strikes nothing; drain empties it in order', () => {
    const box = new Outbox<Named>(3);
    expect(box.lost()).toEqual({ failed: [], struck: false });
    const [a, b] = [item('a'), item('b')];
    box.add(a);
    box.add(b);
    box.take(1);
    expect(names(box.drain())).toEqual(['a', 'b']);
    expect(box.size).toBe(0);
  });

  it('counts the bytes of what it holds: in when queued, out when settled, failed or drained; a loss that requeues keeps them', () => {
    const box = new Outbox<Named>(2);
    const [a, b, c] = [item('a', 10), item('b', 200), item('c', 3_000)];
    [a, b, c].forEach((i) => box.add(i));
    expect(box.bytes).toBe(3_210);
    box.take(1);
    expect(box.settle(a, 1)).toBe(true);
    expect(box.bytes).toBe(3_200);
    box.lost(); // b and c go back to the queue with a strike
    expect(box.bytes).toBe(3_200);
    box.take(2);
    box.lost(); // b's second strike: failed, its bytes leave
    expect(box.bytes).toBe(3_000);
    box.drain();
    expect(box.bytes).toBe(0);
  });
});
