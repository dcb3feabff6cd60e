import { SlidingWindow } from './sliding-window';

describe('SlidingWindow', () => {
  it('averages what it holds', () => {
    const w = new SlidingWindow(5, 60_000);
    expect(w.mean(0)).toBeUndefined();
    w.add(10, 0);
    w.add(20, 1);
    w.add(60, 2);
    expect(w.mean(3)).toBeCloseTo(30);
    expect(w.length(3)).toBe(3);
    expect(w.total(3)).toBe(90);
  });

  it('keeps only the last `size` samples', () => {
    const w = new SlidingWindow(3, 60_000);
    for (const [i, v] of [100, 100, 100, 1, 2, 3].entries()) w.add(v, i);
    expect(w.length(10)).toBe(3);
    expect(w.mean(10)).toBeCloseTo(2);
  });

  it('forgets samples older than its age limit', () => {
    const w = new SlidingWindow(10, 1000);
    w.add(500, 0);
    w.add(700, 500);
    w.add(20, 1200);
    // At 1300 the sample from 0 is 1300 ms old: gone; the one from 500 is 800 ms old: kept.
    expect(w.length(1300)).toBe(2);
    expect(w.mean(1300)).toBeCloseTo(360);
    expect(w.mean(5000)).toBeUndefined();
    expect(w.total(5000)).toBe(0);
  });

  it('gives quantiles of what it holds', () => {
    const w = new SlidingWindow(100, 60_000);
    for (let i = 1; i <= 100; i++) w.add(i, 0);
    expect(w.quantile(0.5, 0)).toBe(50);
    expect(w.quantile(0.95, 0)).toBe(95);
    expect(w.quantile(1, 0)).toBe(100);
    expect(new SlidingWindow(3, 10).quantile(0.5, 0)).toBeUndefined();
  });

  it('keeps an exact mean across many wrap-arounds', () => {
    const w = new SlidingWindow(7, 1e12);
    for (let i = 0; i < 100_000; i++) w.add((i % 13) * 0.1, i);
    const last = Array.from({ length: 7 }, (_, k) => ((100_000 - 7 + k) % 13) * 0.1);
    expect(w.mean(100_000)).toBeCloseTo(last.reduce((s, x) => s + x, 0) / 7, 9);
  });
});
