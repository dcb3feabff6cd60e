import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataSource } from 'typeorm';
import { picoToUsd, usdToPico } from '../../src/common/money';
import { AppConfig } from '../../src/config/app-config';
import { validateEnv } from '../../src/config/env.schema';
import { dataSourceOptions } from '../../src/storage/data-source.options';
import type { ApiLog } from '../../src/storage/entities/api-log.entity';
import { RequestLogWriter } from '../../src/storage/request-log.writer';
import { ACCESS_ENV, adminApi } from '../helpers/access';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres';

/**
 * GET /admin/stats against a brute-force computation over the same rows: whole hours come from
 * the rollup, partial hours from api_logs, and both must add up to exactly what the rows say
 * (percentiles within the histogram's resolution). GET /admin/requests pages through them.
 */
const MODELS = 'models:\n  - id: demo/mock\n    context_length: 4096\n    route: [{ kind: mock }]\n';
const T0 = Date.UTC(2026, 0, 10, 9, 30); // 09:30 UTC on the 10th; rows run to the 13th, 14:00
const STATUSES = [200, 200, 200, 200, 200, 200, 500, 499, 429, 200];

function makeRows(keyId: string): ApiLog[] {
  const rows: ApiLog[] = [];
  for (let i = 0; i < 400; i++) {
    const status = STATUSES[i % STATUSES.length];
    const model = i % 3 === 0 ? 'acme/b' : 'acme/a';
    const stream = i % 2 === 0;
    const latency = 5 + ((i * 37) % 900) * (model === 'acme/b' ? 7 : 1);
    rows.push({
      id: `row-${String(i).padStart(4, '0')}`,
      created_at: new Date(T0 + i * 690_000), // every 11.5 minutes
      model,
      provider: status === 429 ? null : i % 4 === 0 ? 'vllm' : 'openai_compat',
      endpoint: null,
      stream,
      status_code: status,
      error: status >= 400 ? 'failed' : null,
      error_code: null,
      finish_reason: status === 200 ? 'stop' : null,
      ttft_ms: stream && status === 200 ? Math.floor(latency / 3) : null,
      latency_ms: latency,
      prompt_tokens: 10 + (i % 50),
      completion_tokens: status === 200 ? 3 + (i % 20) : 0,
      total_tokens: 0,
      cached_tokens: i % 5,
      cache_write_tokens: i % 2,
      reasoning_tokens: i % 3,
      usage_estimated: false,
      cost_usd: status === 200 ? picoToUsd(BigInt(1_000_000 + i * 12_345_678)) : '0',
      upstream_cost_usd: i % 7 === 0 ? '0.0001' : null,
      api_key_id: i % 2 === 0 ? keyId : null,
      user_id: null,
      metadata: null,
      request_content: null,
      response_content: null,
    });
    rows[i].total_tokens = rows[i].prompt_tokens + rows[i].completion_tokens;
  }
  return rows;
}

function exactPercentile(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(1, Math.ceil(p * sorted.length)) - 1];
}

function expected(rows: ApiLog[], from: number, to: number, group: (r: ApiLog) => string | null) {
  const out = new Map<string | null, ApiLog[]>();
  for (const r of rows) {
    const t = r.created_at.getTime();
    if (t < from || t >= to) continue;
    const g = group(r);
    out.set(g, [...(out.get(g) ?? []), r]);
  }
  return out;
}

interface StatsBody {
  data: Array<
    Record<string, unknown> & { group: string | null; latency_ms: Record<string, number | null>; ttft_ms: Record<string, number | null> }
  >;
  totals: Record<string, unknown>;
}

describe.each(['sqlite', 'postgres'] as const)('admin stats on %s', (backend) => {
  let gw: TestGateway;
  let pg: TestDatabase | undefined;
  let rows: ApiLog[];
  let keyId: string;
  let admin: ReturnType<typeof adminApi>;

  beforeAll(async () => {
    pg = backend === 'postgres' ? await createTestDatabase() : undefined;
    gw = await startGateway({ models: MODELS, env: { ...pg?.env, ...ACCESS_ENV } });
    admin = adminApi(gw);
    keyId = (await admin.createKey({ name: 'stats key' })).id;
    rows = makeRows(keyId);
    const writer = gw.app.get(RequestLogWriter);
    for (const r of rows) writer.enqueue({ ...r });
    await writer.drain();
    // A replayed spool that repeats rows must not count them twice.
    for (const r of rows.slice(0, 60)) writer.enqueue({ ...r });
    await writer.drain();
  });
  afterAll(async () => {
    await gw?.close();
    await pg?.drop();
  });

  const groupers = {
    model: (r: ApiLog) => r.model,
    provider: (r: ApiLog) => r.provider,
    key: (r: ApiLog) => r.api_key_id,
    day: (r: ApiLog) => r.created_at.toISOString().slice(0, 10),
  };

  const H = 3_600_000;
  const ranges: Array<[string, number, number]> = [
    ['partial hours at both ends, whole hours and whole days between', T0 + 15 * 60_000, T0 + 70 * H + 10 * 60_000],
    ['whole hours only', T0 + 30 * 60_000, T0 + 150 * 60_000],
    ['whole days only', Date.UTC(2026, 0, 11), Date.UTC(2026, 0, 13)],
    ['inside one hour', T0 + 40 * 60_000, T0 + 55 * 60_000],
    ['everything', T0 - 86_400_000, T0 + 5 * 86_400_000],
  ];

  it.each(ranges)('adds up exactly over %s, by every grouping', async (_what, from, to) => {
    for (const [by, group] of Object.entries(groupers)) {
      const res = await admin.call<StatsBody>(
        'GET',
        `/admin/stats?from=${new Date(from).toISOString()}&to=${new Date(to).toISOString()}&group_by=${by}`,
      );
      expect(res.status).toBe(200);
      const want = expected(rows, from, to, group);
      expect(res.body.data.map((d) => d.group).sort()).toEqual([...want.keys()].sort());
      for (const d of res.body.data) {
        const rs = want.get(d.group)!;
        const sum = (f: (r: ApiLog) => number) => rs.reduce((s, r) => s + f(r), 0);
        expect(d).toMatchObject({
          requests: rs.length,
          errors: rs.filter((r) => r.status_code >= 400 && r.status_code !== 499).length,
          cancelled: rs.filter((r) => r.status_code === 499).length,
          prompt_tokens: sum((r) => r.prompt_tokens),
          completion_tokens: sum((r) => r.completion_tokens),
          cached_tokens: sum((r) => r.cached_tokens),
          cache_write_tokens: sum((r) => r.cache_write_tokens),
          reasoning_tokens: sum((r) => r.reasoning_tokens),
          total_tokens: sum((r) => r.total_tokens),
        });
        const cost = picoToUsd(rs.reduce((s, r) => s + usdToPico(r.cost_usd), 0n));
        const upstream = picoToUsd(rs.reduce((s, r) => s + (r.upstream_cost_usd ? usdToPico(r.upstream_cost_usd) : 0n), 0n));
        if (backend === 'postgres') {
          expect([d.cost_usd, d.upstream_cost_usd]).toEqual([cost, upstream]);
        } else {
          // SQLite keeps decimals as binary floats.
          expect(Number(d.cost_usd)).toBeCloseTo(Number(cost), 9);
          expect(Number(d.upstream_cost_usd)).toBeCloseTo(Number(upstream), 9);
        }
        const latencies = rs.map((r) => r.latency_ms);
        const ttfts = rs.filter((r) => r.ttft_ms !== null).map((r) => r.ttft_ms!);
        expect(d.latency_ms.avg).toBe(Math.round(sum((r) => r.latency_ms) / rs.length));
        expect(d.ttft_ms.avg).toBe(ttfts.length ? Math.round(ttfts.reduce((a, b) => a + b, 0) / ttfts.length) : null);
        for (const p of ['p50', 'p95', 'p99'] as const) {
          const q = { p50: 0.5, p95: 0.95, p99: 0.99 }[p];
          for (const [got, values] of [
            [d.latency_ms[p], latencies],
            [d.ttft_ms[p], ttfts],
          ] as const) {
            const exact = exactPercentile([...values], q);
            if (exact === null) expect(got).toBeNull();
            else expect(Math.abs(got! - exact)).toBeLessThanOrEqual(Math.max(0, exact / 16));
          }
        }
      }
      expect(res.body.totals).toMatchObject({ requests: [...want.values()].reduce((s, r) => s + r.length, 0) });
    }
  });

  it('names keys when grouping by key', async () => {
    const res = await admin.call<StatsBody>('GET', `/admin/stats?from=${T0 / 1000 - 3600}&to=${T0 / 1000 + 86400}&group_by=key`);
    expect(res.body.data.find((d) => d.group === keyId)).toMatchObject({
      key_name: 'stats key',
      key_prefix: expect.stringMatching(/^hyi-/),
    });
    expect(res.body.data.find((d) => d.group === null)).toMatchObject({ key_name: null });
  });

  it('defaults to the last 24 hours by model', async () => {
    const res = await admin.call<{ group_by: string; from: string; to: string; data: unknown[] }>('GET', '/admin/stats');
    expect(res.status).toBe(200);
    expect(res.body.group_by).toBe('model');
    expect(new Date(res.body.to).getTime() - new Date(res.body.from).getTime()).toBe(86_400_000);
    expect(res.body.data).toEqual([]); // the rows are from January
  });

  it('answers bad stats queries with a 400 naming the parameter', async () => {
    for (const [query, param] of [
      ['group_by=user', 'group_by'],
      ['from=yesterday', 'from'],
      ['to=2026-13-45T99:00:00Z', 'to'],
      [`from=${new Date(T0).toISOString()}&to=${new Date(T0 - 1000).toISOString()}`, 'from'],
      ['bogus=1', 'bogus'],
    ]) {
      const res = await admin.call<{ error: { param: string; type: string } }>('GET', `/admin/stats?${query}`);
      expect([query, res.status]).toEqual([query, 400]);
      expect(res.body.error).toMatchObject({ type: 'invalid_request_error', param: expect.stringContaining(param) });
    }
  });

  it('pages through the request log newest first, with filters', async () => {
    const from = T0 + 20 * 60_000;
    const to = T0 + 40 * 3_600_000;
    const want = rows
      .filter((r) => r.model === 'acme/a' && r.created_at.getTime() >= from && r.created_at.getTime() < to)
      .sort((a, b) => b.created_at.getTime() - a.created_at.getTime() || (a.id < b.id ? 1 : -1))
      .map((r) => r.id);
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res: {
        status: number;
        body: { data: Array<{ id: string; generation_id: string; cost_usd: string }>; next_cursor: string | null; has_more: boolean };
      } = await admin.call(
        'GET',
        `/admin/requests?model=acme/a&from=${new Date(from).toISOString()}&to=${new Date(to).toISOString()}&limit=7${cursor ? `&cursor=${cursor}` : ''}`,
      );
      expect(res.status).toBe(200);
      expect(res.body.data.length).toBeLessThanOrEqual(7);
      seen.push(...res.body.data.map((d) => d.id));
      expect(res.body.data.every((d) => d.generation_id === `gen-${d.id}`)).toBe(true);
      cursor = res.body.next_cursor;
      expect(res.body.has_more).toBe(cursor !== null);
      pages++;
    } while (cursor && pages < 100);
    expect(seen).toEqual(want);

    const errors = await admin.call<{ data: Array<{ status_code: number; api_key_id: string | null }> }>(
      'GET',
      `/admin/requests?status=error&key=${keyId}&limit=500`,
    );
    const isError = (r: { status_code: number }) => r.status_code >= 400 && r.status_code !== 499;
    expect(errors.body.data.length).toBe(rows.filter((r) => isError(r) && r.api_key_id === keyId).length);
    expect(errors.body.data.every((r) => isError(r) && r.api_key_id === keyId)).toBe(true);
    // Errors as /admin/stats counts them: a client that left (499) is not one, but cancelled.
    const allErrors = await admin.call<{ data: Array<{ status_code: number }> }>('GET', '/admin/requests?status=error&limit=500');
    expect(allErrors.body.data.length).toBe(rows.filter(isError).length);
    expect(allErrors.body.data.every(isError)).toBe(true);
    const cancelled = await admin.call<{ data: Array<{ status_code: number }> }>('GET', '/admin/requests?status=cancelled&limit=500');
    expect(cancelled.body.data.length).toBe(rows.filter((r) => r.status_code === 499).length);
    expect(cancelled.body.data.every((r) => r.status_code === 499)).toBe(true);
    const exact = await admin.call<{ data: Array<{ status_code: number }> }>('GET', '/admin/requests?status=499&limit=500');
    expect(exact.body.data.length).toBe(rows.filter((r) => r.status_code === 499).length);
  });

  it('answers bad request-log queries with a 400 naming the parameter', async () => {
    for (const [query, param] of [
      ['limit=0', 'limit'],
      ['limit=many', 'limit'],
      ['status=teapot', 'status'],
      ['cursor=not-a-cursor', 'cursor'],
      // Forged cursors: a date PostgreSQL cannot store, an id with U+0000.
      [`cursor=${Buffer.from(JSON.stringify(['-271821-04-20T00:00:00Z', 'x'])).toString('base64url')}`, 'cursor'],
      [`cursor=${Buffer.from(JSON.stringify(['2026-12-06T20:00:00Z', 'a\u0000b'])).toString('base64url')}`, 'cursor'],
      ['from=never', 'from'],
      // Integers in decimal digits only.
      ['limit=0x10', 'limit'],
      ['limit=1e2', 'limit'],
      ['limit=', 'limit'],
    ]) {
      const res = await admin.call<{ error: { param: string } }>('GET', `/admin/requests?${query}`);
      expect([query, res.status]).toEqual([query, 400]);
      expect(res.body.error.param).toContain(param);
    }
    // A value that is no number is told so, not also that it is out of range either way.
    const nan = await admin.call<{ error: { message: string } }>('GET', '/admin/requests?limit=%ff');
    expect(nan.body.error.message).toBe('Invalid query: limit must be an integer number');
  });
});

describe.each(['sqlite', 'postgres'] as const)('the rollup migration on %s', (backend) => {
  it('backfills the rollup from rows logged before it existed', async () => {
    const pg = backend === 'postgres' ? await createTestDatabase() : undefined;
    const env = validateEnv({
      ...(pg?.env ?? { DB_BACKEND: 'sqlite', DB_SQLITE_PATH: join(mkdtempSync(join(tmpdir(), 'hi-backfill-')), 'db.sqlite') }),
    });
    const options = dataSourceOptions(new AppConfig(env));
    const all = options.migrations as Array<new () => { name: string }>;
    try {
      // The schema as it was before the rollup: api_logs, filled the old way (no rollup).
      const before = new DataSource({ ...options, migrations: all.filter((m) => !new m().name.includes('ApiLogsHourly')) });
      await before.initialize();
      await before.runMigrations();
      const rows = makeRows('k').slice(0, 120);
      const repo = before.getRepository('ApiLog');
      for (const r of rows) await repo.insert(r);
      await before.destroy();

      const after = new DataSource(options);
      await after.initialize();
      await after.runMigrations();
      const sums = await after.query<Array<{ requests: unknown; prompt: unknown }>>(
        "SELECT SUM(requests) AS requests, SUM(prompt_tokens) AS prompt FROM api_logs_hourly WHERE dimension = 'key'",
      );
      expect(Number(sums[0].requests)).toBe(120);
      expect(Number(sums[0].prompt)).toBe(rows.reduce((s, r) => s + r.prompt_tokens, 0));
      await after.destroy();
    } finally {
      await pg?.drop();
    }
  });
});
