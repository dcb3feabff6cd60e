import { ACCESS_ENV, adminApi, call, chat } from '../helpers/access';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres';

/**
 * /v1/generation behind a load balancer: the replica (or worker) asked is often not the one that
 * served the request, and that one writes its rows every REQUEST_LOG_FLUSH_MS.
 */
const MODELS =
  'models:\n  - id: demo/mock\n    context_length: 4096\n    pricing: { prompt: 1, completion: 1 }\n    route: [{ kind: mock, tokens: 3 }]\n';

describe('generation lookups across replicas', () => {
  let db: TestDatabase;
  let a: TestGateway;
  let b: TestGateway;

  beforeAll(async () => {
    db = await createTestDatabase();
    const env = { ...db.env, ...ACCESS_ENV, REQUEST_LOG_FLUSH_MS: '700' };
    a = await startGateway({ models: MODELS, env });
    b = await startGateway({ models: MODELS, env });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await db?.drop();
  });

  it('finds a request another replica served and has not written yet, and refuses other ids at once', async () => {
    const { key } = await adminApi(a).createKey({ name: 'replicas' });
    const answer = await chat(a, key, { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
    expect(answer.status).toBe(200);
    // Asked at once of the other replica, before the serving one flushed its rows.
    const res = await call<{ data: { id: string } }>(`${b.url}/v1/generation?id=${String(answer.body.id)}`, 'GET', undefined, {
      authorization: `Bearer ${key}`,
    });
    expect(res.status).toBe(200);
    expect(res.body.data.id).toBe(answer.body.id);
    // An id no request of ours could have had (not a request id, or from long ago) is a 404 without waiting.
    for (const id of ['gen-nothing-like-ours', 'gen-00000001-0000-7000-8000-000000000000']) {
      const started = Date.now();
      expect((await call(`${b.url}/v1/generation?id=${id}`, 'GET', undefined, { authorization: `Bearer ${key}` })).status).toBe(404);
      expect(Date.now() - started).toBeLessThan(700);
    }
  });
});
