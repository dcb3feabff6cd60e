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
  body: string;
  connections: number;
  seconds: number;
  stream?: boolean;
  /** Requests to send before measuring (warm-up). */
  warmupSeconds?: number;
  /** The measured server's CPU time so far (ms), read before and after the measured period. */
  cpuMs?: () => number;
}

/**
 * A closed-loop load generator: `connections` workers, each sending its next request as soon as
 * the previous answer is complete, for `seconds`. Latencies are taken with performance.now()
 * (sub-millisecond), so the 1-connection comparison means something.
 */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const pool = new Pool(opts.url, { connections: opts.connections, pipelining: 1, keepAliveTimeout: 30_000 });
  try {
    if (opts.warmupSeconds) await loop(pool, opts, opts.warmupSeconds, [], [], { errors: 0 });
    const first: number[] = [];
    const total: number[] = [];
    const counters = { errors: 0 };
    const cpu0 = opts.cpuMs?.();
    const started = performance.now();
    await loop(pool, opts, opts.seconds, first, total, counters);
    const seconds = (performance.now() - started) / 1000;
    const cpu = cpu0 === undefined ? undefined : opts.cpuMs!() - cpu0;
    first.sort((a, b) => a - b);
    total.sort((a, b) => a - b);
    return {
      requests: first.length,
      errors: counters.errors,
      seconds,
      rps: first.length / seconds,
      p50: pct(first, 50),
      p90: pct(first, 90),
      p99: pct(first, 99),
      ...(opts.stream ? { totalP50: pct(total, 50), totalP99: pct(total, 99) } : {}),
      ...(cpu !== undefined && first.length > 0 ? { cpuUsPerRequest: (cpu * 1000) / first.length } : {}),
    };
  } finally {
    await pool.close();
  }
}

async function loop(
  pool: Pool,
  opts: LoadOptions,
  seconds: number,
  first: number[],
  total: number[],
  counters: { errors: number },
): Promise<void> {
  const until = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < until) {
      const t0 = performance.now();
      try {
        const res = await pool.request({
          path: opts.path,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: opts.body,
        });
        if (res.statusCode !== 200) {
          counters.errors++;
          await res.body.dump();
          continue;
        }
        if (!opts.stream) {
          await res.body.arrayBuffer();
          first.push(performance.now() - t0);
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
        first.push((firstAt || end) - t0);
        total.push(end - t0);
      } catch {
        counters.errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: opts.connections }, worker));
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
