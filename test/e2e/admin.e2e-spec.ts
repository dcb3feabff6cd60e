import { request } from 'undici';
import { startGateway, type TestGateway } from '../helpers/gateway';

const MODELS = `
models:
  - id: demo/split
    context_length: 4096
    router: fixed
    route:
      - { kind: vllm, id: gpu-a, base_url: "http://gpu-a.internal:8000/v1", api_keys: ["sk-secret-a", "sk-secret-b"], local: true, timeouts: { first_token_ms: 1234 } }
      - { kind: mock, id: fallback }
  - id: demo/url-key
    context_length: 4096
    route:
      - { kind: openai_compat, id: keyed-url, base_url: "https://ops:hunter2-pass@llm.example.com/v1?api-key=sk-in-url&region=eu&pwd=pwd-in-url" }
`;
const TOKEN = 'admin-token-0123456789abcdef';

describe('admin API', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ models: MODELS, env: { ADMIN_TOKEN: TOKEN } });
  });
  afterAll(() => gw.close());

  const get = (headers: Record<string, string> = {}) => fetch(`${gw.url}/admin/routing`, { headers });

  it('answers 401 without credentials and 403 with wrong ones, in the OpenAI error shape', async () => {
    const none = await get();
    expect(none.status).toBe(401);
    expect(await none.json()).toEqual({
      error: { message: expect.stringContaining('Bearer'), type: 'authentication_error', param: null, code: 'missing_admin_token' },
    });
    const wrong = await get({ authorization: 'Bearer not-the-token-at-all' });
    expect(wrong.status).toBe(403);
    expect(((await wrong.json()) as { error: { type: string } }).error.type).toBe('permission_error');
  });

  it('answers a GET with If-None-Match: * in full, not with an empty 304 (it sends no validator)', async () => {
    // Over undici's request: fetch answers such a request from no cache and may hide the 304.
    for (const path of ['/admin/routing', '/admin/stats', '/admin/requests']) {
      const res = await request(`${gw.url}${path}`, { headers: { authorization: `Bearer ${TOKEN}`, 'if-none-match': '*' } });
      const text = await res.body.text();
      expect([path, res.statusCode]).toEqual([path, 200]);
      expect(JSON.parse(text)).toEqual(expect.any(Object));
    }
  });

  it('shows routing with upstream URLs, timeouts and key counts, never the keys', async () => {
    for (const headers of [{ authorization: `Bearer ${TOKEN}` }, { 'x-admin-token': TOKEN }] as Array<Record<string, string>>) {
      const res = await get(headers);
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text).not.toContain('sk-secret');
      const body = JSON.parse(text) as { models: Array<{ id: string; strategy: string; routes: Array<Record<string, unknown>> }> };
      expect(body.models[0]).toMatchObject({ id: 'demo/split', strategy: 'fixed' });
      expect(body.models[0].routes[0]).toMatchObject({
        id: 'gpu-a',
        kind: 'vllm',
        base_url: 'http://gpu-a.internal:8000/v1',
        api_keys: 2,
        locality: 'local',
        share: 0.5,
        timeouts: expect.objectContaining({ first_token_ms: 1234 }),
      });
      // Credentials written into a URL are blanked out too; the rest of it stays readable.
      expect(text).not.toContain('hunter2');
      expect(text).not.toContain('sk-in-url');
      expect(text).not.toContain('pwd-in-url');
      expect(body.models[1].routes[0].base_url).toBe(
        'https://redacted:redacted@llm.example.com/v1?api-key=redacted&region=eu&pwd=redacted',
      );
    }
  });

  it("shows routing.yaml's settings in routing.yaml's spelling", async () => {
    const body = (await (await get({ authorization: `Bearer ${TOKEN}` })).json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      retry: { max_retries: expect.any(Number), backoff_ms: expect.any(Number), max_attempts: expect.any(Number) },
      circuit_breaker: {
        failure_threshold: expect.any(Number),
        cooldown_seconds: expect.any(Number),
        half_open_requests: expect.any(Number),
      },
      stats_window: { size: expect.any(Number), seconds: expect.any(Number) },
    });
    expect(JSON.stringify(body)).not.toMatch(/"[a-z]+[A-Z]\w*":/);
  });
});

describe('admin API without ADMIN_TOKEN', () => {
  it('is off (403), even with a token', async () => {
    const gw = await startGateway({ models: MODELS });
    try {
      const res = await fetch(`${gw.url}/admin/routing`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(res.status).toBe(403);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('admin_disabled');
    } finally {
      await gw.close();
    }
  });
});
