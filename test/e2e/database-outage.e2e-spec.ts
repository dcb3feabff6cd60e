import Database from 'better-sqlite3';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { ACCESS_ENV, adminApi, call, chat, waitFor } from '../helpers/access';
import { RequestLogWriter } from '../../src/storage/request-log.writer';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { createTestDatabase, PG_ADMIN, type TestDatabase } from '../helpers/postgres';
import { TcpProxy } from '../helpers/tcp-proxy';

/**
 * The admin API and /v1/generation while PostgreSQL is unreachable: a 503 that says the
 * database is, never a 500 that blames the gateway; and the same answers again once it is back.
 */
const MODELS = 'models:\n  - id: demo/mock\n    context_length: 4096\n    route: [{ kind: mock, tokens: 3 }]\n';

/** The spool's place taken by a file: every write to it fails (as on a full or read-only disk). */
function takeSpoolsPlace(spool: string): void {
  rmSync(spool, { recursive: true, force: true });
  writeFileSync(spool, 'not a directory');
}

/** The rows a gateway wrote to its own log, neither the database nor the spool taking them. */
function notStoredRows(logLines: string[]): Array<Record<string, unknown>> {
  return logLines
    .filter((l) => l.includes('request-log row not stored: '))
    .map((l) => {
      const msg = (JSON.parse(l) as { msg: string }).msg;
      return JSON.parse(msg.slice(msg.indexOf('{'))) as Record<string, unknown>;
    });
}

describe('admin and generation lookups while PostgreSQL is unreachable', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let gw: TestGateway;

  beforeAll(async () => {
    db = await createTestDatabase();
    proxy = new TcpProxy(PG_ADMIN.host, PG_ADMIN.port);
    const port = await proxy.start();
    gw = await startGateway({
      models: MODELS,
      env: {
        ...ACCESS_ENV,
        DB_BACKEND: 'postgres',
        DATABASE_URL: `postgres://${PG_ADMIN.user}${PG_ADMIN.password ? `:${PG_ADMIN.password}` : ''}@127.0.0.1:${port}/${db.name}`,
        DB_CONNECT_TIMEOUT_MS: '1000',
        DB_QUERY_TIMEOUT_MS: '1000',
      },
    });
  });
  afterAll(async () => {
    await gw.close();
    await proxy.stop();
    await db.drop();
  });

  it('answers 503 database_unavailable, and answers again once the database is back', async () => {
    const admin = adminApi(gw);
    const key = await admin.createKey({ name: 'outage' });
    const answer = await chat(gw, key.key, { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
    expect(answer.status).toBe(200);
    const generation = `/v1/generation?id=${String(answer.body.id)}`;
    await gw.rows();
    const paths = ['/admin/stats', '/admin/requests', '/admin/api-keys', `/admin/api-keys/${key.id}`];
    for (const path of paths) expect((await admin.call('GET', path)).status).toBe(200);
    expect((await call(`${gw.url}${generation}`, 'GET', undefined, { authorization: `Bearer ${key.key}` })).status).toBe(200);

    await proxy.stop();
    for (const [method, path] of [...paths.map((p) => ['GET', p]), ['PATCH', `/admin/api-keys/${key.id}`]]) {
      const res = await admin.call(method, path, method === 'PATCH' ? { name: 'renamed' } : undefined);
      expect({ path, status: res.status, body: res.body }).toEqual({
        path,
        status: 503,
        body: { error: { message: expect.stringMatching(/database/i), type: 'server_error', param: null, code: 'database_unavailable' } },
      });
      // What failed and where (the database's address) is the operator's, in the log.
      expect(JSON.stringify(res.body)).not.toMatch(/ECONN|127\.0\.0\.1|timeout/i);
    }
    // The key is cached, so the caller is known; the lookup of its request is what fails.
    const lookup = await call(`${gw.url}${generation}`, 'GET', undefined, { authorization: `Bearer ${key.key}` });
    expect(lookup.status).toBe(503);

    await proxy.start();
    for (const path of paths) {
      let status = 0;
      for (let i = 0; i < 100 && status !== 200; i++) {
        status = (await admin.call('GET', path)).status;
        if (status !== 200) await new Promise((r) => setTimeout(r, 100));
      }
      expect({ path, status }).toEqual({ path, status: 200 });
    }
  });
});

describe('request logs while PostgreSQL is unreachable and the spool cannot be written either', () => {
  /** A gateway logging to PostgreSQL through a proxy that can be stopped, flushing every 100 ms; only shutdown or an explicit replay asks the database again. */
  async function behindProxy(logLines?: string[], env: Record<string, string> = {}) {
    const db = await createTestDatabase();
    const proxy = new TcpProxy(PG_ADMIN.host, PG_ADMIN.port);
    const port = await proxy.start();
    const spool = mkdtempSync(join(tmpdir(), 'hi-spool-'));
    const gw = await startGateway({
      models: MODELS,
      logLines,
      env: {
        DB_BACKEND: 'postgres',
        DATABASE_URL: `postgres://${PG_ADMIN.user}${PG_ADMIN.password ? `:${PG_ADMIN.password}` : ''}@127.0.0.1:${port}/${db.name}`,
        DB_CONNECT_TIMEOUT_MS: '1000',
        DB_QUERY_TIMEOUT_MS: '1000',
        REQUEST_LOG_SPOOL_DIR: spool,
        REQUEST_LOG_FLUSH_MS: '100',
        REQUEST_LOG_REPLAY_MS: '600000',
        ...env,
      },
    });
    return { db, proxy, spool, gw };
  }

  it('neither spins nor hangs: the rows wait in memory, and shutdown writes them once the database is back', async () => {
    const logLines: string[] = [];
    const { db, proxy, spool, gw } = await behindProxy(logLines);
    let closed = false;
    try {
      await proxy.stop();
      takeSpoolsPlace(spool);
      for (let i = 0; i < 20; i++)
        expect((await chat(gw, undefined, { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 2000));
      // It said so, about once a second: it did not retry the disk in a tight loop.
      const complaints = logLines.filter((l) => l.includes('cannot spool')).length;
      expect(complaints).toBeGreaterThan(0);
      expect(complaints).toBeLessThanOrEqual(5);

      // Back before shutdown: the rows still in memory go to the database, and shutdown ends.
      await proxy.start();
      const started = Date.now();
      await gw.close();
      closed = true;
      expect(Date.now() - started).toBeLessThan(15_000);
      const c = new Client({ connectionString: db.url });
      await c.connect();
      try {
        expect(Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM api_logs')).rows[0].n)).toBe(20);
      } finally {
        await c.end();
      }
    } finally {
      if (!closed) await gw.close();
      await proxy.stop();
      await db.drop();
      rmSync(spool, { force: true, recursive: true });
    }
  }, 60_000);

  it('with neither the database nor the spool at shutdown, writes each row to its own log, its bodies left out', async () => {
    const logLines: string[] = [];
    const { db, proxy, spool, gw } = await behindProxy(logLines, { DB_STORE_FULL_CONTENT: 'true' });
    let closed = false;
    try {
      await proxy.stop();
      takeSpoolsPlace(spool);
      for (let i = 0; i < 3; i++)
        expect((await chat(gw, undefined, { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] })).status).toBe(200);
      await gw.close();
      closed = true;
      const rows = notStoredRows(logLines);
      expect(rows).toHaveLength(3);
      expect(rows.map((r) => r.model)).toEqual(['demo/mock', 'demo/mock', 'demo/mock']);
      // The prompts and answers stay out of the process's log (read more widely than the spool).
      expect(rows.every((r) => r.request_content === null && r.response_content === null && r.content_left_out === true)).toBe(true);
      expect(JSON.stringify(rows)).not.toContain('"content":"x"');
      expect(rows.every((r) => r.status_code === 200)).toBe(true);
      expect(new Set(rows.map((r) => r.id)).size).toBe(3);
    } finally {
      if (!closed) await gw.close();
      await proxy.stop();
      await db.drop();
      rmSync(spool, { force: true, recursive: true });
    }
  }, 60_000);

  it('with neither the database nor the spool, holds at most twice REQUEST_LOG_MAX_QUEUE rows; the oldest go to its log', async () => {
    const logLines: string[] = [];
    const { db, proxy, spool, gw } = await behindProxy(logLines, { REQUEST_LOG_MAX_QUEUE: '100', REQUEST_LOG_BATCH_SIZE: '50' });
    let closed = false;
    try {
      await proxy.stop();
      takeSpoolsPlace(spool);
      const writer = gw.app.get(RequestLogWriter);
      for (let round = 0; round < 15; round++) {
        const answers = await Promise.all(
          Array.from({ length: 20 }, () => chat(gw, undefined, { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] })),
        );
        expect(answers.every((a) => a.status === 200)).toBe(true);
        await new Promise((r) => setTimeout(r, 20));
        expect(writer.pending).toBeLessThanOrEqual(200 + 20);
      }
      await gw.close();
      closed = true;
      // Every row is somewhere: in the log, whole, once.
      const ids = notStoredRows(logLines).map((r) => r.id);
      expect(new Set(ids).size).toBe(300);
      expect(logLines.some((l) => l.includes('(the queue is full)'))).toBe(true);
    } finally {
      if (!closed) await gw.close();
      await proxy.stop();
      await db.drop();
      rmSync(spool, { force: true, recursive: true });
    }
  }, 60_000);

  it('starts the rows after a failed spool write on a line of their own, so a fragment it left costs none of them', async () => {
    const { db, proxy, spool, gw } = await behindProxy();
    const ask = () => chat(gw, undefined, { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
    try {
      await proxy.stop();
      expect((await ask()).status).toBe(200);
      await new Promise((r) => setTimeout(r, 500)); // spooled
      // A full disk: the next write fails, having written part of its line (as a full disk may).
      const writer = gw.app.get(RequestLogWriter);
      const file = (writer as unknown as { spoolFile: string }).spoolFile;
      rmSync(spool, { recursive: true, force: true });
      writeFileSync(spool, 'full');
      expect((await ask()).status).toBe(200);
      await new Promise((r) => setTimeout(r, 500)); // the write failed; the row waits in memory
      rmSync(spool, { force: true });
      mkdirSync(spool);
      writeFileSync(file, '{"id":"torn-by-a-full-di');
      await new Promise((r) => setTimeout(r, 1000)); // the next flush spools the waiting row
      await proxy.start();
      await new Promise((r) => setTimeout(r, 1500)); // the pool reconnects
      await writer.replay();
      expect((await gw.rows()).length).toBe(1);
    } finally {
      await gw.close();
      await proxy.stop();
      await db.drop();
      rmSync(spool, { force: true, recursive: true });
    }
  }, 60_000);
});

describe('API keys while PostgreSQL is silent', () => {
  it('answers a key cached before at once, not after a timeout per request, and reads it again once the database answers', async () => {
    const db = await createTestDatabase();
    const proxy = new TcpProxy(PG_ADMIN.host, PG_ADMIN.port);
    const port = await proxy.start();
    const gw = await startGateway({
      models: MODELS,
      env: {
        ...ACCESS_ENV,
        USER_AUTH_ENABLED: 'true',
        API_KEY_CACHE_TTL_MS: '200',
        DB_BACKEND: 'postgres',
        DATABASE_URL: `postgres://${PG_ADMIN.user}${PG_ADMIN.password ? `:${PG_ADMIN.password}` : ''}@127.0.0.1:${port}/${db.name}`,
        DB_CONNECT_TIMEOUT_MS: '1500',
        DB_QUERY_TIMEOUT_MS: '1500',
      },
    });
    const ask = async () => {
      const started = Date.now();
      const res = await chat(gw, key.key, { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
      return { status: res.status, ms: Date.now() - started };
    };
    const key = await adminApi(gw).createKey({ name: 'silent' });
    const other = await adminApi(gw).createKey({ name: 'other' });
    const askOther = async () => (await chat(gw, other.key, { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] })).status;
    try {
      expect((await ask()).status).toBe(200); // cached
      expect(await askOther()).toBe(200); // cached too, and not used while the database is silent
      proxy.hold();
      await new Promise((r) => setTimeout(r, 300)); // past the cache's TTL
      // The first read waits for the database's timeout (and keeps the cached key); after it,
      // the key is answered at once while it is read again behind the requests.
      expect((await ask()).status).toBe(200);
      const times = [];
      for (let i = 0; i < 4; i++) {
        const r = await ask();
        expect(r.status).toBe(200);
        times.push(r.ms);
        await new Promise((res) => setTimeout(res, 250));
      }
      expect(Math.max(...times)).toBeLessThan(700);
      // Revoked while the database was silent to this gateway: seen once it answers again.
      const c = new Client({ ...PG_ADMIN, database: db.name });
      await c.connect();
      await c.query(`UPDATE api_keys SET status = 'revoked', revoked_at = now() WHERE id = ANY($1)`, [[key.id, other.id]]);
      await c.end();
      proxy.release();
      // A key whose own read never failed is read before it is answered, as ever.
      expect(await askOther()).toBe(401);
      await waitFor(async () => (await ask()).status === 401, 'the revocation read');
    } finally {
      await gw.close();
      await proxy.stop();
      await db.drop();
    }
  }, 60_000);
});

/**
 * SQLite waits for another connection's write lock on the event loop itself. The 5 s allowed at
 * start (for migrations) froze every request for 5 s at a time while another process (a worker,
 * an operator's sqlite3 session) held the lock: streams failed their first-token deadline.
 */
describe('request logs while another connection holds the SQLite write lock', () => {
  it('answers at once meanwhile, spools the rows, and writes them once the lock is let go', async () => {
    const gw = await startGateway({ models: MODELS, env: { ...ACCESS_ENV, REQUEST_LOG_FLUSH_MS: '50', REQUEST_LOG_REPLAY_MS: '200' } });
    const admin = adminApi(gw);
    const other = new Database(join(gw.dir, 'gateway.sqlite'));
    try {
      other.prepare('BEGIN IMMEDIATE').run();
      // The gateway runs in this process: time it blocks shows in the loop's own time.
      const started = performance.now();
      for (let i = 0; i < 6; i++) {
        const res = await chat(gw, undefined, { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
        expect(res.status).toBe(200);
        await new Promise((r) => setTimeout(r, 100)); // a flush comes round, and meets the lock
      }
      expect(performance.now() - started).toBeLessThan(3000);
      // An admin change meanwhile is a 503 to send again, not a 500.
      const busy = await admin.call<{ error: { code: string; message: string } }>('POST', '/admin/api-keys', { name: 'while-busy' });
      expect(busy.status).toBe(503);
      expect(busy.body.error).toMatchObject({ code: 'database_unavailable', message: expect.stringContaining('busy') });
      other.prepare('COMMIT').run();
    } finally {
      other.close();
    }
    await waitFor(async () => (await gw.rows()).length === 6, 'the rows are written');
    expect((await admin.call('POST', '/admin/api-keys', { name: 'after' })).status).toBe(201);
    await gw.close();
  });
});
