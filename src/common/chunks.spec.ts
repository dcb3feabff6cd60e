import type { ChatChunk, ChatResponse } from './chat.types';
import { ChatAggregator, chunkHasContent, responseToChunks, stripChunkReasoning, ToolCallFixer } from './chunks';

const response = (extra: Partial<ChatResponse> = {}): ChatResponse => ({
  id: 'chatcmpl-1',
  object: 'chat.completion',
  created: 1700000000,
  model: 'acme/chat',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello!' }, finish_reason: 'stop' }],
  ...extra,
});

const chunk = (
  delta: ChatChunk['choices'][number]['delta'],
  extra: Partial<ChatChunk> = {},
  finish_reason: string | null = null,
): ChatChunk => ({
  id: 'c',
  object: 'chat.completion.chunk',
  created: 1,
  model: 'm',
  choices: [{ index: 0, delta, finish_reason }],
  ...extra,
});

describe('responseToChunks', () => {
  it('streams the content, then the finish reason, then the usage', () => {
    const usage = { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 };
    const chunks = [...responseToChunks(response({ usage }))];
    const base = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1700000000, model: 'acme/chat' };
    expect(chunks).toEqual([
      { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: 'Hello!' }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] },
      { ...base, choices: [], usage },
    ]);
  });

  it('sends no usage chunk when the response has no usage', () => {
    const chunks = [...responseToChunks(response())];
    expect(chunks).toHaveLength(2);
    expect(chunks.some((c) => c.usage)).toBe(false);
  });

  it('numbers tool calls and keeps reasoning', () => {
    const res = response({
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: null,
            reasoning_content: 'need the weather',
            tool_calls: [
              { id: 'call_a', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
              { id: 'call_b', type: 'function', function: { name: 'time', arguments: '{}' } },
            ],
          },
          finish_reason: 'tool_calls',
        },
      ],
    });
    const [first, last] = [...responseToChunks(res)];
    const delta = first.choices[0].delta;
    expect(delta.reasoning_content).toBe('need the weather');
    expect(delta.tool_calls).toEqual([
      { index: 0, id: 'call_a', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
      { index: 1, id: 'call_b', type: 'function', function: { name: 'time', arguments: '{}' } },
    ]);
    expect(last.choices[0].finish_reason).toBe('tool_calls');
  });

  it('flattens array content to text', () => {
    const res = response({
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: [
              { type: 'text', text: 'a' },
              { type: 'text', text: 'b' },
            ],
          },
          finish_reason: 'stop',
        },
      ],
    });
    expect([...responseToChunks(res)][0].choices[0].delta.content).toBe('ab');
  });

  it('keeps each choice under its own index', () => {
    const res = response({
      choices: [
        { index: 0, message: { role: 'assistant', content: 'one' }, finish_reason: 'stop' },
        { index: 1, message: { role: 'assistant', content: 'two' }, finish_reason: 'length' },
      ],
    });
    const [first, second] = [...responseToChunks(res)];
    expect(first.choices.map((c) => [c.index, c.delta.content])).toEqual([
      [0, 'one'],
      [1, 'two'],
    ]);
    expect(second.choices.map((c) => [c.index, c.finish_reason])).toEqual([
      [0, 'stop'],
      [1, 'length'],
    ]);
  });

  it("keeps the answer's logprobs, fingerprint, service tier and native finish reason", () => {
    const logprobs = { content: [{ token: 'one', logprob: -0.1, bytes: null, top_logprobs: [] }] };
    const res = response({
      system_fingerprint: 'fp_1',
      service_tier: 'default',
      choices: [
        { index: 0, message: { role: 'assistant', content: 'one' }, finish_reason: 'length', native_finish_reason: 'max_tokens', logprobs },
      ],
    });
    const [first, second] = [...responseToChunks(res)];
    expect(first).toMatchObject({ system_fingerprint: 'fp_1', service_tier: 'default' });
    expect(first.choices[0].logprobs).toEqual(logprobs);
    expect(second.choices[0]).toMatchObject({ finish_reason: 'length', native_finish_reason: 'max_tokens' });
  });

  it('produces chunks that count as content up to the usage, which follows the finish', () => {
    const chunks = [...responseToChunks(response({ usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }))];
    expect(chunks.map(chunkHasContent)).toEqual([true, true, false]);
  });
});

describe('stripChunkReasoning', () => {
  it('drops a chunk of reasoning alone, and keeps whatever else a chunk carries without its reasoning', () => {
    expect(stripChunkReasoning(chunk({ reasoning_content: 'hmm', content: '' }))).toBe(false);
    expect(stripChunkReasoning(chunk({ reasoning: 'hmm', content: null }))).toBe(false);
    for (const delta of [
      { content: 'a' },
      { role: 'assistant' as const },
      { refusal: 'no' },
      { audio: { id: 'a1', data: 'UklGR' } },
      { images: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,iVBOR' } }] },
    ]) {
      const c = chunk({ ...delta, reasoning_content: 'hmm' });
      expect([delta, stripChunkReasoning(c)]).toEqual([delta, true]);
      expect(c.choices[0].delta).not.toHaveProperty('reasoning_content');
    }
    expect(stripChunkReasoning(chunk({ reasoning: 'hmm' }, {}, 'stop'))).toBe(true);
    expect(stripChunkReasoning(chunk({ content: 'plain' }))).toBe(true);
  });
});

describe('chunkHasContent', () => {
  it('is false for a chunk that only opens the message', () => {
    expect(chunkHasContent(chunk({ role: 'assistant' }))).toBe(false);
    expect(chunkHasContent(chunk({ role: 'assistant', content: '' }))).toBe(false);
    expect(chunkHasContent(chunk({ role: 'assistant', content: null, reasoning_content: '' }))).toBe(false);
    expect(chunkHasContent(chunk({ content: '' }, { usage: null }))).toBe(false);
    expect(chunkHasContent({ ...chunk({}), choices: [] })).toBe(false);
    expect(chunkHasContent(chunk({ role: 'assistant', audio: { id: 'audio_1', data: '', transcript: '' }, images: [] }))).toBe(false);
    // Nor does a usage figure in a chunk of its own before any answer.
    expect(chunkHasContent({ ...chunk({}), choices: [], usage: { prompt_tokens: 1, completion_tokens: 0, total_tokens: 1 } })).toBe(false);
    // A running usage figure on the role chunk (Anthropic's message_start) commits nothing.
    expect(
      chunkHasContent({
        ...chunk({ role: 'assistant', content: '' }),
        usage: { prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 },
      }),
    ).toBe(false);
  });

  it.each<[string, ChatChunk]>([
    ['text', chunk({ content: 'H' })],
    ['reasoning_content', chunk({ reasoning_content: 'thinking' })],
    ['reasoning', chunk({ reasoning: 'thinking' })],
    ['a tool call', chunk({ tool_calls: [{ index: 0, id: 'c', function: { name: 'f', arguments: '' } }] })],
    ['a refusal', chunk({ refusal: 'no' })],
    // A spoken answer streams audio (and its transcript) with no text at all.
    ['audio', chunk({ audio: { id: 'audio_1', data: 'UklGR' } })],
    ['an audio transcript', chunk({ audio: { transcript: 'Hel' } })],
    ['an image', chunk({ images: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,iVBOR' } }] })],
    ['a finish reason', chunk({}, {}, 'stop')],
  ])('is true for %s', (_what, c) => {
    expect(chunkHasContent(c)).toBe(true);
  });
});

describe('ToolCallFixer', () => {
  const chunk = (tool_calls: unknown[], index = 0): ChatChunk => ({
    id: 'c',
    object: 'chat.completion.chunk',
    created: 0,
    model: 'm',
    choices: [{ index, delta: { tool_calls } as ChatChunk['choices'][number]['delta'], finish_reason: null }],
  });
  const calls = (c: ChatChunk) => c.choices[0].delta.tool_calls;

  it('leaves whole deltas as they are', () => {
    const fixer = new ToolCallFixer((choice, call) => `call_r_${choice}_${call}`);
    const whole = [{ index: 0, id: 'call_a', type: 'function', function: { name: 'f', arguments: '{' } }];
    expect(calls(fixer.fix(chunk(structuredClone(whole))))).toEqual(whole);
    expect(calls(fixer.fix(chunk([{ index: 0, function: { arguments: '}' } }])))).toEqual([{ index: 0, function: { arguments: '}' } }]);
  });

  it('gives a call\'s first delta the type "function" when the server left it out, and no later delta', () => {
    const fixer = new ToolCallFixer((choice, call) => `call_r_${choice}_${call}`);
    expect(calls(fixer.fix(chunk([{ function: { name: 'f', arguments: '{' } }])))).toEqual([
      { index: 0, id: 'call_r_0_0', type: 'function', function: { name: 'f', arguments: '{' } },
    ]);
    expect(calls(fixer.fix(chunk([{ function: { arguments: '}' } }])))).toEqual([{ index: 0, function: { arguments: '}' } }]);
  });

  it('indexes calls without an index by id, and continues the last one on an arguments-only delta', () => {
    const fixer = new ToolCallFixer((choice, call) => `call_r_${choice}_${call}`);
    const first = fixer.fix(
      chunk([
        { id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
        { id: 'call_2', type: 'function', function: { name: 'time', arguments: '{"tz":' } },
      ]),
    );
    expect(calls(first)!.map((t) => [t.index, t.id])).toEqual([
      [0, 'call_1'],
      [1, 'call_2'],
    ]);
    expect(calls(fixer.fix(chunk([{ function: { arguments: '"UTC"}' } }])))![0].index).toBe(1);
    expect(calls(fixer.fix(chunk([{ id: 'call_1', function: { arguments: '' } }])))![0].index).toBe(0);
    expect(calls(fixer.fix(chunk([{ id: 'call_3', function: { name: 'g', arguments: '{}' } }])))![0].index).toBe(2);
  });

  it('gives a call that starts at an index another call holds an index of its own, and its later deltas follow it', () => {
    // Ollama behind LiteLLM and some SGLang/Qwen tool parsers: every parallel call at index 0.
    const fixer = new ToolCallFixer((choice, call) => `call_r_${choice}_${call}`);
    const seen = (tool_calls: unknown[]) => calls(fixer.fix(chunk(tool_calls)))!.map((t) => [t.index, t.id ?? null]);
    expect(seen([{ index: 0, id: 'call_A', type: 'function', function: { name: 'get_weather', arguments: '{"city":' } }])).toEqual([
      [0, 'call_A'],
    ]);
    expect(seen([{ index: 0, function: { arguments: '"A"}' } }])).toEqual([[0, null]]);
    expect(seen([{ index: 0, id: 'call_B', type: 'function', function: { name: 'get_time', arguments: '{"tz":' } }])).toEqual([
      [1, 'call_B'],
    ]);
    expect(seen([{ index: 0, function: { arguments: '"B"}' } }])).toEqual([[1, null]]);
    // A server that repeats a call's id on each of its deltas, or names the first call again.
    expect(seen([{ index: 0, id: 'call_B', function: { arguments: '' } }])).toEqual([[1, 'call_B']]);
    expect(seen([{ index: 0, id: 'call_A', function: { arguments: '' } }])).toEqual([[0, 'call_A']]);
    // Parallel calls at their own indexes that share one id (some DeepSeek and GLM versions) stay apart.
    const shared = new ToolCallFixer((choice, call) => `call_r_${choice}_${call}`);
    const at = (tool_calls: unknown[]) => calls(shared.fix(chunk(tool_calls)))!.map((t) => t.index);
    expect(at([{ index: 0, id: 'call_X', type: 'function', function: { name: 'get_weather', arguments: '' } }])).toEqual([0]);
    expect(at([{ index: 0, function: { arguments: '{"city":"A"}' } }])).toEqual([0]);
    expect(at([{ index: 1, id: 'call_X', type: 'function', function: { name: 'get_time', arguments: '' } }])).toEqual([1]);
    expect(at([{ index: 1, function: { arguments: '{"tz":"B"}' } }])).toEqual([1]);
    // A new id without a function name is no new call (some servers send an id with every delta).
    const other = new ToolCallFixer((choice, call) => `call_r_${choice}_${call}`);
    other.fix(chunk([{ index: 0, id: 'x1', type: 'function', function: { name: 'f', arguments: '{' } }]));
    expect(calls(other.fix(chunk([{ index: 0, id: 'x2', function: { arguments: '}' } }])))![0].index).toBe(0);
  });

  it('starts a call for a delta with neither index nor id that names a function', () => {
    const fixer = new ToolCallFixer((choice, call) => `call_r_${choice}_${call}`);
    const out = fixer.fix(
      chunk([
        { type: 'function', function: { name: 'a', arguments: '{"x":' } },
        { type: 'function', function: { name: 'b', arguments: '{}' } },
      ]),
    );
    expect(calls(out)!.map((t) => t.index)).toEqual([0, 1]);
    // Named again later, without id (an empty one): a third call; arguments alone continue it.
    expect(calls(fixer.fix(chunk([{ id: '', type: 'function', function: { name: 'c', arguments: '' } }])))![0].index).toBe(2);
    expect(calls(fixer.fix(chunk([{ function: { arguments: '{}' } }])))![0].index).toBe(2);
  });

  it('gives a call without an id one, distinct per call', () => {
    const fixer = new ToolCallFixer((choice, call) => `call_r1_${choice}_${call}`);
    const out = fixer.fix(
      chunk([
        { index: 0, type: 'function', function: { name: 'a', arguments: '{}' } },
        { index: 1, id: '', type: 'function', function: { name: 'b', arguments: '{}' } },
      ]),
    );
    expect(calls(out)!.map((t) => t.id)).toEqual(['call_r1_0_0', 'call_r1_0_1']);
    // Later deltas of the same call are not given one.
    expect(calls(fixer.fix(chunk([{ index: 0, function: { arguments: ' ' } }])))![0].id).toBeUndefined();
  });
});

describe('ChatAggregator', () => {
  it('keeps the images a model made with the answer it collects', () => {
    const image = { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } };
    const agg = new ChatAggregator();
    const chunk = (delta: Record<string, unknown>): ChatChunk => ({
      id: 'c',
      object: 'chat.completion.chunk',
      created: 0,
      model: 'm',
      choices: [{ index: 0, delta, finish_reason: null }],
    });
    agg.push(chunk({ role: 'assistant', content: '' }));
    agg.push(chunk({ images: [image] }));
    agg.push(chunk({ content: 'a cat' }));
    expect(agg.result().choices[0].message).toMatchObject({ content: 'a cat', images: [image] });
  });
});
