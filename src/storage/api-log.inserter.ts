import type { Database, Statement } from 'better-sqlite3';
import type { DataSource } from 'typeorm';
import type { ColumnMetadata } from 'typeorm/metadata/ColumnMetadata';
import { ApiLog } from './entities/api-log.entity';
import { rollupDeltas, SqliteRollup, upsertRollupPostgres } from './api-log-rollup';
import { capStoredJson, StoredJson } from './stored-content';
import { wellFormed } from '../common/unicode';

/**
 * Characters of values one PostgreSQL INSERT carries at most; a batch over it is split into
 * several statements in the same transaction (a larger row goes alone). PostgreSQL closes the
 * connection on a message over 1 GB, and took ~35 ms per MB here, so a batch of large bodies in
 * one statement (200 bodies of 5 MB) either looked like a database that went away or ran past
 * DB_QUERY_TIMEOUT_MS; either way it was spooled and failed the same way on every replay.
 * 4 M characters is at most 12 MB of UTF-8 (~0.4 s); ordinary batches (~1 KB a row) stay one
 * statement.
 */
const STATEMENT_CHARS = 4 * 1024 ** 2;

/**
 * Inserts request-log batches, ignoring rows already present (so a replayed spool never
 * duplicates). TypeORM's query builder re-scans its parameter list for every placeholder
 * (quadratic in rows × columns) and cost a tenth of the gateway's CPU under load, so the SQL is
 * written here; values still go through the driver's own `preparePersistentValue`, so dates,
 * booleans and JSON are stored exactly as TypeORM stores them.
 *
 * PostgreSQL: one multi-row `INSERT ... ON CONFLICT DO NOTHING` per batch (plus the rollup below).
 * SQLite: one prepared single-row statement run for each row inside one transaction — as fast,
 * and it keeps one compiled statement instead of one per batch size. better-sqlite3 is
 * synchronous: a batch of 200 holds the event loop for 5-6 ms (measured under 100 paced
 * streams). Slices of 50 rows a loop turn apart cut that to ~2 ms but cost 3.4% more CPU under
 * JSON load (four transactions and four rollup merges per batch) with no TTFT gain the bench
 * could see, so a batch stays one transaction.
 *
 * The rows actually inserted (not those already present) are added to the hourly rollup
 * (`api_logs_hourly`) in the same transaction, so statistics never count a row twice or miss one.
 */
export class ApiLogInserter {
  private readonly columns: ColumnMetadata[];
  /** Text columns, with their length limit where they have one (varchar). */
  private readonly textColumns: Array<{ key: keyof ApiLog; length?: number }>;
  /** Per column (in `columns` order): JSON? PostgreSQL's jsonb refuses the \u0000 escape and lone surrogates (cleaned on SQLite too, alike). */
  private readonly isJson: boolean[];
  /** Per column: a stored request or response body (DB_STORE_FULL_CONTENT), capped in size. */
  private readonly isContent: boolean[];
  private readonly postgres: boolean;
  private readonly head: string;
  private readonly tail: string;
  private readonly pgStatements = new Map<number, string>();
  private readonly sqlite?: { insertAll: (rows: unknown[][], entities: readonly ApiLog[]) => number };

  constructor(
    readonly ds: DataSource,
    /** DB_STORE_CONTENT_LIMIT, in bytes. */
    private readonly contentLimit: number,
    /** DB_QUERY_TIMEOUT_MS: PostgreSQL's own limit on the batch's statements (see insert). */
    private readonly statementTimeoutMs = 0,
  ) {
    const meta = ds.getMetadata(ApiLog);
    this.columns = meta.columns;
    this.textColumns = meta.columns
      .filter((c) => c.type === 'varchar' || c.type === 'text')
      .map((c) => ({ key: c.propertyName as keyof ApiLog, length: c.length ? Number(c.length) : undefined }));
    this.isJson = meta.columns.map((c) => c.type === 'jsonb' || c.type === 'simple-json');
    this.isContent = meta.columns.map((c) => c.propertyName === 'request_content' || c.propertyName === 'response_content');
    const q = (name: string) => ds.driver.escape(name);
    this.postgres = ds.options.type === 'postgres';
    // Only a row already present is skipped. (SQLite's `INSERT OR IGNORE` would also skip, without
    // a word, a row that breaks a NOT NULL or CHECK constraint; this way the database refuses it
    // and the writer sets it aside, as on PostgreSQL.)
    this.head = `INSERT INTO ${q(meta.tableName)} (${this.columns.map((c) => q(c.databaseName)).join(', ')}) VALUES `;
    this.tail = ` ON CONFLICT (${q('id')}) DO NOTHING${this.postgres ? ` RETURNING ${q('id')}` : ''}`;
    if (!this.postgres) {
      // The driver's own better-sqlite3 handle (a public field of TypeORM's SQLite drivers).
      const db = (ds.driver as unknown as { databaseConnection: Database }).databaseConnection;
      const stmt: Statement = db.prepare(`${this.head}(${this.columns.map(() => '?').join(', ')})${this.tail}`);
      const rollup = new SqliteRollup(db);
      this.sqlite = {
        insertAll: db.transaction((rows: unknown[][], entities: readonly ApiLog[]) => {
          const fresh = entities.filter((_, i) => stmt.run(rows[i]).changes > 0);
          if (fresh.length > 0) rollup.apply(rollupDeltas(fresh));
          return fresh.length;
        }),
      };
    }
  }

  /**
   * Returns how many rows went in: not those already present (a replayed spool's rows that an
   * earlier insert had taken). `progress` is called after each statement that completed (a long
   * batch is not a silent database).
   */
  async insert(rows: readonly ApiLog[], progress?: () => void): Promise<number> {
    if (rows.length === 0) return 0;
    for (const row of rows) this.storable(row);
    const driver = this.ds.driver;
    const { isJson, isContent, contentLimit } = this;
    // The body's JSON text is capped where the driver makes it: no second serialisation.
    const values = (row: ApiLog) =>
      this.columns.map((c, i) => {
        const raw = row[c.propertyName as keyof ApiLog] ?? null;
        // A body serialised when its row was queued goes in as that text (capped then).
        let v: unknown = raw instanceof StoredJson ? raw.text : driver.preparePersistentValue(raw, c);
        if (isContent[i] && typeof v === 'string' && !(raw instanceof StoredJson)) v = capStoredJson(v, contentLimit);
        return isJson[i] && typeof v === 'string' ? jsonbSafe(v) : v;
      });
    if (this.sqlite) return this.sqlite.insertAll(rows.map(values), rows);
    const statements = bySize(rows.map(values), Math.floor(PG_MAX_PARAMETERS / this.columns.length));
    return this.ds.transaction(async (m) => {
      // The driver's query timeout is the client's: it closes the connection, but a statement
      // waiting on a lock (VACUUM FULL, ALTER TABLE on api_logs) does not notice, and each
      // timed-out batch left a server session waiting, past the pool's size, until the lock went.
      // Set per transaction, not as a connection parameter, which PgBouncer refuses.
      if (this.statementTimeoutMs > 0) await m.query(`SET LOCAL statement_timeout = ${Math.floor(this.statementTimeoutMs)}`);
      const ids = new Set<string>();
      for (const tuples of statements) {
        const inserted = await m.query<Array<{ id: string }>>(this.pgStatement(tuples.length), tuples.flat());
        for (const r of inserted) ids.add(r.id);
        progress?.();
      }
      // Each inserted id once: a row there twice (a spool line written again after a partial
      // append) is inserted once and must be rolled up once.
      const fresh = ids.size === rows.length ? rows : rows.filter((r) => ids.delete(r.id));
      if (fresh.length > 0) await upsertRollupPostgres(m, rollupDeltas(fresh));
      return fresh.length;
    });
  }

  /**
   * Makes a row's text storable wherever it came from (the client's `user`, a model name, an
   * upstream's finish reason): PostgreSQL refuses NUL in text and values over a varchar's length,
   * and one such row would fail its whole batch. NULs and lone surrogates are made U+FFFD (so that
   * both databases store the same, valid UTF-8, and a model named "de<NUL>mo", refused, is not
   * logged as "demo"), over-long text cut to fit; the row object itself is changed, so the hourly
   * rollup sees the same values.
   */
  private storable(row: ApiLog): void {
    const r = row as unknown as Record<string, unknown>;
    for (const { key, length } of this.textColumns) {
      const value = r[key];
      if (typeof value !== 'string') continue;
      let v = value;
      if (v.includes('\0')) v = v.replaceAll('\0', '\ufffd');
      if (length !== undefined && v.length > length) v = v.slice(0, length);
      v = wellFormed(v);
      if (v !== value) r[key] = v;
    }
  }

  private pgStatement(n: number): string {
    let sql = this.pgStatements.get(n);
    if (!sql) {
      const width = this.columns.length;
      const tuples: string[] = [];
      for (let r = 0; r < n; r++) tuples.push(`(${this.columns.map((_, c) => `$${r * width + c + 1}`).join(', ')})`);
      sql = this.head + tuples.join(', ') + this.tail;
      if (this.pgStatements.size < 64) this.pgStatements.set(n, sql);
    }
    return sql;
  }
}

/** PostgreSQL's protocol counts a statement's parameters in 16 bits. */
const PG_MAX_PARAMETERS = 65_535;

/**
 * Rows' values grouped into statements of at most STATEMENT_CHARS characters (a larger row
 * alone) and `maxRows` rows (a REQUEST_LOG_BATCH_SIZE of 5,000 made 130,000 parameters, which no
 * statement takes: every batch failed as an outage and went through the spool).
 */
function bySize(tuples: unknown[][], maxRows: number): unknown[][][] {
  const out: unknown[][][] = [];
  let group: unknown[][] = [];
  let chars = 0;
  for (const tuple of tuples) {
    let n = 0;
    for (const v of tuple) if (typeof v === 'string') n += v.length;
    if (group.length > 0 && (chars + n > STATEMENT_CHARS || group.length >= maxRows)) {
      out.push(group);
      group = [];
      chars = 0;
    }
    group.push(tuple);
    chars += n;
  }
  if (group.length > 0) out.push(group);
  return out;
}

/**
 * JSON text that jsonb takes: a `\u0000` escape (NUL inside a string, which jsonb refuses) and a
 * lone surrogate's escape (`\ud800`: half of a UTF-16 pair, from an upstream's broken text) as
 * U+FFFD, as a UTF-8 encoder writes the latter. JSON.stringify escapes only lone surrogates, never a
 * whole pair. An escape is a backslash run of odd length; an even run is escaped backslashes
 * followed by literal text, which stays.
 */
export function jsonbSafe(json: string): string {
  if (!json.includes('\\u0000') && !/\\u[dD][89a-fA-F]/.test(json)) return json;
  return json.replace(/(\\+)u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})/g, (m: string, slashes: string) =>
    slashes.length % 2 === 0 ? m : `${slashes.slice(1)}\\ufffd`,
  );
}
