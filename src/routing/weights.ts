import type { Locality } from '../config/registry.types';

/** A seedable uniform random source in [0, 1) (mulberry32), for tests that check distributions. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Weights scaled to sum to 1 (all zero stays all zero). */
export function shares(weights: readonly number[]): number[] {
  const total = weights.reduce((s, w) => s + (w > 0 ? w : 0), 0);
  return weights.map((w) => (total > 0 && w > 0 ? w / total : 0));
}

/**
 * The fixed local/remote split: `localFraction` of traffic divided evenly among local routes,
 * the rest evenly among remote ones; everything to one side when the other has no routes.
 * Routes whose own weight is 0 are switched off and get nothing.
 */
export function fixedRatioWeights(localities: readonly Locality[], localFraction: number, enabled?: readonly boolean[]): number[] {
  const on = (i: number) => enabled?.[i] ?? true;
  const nLocal = localities.filter((l, i) => l === 'local' && on(i)).length;
  const nRemote = localities.filter((l, i) => l === 'remote' && on(i)).length;
  let local = Math.min(1, Math.max(0, localFraction));
  if (nLocal === 0) local = 0;
  else if (nRemote === 0) local = 1;
  return localities.map((l, i) => {
    if (!on(i)) return 0;
    return l === 'local' ? local / nLocal : (1 - local) / nRemote;
  });
}

/**
 * A random order of route indices in which each route comes first with probability equal to
 * its share of the weights (Efraimidis–Spirakis sampling without replacement). Routes with
 * weight 0 never come first; they follow, in listed order, as last-resort fallbacks.
 */
export function weightedOrder(weights: readonly number[], random: () => number): number[] {
  const keyed: Array<[number, number]> = [];
  const zero: number[] = [];
  weights.forEach((w, i) => {
    if (w > 0) keyed.push([i, -Math.log(1 - random()) / w]);
    else zero.push(i);
  });
  keyed.sort((a, b) => a[1] - b[1]);
  return [...keyed.map(([i]) => i), ...zero];
}
