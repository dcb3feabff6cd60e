import type { ChatChunk, ChatResponse } from './chat.types';
import { chunkHasContent, responseToChunks } from './chunks';

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

  it('produces chunks that each count as content', () => {
    expect(
      [...responseToChunks(response({ usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }))].every(chunkHasContent),
    ).toBe(true);
  });
});

describe('chunkHasContent', () => {
  it('is false for a chunk that only opens the message', () => {
    expect(chunkHasContent(chunk({ role: 'assistant' }))).toBe(false);
    expect(chunkHasContent(chunk({ role: 'assistant', content: '' }))).toBe(false);
    expect(chunkHasContent(chunk({ role: 'assistant', content: null, reasoning_content: '' }))).toBe(false);
    expect(chunkHasContent(chunk({ content: '' }, { usage: null }))).toBe(false);
    expect(chunkHasContent({ ...chunk({}), choices: [] })).toBe(false);
  });

  it.each<[string, ChatChunk]>([
    ['text', chunk({ content: 'H' })],
    ['reasoning_content', chunk({ reasoning_content: 'thinking' })],
    ['reasoning', chunk({ reasoning: 'thinking' })],
    ['a tool call', chunk({ tool_calls: [{ index: 0, id: 'c', function: { name: 'f', arguments: '' } }] })],
    ['a refusal', chunk({ refusal: 'no' })],
    ['a finish reason', chunk({}, {}, 'stop')],
    ['usage', { ...chunk({}), choices: [], usage: { prompt_tokens: 1, completion_tokens: 0, total_tokens: 1 } }],
  ])('is true for %s', (_what, c) => {
    expect(chunkHasContent(c)).toBe(true);
  });
});
