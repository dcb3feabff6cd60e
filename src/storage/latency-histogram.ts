/**
 * Log-linear histograms of millisecond durations, so that percentiles can be summed across hours
 * and groups (exact percentiles cannot). Values below 32 ms have a bucket each; above, every
 * power of two is split into 16 buckets, so a bucket spans at most 1/16 (6.25%) of its values and
 * a percentile read from it, interpolated inside the bucket, is within about 3% of the exact one.
 * Durations are capped at 2^26 ms (18.6 hours).
 *
 * A histogram is stored sparse, as `{ "<bucket>": count }` (jsonb on PostgreSQL, JSON text on
 * SQLite), so an hour with a narrow latency spread costs a few bytes per occupied bucket.
 */

const EXACT = 32;
const SUB = 16;
const MAX_VALUE = 2 ** 26 - 1;

export type Histogram = Map<number, number>;

export function bucketOf(ms: number): number {
  const v = Math.min(MAX_VALUE, Math.max(0, Math.round(Number.isFinite(ms) ? ms : 0)));
  if (v < EXACT) return v;
  const e = 31 - Math.clz32(v); // floor(log2 v), >= 5
  const m = v >>> (e - 4); // 16..31
  return EXACT + (e - 5) * SUB + (m - SUB);
}

/** The values a bucket holds, inclusive. */
export function bucketRange(bucket: number): [number, number] {
  if (bucket < EXACT) return [bucket, bucket];
  const e = 5 + Math.floor((bucket - EXACT) / SUB);
  const m = SUB + ((bucket - EXACT) % SUB);
  const shift = e - 4;
  return [m << shift, ((m + 1) << shift) - 1];
}

export function addValue(h: Histogram, ms: number, count = 1): void {
  const b = bucketOf(ms);
  h.set(b, (h.get(b) ?? 0) + count);
}

export function mergeInto(target: Histogram, source: Histogram): Histogram {
  for (const [b, n] of source) target.set(b, (target.get(b) ?? 0) + n);
  return target;
}

export function toJson(h: Histogram): Record<string, number> {
  const out: Record<string, number> = {};
  for (const b of [...h.keys()].sort((x, y) => x - y)) out[String(b)] = h.get(b)!;
  return out;
}

/** Reads a stored histogram (an object, or its JSON text); anything unreadable counts as empty. */
export function fromJson(value: unknown): Histogram {
  let obj = value;
  if (typeof obj === 'string') {
    try {
      obj = JSON.parse(obj);
    } catch {
      return new Map();
    }
  }
  const h: Histogram = new Map();
  if (!obj || typeof obj !== 'object') return h;
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    const b = Number(k);
    const n = Number(v);
    if (Number.isInteger(b) && b >= 0 && n > 0) h.set(b, (h.get(b) ?? 0) + n);
  }
  return h;
}

/**
 * The p-quantile (0 < p <= 1) by nearest rank, interpolated inside its bucket; null when empty.
 * Exact for values under 32 ms.
 */
export function percentile(h: Histogram, p: number): number | null {
  let total = 0;
  for (const n of h.values()) total += n;
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(p * total));
  let seen = 0;
  for (const b of [...h.keys()].sort((x, y) => x - y)) {
    const n = h.get(b)!;
    if (seen + n >= rank) {
      const [lo, hi] = bucketRange(b);
      if (lo === hi) return lo;
      // The rank's position inside the bucket, assuming its values are spread evenly.
      return Math.round(lo + ((hi - lo) * (rank - seen - 0.5)) / n);
    }
    seen += n;
  }
  return null;
}
