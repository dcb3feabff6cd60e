import { connect } from 'node:net';
import OpenAI, { APIError } from 'openai';
import { CompatProviderUpstream } from '../fixtures/compat-providers-upstream';
import { ACCESS_ENV, adminApi } from '../helpers/access';
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
