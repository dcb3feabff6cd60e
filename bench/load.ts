import { Pool } from 'undici';

export interface LoadResult {
  requests: number;
  errors: number;
  seconds: number;
  rps: number;
  /** Milliseconds: whole request for JSON, time to first content for streams. */
  p50: number;
  p90: number;
  p99: number;
  /** Streams only: whole-stream duration percentiles. */
  totalP50?: number;
  totalP99?: number;
  /** CPU time the measured server spent per request (user + system, µs), when `cpuMs` was given. */
  cpuUsPerRequest?: number;
}

export interface LoadOptions {
  url: string; // origin
  path: string;
  /** The request body; with several, each worker takes them in turn, each starting at its own. */
  body: string | string[];
  connections: number;
  seconds: number;
  stream?: boolean;
  /** Requests to send before measuring (warm-up). */
  warmupSeconds?: number;
  /**
   * Start the workers one by one over this many milliseconds instead of all at once, and measure
   * only from then on, so that requests that take the same time do not arrive in lockstep.
   */
  staggerMs?: number;
  /** The measured server's CPU time so far (ms), read before and after the measured period. */
  cpuMs?: () => number;
}

/**
 * A closed-loop load generator: `connections` workers, each sending its next request as soon as
 * the previous answer is complete. Requests started during the warm-up (and the stagger) are
 * not counted; those started in the next `seconds` are, each to its end. The load runs without a
 * break from warm-up into the measured period, so the measured period does not start with every
 * worker sending at once. Latencies are taken with performance.now() (sub-millisecond), so the
 * 1-connection comparison means something.
 */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const pool = new Pool(opts.url, { connections: opts.connections, pipelining: 1, keepAliveTimeout: 30_000 });
  const bodies = typeof opts.body === 'string' ? [opts.body] : opts.body;
  const first: number[] = [];
  const total: number[] = [];
  let errors = 0;
  const begin = performance.now();
  const from = begin + (opts.warmupSeconds ?? 0) * 1000 + (opts.staggerMs ?? 0);
  const until = from + opts.seconds * 1000;
  let cpu0: number | undefined;
  const mark = setTimeout(() => (cpu0 = opts.cpuMs?.()), from - begin);
  const worker = async (w: number) => {
    if (opts.staggerMs) await new Promise((r) => setTimeout(r, (w / opts.connections) * opts.staggerMs!));
    for (let n = w; performance.now() < until; n++) {
      const t0 = performance.now();
      const counted = t0 >= from;
      try {
        const res = await pool.request({
          path: opts.path,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: bodies[n % bodies.length],
        });
        if (res.statusCode !== 200) {
          if (counted) errors++;
          await res.body.dump();
          continue;
        }
        if (!opts.stream) {
          await res.body.arrayBuffer();
          if (counted) first.push(performance.now() - t0);
          continue;
        }
        let firstAt = 0;
        let text = '';
        for await (const chunk of res.body) {
          if (!firstAt) {
            text += (chunk as Buffer).toString();
            // First content: a delta with non-empty content.
            if (/"content":"[^"]/.test(text)) firstAt = performance.now();
          }
        }
        const end = performance.now();
        if (counted) {
          first.push((firstAt || end) - t0);
          total.push(end - t0);
        }
      } catch {
        if (counted) errors++;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: opts.connections }, (_, w) => worker(w)));
  } finally {
    clearTimeout(mark);
    await pool.close();
  }
  const end = performance.now();
  const seconds = Math.max(0, end - from) / 1000;
  const cpu = cpu0 === undefined ? undefined : opts.cpuMs!() - cpu0;
  first.sort((a, b) => a - b);
  total.sort((a, b) => a - b);
  return {
    requests: first.length,
    errors,
    seconds,
    // Requests started in the measured period over its length (the last ones finish after it).
    rps: first.length / opts.seconds,
    p50: pct(first, 50),
    p90: pct(first, 90),
    p99: pct(first, 99),
    ...(opts.stream ? { totalP50: pct(total, 50), totalP99: pct(total, 99) } : {}),
    ...(cpu !== undefined && first.length > 0 ? { cpuUsPerRequest: (cpu * 1000) / first.length } : {}),
  };
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
