/**
 * The accounting of a game day, without a broker: the message ledger (what became of each message), the heal tracker
 * (which devices a fault hit, how long each took to heal) on a manual clock, and the payload identity.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/simulator/clock.js';
import { HIT_GRACE_MS, HealTracker, NOT_HEALED_LISTED } from '../../src/simulator/heal.js';
import { summarizeHistogram } from '../../src/simulator/histogram.js';
import { MessageLedger, PAYLOAD_ID_SIZE, payloadIdentity, stampPayload } from '../../src/simulator/ledger.js';

describe('MessageLedger', () => {
  it('counts accepted, acknowledged, delivered, lost, duplicated and refused messages, per device and in all', () => {
    const ledger = new MessageLedger([10, 12], 1);
    const a = [0, 1, 2, 3, 4].map(() => ledger.accept(10));
    expect(a).toEqual([0, 1, 2, 3, 4]);
    ledger.acked(10, 0);
    ledger.delivered(10, 0);
    ledger.acked(10, 1);
    ledger.delivered(10, 1);
    ledger.delivered(10, 1);
    ledger.delivered(10, 1);
    ledger.refused(10, 2);
    ledger.abandoned(10, 3);
    ledger.dropped(11);
    // Another shard's message, and a sequence never sent: not ours.
    ledger.delivered(13, 0);
    ledger.delivered(11, 7);
    expect(ledger.count(10, 0, 5)).toEqual({ published: 5, accepted: 4, acked: 2, delivered: 2, lost: 2, held: 0, queued: 0, maybeQueued: 0, duplicated: 1, duplicates: 2, refused: 1 });
    expect(ledger.totals()).toEqual({ published: 6, accepted: 5, acked: 2, delivered: 2, lost: 3, held: 0, queued: 0, maybeQueued: 0, duplicated: 1, duplicates: 2, refused: 1 });
    expect(ledger.foreign).toBe(2);
    // Still on its way: seq 4 only (acked or not, refused, abandoned and dropped ones will not come).
    expect(ledger.outstanding).toBe(1);
    ledger.delivered(10, 4);
    expect(ledger.outstanding).toBe(0);
  });

  it('tracks the first message still in flight: settled once acknowledged, refused or abandoned (QoS 0: once sent)', () => {
    const ledger = new MessageLedger([0, 1], 1);
    for (let i = 0; i < 4; i++) ledger.accept(0);
    expect(ledger.unsettled(0)).toBe(0);
    ledger.acked(0, 0);
    ledger.abandoned(0, 1);
    expect(ledger.unsettled(0)).toBe(2);
    ledger.refused(0, 3);
    expect(ledger.unsettled(0)).toBe(2);
    ledger.acked(0, 2);
    expect(ledger.unsettled(0)).toBe(4);
    const qos0 = new MessageLedger([0, 1], 0);
    qos0.accept(0);
    expect(qos0.unsettled(0)).toBe(1);
  });

  it('a message the device still held when the run ended its connection is held, not lost (unless it arrived anyway)', () => {
    const ledger = new MessageLedger([0, 1], 1);
    for (let i = 0; i < 4; i++) ledger.accept(0);
    ledger.acked(0, 0);
    ledger.delivered(0, 0);
    // Sent, delivered, PUBACK not in yet when the connection was ended: delivered.
    ledger.delivered(0, 1);
    ledger.held(0, 1);
    // Never sent: held. Refused earlier: refused, whatever came after.
    ledger.held(0, 2);
    ledger.refused(0, 3);
    ledger.held(0, 3);
    expect(ledger.totals()).toEqual({ published: 4, accepted: 3, acked: 1, delivered: 2, lost: 0, held: 1, queued: 0, maybeQueued: 0, duplicated: 0, duplicates: 0, refused: 1 });
    // A message received many times: the per-message count saturates, the total does not.
    for (let i = 0; i < 5; i++) ledger.delivered(0, 0);
    expect(ledger.count(0, 0, 4)).toMatchObject({ duplicated: 1, duplicates: 3, held: 1 });
    expect(ledger.totals()).toMatchObject({ duplicated: 1, duplicates: 5, held: 1, delivered: 2 });
  });

  it('grows past its first block of messages', () => {
    const ledger = new MessageLedger([0, 1], 1);
    for (let i = 0; i < 1_000; i++) ledger.delivered(0, ledger.accept(0));
    expect(ledger.totals()).toMatchObject({ published: 1_000, delivered: 1_000, lost: 0 });
  });

  it('a payload carries its send time, device index and sequence', () => {
    const payload = Buffer.alloc(PAYLOAD_ID_SIZE + 4);
    stampPayload(payload, 0, 1234.5, 77, 9);
    expect(payload.readDoubleBE(0)).toBe(1234.5);
    expect(payloadIdentity(payload)).toEqual({ index: 77, seq: 9 });
    expect(payloadIdentity(Buffer.alloc(8))).toBeUndefined();
  });
});

describe('HealTracker', () => {
  it('a fault hits the devices it watches that lose their session while it lasts; each heals from its end', () => {
    const clock = new ManualClock(0);
    const tracker = new HealTracker([0, 4], clock);
    for (let i = 0; i < 4; i++) tracker.online(i);
    const watch = tracker.watch([0, 1, 2]);
    clock.advance(100);
    tracker.offline(0);
    tracker.offline(1);
    tracker.offline(3); // not watched
    clock.advance(900);
    tracker.online(1); // back before the fault ended: heals in 0
    tracker.end(watch); // ends at 1000
    clock.advance(HIT_GRACE_MS - 1);
    tracker.offline(2); // within the grace: a hit
    clock.advance(2);
    tracker.online(0); // 2001 ms after the end
    clock.advance(500);
    tracker.offline(1); // after the window: not a new hit
    const result = watch.result(undefined);
    expect(result).toMatchObject({ targeted: 3, hit: 3, healed: 2, notHealed: 1, messages: undefined });
    const heal = summarizeHistogram(result.heal);
    expect(heal.p50).toBeCloseTo(0.001, 3);
    expect(heal.max).toBeCloseTo(2_001, -1);
    tracker.close();
    expect(clock.pending).toBe(0);
  });

  it('a watch that looks back counts losses just before it (another shard restarted the shared broker a moment earlier)', () => {
    const clock = new ManualClock(0);
    const tracker = new HealTracker([0, 3], clock);
    for (let i = 0; i < 3; i++) tracker.online(i);
    tracker.offline(0);
    clock.advance(1_000);
    tracker.offline(1);
    clock.advance(HIT_GRACE_MS);
    const watch = tracker.watch('all', { lookbackMs: HIT_GRACE_MS });
    // Device 1 was lost within the lookback (a hit), device 0 before it (offline at its start), device 2 not at all.
    expect(watch.result(undefined)).toMatchObject({ hit: 1, offlineAtStart: 1, notHealed: 1 });
    expect(tracker.watch('all').result(undefined)).toMatchObject({ hit: 0, offlineAtStart: 2 });
  });

  it('a device offline when a fault starts is offline at its start, not hit; one that goes offline during it is hit', () => {
    const clock = new ManualClock(0);
    const tracker = new HealTracker([0, 5], clock);
    // Device 0 never connected (still on its first CONNECT); device 1 was lost before the fault and is not back.
    for (const i of [1, 2, 3, 4]) tracker.online(i);
    tracker.offline(1);
    clock.advance(1_000);
    const watch = tracker.watch([0, 1, 2, 3]);
    clock.advance(100);
    tracker.offline(2); // knocked offline by it: a hit
    tracker.offline(4); // not watched
    clock.advance(400);
    tracker.online(0); // back during it, and not lost again: still offline at its start, not hit
    tracker.online(1);
    tracker.offline(1); // back and lost again while it lasts: a hit, not offline at its start
    tracker.end(watch);
    clock.advance(HIT_GRACE_MS);
    for (const i of [1, 2]) tracker.online(i);
    expect(watch.result(undefined)).toMatchObject({ targeted: 4, hit: 2, offlineAtStart: 1, healed: 2, notHealed: 0 });
    // Device 3 kept its session: hit + offlineAtStart falls short of targeted by one. A watch over every device
    // started now finds device 4 (lost above, never back) offline.
    expect(tracker.watch('all').result(undefined)).toMatchObject({ targeted: 5, hit: 0, offlineAtStart: 1 });
    tracker.close();
  });

  it('a revoke\'s watch heals each device from its own loss, not from the last revoke', () => {
    const clock = new ManualClock(0);
    const tracker = new HealTracker([0, 2], clock);
    tracker.online(0);
    tracker.online(1);
    const watch = tracker.watch('all', { fromLoss: true });
    tracker.offline(0);
    clock.advance(100);
    tracker.online(0); // 100 ms after its loss
    clock.advance(900);
    tracker.offline(1);
    clock.advance(300);
    tracker.end(watch);
    tracker.online(1); // 300 ms after its loss
    const heal = summarizeHistogram(watch.result(undefined).heal);
    expect([heal.p50, heal.max].map((v) => Math.round(v as number))).toEqual([100, 300]);
    tracker.close();
  });

  it('a device lost again within the window heals from its last return', () => {
    const clock = new ManualClock(0);
    const tracker = new HealTracker([0, 1], clock);
    tracker.online(0);
    const watch = tracker.watch('all');
    tracker.offline(0);
    clock.advance(50);
    tracker.online(0);
    tracker.end(watch);
    clock.advance(10);
    tracker.offline(0);
    clock.advance(300);
    tracker.online(0);
    const result = watch.result(undefined);
    expect(result).toMatchObject({ targeted: 1, hit: 1, healed: 1, notHealed: 0 });
    expect(summarizeHistogram(result.heal).max).toBeCloseTo(310, 0);
  });

  it('counts the watched devices\' messages from the fault\'s start until each healed, or until its window closed', () => {
    const clock = new ManualClock(0);
    const ledger = new MessageLedger([0, 2], 1);
    const tracker = new HealTracker([0, 2], clock, ledger);
    tracker.online(0);
    tracker.online(1);
    // Device 0 has one message in flight at the start: it counts.
    ledger.acked(0, ledger.accept(0));
    const inFlight = ledger.accept(0);
    const watch = tracker.watch('all');
    tracker.offline(0);
    ledger.abandoned(0, inFlight);
    ledger.dropped(0);
    ledger.dropped(0);
    ledger.delivered(1, ledger.accept(1));
    clock.advance(1_000);
    tracker.end(watch);
    clock.advance(500);
    tracker.online(0);
    ledger.delivered(0, ledger.accept(0)); // after it healed: not the fault's
    ledger.delivered(1, ledger.accept(1)); // within the grace: the fault's
    clock.advance(HIT_GRACE_MS);
    ledger.delivered(1, ledger.accept(1)); // after the window closed: not the fault's
    expect(watch.result(ledger).messages).toEqual({ published: 5, accepted: 5, acked: 0, delivered: 2, lost: 3, held: 0, queued: 0, maybeQueued: 0, duplicated: 0, duplicates: 0, refused: 0 });
  });

  it('a device hit and never back: not healed, named with what it did since, its messages the fault\'s until the end of the run', () => {
    const clock = new ManualClock(0);
    const ledger = new MessageLedger([0, 2], 1);
    const tracker = new HealTracker([0, 2], clock, ledger);
    tracker.online(0);
    tracker.online(1);
    const watch = tracker.watch('all');
    clock.advance(10);
    tracker.offline(0);
    tracker.offline(1);
    tracker.retrying(0, 500);
    clock.advance(500);
    tracker.connecting(0);
    clock.advance(5);
    tracker.retrying(0, 16_000); // its backoff after a failed CONNECT
    clock.advance(485);
    tracker.end(watch); // ends at 1000
    // Device 1 comes back; device 0 is still waiting. Both are handed messages all along (the connector's outbox).
    tracker.connecting(1);
    tracker.online(1);
    clock.advance(HIT_GRACE_MS + 1_000); // the window has closed
    for (let i = 0; i < 3; i++) ledger.accept(0);
    ledger.delivered(1, ledger.accept(1)); // after it healed: not the fault's
    // The run ends: the devices disconnecting is no fault's doing, and what device 0 held is held.
    tracker.close();
    tracker.offline(1);
    tracker.online(0);
    for (let seq = 0; seq < 3; seq++) ledger.held(0, seq);
    const result = watch.result(ledger);
    expect(result).toMatchObject({ hit: 2, healed: 1, notHealed: 1 });
    expect(result.notHealedDevices).toEqual([{ index: 0, lostAt: 10, connects: 1, lastConnectAt: 510, nextConnectAt: 16_515, held: 3 }]);
    // Its three messages came after the window closed, and they are the fault's all the same: it had not healed.
    expect(result.messages).toMatchObject({ published: 3, accepted: 3, lost: 0, held: 3, delivered: 0 });
  });

  it('names the first not-healed devices by fleet index, and counts them all', () => {
    const clock = new ManualClock(0);
    const tracker = new HealTracker([100, 130], clock);
    for (let i = 129; i >= 100; i--) tracker.online(i);
    const watch = tracker.watch('all');
    for (let i = 129; i >= 100; i--) tracker.offline(i);
    tracker.end(watch);
    const result = watch.result(undefined);
    expect(result.notHealed).toBe(30);
    expect(result.notHealedDevices.map((d) => d.index)).toEqual(Array.from({ length: NOT_HEALED_LISTED }, (_, i) => 100 + i));
    expect(result.notHealedDevices[0]).toEqual({ index: 100, lostAt: 0, connects: 0, lastConnectAt: undefined, nextConnectAt: undefined, held: undefined });
    tracker.close();
  });
});
