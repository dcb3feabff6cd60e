import { addValue, bucketOf, bucketRange, fromJson, mergeInto, percentile, toJson, type Histogram } from './latency-histogram';

function exactPercentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(1, Math.ceil(p * sorted.length)) - 1];
}

describe('latency histogram', () => {
  it('gives every value below 32 ms its own bucket', () => {
    for (let v = 0; v < 32; v++) {
      expect(bucketOf(v)).toBe(v);
      expect(bucketRange(v)).toEqual([v, v]);
    }
  });

  it('puts every value in the bucket whose range holds it, and buckets never overlap', () => {
    let previousHigh = -1;
    for (let b = 0; b < 360; b++) {
      const [lo, hi] = bucketRange(b);
      expect(lo).toBe(previousHigh + 1);
      expect(bucketOf(lo)).toBe(b);
      expect(bucketOf(hi)).toBe(b);
      // A bucket spans at most 1/16 of its values.
      expect(hi - lo + 1).toBeLessThanOrEqual(Math.max(1, lo / 16));
      previousHigh = hi;
    }
  });

  it('caps huge and cleans odd values', () => {
    expect(bucketOf(1e12)).toBe(bucketOf(2 ** 26 - 1));
    expect(bucketOf(-5)).toBe(0);
    expect(bucketOf(Number.NaN)).toBe(0);
    expect(bucketOf(31.6)).toBe(32);
  });

  it('reads percentiles within 3% of the exact ones, also after merging', () => {
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const a: number[] = [];
    const b: number[] = [];
    for (let i = 0; i < 5000; i++) a.push(Math.round(50 + rand() * 400));
    for (let i = 0; i < 3000; i++) b.push(Math.round(800 + rand() ** 3 * 20000));
    const ha: Histogram = new Map();
    const hb: Histogram = new Map();
    a.forEach((v) => addValue(ha, v));
    b.forEach((v) => addValue(hb, v));
    const merged = mergeInto(fromJson(JSON.stringify(toJson(ha))), fromJson(toJson(hb)));
    for (const p of [0.5, 0.95, 0.99]) {
      const exact = exactPercentile([...a, ...b], p);
      expect(Math.abs(percentile(merged, p)! - exact) / exact).toBeLessThan(0.03);
    }
  });

  it('is exact for small values and null when empty', () => {
    const h: Histogram = new Map();
    expect(percentile(h, 0.5)).toBeNull();
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].forEach((v) => addValue(h, v));
    expect(percentile(h, 0.5)).toBe(5);
    expect(percentile(h, 0.95)).toBe(10);
    expect(percentile(h, 0.99)).toBe(10);
  });

  it('ignores garbage in stored histograms', () => {
    expect(fromJson('not json').size).toBe(0);
    expect(fromJson({ '3': 2, x: 1, '4': -1, '5': 'nope' })).toEqual(new Map([[3, 2]]));
  });
});
