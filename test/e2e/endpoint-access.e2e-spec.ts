import { connect } from 'node:net';
import OpenAI, { APIError } from 'openai';
import { CompatProviderUpstream } from '../fixtures/compat-providers-upstream';
import { ACCESS_ENV, adminApi } from '../helpers/access';
import { ApiKeysService } from '../../src/storage/api-keys.service';
import { startGateway, type TestGateway } from '../helpers/gateway';

/**
 * Every upstream-calling endpoint sits behind the same frame: API keys, limits, one api_logs row
 * attributed to the key. Chat, embeddings and text completions alike.
 */
describe('keys and limits on every endpoint', () => {
  const vllm = new CompatProviderUpstream('vllm');
  let gw: TestGateway;

  beforeAll(async () => {
    const v = await vllm.start();
    gw = await startGateway({
      env: { ...ACCESS_ENV, USER_AUTH_ENABLED: 'true' },
      models: `
models:
  - id: emb/small
    type: embedding
    context_length: 8192
    pricing: { prompt: 2 }
    route: [{ kind: vllm, base_url: "${v}", provider_model_id: bge-small }]
  - id: base/llama
    context_length: 8192
    pricing: { prompt: 1, completion: 1 }
    route: [{ kind: vllm, base_url: "${v}", provider_model_id: llama-base }]
`,
    });
  });
  afterAll(async () => {
    await gw?.close();
    await vllm.stop();
  });

  it('closes the connection after a refused oversized body, whatever answers first (here the key check)', async () => {
    const { port } = new URL(gw.url);
    const socket = connect(Number(port), '127.0.0.1');
    let text = '';
    socket.on('data', (b: Buffer) => (text += b.toString()));
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.write(
      'POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500000000\r\n\r\n{"model": "base/llama", ',
    );
    // The client would go on sending for a long time, more than the gateway drains of a refused
    // body (64 MB); the server must not read on with the connection kept open once it has answered.
    await closed;
    expect(text).toMatch(/^HTTP\/1\.1 401 /);
    expect(text.toLowerCase()).toContain('connection: close');
  });

  /** Headers and the start of a body on a new connection; `more` sends the rest; what came back so far. */
  const partial = (headers: string, start: string) => {
    const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
    let text = '';
    socket.on('data', (b: Buffer) => (text += b.toString()));
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n${headers}\r\n${start}`);
    return { socket, closed, text: () => text };
  };
  const until = async (check: () => boolean, ms: number) => {
    for (const end = Date.now() + ms; !check() && Date.now() < end;) await new Promise((r) => setTimeout(r, 20));
    return check();
  };

  it('answers a caller the key check refuses before its body has come, and reads that body only to throw it away', async () => {
    // Without a key, and with one that is not ours: answered with the body still on its way (the
    // body is neither kept nor parsed), and the connection goes on serving once it is in.
    for (const auth of ['', 'authorization: Bearer sk-hi-notakey\r\n']) {
      const body = JSON.stringify({ model: 'base/llama', messages: [{ role: 'user', content: 'x'.repeat(100_000) }] });
      const c = partial(`${auth}content-length: ${body.length}\r\n`, body.slice(0, 1000));
      expect(await until(() => c.text().includes('\r\n\r\n'), 5000)).toBe(true);
      expect(c.text()).toMatch(/^HTTP\/1\.1 401 /);
      expect(c.text().toLowerCase()).not.toContain('connection: close');
      c.socket.write(body.slice(1000));
      const before = c.text().length;
      c.socket.write('GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
      await c.closed;
      expect(c.text().slice(before)).toMatch(/^HTTP\/1\.1 200 /);
    }
    // A client that asked for the connection to close is answered once its body is in: a close
    // with unread bytes would be a reset, and the client would see a broken pipe instead.
    const body = JSON.stringify({ model: 'base/llama', messages: [{ role: 'user', content: 'y'.repeat(10_000) }] });
    const c = partial(`connection: close\r\ncontent-length: ${body.length}\r\n`, body.slice(0, 1000));
    expect(await until(() => c.text() !== '', 500)).toBe(false);
    c.socket.write(body.slice(1000));
    await c.closed;
    expect(c.text()).toMatch(/^HTTP\/1\.1 401 /);
    // A key of ours is let through to have its body read as ever.
    const { key } = await adminApi(gw).createKey({ name: 'body-after-key' });
    const ok = await gw
      .client({ apiKey: key })
      .chat.completions.create({ model: 'base/llama', messages: [{ role: 'user', content: 'hi' }] });
    expect(ok.choices[0].message.role).toBe('assistant');
  });

  it('looks a key up once a request, though asked before the body and again by the guard', async () => {
    const { key } = await adminApi(gw).createKey({ name: 'looked-up-once' });
    const lookup = jest.spyOn(gw.app.get(ApiKeysService), 'lookup');
    try {
      await gw.client({ apiKey: key }).chat.completions.create({ model: 'base/llama', messages: [{ role: 'user', content: 'hi' }] });
      await gw
        .client({ apiKey: 'hyi-not-a-key' })
        .chat.completions.create({ model: 'base/llama', messages: [] })
        .catch(() => undefined);
      // Once each: a database that fails would otherwise be waited on twice.
      expect(lookup.mock.calls.map(([k]) => k)).toEqual([key, 'hyi-not-a-key']);
    } finally {
      lookup.mockRestore();
    }
  });

  it('logs a request whose client left, its whole body sent, while its key was looked up', async () => {
    const { key } = await adminApi(gw).createKey({ name: 'left-during-lookup' });
    const service = gw.app.get(ApiKeysService);
    const real = service.lookup.bind(service);
    const lookup = jest.spyOn(service, 'lookup').mockImplementation(async (k) => {
      await new Promise((r) => setTimeout(r, 400)); // a slow database
      return real(k);
    });
    const id = `left-${Date.now()}`;
    try {
      const body = JSON.stringify({ model: 'base/llama', messages: [{ role: 'user', content: 'hi' }] });
      const c = partial(`authorization: Bearer ${key}\r\nx-request-id: ${id}\r\ncontent-length: ${body.length}\r\n`, body);
      await new Promise((r) => setTimeout(r, 100));
      c.socket.destroy();
      await new Promise((r) => setTimeout(r, 700));
    } finally {
      lookup.mockRestore();
    }
    const row = (await gw.rows()).find((r) => (r.metadata as { client_request_id?: string } | null)?.client_request_id === id);
    expect(row?.status_code).toBe(499);
  });

  it('answers Expect: 100-continue with the refusal, not a 100, for a caller the key check refuses', async () => {
    const body = JSON.stringify({ model: 'base/llama', messages: [{ role: 'user', content: 'hi' }] });
    const refused = partial(`expect: 100-continue\r\ncontent-length: ${body.length}\r\n`, '');
    await refused.closed;
    expect(refused.text()).toMatch(/^HTTP\/1\.1 401 /);
    const { key } = await adminApi(gw).createKey({ name: 'continue' });
    const welcome = partial(
      `authorization: Bearer ${key}\r\nexpect: 100-continue\r\nconnection: close\r\ncontent-length: ${body.length}\r\n`,
      '',
    );
    expect(await until(() => welcome.text().startsWith('HTTP/1.1 100 Continue'), 3000)).toBe(true);
    welcome.socket.write(body);
    await welcome.closed;
    expect(welcome.text()).toMatch(/HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
  });

  it('serves many pipelined requests on one connection without piling a listener per request on it', async () => {
    // Node warns (MaxListenersExceededWarning, a line that is not JSON in the log) at the eleventh.
    const server = gw.app.getHttpServer();
    let most = 0;
    server.once('connection', (socket: import('node:net').Socket) => {
      let now = socket.listenerCount('close');
      socket.on('newListener', (event) => event === 'close' && (most = Math.max(most, ++now)));
      socket.on('removeListener', (event) => event === 'close' && now--);
    });
    const body = JSON.stringify({ model: 'base/llama', messages: [] });
    // A key to look up: each request waits for it, all of them read at once after.
    const auth = 'authorization: Bearer hyi-no-such-key\r\n';
    const one = `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n${auth}content-length: ${body.length}\r\n\r\n${body}`;
    const c = partial(`${auth}content-length: ${body.length}\r\n`, body + one.repeat(28));
    c.socket.write(`GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`);
    await c.closed;
    expect(c.text().match(/HTTP\/1\.1 401 /g)).toHaveLength(29);
    expect(most).toBeLessThan(10);
  });

  it('refuses embeddings and text completions without a key (401) when auth is on', async () => {
    const anonymous = gw.client({ apiKey: 'not-a-gateway-key' });
    const emb = await anonymous.embeddings.create({ model: 'emb/small', input: 'x' }).catch((e: unknown) => e);
    expect((emb as APIError).status).toBe(401);
    const txt = await anonymous.completions.create({ model: 'base/llama', prompt: 'x' }).catch((e: unknown) => e);
    expect((txt as APIError).status).toBe(401);
  });

  it("holds embeddings and text completions to the key's limits and logs them under it", async () => {
    const { id, key } = await adminApi(gw).createKey({ name: 'endpoints', rpm_limit: 2 });
    const client: OpenAI = gw.client({ apiKey: key });
    await client.embeddings.create({ model: 'emb/small', input: 'hello' });
    await client.completions.create({ model: 'base/llama', prompt: 'Once upon', max_tokens: 5 });
    const third = await client.embeddings.create({ model: 'emb/small', input: 'again' }).catch((e: unknown) => e);
    expect(third).toBeInstanceOf(OpenAI.RateLimitError);
    expect((third as APIError).code).toBe('rpm_limit_exceeded');
    const rows = (await gw.rows()).filter((r) => r.api_key_id === id);
    expect(rows.map((r) => [r.model, r.status_code]).sort()).toEqual([
      ['base/llama', 200],
      ['emb/small', 200],
      ['emb/small', 429],
    ]);
  });

  it('answers chat for an embedding model with a 400 naming the model', async () => {
    const { key } = await adminApi(gw).createKey({ name: 'chat-on-embedding' });
    const err = await gw
      .client({ apiKey: key })
      .chat.completions.create({ model: 'emb/small', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as APIError).message).toMatch(/embedding model; use \/v1\/embeddings/);
  });
});
