import type { Database, Statement } from 'better-sqlite3';
import type { EntityManager, QueryRunner } from 'typeorm';
import { picoToUsd, usdToPico } from '../common/money';
import { bucketOf, fromJson, mergeInto, toJson, type Histogram } from './latency-histogram';
import type { Dialect } from './dialect';
import type { RollupDimension } from './entities/api-log-hourly.entity';

/** The columns of an api_logs row the rollup sums. */
export interface RollupSource {
  created_at: Date | string;
  model: string;
  provider: string | null;
  api_key_id: string | null;
  status_code: number;
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
  cache_write_tokens: number;
  reasoning_tokens: number;
  cost_usd: string | number | null;
  upstream_cost_usd: string | number | null;
  latency_ms: number;
  ttft_ms: number | null;
}

/** What a set of rows adds to one api_logs_hourly row. */
export interface RollupDelta {
  dimension: RollupDimension;
  hour: Date;
  value: string;
  requests: number;
  errors: number;
  cancelled: number;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  cacheWriteTokens: number;
  reasoningTokens: number;
  costPico: bigint;
  upstreamCostPico: bigint;
  latencySum: number;
  ttftCount: number;
  ttftSum: number;
  latencyHist: Histogram;
  ttftHist: Histogram;
}

const HOUR_MS = 3_600_000;

const DAY_MS = 86_400_000;

export function hourOf(date: Date): Date {
  return new Date(Math.floor(date.getTime() / HOUR_MS) * HOUR_MS);
}

function dayOf(date: Date): Date {
  return new Date(Math.floor(date.getTime() / DAY_MS) * DAY_MS);
}

/** A stored timestamp as a Date (SQLite hands back 'YYYY-MM-DD HH:MM:SS.SSS' in UTC). */
export function toDate(value: Date | string): Date {
  if (value instanceof Date) return value;
  return new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value.replace(' ', 'T')}Z`);
}

function money(value: string | number | null): bigint {
  if (value === null || value === undefined || value === '') return 0n;
  try {
    return usdToPico(value);
  } catch {
    return 0n;
  }
}

/**
 * Sums rows into one delta per (dimension, hour, value) — each row counts for its model, its
 * provider and its key, in its hour and in its day — ordered by that key so that concurrent
 * writers lock rollup rows in the same order (no deadlocks).
 */
export function rollupDeltas(rows: readonly RollupSource[]): RollupDelta[] {
  const groups = new Map<string, RollupDelta>();
  for (const r of rows) {
    // Each row is read once and added to its six groups.
    const at = toDate(r.created_at);
    const hour = hourOf(at);
    const day = dayOf(at);
    const hourKey = String(hour.getTime()).padStart(15, '0');
    const dayKey = String(day.getTime()).padStart(15, '0');
    const v = rowValues(r);
    const provider = r.provider ?? '';
    const key = r.api_key_id ?? '';
    addRow(groups, 'model', hour, hourKey, r.model, v);
    addRow(groups, 'model@day', day, dayKey, r.model, v);
    addRow(groups, 'provider', hour, hourKey, provider, v);
    addRow(groups, 'provider@day', day, dayKey, provider, v);
    addRow(groups, 'key', hour, hourKey, key, v);
    addRow(groups, 'key@day', day, dayKey, key, v);
  }
  return [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, d]) => d);
}

/** What one row adds to each of its groups. */
interface RowValues {
  error: boolean;
  cancelled: boolean;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  cacheWriteTokens: number;
  reasoningTokens: number;
  costPico: bigint;
  upstreamCostPico: bigint;
  latency: number;
  latencyBucket: number;
  ttft: number | undefined;
  ttftBucket: number;
}

function rowValues(r: RollupSource): RowValues {
  const status = Number(r.status_code);
  const latency = Math.max(0, Number(r.latency_ms) || 0);
  const ttft = r.ttft_ms !== null && r.ttft_ms !== undefined ? Math.max(0, Number(r.ttft_ms) || 0) : undefined;
  return {
    cancelled: status === 499,
    error: status !== 499 && status >= 400,
    promptTokens: Number(r.prompt_tokens) || 0,
    completionTokens: Number(r.completion_tokens) || 0,
    cachedTokens: Number(r.cached_tokens) || 0,
    cacheWriteTokens: Number(r.cache_write_tokens) || 0,
    reasoningTokens: Number(r.reasoning_tokens) || 0,
    costPico: money(r.cost_usd),
    upstreamCostPico: money(r.upstream_cost_usd),
    latency,
    latencyBucket: bucketOf(latency),
    ttft,
    ttftBucket: ttft === undefined ? 0 : bucketOf(ttft),
  };
}

function addRow(
  groups: Map<string, RollupDelta>,
  dimension: RollupDimension,
  hour: Date,
  hourKey: string,
  value: string,
  v: RowValues,
): void {
  const id = `${dimension}\u0000${hourKey}\u0000${value}`;
  let d = groups.get(id);
  if (!d) {
    d = {
      dimension,
      hour,
      value,
      requests: 0,
      errors: 0,
      cancelled: 0,
      promptTokens: 0,
      completionTokens: 0,
      cachedTokens: 0,
      cacheWriteTokens: 0,
      reasoningTokens: 0,
      costPico: 0n,
      upstreamCostPico: 0n,
      latencySum: 0,
      ttftCount: 0,
      ttftSum: 0,
      latencyHist: new Map(),
      ttftHist: new Map(),
    };
    groups.set(id, d);
  }
  d.requests++;
  if (v.cancelled) d.cancelled++;
  else if (v.error) d.errors++;
  d.promptTokens += v.promptTokens;
  d.completionTokens += v.completionTokens;
  d.cachedTokens += v.cachedTokens;
  d.cacheWriteTokens += v.cacheWriteTokens;
  d.reasoningTokens += v.reasoningTokens;
  if (v.costPico !== 0n) d.costPico += v.costPico;
  if (v.upstreamCostPico !== 0n) d.upstreamCostPico += v.upstreamCostPico;
  d.latencySum += v.latency;
  d.latencyHist.set(v.latencyBucket, (d.latencyHist.get(v.latencyBucket) ?? 0) + 1);
  if (v.ttft !== undefined) {
    d.ttftCount++;
    d.ttftSum += v.ttft;
    d.ttftHist.set(v.ttftBucket, (d.ttftHist.get(v.ttftBucket) ?? 0) + 1);
  }
}

const COLUMNS = [
  'dimension',
  'hour',
  'value',
  'requests',
  'errors',
  'cancelled',
  'prompt_tokens',
  'completion_tokens',
  'cached_tokens',
  'cache_write_tokens',
  'reasoning_tokens',
  'cost_usd',
  'upstream_cost_usd',
  'latency_ms_sum',
  'ttft_count',
  'ttft_ms_sum',
  'latency_hist',
  'ttft_hist',
] as const;
const SUMMED = COLUMNS.slice(3, 16);
const MONEY: ReadonlySet<string> = new Set(['cost_usd', 'upstream_cost_usd']);
const PG_CHUNK = 1000;

/** SQLite's text form of a timestamp, as TypeORM writes it. */
export function sqliteTimestamp(d: Date): string {
  return d.toISOString().replace('T', ' ').replace('Z', '');
}

function values(d: RollupDelta, dialect: Dialect): unknown[] {
  return [
    d.dimension,
    dialect === 'postgres' ? d.hour : sqliteTimestamp(d.hour),
    d.value,
    d.requests,
    d.errors,
    d.cancelled,
    d.promptTokens,
    d.completionTokens,
    d.cachedTokens,
    d.cacheWriteTokens,
    d.reasoningTokens,
    picoToUsd(d.costPico),
    picoToUsd(d.upstreamCostPico),
    d.latencySum,
    d.ttftCount,
    d.ttftSum,
    JSON.stringify(toJson(d.latencyHist)),
    JSON.stringify(toJson(d.ttftHist)),
  ];
}

function pgMergeHist(column: string): string {
  return `"${column}" = (SELECT coalesce(jsonb_object_agg(k, n), '{}'::jsonb) FROM (SELECT k, sum(v::bigint) AS n FROM (SELECT * FROM jsonb_each_text("api_logs_hourly"."${column}") UNION ALL SELECT * FROM jsonb_each_text(EXCLUDED."${column}")) s(k, v) GROUP BY k) t)`;
}

const PG_UPSERT_TAIL =
  ` ON CONFLICT ("dimension", "hour", "value") DO UPDATE SET ` +
  [...SUMMED.map((c) => `"${c}" = "api_logs_hourly"."${c}" + EXCLUDED."${c}"`), pgMergeHist('latency_hist'), pgMergeHist('ttft_hist')].join(
    ', ',
  );

/** Adds deltas to api_logs_hourly on PostgreSQL (inside the caller's transaction). */
export async function upsertRollupPostgres(q: Pick<EntityManager | QueryRunner, 'query'>, deltas: readonly RollupDelta[]): Promise<void> {
  const width = COLUMNS.length;
  for (let start = 0; start < deltas.length; start += PG_CHUNK) {
    const chunk = deltas.slice(start, start + PG_CHUNK);
    const tuples = chunk.map((_, r) => `(${COLUMNS.map((_, c) => `$${r * width + c + 1}`).join(', ')})`);
    const sql = `INSERT INTO "api_logs_hourly" (${COLUMNS.map((c) => `"${c}"`).join(', ')}) VALUES ${tuples.join(', ')}${PG_UPSERT_TAIL}`;
    await q.query(
      sql,
      chunk.flatMap((d) => values(d, 'postgres')),
    );
  }
}

/**
 * SQLite's statements for the rollup, run inside the writer's transaction (which holds the write
 * lock by then): scalar sums are added by the upsert; histograms are merged here, as SQLite has
 * no way to add two JSON maps.
 */
export class SqliteRollup {
  private readonly select: Statement;
  private readonly upsert: Statement;

  constructor(db: Database) {
    this.select = db.prepare(
      `SELECT "latency_hist", "ttft_hist" FROM "api_logs_hourly" WHERE "dimension" = ? AND "hour" = ? AND "value" = ?`,
    );
    this.upsert = db.prepare(
      `INSERT INTO "api_logs_hourly" (${COLUMNS.map((c) => `"${c}"`).join(', ')}) VALUES (${COLUMNS.map(() => '?').join(', ')}) ` +
        `ON CONFLICT ("dimension", "hour", "value") DO UPDATE SET ` +
        [
          // Money in REAL: each sum snapped to whole pico-dollars, so that the rounding of one
          // addition is not carried into the next (6,000 flushes of one hour drifted 4,865
          // pico-dollars; snapped, a total under $1,000 stays exact).
          ...SUMMED.map((c) => (MONEY.has(c) ? `"${c}" = ROUND("${c}" + excluded."${c}", 12)` : `"${c}" = "${c}" + excluded."${c}"`)),
          `"latency_hist" = excluded."latency_hist"`,
          `"ttft_hist" = excluded."ttft_hist"`,
        ].join(', '),
    );
  }

  apply(deltas: readonly RollupDelta[]): void {
    for (const d of deltas) {
      const v = values(d, 'sqlite');
      const existing = this.select.get(v[0], v[1], v[2]) as { latency_hist: string; ttft_hist: string } | undefined;
      if (existing) {
        v[16] = JSON.stringify(toJson(mergeInto(fromJson(existing.latency_hist), d.latencyHist)));
        v[17] = JSON.stringify(toJson(mergeInto(fromJson(existing.ttft_hist), d.ttftHist)));
      }
      this.upsert.run(v);
    }
  }
}

/**
 * Builds the rollup from every api_logs row (the migration that creates the table runs it, so an
 * existing deployment starts with complete statistics). Reads in keyset order, a chunk at a time.
 */
export async function backfillRollup(runner: QueryRunner, dialect: Dialect, chunk = 5000): Promise<number> {
  const cols = `"id", "created_at", "model", "provider", "api_key_id", "status_code", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd", "upstream_cost_usd", "latency_ms", "ttft_ms"`;
  const pg = dialect === 'postgres';
  let after: { created_at: unknown; id: string } | undefined;
  let total = 0;
  const sqlite = pg ? undefined : (runner.connection.driver as unknown as { databaseConnection: Database }).databaseConnection;
  const rollup = sqlite ? new SqliteRollup(sqlite) : undefined;
  for (;;) {
    const where = after ? (pg ? `WHERE ("created_at", "id") > ($1, $2)` : `WHERE ("created_at", "id") > (?, ?)`) : '';
    const rows = (await runner.query(
      `SELECT ${cols} FROM "api_logs" ${where} ORDER BY "created_at", "id" LIMIT ${chunk}`,
      after ? [after.created_at, after.id] : [],
    )) as Array<RollupSource & { id: string }>;
    if (rows.length === 0) return total;
    const deltas = rollupDeltas(rows);
    if (rollup) rollup.apply(deltas);
    else await upsertRollupPostgres(runner, deltas);
    total += rows.length;
    const last = rows[rows.length - 1];
    after = { created_at: last.created_at, id: last.id };
    if (rows.length < chunk) return total;
  }
}
