import { describe, expect, it } from 'vitest';
import { Progress, formatDuration } from '../../src/cli/progress.js';

/** A progress display on a manual clock, capturing what it writes. */
function setup(tty: boolean, columns = 80) {
  let now = 0;
  const out: string[] = [];
  const progress = new Progress({ label: 'provision', total: 1000, tty, columns: () => columns, write: (t) => out.push(t), now: () => now });
  return { progress, out, advance: (ms: number) => (now += ms) };
}

describe('progress display', () => {
  it('without a terminal, prints a whole line every 5 s with count, percent, rate and ETA', () => {
    const { progress, out, advance } = setup(false);
    progress.update(0);
    advance(1000);
    progress.update(100, '0 failed');
    expect(out).toHaveLength(1); // nothing between the lines
    advance(4000);
    progress.update(500, '2 failed');
    expect(out).toHaveLength(2);
    // 500 done in 5 s: 100/s, 500 left: 5 s.
    expect(out[1]).toBe('provision: 500/1000 50% 100/s ETA 5s 5s · 2 failed\n');
    progress.finish('done');
    expect(out[2]).toMatch(/^provision: 500\/1000 50% .* · done\n$/);
  });

  it('a display that starts with a count already done (a phase continuing the last) counts only what follows in its rate', () => {
    let now = 0;
    const out: string[] = [];
    const progress = new Progress({ label: 'simulate publishing', total: 50_000, initial: 50_000, tty: false, write: (t) => out.push(t), now: () => now });
    now += 1;
    progress.update(50_000, 'online');
    // Without `initial` this first line read 50,000 items in 1 ms: 50000000/s.
    expect(out[0]).toBe('simulate publishing: 50000/50000 100% 0.0/s done 0s · online\n');
  });

  it('a count that goes down (devices going offline) never makes the rate negative', () => {
    const { progress, out, advance } = setup(false);
    progress.update(800);
    advance(5000);
    progress.update(300, 'online');
    expect(out[1]).toBe('provision: 300/1000 30% 0.0/s ETA -- 5s · online\n');
  });

  it('an interrupted run ends at what was really done, and says "stopped" instead of "done" or an ETA', () => {
    const { progress, out, advance } = setup(false);
    progress.update(0);
    advance(5000);
    // The run counted the devices the interrupt stopped as settled: 1000 of 1000.
    progress.update(1000, '0 failed');
    expect(out[1]).toMatch(/ 100% .* done /);
    progress.finish('interrupted', { done: 120, stopped: true });
    expect(out[2]).toMatch(/^provision: 120\/1000 12% \S+ stopped 5s · interrupted\n$/);
  });

  it('on a terminal, redraws one line in place that never reaches the last column', () => {
    for (const columns of [40, 80, 200]) {
      const { progress, out, advance } = setup(true, columns);
      advance(2000);
      progress.update(250, 'a very long detail that goes on and on, well past the width of a small terminal window');
      const line = out.at(-1) ?? '';
      expect(line.startsWith('\r\x1b[K')).toBe(true);
      expect(line.length - '\r\x1b[K'.length, `${columns} columns`).toBeLessThan(columns);
      progress.finish();
      expect(out.at(-1)).toBe('\n');
    }
  });

  it('has a bar on a wide terminal and drops it on a narrow one', () => {
    const wide = setup(true, 120);
    wide.advance(1000);
    wide.progress.update(500);
    expect(wide.out.at(-1)).toContain('[###############...............]');
    const narrow = setup(true, 40);
    narrow.advance(1000);
    narrow.progress.update(500);
    expect(narrow.out.at(-1)).not.toMatch(/\[[#.]+\]/);
  });

  it('computes the rate over the last few seconds, following a change of pace', () => {
    const { progress, advance } = setup(false);
    for (let s = 1; s <= 10; s++) {
      advance(1000);
      progress.update(s * 10); // 10/s
    }
    for (let s = 1; s <= 10; s++) {
      advance(1000);
      progress.update(100 + s * 50); // then 50/s
    }
    expect(progress.rate()).toBeCloseTo(50, 5);
  });

  it('formats durations', () => {
    expect([formatDuration(0), formatDuration(42_400), formatDuration(65_000), formatDuration(7_380_000)]).toEqual(['0s', '42s', '1m05s', '2h03m']);
  });
});
