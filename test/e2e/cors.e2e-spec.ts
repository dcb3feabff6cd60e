import { request } from 'undici';
import { startGateway, type TestGateway } from '../helpers/gateway';

const MODELS = 'models:\n  - id: demo/mock\n    context_length: 4096\n    route: [{ kind: mock, tokens: 3 }]\n';
const APP = 'https://app.example.com';
const CHAT = { model: 'demo/mock', messages: [{ role: 'user', content: 'hi' }] };

function preflight(url: string, origin: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, {
    method: 'OPTIONS',
    headers: {
      origin,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization,content-type',
      ...headers,
    },
  });
}

/** A POST as a page would send it; `host` as its browser names the server (fetch sends the URL's). */
async function post(url: string, body: unknown, origin?: string, host?: string): Promise<Response> {
  const headers = { 'content-type': 'application/json', authorization: 'Bearer sk-page', ...(origin ? { origin } : {}) };
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  if (host === undefined) return fetch(url, { method: 'POST', headers, body: text });
  const res = await request(url, { method: 'POST', headers: { ...headers, host }, body: text });
  const answer = await res.body.text();
  return new Response(answer, { status: res.statusCode, headers: res.headers as Record<string, string> });
}

/** The wire side of CORS; test/e2e/browser.e2e-spec.ts checks that a real browser accepts it. */
describe('CORS', () => {
  describe('with CORS_ORIGINS listing origins', () => {
    let gw: TestGateway;
    beforeAll(async () => {
      gw = await startGateway({ models: MODELS, env: { CORS_ORIGINS: `${APP}, HTTP://localhost:3000` } });
    });
    afterAll(() => gw.close());

    it('answers an allowed origin’s preflight with 204 and what the browser asked for', async () => {
      for (const path of ['/v1/chat/completions', '/anthropic/v1/messages', '/v1/models']) {
        const res = await preflight(`${gw.url}${path}`, APP, { 'access-control-request-private-network': 'true' });
        expect(res.status).toBe(204);
        expect(res.headers.get('access-control-allow-origin')).toBe(APP);
        expect(res.headers.get('access-control-allow-methods')).toContain('POST');
        expect(res.headers.get('access-control-allow-headers')).toBe('authorization,content-type');
        expect(res.headers.get('access-control-allow-private-network')).toBe('true');
        expect(res.headers.get('access-control-allow-credentials')).toBeNull();
        expect(Number(res.headers.get('access-control-max-age'))).toBeGreaterThan(0);
        expect(res.headers.get('vary')).toMatch(/origin/i);
        expect(await res.text()).toBe('');
      }
      // Origins compare without regard to case, as the list was written.
      const res = await preflight(`${gw.url}/v1/chat/completions`, 'http://localhost:3000');
      expect(res.status).toBe(204);
      expect(res.headers.get('access-control-allow-origin')).toBe('http://localhost:3000');
    });

    it('refuses another origin’s preflight with 403 in the surface’s error shape', async () => {
      const res = await preflight(`${gw.url}/v1/chat/completions`, 'https://evil.example');
      expect(res.status).toBe(403);
      expect(res.headers.get('access-control-allow-origin')).toBeNull();
      expect(res.headers.get('x-request-id')).toBeTruthy();
      expect(await res.json()).toEqual({
        error: expect.objectContaining({
          type: 'permission_error',
          code: 'origin_not_allowed',
          message: expect.stringContaining('https://evil.example'),
        }),
      });
      const anth = await preflight(`${gw.url}/anthropic/v1/messages`, 'https://evil.example');
      expect(anth.status).toBe(403);
      expect(await anth.json()).toMatchObject({
        type: 'error',
        error: { type: 'permission_error' },
        request_id: anth.headers.get('request-id'),
      });
      // Not the same origin: another port, another scheme.
      for (const other of ['https://app.example.com:8443', 'http://app.example.com'])
        expect((await preflight(`${gw.url}/v1/models`, other)).status).toBe(403);
    });

    it('lets the page read answers, errors and streams, with the request id exposed', async () => {
      const ok = await post(`${gw.url}/v1/chat/completions`, CHAT, APP);
      expect(ok.status).toBe(200);
      expect(ok.headers.get('access-control-allow-origin')).toBe(APP);
      expect(ok.headers.get('access-control-expose-headers')).toContain('x-request-id');
      await ok.json();

      const bad = await post(`${gw.url}/v1/chat/completions`, '{"model":', APP);
      expect(bad.status).toBe(400);
      expect(bad.headers.get('access-control-allow-origin')).toBe(APP);
      await bad.text();

      const stream = await post(`${gw.url}/v1/chat/completions`, { ...CHAT, stream: true }, APP);
      expect(stream.headers.get('content-type')).toContain('text/event-stream');
      expect(stream.headers.get('access-control-allow-origin')).toBe(APP);
      expect(await stream.text()).toContain('data: [DONE]');
    });

    it('refuses a request that costs something from an origin not listed, even one a browser sends without asking', async () => {
      const before = (await gw.rows()).length;
      // A "simple" request: text/plain needs no preflight, so the browser just sends it.
      const simple = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain', origin: 'https://evil.example' },
        body: JSON.stringify(CHAT),
      });
      expect(simple.status).toBe(403);
      expect(simple.headers.get('access-control-allow-origin')).toBeNull();
      expect(await simple.json()).toMatchObject({ error: { code: 'origin_not_allowed' } });
      expect((await gw.rows()).length).toBe(before);
      // Reading is harmless, and the answer is not the page's to read.
      const models = await fetch(`${gw.url}/v1/models`, { headers: { origin: 'https://evil.example' } });
      expect(models.status).toBe(200);
      expect(models.headers.get('access-control-allow-origin')).toBeNull();
      await models.text();
      // No Origin (curl, a server-side client): served, and a cache is told the answer depends on it.
      const none = await post(`${gw.url}/v1/chat/completions`, CHAT);
      expect(none.status).toBe(200);
      expect(none.headers.get('access-control-allow-origin')).toBeNull();
      expect(none.headers.get('vary')).toMatch(/origin/i);
      await none.json();
    });

    it('leaves an OPTIONS that is no preflight to the routes, and writes no api_logs row for preflights', async () => {
      const before = (await gw.rows()).length;
      const res = await fetch(`${gw.url}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin: APP } });
      // The routes take POST only there: 405, with Allow.
      expect([res.status, res.headers.get('allow')]).toEqual([405, 'POST']);
      await res.text();
      await preflight(`${gw.url}/v1/chat/completions`, APP);
      await preflight(`${gw.url}/v1/chat/completions`, 'https://evil.example');
      expect((await gw.rows()).length).toBe(before);
    });

    it('does not echo a malformed Access-Control-Request-Headers', async () => {
      const res = await preflight(`${gw.url}/v1/chat/completions`, APP, { 'access-control-request-headers': 'content-type, x y' });
      expect(res.status).toBe(204);
      expect(res.headers.get('access-control-allow-headers')).toBeNull();
    });
  });

  it('with CORS_ORIGINS=* grants every origin, without Vary', async () => {
    const gw = await startGateway({ models: MODELS, env: { CORS_ORIGINS: '*' } });
    try {
      const pre = await preflight(`${gw.url}/v1/chat/completions`, 'https://anywhere.example');
      expect(pre.status).toBe(204);
      expect(pre.headers.get('access-control-allow-origin')).toBe('*');
      expect(pre.headers.get('vary')).toBeNull();
      const res = await post(`${gw.url}/v1/chat/completions`, CHAT, 'https://anywhere.example');
      expect(res.headers.get('access-control-allow-origin')).toBe('*');
      await res.json();
      // Reaching a private network is granted to origins listed by name only.
      const pna = await preflight(`${gw.url}/v1/chat/completions`, 'https://anywhere.example', {
        'access-control-request-private-network': 'true',
      });
      expect(pna.status).toBe(204);
      expect(pna.headers.get('access-control-allow-private-network')).toBeNull();
    } finally {
      await gw.close();
    }
  });

  it('is off by default: no CORS headers, no preflight answered, and no page may make it spend', async () => {
    const gw = await startGateway({ models: MODELS });
    try {
      const pre = await preflight(`${gw.url}/v1/chat/completions`, APP);
      // Left to the routes, which take POST only there: a refusal, as a browser reads any non-2xx.
      expect(pre.status).toBe(405);
      expect(pre.headers.get('access-control-allow-origin')).toBeNull();
      await pre.text();
      const res = await post(`${gw.url}/v1/chat/completions`, CHAT, APP);
      expect(res.status).toBe(403);
      expect(res.headers.get('access-control-allow-origin')).toBeNull();
      await res.json();
      // The gateway's own origin (a page served behind the same host) and no origin at all are served.
      const port = new URL(gw.url).port;
      for (const origin of [gw.url, `http://localhost:${port}`, undefined]) {
        const host = origin ? new URL(origin).host : undefined;
        const ok = await post(`${gw.url}/v1/chat/completions`, CHAT, origin, host);
        expect([origin, ok.status]).toEqual([origin, 200]);
        await ok.json();
      }
      // DNS rebinding: a page whose name now points at the gateway is "same origin" with the Host
      // its browser sends; under a name, the gateway's own origin is only what CORS_ORIGINS lists.
      const rebound = await post(`${gw.url}/v1/chat/completions`, CHAT, `http://evil.example:${port}`, `evil.example:${port}`);
      expect(rebound.status).toBe(403);
      await rebound.json();
    } finally {
      await gw.close();
    }
  });

  it('refuses at start a CORS_ORIGINS entry that is no origin', async () => {
    for (const value of ['https://app.example.com/', 'app.example.com', '*, https://app.example.com', 'https://a.example/path'])
      await expect(startGateway({ models: MODELS, env: { CORS_ORIGINS: value } })).rejects.toThrow(/CORS_ORIGINS/);
  });
});
