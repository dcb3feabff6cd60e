import { ACCESS_ENV, adminApi, call, chat } from '../helpers/access';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { createTestDatabase, PG_ADMIN, type TestDatabase } from '../helpers/postgres';
import { TcpProxy } from '../helpers/tcp-proxy';

/**
 * The admin API and /v1/generation while PostgreSQL is unreachable: a 503 that says the
 * database is, never a 500 that blames the gateway; and the same answers again once it is back.
 */
const MODELS = 'models:\n  - id: demo/mock\n    context_length: 4096\n    route: [{ kind: mock, tokens: 3 }]\n';

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
