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

/**
 * Weights scaled to sum to 1. With no positive weight, the first route takes everything: the
 * weighted and round-robin orders put zero-weight routes last, in listed order, so when only
 * such routes are left (the others down) the first of them serves.
 */
export function shares(weights: readonly number[]): number[] {
  const total = weights.reduce((s, w) => s + (w > 0 ? w : 0), 0);
  if (total === 0) return weights.map((_, i) => (i === 0 ? 1 : 0));
  return weights.map((w) => (w > 0 ? w / total : 0));
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

/**
 * Smooth weighted round-robin (as nginx balances upstreams): each pick adds every route's weight
 * to its running score, takes the highest, and lowers it by the total. Over any run of
 * sum(weights) picks each route is chosen exactly `weight` times, interleaved rather than in
 * bursts. `current` holds the scores and is updated in place; returns -1 if no weight is positive.
 */
export function smoothWeightedPick(weights: readonly number[], current: number[]): number {
  let total = 0;
  let best = -1;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i];
    if (!(w > 0)) continue;
    current[i] += w;
    total += w;
    if (best < 0 || current[i] > current[best]) best = i;
  }
  if (best >= 0) current[best] -= total;
  return best;
}

/**
 * Routes by recent time to first token, fastest first; routes not measured yet come first (so
 * they get measured). With probability `exploration` another route is moved to the front, so a
 * slow endpoint that recovered is noticed and wins its traffic back.
 */
export function latencyOrder(latencies: readonly (number | undefined)[], exploration: number, random: () => number): number[] {
  const order = latencies.map((_, i) => i);
  const rank = (i: number) => latencies[i] ?? -Infinity;
  order.sort((a, b) => rank(a) - rank(b) || a - b);
  // Several not measured yet (a start, a reload): one at random first, not always the first listed
  // (every request in flight before a sample came went to it).
  const unmeasured = latencies.filter((l) => l === undefined).length;
  if (unmeasured > 1) {
    const k = Math.floor(random() * unmeasured);
    order.unshift(...order.splice(k, unmeasured - k));
  }
  if (order.length > 1 && random() < exploration) {
    const k = 1 + Math.floor(random() * (order.length - 1));
    const [explored] = order.splice(k, 1);
    order.unshift(explored);
  }
  return order;
}

/**
 * The first-pick shares `latencyOrder` produces: before exploration the fastest is first (or,
 * with several not measured yet, each of those alike); exploration then moves another route to
 * the front, each of the rest alike. So 1 - exploration to the fastest, the rest evenly.
 */
export function latencyShares(latencies: readonly (number | undefined)[], exploration: number): number[] {
  const n = latencies.length;
  if (n === 0) return [];
  if (n === 1) return [1];
  const unmeasured = latencies.filter((l) => l === undefined).length;
  const best = latencyOrder(latencies, 0, () => 0)[0];
  const first = latencies.map((l, i) => (unmeasured > 1 ? (l === undefined ? 1 / unmeasured : 0) : i === best ? 1 : 0));
  return first.map((p) => (1 - exploration) * p + (exploration * (1 - p)) / (n - 1));
}
