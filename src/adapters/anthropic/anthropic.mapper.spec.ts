import { testRoute } from '../../../test/helpers/route';
import type { ChatChunk, ChatRequest } from '../../common/chat.types';
import { UpstreamError } from '../../common/errors';
import {
  AnthropicStreamTranslator,
  anthropicHttpError,
  anthropicToolId,
  anthropicUsage,
  budgetedThinking,
  claudeOutputAllowance,
  fromAnthropicResponse,
  toAnthropicRequest,
} from './anthropic.mapper';
import type { AnthropicStreamEvent } from './anthropic.types';

const route = testRoute({ id: 'claude', kind: 'anthropic', apiKeys: ['k'], providerModelId: 'claude-sonnet-4-5' });
const SONNET_45 = { model: 'claude-sonnet-4-5-20250929' };
const req = (extra: Partial<ChatRequest> = {}): ChatRequest => ({ model: 'pub', messages: [{ role: 'user', content: 'hi' }], ...extra });
const refused = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return e as UpstreamError;
  }
  throw new Error('expected an error');
};

describe('toAnthropicRequest', () => {
  it('hoists system and developer messages, and always sets max_tokens', () => {
    const body = toAnthropicRequest(
      req({
        messages: [
          { role: 'system', content: 'Be terse.' },
          { role: 'developer', content: [{ type: 'text', text: 'No lists.' }] },
          { role: 'user', content: 'hi' },
        ],
      }),
      { model: 'claude-x' },
    );
    expect(body).toEqual({
      model: 'claude-x',
      max_tokens: 4096,
      system: 'Be terse.\n\nNo lists.',
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(toAnthropicRequest(req({ max_completion_tokens: 50, max_tokens: 10 }), { defaultMaxTokens: 999 }).max_tokens).toBe(50);
    expect(toAnthropicRequest(req(), { defaultMaxTokens: 999 })).not.toHaveProperty('model');
    expect(toAnthropicRequest(req(), { defaultMaxTokens: 999 }).max_tokens).toBe(999);
  });

  it('keeps cache_control on system blocks', () => {
    const body = toAnthropicRequest(
      req({
        messages: [
          { role: 'system', content: [{ type: 'text', text: 'long doc', cache_control: { type: 'ephemeral' } }] },
          { role: 'user', content: 'q' },
        ],
      }),
    );
    expect(body.system).toEqual([{ type: 'text', text: 'long doc', cache_control: { type: 'ephemeral' } }]);
  });

  it('refuses an image in a system prompt, which Claude would never see', () => {
    const err = refused(() =>
      toAnthropicRequest(
        req({
          messages: [
            {
              role: 'system',
              content: [
                { type: 'text', text: 'S' },
                { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } },
              ],
            },
            { role: 'user', content: 'q' },
          ],
        }),
      ),
    );
    expect(err).toMatchObject({ upstreamStatus: 400, param: 'messages[0].content[1]' });
    expect(err.message).toContain('text only in system prompts');
  });

  it('refuses a data: URL image that is not base64, which Claude would refuse as a URL', () => {
    const err = refused(() =>
      toAnthropicRequest(
        req({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/svg+xml,%3Csvg%3E' } }] }] }),
      ),
    );
    expect(err).toMatchObject({ upstreamStatus: 400, param: 'messages[0].content[0]' });
    expect(err.message).toContain('must be base64');
  });

  it("refuses OpenAI's custom tools and allowed_tools, which Claude has no form for, as this route's", () => {
    const err = refused(() => toAnthropicRequest(req({ tools: [{ type: 'custom', custom: { name: 'grep' } }] as never })));
    expect(err).toMatchObject({ upstreamStatus: 400, param: 'tools[0]', unsupportedByRoute: true });
    const choice = refused(() =>
      toAnthropicRequest(req({ tool_choice: { type: 'allowed_tools', allowed_tools: { mode: 'auto', tools: [] } } as never })),
    );
    expect(choice).toMatchObject({ param: 'tool_choice', unsupportedByRoute: true });
  });

  it('reads a base64 data: URL in any case, and without a media type (RFC 2397)', () => {
    const body = toAnthropicRequest(
      req({
        messages: [
          {
            role: 'user',
            content: [
              { type: 'image_url', image_url: { url: 'DATA:image/png;BASE64,AAAA' } },
              { type: 'file', file: { file_data: 'data:;base64,aGk=' } },
            ],
          },
        ],
      }),
    );
    expect(body.messages[0].content).toEqual([
      { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AAAA' } },
      { type: 'document', source: { type: 'base64', media_type: 'text/plain', data: 'aGk=' } },
    ]);
  });

  it('maps images (base64 and URL) and PDFs', () => {
    const body = toAnthropicRequest(
      req({
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'what is this' },
              { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
              { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } },
              { type: 'file', file: { filename: 'a.pdf', file_data: 'data:application/pdf;base64,JVBERi0=' } },
            ],
          },
        ],
      }),
    );
    expect(body.messages[0].content).toEqual([
      { type: 'text', text: 'what is this' },
      { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
      { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
      { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: 'JVBERi0=' }, title: 'a.pdf' },
    ]);
  });

  it('turns a tool round trip into tool_use and tool_result blocks, results merged into one user turn', () => {
    const body = toAnthropicRequest(
      req({
        messages: [
          { role: 'user', content: 'weather in Paris and Rome?' },
          {
            role: 'assistant',
            content: 'Checking.',
            tool_calls: [
              { id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
              { id: 'call.2', type: 'function', function: { name: 'weather', arguments: '' } },
            ],
          },
          { role: 'tool', tool_call_id: 'call_1', content: '21C' },
          { role: 'tool', tool_call_id: 'call.2', content: [{ type: 'text', text: '25C' }] },
          { role: 'user', content: 'thanks' },
        ],
      }),
    );
    expect(body.messages).toEqual([
      { role: 'user', content: 'weather in Paris and Rome?' },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'Checking.' },
          { type: 'tool_use', id: 'call_1', name: 'weather', input: { city: 'Paris' } },
          { type: 'tool_use', id: 'call_2', name: 'weather', input: {} },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'call_1', content: '21C' },
          { type: 'tool_result', tool_use_id: 'call_2', content: [{ type: 'text', text: '25C' }] },
          { type: 'text', text: 'thanks' },
        ],
      },
    ]);
  });

  it('sanitises foreign tool ids to what Anthropic accepts', () => {
    expect(anthropicToolId('call:abc/def')).toBe('call_abc_def');
    expect(anthropicToolId('x'.repeat(80))).toHaveLength(64);
  });

  it('keeps tool ids unique across the conversation (Anthropic refuses a repeat), each result with its own call', () => {
    const call = (id: string, name: string) => ({ id, type: 'function' as const, function: { name, arguments: '{}' } });
    const body = toAnthropicRequest(
      req({
        messages: [
          { role: 'user', content: 'go' },
          { role: 'assistant', content: null, tool_calls: [call('call_0', 'a')] },
          { role: 'tool', tool_call_id: 'call_0', content: 'A' },
          // The same id again (servers that number calls per turn), and two that clean to the same.
          { role: 'assistant', content: null, tool_calls: [call('call_0', 'b'), call('call.1', 'c'), call('call:1', 'd')] },
          { role: 'tool', tool_call_id: 'call_0', content: 'B' },
          { role: 'tool', tool_call_id: 'call.1', content: 'C' },
          { role: 'tool', tool_call_id: 'call:1', content: 'D' },
        ],
      }),
    );
    const uses = body.messages.flatMap((m) => (Array.isArray(m.content) ? m.content : [])).filter((b) => b.type === 'tool_use');
    const results = body.messages.flatMap((m) => (Array.isArray(m.content) ? m.content : [])).filter((b) => b.type === 'tool_result');
    const ids = uses.map((b) => (b as { id: string }).id);
    expect(ids).toEqual(['call_0', 'call_0_2', 'call_1', 'call_1_2']);
    expect(results.map((b) => (b as { tool_use_id: string }).tool_use_id)).toEqual(ids);
  });

  it('moves a cache breakpoint on an empty text part to the block before it', () => {
    const body = toAnthropicRequest(
      req({
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'long context' },
              { type: 'text', text: '', cache_control: { type: 'ephemeral' } },
            ],
          },
        ],
      }),
    );
    expect(body.messages[0].content).toEqual([{ type: 'text', text: 'long context', cache_control: { type: 'ephemeral' } }]);
    // First, it goes to the block after; it never replaces a block's own (a longer TTL).
    const parts = (content: unknown[]) =>
      toAnthropicRequest(req({ messages: [{ role: 'user', content: content as never }] })).messages[0].content;
    expect(
      parts([
        { type: 'text', text: '', cache_control: { type: 'ephemeral' } },
        { type: 'text', text: 'hi' },
      ]),
    ).toEqual([{ type: 'text', text: 'hi', cache_control: { type: 'ephemeral' } }]);
    expect(
      parts([
        { type: 'text', text: 'a', cache_control: { type: 'ephemeral', ttl: '1h' } },
        { type: 'text', text: '', cache_control: { type: 'ephemeral' } },
      ]),
    ).toEqual([{ type: 'text', text: 'a', cache_control: { type: 'ephemeral', ttl: '1h' } }]);
  });

  it('leaves out empty text, which Anthropic refuses and OpenAI takes', () => {
    const body = toAnthropicRequest(
      req({
        messages: [
          { role: 'user', content: 'Context follows' },
          { role: 'user', content: '' },
          {
            role: 'user',
            content: [
              { type: 'text', text: '' },
              { type: 'text', text: 'question?' },
            ],
          },
        ],
      }),
    );
    expect(body.messages).toEqual([
      {
        role: 'user',
        content: [
          { type: 'text', text: 'Context follows' },
          { type: 'text', text: 'question?' },
        ],
      },
    ]);
  });

  it.each([
    ['auto', { type: 'auto' }],
    ['none', { type: 'none' }],
    ['required', { type: 'any' }],
    [
      { type: 'function', function: { name: 'f' } },
      { type: 'tool', name: 'f' },
    ],
  ] as const)('maps tool_choice %j', (choice, expected) => {
    const body = toAnthropicRequest(
      req({
        tools: [
          {
            type: 'function',
            function: { name: 'f', description: 'd', parameters: { type: 'object', properties: { a: { type: 'string' } } } },
          },
        ],
        tool_choice: choice as ChatRequest['tool_choice'],
      }),
    );
    expect(body.tools).toEqual([{ name: 'f', description: 'd', input_schema: { type: 'object', properties: { a: { type: 'string' } } } }]);
    expect(body.tool_choice).toEqual(expected);
  });

  it('maps parallel_tool_calls: false to disable_parallel_tool_use, and drops tool_choice without tools', () => {
    const tools = [{ type: 'function' as const, function: { name: 'f' } }];
    expect(toAnthropicRequest(req({ tools, parallel_tool_calls: false })).tool_choice).toEqual({
      type: 'auto',
      disable_parallel_tool_use: true,
    });
    expect(toAnthropicRequest(req({ tools, tool_choice: 'required', parallel_tool_calls: false })).tool_choice).toEqual({
      type: 'any',
      disable_parallel_tool_use: true,
    });
    expect(toAnthropicRequest(req({ tools })).tools![0].input_schema).toEqual({ type: 'object', properties: {} });
    expect(toAnthropicRequest(req({ tool_choice: 'auto' }))).not.toHaveProperty('tool_choice');
  });

  it('leaves out thinking asked for as reasoning_effort where Claude refuses it, keeping a native thinking', () => {
    const tools = [{ type: 'function' as const, function: { name: 'f', parameters: { type: 'object' } } }];
    // A forced tool.
    expect(toAnthropicRequest(req({ reasoning_effort: 'high', tools, tool_choice: 'required', max_tokens: 100 }))).toMatchObject({
      max_tokens: 100,
    });
    expect(toAnthropicRequest(req({ reasoning_effort: 'high', tools, tool_choice: 'required' }))).not.toHaveProperty('thinking');
    // A tool loop whose assistant turn came back without its thinking block (runTools).
    const loop = req({
      reasoning_effort: 'high',
      tools,
      messages: [
        { role: 'user', content: 'q' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: 'done' },
      ],
    });
    expect(toAnthropicRequest(loop)).not.toHaveProperty('thinking');
    // With its signed block, it stays.
    const signed = structuredClone(loop);
    signed.messages[1].thinking_blocks = [{ type: 'thinking', thinking: 'hm', signature: 'sig' }];
    expect(toAnthropicRequest(signed, SONNET_45).thinking).toEqual({ type: 'enabled', budget_tokens: 4096 });
    // The client's own Anthropic thinking goes as it is.
    expect(
      toAnthropicRequest({ ...loop, reasoning_effort: undefined, thinking: { type: 'enabled', budget_tokens: 2048 } }).thinking,
    ).toEqual({
      type: 'enabled',
      budget_tokens: 2048,
    });
  });

  it('maps stop, sampling and user', () => {
    const body = toAnthropicRequest(req({ stop: ['END', '  '], top_p: 0.9, top_k: 5, user: 'u-1' }));
    expect(body).toMatchObject({ stop_sequences: ['END'], top_p: 0.9, top_k: 5, metadata: { user_id: 'u-1' } });
    // vLLM's "top-k off" is not a value Claude takes.
    expect(toAnthropicRequest(req({ top_k: -1 }))).not.toHaveProperty('top_k');
    expect(toAnthropicRequest(req({ stop: 'X' })).stop_sequences).toEqual(['X']);
    // Anthropic refuses a user_id over 256 characters or like an email address or phone number: hashed, the same each time.
    for (const user of ['alice@example.com', '+1 555-010-9999', 'x'.repeat(300), 'Alice Smith']) {
      const id = toAnthropicRequest(req({ user })).metadata?.user_id;
      expect(id).toMatch(/^[0-9a-f]{64}$/);
      expect(toAnthropicRequest(req({ user })).metadata?.user_id).toBe(id);
    }
    expect(toAnthropicRequest(req({ user: '5f0c3d2e-1b7a-4c1e-9d5a-0e8f7a6b5c4d' })).metadata?.user_id).toBe(
      '5f0c3d2e-1b7a-4c1e-9d5a-0e8f7a6b5c4d',
    );
  });

  it('sends image/jpg as image/jpeg and base64 without white space, as Anthropic takes them', () => {
    const body = toAnthropicRequest(
      req({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/jpg;base64, AAAA\nBBBB' } }] }] }),
    );
    expect(body.messages[0].content).toEqual([{ type: 'image', source: { type: 'base64', media_type: 'image/jpeg', data: 'AAAABBBB' } }]);
  });

  it('sends temperature alone when both temperature and top_p come (Claude 4.5 and later refuse the pair)', () => {
    const body = toAnthropicRequest(req({ temperature: 1.6, top_p: 0.9 }));
    expect(body.temperature).toBe(1);
    expect(body).not.toHaveProperty('top_p');
  });

  it.each([
    ['claude-3-5-sonnet-20241022', true],
    ['claude-3-7-sonnet-latest', true],
    ['claude-sonnet-4-20250514', true],
    ['claude-opus-4-1@20250805', true],
    ['claude-sonnet-4-5-20250929', true],
    ['anthropic.claude-haiku-4-5-v1', true],
    ['claude-sonnet-4.5', true],
    ['claude-opus-4-6', false],
    ['claude-sonnet-4-6@default', false],
    ['claude-opus-4-7', false],
    ['claude-opus-5', false],
    ['claude-mythos-preview', false],
    ['my-claude-finetune', false],
  ])('thinks on a budget with %s: %s', (model, budgeted) => {
    expect(budgetedThinking(model)).toBe(budgeted);
  });

  it('asks Claude 4.6 and later for adaptive thinking with an effort, max_tokens as the client set it', () => {
    const body = toAnthropicRequest(req({ reasoning_effort: 'low', max_tokens: 500, temperature: 0.2 }), { model: 'claude-opus-4-7' });
    expect(body.thinking).toEqual({ type: 'adaptive' });
    expect(body.output_config).toEqual({ effort: 'low' });
    expect(body.max_tokens).toBe(500);
    expect(body).not.toHaveProperty('temperature');
    const schema = { type: 'object', properties: {} };
    const structured = toAnthropicRequest(
      req({ reasoning: { max_tokens: 3000 }, response_format: { type: 'json_schema', json_schema: { name: 'x', schema } } }),
      { model: 'claude-sonnet-4-6' },
    );
    expect(structured.output_config).toMatchObject({ effort: 'medium', format: { type: 'json_schema' } });
    expect(toAnthropicRequest(req({ reasoning_effort: 'xhigh' }), { model: 'claude-opus-4-7' }).output_config).toEqual({ effort: 'high' });
    // reasoning.enabled alone: adaptive thinking at Claude's default effort.
    const enabled = toAnthropicRequest(req({ reasoning: { enabled: true } }), { model: 'claude-opus-4-7' });
    expect(enabled.thinking).toEqual({ type: 'adaptive' });
    expect(enabled).not.toHaveProperty('output_config');
    expect(toAnthropicRequest(req({ reasoning_effort: 'medium' }), { model: 'claude-opus-4-6' }).output_config).toEqual({
      effort: 'medium',
    });
    // Adaptive thinking does not add a budget on top of the client's limit.
    expect(claudeOutputAllowance(req({ reasoning_effort: 'high' }), 100, 'claude-opus-4-7')).toBe(100);
    expect(claudeOutputAllowance(req({ reasoning_effort: 'high' }), 100, 'claude-sonnet-4-5')).toBe(4196);
    // A route's own thinking is reserved for as the body will carry it, whatever the client asked.
    expect(claudeOutputAllowance(req(), 100, 'claude-sonnet-4-5', { type: 'enabled', budget_tokens: 16000 })).toBe(16100);
    // An effort no table knows is the route's refusal when it is tried, not the admission's.
    expect(claudeOutputAllowance(req({ reasoning_effort: 'turbo' }), 100, 'claude-sonnet-4-5')).toBe(100);
    // Claude Haiku takes no max effort.
    expect(toAnthropicRequest(req({ reasoning_effort: 'max' }), { model: 'claude-haiku-5-5' }).output_config).toEqual({ effort: 'high' });
  });

  it("asks for no thinking for effort none or a budget of 0, and refuses an effort it does not know, Object's own names included", () => {
    expect(toAnthropicRequest(req({ reasoning: { max_tokens: 0 } }), SONNET_45)).not.toHaveProperty('thinking');
    expect(toAnthropicRequest(req({ reasoning: { max_tokens: 0 } }), { model: 'claude-opus-4-7' })).not.toHaveProperty('thinking');
    expect(toAnthropicRequest(req({ reasoning_effort: 'xhigh' }), SONNET_45).thinking).toEqual({ type: 'enabled', budget_tokens: 8192 });
    expect(toAnthropicRequest(req({ reasoning_effort: 'none' }), SONNET_45)).not.toHaveProperty('thinking');
    expect(toAnthropicRequest(req({ reasoning: { effort: 'none' } }), SONNET_45)).not.toHaveProperty('thinking');
    for (const effort of ['ultra', 'toString', '__proto__', 'constructor']) {
      expect(() => toAnthropicRequest(req({ reasoning_effort: effort }), SONNET_45)).toThrow(/^reasoning_effort must be one of none, /);
      expect(() => toAnthropicRequest(req({ reasoning: { effort } }), SONNET_45)).toThrow(/^reasoning\.effort must be one of/);
    }
  });

  it("gives effort max the largest budget, and Claude's own max effort to adaptive thinking", () => {
    const body = toAnthropicRequest(req({ reasoning_effort: 'max', max_tokens: 1000 }), SONNET_45);
    expect(body.thinking).toEqual({ type: 'enabled', budget_tokens: 16384 });
    expect(body.max_tokens).toBe(17384);
    const adaptive = toAnthropicRequest(req({ reasoning: { effort: 'max' } }), { model: 'claude-opus-4-6' });
    expect(adaptive).toMatchObject({ thinking: { type: 'adaptive' }, output_config: { effort: 'max' } });
    // xhigh is Claude's too, but only its newest models take it.
    expect(toAnthropicRequest(req({ reasoning_effort: 'xhigh' }), { model: 'claude-sonnet-4-6' }).output_config).toEqual({
      effort: 'high',
    });
  });

  it('turns reasoning_effort into a thinking budget inside max_tokens, without sampling changes', () => {
    const body = toAnthropicRequest(req({ reasoning_effort: 'low', max_tokens: 500, temperature: 0.2, top_p: 0.5 }), SONNET_45);
    expect(body.thinking).toEqual({ type: 'enabled', budget_tokens: 1024 });
    expect(body.max_tokens).toBe(1524);
    expect(body).not.toHaveProperty('temperature');
    expect(body).not.toHaveProperty('top_p');
    expect(toAnthropicRequest(req({ reasoning: { max_tokens: 3000 } }), SONNET_45).thinking).toEqual({
      type: 'enabled',
      budget_tokens: 3000,
    });
    // Below Anthropic's minimum of 1,024: raised to it rather than refused upstream.
    expect(toAnthropicRequest(req({ reasoning: { max_tokens: 500 } }), SONNET_45).thinking).toEqual({
      type: 'enabled',
      budget_tokens: 1024,
    });
    expect(toAnthropicRequest(req({ thinking: { type: 'enabled', budget_tokens: 2048 } })).thinking).toEqual({
      type: 'enabled',
      budget_tokens: 2048,
    });
  });

  it("leaves out an assistant's text of whitespace alone, which Anthropic refuses", () => {
    const body = toAnthropicRequest(
      req({
        messages: [
          { role: 'user', content: 'q' },
          {
            role: 'assistant',
            content: '\n\n',
            tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' } }],
          },
          { role: 'tool', tool_call_id: 'call_1', content: 'done' },
          {
            role: 'assistant',
            content: [
              { type: 'text', text: ' ' },
              { type: 'text', text: 'ok' },
            ],
          },
          { role: 'user', content: 'more' },
        ],
      }),
    );
    expect(body.messages[1]).toEqual({ role: 'assistant', content: [{ type: 'tool_use', id: 'call_1', name: 'f', input: {} }] });
    expect(body.messages[3]).toEqual({ role: 'assistant', content: [{ type: 'text', text: 'ok' }] });
  });

  it("sends an assistant's refusal back as the text it was (a refusal part, or the message's refusal)", () => {
    const body = toAnthropicRequest(
      req({
        messages: [
          { role: 'user', content: 'q' },
          { role: 'assistant', content: [{ type: 'refusal', refusal: "I can't help with that." }] },
          { role: 'user', content: 'another' },
          { role: 'assistant', content: null, refusal: 'No.' },
          { role: 'user', content: 'why' },
        ],
      }),
    );
    expect(body.messages[1]).toEqual({ role: 'assistant', content: [{ type: 'text', text: "I can't help with that." }] });
    expect(body.messages[3]).toEqual({ role: 'assistant', content: [{ type: 'text', text: 'No.' }] });
  });

  it('sends thinking blocks back first and unchanged', () => {
    const body = toAnthropicRequest(
      req({
        messages: [
          { role: 'user', content: 'q' },
          {
            role: 'assistant',
            content: 'a',
            thinking_blocks: [
              { type: 'thinking', thinking: 'hmm', signature: 'sig' },
              { type: 'thinking', thinking: 'unsigned' },
            ],
          },
          { role: 'user', content: 'q2' },
        ],
      }),
    );
    expect(body.messages[1].content).toEqual([
      { type: 'thinking', thinking: 'hmm', signature: 'sig' },
      { type: 'text', text: 'a' },
    ]);
  });

  it('rejoins a streamed signature kept apart from its text (reasoning_content) into the signed block', () => {
    const body = toAnthropicRequest(
      req({
        messages: [
          { role: 'user', content: 'q' },
          {
            role: 'assistant',
            content: 'a',
            reasoning_content: 'hmm, let me see',
            thinking_blocks: [{ type: 'thinking', thinking: '', signature: 'sig' }],
          },
          { role: 'user', content: 'q2' },
        ],
      }),
    );
    expect((body.messages[1].content as unknown[])[0]).toEqual({ type: 'thinking', thinking: 'hmm, let me see', signature: 'sig' });
  });

  it('refuses what Anthropic cannot express with a 400 naming the parameter', () => {
    expect(refused(() => toAnthropicRequest(req({ n: 2 })))).toMatchObject({ status: 400, param: 'n', retryable: false });
    expect(
      refused(() => toAnthropicRequest(req({ messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: {} }] }] }))),
    ).toMatchObject({ status: 400, param: 'messages[0].content[0].type' });
    const bad = refused(() =>
      toAnthropicRequest(
        req({
          messages: [
            { role: 'user', content: 'q' },
            { role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{nope' } }] },
          ],
        }),
      ),
    );
    expect(bad).toMatchObject({ status: 400, param: 'messages[1].tool_calls[0]' });
    // Arguments nested past what the gateway sends on (serialising them again would overflow the stack).
    const deep = '['.repeat(5000) + ']'.repeat(5000);
    const tooDeep = refused(() =>
      toAnthropicRequest(
        req({
          messages: [
            { role: 'user', content: 'q' },
            { role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: deep } }] },
          ],
        }),
      ),
    );
    expect(tooDeep).toMatchObject({ status: 400, param: 'messages[1].tool_calls[0]', message: expect.stringContaining('deeper than 128') });
  });

  it('does not change the request', () => {
    const r = req({
      messages: [
        { role: 'user', content: 'a' },
        { role: 'user', content: 'b' },
      ],
      tools: [{ type: 'function', function: { name: 'f' } }],
    });
    const before = structuredClone(r);
    toAnthropicRequest(r);
    expect(r).toEqual(before);
  });
});

describe('fromAnthropicResponse', () => {
  it('maps text, tool use, thinking, the stop reason and usage with cache reads and writes', () => {
    const res = fromAnthropicResponse({
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'claude-x',
      content: [
        { type: 'thinking', thinking: 'let me see', signature: 'sig' },
        { type: 'text', text: 'Looking it up.' },
        { type: 'tool_use', id: 'toolu_1', name: 'weather', input: { city: 'Paris' } },
      ],
      stop_reason: 'tool_use',
      stop_sequence: null,
      usage: { input_tokens: 10, output_tokens: 20, cache_read_input_tokens: 100, cache_creation_input_tokens: 5 },
    });
    expect(res).toMatchObject({ id: 'msg_1', object: 'chat.completion', model: 'claude-x' });
    expect(res.choices[0]).toEqual({
      index: 0,
      logprobs: null,
      finish_reason: 'tool_calls',
      message: {
        role: 'assistant',
        content: 'Looking it up.',
        reasoning_content: 'let me see',
        thinking_blocks: [{ type: 'thinking', thinking: 'let me see', signature: 'sig' }],
        tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } }],
      },
    });
    expect(res.usage).toEqual({
      prompt_tokens: 115,
      completion_tokens: 20,
      total_tokens: 135,
      prompt_tokens_details: { cached_tokens: 100, cache_write_tokens: 5 },
    });
  });

  it.each([
    ['end_turn', 'stop'],
    ['stop_sequence', 'stop'],
    ['max_tokens', 'length'],
    ['tool_use', 'tool_calls'],
    ['refusal', 'content_filter'],
    ['pause_turn', 'stop'],
    ['something_new', 'stop'],
  ])('maps stop_reason %s to %s', (stop, finish) => {
    const res = fromAnthropicResponse({
      id: 'm',
      type: 'message',
      role: 'assistant',
      model: 'c',
      content: [{ type: 'text', text: 'x' }],
      stop_reason: stop,
      stop_sequence: null,
      usage: {},
    });
    expect(res.choices[0].finish_reason).toBe(finish);
  });

  it('answers null content when there are only tool calls', () => {
    const res = fromAnthropicResponse({
      id: 'm',
      type: 'message',
      role: 'assistant',
      model: 'c',
      content: [{ type: 'tool_use', id: 't', name: 'f', input: {} }],
      stop_reason: 'tool_use',
      stop_sequence: null,
      usage: {},
    });
    expect(res.choices[0].message.content).toBeNull();
  });

  it('reads a text block without text as empty, not as "undefined"', () => {
    const res = fromAnthropicResponse({
      id: 'm',
      type: 'message',
      role: 'assistant',
      model: 'c',
      content: [{ type: 'text' }, { type: 'text', text: 'x' }] as never,
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: {},
    });
    expect(res.choices[0].message.content).toBe('x');
  });
});

describe('AnthropicStreamTranslator', () => {
  const events: AnthropicStreamEvent[] = [
    {
      type: 'message_start',
      message: {
        id: 'msg_1',
        type: 'message',
        role: 'assistant',
        model: 'claude-x',
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: 849, cache_read_input_tokens: 10, cache_creation_input_tokens: 0, output_tokens: 1 },
      },
    },
    { type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '', signature: '' } },
    { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'Hmm.' } },
    { type: 'content_block_delta', index: 0, delta: { type: 'signature_delta', signature: 'sig' } },
    { type: 'content_block_stop', index: 0 },
    { type: 'content_block_start', index: 1, content_block: { type: 'text', text: '' } },
    { type: 'ping' },
    { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: 'Hello' } },
    { type: 'content_block_stop', index: 1 },
    { type: 'content_block_start', index: 2, content_block: { type: 'tool_use', id: 'toolu_1', name: 'json', input: {} } },
    { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '' } },
    { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '{"city": ' } },
    { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '"Paris"}' } },
    { type: 'content_block_stop', index: 2 },
    { type: 'message_delta', delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: 47 } },
    { type: 'message_stop' },
  ];

  it('translates the documented event sequence into chat chunks, usage from both halves at the end', () => {
    const t = new AnthropicStreamTranslator(route);
    const chunks: ChatChunk[] = events.flatMap((e) => t.push(e));
    expect(t.done).toBe(true);
    expect(new Set(chunks.map((c) => c.id))).toEqual(new Set(['msg_1']));
    const deltas = chunks.map((c) => c.choices[0]?.delta);
    expect(deltas[0]).toEqual({ role: 'assistant', content: '' });
    expect(chunks.map((c) => c.choices[0]?.delta.reasoning_content ?? '').join('')).toBe('Hmm.');
    // The signed block goes out whole, its text included, as it must come back.
    expect(deltas).toContainEqual({ thinking_blocks: [{ type: 'thinking', thinking: 'Hmm.', signature: 'sig' }] });
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('Hello');
    const calls = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? []);
    expect(calls[0]).toEqual({ index: 0, id: 'toolu_1', type: 'function', function: { name: 'json', arguments: '' } });
    expect(
      calls
        .slice(1)
        .map((c) => c.function?.arguments)
        .join(''),
    ).toBe('{"city": "Paris"}');
    expect(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason).toBe('tool_calls');
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual({
      prompt_tokens: 859,
      completion_tokens: 47,
      total_tokens: 906,
      prompt_tokens_details: { cached_tokens: 10, cache_write_tokens: 0 },
    });
  });

  it('carries the running input figures on the role chunk, and ends an answer whose message_delta named no stop reason', () => {
    const t = new AnthropicStreamTranslator(route);
    const [role] = t.push(events[0]);
    expect(role.usage).toMatchObject({ prompt_tokens: 859, completion_tokens: 1 });
    t.push({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
    t.push({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hi' } });
    expect(t.push({ type: 'message_delta', delta: null, usage: { output_tokens: 2 } } as unknown as AnthropicStreamEvent)).toEqual([]);
    const end = t.push({ type: 'message_stop' });
    expect(end.map((c) => c.choices[0]?.finish_reason ?? 'usage')).toEqual(['stop', 'usage']);
  });

  it('sends every signed block so far with each, since clients keep the last thinking_blocks they saw', () => {
    const t = new AnthropicStreamTranslator(route);
    t.push(events[0]);
    const out = [
      { type: 'content_block_start', index: 0, content_block: { type: 'redacted_thinking', data: 'opaque' } },
      { type: 'content_block_stop', index: 0 },
      { type: 'content_block_start', index: 1, content_block: { type: 'thinking', thinking: '', signature: '' } },
      { type: 'content_block_delta', index: 1, delta: { type: 'thinking_delta', thinking: 'Hmm.' } },
      { type: 'content_block_delta', index: 1, delta: { type: 'signature_delta', signature: 'sig' } },
    ].flatMap((e) => t.push(e as AnthropicStreamEvent));
    const blocks = out.filter((c) => c.choices[0]?.delta.thinking_blocks).map((c) => c.choices[0].delta.thinking_blocks);
    expect(blocks.at(-1)).toEqual([
      { type: 'redacted_thinking', data: 'opaque' },
      { type: 'thinking', thinking: 'Hmm.', signature: 'sig' },
    ]);
  });

  it('gives a call whose input stayed {} the arguments "{}", as a whole answer has', () => {
    const t = new AnthropicStreamTranslator(route);
    t.push(events[0]);
    const out = [
      { type: 'content_block_start', index: 0, content_block: { type: 'tool_use', id: 'toolu_t', name: 'get_time', input: {} } },
      { type: 'content_block_delta', index: 0, delta: { type: 'input_json_delta', partial_json: '' } },
      { type: 'content_block_stop', index: 0 },
    ].flatMap((e) => t.push(e as AnthropicStreamEvent));
    const args = out.flatMap((c) => c.choices[0]?.delta.tool_calls ?? []).map((c) => c.function?.arguments ?? '');
    expect(args.join('')).toBe('{}');
  });

  it("sends no final usage when message_delta gave no output count (message_start's 1 is a placeholder)", () => {
    for (const usage of [null, { output_tokens: 'many' }]) {
      const t = new AnthropicStreamTranslator(route);
      t.push(events[0]);
      t.push({ type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage } as unknown as AnthropicStreamEvent);
      expect(t.push({ type: 'message_stop' }).filter((c) => c.usage)).toEqual([]);
    }
  });

  it('throws an error event as an overloaded 503, retryable', () => {
    const t = new AnthropicStreamTranslator(route);
    t.push(events[0]);
    let err: unknown;
    try {
      t.push({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err).toMatchObject({ status: 503, retryable: true, code: 'overloaded' });
    expect(t.done).toBe(false);
  });
});

describe('anthropicUsage', () => {
  it('counts cache reads and writes into prompt_tokens', () => {
    expect(anthropicUsage({ input_tokens: 1, cache_read_input_tokens: 30433, cache_creation_input_tokens: 0, output_tokens: 7 })).toEqual({
      prompt_tokens: 30434,
      completion_tokens: 7,
      total_tokens: 30441,
      prompt_tokens_details: { cached_tokens: 30433, cache_write_tokens: 0 },
    });
  });

  it('keeps the one-hour part of the cache writes apart, within the writes', () => {
    const split = (m5: number, h1: number) => ({ ephemeral_5m_input_tokens: m5, ephemeral_1h_input_tokens: h1 });
    expect(
      anthropicUsage({ input_tokens: 2, output_tokens: 1, cache_creation_input_tokens: 30, cache_creation: split(10, 20) })
        ?.prompt_tokens_details,
    ).toEqual({ cached_tokens: 0, cache_write_tokens: 30, cache_write_1h_tokens: 20 });
    // Without the total, the split's sum; a split above the total counts up to the total.
    expect(anthropicUsage({ input_tokens: 2, output_tokens: 1, cache_creation: split(10, 20) })?.prompt_tokens).toBe(32);
    expect(
      anthropicUsage({ input_tokens: 2, output_tokens: 1, cache_creation_input_tokens: 5, cache_creation: split(0, 9) })
        ?.prompt_tokens_details,
    ).toEqual({ cached_tokens: 0, cache_write_tokens: 5, cache_write_1h_tokens: 5 });
  });
});

describe('anthropicHttpError', () => {
  const body = (type: string, message: string) => JSON.stringify({ type: 'error', error: { type, message }, request_id: 'req_1' });

  it('makes overloaded_error (529) a retryable 503', () => {
    expect(anthropicHttpError(529, body('overloaded_error', 'Overloaded'), route, undefined)).toMatchObject({
      status: 503,
      upstreamStatus: 529,
      type: 'server_error',
      code: 'overloaded',
      retryable: true,
    });
  });

  it('passes a rate limit on as 429 with its Retry-After', () => {
    const err = anthropicHttpError(429, body('rate_limit_error', 'slow down'), route, 7000);
    expect(err).toMatchObject({ status: 429, type: 'rate_limit_error', message: 'slow down', retryAfterMs: 7000, retryable: true });
    expect(err.headers).toEqual({ 'retry-after': '7' });
  });

  it("says a 401 is about the gateway's credentials for the route, not the client's key", () => {
    const err = anthropicHttpError(401, body('authentication_error', 'invalid x-api-key'), route, undefined);
    expect(err).toMatchObject({
      status: 502,
      upstreamStatus: 401,
      type: 'upstream_error',
      code: 'upstream_unauthorized',
      message: expect.stringMatching(/refused the gateway's credentials for it \(401\): invalid x-api-key$/),
      retryable: false,
    });
  });

  it.each([
    [400, 'invalid_request_error', 400, 'invalid_request_error'],
    [403, 'permission_error', 403, 'permission_error'],
    [404, 'not_found_error', 404, 'not_found_error'],
    [413, 'request_too_large', 413, 'invalid_request_error'],
  ])('passes %d %s on as %d %s with its message', (status, type, outStatus, outType) => {
    const err = anthropicHttpError(status, body(type, 'the reason'), route, undefined);
    expect(err).toMatchObject({ status: outStatus, type: outType, code: type, message: 'the reason', retryable: false });
  });

  it("passes 402 billing_error on as a 502, saying it is the operator's account", () => {
    const err = anthropicHttpError(402, body('billing_error', 'the reason'), route, undefined);
    expect(err).toMatchObject({ status: 502, type: 'upstream_error', code: 'upstream_payment_required', retryable: false });
    expect(err.message).toMatch(/refused for payment: the operator's account with the provider \(402\): the reason$/);
  });

  it('makes api_error a retryable 502 naming the route', () => {
    const err = anthropicHttpError(500, body('api_error', 'Internal server error'), route, undefined);
    expect(err).toMatchObject({ status: 502, retryable: true });
    expect(err.message).toContain('claude');
  });

  it("reads Vertex's Google-shaped errors too, also wrapped in an array", () => {
    const text = JSON.stringify([
      {
        error: {
          code: 429,
          message: 'Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model',
          status: 'RESOURCE_EXHAUSTED',
        },
      },
    ]);
    expect(anthropicHttpError(429, text, route, undefined)).toMatchObject({
      status: 429,
      type: 'rate_limit_error',
      code: 'RESOURCE_EXHAUSTED',
      message: expect.stringContaining('Quota exceeded'),
    });
  });
});
