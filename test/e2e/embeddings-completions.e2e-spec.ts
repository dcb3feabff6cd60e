import OpenAI, { APIError } from 'openai';
import { CompatProviderUpstream } from '../fixtures/compat-providers-upstream';
import { rawPost, startGateway, type TestGateway } from '../helpers/gateway';

/**
 * POST /v1/embeddings and POST /v1/completions end to end with the official client: native
 * endpoints where the backend has them, chat for chat-only backends, failover, and api_logs.
 */
describe('embeddings and text completions', () => {
  const vllm = new CompatProviderUpstream('vllm');
  const sglang = new CompatProviderUpstream('sglang');
  const deepseek = new CompatProviderUpstream('deepseek');
  // A hosted OpenAI-compatible API that serves chat only: its /v1/completions is a 404.
  const chatOnly = new CompatProviderUpstream('kimi');
  let gw: TestGateway;
  let client: OpenAI;

  beforeAll(async () => {
    const [v, s, d, k] = [await vllm.start(), await sglang.start(), await deepseek.start(), await chatOnly.start()];
    const models = `
models:
  - id: emb/small
    type: embedding
    context_length: 8192
    pricing: { prompt: 2 }
    route:
      - { kind: vllm, id: gpu, base_url: "${v}", provider_model_id: bge-small }
  - id: emb/floats-only
    type: embedding
    context_length: 8192
    route:
      - { kind: sglang, base_url: "${s}", provider_model_id: gte }
  - id: emb/failover
    type: embedding
    context_length: 8192
    router: priority
    route:
      - { kind: vllm, id: broken, base_url: "${v}", provider_model_id: "error:503" }
      - { kind: sglang, id: spare, base_url: "${s}", provider_model_id: gte }
  - id: base/llama
    context_length: 8192
    pricing: { prompt: 1, completion: 1 }
    route:
      - { kind: vllm, id: gpu, base_url: "${v}", provider_model_id: llama-base }
  - id: base/chat-only-server
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${k}", api_key: k, provider_model_id: moonshot-v1 }
  - id: base/zero-output
    context_length: 8192
    pricing: { prompt: 1, completion: 1000 }
    route:
      - { kind: vllm, base_url: "${v}", provider_model_id: zero-output }
  - id: base/no-usage
    context_length: 8192
    pricing: { prompt: 1, completion: 1000 }
    route:
      - { kind: vllm, base_url: "${v}", provider_model_id: no-usage }
  - id: chat/deepseek
    context_length: 8192
    pricing: { prompt: 1, completion: 1 }
    route:
      - { kind: deepseek, base_url: "${d}", api_key: k, provider_model_id: deepseek-chat }
  - id: hybridinference/mock
    context_length: 8192
    route:
      - { kind: mock, tokens: 4 }
  - id: emb/reversed
    type: embedding
    context_length: 8192
    route:
      - { kind: vllm, base_url: "${v}", provider_model_id: reversed }
  - id: emb/unindexed
    type: embedding
    context_length: 8192
    route:
      - { kind: vllm, base_url: "${v}", provider_model_id: unindexed }
  - id: emb/all-fail
    type: embedding
    context_length: 8192
    route:
      - { kind: vllm, base_url: "${v}", provider_model_id: "error:503" }
  - id: base/many-chat-first
    context_length: 8192
    router: priority
    route:
${[1, 2, 3, 4, 5, 6].map((i) => `      - { kind: deepseek, id: chat-${i}, base_url: "${d}", api_key: k, provider_model_id: deepseek-chat }`).join('\n')}
      - { kind: vllm, id: native, base_url: "${v}", provider_model_id: llama-base }
  - id: base/native-down
    context_length: 8192
    router: priority
    route:
      - { kind: vllm, id: native-503, base_url: "${v}", provider_model_id: "error:503" }
      - { kind: deepseek, id: chat-only, base_url: "${d}", api_key: k, provider_model_id: deepseek-chat }
  - id: base/chat-first
    context_length: 8192
    router: priority
    route:
      - { kind: deepseek, id: chat-only, base_url: "${d}", api_key: k, provider_model_id: deepseek-chat }
      - { kind: vllm, id: native, base_url: "${v}", provider_model_id: llama-base }
`;
    gw = await startGateway({ models });
    client = gw.client();
  });

  afterAll(async () => {
    await gw?.close();
    await Promise.all([vllm.stop(), sglang.stop(), deepseek.stop(), chatOnly.stop()]);
  });

  beforeEach(() => [vllm, sglang, deepseek, chatOnly].forEach((u) => u.reset()));

  describe('/v1/embeddings', () => {
    it('puts the items in input order, each with its index, and names the model that made them', async () => {
      for (const model of ['emb/reversed', 'emb/unindexed']) {
        const res = await client.embeddings.create({ model, input: ['a', 'bbb', 'cc'], encoding_format: 'float' });
        expect(res.data.map((d) => [d.index, d.embedding[0]])).toEqual([
          [0, 1 / 8],
          [1, 3 / 8],
          [2, 2 / 8],
        ]);
      }
      // Served by the client's fallback model: its vectors, under its name.
      const res = await rawPost(`${gw.url}/v1/embeddings`, { model: 'emb/all-fail', models: ['emb/small'], input: 'x' });
      expect(res.status).toBe(200);
      expect(JSON.parse(res.text).model).toBe('emb/small');
    });

    it('answers the SDK (which asks for base64 by default) with the right vectors, and logs usage', async () => {
      const res = await client.embeddings.create({ model: 'emb/small', input: ['hello world', 'abc'] });
      expect(res.object).toBe('list');
      expect(res.model).toBe('emb/small');
      expect(res.data.map((d) => d.index)).toEqual([0, 1]);
      expect(Array.from(res.data[0].embedding)).toEqual([11 / 8, 12 / 8, 13 / 8, 14 / 8]);
      expect(Array.from(res.data[1].embedding)).toEqual([3 / 8, 4 / 8, 5 / 8, 6 / 8]);
      // With the gateway's charge, as OpenRouter's usage.cost (3 tokens at $2 per million).
      expect(res.usage).toEqual({ prompt_tokens: 3, total_tokens: 3, cost: 0.000006 });
      expect(vllm.requests[0]).toMatchObject({
        path: '/v1/embeddings',
        body: { model: 'bge-small', input: ['hello world', 'abc'], encoding_format: 'base64' },
      });
      const row = (await gw.rows()).find((r) => r.model === 'emb/small')!;
      expect(row).toMatchObject({
        provider: 'vllm',
        endpoint: 'gpu',
        status_code: 200,
        stream: false,
        prompt_tokens: 3,
        completion_tokens: 0,
        usage_estimated: false,
      });
      expect(Number(row.cost_usd)).toBeCloseTo(0.000006, 12);
    });

    it('answers `stream: true` with one JSON body, recorded as no stream and not sent upstream', async () => {
      const res = await rawPost(`${gw.url}/v1/embeddings`, { model: 'emb/small', input: 'abcd', stream: true, stream_options: {} });
      expect(res.status).toBe(200);
      expect(JSON.parse(res.text).data).toHaveLength(1);
      expect(vllm.requests[0].body).not.toHaveProperty('stream');
      expect(vllm.requests[0].body).not.toHaveProperty('stream_options');
      const row = await gw.rowFor((JSON.parse(res.text) as { id: string }).id);
      expect(row.stream).toBe(false);
      const bad = await rawPost(`${gw.url}/v1/embeddings`, { model: 'emb/small', input: 'abcd', stream: 'yes' });
      expect(bad.status).toBe(400);
      expect(JSON.parse(bad.text).error.param).toBe('stream');
    });

    it("checks OpenRouter's options for type, as chat does", async () => {
      const cases: Array<[string, Record<string, unknown>, string]> = [
        ['/v1/embeddings', { transforms: 'middle-out' }, 'transforms'],
        ['/v1/embeddings', { route: 5 }, 'route'],
        ['/v1/embeddings', { session_id: 5 }, 'session_id'],
        ['/v1/completions', { transforms: [1] }, 'transforms'],
        ['/v1/completions', { session_id: 'x'.repeat(129) }, 'session_id'],
        ['/v1/completions', { plugins: 'x' }, 'plugins'],
        ['/v1/completions', { usage: { include: 'yes' } }, 'usage.include'],
        ['/v1/completions', { debug: 7 }, 'debug'],
      ];
      for (const [path, extra, param] of cases) {
        const body =
          path === '/v1/embeddings' ? { model: 'emb/small', input: 'a', ...extra } : { model: 'base/llama', prompt: 'a', ...extra };
        const res = await rawPost(`${gw.url}${path}`, body);
        expect({ path, param, status: res.status, error: (JSON.parse(res.text) as { error: { param: string } }).error.param }).toEqual({
          path,
          param,
          status: 400,
          error: param,
        });
      }
      expect(vllm.requests).toHaveLength(0);
    });

    it('gives floats when asked, and passes dimensions on', async () => {
      const res = await client.embeddings.create({ model: 'emb/small', input: 'abcd', encoding_format: 'float', dimensions: 2 });
      expect(res.data[0].embedding).toEqual([0.5, 5 / 8]);
      expect(vllm.requests[0].body).toMatchObject({ dimensions: 2, encoding_format: 'float' });
    });

    it('encodes base64 itself when the server ignores encoding_format', async () => {
      const res = await client.embeddings.create({ model: 'emb/floats-only', input: 'abcd' });
      expect(Array.from(res.data[0].embedding)).toEqual([0.5, 5 / 8, 6 / 8, 7 / 8]);
      const raw = await rawPost(`${gw.url}/v1/embeddings`, { model: 'emb/floats-only', input: 'abcd', encoding_format: 'base64' });
      const b64 = (JSON.parse(raw.text) as { data: Array<{ embedding: string }> }).data[0].embedding;
      const bytes = Buffer.from(b64, 'base64');
      expect(Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4))).toEqual([0.5, 5 / 8, 6 / 8, 7 / 8]);
    });

    it('fails over to the next route like chat does', async () => {
      const res = await client.embeddings.create({ model: 'emb/failover', input: 'x' });
      expect(res.data).toHaveLength(1);
      const row = (await gw.rows()).find((r) => r.model === 'emb/failover')!;
      expect(row.endpoint).toBe('spare');
      const attempts = (row.metadata as { attempts: Array<{ route: string; outcome: string }> }).attempts.map(
        (a) => `${a.route}:${a.outcome}`,
      );
      // The broken route may be retried before the next one takes over (routing's retry policy).
      expect(attempts[0]).toBe('broken:error');
      expect(attempts.at(-1)).toBe('spare:ok');
      expect(new Set(attempts.slice(0, -1))).toEqual(new Set(['broken:error']));
    });

    it.each([
      [{ model: 'base/llama', input: 'x' }, 400, 'is a chat model'],
      [{ model: 'nope', input: 'x' }, 404, 'does not exist'],
      [{ model: 'emb/small', input: '' }, 400, '"input" must not be empty'],
      [{ model: 'emb/small' }, 400, '"input" is required'],
    ])('refuses %j with %d', async (body, status, message) => {
      const res = await rawPost(`${gw.url}/v1/embeddings`, body);
      expect(res.status).toBe(status);
      expect(JSON.parse(res.text).error.message).toContain(message);
    });
  });

  describe('/v1/completions', () => {
    it('estimates the output a usage left uncounted from what was generated, an echo taken off, and none for a scoring call', async () => {
      const prompt = 'A prompt echoed back, not output';
      const ask = { model: 'base/zero-output', prompt, max_tokens: 3 };
      const plain = await client.completions.create(ask);
      expect(plain.usage!.completion_tokens).toBeGreaterThan(0);
      const echoed = await client.completions.create({ ...ask, echo: true });
      expect(echoed.usage).toEqual(plain.usage);
      // lm-eval's scoring: the prompt echoed with its logprobs, nothing generated, nothing billed as output.
      const scored = await client.completions.create({ ...ask, echo: true, max_tokens: 0, logprobs: 1 });
      expect(scored.choices[0].text).toBe(prompt);
      expect(scored.usage!.completion_tokens).toBe(0);
    });

    it('shows an embeddings request in /v1/generation as OpenRouter does, api_type "embeddings"', async () => {
      const emb = await rawPost(`${gw.url}/v1/embeddings`, { model: 'emb/small', input: 'x' });
      const cmp = await rawPost(`${gw.url}/v1/completions`, { model: 'base/llama', prompt: 'x', max_tokens: 2 });
      const types: unknown[] = [];
      for (const id of [emb.headers.get('x-request-id'), cmp.headers.get('x-request-id')]) {
        const res = await fetch(`${gw.url}/v1/generation?id=${id}`);
        types.push(((await res.json()) as { data: { api_type: unknown } }).data.api_type);
      }
      expect(types).toEqual(['embeddings', 'completions']);
    });

    it("estimates an answer without usage from what was generated: an echo's prompt is not billed as output", async () => {
      const prompt = 'Once upon a time there was a long prompt, repeated back by echo, that is not output at all';
      const ask = { model: 'base/no-usage', prompt, max_tokens: 3 };
      const plain = await client.completions.create(ask);
      const echoed = await client.completions.create({ ...ask, echo: true });
      expect(echoed.choices[0].text).toBe(prompt + plain.choices[0].text);
      expect(plain.usage!.completion_tokens).toBeGreaterThan(0);
      expect(echoed.usage).toEqual(plain.usage);
      const streamed = await client.completions.create({ ...ask, echo: true, stream: true, stream_options: { include_usage: true } });
      let text = '';
      let usage: OpenAI.CompletionUsage | undefined;
      let id = '';
      for await (const c of streamed) {
        text += c.choices[0]?.text ?? '';
        usage = c.usage ?? usage;
        id = c.id;
      }
      expect(text).toBe(echoed.choices[0].text);
      expect(usage?.completion_tokens).toBe(plain.usage!.completion_tokens);
      const rows = await gw.rows();
      for (const r of [echoed.id, id].map((g) => rows.find((x) => `gen-${x.id}` === g)!))
        expect(r).toMatchObject({ completion_tokens: plain.usage!.completion_tokens, usage_estimated: true });
    });

    it('uses the native endpoint of a backend that has one, echo and logprobs included', async () => {
      const res = await client.completions.create({ model: 'base/llama', prompt: 'The story', max_tokens: 3, echo: true, logprobs: 1 });
      expect(res.object).toBe('text_completion');
      expect(res.model).toBe('base/llama');
      expect(res.id).toMatch(/^gen-/);
      expect(res.choices[0]).toMatchObject({ index: 0, text: 'The story and so ', finish_reason: 'length' });
      expect(res.choices[0].logprobs?.tokens).toEqual([' ', 'and ', 'so ']);
      expect(res.usage).toMatchObject({ prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 });
      expect(vllm.requests[0]).toMatchObject({
        path: '/v1/completions',
        body: { model: 'llama-base', prompt: 'The story', echo: true, logprobs: 1, max_tokens: 3 },
      });
      expect(vllm.requests[0].body).not.toHaveProperty('stream_options');
      const row = (await gw.rows()).find((r) => `gen-${r.id}` === res.id)!;
      expect(row).toMatchObject({
        provider: 'vllm',
        prompt_tokens: 2,
        completion_tokens: 3,
        finish_reason: 'length',
        usage_estimated: false,
      });
      expect((res.usage as unknown as { cost: number }).cost).toBe(Number(row.cost_usd));
    });

    it('streams a native completion with usage at the end', async () => {
      const stream = await client.completions.create({
        model: 'base/llama',
        prompt: [1, 2, 3],
        max_tokens: 4,
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks: OpenAI.Completions.Completion[] = [];
      for await (const c of stream) chunks.push(c);
      expect(chunks.every((c) => c.object === 'text_completion' && c.model === 'base/llama')).toBe(true);
      // Every chunk says who served, as chat chunks do.
      expect(chunks.every((c) => (c as unknown as { route?: string }).route === 'gpu')).toBe(true);
      expect(chunks.map((c) => c.choices[0]?.text ?? '').join('')).toBe(' and so it ');
      expect(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason).toBe('length');
      expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { completion_tokens: 4 } });
      expect(vllm.requests[0].body).toMatchObject({ prompt: [1, 2, 3], stream: true, stream_options: { include_usage: true } });
      const row = (await gw.rows()).find((r) => `gen-${r.id}` === chunks[0].id)!;
      expect(row).toMatchObject({ stream: true, completion_tokens: 4, usage_estimated: false });
      expect((chunks.at(-1)!.usage as unknown as { cost: number }).cost).toBe(Number(row.cost_usd));
      expect(row.ttft_ms).not.toBeNull();
    });

    it('answers through chat on a chat-only backend, streamed and not', async () => {
      const res = await client.completions.create({ model: 'chat/deepseek', prompt: 'Say hi', max_tokens: 20 });
      expect(res.object).toBe('text_completion');
      expect(res.choices[0]).toMatchObject({ text: 'echo: Say hi', finish_reason: 'stop' });
      expect(deepseek.requests[0]).toMatchObject({
        path: '/chat/completions',
        body: { messages: [{ role: 'user', content: 'Say hi' }], max_tokens: 20 },
      });
      const stream = await client.completions.create({ model: 'chat/deepseek', prompt: 'Say hi', stream: true });
      let text = '';
      for await (const c of stream) text += c.choices[0]?.text ?? '';
      expect(text).toBe('echo: Say hi');
    });

    it('answers through chat on the built-in mock', async () => {
      const res = await client.completions.create({ model: 'hybridinference/mock', prompt: 'x' });
      expect(res.choices[0].text).toBe('Hello from the HybridInference');
    });

    it('refuses what a chat-only backend cannot answer, naming the parameter', async () => {
      const err = await client.completions.create({ model: 'chat/deepseek', prompt: ['a', 'b'] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(APIError);
      expect(err).toMatchObject({ status: 400, param: 'prompt' });
      expect(deepseek.requests).toHaveLength(0);
      const echo = await client.completions.create({ model: 'chat/deepseek', prompt: 'a', echo: true }).catch((e: unknown) => e);
      expect(echo).toMatchObject({ status: 400, param: 'echo' });
    });

    it('refuses, naming the parameter, what a server without /completions cannot be asked as chat either', async () => {
      // Asked natively first (the kind may have the endpoint): a 404, then chat, where it fits.
      const ok = await client.completions.create({ model: 'base/chat-only-server', prompt: 'Say hi' });
      expect(ok.choices[0].text).toBe('echo: Say hi');
      expect(chatOnly.requests.map((r) => r.path)).toEqual(['/v1/completions', '/v1/chat/completions']);
      for (const [extra, param, streams] of [
        [{ echo: true }, 'echo', [false, true]],
        [{ prompt: [1, 2] }, 'prompt', [false, true]],
        [{ best_of: 3 }, 'best_of', [false]], // streamed, the validator refuses it anywhere
      ] as const)
        for (const stream of streams) {
          const res = await rawPost(`${gw.url}/v1/completions`, { model: 'base/chat-only-server', prompt: 'x', stream, ...extra });
          expect([res.status, JSON.parse(res.text).error]).toEqual([
            400,
            expect.objectContaining({ param, code: 'unsupported_parameter' }),
          ]);
        }
    });

    it("tries the model's next route when the first cannot express the request, and refuses only when none can", async () => {
      const res = await client.completions.create({ model: 'base/chat-first', prompt: ['a', 'b'], max_tokens: 3 });
      expect(res.choices).toHaveLength(2);
      expect(deepseek.requests).toHaveLength(0);
      expect(vllm.requests).toHaveLength(1);
      const row = (await gw.rows()).find((r) => r.id === res.id.replace(/^gen-/, '').replace(/^cmpl-/, ''));
      expect((row?.metadata as { attempts: Array<{ route: string; status?: number }> } | undefined)?.attempts).toEqual([
        expect.objectContaining({ route: 'chat-only', outcome: 'skipped', error: expect.stringContaining('prompt') }),
        expect.objectContaining({ route: 'native', outcome: 'ok' }),
      ]);
    });

    it("spends none of the request's attempts (max_attempts, 6) on routes that refused it without a call", async () => {
      const res = await client.completions.create({ model: 'base/many-chat-first', prompt: ['a', 'b'], max_tokens: 3 });
      expect(res.choices).toHaveLength(2);
      expect(vllm.requests).toHaveLength(1);
      // Nothing counted against the routes that could not take it.
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      expect(metrics).not.toMatch(/hybridinference_upstream_attempts_total\{[^}]*route="chat-1"[^}]*outcome="error"/);
    });

    it('says the model is unavailable for now, not that the request is wrong, when the route that can take it is out', async () => {
      const ask = () => rawPost(`${gw.url}/v1/completions`, { model: 'base/native-down', prompt: ['a', 'b'], max_tokens: 3 });
      // Three calls a request (two retries) open the native route's circuit after two requests.
      expect((await ask()).status).toBe(502);
      expect((await ask()).status).toBe(502);
      const res = await ask();
      expect(res.status).toBe(503);
      expect(JSON.parse(res.text).error).toMatchObject({ code: 'no_available_route', message: expect.stringContaining('native-503') });
      expect(res.headers.get('retry-after')).toBeTruthy();
    });

    it('refuses an embedding model', async () => {
      const res = await rawPost(`${gw.url}/v1/completions`, { model: 'emb/small', prompt: 'x' });
      expect(res.status).toBe(400);
      expect(JSON.parse(res.text).error.message).toContain('embedding model');
    });
  });
});

describe('embedding models in the config', () => {
  it('refuse to start when a route of an embedding model cannot embed', async () => {
    const models = `
models:
  - id: emb/wrong
    type: embedding
    context_length: 8192
    route:
      - { kind: deepseek, base_url: "http://127.0.0.1:9/v1", provider_model_id: x }
`;
    await expect(startGateway({ models })).rejects.toThrow(/emb\/wrong.*cannot compute embeddings/);
  });
});
