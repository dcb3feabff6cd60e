import OpenAI, { APIError } from 'openai';
import { startGateway, type TestGateway } from '../../helpers/gateway';
import { fromOllamaChat, ollamaLineToChunks, toOllamaChat } from './ollama-chat.mapper';
import { OllamaChatModule } from './ollama-chat.module';
import { OllamaUpstream } from './ollama-upstream';

/** The worked example of docs/adding-a-provider.md: its mapper, and the module in a real gateway. */
describe('ollama_chat (docs/adding-a-provider.md)', () => {
  describe('mapper', () => {
    it('puts sampling under options and max_tokens as num_predict', () => {
      const body = toOllamaChat(
        {
          model: 'pub',
          messages: [
            { role: 'developer', content: 'be brief' },
            { role: 'user', content: 'hi' },
          ],
          max_tokens: 5,
          temperature: 0.1,
          stop: 'END',
        },
        'llama3',
        true,
        '5m',
      );
      expect(body).toEqual({
        model: 'llama3',
        stream: true,
        keep_alive: '5m',
        messages: [
          { role: 'system', content: 'be brief' },
          { role: 'user', content: 'hi' },
        ],
        options: { num_predict: 5, temperature: 0.1, stop: ['END'] },
      });
    });

    it('maps the answer and the final stream line with usage', () => {
      const line = {
        model: 'llama3',
        created_at: '2025-01-01T00:00:00Z',
        message: { role: 'assistant', content: 'hi' },
        done: true,
        done_reason: 'length',
        prompt_eval_count: 3,
        eval_count: 1,
      };
      expect(fromOllamaChat(line, 'x').choices[0]).toMatchObject({ message: { content: 'hi' }, finish_reason: 'length' });
      const chunks = ollamaLineToChunks(line, 'x', false);
      expect(chunks.map((c) => c.choices[0]?.delta)).toEqual([{ content: 'hi' }, {}, undefined]);
      expect(chunks[1].choices[0].finish_reason).toBe('length');
      expect(chunks[2].usage).toEqual({ prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 });
    });
  });

  describe('through the gateway', () => {
    const upstream = new OllamaUpstream();
    let gw: TestGateway;
    let client: OpenAI;

    beforeAll(async () => {
      const base = await upstream.start();
      const models = `
models:
  - id: local/llama3
    context_length: 8192
    route:
      - { kind: ollama_chat, base_url: "${base}", provider_model_id: llama3, keep_alive: 10m }
  - id: local/missing
    context_length: 8192
    route:
      - { kind: ollama_chat, base_url: "${base}", provider_model_id: missing }
`;
      gw = await startGateway({ models, imports: [OllamaChatModule] });
      client = gw.client();
    });

    afterAll(async () => {
      await gw?.close();
      await upstream.stop();
    });

    it('answers, streams with usage, and logs the request', async () => {
      const res = await client.chat.completions.create({ model: 'local/llama3', messages: [{ role: 'user', content: 'hello there' }] });
      expect(res.choices[0].message.content).toBe('echo: hello there');
      expect(upstream.requests[0].body).toMatchObject({ model: 'llama3', stream: false, keep_alive: '10m' });
      const stream = await client.chat.completions.create({
        model: 'local/llama3',
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'one two' }],
      });
      let text = '';
      let usage: OpenAI.CompletionUsage | null | undefined;
      for await (const c of stream) {
        text += c.choices[0]?.delta.content ?? '';
        usage = c.usage ?? usage;
      }
      expect(text).toBe('echo: one two');
      // The model has no price: the gateway bills nothing, and says so in OpenRouter's usage.cost.
      expect(usage).toEqual({ prompt_tokens: 2, completion_tokens: 3, total_tokens: 5, cost: 0 });
      const rows = await gw.waitForRows(2);
      expect(rows.map((r) => [r.provider, r.prompt_tokens, r.usage_estimated])).toEqual([
        ['ollama_chat', 2, false],
        ['ollama_chat', 2, false],
      ]);
    });

    it("passes Ollama's errors on", async () => {
      const err = await client.chat.completions
        .create({ model: 'local/missing', messages: [{ role: 'user', content: 'x' }] })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(APIError);
      expect(err).toMatchObject({ status: 404 });
      expect((err as APIError).message).toContain('model "missing" not found');
    });
  });
});
