import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Client } from 'pg';
import type { ApiLog } from '../../src/storage/entities/api-log.entity';
import { DatabaseService } from '../../src/storage/database.service';
import { RequestLogWriter, spoolOffset } from '../../src/storage/request-log.writer';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { logRow } from '../helpers/log-row';
import { createTestDatabase, PG_ADMIN, type TestDatabase } from '../helpers/postgres';
import { TcpProxy } from '../helpers/tcp-proxy';

/**
 * V8's longest string (2^29 - 24 characters) brought down to a size a test can write: while
 * `mockLongestString` is set, `readFile(path, 'utf8')` of a longer text throws as Node does past
 * the real limit. A spool file a long outage leaves is that long.
 */
let mockLongestString = Infinity;
/** Bytes appended to files since the test began (what the writer writes to its spool directory). */
let mockAppended = 0;
/** Called as each append begins (a test's hook into a spool write under way). */
let mockOnAppend: (() => void) | undefined;
jest.mock('node:fs/promises', () => {
  const actual = jest.requireActual<typeof import('node:fs/promises')>('node:fs/promises');
  const readFile = async (...args: Parameters<typeof actual.readFile>): Promise<string | Buffer> => {
    const data = await actual.readFile(...args);
    // What Node 20's readFile throws for a 600 MB file of 1.2M spool-like lines (tried here).
    if (typeof data === 'string' && data.length > mockLongestString) throw new RangeError('Invalid string length');
    return data;
  };
  const appendFile = async (...args: Parameters<typeof actual.appendFile>): Promise<void> => {
    mockOnAppend?.();
    await actual.appendFile(...args);
    mockAppended += typeof args[1] === 'string' ? Buffer.byteLength(args[1]) : args[1].byteLength;
  };
  return { ...actual, readFile, appendFile };
});

/**
 * Nothing a user paid for is lost: when PostgreSQL goes away, request-log rows go to a spool
 * file and are replayed when it returns; shutdown drains what is queued.
 */
const MODELS = `
models:
  - id: demo/mock
    context_length: 4096
    pricing: { prompt: 1, completion: 1 }
    route: [{ kind: mock, tokens: 3 }]
`;

async function countRows(db: TestDatabase): Promise<number> {
  const c = new Client({ ...PG_ADMIN, database: db.name });
  await c.connect();
  try {
    const r = await c.query<{ n: string }>('SELECT count(*) AS n FROM api_logs');
    return Number(r.rows[0].n);
  } finally {
    await c.end();
  }
}

/** The gateway's sessions on the test database, as PostgreSQL sees them. */
async function sessions(db: TestDatabase): Promise<Array<{ state: string; query: string }>> {
  const c = new Client({ ...PG_ADMIN, database: 'postgres' });
  await c.connect();
  try {
    const r = await c.query<{ state: string; query: string }>(
      'SELECT state, query FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [db.name],
    );
    return r.rows;
  } finally {
    await c.end();
  }
}

async function waitFor(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The lines of the spool files still to replay (a file replayed part way, from where it resumes). */
function pendingLines(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.startsWith('api_logs.') && f.endsWith('.jsonl'))
    .flatMap((f) => readFileSync(join(dir, f)).subarray(spoolOffset(f)).toString('utf8').split('\n').filter(Boolean));
}

/** The ids of the rows in the spool files, in file order. */
function spooledIds(dir: string): string[] {
  return pendingLines(dir).map((l) => (JSON.parse(l) as ApiLog).id);
}

/** Every file in the spool directory, with its text. */
function spoolFiles(dir: string): Record<string, string> {
  return Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
}

/** A spool file as a process that died (pid 4194305 does not exist: above Linux's highest, 2^22) would have left it. */
function leaveSpoolFile(dir: string, ids: string[]): void {
  writeFileSync(join(dir, 'api_logs.4194305.1.jsonl'), ids.map((id) => JSON.stringify(logRow(id))).join('\n') + '\n');
}

/** The distinct request counts of the rollup's rows (every dimension of an hour counts alike). */
async function hourlyRequestCounts(db: TestDatabase): Promise<number[]> {
  const c = new Client({ ...PG_ADMIN, database: db.name });
  await c.connect();
  try {
    const r = await c.query<{ n: string }>(`SELECT DISTINCT requests::text AS n FROM api_logs_hourly`);
    return r.rows.map((x) => Number(x.n));
  } finally {
    await c.end();
  }
}

async function sql(db: TestDatabase, ...statements: string[]): Promise<void> {
  const c = new Client({ ...PG_ADMIN, database: db.name });
  await c.connect();
  try {
    for (const s of statements) await c.query(s);
  } finally {
    await c.end();
  }
}

function spooledLines(dir: string): number {
  return pendingLines(dir).length;
}

describe('request logs when PostgreSQL goes away', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let gw: TestGateway | undefined;

  beforeEach(async () => {
    db = await createTestDatabase();
    proxy = new TcpProxy(PG_ADMIN.host, PG_ADMIN.port);
  });
  afterEach(async () => {
    mockLongestString = Infinity;
    mockAppended = 0;
    await gw?.close();
    gw = undefined;
    await proxy.stop();
    await db.drop();
  });

  const env = (port: number) => ({
    DB_BACKEND: 'postgres',
    DATABASE_URL: `postgres://${PG_ADMIN.user}@127.0.0.1:${port}/${db.name}`,
    DB_CONNECT_TIMEOUT_MS: '3000',
  });
  const ask = (g: TestGateway, n: number) =>
    Promise.all(
      Array.from({ length: n }, () =>
        g.client().chat.completions.create({ model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] }),
      ),
    );

  it('spools rows while the database is down and replays them when it is back, without duplicates', async () => {
    const port = await proxy.start();
    gw = await startGateway({ models: MODELS, env: env(port) });
    await ask(gw, 3);
    await gw.waitForRows(3);

    await proxy.stop();
    await ask(gw, 5); // the gateway keeps serving
    const spool = join(gw.dir, 'spool');
    await waitFor(() => spooledLines(spool) === 5, '5 spooled rows');
    // Prompts and answers may be in there: the gateway's user alone reads them, whatever the umask.
    for (const f of readdirSync(spool)) expect([f, statSync(join(spool, f)).mode & 0o777]).toEqual([f, 0o600]);
    const health = await fetch(`${gw.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'degraded', details: { database: { status: 'degraded' } } });
    expect((await fetch(`${gw.url}/health/ready`)).status).toBe(503);

    await proxy.start();
    await waitFor(async () => (await countRows(db)) === 8 && spooledLines(spool) === 0, 'the replay');
    const rows = await gw.rows();
    expect(new Set(rows.map((r) => r.id)).size).toBe(8);
    expect(rows.every((r) => r.status_code === 200 && r.completion_tokens === 3)).toBe(true);
  });

  it('reports the database degraded while it answers but refuses the rows (api_logs renamed), and up once it takes them', async () => {
    const port = await proxy.start();
    gw = await startGateway({ models: MODELS, env: env(port) });
    await ask(gw, 1);
    await gw.waitForRows(1);
    const sql = async (q: string) => {
      const c = new Client({ ...PG_ADMIN, database: db.name });
      await c.connect();
      try {
        await c.query(q);
      } finally {
        await c.end();
      }
    };
    await sql('ALTER TABLE api_logs RENAME TO api_logs_away');
    await ask(gw, 2);
    const spool = join(gw.dir, 'spool');
    await waitFor(() => spooledLines(spool) === 2, '2 spooled rows');
    const health = await fetch(`${gw.url}/health`);
    expect(await health.json()).toMatchObject({
      status: 'degraded',
      details: { database: { status: 'degraded', message: expect.stringContaining('refuses request-log rows') } },
    });
    expect((await fetch(`${gw.url}/health/ready`)).status).toBe(503);
    await sql('ALTER TABLE api_logs_away RENAME TO api_logs');
    await waitFor(async () => (await countRows(db)) === 3 && spooledLines(spool) === 0, 'the replay', 20_000);
    expect(await (await fetch(`${gw.url}/health`)).json()).toMatchObject({ status: 'ok', details: { database: { status: 'up' } } });
  }, 30_000);

  it('starts and serves with the database down, then catches up', async () => {
    const port = await proxy.start();
    await proxy.stop();
    gw = await startGateway({ models: MODELS, env: { ...env(port), DB_CONNECT_TIMEOUT_MS: '300' } });
    await ask(gw, 4);
    const spool = join(gw.dir, 'spool');
    await waitFor(() => spooledLines(spool) === 4, '4 spooled rows');
    await proxy.start();
    await waitFor(async () => {
      try {
        return (await countRows(db)) === 4;
      } catch {
        return false; // the table appears once the gateway has connected and migrated
      }
    }, 'rows written after the database came up');
  });

  it('replays a spool file left by a process that died', async () => {
    const port = await proxy.start();
    // A row as a crashed process (pid 4194305 does not exist) would have left it.
    const dirs = { spool: join(tmpdir(), `hi-spool-${process.pid}-${Date.now()}`) };
    mkdirSync(dirs.spool, { recursive: true });
    writeFileSync(join(dirs.spool, 'api_logs.4194305.1.jsonl'), `${JSON.stringify(logRow('crashed-row-1'))}\n{"truncated by a cra`);
    gw = await startGateway({ models: MODELS, env: { ...env(port), REQUEST_LOG_SPOOL_DIR: dirs.spool } });
    await waitFor(async () => (await countRows(db)) === 1, 'the left-over row');
    const [got] = await gw.rows();
    expect(got).toMatchObject({ id: 'crashed-row-1', completion_tokens: 2 });
    expect(Number(got.cost_usd)).toBeCloseTo(0.000003, 12);
    expect(readdirSync(dirs.spool).filter((f) => f.endsWith('.jsonl'))).toEqual([]);
  });

  it('rolls up a row that a spool file holds twice once, as it inserts it once', async () => {
    const port = await proxy.start();
    const dirs = { spool: join(tmpdir(), `hi-spool-${process.pid}-${Date.now()}`) };
    mkdirSync(dirs.spool, { recursive: true });
    // Written again after a partial append (a full disk): the same line twice.
    const line = JSON.stringify(logRow('twice-row-1'));
    writeFileSync(join(dirs.spool, 'api_logs.4194305.1.jsonl'), `${line}\n${line}\n`);
    gw = await startGateway({ models: MODELS, env: { ...env(port), REQUEST_LOG_SPOOL_DIR: dirs.spool } });
    await waitFor(async () => (await countRows(db)) === 1, 'the spooled row');
    await waitFor(() => Promise.resolve(readdirSync(dirs.spool).filter((f) => f.endsWith('.jsonl')).length === 0), 'the spool replayed');
    // Every dimension (all, model, key, ...) of its hour counts one request.
    expect(await hourlyRequestCounts(db)).toEqual([1]);
  });

  it("leaves another container's spool file to it while it may still write it, and replays it once it is an orphan", async () => {
    const port = await proxy.start();
    const dirs = { spool: join(tmpdir(), `hi-spool-${process.pid}-${Date.now()}`) };
    mkdirSync(dirs.spool, { recursive: true });
    // Replicas sharing a spool volume are often all PID 1: the PID of another container says
    // nothing here, its host name in the file's name does.
    const live = join(dirs.spool, `api_logs.${process.pid}-another-container.1.jsonl`);
    const orphan = join(dirs.spool, `api_logs.${process.pid}-gone-container.1.jsonl`);
    writeFileSync(live, `${JSON.stringify(logRow('live-row'))}\n`);
    writeFileSync(orphan, `${JSON.stringify(logRow('orphan-row'))}\n`);
    const longAgo = new Date(Date.now() - 11 * 60_000);
    utimesSync(orphan, longAgo, longAgo);
    gw = await startGateway({ models: MODELS, env: { ...env(port), REQUEST_LOG_SPOOL_DIR: dirs.spool, REQUEST_LOG_REPLAY_MS: '200' } });
    await waitFor(async () => (await countRows(db)) === 1, 'the orphan row');
    await new Promise((r) => setTimeout(r, 1000)); // replays enough for the live file, were it taken
    expect((await gw.rows()).map((r) => r.id)).toEqual(['orphan-row']);
    expect(readdirSync(dirs.spool).filter((f) => f.endsWith('.jsonl'))).toEqual([basename(live)]);
  });

  it('drains queued rows on shutdown', async () => {
    const port = await proxy.start();
    // A flush interval far longer than the test: only the shutdown drain can write these.
    gw = await startGateway({ models: MODELS, env: { ...env(port), REQUEST_LOG_FLUSH_MS: '600000', REQUEST_LOG_BATCH_SIZE: '1000' } });
    await ask(gw, 6);
    expect(await countRows(db)).toBe(0);
    await gw.close();
    gw = undefined;
    expect(await countRows(db)).toBe(6);
  });

  it('writes rows at once with the largest DB_QUERY_TIMEOUT_MS, whose deadline no Node timer holds', async () => {
    const port = await proxy.start();
    // 2 x 1,500,000,000 ms + 1 s: a timer that long fired at once, and every batch was spooled.
    gw = await startGateway({ models: MODELS, env: { ...env(port), DB_QUERY_TIMEOUT_MS: '1500000000', REQUEST_LOG_FLUSH_MS: '50' } });
    await ask(gw, 2);
    await gw.waitForRows(2);
    expect(gw.app.get(RequestLogWriter).stats.spooled).toBe(0);
  });

  it('writes a batch of more rows than one statement takes parameters (65,535), not to the spool', async () => {
    const port = await proxy.start();
    gw = await startGateway({ models: MODELS, env: { ...env(port), REQUEST_LOG_FLUSH_MS: '600000', REQUEST_LOG_BATCH_SIZE: '5000' } });
    const writer = gw.app.get(RequestLogWriter);
    for (let i = 0; i < 3000; i++) writer.enqueue(logRow(`many-${i}`));
    const dir = join(gw.dir, 'spool');
    await gw.close();
    gw = undefined;
    expect(await countRows(db)).toBe(3000);
    expect(spooledLines(dir)).toBe(0);
  });

  it('spools rows and still shuts down when the database stops answering without closing', async () => {
    const port = await proxy.start();
    gw = await startGateway({ models: MODELS, env: { ...env(port), DB_QUERY_TIMEOUT_MS: '300', REQUEST_LOG_FLUSH_MS: '50' } });
    const dir = join(gw.dir, 'spool');
    await ask(gw, 2);
    await gw.waitForRows(2);
    proxy.hold();
    await ask(gw, 4); // the gateway keeps serving
    // Within the deadline (2 x 300 ms + 1 s), not only once REQUEST_LOG_MAX_QUEUE overflows.
    await waitFor(() => spooledLines(dir) === 4, '4 spooled rows', 5000);
    const app = gw.app;
    gw = undefined;
    const started = Date.now();
    await app.close();
    expect(Date.now() - started).toBeLessThan(8000);
    expect(spooledLines(dir)).toBe(4);
    proxy.release();
    // A new process on the same spool directory replays them: every row exactly once.
    gw = await startGateway({ models: MODELS, env: { ...env(port), REQUEST_LOG_SPOOL_DIR: dir } });
    await waitFor(async () => (await countRows(db)) === 6, 'the replay');
    expect(new Set((await gw.rows()).map((r) => r.id)).size).toBe(6);
  });

  it('leaves no server session waiting on a locked api_logs past DB_QUERY_TIMEOUT_MS, and writes every row after', async () => {
    const port = await proxy.start();
    gw = await startGateway({
      models: MODELS,
      env: { ...env(port), DB_POOL_SIZE: '2', DB_QUERY_TIMEOUT_MS: '300', REQUEST_LOG_FLUSH_MS: '50', REQUEST_LOG_REPLAY_MS: '200' },
    });
    await ask(gw, 1);
    await gw.waitForRows(1);
    // An operator's VACUUM FULL or ALTER TABLE holds this lock for as long as it runs.
    const locker = new Client({ host: PG_ADMIN.host, port: PG_ADMIN.port, user: PG_ADMIN.user, database: db.name });
    await locker.connect();
    /** The gateway's server sessions waiting on the lock for over a second (clock_timestamp: now() stops in a transaction). */
    const stuck = async () =>
      Number(
        (
          await locker.query<{ n: string }>(
            `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'
               AND pid <> pg_backend_pid() AND clock_timestamp() - query_start > interval '1 second'`,
            [db.name],
          )
        ).rows[0].n,
      );
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE api_logs IN ACCESS EXCLUSIVE MODE');
      let most = 0;
      for (let i = 0; i < 10; i++) {
        await ask(gw, 1);
        await new Promise((r) => setTimeout(r, 250));
        most = Math.max(most, await stuck());
      }
      // Before, a timed-out insert's session went on waiting (its client gone) until the lock was
      // released; every retry left one more, past DB_POOL_SIZE, towards max_connections.
      expect(most).toBe(0);
      await locker.query('COMMIT');
    } finally {
      await locker.end();
    }
    await waitFor(async () => (await countRows(db)) === 11, 'every row, once the lock is gone', 15_000);
    expect(new Set((await gw.rows()).map((r) => r.id)).size).toBe(11);
    // Set for the log's transactions, not as a connection parameter: PgBouncer refuses those
    // ("unsupported startup parameter: statement_timeout") and the gateway could not connect.
    const [setting] = await gw.app.get(DatabaseService).dataSource!.query<Array<{ statement_timeout: string }>>('SHOW statement_timeout');
    expect(setting.statement_timeout).toBe('0');
  });

  it('runs on a pool of one connection, and goes on after an answer lost on it', async () => {
    const port = await proxy.start();
    // One connection: migrations run on the one that holds their lock (they had waited for a
    // second one for ever), and the one that lost an answer is the one every later query gets.
    gw = await startGateway({
      models: MODELS,
      env: { ...env(port), DB_QUERY_TIMEOUT_MS: '300', REQUEST_LOG_FLUSH_MS: '50', REQUEST_LOG_REPLAY_MS: '200', DB_POOL_SIZE: '1' },
    });
    await ask(gw, 2);
    await gw.waitForRows(2);
    proxy.dropReplies();
    await ask(gw, 2);
    await waitFor(() => spooledLines(join(gw!.dir, 'spool')) === 2, '2 spooled rows', 5000);
    proxy.release();
    await ask(gw, 2);
    // The spooled rows are replayed and the new ones inserted, on a new connection.
    await waitFor(async () => (await countRows(db)) === 6, 'all 6 rows', 10_000);
  }, 30_000);

  // The BEGIN of the writer's insert is answered with `C` + length + "BEGIN\0", then `Z`: three
  // bytes leave the client inside a message's header.
  it.each([
    ['lost', (p: TcpProxy) => p.dropReplies()],
    ['cut short in the middle of a message', (p: TcpProxy) => p.cutReplies(3)],
  ])(
    'closes a connection whose answer was %s: no session is left idle in a transaction, and rows go on',
    async (_, lose) => {
      const port = await proxy.start();
      gw = await startGateway({ models: MODELS, env: { ...env(port), DB_QUERY_TIMEOUT_MS: '300', REQUEST_LOG_REPLAY_MS: '200' } });
      await ask(gw, 2);
      await gw.waitForRows(2);
      lose(proxy);
      await ask(gw, 2);
      await waitFor(() => spooledLines(join(gw!.dir, 'spool')) === 2, '2 spooled rows', 5000);
      proxy.release();
      await ask(gw, 2);
      await waitFor(async () => (await countRows(db)) === 6, 'all 6 rows', 10_000);
      // node-postgres kept the connection, waiting for the lost answer before sending anything
      // else: PostgreSQL showed its session idle in the transaction the BEGIN opened, for good.
      await waitFor(async () => (await sessions(db)).every((s) => s.state !== 'idle in transaction'), 'no session idle in a transaction');
      await gw.waitForRows(6);
      expect((await fetch(`${gw.url}/health`)).status).toBe(200);
    },
    30_000,
  );

  it('behind a silent database: /health answers at once, and shutdown spools the rows in flight within seconds', async () => {
    const port = await proxy.start();
    // The default query timeout: a batch's insert is waited for 2 x 10 s + 1 s.
    gw = await startGateway({ models: MODELS, env: { ...env(port), DB_QUERY_TIMEOUT_MS: '10000', REQUEST_LOG_FLUSH_MS: '50' } });
    const dir = join(gw.dir, 'spool');
    await ask(gw, 2);
    await gw.waitForRows(2);
    proxy.hold();
    await ask(gw, 3);
    await new Promise((r) => setTimeout(r, 200)); // the batch's insert is under way, and hangs
    for (const path of ['/health', '/health/ready']) {
      const started = Date.now();
      const res = await fetch(`${gw.url}${path}`);
      expect(Date.now() - started).toBeLessThan(1000);
      const body = (await res.json()) as { info?: Record<string, unknown>; error?: Record<string, unknown> };
      // The rows being inserted count as queued.
      expect({ ...body.info, ...body.error }.database).toMatchObject({ status: path === '/health' ? 'degraded' : 'down', queued: 3 });
    }
    const app = gw.app;
    gw = undefined;
    const started = Date.now();
    const closing = app.close();
    // A process killed a few seconds into its shutdown has its rows on disk.
    await waitFor(() => spooledLines(dir) === 3, '3 spooled rows', 4000);
    await closing;
    expect(Date.now() - started).toBeLessThan(8000);
    proxy.release();
    gw = await startGateway({ models: MODELS, env: { ...env(port), REQUEST_LOG_SPOOL_DIR: dir } });
    await waitFor(async () => (await countRows(db)) === 5, 'the replay');
    expect(new Set((await gw.rows()).map((r) => r.id)).size).toBe(5);
  }, 30_000);

  it('behind a silent database, rows that come while shutdown spools go to the spool too, not to the log', async () => {
    const port = await proxy.start();
    gw = await startGateway({ models: MODELS, env: { ...env(port), DB_QUERY_TIMEOUT_MS: '10000', REQUEST_LOG_FLUSH_MS: '50' } });
    const dir = join(gw.dir, 'spool');
    await ask(gw, 1);
    await gw.waitForRows(1);
    proxy.hold();
    await ask(gw, 3);
    await new Promise((r) => setTimeout(r, 200)); // the batch's insert is under way, and hangs
    const app = gw.app;
    gw = undefined;
    // A row comes (a stream the closing server cut, settling) as each of shutdown's spool writes begins.
    const writer = app.get(RequestLogWriter);
    let late = 0;
    mockOnAppend = () => {
      if (late < 2) writer.enqueue(logRow(`late-${++late}`));
    };
    try {
      await app.close();
    } finally {
      mockOnAppend = undefined;
    }
    expect(late).toBe(2);
    expect(spooledLines(dir)).toBe(5);
    proxy.release();
  }, 30_000);

  it('behind a silent database, rows wait in memory no longer than REQUEST_LOG_MAX_HOLD_MS and a ping: a crash then loses none', async () => {
    const port = await proxy.start();
    gw = await startGateway({
      models: MODELS,
      env: {
        ...env(port),
        DB_QUERY_TIMEOUT_MS: '10000',
        REQUEST_LOG_FLUSH_MS: '50',
        REQUEST_LOG_MAX_HOLD_MS: '500',
        REQUEST_LOG_REPLAY_MS: '200',
      },
    });
    const dir = join(gw.dir, 'spool');
    await ask(gw, 2);
    await gw.waitForRows(2);
    proxy.hold();
    await ask(gw, 3);
    await new Promise((r) => setTimeout(r, 200)); // the batch's insert is under way, and hangs
    await ask(gw, 4); // queued behind it
    // Without a shutdown (a kill -9 would come unannounced): once a ping does not answer either
    // (2 s), the batch in flight is copied to the spool, and the rows queued behind it go there,
    // long before the insert's deadline (21 s).
    await waitFor(() => spooledLines(dir) === 7, '7 spooled rows', 6000);
    expect(gw.app.get(RequestLogWriter).pending).toBe(3); // the batch in flight, only
    // The database answers again: the insert lands, the copies replay as rows present.
    proxy.release();
    await waitFor(async () => (await countRows(db)) === 9, 'all 9 rows');
    await waitFor(() => spooledLines(dir) === 0, 'the spool replayed');
    expect(new Set((await gw.rows()).map((r) => r.id)).size).toBe(9);
    expect(await hourlyRequestCounts(db)).toEqual([9]); // each row rolled up once
  }, 30_000);

  it('behind a slow database that answers, rows wait in memory past REQUEST_LOG_MAX_HOLD_MS and are sent once', async () => {
    const port = await proxy.start();
    // 20 ms a row: a batch of 50 takes a second, twice the hold.
    await sql(
      db,
      'CREATE SEQUENCE slow_calls',
      `CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('slow_calls'); PERFORM pg_sleep(0.02); RETURN NEW; END $$`,
    );
    gw = await startGateway({
      models: MODELS,
      env: {
        ...env(port),
        REQUEST_LOG_FLUSH_MS: '50',
        REQUEST_LOG_BATCH_SIZE: '50',
        REQUEST_LOG_MAX_HOLD_MS: '500',
        REQUEST_LOG_REPLAY_MS: '200',
      },
    });
    await sql(db, 'CREATE TRIGGER slow_row BEFORE INSERT ON api_logs FOR EACH ROW EXECUTE FUNCTION slow_row()');
    const dir = join(gw.dir, 'spool');
    await ask(gw, 150);
    await waitFor(async () => (await countRows(db)) === 150, 'all 150 rows', 20_000);
    expect(spooledLines(dir)).toBe(0);
    const c = new Client({ ...PG_ADMIN, database: db.name });
    await c.connect();
    try {
      // Each row went to the database once: none copied to the spool and sent again.
      const r = await c.query<{ n: string }>('SELECT last_value::text AS n FROM slow_calls');
      expect(Number(r.rows[0].n)).toBe(150);
    } finally {
      await c.end();
    }
  }, 40_000);

  it('spools a row with its bodies capped to DB_STORE_CONTENT_LIMIT, and replays it so', async () => {
    const port = await proxy.start();
    gw = await startGateway({ models: MODELS, env: { ...env(port), DB_STORE_FULL_CONTENT: 'true', DB_STORE_CONTENT_LIMIT: '64kb' } });
    await ask(gw, 1);
    await gw.waitForRows(1);
    await proxy.stop();
    const spool = join(gw.dir, 'spool');
    const prompt = 'x'.repeat(2 * 1024 * 1024);
    await gw.client().chat.completions.create({ model: 'demo/mock', messages: [{ role: 'user', content: prompt }] });
    await waitFor(() => spooledLines(spool) === 1, 'the spooled row');
    // A spool line, read whole on every replay, holds the capped body, not 2 MB.
    const file = readdirSync(spool).find((f) => f.startsWith('api_logs.'))!;
    expect(readFileSync(join(spool, file)).length).toBeLessThan(80 * 1024);
    await proxy.start();
    await waitFor(async () => (await countRows(db)) === 2 && spooledLines(spool) === 0, 'the replay');
    const [, row] = await gw.rows();
    expect(row.request_content).toMatchObject({
      truncated: true,
      bytes: expect.any(Number),
      head: expect.stringMatching(/^\{"model":"demo\/mock"/),
    });
    expect((row.request_content as { bytes: number }).bytes).toBeGreaterThan(prompt.length);
  });

  it('writes a batch of large bodies that as one statement would take longer than DB_QUERY_TIMEOUT_MS', async () => {
    const port = await proxy.start();
    gw = await startGateway({
      models: MODELS,
      env: { ...env(port), DB_QUERY_TIMEOUT_MS: '1000', DB_STORE_CONTENT_LIMIT: '2mb', REQUEST_LOG_FLUSH_MS: '600000' },
    });
    const writer = gw.app.get(RequestLogWriter);
    // 80 bodies of 1.5 MB, 120 MB: PostgreSQL took ~35 ms per MB here, so as one statement the
    // batch ran past the 1 s query timeout, and in any statements past the 3 s batch deadline;
    // it was spooled as if the database were silent, and its replay failed alike. Statements of
    // at most 4 M characters (two of these rows) take ~0.1 s each.
    const body = { messages: [{ role: 'user', content: 'x'.repeat(1536 * 1024) }] };
    for (let i = 0; i < 80; i++) writer.enqueue(logRow(`big-${i}`, { request_content: body }));
    await writer.flush();
    await waitFor(async () => (await countRows(db)) === 80, 'the 80 rows');
    expect(writer.stats).toMatchObject({ written: 80, spooled: 0, rejected: 0 });
    expect(spooledLines(join(gw.dir, 'spool'))).toBe(0);
  }, 30_000);

  it('drains to the spool on shutdown when the database is down', async () => {
    const port = await proxy.start();
    gw = await startGateway({ models: MODELS, env: { ...env(port), REQUEST_LOG_FLUSH_MS: '600000', REQUEST_LOG_BATCH_SIZE: '1000' } });
    const spool = join(gw.dir, 'spool');
    await ask(gw, 2);
    await proxy.stop();
    const app = gw.app;
    gw = undefined;
    await app.close();
    expect(spooledLines(spool)).toBe(2);
  });

  describe('a spool file replayed', () => {
    const ids = Array.from({ length: 1200 }, (_, i) => `r-${i}`);
    /** A gateway that replays only when told to, its start-up replay done. */
    async function start(port: number, extra: Record<string, string> = {}): Promise<RequestLogWriter> {
      gw = await startGateway({ models: MODELS, env: { ...env(port), REQUEST_LOG_REPLAY_MS: '600000', ...extra } });
      const writer = gw.app.get(RequestLogWriter);
      await writer.replay();
      return writer;
    }

    it('is read a batch at a time: one longer than the longest string is still written', async () => {
      const writer = await start(await proxy.start());
      const spool = join(gw!.dir, 'spool');
      leaveSpoolFile(spool, ids); // ~700 KB
      // Read whole, the file failed on every replay, for ever, and none of its rows went in.
      mockLongestString = 64 * 1024;
      await writer.replay();
      expect(await countRows(db)).toBe(1200);
      expect(new Set((await gw!.rows()).map((r) => r.id)).size).toBe(1200);
      expect(spooledLines(spool)).toBe(0);
      expect(writer.stats.replayed).toBe(1200);
    });

    it("is a dead gateway's whose PID another process has since: replayed, while a live writer's file is left to it", async () => {
      const writer = await start(await proxy.start());
      const spool = join(gw!.dir, 'spool');
      // A process alive now, started after the first file was named (the dead writer's PID given
      // again) and before the second (as a live writer names its file after it starts).
      const other = spawn('sleep', ['60']);
      try {
        await new Promise((r) => other.once('spawn', r));
        const line = (id: string) => `${JSON.stringify(logRow(id))}\n`;
        writeFileSync(join(spool, `api_logs.${other.pid}.${Date.now() - 60_000}.jsonl`), line('reused-pid'));
        const live = `api_logs.${other.pid}.${Date.now() + 60_000}.jsonl`;
        writeFileSync(join(spool, live), line('live-writer'));
        await writer.replay();
        expect((await gw!.rows()).map((r) => r.id)).toContain('reused-pid');
        expect((await gw!.rows()).map((r) => r.id)).not.toContain('live-writer');
        expect(readdirSync(spool).filter((f) => f.startsWith('api_logs.'))).toEqual([live]);
      } finally {
        other.kill();
      }
    });

    it('counts as replayed only the rows that were not in the database already', async () => {
      const lines: string[] = [];
      gw = await startGateway({
        models: MODELS,
        env: { ...env(await proxy.start()), REQUEST_LOG_REPLAY_MS: '600000', LOG_LEVEL: 'info' },
        logLines: lines,
      });
      const writer = gw.app.get(RequestLogWriter);
      await writer.replay();
      const spool = join(gw.dir, 'spool');
      // 700 rows went in before (an insert that landed after its batch was spooled).
      leaveSpoolFile(spool, ids.slice(0, 700));
      await writer.replay();
      expect(writer.stats.replayed).toBe(700);
      leaveSpoolFile(spool, ids);
      await writer.replay();
      expect(await countRows(db)).toBe(1200);
      expect(writer.stats.replayed).toBe(1200);
      expect(lines.filter((l) => l.includes('replayed 1200 spooled')).map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual([
        'replayed 1200 spooled request-log rows; 700 of them were in the database already or refused',
      ]);
    });

    it('failing part way, leaves exactly the rows not written, and writes them when the database takes them', async () => {
      const writer = await start(await proxy.start());
      const spool = join(gw!.dir, 'spool');
      // The database fails (out of disk: 53100, not the row's fault) on a row of the second batch.
      await sql(
        db,
        `CREATE FUNCTION fail_r700() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NEW.id = 'r-700' THEN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END IF;
           RETURN NEW;
         END $$`,
        'CREATE TRIGGER fail_r700 BEFORE INSERT ON api_logs FOR EACH ROW EXECUTE FUNCTION fail_r700()',
      );
      leaveSpoolFile(spool, ids);
      await writer.replay();
      expect(await countRows(db)).toBe(500);
      expect(spooledIds(spool)).toEqual(ids.slice(500));
      expect(writer.stats).toMatchObject({ replayed: 500, rejected: 0 });

      await sql(db, 'DROP TRIGGER fail_r700 ON api_logs');
      await writer.replay();
      expect(await countRows(db)).toBe(1200);
      expect(new Set((await gw!.rows()).map((r) => r.id)).size).toBe(1200);
      expect(spooledLines(spool)).toBe(0);
    });

    /** Fails the insert of each row named, with the SQLSTATE given (a trigger: the rows' batches fail alike). */
    async function failRows(codes: Record<string, string>): Promise<void> {
      const ifs = Object.entries(codes)
        .map(([id, code]) => `IF NEW.id = '${id}' THEN RAISE EXCEPTION 'test failure on %', NEW.id USING ERRCODE = '${code}'; END IF;`)
        .join(' ');
      await sql(
        db,
        `CREATE OR REPLACE FUNCTION fail_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN ${ifs} RETURN NEW; END $$`,
        'DROP TRIGGER IF EXISTS fail_rows ON api_logs',
        'CREATE TRIGGER fail_rows BEFORE INSERT ON api_logs FOR EACH ROW EXECUTE FUNCTION fail_rows()',
      );
    }

    it('failing again and again (a flapping database), writes nothing and resumes where it stopped', async () => {
      const writer = await start(await proxy.start());
      const spool = join(gw!.dir, 'spool');
      await failRows({ 'r-700': '53100' });
      leaveSpoolFile(spool, ids);
      mockAppended = 0;
      for (let i = 0; i < 3; i++) await writer.replay();
      // Each failed replay copied the 700 rows left (~400 KB) to a new spool file: a spool of
      // hundreds of MB was rewritten every REQUEST_LOG_REPLAY_MS.
      expect(mockAppended).toBe(0);
      expect(await countRows(db)).toBe(500);
      expect(spooledIds(spool)).toEqual(ids.slice(500));
      expect(writer.stats).toMatchObject({ replayed: 500, rejected: 0 });

      // Up again, then down again further on: the replay went on from r-500, not from the start.
      await failRows({ 'r-1100': '53100' });
      await writer.replay();
      expect(await countRows(db)).toBe(1000);
      expect(spooledIds(spool)).toEqual(ids.slice(1000));
      expect(writer.stats.replayed).toBe(1000);

      await sql(db, 'DROP TRIGGER fail_rows ON api_logs');
      await writer.replay();
      expect(await countRows(db)).toBe(1200);
      expect(spooledLines(spool)).toBe(0);
      expect(readdirSync(spool).filter((f) => f.startsWith('api_logs.'))).toEqual([]);
      expect(writer.stats.replayed).toBe(1200);
      expect(mockAppended).toBe(0);
    });

    it('failing inside a batch it writes row by row, resumes at the first row not written', async () => {
      const writer = await start(await proxy.start());
      const spool = join(gw!.dir, 'spool');
      // r-600 is refused (22003), so its batch goes in row by row; the database fails at r-800.
      await failRows({ 'r-600': '22003', 'r-800': '53100' });
      leaveSpoolFile(spool, ids);
      await writer.replay();
      expect(await countRows(db)).toBe(799);
      expect(spooledIds(spool)).toEqual(ids.slice(800));
      expect(rejectedRows(spool).map((r) => r.row.id)).toEqual(['r-600']);

      await sql(db, 'DROP TRIGGER fail_rows ON api_logs');
      await writer.replay();
      // r-600, set aside before the resume point, is not replayed; every row after it is.
      expect(await countRows(db)).toBe(1199);
      expect(spooledLines(spool)).toBe(0);
      expect(rejectedRows(spool).map((r) => r.row.id)).toEqual(['r-600']);
    });

    it('left part way by a process that is gone, is resumed by the next one where it stopped', async () => {
      const writer = await start(await proxy.start());
      const spool = join(gw!.dir, 'spool');
      await failRows({ 'r-700': '53100' });
      leaveSpoolFile(spool, ids);
      await writer.replay();
      const app = gw!.app;
      gw = undefined;
      await app.close();
      // As a worker that died would have left it (pid 4194305 does not exist).
      const [claimed] = readdirSync(spool).filter((f) => f.startsWith('api_logs.'));
      expect(spoolOffset(claimed)).toBeGreaterThan(0);
      renameSync(join(spool, claimed), join(spool, `api_logs.replaying.4194305.1.x.from${spoolOffset(claimed)}.jsonl`));

      await sql(db, 'DROP TRIGGER fail_rows ON api_logs');
      gw = await startGateway({ models: MODELS, env: { ...env(proxy.port), REQUEST_LOG_SPOOL_DIR: spool } });
      await waitFor(async () => (await countRows(db)) === 1200 && spooledLines(spool) === 0, 'the replay');
      expect(gw.app.get(RequestLogWriter).stats.replayed).toBe(700);
      expect(new Set((await gw.rows()).map((r) => r.id)).size).toBe(1200);
    });

    it('at shutdown is stopped, touches nothing after, and leaves its rows for the next start', async () => {
      const writer = await start(await proxy.start());
      const spool = join(gw!.dir, 'spool');
      // The replay's second batch takes 4 s, past the 2 s shutdown waits for it.
      await sql(
        db,
        `CREATE FUNCTION slow_r600() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NEW.id = 'r-600' THEN PERFORM pg_sleep(4); END IF;
           RETURN NEW;
         END $$`,
        'CREATE TRIGGER slow_r600 BEFORE INSERT ON api_logs FOR EACH ROW EXECUTE FUNCTION slow_r600()',
      );
      leaveSpoolFile(spool, ids);
      const replay = writer.replay();
      await waitFor(async () => (await countRows(db)) === 500, 'the first batch');
      const app = gw!.app;
      gw = undefined;
      await app.close();
      const left = spoolFiles(spool);
      // The slow batch lands after close; the replay, left behind, must not go on then (it copied
      // the rest out to the spool of a process that was done, or lost it when that directory had
      // gone: "cannot spool … ENOENT").
      await replay;
      expect(spoolFiles(spool)).toEqual(left);
      expect(spooledIds(spool)).toEqual(ids);

      await sql(db, 'DROP TRIGGER slow_r600 ON api_logs');
      gw = await startGateway({ models: MODELS, env: { ...env(proxy.port), REQUEST_LOG_SPOOL_DIR: spool } });
      await waitFor(async () => (await countRows(db)) === 1200 && spooledLines(spool) === 0, 'the replay');
      expect(new Set((await gw.rows()).map((r) => r.id)).size).toBe(1200);
    }, 20_000);

    it('stopped at shutdown between batches, does not set aside again the rows it set aside', async () => {
      const writer = await start(await proxy.start());
      const spool = join(gw!.dir, 'spool');
      // r-100 is refused (a count beyond integer) and set aside in the first batch; the second
      // batch waits on a lock the test holds until shutdown has begun, so the replay stops after it.
      const lock = new Client({ ...PG_ADMIN, database: db.name });
      await lock.connect();
      await lock.query('SELECT pg_advisory_lock(4242)');
      await sql(
        db,
        `CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NEW.id = 'r-600' THEN PERFORM pg_advisory_lock(4242); PERFORM pg_advisory_unlock(4242); END IF;
           RETURN NEW;
         END $$`,
        'CREATE TRIGGER gate BEFORE INSERT ON api_logs FOR EACH ROW EXECUTE FUNCTION gate()',
      );
      const rows = ids.map((id) => logRow(id, id === 'r-100' ? { prompt_tokens: 3_000_000_000 } : {}));
      writeFileSync(join(spool, 'api_logs.4194305.1.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
      const replay = writer.replay();
      await waitFor(async () => (await countRows(db)) === 499 && writer.stats.rejected === 1, 'the first batch');
      const app = gw!.app;
      gw = undefined;
      const closing = app.close();
      await waitFor(() => (writer as unknown as { stopping: boolean }).stopping, 'shutdown to begin');
      await lock.end(); // the lock goes with its session
      await closing;
      await replay;
      expect(await countRows(db)).toBe(999);
      expect(rejectedRows(spool).map((r) => r.row.id)).toEqual(['r-100']);
      // The file resumes at r-1000: resumed from 0, the next start set r-100 aside again.
      expect(spooledIds(spool)).toEqual(ids.slice(1000));

      await sql(db, 'DROP TRIGGER gate ON api_logs');
      gw = await startGateway({ models: MODELS, env: { ...env(proxy.port), REQUEST_LOG_SPOOL_DIR: spool } });
      await waitFor(async () => (await countRows(db)) === 1199 && spooledLines(spool) === 0, 'the replay');
      expect(rejectedRows(spool).map((r) => r.row.id)).toEqual(['r-100']);
      expect(gw.app.get(RequestLogWriter).stats).toMatchObject({ rejected: 0, replayed: 200 });
    }, 20_000);
  });
});

function rejectedRows(dir: string): Array<{ rejected: string; row: ApiLog }> {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.startsWith('rejected.'))
    .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean))
    .map((l) => JSON.parse(l) as { rejected: string; row: ApiLog });
}

/**
 * One row the database cannot take must not hold back the rows batched with it: text it cannot
 * store is made storable, and a row it still refuses is set aside, in a file of its own.
 */
describe.each(['sqlite', 'postgres'] as const)('rows the database would refuse, on %s', (backend) => {
  let pg: TestDatabase | undefined;
  let gw: TestGateway;

  beforeEach(async () => {
    pg = backend === 'postgres' ? await createTestDatabase() : undefined;
    gw = await startGateway({ models: MODELS, env: { ...pg?.env } });
  });
  afterEach(async () => {
    await gw?.close();
    await pg?.drop();
  });

  it('stores text with NUL characters, lone surrogates and over-long values, batched with ordinary rows', async () => {
    const writer = gw.app.get(RequestLogWriter);
    writer.enqueue(logRow('ok-1'));
    writer.enqueue(
      logRow('nul-1', {
        user_id: 'evil\u0000user\ud83d',
        model: 'demo/\u0000mock',
        error: 'a\u0000b',
        metadata: { note: 'x\u0000y', literal: '\\u0000 stays', half: 'a\ud800b', low: '\udfff', pair: '\ud83d\ude00', text: '\\ud800' },
      }),
    );
    writer.enqueue(logRow('long-1', { finish_reason: 'f'.repeat(100), error_code: 'c'.repeat(300) }));
    writer.enqueue(logRow('ok-2'));
    const rows = new Map((await gw.rows()).map((r) => [r.id, r]));
    expect([...rows.keys()].sort()).toEqual(['long-1', 'nul-1', 'ok-1', 'ok-2']);
    // A NUL is U+FFFD, as a lone surrogate: dropped, a refused model "demo/<NUL>mock" was logged as a real one.
    expect(rows.get('nul-1')).toMatchObject({
      user_id: 'evil\ufffduser\ufffd',
      model: 'demo/\ufffdmock',
      error: 'a\ufffdb',
      metadata: { note: 'x\ufffdy', literal: '\\u0000 stays', half: 'a\ufffdb', low: '\ufffd', pair: '\ud83d\ude00', text: '\\ud800' },
    });
    expect(rows.get('long-1')).toMatchObject({ finish_reason: 'f'.repeat(32), error_code: 'c'.repeat(100) });
    expect(spooledLines(join(gw.dir, 'spool'))).toBe(0);
    expect(rejectedRows(join(gw.dir, 'spool'))).toEqual([]);
  });

  it('writes a row whose stored content cannot be serialised without that content, and keeps serving', async () => {
    let deep: unknown = 'bottom';
    for (let i = 0; i < 20_000; i++) deep = [deep];
    const writer = gw.app.get(RequestLogWriter);
    writer.enqueue(logRow('ok-1'));
    writer.enqueue(logRow('deep-1', { response_content: deep }));
    const rows = new Map((await gw.rows()).map((r) => [r.id, r]));
    expect([...rows.keys()].sort()).toEqual(['deep-1', 'ok-1']);
    expect(rows.get('deep-1')).toMatchObject({ response_content: null, completion_tokens: 2 });
    expect(rejectedRows(join(gw.dir, 'spool'))).toEqual([]);
    expect(spooledLines(join(gw.dir, 'spool'))).toBe(0);
    expect((await fetch(`${gw.url}/health`)).status).toBe(200);
  });

  it('sets aside a row missing a required value instead of dropping it, and still skips a row already present', async () => {
    const writer = gw.app.get(RequestLogWriter);
    const spool = join(gw.dir, 'spool');
    writer.enqueue(logRow('ok-1'));
    expect((await gw.rows()).map((r) => r.id)).toEqual(['ok-1']);
    writer.enqueue(logRow('ok-1')); // a replayed row: already there, not a refusal
    writer.enqueue(logRow('null-1', { latency_ms: null as unknown as number }));
    writer.enqueue(logRow('ok-2'));
    await waitFor(async () => (await gw.rows()).length === 2 && writer.stats.rejected === 1, 'the batch');
    expect((await gw.rows()).map((r) => r.id).sort()).toEqual(['ok-1', 'ok-2']);
    expect(rejectedRows(spool).map((r) => [r.row.id, r.rejected])).toEqual([['null-1', expect.stringMatching(/latency_ms/)]]);
    expect(writer.stats.rejected).toBe(1);
  });

  if (backend === 'postgres') {
    it('sets aside a row it refuses (a count beyond integer), writes the others, and does the same on replay', async () => {
      const writer = gw.app.get(RequestLogWriter);
      const spool = join(gw.dir, 'spool');
      writer.enqueue(logRow('ok-1'));
      writer.enqueue(logRow('huge-1', { prompt_tokens: 3_000_000_000 }));
      writer.enqueue(logRow('ok-2'));
      expect((await gw.rows()).map((r) => r.id).sort()).toEqual(['ok-1', 'ok-2']);
      expect(rejectedRows(spool).map((r) => [r.row.id, r.rejected])).toEqual([['huge-1', expect.stringContaining('out of range')]]);
      expect([writer.stats.rejected, writer.stats.written]).toEqual([1, 2]);

      // A spool file (a process that died while the database was down) with such a row in it.
      const left = [logRow('ok-3'), logRow('huge-2', { completion_tokens: 5_000_000_000 }), logRow('ok-4')];
      writeFileSync(join(spool, 'api_logs.4194305.1.jsonl'), left.map((r) => JSON.stringify(r)).join('\n') + '\n');
      await waitFor(async () => (await gw.rows()).length === 4, 'the replay');
      expect((await gw.rows()).map((r) => r.id).sort()).toEqual(['ok-1', 'ok-2', 'ok-3', 'ok-4']);
      await waitFor(() => spooledLines(spool) === 0, 'the spool file to go');
      expect(rejectedRows(spool).map((r) => r.row.id)).toEqual(['huge-1', 'huge-2']);
    });

    it('sets aside a row over one of its limits (class 54), writes the others, and does not replay it', async () => {
      // An index an operator added for a dashboard: PostgreSQL refuses an entry over a third of a
      // page with 54000 (program_limit_exceeded), as it refuses a jsonb string over 256 MB.
      const c = new Client({ ...PG_ADMIN, database: pg!.name });
      await c.connect();
      await c.query('CREATE INDEX "IDX_test_api_logs_error" ON "api_logs" ("error")');
      await c.end();
      const writer = gw.app.get(RequestLogWriter);
      const spool = join(gw.dir, 'spool');
      // Incompressible, so the index entry stays over 2704 bytes.
      const error = Array.from({ length: 400 }, () => Math.random().toString(36).slice(2)).join('');
      writer.enqueue(logRow('ok-1'));
      writer.enqueue(logRow('long-1', { status_code: 502, error }));
      writer.enqueue(logRow('ok-2'));
      expect((await gw.rows()).map((r) => r.id).sort()).toEqual(['ok-1', 'ok-2']);
      expect(rejectedRows(spool).map((r) => [r.row.id, r.rejected])).toEqual([['long-1', expect.stringContaining('index row size')]]);
      // Nothing left to replay: the database is not asked again every REQUEST_LOG_REPLAY_MS.
      await new Promise((r) => setTimeout(r, 500));
      expect(spooledLines(spool)).toBe(0);
      expect(writer.stats).toMatchObject({ written: 2, rejected: 1, spooled: 0 });
    });
  }
});

/**
 * A row that fails alone for a cause that is neither its data (classes 22, 23, 54) nor the
 * database's state is tried ROW_ATTEMPTS (3) times in a row and then set aside: replayed for ever,
 * it held back every row behind it. An outage, whatever its code, never counts.
 */
describe.each(['sqlite', 'postgres'] as const)('a spooled row that fails alone for another cause, on %s', (backend) => {
  let pg: TestDatabase | undefined;
  let gw: TestGateway;
  let writer: RequestLogWriter;
  let spool: string;

  beforeEach(async () => {
    pg = backend === 'postgres' ? await createTestDatabase() : undefined;
    gw = await startGateway({ models: MODELS, env: { ...pg?.env, REQUEST_LOG_REPLAY_MS: '600000' } });
    writer = gw.app.get(RequestLogWriter);
    await writer.replay();
    spool = join(gw.dir, 'spool');
  });
  afterEach(async () => {
    await gw?.close();
    await pg?.drop();
  });

  /** Makes the insert of `id` fail with SQLSTATE `code` (a trigger). */
  async function failRow(id: string, code: string): Promise<void> {
    await sql(
      pg!,
      `CREATE OR REPLACE FUNCTION fail_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
         IF NEW.id = '${id}' THEN RAISE EXCEPTION 'test failure on %', NEW.id USING ERRCODE = '${code}'; END IF;
         RETURN NEW;
       END $$`,
      'DROP TRIGGER IF EXISTS fail_row ON api_logs',
      'CREATE TRIGGER fail_row BEFORE INSERT ON api_logs FOR EACH ROW EXECUTE FUNCTION fail_row()',
    );
  }

  const ids = async () => (await gw.rows()).map((r) => r.id).sort();

  it('is set aside with its error after three tries in one replay, and the rows behind it are written', async () => {
    // SQLite binds no object ("SQLite3 can only bind numbers, strings, bigints, buffers, and
    // null": a TypeError, no code); on PostgreSQL, a trigger's own exception (P0001).
    const bad = backend === 'sqlite' ? logRow('bad-1', { model: { a: 1 } as unknown as string }) : logRow('bad-1');
    if (backend === 'postgres') await failRow('bad-1', 'P0001');
    const reason = backend === 'sqlite' ? /can only bind/ : /test failure on bad-1/;
    writeFileSync(
      join(spool, 'api_logs.4194305.1.jsonl'),
      [logRow('ok-1'), bad, logRow('ok-2')].map((r) => JSON.stringify(r)).join('\n') + '\n',
    );

    // Tried once per replay, it held ok-2 back for two replays (REQUEST_LOG_REPLAY_MS each).
    await writer.replay();
    expect(await ids()).toEqual(['ok-1', 'ok-2']);
    expect(spooledLines(spool)).toBe(0);
    expect(rejectedRows(spool).map((r) => [r.row.id, r.rejected])).toEqual([['bad-1', expect.stringMatching(reason)]]);
    expect(rejectedRows(spool)[0].rejected).toContain('failed alone 3 times');
    expect(writer.stats.rejected).toBe(1);
  });

  it('failing on every request, holds back neither the replay nor the rows written live', async () => {
    // One endpoint producing such a row on every request: 1 row in 10.
    const isBad = (i: number) => i % 10 === 3;
    const id = (at: string, i: number) => `${at}-${isBad(i) ? 'bad' : 'ok'}-${i}`;
    const row = (at: string, i: number) =>
      backend === 'sqlite' && isBad(i) ? logRow(id(at, i), { model: { a: 1 } as unknown as string }) : logRow(id(at, i));
    if (backend === 'postgres') {
      await sql(
        pg!,
        `CREATE FUNCTION fail_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NEW.id LIKE '%-bad-%' THEN RAISE EXCEPTION 'test failure on %', NEW.id USING ERRCODE = 'P0001'; END IF;
           RETURN NEW;
         END $$`,
        'CREATE TRIGGER fail_bad BEFORE INSERT ON api_logs FOR EACH ROW EXECUTE FUNCTION fail_bad()',
      );
    }
    const all = Array.from({ length: 100 }, (_, i) => i);
    const good = (at: string) => all.filter((i) => !isBad(i)).map((i) => id(at, i));
    const bad = (at: string) => all.filter(isBad).map((i) => id(at, i));

    // A spool file: one replay writes every good row and sets every bad one aside (tried once a
    // replay, each bad row stopped it, and held back every row behind it until the next one).
    writeFileSync(join(spool, 'api_logs.4194305.1.jsonl'), all.map((i) => JSON.stringify(row('spooled', i))).join('\n') + '\n');
    await writer.replay();
    expect(await ids()).toEqual(good('spooled').sort());
    expect(spooledLines(spool)).toBe(0);
    expect(rejectedRows(spool).map((r) => r.row.id)).toEqual(bad('spooled'));

    // Live: every good row is written at once (a bad row stalled the writer, and every row after
    // it went to the spool until the next replay).
    for (const i of all) writer.enqueue(row('live', i));
    await writer.flush();
    expect(await ids()).toEqual([...good('spooled'), ...good('live')].sort());
    expect(spooledLines(spool)).toBe(0);
    expect(writer.stats).toMatchObject({ spooled: 0, rejected: 20 });
    expect(rejectedRows(spool).map((r) => r.row.id)).toEqual([...bad('spooled'), ...bad('live')]);
  });

  if (backend === 'postgres') {
    it('is never set aside for an outage, whatever its code, alone or in its batch', async () => {
      // Admin shutdown, too many connections, out of disk, connection failure, a read-only
      // standby, a missing privilege, a deadlock, a cancelled query, an internal error.
      const codes = ['57P01', '53300', '53100', '08006', '25006', '42501', '40P01', '57014', 'XX000'];
      for (const [k, code] of codes.entries()) {
        // huge-k is refused as data (22003), so the first replay tries out-k alone; the next
        // ones fail the batch that is left as a whole.
        const rows = [logRow(`huge-${k}`, { prompt_tokens: 3_000_000_000 }), logRow(`out-${k}`), logRow(`ok-${k}`)];
        writeFileSync(join(spool, `api_logs.4194305.${k}.jsonl`), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
        await failRow(`out-${k}`, code);
        for (let i = 0; i < ROW_TRIES + 1; i++) await writer.replay();
        expect(rejectedRows(spool).map((r) => r.row.id)).not.toContain(`out-${k}`);
        expect(spooledIds(spool)).toEqual(expect.arrayContaining([`out-${k}`, `ok-${k}`]));
      }
      await sql(pg!, 'DROP TRIGGER fail_row ON api_logs');
      await waitFor(async () => (await writer.replay(), spooledLines(spool) === 0), 'the replays');
      expect(await ids()).toEqual(codes.flatMap((_, k) => [`ok-${k}`, `out-${k}`]).sort());
      expect(
        rejectedRows(spool)
          .map((r) => r.row.id)
          .sort(),
      ).toEqual(codes.map((_, k) => `huge-${k}`).sort());
    });
  }
});

/** The tries a row failing alone for another cause gets (ROW_ATTEMPTS in the writer). */
const ROW_TRIES = 3;
