import { Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { appendFileSync, createReadStream, readFileSync } from 'node:fs';
import { appendFile, mkdir, readdir, rename, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { dirname, join } from 'node:path';
import { usdToPico } from '../common/money';
import { MAX_TIMER_MS } from '../common/deadline';
import { AppConfig } from '../config/app-config';
import { MetricsService } from '../observability/metrics.service';
import { ApiLogInserter } from './api-log.inserter';
import { DatabaseService } from './database.service';
import { ApiLog } from './entities/api-log.entity';
import { splitLines } from './spool-lines';
import { capStoredJson, StoredJson } from './stored-content';

/**
 * Spool files hold what users sent and were answered (whole prompts with DB_STORE_FULL_CONTENT):
 * readable by the gateway's user only, whatever the umask. (Modes apply to what is created.)
 */
const PRIVATE_FILE = { mode: 0o600 } as const;
const PRIVATE_DIR = { recursive: true, mode: 0o700 } as const;

const SPOOL_PREFIX = 'api_logs.';
/**
 * This machine (a container's own hostname), as spool file names carry it next to the PID:
 * replicas sharing a spool volume in containers may all be PID 1, and a PID only says whether
 * a process lives on this machine.
 */
const HOST = (
  hostname()
    .replace(/[^A-Za-z0-9-]/g, '')
    .slice(0, 63) || 'host'
).toLowerCase();
/** Who writes a spool file: `<pid>-<host>`. */
const OWNER = `${process.pid}-${HOST}`;
/** Another host's spool file untouched this long is taken to be an orphan and replayed here. */
const SPOOL_ORPHAN_MS = 10 * 60_000;
/** Rows the database refused as data (never replayed by themselves; an operator looks at them). */
const REJECTED_PREFIX = 'rejected.api_logs.';
const REPLAY_BATCH = 500;
/**
 * A replay batch also closes at this many characters of spool lines: a line holds up to two
 * bodies of DB_STORE_CONTENT_LIMIT (at most 32 MB each), and 500 such lines held at once would
 * be gigabytes.
 */
const REPLAY_BATCH_CHARS = 32 * 1024 * 1024;
/** How long spoolHeld's ping may take before the database is taken to be silent. */
const HOLD_PING_MS = 2000;

/** How long shutdown waits for an insert in flight before copying its rows to the spool. */
const SHUTDOWN_INSERT_MS = 2000;

/** Rows read from a spool file, and the byte offset of each one's line (where a replay resumes). */
interface SpoolBatch {
  rows: ApiLog[];
  offsets: number[];
}

/**
 * Where the replay of a claimed spool file resumes: the byte offset its name carries
 * (`….from<offset>.jsonl`), 0 for a file never replayed. Every row before it is in the database
 * or set aside; the file itself is never changed, so a name with an older offset (a rename that
 * failed) only replays rows already present, which go in as nothing.
 */
export function spoolOffset(name: string): number {
  const m = /\.from(\d+)\.jsonl$/.exec(name);
  return m ? Number(m[1]) : 0;
}

/** A batch that failed part way: the rows not yet in the database, nor set aside as refused. */
class RowsNotWritten extends Error {
  constructor(
    override readonly cause: unknown,
    readonly rows: ApiLog[],
    /** Rows of the batch that did go in before the failure. */
    readonly written = 0,
  ) {
    super((cause as Error)?.message ?? String(cause));
  }
}

/**
 * Whether the database refused the rows' data (the row's fault) rather than failing to take
 * them at all (the database's: unreachable, silent, out of disk or connections, schema missing).
 * The row's: PostgreSQL's classes 22 (data exception: a value out of range, an invalid byte
 * sequence), 23 (integrity) and 54 (program limit exceeded: a jsonb string over 256 MB, an index
 * entry over a third of a btree page); SQLite's constraint, size and type errors; and a
 * RangeError, a value that cannot even be serialised or bound. Such a row fails the same way
 * every time, so it is tried alone once and then set aside: spooled, it would be replayed for
 * ever and hold back every row batched with it (a probe's 300 MB body, refused with 54000, kept
 * an idle gateway at 57% CPU).
 */
export function isDataError(err: unknown): boolean {
  if (err instanceof RangeError) return true;
  const e = err as { code?: unknown; driverError?: { code?: unknown } } | null;
  const code = String(e?.code ?? e?.driverError?.code ?? '');
  return /^(22|23|54)[0-9A-Z]{3}$/.test(code) || /^SQLITE_(CONSTRAINT|TOOBIG|MISMATCH)/.test(code);
}

/**
 * Whether a failure is the database's state, never a row's: it cannot be reached or answered too
 * late (08 connection, 57 operator intervention: 57P01 admin shutdown, 57014 a query cancelled,
 * a Node socket error such as ECONNREFUSED, node-postgres' "Connection terminated" and "Query
 * read timeout"), it is out of something (53 insufficient resources, 58 system error, XX
 * internal error), or it cannot take writes as set up now (25006 a read-only standby after a
 * failover, 28 authorisation, 3D / 3F / 42 a database, schema, table or privilege missing, 40
 * a serialisation failure or deadlock, 55 a lock not available, F0 configuration); on SQLite,
 * every code but the row's (constraint, size, type). Such a failure never counts against a row.
 */
export function isOutage(err: unknown): boolean {
  if (isDataError(err)) return false;
  const e = err as { code?: unknown; driverError?: { code?: unknown }; message?: unknown } | null;
  const code = String(e?.code ?? e?.driverError?.code ?? '');
  // A socket's errno (ECONNREFUSED, EPIPE, EAI_AGAIN), not one of Node's own ERR_* codes.
  if (/^E(?!RR_)[A-Z_]+$/.test(code)) return true;
  if (code.startsWith('SQLITE_')) return true;
  // Any other code is the database's or Node's word on what failed: an SQLSTATE outside the
  // classes above (P0001, a trigger's exception) or ERR_* is not an outage, whatever its message.
  if (code) return /^(08|25|28|3D|3F|40|42|53|55|57|58|F0|XX)[0-9A-Z]{3}$/.test(code);
  return /connect|terminated|timeout|timed out|not open|no answer|did not answer|pool|released/i.test(String(e?.message ?? ''));
}

/**
 * Times a row is tried alone, one right after another, the database answering, when it fails
 * with a cause neither its data nor an outage, before it is set aside (`failedAlone`).
 */
const ROW_ATTEMPTS = 3;

/**
 * Writes request-log rows off the request path. Rows are queued in memory and inserted in
 * batches (when a batch is full, and at least every REQUEST_LOG_FLUSH_MS). When the database
 * cannot take them — down, slow, or the queue over its bound — rows are appended to a spool file
 * and replayed once the database answers again. Inserts ignore rows already present, so a replay
 * that is cut off and repeated never duplicates. Shutdown drains the queue.
 */
@Injectable()
export class RequestLogWriter implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('RequestLogWriter');
  private queue: ApiLog[] = [];
  /** The batch being inserted right now (still findable by `queued`), and since when. */
  private writing: readonly ApiLog[] = [];
  private writingSince = 0;
  /** A ping of spoolHeld's is under way. */
  private probing = false;
  private flushing?: Promise<void>;
  private flushTimer?: ReturnType<typeof setInterval>;
  private replayTimer?: ReturnType<typeof setInterval>;
  /** Serialises spool writes and claims, so no append lands in a file being replayed. */
  private spoolChain: Promise<unknown> = Promise.resolve();
  private readonly spoolFile: string;
  private readonly rejectedFile: string;
  /** The replay in flight, which shutdown waits for. */
  private replaying?: Promise<void>;
  /** Shutdown has begun: no replay starts, and one in flight stops after its batch. */
  private stopping = false;
  /** Shutdown stopped waiting for the replay in flight: it touches no file any more. */
  private replayLeft = false;
  /** Shutdown has drained the queue: a row that comes later goes to the spool at once. */
  private drained = false;
  /**
   * An insert failed (the database refused, or stayed silent past the batch's deadline): until
   * a ping answers again, rows go straight to the spool instead of each batch waiting to fail.
   */
  private stalled = false;
  /** The last spool write failed, maybe part-way through a line. */
  private spoolTorn = false;
  /**
   * Why the last insert failed as an outage, until one succeeds: a database that answers its
   * ping but refuses the rows (a table missing, renamed, locked) is as good as away for the log.
   */
  private insertFailure?: string;

  /** Why request-log rows cannot be inserted now (they go to the spool), if they cannot. */
  get failing(): string | undefined {
    return this.insertFailure;
  }
  private spoolErrorLoggedAt = 0;
  /**
   * The batch whose insert the database had not finished within REQUEST_LOG_MAX_HOLD_MS, or
   * within SHUTDOWN_INSERT_MS at shutdown, already copied to the spool: should its insert fail,
   * it is not spooled again, and at shutdown it is no longer waited for.
   */
  private secured?: readonly ApiLog[];
  /** Built per connected data source (a reconnect makes a new one). */
  private inserter?: ApiLogInserter;
  readonly stats = { written: 0, spooled: 0, replayed: 0, spoolFiles: 0, rejected: 0, contentLeftOut: 0 };
  /**
   * Stored bodies (DB_STORE_FULL_CONTENT) held in memory, in characters of their JSON text: each
   * row's share from its enqueue until it is in the database, the spool or the log
   * (`release`). Rows of megabytes each, queued faster than a database takes them, ran the
   * process out of memory with a queue far below REQUEST_LOG_MAX_QUEUE rows.
   */
  private contentChars = 0;
  private readonly contentShare = new WeakMap<ApiLog, number>();
  private contentWarnedAt = 0;

  constructor(
    private readonly config: AppConfig,
    private readonly db: DatabaseService,
    metrics: MetricsService,
  ) {
    this.spoolFile = join(config.spoolDir, `${SPOOL_PREFIX}${OWNER}.${Date.now()}.jsonl`);
    this.rejectedFile = join(config.spoolDir, `${REJECTED_PREFIX}${process.pid}.${Date.now()}.jsonl`);
    metrics.gauge('hybridinference_request_log_queue', 'Request-log rows waiting in memory', () => this.queue.length);
    metrics.counterOf(
      'hybridinference_request_log_spooled_total',
      'Request-log rows written to the disk spool since start',
      () => this.stats.spooled,
    );
    metrics.counterOf(
      'hybridinference_request_log_content_left_out_total',
      'Request-log rows written without their stored bodies, memory being full of others (REQUEST_LOG_MAX_CONTENT_BYTES)',
      () => this.stats.contentLeftOut,
    );
    metrics.counterOf(
      'hybridinference_request_log_rejected_total',
      'Request-log rows the database refused as data since start (kept in the spool directory)',
      () => this.stats.rejected,
    );
  }

  async onModuleInit(): Promise<void> {
    await mkdir(this.config.spoolDir, PRIVATE_DIR).catch((err: Error) => {
      throw new Error(`REQUEST_LOG_SPOOL_DIR=${this.config.spoolDir}: cannot create the spool directory (${err.message})`, { cause: err });
    });
    this.flushTimer = setInterval(() => {
      this.spoolHeld();
      void this.flush();
    }, this.config.env.REQUEST_LOG_FLUSH_MS);
    this.flushTimer.unref();
    this.replayTimer = setInterval(() => void this.replay(), this.config.env.REQUEST_LOG_REPLAY_MS);
    this.replayTimer.unref();
    // Rows a previous run left behind go in as soon as the database is there.
    void this.db.whenReady().then(() => this.replay());
  }

  /** Queue a row. Never blocks and never throws. */
  enqueue(row: ApiLog): void {
    if (this.drained) return this.spoolLate(row);
    if (row.request_content != null || row.response_content != null) this.holdContent(row);
    this.queue.push(row);
    const { REQUEST_LOG_BATCH_SIZE: batch, REQUEST_LOG_MAX_QUEUE: max } = this.config.env;
    if (this.queue.length > max) {
      // The database is not keeping up: the oldest rows go to disk rather than growing memory.
      void this.spool(this.queue.splice(0, this.queue.length - max + batch));
    } else if (this.queue.length >= batch && !this.flushing) {
      void this.flush();
    }
  }

  /**
   * A row's bodies serialised once, as stored (capped), and counted against
   * REQUEST_LOG_MAX_CONTENT_BYTES; past it, the row goes on without them, said in its metadata.
   */
  private holdContent(row: ApiLog): void {
    const limit = this.config.storeContentLimitBytes;
    let req: StoredJson | null = null;
    let res: StoredJson | null = null;
    try {
      if (row.request_content != null) req = new StoredJson(capStoredJson(JSON.stringify(row.request_content), limit));
      if (row.response_content != null) res = new StoredJson(capStoredJson(JSON.stringify(row.response_content), limit));
    } catch (err) {
      // Nested deeper than the stack allows: the row's accounting still goes in.
      this.logger.error(`request-log row ${row.id}: its stored content cannot be serialised (${(err as Error).message}); kept without it`);
      row.request_content = null;
      row.response_content = null;
      return;
    }
    const size = (req?.text.length ?? 0) + (res?.text.length ?? 0);
    if (this.contentChars + size > this.config.env.REQUEST_LOG_MAX_CONTENT_BYTES) {
      row.request_content = null;
      row.response_content = null;
      row.metadata = { ...row.metadata, content_left_out: true };
      this.stats.contentLeftOut++;
      const now = Date.now();
      if (now - this.contentWarnedAt >= 60_000) {
        this.contentWarnedAt = now;
        this.logger.warn(
          `the request log holds ${Math.round(this.contentChars / 1048576)} MB of stored bodies not yet written (REQUEST_LOG_MAX_CONTENT_BYTES); rows are logged without theirs until it has written some`,
        );
      }
      return;
    }
    row.request_content = req;
    row.response_content = res;
    this.contentChars += size;
    this.contentShare.set(row, size);
  }

  /** Rows out of memory (in the database, the spool or the log): their bodies no longer count. */
  private release(rows: readonly ApiLog[]): void {
    if (this.contentChars === 0) return;
    for (const row of rows) {
      const size = this.contentShare.get(row);
      if (size === undefined) continue;
      this.contentShare.delete(row);
      this.contentChars -= size;
    }
  }

  /** Rows not yet in the database: queued, and the batch being inserted. */
  get pending(): number {
    return this.queue.length + this.writing.length;
  }

  /**
   * What a key spent (pico-dollars) in queued rows from `since` on, which the database has not
   * seen: a budget set on a key that has just spent is read from the database. Not the batch
   * being written, which the database may or may not show by now (missed, the next read counts
   * it; counted twice, a budget's spend would stay too high, as it only ever rises), nor rows
   * already spooled.
   */
  pendingSpend(keyId: string, since: Date): bigint {
    let pico = 0n;
    for (const r of this.queue) if (r.api_key_id === keyId && r.created_at >= since) pico += usdToPico(r.cost_usd);
    return pico;
  }

  /** A row not yet in the database (queued or being written), so a caller can see it at once. */
  queued(id: string): ApiLog | undefined {
    return this.writing.find((r) => r.id === id) ?? this.queue.find((r) => r.id === id);
  }

  /**
   * An insert the database has taken REQUEST_LOG_MAX_HOLD_MS over: if a ping does not answer
   * either, the database is silent, not slow, and the insert would be waited for its whole
   * deadline (2 x DB_QUERY_TIMEOUT_MS + 1 s) with the rows queued behind it only in memory, lost
   * to a crash. Then a copy of its batch and the rows queued go to the spool (as do rows queued
   * later, while it hangs), and later batches too, until a ping answers (`stalled`); should the
   * insert land after all, the copies replay as rows already present. A database that answers
   * the ping is slow, and is waited for: rows sent again to a slow database would only slow it more.
   */
  private spoolHeld(): void {
    if (this.stalled && this.flushing && this.queue.length > 0) void this.spool(this.queue.splice(0));
    const batch = this.writing;
    const hold = this.config.env.REQUEST_LOG_MAX_HOLD_MS;
    if (batch.length === 0 || this.secured === batch || this.probing || performance.now() - this.writingSince < hold) return;
    this.probing = true;
    this.db
      .ping(HOLD_PING_MS)
      .then(
        () => undefined,
        (err: Error) => {
          if (this.writing !== batch || this.secured === batch) return;
          this.logger.warn(
            `the database has not answered an insert of ${batch.length} request-log rows in ${hold} ms, nor a ping (${err.message}); they and the rows queued behind them are spooled`,
          );
          this.stalled = true;
          this.secured = batch;
          void this.spool([...batch]);
          void this.spool(this.queue.splice(0));
        },
      )
      .finally(() => (this.probing = false));
  }

  /** Insert what is queued now (one batch at a time). */
  flush(): Promise<void> {
    this.flushing ??= this.flushLoop().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  /** Everything queued is written, to the database or the spool. */
  async drain(): Promise<void> {
    // A database that was down may be back (replay, which would have noticed, stops at
    // shutdown): asked once, so the rows go to it rather than to the spool, or nowhere.
    if (this.stalled && this.db.dataSource) {
      try {
        await this.db.ping(2000);
        this.stalled = false;
      } catch {
        // Still away: the spool.
      }
    }
    // Stops when a round makes no progress (database down and disk failing): then the rows
    // stay in memory (shutdown writes them to the log), rather than looping forever.
    let before = Infinity;
    while ((this.queue.length > 0 || this.flushing) && this.queue.length < before) {
      before = this.queue.length;
      if (this.secured && this.secured === this.writing) {
        // Shutting down behind a silent database: the batch in flight is on disk already, and
        // so goes the rest; the insert may land later or never, nothing waits on it.
        await this.spool(this.queue.splice(0));
        await this.spoolChain;
        break;
      }
      await this.flush();
      await this.spoolChain;
    }
  }

  /**
   * The last place left for rows neither the database nor the spool can take: the process's own
   * log, one line per row (logLine), so that an operator can still insert them.
   */
  private logRows(rows: readonly ApiLog[], why: string): void {
    this.release(rows);
    this.logger.error(`${rows.length} request-log rows could not be written to the database or the spool (${why}); each follows`);
    for (const row of rows) this.logger.error(`request-log row not stored: ${logLine(row)}`);
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.flushTimer);
    clearInterval(this.replayTimer);
    await Promise.all([this.stopReplay(), this.secureInFlight()]);
    await this.drain();
    // Rows that came while the last round was written (a stream the closing server cut,
    // settling): to the spool, which later ones go to directly from here (spoolLate); to the log
    // only when the disk refuses them too.
    this.drained = true;
    if (this.queue.length > 0 && !(await this.spool(this.queue.splice(0)))) this.logRows(this.queue.splice(0), 'shutdown');
    this.logger.log(`drained: ${this.stats.written} rows written, ${this.stats.spooled} spooled, ${this.stats.replayed} replayed`);
    await this.db.close();
  }

  /**
   * A batch still being inserted SHUTDOWN_INSERT_MS into shutdown is copied to the spool, and
   * later rows go there directly: a silent database holds an insert for its whole deadline
   * (2 x DB_QUERY_TIMEOUT_MS + 1 s), and a process killed meanwhile (the orchestrator's grace
   * period) would lose them. Inserts ignore rows already present, so should the insert land
   * after all, the spooled copies replay as nothing.
   */
  private async secureInFlight(): Promise<void> {
    if (!this.flushing) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = await Promise.race([
      this.flushing.then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), SHUTDOWN_INSERT_MS))),
    ]);
    clearTimeout(timer);
    if (done || this.writing.length === 0) return;
    this.stalled = true;
    if (this.secured === this.writing) return; // copied already (spoolHeld)
    this.logger.warn(
      `the database has not taken ${this.writing.length} request-log rows within ${SHUTDOWN_INSERT_MS} ms of shutdown; spooling them`,
    );
    this.secured = this.writing;
    await this.spool([...this.writing]);
  }

  /**
   * Stops a replay in flight after the batch it is inserting, its claimed file left for the next
   * start, renamed to carry the offset of the first row not replayed (`replayFile`). Not stopped,
   * it went on after the data source was closed, copied the rest of its file to a spool the
   * process was done with, and, that directory gone ("cannot spool … ENOENT"), kept the rows only
   * in memory, lost at exit. An insert a silent database holds (up to DB_QUERY_TIMEOUT_MS) is
   * waited for SHUTDOWN_INSERT_MS; past that the replay is left (`replayLeft`), and touches no
   * file any more, whether its batch fails or ends after close.
   */
  private async stopReplay(): Promise<void> {
    this.stopping = true;
    if (!this.replaying) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = await Promise.race([
      this.replaying.then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), SHUTDOWN_INSERT_MS))),
    ]);
    clearTimeout(timer);
    if (done) return;
    this.replayLeft = true;
    this.logger.warn(
      `a spool replay still waits on the database ${SHUTDOWN_INSERT_MS} ms into shutdown; its file stays for the next start`,
    );
  }

  private async flushLoop(): Promise<void> {
    const size = this.config.env.REQUEST_LOG_BATCH_SIZE;
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, size);
      const ds = this.db.dataSource;
      if (!ds || this.stalled) {
        // The disk refused them too: this flush stops (the rows are queued again); the next
        // flush, or the replay that finds the database again, goes on.
        if (!(await this.spool(batch))) break;
        continue;
      }
      this.writing = batch;
      this.writingSince = performance.now();
      /** Rows the spool refused too, back in the queue: their bodies still held. */
      let requeued: readonly ApiLog[] = [];
      try {
        this.stats.written += await this.withDeadline((progress) => this.insertBatch(batch, progress), batch);
      } catch (err) {
        if (err instanceof RowsNotWritten) this.stats.written += err.written;
        const rest = err instanceof RowsNotWritten ? err.rows : batch;
        this.stalled = true;
        this.insertFailure = ((err instanceof RowsNotWritten ? err.cause : err) as Error).message;
        this.db.reportFailure(err instanceof RowsNotWritten ? err.cause : err);
        // Secured at shutdown: the rows are in the spool already.
        if (this.secured !== batch) {
          this.logger.warn(`request-log insert failed, ${rest.length} rows spooled: ${(err as Error).message}`);
          if (!(await this.spool(rest))) {
            requeued = rest;
            break;
          }
        }
      } finally {
        this.writing = [];
        // In the database, the spool or the rejected file by now, but for those back in the queue.
        this.release(requeued.length > 0 ? batch.filter((r) => !requeued.includes(r)) : batch);
      }
    }
  }

  /**
   * A batch's insert, failed once the database has been silent for twice the query timeout
   * (a query and its rollback) — silent, not slow: each statement it completes restarts the
   * clock. A batch of large bodies takes long on a database that answers (PostgreSQL took
   * ~35 ms per MB here, so 200 bodies of 5 MB ~35 s); failing it as silent spooled it, and its
   * replay failed the same way, for ever. The insert may still land later: the spooled copies
   * then replay as rows already present, never twice.
   */
  private async withDeadline(insert: (progress: () => void) => Promise<number>, batch: ApiLog[]): Promise<number> {
    // Within what a Node timer holds: past it, the timer fires at once and every batch spooled.
    const ms = Math.min(2 * this.config.env.DB_QUERY_TIMEOUT_MS + 1000, MAX_TIMER_MS);
    let timer: ReturnType<typeof setTimeout> | undefined;
    let fail: (err: RowsNotWritten) => void = () => undefined;
    const deadline = new Promise<never>((_, reject) => (fail = reject));
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => fail(new RowsNotWritten(new Error(`the database did not answer for ${ms} ms`), batch)), ms);
    };
    arm();
    try {
      return await Promise.race([insert(arm), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** How many of the rows went in (not those already present). */
  private async insert(rows: ApiLog[], progress?: () => void): Promise<number> {
    const ds = this.db.dataSource;
    if (!ds) throw new Error('database not connected');
    if (this.inserter?.ds !== ds)
      this.inserter = new ApiLogInserter(ds, this.config.storeContentLimitBytes, this.config.env.DB_QUERY_TIMEOUT_MS);
    return this.inserter.insert(rows, progress);
  }

  /**
   * Inserts a batch; returns how many rows went in (not those already present). When the database refuses the batch for a
   * cause other than an outage (`isOutage`), the rows go in one by one: those it refuses as data
   * are set aside (`reject`), so that one bad row never holds back the others, and a row failing
   * alone for another cause is tried again at once (`failedAlone`). An outage throws `RowsNotWritten`
   * with what is left.
   */
  private async insertBatch(rows: ApiLog[], progress?: () => void): Promise<number> {
    try {
      const fresh = await this.insert(rows, progress);
      this.insertFailure = undefined;
      return fresh;
    } catch (err) {
      if (isOutage(err)) throw new RowsNotWritten(err, rows);
    }
    let written = 0;
    let took = false;
    for (let i = 0; i < rows.length; i++) {
      // One transaction per row: give the event loop a turn between them (SQLite is synchronous).
      if (i > 0) await nextTurn();
      try {
        written += await this.insertOne(rows[i]);
        took = true;
      } catch (err) {
        if (isDataError(err)) await this.reject(rows[i], err);
        else {
          const outcome = await this.failedAlone(rows[i], err, progress);
          if (!outcome) throw new RowsNotWritten(err, rows.slice(i), written);
          if (outcome === 'written') {
            written++;
            took = true;
          }
        }
      }
      progress?.();
    }
    if (took) this.insertFailure = undefined;
    return written;
  }

  /**
   * A row that failed alone for a cause that is neither its data (`isDataError`) nor an outage
   * (`isOutage`): a value the driver cannot bind (SQLite takes no object or boolean: "SQLite3 can
   * only bind numbers, strings, bigints, buffers, and null"), a trigger's exception (P0001), one
   * that cannot be serialised (a BigInt). It is tried again alone at once, while the database
   * answers a ping between tries (so an outage in a shape not known here costs nothing), up to
   * ROW_ATTEMPTS tries in all, and then set aside with its error, like a row refused as data.
   * Tried once per replay round, as it once was, such a row held back every row behind it for
   * rounds, and stalled the live path: one endpoint producing such a row on every request grew
   * the spool without bound. 'written' if a retry took it, 'rejected' if it was set aside;
   * false (the database did not answer, or failed as an outage) leaves it, and the rows behind
   * it, where they are until the next try.
   */
  private async failedAlone(row: ApiLog, err: unknown, progress?: () => void): Promise<'written' | 'rejected' | false> {
    for (let tries = 1; ; tries++) {
      if (isOutage(err)) return false;
      try {
        await this.db.ping(2000);
      } catch {
        return false;
      }
      progress?.();
      if (tries >= ROW_ATTEMPTS) break;
      this.logger.warn(
        `request-log row ${row.id} failed alone (${(err as Error)?.message ?? String(err)}); try ${tries + 1} of ${ROW_ATTEMPTS}`,
      );
      try {
        await this.insertOne(row);
        return 'written';
      } catch (e) {
        if (isDataError(e)) {
          await this.reject(row, e);
          return 'rejected';
        }
        err = e;
      }
    }
    await this.reject(row, err, ` (failed alone ${ROW_ATTEMPTS} times while the database answered)`);
    return 'rejected';
  }

  /**
   * One row; if its stored content cannot be serialised (a RangeError), the row goes in without
   * it, so its tokens and cost are still accounted.
   */
  private async insertOne(row: ApiLog): Promise<number> {
    try {
      return await this.insert([row]);
    } catch (err) {
      if (!(err instanceof RangeError) || (row.request_content === null && row.response_content === null)) throw err;
      this.logger.error(`request-log row ${row.id}: its stored content cannot be serialised (${err.message}); written without it`);
      return this.insert([{ ...row, request_content: null, response_content: null }]);
    }
  }

  /** Keeps a row the database refused, in a file of its own next to the spool, and says so. */
  private async reject(row: ApiLog, err: unknown, why = ''): Promise<void> {
    const reason = ((err as Error)?.message ?? String(err)) + why;
    this.stats.rejected++;
    try {
      await appendFile(this.rejectedFile, `{"rejected":${JSON.stringify(reason)},"row":${this.spoolLine(row)}}\n`, PRIVATE_FILE);
      this.logger.error(`request-log row ${row.id} refused by the database (${reason}); kept in ${this.rejectedFile}`);
    } catch (e) {
      this.logger.error(
        `request-log row ${row.id} refused by the database (${reason}) and not kept (${(e as Error).message}): ${logLine(row)}`,
      );
    }
  }

  /**
   * A row that comes after shutdown drained the log (a request the server still answered as it
   * closed): written to the spool at once, since the process may end before another turn, and
   * inserted by the next start's replay.
   */
  private spoolLate(row: ApiLog): void {
    try {
      appendFileSync(this.spoolFile, `${this.spoolLine(row)}\n`, PRIVATE_FILE);
      this.stats.spooled++;
      this.logger.warn(`request-log row ${row.id} came after shutdown drained the log; spooled to ${this.spoolFile}`);
    } catch (err) {
      this.logger.error(`request-log row ${row.id} came after shutdown and cannot be spooled (${(err as Error).message}): ${logLine(row)}`);
    }
  }

  /** Spools `rows`; false when the disk refused them (they are back in the queue). */
  private spool(rows: ApiLog[]): Promise<boolean> {
    if (rows.length === 0) return Promise.resolve(true);
    const lines = rows.map((r) => this.spoolLine(r)).join('\n') + '\n';
    const write = this.spoolChain.then(async () => {
      // A write the disk cut short (full) may have left part of a line: the next rows start on
      // a line of their own, not glued to it (the fragment alone is skipped on replay).
      const text = this.spoolTorn ? `\n${lines}` : lines;
      try {
        await mkdir(dirname(this.spoolFile), PRIVATE_DIR);
        await appendFile(this.spoolFile, text, PRIVATE_FILE);
        this.spoolTorn = false;
        this.stats.spooled += rows.length;
        this.release(rows);
        return true;
      } catch (err) {
        this.spoolTorn = true;
        // The disk is the last resort; keep the rows in memory rather than lose them. Said once
        // a second at most: the flush that failed stops, and the next tries again.
        const now = Date.now();
        if (now - this.spoolErrorLoggedAt >= 1000) {
          this.spoolErrorLoggedAt = now;
          this.logger.error(`cannot spool ${rows.length} request-log rows to ${this.spoolFile}: ${(err as Error).message}`);
        }
        this.queue.unshift(...rows);
        // Nor can memory hold them for ever: past twice the queue's bound, the oldest go to the
        // process's own log, whole, and are let go of.
        const over = this.queue.length - 2 * this.config.env.REQUEST_LOG_MAX_QUEUE;
        if (over > 0) this.logRows(this.queue.splice(0, over), 'the queue is full');
        return false;
      }
    });
    this.spoolChain = write.then(() => undefined);
    return write;
  }

  /**
   * A row as one line of JSON, its bodies capped as the database would store them (so a spool
   * line, and its replay, stays small). Stored content that cannot be serialised (nested deeper
   * than the stack allows) is dropped, and said so, rather than losing the row or taking the
   * process down.
   */
  private spoolLine(row: ApiLog): string {
    try {
      const { request_content: req, response_content: res, ...rest } = row;
      if (req == null && res == null) return JSON.stringify(row);
      // Each body serialised once, and spliced in as the text it is.
      const body = (v: unknown) =>
        v == null ? 'null' : v instanceof StoredJson ? v.text : capStoredJson(JSON.stringify(v), this.config.storeContentLimitBytes);
      return `${JSON.stringify(rest).slice(0, -1)},"request_content":${body(req)},"response_content":${body(res)}}`;
    } catch (err) {
      this.logger.error(`request-log row ${row.id}: its stored content cannot be serialised (${(err as Error).message}); kept without it`);
      return JSON.stringify({ ...row, request_content: null, response_content: null });
    }
  }

  /** Re-inserts spooled rows (this process's and those of processes that are gone). */
  replay(): Promise<void> {
    if (this.stopping || !this.db.dataSource) return Promise.resolve();
    this.replaying ??= this.replayFiles().finally(() => {
      this.replaying = undefined;
    });
    return this.replaying;
  }

  private async replayFiles(): Promise<void> {
    try {
      if (this.stalled) {
        await this.db.ping(2000);
        if (this.stopping) return;
        this.stalled = false;
        this.logger.log('the database answers again; request logs are written to it');
      }
      const dir = this.config.spoolDir;
      const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.startsWith(SPOOL_PREFIX) && f.endsWith('.jsonl'));
      this.stats.spoolFiles = files.length;
      for (const name of files) {
        if (!this.db.dataSource || this.stopping) break;
        const claimed = await this.claim(dir, name);
        // A file not finished (the database failed, or shutdown) ends this round: the next
        // files would fail alike.
        if (claimed && !(await this.replayFile(claimed))) break;
      }
    } catch (err) {
      if (!this.stopping) this.logger.warn(`spool replay failed: ${(err as Error).message}`);
    }
  }

  /**
   * Renames a spool file to a name only this process uses, keeping the offset its replay resumes
   * at; undefined if it is not ours to take.
   */
  private async claim(dir: string, name: string): Promise<string | undefined> {
    const m = /^api_logs\.(?:replaying\.)?(\d+)(?:-([A-Za-z0-9-]+))?\.(\d+)\./.exec(name);
    const owner = m ? Number(m[1]) : 0;
    const host = m?.[2];
    if (host === undefined || host === HOST) {
      // This host's (or a file from before names said the host): its process, if alive, has it.
      // Alive under that PID, but started after the file was named: the PID was given again to
      // another process, and the writer is gone.
      if (owner !== process.pid && owner > 0 && isAlive(owner) && !startedAfter(owner, Number(m?.[3]))) return undefined;
    } else {
      // Another host's or container's (a spool volume shared by replicas, each maybe PID 1):
      // its process cannot be asked, and may still be writing it. Taken only once untouched
      // for SPOOL_ORPHAN_MS: its process is gone, or would have replayed it long since.
      const touched = await stat(join(dir, name)).then(
        (st) => st.mtimeMs,
        () => Date.now(),
      );
      if (Date.now() - touched < SPOOL_ORPHAN_MS) return undefined;
    }
    const target = this.claimedName(dir, spoolOffset(name));
    const claimed = this.spoolChain.then(() =>
      rename(join(dir, name), target).then(
        () => target,
        () => undefined,
      ),
    );
    this.spoolChain = claimed;
    return claimed;
  }

  private claimedName(dir: string, offset: number): string {
    const from = offset > 0 ? `.from${offset}` : '';
    return join(dir, `${SPOOL_PREFIX}replaying.${OWNER}.${Date.now()}.${Math.random().toString(36).slice(2)}${from}.jsonl`);
  }

  /**
   * Replays a claimed spool file a batch at a time, as it is read, from the offset its name
   * carries; true once every row is written (or set aside as refused) and the file removed.
   * When the database fails part way, the file stays claimed and is renamed to carry the offset
   * of the first row not written: the next replay resumes there. A rename is all a failed replay
   * writes — copying the rest out, as it once did, rewrote a spool of hundreds of MB every
   * REQUEST_LOG_REPLAY_MS of a flapping outage. At shutdown it stops between batches, the file
   * renamed to carry the offset of the next batch: resumed from an older offset, it set aside the
   * rows refused since then a second time (twice in the rejected file, and counted twice). Past
   * the time shutdown waits for it, it touches no file at all (resuming from the last recorded
   * offset then replays rows already written as nothing).
   */
  private async replayFile(path: string): Promise<boolean> {
    const start = spoolOffset(path);
    const batches = this.spoolBatches(path, start);
    let rows = 0;
    let fresh = 0;
    try {
      for (let next = await batches.next(); !next.done; next = await batches.next()) {
        const batch = next.value;
        if (this.stopping) {
          if (!this.replayLeft && batch.offsets[0] > start) await this.resumeLater(path, batch.offsets[0], 'shutting down');
          return false;
        }
        try {
          const n = await this.insertBatch(batch.rows);
          this.stats.replayed += n;
          fresh += n;
          rows += batch.rows.length;
        } catch (err) {
          if (this.stopping) return false;
          if (err instanceof RowsNotWritten) this.stats.replayed += err.written;
          this.insertFailure = ((err instanceof RowsNotWritten ? err.cause : err) as Error).message;
          this.db.reportFailure(err instanceof RowsNotWritten ? err.cause : err);
          // RowsNotWritten's rows are the batch's last ones (insertBatch goes in order).
          const left = err instanceof RowsNotWritten ? err.rows.length : batch.rows.length;
          await this.resumeLater(path, batch.offsets[batch.rows.length - left], err);
          return false;
        }
      }
    } finally {
      await batches.return(undefined);
    }
    await unlink(path);
    // Rows not new: in the database already (an insert that landed after its batch was spooled,
    // a replay cut short), or set aside as refused.
    const old = rows - fresh > 0 ? `; ${rows - fresh} of them were in the database already or refused` : '';
    this.logger.log(`replayed ${rows} spooled request-log rows${start > 0 ? ` (resumed at byte ${start})` : ''}${old}`);
    return true;
  }

  /** Records, in the claimed file's name, the offset its next replay resumes at; `why` it stopped. */
  private async resumeLater(path: string, offset: number, why: unknown): Promise<void> {
    const target = this.claimedName(dirname(path), offset);
    const reason = typeof why === 'string' ? why : `failed (${(why as Error)?.message ?? String(why)})`;
    try {
      await rename(path, target);
      this.logger.warn(`spool replay ${reason}; ${target} resumes at byte ${offset}`);
    } catch (e) {
      // The file keeps its older offset: rows from there on replay again, as nothing if present.
      this.logger.warn(`spool replay ${reason}; cannot record where in ${path} it stopped (${(e as Error).message})`);
    }
  }

  /** A spool file's rows from byte `start`, parsed in batches as the file is read (never read whole). */
  private async *spoolBatches(path: string, start: number): AsyncGenerator<SpoolBatch> {
    let batch: SpoolBatch = { rows: [], offsets: [] };
    let chars = 0;
    for await (const { text, offset } of splitLines(createReadStream(path, { start }), start)) {
      if (text.trim() === '') continue;
      try {
        const row = JSON.parse(text) as ApiLog;
        row.created_at = new Date(row.created_at);
        batch.rows.push(row);
        batch.offsets.push(offset);
        chars += text.length;
      } catch {
        this.logger.warn(`spool file ${path}: skipped a line that is not JSON (a write cut short by a crash)`);
        continue;
      }
      if (batch.rows.length >= REPLAY_BATCH || chars >= REPLAY_BATCH_CHARS) {
        yield batch;
        batch = { rows: [], offsets: [] };
        chars = 0;
      }
    }
    if (batch.rows.length > 0) yield batch;
  }
}

/** The clock ticks a second in /proc's times (USER_HZ: 100 on every Linux this runs on). */
const PROC_TICKS_PER_S = 100;
/** /proc's boot time is whole seconds; a process's start is then known to about a second. */
const START_SLACK_MS = 2000;
let bootMs: number | undefined;

/**
 * Whether process `pid` started after `atMs` (epoch ms), from Linux's /proc; false where that
 * cannot be told (another OS, /proc hidden), which leaves a live PID its file.
 */
function startedAfter(pid: number, atMs: number): boolean {
  if (!Number.isFinite(atMs)) return false;
  try {
    bootMs ??= Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'latin1'))?.[1]) * 1000;
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Field 22, starttime; counted after the command's closing parenthesis (it may hold spaces), which ends field 2.
    const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const startedMs = bootMs + (ticks / PROC_TICKS_PER_S) * 1000;
    return Number.isFinite(startedMs) && startedMs > atMs + START_SLACK_MS;
  } catch {
    return false;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A row for the process's log: its accounting whole, its stored bodies left out (a log is read
 * more widely than the spool's 0600 files, and splits lines of megabytes).
 */
function logLine(row: ApiLog): string {
  const stored = row.request_content != null || row.response_content != null;
  return JSON.stringify({ ...row, request_content: null, response_content: null, ...(stored ? { content_left_out: true } : {}) });
}
