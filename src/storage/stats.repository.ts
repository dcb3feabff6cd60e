import { Injectable } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { picoToUsd, usdToPico } from '../common/money';
import { sqliteTimestamp, toDate } from './api-log-rollup';
import { decodeCursor, encodeCursor } from './page-cursor';
import { databaseUnreachable } from './database-outage';
import { DatabaseService } from './database.service';
import type { Dialect } from './dialect';
import { ApiKey } from './entities/api-key.entity';
import { ApiLog } from './entities/api-log.entity';
import { addValue, mergeInto, percentile, type Histogram } from './latency-histogram';
import { RequestLogWriter } from './request-log.writer';

export const STATS_GROUPS = ['model', 'provider', 'key', 'day'] as const;
export type StatsGroup = (typeof STATS_GROUPS)[number];

export interface Percentiles {
  avg: number | null;
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface StatsRow {
  /** The model, provider, key id or UTC day; null for "none" (no provider, anonymous). */
  group: string | null;
  requests: number;
  /** Status >= 400 except 499. */
  errors: number;
  /** The client left before the answer was complete (499). */
  cancelled: number;
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
  cache_write_tokens: number;
  reasoning_tokens: number;
  total_tokens: number;
  cost_usd: string;
  upstream_cost_usd: string;
  latency_ms: Percentiles;
  ttft_ms: Percentiles;
  key_name?: string | null;
  key_prefix?: string | null;
}

export interface StatsResult {
  from: string;
  to: string;
  group_by: StatsGroup;
  data: StatsRow[];
  totals: Omit<StatsRow, 'group'>;
}

export interface RequestFilter {
  from?: Date;
  to?: Date;
  keyId?: string;
  model?: string;
  /** An exact status, or every success (< 400) or every error (>= 400). */
  status?: number | 'success' | 'error' | 'cancelled';
  limit: number;
  cursor?: string;
}

export interface RequestPage {
  data: ApiLog[];
  next_cursor: string | null;
}

interface Acc {
  requests: number;
  errors: number;
  cancelled: number;
  prompt: number;
  completion: number;
  cached: number;
  cacheWrite: number;
  reasoning: number;
  cost: bigint;
  upstreamCost: bigint;
  latencySum: number;
  ttftCount: number;
  ttftSum: number;
  latency: Histogram;
  ttft: Histogram;
}

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

interface RollupRange {
  dimension: string;
  from: number;
  to: number;
}
type Sum =
  | 'requests'
  | 'errors'
  | 'cancelled'
  | 'prompt'
  | 'completion'
  | 'cached'
  | 'cache_write'
  | 'reasoning'
  | 'latency_sum'
  | 'ttft_count'
  | 'ttft_sum';

const newAcc = (): Acc => ({
  requests: 0,
  errors: 0,
  cancelled: 0,
  prompt: 0,
  completion: 0,
  cached: 0,
  cacheWrite: 0,
  reasoning: 0,
  cost: 0n,
  upstreamCost: 0n,
  latencySum: 0,
  ttftCount: 0,
  ttftSum: 0,
  latency: new Map(),
  ttft: new Map(),
});

function pico(value: unknown): bigint {
  if (value === null || value === undefined || value === '') return 0n;
  try {
    return usdToPico(typeof value === 'number' ? value : String(value));
  } catch {
    return 0n;
  }
}

/**
 * The read side of the request log: statistics, request listings, single generations and the
 * spend of a key. Statistics over whole hours read the hourly rollup (a row per hour and model,
 * provider or key); the partial hours at either end of a range read `api_logs` through its
 * created_at index, so the cost grows with the number of hours and groups, not of requests.
 */
@Injectable()
export class StatsRepository {
  constructor(
    private readonly db: DatabaseService,
    private readonly writer: RequestLogWriter,
  ) {}

  private source(): DataSource {
    const ds = this.db.dataSource;
    if (!ds) throw databaseUnreachable();
    return ds;
  }

  async stats(from: Date, to: Date, groupBy: StatsGroup): Promise<StatsResult> {
    const ds = this.source();
    const dialect = this.db.dialect;
    const sql = new Sql(dialect);
    const groups = new Map<string, Acc>();
    const acc = (g: unknown) => {
      const k = g === null || g === undefined ? '' : String(g);
      let a = groups.get(k);
      if (!a) groups.set(k, (a = newAcc()));
      return a;
    };

    // Whole days from the daily rows, whole hours from the hourly ones, the rest from api_logs.
    const f = from.getTime();
    const t = to.getTime();
    const h0 = Math.ceil(f / HOUR_MS) * HOUR_MS;
    const h1 = Math.floor(t / HOUR_MS) * HOUR_MS;
    const base = groupBy === 'day' ? 'model' : groupBy; // days are summed from the per-model rows
    const raw: Array<[Date, Date]> = [];
    const rolled: RollupRange[] = [];
    if (h0 < h1) {
      if (f < h0) raw.push([from, new Date(h0)]);
      if (h1 < t) raw.push([new Date(h1), to]);
      const d0 = Math.ceil(h0 / DAY_MS) * DAY_MS;
      const d1 = Math.floor(h1 / DAY_MS) * DAY_MS;
      if (d0 < d1) {
        rolled.push({ dimension: `${base}@day`, from: d0, to: d1 });
        if (h0 < d0) rolled.push({ dimension: base, from: h0, to: d0 });
        if (d1 < h1) rolled.push({ dimension: base, from: d1, to: h1 });
      } else {
        rolled.push({ dimension: base, from: h0, to: h1 });
      }
    } else {
      raw.push([from, to]);
    }
    const jobs: Array<Promise<void>> = [];
    if (rolled.length > 0) jobs.push(this.fromRollup(ds, sql, groupBy, rolled, acc));
    if (raw.length > 0) jobs.push(this.fromLogs(ds, sql, groupBy, raw, acc));
    await Promise.all(jobs);

    const totals = newAcc();
    const data: StatsRow[] = [];
    for (const [g, a] of groups) {
      if (a.requests === 0) continue;
      mergeAcc(totals, a);
      data.push({ group: g === '' ? null : g, ...present(a) });
    }
    if (groupBy === 'day') data.sort((x, y) => String(x.group).localeCompare(String(y.group)));
    else data.sort((x, y) => y.requests - x.requests || String(x.group).localeCompare(String(y.group)));
    if (groupBy === 'key') await this.nameKeys(data);
    return { from: from.toISOString(), to: to.toISOString(), group_by: groupBy, data, totals: present(totals) };
  }

  private async fromRollup(ds: DataSource, sql: Sql, groupBy: StatsGroup, ranges: RollupRange[], into: (g: unknown) => Acc): Promise<void> {
    // By day: rows come back per hour (or day) and are put in their UTC day here.
    const g = groupBy === 'day' ? 'r."hour"' : 'r."value"';
    const acc =
      groupBy === 'day'
        ? (h: unknown) =>
            into(
              toDate(h as Date | string)
                .toISOString()
                .slice(0, 10),
            )
        : into;
    const params: unknown[] = [];
    const where = ranges
      .map((r) => {
        params.push(r.dimension, sql.date(new Date(r.from)), sql.date(new Date(r.to)));
        const n = params.length;
        return `(r."dimension" = ${sql.p(n - 2)} AND r."hour" >= ${sql.p(n - 1)} AND r."hour" < ${sql.p(n)})`;
      })
      .join(' OR ');
    const [scalars, latency, ttft] = await Promise.all([
      ds.query(
        `SELECT ${g} AS g, SUM("requests") AS requests, SUM("errors") AS errors, SUM("cancelled") AS cancelled, SUM("prompt_tokens") AS prompt, SUM("completion_tokens") AS completion, ` +
          `SUM("cached_tokens") AS cached, SUM("cache_write_tokens") AS cache_write, SUM("reasoning_tokens") AS reasoning, ${sql.moneySum('cost_usd')} AS cost, ${sql.moneySum('upstream_cost_usd')} AS upstream_cost, ` +
          `SUM("latency_ms_sum") AS latency_sum, SUM("ttft_count") AS ttft_count, SUM("ttft_ms_sum") AS ttft_sum FROM "api_logs_hourly" r WHERE ${where} GROUP BY 1`,
        params,
      ),
      ds.query(
        `SELECT ${g} AS g, h.key AS b, SUM(${sql.jsonInt('h.value')}) AS n FROM "api_logs_hourly" r, ${sql.jsonEach('r."latency_hist"')} h WHERE (${where}) GROUP BY 1, 2`,
        params,
      ),
      ds.query(
        `SELECT ${g} AS g, h.key AS b, SUM(${sql.jsonInt('h.value')}) AS n FROM "api_logs_hourly" r, ${sql.jsonEach('r."ttft_hist"')} h WHERE (${where}) GROUP BY 1, 2`,
        params,
      ),
    ]);
    for (const r of scalars as Array<Record<string, unknown>>) addScalars(acc(r.g), r);
    for (const r of latency as Array<{ g: unknown; b: unknown; n: unknown }>)
      mergeInto(acc(r.g).latency, new Map([[Number(r.b), Number(r.n)]]));
    for (const r of ttft as Array<{ g: unknown; b: unknown; n: unknown }>) mergeInto(acc(r.g).ttft, new Map([[Number(r.b), Number(r.n)]]));
  }

  /** Partial hours straight from api_logs; latencies grouped by value (a few thousand distinct at most) and bucketed here. */
  private async fromLogs(
    ds: DataSource,
    sql: Sql,
    groupBy: StatsGroup,
    ranges: Array<[Date, Date]>,
    acc: (g: unknown) => Acc,
  ): Promise<void> {
    const g = sql.group(groupBy);
    const params: unknown[] = [];
    const where = ranges
      .map(([a, b]) => {
        params.push(sql.date(a), sql.date(b));
        return `("created_at" >= ${sql.p(params.length - 1)} AND "created_at" < ${sql.p(params.length)})`;
      })
      .join(' OR ');
    const [scalars, latency, ttft] = await Promise.all([
      ds.query(
        `SELECT ${g} AS g, COUNT(*) AS requests, SUM(CASE WHEN "status_code" >= 400 AND "status_code" <> 499 THEN 1 ELSE 0 END) AS errors, SUM(CASE WHEN "status_code" = 499 THEN 1 ELSE 0 END) AS cancelled, ` +
          `SUM("prompt_tokens") AS prompt, SUM("completion_tokens") AS completion, SUM("cached_tokens") AS cached, SUM("cache_write_tokens") AS cache_write, SUM("reasoning_tokens") AS reasoning, ` +
          `${sql.moneySum('cost_usd')} AS cost, ${sql.moneySum('upstream_cost_usd')} AS upstream_cost, SUM("latency_ms") AS latency_sum, COUNT("ttft_ms") AS ttft_count, SUM("ttft_ms") AS ttft_sum ` +
          `FROM "api_logs" WHERE ${where} GROUP BY 1`,
        params,
      ),
      ds.query(`SELECT ${g} AS g, "latency_ms" AS v, COUNT(*) AS n FROM "api_logs" WHERE ${where} GROUP BY 1, 2`, params),
      ds.query(
        `SELECT ${g} AS g, "ttft_ms" AS v, COUNT(*) AS n FROM "api_logs" WHERE (${where}) AND "ttft_ms" IS NOT NULL GROUP BY 1, 2`,
        params,
      ),
    ]);
    for (const r of scalars as Array<Record<string, unknown>>) addScalars(acc(r.g), r);
    for (const r of latency as Array<{ g: unknown; v: unknown; n: unknown }>) addValue(acc(r.g).latency, Number(r.v), Number(r.n));
    for (const r of ttft as Array<{ g: unknown; v: unknown; n: unknown }>) addValue(acc(r.g).ttft, Number(r.v), Number(r.n));
  }

  private async nameKeys(rows: StatsRow[]): Promise<void> {
    const names = await this.keyNames(rows.map((r) => r.group).filter((g): g is string => g !== null));
    for (const r of rows) {
      const n = r.group === null ? undefined : names.get(r.group);
      r.key_name = n?.name ?? null;
      r.key_prefix = n?.key_prefix ?? null;
    }
  }

  /** Request-log rows, newest first, a page at a time (keyset pagination on created_at, id). */
  async requests(f: RequestFilter): Promise<RequestPage> {
    const ds = this.source();
    const qb = ds
      .getRepository(ApiLog)
      .createQueryBuilder('l')
      .select(COLUMNS.map((c) => `l.${c}`))
      .orderBy('l.created_at', 'DESC')
      .addOrderBy('l.id', 'DESC')
      .limit(f.limit + 1);
    if (f.from) qb.andWhere('l.created_at >= :from', { from: f.from });
    if (f.to) qb.andWhere('l.created_at < :to', { to: f.to });
    if (f.keyId) qb.andWhere('l.api_key_id = :keyId', { keyId: f.keyId });
    if (f.model) qb.andWhere('l.model = :model', { model: f.model });
    if (f.status === 'success') qb.andWhere('l.status_code < 400');
    // As /admin/stats counts them: a client that left (499) is cancelled, not an error.
    else if (f.status === 'error') qb.andWhere('l.status_code >= 400 AND l.status_code <> 499');
    else if (f.status === 'cancelled') qb.andWhere('l.status_code = 499');
    else if (typeof f.status === 'number') qb.andWhere('l.status_code = :status', { status: f.status });
    if (f.cursor) {
      const c = decodeCursor(f.cursor);
      qb.andWhere('(l.created_at < :cAt OR (l.created_at = :cAt AND l.id < :cId))', { cAt: c.at, cId: c.id });
    }
    const rows = await qb.getMany();
    const more = rows.length > f.limit;
    const data = more ? rows.slice(0, f.limit) : rows;
    const last = data[data.length - 1];
    return { data, next_cursor: more && last ? encodeCursor(last.created_at, last.id) : null };
  }

  /**
   * One request-log row by id (from the writer's queue if it is not written yet), with the
   * columns read from a written row: a queued row holds its bodies whole, as the client sent and
   * got them (up to BODY_LIMIT), which the database row never would (DB_STORE_CONTENT_LIMIT), and
   * the lookup of a written row does not read them at all.
   */
  async findLog(id: string): Promise<ApiLog | undefined> {
    const queued = this.writer.queued(id);
    if (queued) return Object.fromEntries(COLUMNS.map((c) => [c, queued[c]])) as unknown as ApiLog;
    const row = await this.source()
      .getRepository(ApiLog)
      .createQueryBuilder('l')
      .select(COLUMNS.map((c) => `l.${c}`))
      .where('l.id = :id', { id })
      .getOne();
    return row ?? undefined;
  }

  /**
   * USD (pico-dollars) a key spent since `since` (an hour boundary): the rollup, and this
   * process's queued rows (RequestLogWriter.pendingSpend), read after the query so that a row
   * is never counted in both.
   */
  async spendSince(keyId: string, since: Date): Promise<bigint> {
    const ds = this.source();
    const sql = new Sql(this.db.dialect);
    const rows = await ds.query<Array<{ s: unknown }>>(
      `SELECT ${sql.moneySum('cost_usd')} AS s FROM "api_logs_hourly" WHERE "dimension" = 'key' AND "value" = ${sql.p(1)} AND "hour" >= ${sql.p(2)}`,
      [keyId, sql.date(since)],
    );
    return pico(rows[0]?.s) + this.writer.pendingSpend(keyId, since);
  }

  /** Keys by id (names for listings). */
  async keyNames(ids: string[]): Promise<Map<string, Pick<ApiKey, 'id' | 'name' | 'key_prefix'>>> {
    const out = new Map<string, Pick<ApiKey, 'id' | 'name' | 'key_prefix'>>();
    if (ids.length === 0) return out;
    const ds = this.source();
    const sql = new Sql(this.db.dialect);
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += 500) {
      const chunk = unique.slice(i, i + 500);
      const rows = await ds.query<Array<Pick<ApiKey, 'id' | 'name' | 'key_prefix'>>>(
        `SELECT "id", "name", "key_prefix" FROM "api_keys" WHERE "id" IN (${chunk.map((_, j) => sql.p(j + 1)).join(', ')})`,
        chunk,
      );
      for (const r of rows) out.set(r.id, r);
    }
    return out;
  }
}

/** Every api_logs column but the (optional, possibly large) request and response bodies. */
const COLUMNS = [
  'id',
  'created_at',
  'model',
  'provider',
  'endpoint',
  'stream',
  'status_code',
  'error',
  'error_code',
  'finish_reason',
  'ttft_ms',
  'latency_ms',
  'prompt_tokens',
  'completion_tokens',
  'total_tokens',
  'cached_tokens',
  'cache_write_tokens',
  'reasoning_tokens',
  'usage_estimated',
  'cost_usd',
  'upstream_cost_usd',
  'api_key_id',
  'user_id',
  'metadata',
] as const;

/** The SQL that differs between PostgreSQL and SQLite. */
class Sql {
  constructor(readonly dialect: Dialect) {}

  get pg(): boolean {
    return this.dialect === 'postgres';
  }

  p(n: number): string {
    return this.pg ? `$${n}` : '?';
  }

  date(d: Date): Date | string {
    return this.pg ? d : sqliteTimestamp(d);
  }

  /** Exact on PostgreSQL (numeric, as text); SQLite sums decimals as floats. */
  moneySum(column: string): string {
    return this.pg ? `COALESCE(SUM("${column}"), 0)::text` : `COALESCE(SUM("${column}"), 0)`;
  }

  jsonEach(column: string): string {
    return this.pg ? `jsonb_each_text(${column})` : `json_each(${column})`;
  }

  jsonInt(expr: string): string {
    return this.pg ? `${expr}::bigint` : expr;
  }

  /** The grouping expression over api_logs rows. */
  group(by: StatsGroup): string {
    switch (by) {
      case 'model':
        return '"model"';
      case 'provider':
        return `COALESCE("provider", '')`;
      case 'key':
        return `COALESCE("api_key_id", '')`;
      case 'day':
        return this.pg ? `to_char("created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD')` : `substr("created_at", 1, 10)`;
    }
  }
}

function addScalars(a: Acc, r: Record<string, unknown>): void {
  const n = (k: Sum) => Number(r[k] ?? 0) || 0;
  a.requests += n('requests');
  a.errors += n('errors');
  a.cancelled += n('cancelled');
  a.prompt += n('prompt');
  a.completion += n('completion');
  a.cached += n('cached');
  a.cacheWrite += n('cache_write');
  a.reasoning += n('reasoning');
  a.cost += pico(r.cost);
  a.upstreamCost += pico(r.upstream_cost);
  a.latencySum += n('latency_sum');
  a.ttftCount += n('ttft_count');
  a.ttftSum += n('ttft_sum');
}

function mergeAcc(into: Acc, a: Acc): void {
  into.requests += a.requests;
  into.errors += a.errors;
  into.cancelled += a.cancelled;
  into.prompt += a.prompt;
  into.completion += a.completion;
  into.cached += a.cached;
  into.cacheWrite += a.cacheWrite;
  into.reasoning += a.reasoning;
  into.cost += a.cost;
  into.upstreamCost += a.upstreamCost;
  into.latencySum += a.latencySum;
  into.ttftCount += a.ttftCount;
  into.ttftSum += a.ttftSum;
  mergeInto(into.latency, a.latency);
  mergeInto(into.ttft, a.ttft);
}

function present(a: Acc): Omit<StatsRow, 'group'> {
  const spread = (h: Histogram, sum: number, count: number): Percentiles => ({
    avg: count > 0 ? Math.round(sum / count) : null,
    p50: percentile(h, 0.5),
    p95: percentile(h, 0.95),
    p99: percentile(h, 0.99),
  });
  return {
    requests: a.requests,
    errors: a.errors,
    cancelled: a.cancelled,
    prompt_tokens: a.prompt,
    completion_tokens: a.completion,
    cached_tokens: a.cached,
    cache_write_tokens: a.cacheWrite,
    reasoning_tokens: a.reasoning,
    total_tokens: a.prompt + a.completion,
    cost_usd: picoToUsd(a.cost),
    upstream_cost_usd: picoToUsd(a.upstreamCost),
    latency_ms: spread(a.latency, a.latencySum, a.requests),
    ttft_ms: spread(a.ttft, a.ttftSum, a.ttftCount),
  };
}
