import { ChatAggregator } from '../../common/chunks';
import type { ChatChunk, ChatRequest } from '../../common/chat.types';
import {
  buildResponsesBody,
  DEFAULT_INSTRUCTIONS,
  ResponsesFailedError,
  ResponsesStreamTranslator,
  resetsAtOf,
  UnsupportedRequestError,
} from './responses.mapper';

describe('buildResponsesBody', () => {
  const base: ChatRequest = { model: 'public', messages: [{ role: 'user', content: 'hi' }] };

  it('puts system messages in instructions and drops what the backend refuses', () => {
    const body = buildResponsesBody(
      {
        ...base,
        messages: [
          { role: 'system', content: 'Rule one.' },
          { role: 'developer', content: [{ type: 'text', text: 'Rule two.' }] },
          { role: 'user', content: 'hi' },
        ],
        max_tokens: 10,
        max_completion_tokens: 10,
        temperature: 0.3,
        top_p: 0.9,
        stop: ['x'],
        user: 'u',
        seed: 1,
      },
      'gpt-5.1-codex',
    );
    expect(body).toEqual({
      model: 'gpt-5.1-codex',
      instructions: 'Rule one.\n\nRule two.',
      input: [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'hi' }] }],
      store: false,
      stream: true,
      reasoning: { summary: 'auto' },
      prompt_cache_key: expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/),
    });
  });

  it('always sends instructions; route instructions move system messages into the input', () => {
    expect(buildResponsesBody(base, 'm').instructions).toBe(DEFAULT_INSTRUCTIONS);
    const body = buildResponsesBody(
      {
        ...base,
        messages: [
          { role: 'system', content: 'S' },
          { role: 'user', content: 'hi' },
        ],
      },
      'm',
      { instructions: 'Fixed.' },
    );
    expect(body.instructions).toBe('Fixed.');
    expect(body.input).toEqual([
      { type: 'message', role: 'developer', content: [{ type: 'input_text', text: 'S' }] },
      { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'hi' }] },
    ]);
  });

  it('maps images, assistant turns, tool calls and tool results; an orphan tool result becomes text', () => {
    const body = buildResponsesBody(
      {
        model: 'x',
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'look' },
              { type: 'image_url', image_url: { url: 'data:image/png;base64,AAA', detail: 'low' } },
            ],
          },
          {
            role: 'assistant',
            content: 'Let me check.',
            tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }],
          },
          { role: 'tool', tool_call_id: 'call_1', content: 'result' },
          { role: 'tool', tool_call_id: 'call_unknown', content: 'stray' },
        ],
      },
      'm',
    );
    expect(body.input).toEqual([
      {
        type: 'message',
        role: 'user',
        content: [
          { type: 'input_text', text: 'look' },
          { type: 'input_image', image_url: 'data:image/png;base64,AAA', detail: 'low' },
        ],
      },
      { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Let me check.' }] },
      { type: 'function_call', call_id: 'call_1', name: 'f', arguments: '{"a":1}' },
      { type: 'function_call_output', call_id: 'call_1', output: 'result' },
      { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Result of tool call call_unknown: stray' }] },
    ]);
  });

  it('maps tools, tool_choice, reasoning effort, response_format and the cache key', () => {
    const body = buildResponsesBody(
      {
        ...base,
        tools: [{ type: 'function', function: { name: 'f', description: 'd', parameters: { type: 'object' }, strict: true } }],
        tool_choice: { type: 'function', function: { name: 'f' } },
        parallel_tool_calls: false,
        reasoning_effort: 'high',
        response_format: { type: 'json_schema', json_schema: { name: 'out', schema: { type: 'object' }, strict: true } },
        prompt_cache_key: 'conv-1',
      },
      'm',
      { textVerbosity: 'low', reasoningSummary: 'detailed' },
    );
    expect(body).toMatchObject({
      tools: [{ type: 'function', name: 'f', description: 'd', parameters: { type: 'object' }, strict: true }],
      tool_choice: { type: 'function', name: 'f' },
      parallel_tool_calls: false,
      reasoning: { effort: 'high', summary: 'detailed' },
      text: { format: { type: 'json_schema', name: 'out', schema: { type: 'object' }, strict: true }, verbosity: 'low' },
      prompt_cache_key: 'conv-1',
    });
    expect(buildResponsesBody(base, 'm', { reasoningSummary: 'none' })).not.toHaveProperty('reasoning');
  });

  it('gives every turn of one conversation the same cache key, and another conversation another', () => {
    const turn1 = buildResponsesBody(
      {
        model: 'm',
        messages: [
          { role: 'system', content: 'S' },
          { role: 'user', content: 'first' },
        ],
      },
      'm',
    );
    const turn2 = buildResponsesBody(
      {
        model: 'm',
        messages: [
          { role: 'system', content: 'S' },
          { role: 'user', content: 'first' },
          { role: 'assistant', content: 'a' },
          { role: 'user', content: 'second' },
        ],
      },
      'm',
    );
    const other = buildResponsesBody(
      {
        model: 'm',
        messages: [
          { role: 'system', content: 'S' },
          { role: 'user', content: 'different' },
        ],
      },
      'm',
    );
    expect(turn2.prompt_cache_key).toBe(turn1.prompt_cache_key);
    expect(other.prompt_cache_key).not.toBe(turn1.prompt_cache_key);
    const otherUser = buildResponsesBody(
      {
        model: 'm',
        user: 'someone-else',
        messages: [
          { role: 'system', content: 'S' },
          { role: 'user', content: 'first' },
        ],
      },
      'm',
    );
    expect(otherUser.prompt_cache_key).not.toBe(turn1.prompt_cache_key);
    // A system message added mid-conversation (Claude Code's) stands where it is, as a developer
    // message: the instructions and the cache key stay the conversation's.
    const turn3 = buildResponsesBody(
      {
        model: 'm',
        messages: [
          { role: 'system', content: 'S' },
          { role: 'user', content: 'first' },
          { role: 'system', content: 'Available agent types: general' },
          { role: 'assistant', content: 'a' },
          { role: 'user', content: 'second' },
        ],
      },
      'm',
    );
    expect(turn3.instructions).toBe('S');
    expect(turn3.prompt_cache_key).toBe(turn1.prompt_cache_key);
    expect((turn3.input as unknown[])[1]).toEqual({
      type: 'message',
      role: 'developer',
      content: [{ type: 'input_text', text: 'Available agent types: general' }],
    });
  });

  it('refuses content parts it cannot send, and more than one choice', () => {
    expect(() =>
      buildResponsesBody({ model: 'm', messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: {} }] }] }, 'm'),
    ).toThrow(UnsupportedRequestError);
    expect(() => buildResponsesBody({ ...base, n: 2 }, 'm')).toThrow(/n must be 1/);
    expect(buildResponsesBody({ ...base, n: 1 }, 'm')).not.toHaveProperty('n');
  });

  it("refuses OpenAI's deprecated functions and custom tools as the route's, rather than drop them", () => {
    const legacy = { ...base, functions: [{ name: 'f', parameters: {} }] } as ChatRequest;
    expect(() => buildResponsesBody(legacy, 'm')).toThrow(expect.objectContaining({ param: 'functions', unsupportedByRoute: true }));
    const custom = { ...base, tools: [{ type: 'custom', custom: { name: 'grep' } }] } as unknown as ChatRequest;
    expect(() => buildResponsesBody(custom, 'm')).toThrow(expect.objectContaining({ param: 'tools[0]', unsupportedByRoute: true }));
  });
});

/** Feeds events (type in data, as the backend sends them) and returns the chunks. */
function run(events: Array<Record<string, unknown>>, t = new ResponsesStreamTranslator('gpt-5.1-codex', 'fallback')): ChatChunk[] {
  return events.flatMap((e) => t.handle(String(e.type), e));
}

describe('ResponsesStreamTranslator', () => {
  const created = { type: 'response.created', response: { id: 'resp_1', status: 'in_progress' } };
  const completed = (usage: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) => ({
    type: 'response.completed',
    response: { id: 'resp_1', status: 'completed', usage, ...extra },
  });

  it('turns text and reasoning deltas into chunks with the response id, then finish and usage', () => {
    const chunks = run([
      created,
      { type: 'response.output_item.added', output_index: 0, item: { id: 'rs_1', type: 'reasoning' } },
      { type: 'response.reasoning_summary_text.delta', item_id: 'rs_1', summary_index: 0, delta: 'Think.' },
      { type: 'response.reasoning_summary_text.delta', item_id: 'rs_1', summary_index: 1, delta: 'More.' },
      { type: 'response.output_item.added', output_index: 1, item: { id: 'msg_1', type: 'message' } },
      { type: 'response.output_text.delta', item_id: 'msg_1', output_index: 1, delta: 'Hel' },
      { type: 'response.output_text.delta', item_id: 'msg_1', output_index: 1, delta: 'lo' },
      {
        type: 'response.output_item.done',
        output_index: 1,
        item: { id: 'msg_1', type: 'message', content: [{ type: 'output_text', text: 'Hello' }] },
      },
      completed({
        input_tokens: 100,
        input_tokens_details: { cached_tokens: 60 },
        output_tokens: 30,
        output_tokens_details: { reasoning_tokens: 12 },
        total_tokens: 130,
      }),
    ]);
    expect(chunks.every((c) => c.id === 'resp_1' && c.model === 'gpt-5.1-codex' && c.object === 'chat.completion.chunk')).toBe(true);
    expect(chunks.map((c) => c.choices[0]?.delta)).toEqual([
      { role: 'assistant', content: '' },
      { reasoning_content: 'Think.' },
      { reasoning_content: '\n\nMore.' },
      { content: 'Hel' },
      { content: 'lo' },
      {},
      undefined,
    ]);
    expect(chunks[5].choices[0].finish_reason).toBe('stop');
    expect(chunks[6]).toMatchObject({
      choices: [],
      usage: {
        prompt_tokens: 100,
        completion_tokens: 30,
        total_tokens: 130,
        prompt_tokens_details: { cached_tokens: 60 },
        completion_tokens_details: { reasoning_tokens: 12 },
      },
    });
  });

  it('streams function calls: the call with id and name, argument deltas, and finish_reason tool_calls', () => {
    const chunks = run([
      created,
      {
        type: 'response.output_item.added',
        output_index: 0,
        item: { id: 'fc_1', type: 'function_call', call_id: 'call_a', name: 'lookup', arguments: '' },
      },
      { type: 'response.function_call_arguments.delta', item_id: 'fc_1', output_index: 0, delta: '{"q":' },
      { type: 'response.function_call_arguments.delta', item_id: 'fc_1', output_index: 0, delta: '"x"}' },
      { type: 'response.function_call_arguments.done', item_id: 'fc_1', output_index: 0, arguments: '{"q":"x"}' },
      {
        type: 'response.output_item.done',
        output_index: 0,
        item: { id: 'fc_1', type: 'function_call', call_id: 'call_a', name: 'lookup', arguments: '{"q":"x"}' },
      },
      {
        type: 'response.output_item.added',
        output_index: 1,
        item: { id: 'fc_2', type: 'function_call', call_id: 'call_b', name: 'other' },
      },
      // A call whose arguments come only with the done event.
      {
        type: 'response.output_item.done',
        output_index: 1,
        item: { id: 'fc_2', type: 'function_call', call_id: 'call_b', name: 'other', arguments: '{}' },
      },
      completed(),
    ]);
    const deltas = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
    expect(deltas).toEqual([
      { index: 0, id: 'call_a', type: 'function', function: { name: 'lookup', arguments: '' } },
      { index: 0, function: { arguments: '{"q":' } },
      { index: 0, function: { arguments: '"x"}' } },
      { index: 1, id: 'call_b', type: 'function', function: { name: 'other', arguments: '' } },
      { index: 1, function: { arguments: '{}' } },
    ]);
    expect(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason).toBe('tool_calls');
    const agg = new ChatAggregator();
    chunks.forEach((c) => agg.push(c));
    expect(agg.result().choices[0]).toMatchObject({
      finish_reason: 'tool_calls',
      message: {
        content: null,
        tool_calls: [
          { id: 'call_a', type: 'function', function: { name: 'lookup', arguments: '{"q":"x"}' } },
          { id: 'call_b', type: 'function', function: { name: 'other', arguments: '{}' } },
        ],
      },
    });
  });

  it('delivers a message that arrives only whole', () => {
    const chunks = run([
      created,
      {
        type: 'response.output_item.done',
        output_index: 0,
        item: { id: 'm', type: 'message', content: [{ type: 'output_text', text: 'All at once' }] },
      },
      completed(),
    ]);
    expect(chunks.map((c) => c.choices[0]?.delta?.content).filter(Boolean)).toEqual(['All at once']);
  });

  it('maps an incomplete response to length or content_filter', () => {
    const inc = (reason: string) =>
      run([created, { type: 'response.incomplete', response: { id: 'r', status: 'incomplete', incomplete_details: { reason } } }]).find(
        (c) => c.choices[0]?.finish_reason,
      )?.choices[0].finish_reason;
    expect(inc('max_output_tokens')).toBe('length');
    expect(inc('content_filter')).toBe('content_filter');
  });

  it('throws the backend failure on response.failed and error events; says when it completed', () => {
    const t = new ResponsesStreamTranslator('m', 'f');
    run([created], t);
    expect(t.completed).toBe(false);
    let caught: unknown;
    try {
      t.handle('response.failed', {
        type: 'response.failed',
        response: { error: { code: 'rate_limit_exceeded', message: 'Please try again in 20s.' } },
      });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(ResponsesFailedError);
    expect((caught as ResponsesFailedError).failure).toEqual({
      code: 'rate_limit_exceeded',
      type: undefined,
      message: 'Please try again in 20s.',
      resetsAt: undefined,
    });
    expect(() => t.handle('error', { type: 'error', code: 'server_is_overloaded', message: 'Overloaded' })).toThrow('Overloaded');
    const done = new ResponsesStreamTranslator('m', 'f');
    run([created, completed()], done);
    expect(done.completed).toBe(true);
  });

  it('reads when a usage limit resets, as resets_at or as resets_in_seconds', () => {
    expect(resetsAtOf({ resets_at: 1_800_000_000 })).toBe(1_800_000_000);
    expect(resetsAtOf({ resets_in_seconds: 9000 }, 1_000_000_000_000)).toBe(1_000_009_000);
    expect(resetsAtOf({ resets_in_seconds: -5 })).toBeUndefined();
    expect(resetsAtOf({})).toBeUndefined();
  });

  it('reads the usage window from codex.rate_limits', () => {
    const t = new ResponsesStreamTranslator('m', 'f');
    t.handle('codex.rate_limits', {
      type: 'codex.rate_limits',
      rate_limits: { primary: { used_percent: 40 }, secondary: { used_percent: 75.5 } },
    });
    expect(t.rateLimit).toEqual({ usedPercent: 75.5 });
  });

  it('ignores events it does not know', () => {
    expect(run([created, { type: 'response.content_part.added', part: {} }, { type: 'response.something_new' }]).length).toBe(1);
  });
});
