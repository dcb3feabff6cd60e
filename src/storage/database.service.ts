import { Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import type { Database } from 'better-sqlite3';
import { setTimeout as sleep } from 'node:timers/promises';
import { DataSource, MigrationExecutor } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { dataSourceOptions } from './data-source.options';
import type { Dialect } from './dialect';

/** How long a SQLite write waits for another connection's lock once the gateway has started (it blocks the event loop). */
const SQLITE_BUSY_MS = 100;
const MIGRATION_LOCK = 726_2012; // pg_advisory_lock key: replicas migrate one at a time

/**
 * The database connection and its lifecycle. The gateway does not wait for the database to
 * serve traffic: boot waits up to DB_CONNECT_TIMEOUT_MS, then goes on and keeps retrying in the
 * background while request logs spool to disk.
 */
@Injectable()
export class DatabaseService implements OnModuleInit {
  private readonly logger = new Logger('Database');
  readonly dialect: Dialect;
  private source?: DataSource;
  private connecting?: Promise<boolean>;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private closed = false;
  private lastError?: string;
  private readonly readyWaiters: Array<() => void> = [];

  constructor(private readonly config: AppConfig) {
    this.dialect = config.dbBackend;
  }

  async onModuleInit(): Promise<void> {
    const first = this.connect();
    const ok = await Promise.race([first, sleep(this.config.env.DB_CONNECT_TIMEOUT_MS, false, { ref: false })]);
    if (!ok)
      this.logger.warn(
        `database not reachable yet (${this.lastError ?? 'still connecting'}); serving anyway, request logs spool to disk until it is`,
      );
  }

  /** The connected data source, or undefined while the database is unreachable. */
  get dataSource(): DataSource | undefined {
    return this.source?.isInitialized ? this.source : undefined;
  }

  get error(): string | undefined {
    return this.lastError;
  }

  /** Resolves once connected (immediately if already). */
  whenReady(): Promise<void> {
    if (this.dataSource) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /** A cheap round trip, bounded in time. Throws when the database does not answer. */
  async ping(timeoutMs = 2000): Promise<void> {
    const ds = this.dataSource;
    if (!ds) throw new Error(this.lastError ?? 'not connected');
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        ds.query('SELECT 1'),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Marks the connection as lost (a write failed); reconnects in the background. */
  reportFailure(err: unknown): void {
    this.lastError = (err as Error)?.message ?? String(err);
    this.scheduleRetry();
  }

  connect(): Promise<boolean> {
    this.connecting ??= this.tryConnect().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    await this.connecting?.catch(() => undefined);
    const ds = this.source;
    this.source = undefined;
    // Ending the pool waits for connections still out, which a silent database never returns.
    if (ds?.isInitialized) await Promise.race([ds.destroy().catch(() => undefined), sleep(3000, undefined, { ref: false })]);
  }

  private async tryConnect(): Promise<boolean> {
    if (this.closed) return false;
    if (this.dataSource) return true;
    const ds = new DataSource(dataSourceOptions(this.config));
    try {
      await ds.initialize();
      if (this.config.env.DB_MIGRATIONS_RUN) await this.migrate(ds);
      else await this.warnIfBehind(ds);
      if (this.dialect === 'sqlite') {
        // SQLite waits for another connection's write lock (another worker, an operator's
        // sqlite3 session) on the event loop itself: the 5 s the start allows for migrations
        // froze every request for 5 s at a time (streams failed their first-token deadline). From
        // now on a write waits SQLITE_BUSY_MS, and a busy database is an outage the request log
        // spools through.
        const db = (ds.driver as unknown as { databaseConnection: Database }).databaseConnection;
        db.pragma(`busy_timeout = ${SQLITE_BUSY_MS}`);
      }
      if (this.closed) {
        await ds.destroy();
        return false;
      }
      this.source = ds;
      this.lastError = undefined;
      this.logger.log(`connected to ${this.dialect}${this.dialect === 'sqlite' ? ` at ${this.config.sqlitePath}` : ''}`);
      for (const w of this.readyWaiters.splice(0)) w();
      return true;
    } catch (err) {
      this.lastError = (err as Error).message;
      if (ds.isInitialized) await ds.destroy().catch(() => undefined);
      this.scheduleRetry();
      return false;
    }
  }

  private scheduleRetry(): void {
    if (this.closed || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.dataSource) void this.connect();
    }, 2000);
    this.retryTimer.unref();
  }

  /**
   * With DB_MIGRATIONS_RUN=false the schema is the operator's to keep: say at start when it is
   * behind, or every row spools (on an empty database, with "no such table") and nothing says why.
   */
  private async warnIfBehind(ds: DataSource): Promise<void> {
    const executor = new MigrationExecutor(ds);
    const pending = await executor.getPendingMigrations().catch(() => []);
    if (pending.length === 0) return;
    this.logger.warn(
      `DB_MIGRATIONS_RUN=false and ${pending.length} migration(s) have not been applied (${pending.map((m) => m.name).join(', ')}): ` +
        'request logs cannot be written until they are; run `npm run migration:run` or set DB_MIGRATIONS_RUN=true',
    );
  }

  private async migrate(ds: DataSource): Promise<void> {
    if (this.dialect !== 'postgres') {
      await ds.runMigrations({ transaction: 'each' });
      return;
    }
    const runner = ds.createQueryRunner();
    await runner.connect();
    try {
      await runner.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
      // On the lock's own connection: with DB_POOL_SIZE=1 there is no other to run them on.
      const executor = new MigrationExecutor(ds, runner);
      executor.transaction = 'each';
      const ran = await executor.executePendingMigrations();
      if (ran.length > 0) this.logger.log(`migrations applied: ${ran.map((m) => m.name).join(', ')}`);
    } finally {
      await runner.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
      await runner.release();
    }
  }
}
