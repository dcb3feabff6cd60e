import { fixedRatioWeights, latencyOrder, latencyShares, seededRandom, shares, smoothWeightedPick, weightedOrder } from './weights';

const sum = (xs: number[]) => xs.reduce((s, x) => s + x, 0);

describe('shares', () => {
  it('scales weights to sum to 1', () => {
    expect(shares([1, 3])).toEqual([0.25, 0.75]);
    expect(shares([2, 2, 4])).toEqual([0.25, 0.25, 0.5]);
  });

  it('gives nothing to zero and negative weights', () => {
    expect(shares([0, 1])).toEqual([0, 1]);
    expect(shares([-5, 1, 1])).toEqual([0, 0.5, 0.5]);
  });

  it('gives everything to the first of all-zero weights, which serves them (the last-resort routes, in listed order)', () => {
    expect(shares([0, 0])).toEqual([1, 0]);
    expect(weightedOrder([0, 0], seededRandom(1))[0]).toBe(0);
    expect(shares([])).toEqual([]);
  });
});

describe('fixedRatioWeights', () => {
  it('splits the local fraction evenly among local routes and the rest among remote ones', () => {
    const w = fixedRatioWeights(['local', 'remote', 'local', 'remote', 'remote'], 0.7);
    expect(w[0]).toBeCloseTo(0.35);
    expect(w[2]).toBeCloseTo(0.35);
    expect(w[1]).toBeCloseTo(0.1);
    expect(w[3]).toBeCloseTo(0.1);
    expect(w[4]).toBeCloseTo(0.1);
    expect(sum(w)).toBeCloseTo(1);
  });

  it('sends everything to the remote side when there is no local route', () => {
    expect(fixedRatioWeights(['remote', 'remote'], 0.7)).toEqual([0.5, 0.5]);
  });

  it('sends everything to the local side when there is no remote route', () => {
    const w = fixedRatioWeights(['local', 'local', 'local'], 0.25);
    expect(w).toHaveLength(3);
    w.forEach((x) => expect(x).toBeCloseTo(1 / 3));
  });

  it('honours local_fraction 0 and 1', () => {
    expect(fixedRatioWeights(['local', 'remote'], 0)).toEqual([0, 1]);
    expect(fixedRatioWeights(['local', 'remote'], 1)).toEqual([1, 0]);
  });

  it('clamps a fraction outside 0..1', () => {
    expect(fixedRatioWeights(['local', 'remote'], 1.5)).toEqual([1, 0]);
    expect(fixedRatioWeights(['local', 'remote'], -1)).toEqual([0, 1]);
  });

  it('gives disabled routes nothing and shares their part among the rest of their side', () => {
    const w = fixedRatioWeights(['local', 'local', 'remote'], 0.6, [true, false, true]);
    expect(w[0]).toBeCloseTo(0.6);
    expect(w[1]).toBe(0);
    expect(w[2]).toBeCloseTo(0.4);
  });

  it('moves all traffic to the other side when a whole side is disabled', () => {
    expect(fixedRatioWeights(['local', 'remote', 'remote'], 0.9, [false, true, true])).toEqual([0, 0.5, 0.5]);
    expect(fixedRatioWeights(['local', 'remote'], 0.1, [true, false])).toEqual([1, 0]);
  });

  it('gives nothing when every route is disabled', () => {
    expect(fixedRatioWeights(['local', 'remote'], 0.5, [false, false])).toEqual([0, 0]);
  });
});

describe('seededRandom', () => {
  it('repeats its sequence for the same seed and stays in [0, 1)', () => {
    const a = seededRandom(7);
    const b = seededRandom(7);
    const xs = Array.from({ length: 1000 }, () => a());
    expect(Array.from({ length: 1000 }, () => b())).toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(new Set(xs).size).toBeGreaterThan(990);
  });

  it('gives a different sequence for a different seed', () => {
    const a = seededRandom(1);
    const b = seededRandom(2);
    expect([a(), a(), a()]).not.toEqual([b(), b(), b()]);
  });
});

describe('weightedOrder', () => {
  it('returns every index exactly once', () => {
    const random = seededRandom(3);
    for (let i = 0; i < 100; i++) expect([...weightedOrder([5, 1, 0, 2, 0], random)].sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it('puts zero-weight routes last, in listed order', () => {
    const random = seededRandom(11);
    for (let i = 0; i < 100; i++) {
      const order = weightedOrder([0, 2, 0, 1, -1], random);
      expect(order.slice(2)).toEqual([0, 2, 4]);
      expect([...order.slice(0, 2)].sort()).toEqual([1, 3]);
    }
  });

  it('keeps listed order when every weight is zero', () => {
    expect(weightedOrder([0, 0, 0], seededRandom(1))).toEqual([0, 1, 2]);
  });

  it('always puts the only positive weight first', () => {
    const random = seededRandom(5);
    for (let i = 0; i < 100; i++) expect(weightedOrder([0, 0, 4], random)[0]).toBe(2);
  });

  // With n draws the standard error of a frequency p is sqrt(p(1-p)/n) ≈ 0.003 for n = 20,000;
  // a tolerance of 0.02 is over six standard errors, yet rules out uniform or inverted weighting.
  const DRAWS = 20_000;
  const TOLERANCE = 0.02;

  function firstPickFrequencies(weights: number[], seed: number): number[] {
    const random = seededRandom(seed);
    const counts = weights.map(() => 0);
    for (let i = 0; i < DRAWS; i++) counts[weightedOrder(weights, random)[0]]++;
    return counts.map((c) => c / DRAWS);
  }

  it('picks first in proportion to weight for [1, 3]', () => {
    const [a, b] = firstPickFrequencies([1, 3], 42);
    expect(Math.abs(a - 0.25)).toBeLessThan(TOLERANCE);
    expect(Math.abs(b - 0.75)).toBeLessThan(TOLERANCE);
  });

  it('picks first in proportion to weight for [1, 2, 7]', () => {
    const freq = firstPickFrequencies([1, 2, 7], 1234);
    [0.1, 0.2, 0.7].forEach((p, i) => expect(Math.abs(freq[i] - p)).toBeLessThan(TOLERANCE));
  });

  it('picks the second route in proportion to the remaining weights', () => {
    // Sampling without replacement: P(order 2,1,0) = 7/10 × 2/3 and P(order 2,0,1) = 7/10 × 1/3.
    const random = seededRandom(99);
    let twoOneZero = 0;
    let twoZeroOne = 0;
    for (let i = 0; i < DRAWS; i++) {
      const order = weightedOrder([1, 2, 7], random).join(',');
      if (order === '2,1,0') twoOneZero++;
      if (order === '2,0,1') twoZeroOne++;
    }
    expect(Math.abs(twoOneZero / DRAWS - (0.7 * 2) / 3)).toBeLessThan(TOLERANCE);
    expect(Math.abs(twoZeroOne / DRAWS - 0.7 / 3)).toBeLessThan(TOLERANCE);
  });
});

describe('smoothWeightedPick', () => {
  const run = (weights: number[], picks: number) => {
    const current = weights.map(() => 0);
    return Array.from({ length: picks }, () => smoothWeightedPick(weights, current));
  };

  it('interleaves turns as nginx does: 5, 1, 1 gives a a b a c a a', () => {
    expect(run([5, 1, 1], 7)).toEqual([0, 0, 1, 0, 2, 0, 0]);
  });

  it('gives each route exactly its weight in turns over every cycle of sum(weights) picks', () => {
    const weights = [3, 2, 5, 1];
    const picks = run(weights, 11 * 50);
    for (let cycle = 0; cycle < 50; cycle++) {
      const counts = [0, 0, 0, 0];
      for (const i of picks.slice(cycle * 11, cycle * 11 + 11)) counts[i]++;
      expect(counts).toEqual(weights);
    }
  });

  it('never picks a zero weight, and returns -1 when nothing has weight', () => {
    expect(run([0, 2, 0, 1], 30).every((i) => i === 1 || i === 3)).toBe(true);
    expect(run([0, 0], 3)).toEqual([-1, -1, -1]);
  });

  it('alternates equal weights', () => {
    expect(run([1, 1, 1], 6)).toEqual([0, 1, 2, 0, 1, 2]);
  });
});

describe('latencyOrder', () => {
  it('orders by latency, fastest first, without exploration', () => {
    expect(latencyOrder([300, 50, 120], 0, seededRandom(1))).toEqual([1, 2, 0]);
  });

  it('tries unmeasured routes first, one of them at random (not every request the first listed)', () => {
    const random = seededRandom(7);
    const first = [0, 0, 0, 0];
    for (let i = 0; i < 2000; i++) {
      const order = latencyOrder([300, undefined, 50, undefined], 0, random);
      expect(order.slice(2)).toEqual([2, 0]);
      first[order[0]]++;
    }
    expect(first[0] + first[2]).toBe(0);
    // An even split: 1,000 each, standard deviation about 22.
    expect(Math.abs(first[1] - 1000)).toBeLessThan(150);
    // One route not measured: it alone first, no draw made for it.
    expect(latencyOrder([300, undefined, 50], 0, () => 0.99)).toEqual([1, 2, 0]);
  });

  it('keeps listed order among equal latencies', () => {
    expect(latencyOrder([100, 100, 100], 0, seededRandom(1))).toEqual([0, 1, 2]);
  });

  // 20,000 draws: the standard error of a share near 0.05 is about 0.0015; 0.01 is over six of them.
  it('explores: the fastest first 1 - e of the time, every other route e / (n - 1)', () => {
    const random = seededRandom(2024);
    const counts = [0, 0, 0];
    const draws = 20_000;
    for (let i = 0; i < draws; i++) counts[latencyOrder([40, 200, 90], 0.1, random)[0]]++;
    expect(Math.abs(counts[0] / draws - 0.9)).toBeLessThan(0.01);
    expect(Math.abs(counts[1] / draws - 0.05)).toBeLessThan(0.01);
    expect(Math.abs(counts[2] / draws - 0.05)).toBeLessThan(0.01);
  });

  it('keeps every route in the order, exactly once', () => {
    const random = seededRandom(9);
    for (let i = 0; i < 200; i++) expect([...latencyOrder([5, 1, undefined, 3], 0.5, random)].sort()).toEqual([0, 1, 2, 3]);
  });
});

describe('latencyShares', () => {
  it('matches what latencyOrder does', () => {
    expect(latencyShares([40, 200, 90], 0.1)).toEqual([0.9, 0.05, 0.05]);
    expect(latencyShares([40], 0.1)).toEqual([1]);
    expect(latencyShares([], 0.1)).toEqual([]);
  });

  it('shares the first pick among the routes not measured yet, as latencyOrder picks one of them at random', () => {
    const latencies = [undefined, 30, undefined, 50];
    const shares = latencyShares(latencies, 0.1);
    expect(shares.map((v) => Math.round(v * 1000) / 1000)).toEqual([0.467, 0.033, 0.467, 0.033]);
    const random = seededRandom(3);
    const firsts = [0, 0, 0, 0];
    for (let i = 0; i < 20_000; i++) firsts[latencyOrder(latencies, 0.1, random)[0]]++;
    firsts.forEach((n, i) => expect(Math.abs(n / 20_000 - shares[i])).toBeLessThan(0.015));
  });
});
