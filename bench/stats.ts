// GET /admin/stats on a big request log in PostgreSQL. Seeds BENCH_STATS_ROWS api_logs rows
// (default 1,000,000) through the production insert path (so the hourly rollup is built as the
// request-log writer builds it), starts the built gateway on that database, and times
// GET /admin/stats for several ranges and groupings. For comparison it also times the single
// SQL query a rollup-less implementation would run over api_logs (percentile_cont).
//
//   npm run bench:stats
//   BENCH_STATS_ROWS=200000 BENCH_STATS_DAYS=7 npm run bench:stats
//   BENCH_STATS_KEEP=1 npm run bench:stats     # keep the database (its name is printed)
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Client } from 'pg';
import { DataSource } from 'typeorm';
import { picoToUsd } from '../src/common/money';
import { AppConfig } from '../src/config/app-config';
import { validateEnv } from '../src/config/env.schema';
import { ApiLogInserter } from '../src/storage/api-log.inserter';
import { dataSourceOptions } from '../src/storage/data-source.options';
import type { ApiLog } from '../src/storage/entities/api-log.entity';

const ROOT = resolve(__dirname, '../../..'); // bench/dist/bench -> repository root
const ROWS = Number(process.env.BENCH_STATS_ROWS ?? 1_000_000);
const DAYS = Number(process.env.BENCH_STATS_DAYS ?? 7);
const RUNS = Number(process.env.BENCH_STATS_RUNS ?? 10);
const BATCH = 2000;
const PG = {
  host: process.env.BENCH_PG_HOST ?? '127.0.0.1',
  port: Number(process.env.BENCH_PG_PORT ?? 5432),
  user: process.env.BENCH_PG_USER ?? 'postgres',
  password: process.env.BENCH_PG_PASSWORD ?? '',
};
const ADMIN_TOKEN = 'bench-admin-token-0123456789';

/** Deterministic pseudo-random numbers, so every run seeds the same rows. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/**
 * Traffic shaped like a real gateway's: 12 models, each served by 1-2 providers; 50 keys (and
 * anonymous calls), each using 2-3 models; mostly successes; log-normal latencies; 60% streams.
 */
function* seedRows(end: number): Generator<ApiLog[]> {
  const rand = rng(42);
  const models = Array.from({ length: 12 }, (_, i) => `vendor/model-${i}`);
  const providers = ['vllm', 'sglang', 'openai_compat', 'deepseek', 'openrouter'];
  const modelProviders = models.map((_, i) => (i % 3 === 0 ? [providers[i % 5], providers[(i + 1) % 5]] : [providers[i % 5]]));
  const keys = Array.from({ length: 50 }, (_, i) => `bench-key-${i}`);
  const keyModels = keys.map((_, i) => [i % 12, (i * 5 + 3) % 12, ...(i % 2 ? [(i * 7 + 1) % 12] : [])]);
  const span = DAYS * 86_400_000;
  const start = end - span;
  let batch: ApiLog[] = [];
  for (let n = 0; n < ROWS; n++) {
    const k = Math.floor(rand() * 52);
    const keyIdx = k < 50 ? k : -1; // two in 52 anonymous
    const modelIdx = keyIdx >= 0 ? keyModels[keyIdx][Math.floor(rand() * keyModels[keyIdx].length)] : Math.floor(rand() * 12);
    const provs = modelProviders[modelIdx];
    const r = rand();
    const status = r < 0.94 ? 200 : r < 0.96 ? 429 : r < 0.98 ? 502 : r < 0.99 ? 504 : 499;
    const stream = rand() < 0.6;
    const latency = Math.round(Math.exp(6.5 + 0.8 * gaussian(rand)));
    const prompt = 50 + Math.floor(rand() * 2000);
    const completion = status === 200 ? 10 + Math.floor(rand() * 800) : 0;
    batch.push({
      id: `bench-${n.toString(36).padStart(8, '0')}`,
      created_at: new Date(start + Math.floor((n / ROWS) * span)),
      model: models[modelIdx],
      provider: status === 429 ? null : provs[Math.floor(rand() * provs.length)],
      endpoint: null,
      stream,
      status_code: status,
      error: status >= 400 ? 'upstream failed' : null,
      error_code: null,
      finish_reason: status === 200 ? 'stop' : null,
      ttft_ms: stream && status === 200 ? Math.round(latency * (0.05 + rand() * 0.3)) : null,
      latency_ms: latency,
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
      cached_tokens: rand() < 0.3 ? Math.floor(prompt / 2) : 0,
      cache_write_tokens: 0,
      reasoning_tokens: rand() < 0.2 ? Math.floor(completion / 3) : 0,
      usage_estimated: false,
      cost_usd: picoToUsd(BigInt(prompt) * 150_000n + BigInt(completion) * 600_000n),
      upstream_cost_usd: null,
      api_key_id: keyIdx >= 0 ? keys[keyIdx] : null,
      user_id: null,
      metadata: { attempts: [{ route: 'r', provider: 'p', outcome: 'ok', duration_ms: latency }] },
      request_content: null,
      response_content: null,
    });
    if (batch.length === BATCH) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

function gaussian(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

async function admin(sql: string): Promise<void> {
  const c = new Client({ ...PG, database: 'postgres' });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

async function startGateway(url: string, logFile: string): Promise<{ child: ChildProcess; base: string }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'hi-bench-stats-'));
  const fd = openSync(logFile, 'w');
  const env = {
    ...process.env,
    NODE_ENV: 'production',
    PORT: String(port),
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    DATABASE_URL: url,
    ADMIN_TOKEN,
    REQUEST_LOG_SPOOL_DIR: join(dir, 'spool'),
  };
  const child = spawn(process.execPath, [join(ROOT, 'dist/main.js')], { cwd: ROOT, env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const base = `http://127.0.0.1:${port}`;
  const until = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}:\n${readFileSync(logFile, 'utf8')}`);
    try {
      if ((await fetch(`${base}/health/ready`)).ok) return { child, base };
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error(`gateway did not start:\n${readFileSync(logFile, 'utf8')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface Timing {
  scenario: string;
  runs: number;
  min_ms: number;
  p50_ms: number;
  max_ms: number;
  groups?: number;
  requests?: number;
}

function summarise(scenario: string, ms: number[], extra: Partial<Timing> = {}): Timing {
  const s = [...ms].sort((a, b) => a - b);
  const round = (v: number) => Math.round(v * 10) / 10;
  return {
    scenario,
    runs: s.length,
    min_ms: round(s[0]),
    p50_ms: round(s[Math.floor((s.length - 1) / 2)]),
    max_ms: round(s[s.length - 1]),
    ...extra,
  };
}

async function timeStats(base: string, scenario: string, query: string): Promise<Timing> {
  const get = async () => {
    const t = performance.now();
    const res = await fetch(`${base}/admin/stats?${query}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    const body = (await res.json()) as { data: unknown[]; totals: { requests: number } };
    const ms = performance.now() - t;
    if (res.status !== 200) throw new Error(`GET /admin/stats?${query} answered ${res.status}: ${JSON.stringify(body)}`);
    return { ms, body };
  };
  await get(); // warm-up: plans cached, pages in shared buffers
  await get();
  const ms: number[] = [];
  let last: { data: unknown[]; totals: { requests: number } } | undefined;
  for (let i = 0; i < RUNS; i++) {
    const r = await get();
    ms.push(r.ms);
    last = r.body;
  }
  return summarise(scenario, ms, { groups: last?.data.length, requests: last?.totals.requests });
}

async function timeSql(ds: DataSource, scenario: string, sql: string, params: unknown[]): Promise<Timing> {
  await ds.query(sql, params);
  const ms: number[] = [];
  for (let i = 0; i < Math.min(RUNS, 3); i++) {
    const t = performance.now();
    await ds.query(sql, params);
    ms.push(performance.now() - t);
  }
  return summarise(scenario, ms);
}

async function main(): Promise<void> {
  const name = `hi_bench_stats_${process.pid}`;
  await admin(`CREATE DATABASE "${name}"`);
  const url = `postgres://${PG.user}${PG.password ? `:${PG.password}` : ''}@${PG.host}:${PG.port}/${name}`;
  console.log(`database ${name}: seeding ${ROWS.toLocaleString('en')} api_logs rows over ${DAYS} days`);
  const config = new AppConfig(validateEnv({ DATABASE_URL: url }));
  const ds = new DataSource(dataSourceOptions(config));
  let gateway: ChildProcess | undefined;
  try {
    await ds.initialize();
    await ds.runMigrations();
    const inserter = new ApiLogInserter(ds, config.storeContentLimitBytes);
    const end = Math.floor(Date.now() / 3_600_000) * 3_600_000;
    const t0 = performance.now();
    let done = 0;
    for (const batch of seedRows(end)) {
      await inserter.insert(batch);
      done += batch.length;
      if (done % 100_000 === 0)
        console.log(
          `  ${done.toLocaleString('en')} rows, ${Math.round(done / ((performance.now() - t0) / 1000)).toLocaleString('en')} rows/s`,
        );
    }
    const seedSeconds = (performance.now() - t0) / 1000;
    await ds.query('VACUUM ANALYZE api_logs');
    await ds.query('VACUUM ANALYZE api_logs_hourly');
    const [{ n: rollupRows }] = await ds.query<Array<{ n: string }>>('SELECT count(*) AS n FROM api_logs_hourly');
    const [{ logs, hourly }] = await ds.query<Array<{ logs: string; hourly: string }>>(
      `SELECT pg_size_pretty(pg_total_relation_size('api_logs')) AS logs, pg_size_pretty(pg_total_relation_size('api_logs_hourly')) AS hourly`,
    );
    console.log(
      `seeded in ${seedSeconds.toFixed(1)} s (through the request-log inserter, rollup included); api_logs ${logs}, api_logs_hourly ${hourly} (${Number(rollupRows).toLocaleString('en')} rows)`,
    );

    const logFile = join(mkdtempSync(join(tmpdir(), 'hi-bench-stats-log-')), 'gateway.log');
    const g = await startGateway(url, logFile);
    gateway = g.child;
    const iso = (ms: number) => new Date(ms).toISOString();
    const from = end - DAYS * 86_400_000;
    const results: Timing[] = [];
    for (const by of ['model', 'provider', 'key', 'day'])
      results.push(await timeStats(g.base, `all ${DAYS} days, group_by=${by}`, `from=${iso(from)}&to=${iso(end)}&group_by=${by}`));
    // Ranges that start and end inside an hour: the partial hours are read from api_logs.
    results.push(
      await timeStats(
        g.base,
        `all ${DAYS} days, unaligned ends (17 min and 43 min of raw rows), group_by=model`,
        `from=${iso(from + 17 * 60_000)}&to=${iso(end - 17 * 60_000)}&group_by=model`,
      ),
    );
    results.push(
      await timeStats(
        g.base,
        'last 24 hours, unaligned ends, group_by=model',
        `from=${iso(end - 86_400_000 + 17 * 60_000)}&to=${iso(end - 17 * 60_000)}&group_by=model`,
      ),
    );
    results.push(
      await timeStats(
        g.base,
        'one hour inside api_logs only (no whole hour), group_by=key',
        `from=${iso(end - 3_600_000 + 60_000)}&to=${iso(end - 60_000)}&group_by=key`,
      ),
    );

    // What the same statistics cost without the rollup: one query over api_logs.
    const raw = await timeSql(
      ds,
      `without the rollup: one SQL query over api_logs, all ${DAYS} days by model (percentile_cont)`,
      `SELECT model, count(*), count(*) FILTER (WHERE status_code >= 400 AND status_code <> 499), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd),
        percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms), percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ttft_ms)
       FROM api_logs WHERE created_at >= $1 AND created_at < $2 GROUP BY model`,
      [new Date(from), new Date(end)],
    );
    results.push(raw);

    console.log('\n| scenario | groups | requests | min ms | median ms | max ms |\n|---|---:|---:|---:|---:|---:|');
    for (const r of results)
      console.log(
        `| ${r.scenario} | ${r.groups ?? ''} | ${r.requests?.toLocaleString('en') ?? ''} | ${r.min_ms} | ${r.p50_ms} | ${r.max_ms} |`,
      );
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    const out = {
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version },
      rows: ROWS,
      days: DAYS,
      seed_seconds: Math.round(seedSeconds * 10) / 10,
      api_logs_size: logs,
      api_logs_hourly_size: hourly,
      api_logs_hourly_rows: Number(rollupRows),
      results,
    };
    writeFileSync(join(ROOT, 'bench/results/stats-latest.json'), `${JSON.stringify(out, null, 2)}\n`);
  } finally {
    gateway?.kill('SIGTERM');
    if (gateway) await new Promise((r) => gateway!.once('exit', r));
    await ds.destroy().catch(() => undefined);
    if (process.env.BENCH_STATS_KEEP) console.log(`kept database ${name}`);
    else await admin(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
