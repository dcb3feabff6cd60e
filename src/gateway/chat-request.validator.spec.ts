import { InvalidRequestError } from '../common/errors';
import { validateChatRequest } from './chat-request.validator';

const minimal = () => ({ model: 'm', messages: [{ role: 'user', content: 'hi' }] });

/** The error validateChatRequest throws for `body`. */
function rejection(body: unknown): InvalidRequestError {
  try {
    validateChatRequest(body);
  } catch (err) {
    if (err instanceof InvalidRequestError) return err;
    throw err;
  }
  throw new Error('expected the request to be rejected');
}

describe('validateChatRequest: valid requests', () => {
  it('accepts a minimal request and returns it as is', () => {
    const body = minimal();
    expect(validateChatRequest(body)).toBe(body);
  });

  it('accepts a full request with vLLM extras and unknown fields', () => {
    const body = {
      model: 'acme/chat',
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'developer', content: 'json only' },
        {
          role: 'user',
          name: 'ann',
          content: [
            { type: 'text', text: 'what is this?' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA', detail: 'low' } },
            { type: 'image_url', image_url: 'https://example.com/cat.png' },
            { type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } },
          ],
        },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'look', arguments: '{}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: 'a cat' },
        { role: 'assistant', content: 'A cat.', reasoning_content: 'it looks like one' },
        { role: 'user', content: 'thanks' },
      ],
      stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: false },
      temperature: 0.7,
      top_p: 1,
      n: 1,
      max_tokens: 256,
      max_completion_tokens: 256,
      stop: ['\n\n', 'END'],
      seed: 42,
      frequency_penalty: -0.5,
      presence_penalty: 2,
      logprobs: true,
      top_logprobs: 5,
      logit_bias: { '50256': -100 },
      user: 'u-1',
      parallel_tool_calls: false,
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: {} } },
      tools: [{ type: 'function', function: { name: 'look', description: 'looks', parameters: { type: 'object' } } }],
      tool_choice: { type: 'function', function: { name: 'look' } },
      top_k: 40,
      min_p: 0.05,
      repetition_penalty: 1.1,
      min_tokens: 1,
      chat_template_kwargs: { enable_thinking: false },
      provider: { order: ['vllm'] },
      transforms: ['middle-out'],
      plugins: [{ id: 'web' }],
      route: 'fallback',
      usage: { include: true },
      session_id: 'conversation-7',
      debug: { echo_upstream_body: false },
      modalities: ['text', 'audio'],
      audio: { voice: 'alloy', format: 'wav' },
      prediction: { type: 'content', content: 'the old file' },
      web_search_options: { search_context_size: 'low' },
      metadata: { team: 'search', tags: ['a'] },
      store: false,
      service_tier: 'auto',
      verbosity: 'low',
      prompt_cache_key: 'conv-7',
      safety_identifier: 'hash-1',
      some_future_field: [1, 2, 3],
    };
    expect(validateChatRequest(body)).toBe(body);
  });

  it('treats null optional parameters as not set', () => {
    expect(() =>
      validateChatRequest({ ...minimal(), temperature: null, stop: null, tools: null, tool_choice: null, stream_options: null }),
    ).not.toThrow();
  });

  it("takes a message's null name and a function's null parameters as not set, as the SDK's types allow", () => {
    const body = validateChatRequest({
      model: 'm',
      messages: [{ role: 'user', content: 'x', name: null }],
      tools: [{ type: 'function', function: { name: 'f', parameters: null } }],
    });
    expect(body.messages[0]).toEqual({ role: 'user', content: 'x' });
    expect(body.tools![0]).toEqual({ type: 'function', function: { name: 'f' } });
  });

  it("takes OpenAI's custom tools, their calls in the history, and allowed_tools; says which other kinds it does not support", () => {
    expect(() =>
      validateChatRequest({
        ...minimal(),
        tools: [{ type: 'custom', custom: { name: 'grep', format: { type: 'text' } } }],
        tool_choice: { type: 'allowed_tools', allowed_tools: { mode: 'auto', tools: [{ type: 'custom', custom: { name: 'grep' } }] } },
      }),
    ).not.toThrow();
    expect(() =>
      validateChatRequest({
        model: 'm',
        tools: [{ type: 'custom', custom: { name: 'grep' } }],
        tool_choice: { type: 'custom', custom: { name: 'grep' } },
        messages: [
          { role: 'user', content: 'x' },
          { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'custom', custom: { name: 'grep', input: 'foo' } }] },
          { role: 'tool', tool_call_id: 'c1', content: 'found' },
        ],
      }),
    ).not.toThrow();
    expect(() => validateChatRequest({ ...minimal(), tools: [{ type: 'custom', custom: {} }] })).toThrow('"tools[0].custom.name"');
    expect(() =>
      validateChatRequest({ ...minimal(), tool_choice: { type: 'allowed_tools', allowed_tools: { mode: 'always', tools: [] } } }),
    ).toThrow('"tool_choice.allowed_tools.mode"');
    expect(() => validateChatRequest({ ...minimal(), tool_choice: { type: 'telepathy' } })).toThrow(
      'Invalid request: "tool_choice" of type "telepathy" is not supported',
    );
  });

  it.each(['none', 'auto', 'required'])('accepts tool_choice "%s"', (tool_choice) => {
    const tools = [{ type: 'function', function: { name: 'look' } }];
    expect(() => validateChatRequest({ ...minimal(), tools, tool_choice })).not.toThrow();
  });

  it('refuses a tool_choice no answer can satisfy: a call demanded with no tools, or a tool named that is not offered', () => {
    const look = [{ type: 'function', function: { name: 'look' } }];
    const named = (name: string) => ({ type: 'function', function: { name } });
    expect(() => validateChatRequest({ ...minimal(), tool_choice: 'required' })).toThrow(
      'Invalid request: "tool_choice" is only allowed when tools are specified',
    );
    expect(() => validateChatRequest({ ...minimal(), tools: [], tool_choice: named('look') })).toThrow('"tool_choice"');
    expect(() => validateChatRequest({ ...minimal(), tools: look, tool_choice: named('peek') })).toThrow(
      'Invalid request: "tool_choice.function.name" names "peek", which is not a function tool in tools',
    );
    expect(() => validateChatRequest({ ...minimal(), tools: look, tool_choice: { type: 'custom', custom: { name: 'look' } } })).toThrow(
      '"tool_choice.custom.name"',
    );
    // Leaving tool use to the model, or forbidding it, asks nothing of the tools.
    expect(() => validateChatRequest({ ...minimal(), tool_choice: 'none' })).not.toThrow();
    expect(() => validateChatRequest({ ...minimal(), tool_choice: 'auto' })).not.toThrow();
  });

  it("refuses OpenRouter's own options of the wrong shape, naming them", () => {
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ transforms: 'middle-out' }, 'transforms'],
      [{ plugins: {} }, 'plugins'],
      [{ plugins: ['web'] }, 'plugins'],
      [{ route: 5 }, 'route'],
      [{ usage: true }, 'usage'],
      [{ usage: { include: 'yes' } }, 'usage.include'],
      [{ session_id: 7 }, 'session_id'],
      [{ session_id: 'x'.repeat(129) }, 'session_id'],
      [{ debug: { echo_upstream_body: 1 } }, 'debug.echo_upstream_body'],
    ];
    for (const [extra, param] of bad) expect(rejection({ ...minimal(), ...extra }).param).toBe(param);
  });

  it('accepts top_k -1 (disabled) and a plain string stop', () => {
    expect(() => validateChatRequest({ ...minimal(), top_k: -1, stop: 'END' })).not.toThrow();
  });
});

describe('validateChatRequest: invalid requests', () => {
  const withMessages = (...messages: unknown[]) => ({ model: 'm', messages });

  it.each<[string, unknown, string]>([
    ['not an object', [1, 2], 'body'],
    ['null', null, 'body'],
    ['no model', { messages: [{ role: 'user', content: 'hi' }] }, 'model'],
    ['an empty model', { ...minimal(), model: '  ' }, 'model'],
    ['a numeric model', { ...minimal(), model: 7 }, 'model'],
    ['no messages', { model: 'm' }, 'messages'],
    ['messages not an array', { model: 'm', messages: 'hi' }, 'messages'],
    ['no message at all', { model: 'm', messages: [] }, 'messages'],
  ])('rejects %s', (_what, body, param) => {
    const err = rejection(body);
    expect(err.param).toBe(param);
    expect(err.status).toBe(400);
  });

  it.each<[string, unknown[], string]>([
    ['a message that is not an object', [{ role: 'user', content: 'a' }, 'hello'], 'messages[1]'],
    ['a message without role', [{ content: 'a' }], 'messages[0].role'],
    ['an unknown role', [{ role: 'robot', content: 'a' }], 'messages[0].role'],
    ['a user message without content', [{ role: 'user', content: 'a' }, { role: 'user' }], 'messages[1].content'],
    [
      'numeric content',
      [
        { role: 'system', content: 'a' },
        { role: 'user', content: 42 },
      ],
      'messages[1].content',
    ],
    ['a content part without type', [{ role: 'user', content: [{ text: 'a' }] }], 'messages[0].content[0]'],
    [
      'a text part without text',
      [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text' }] }],
      'messages[0].content[1].text',
    ],
    [
      'an image part without url',
      [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }],
      'messages[0].content[0].image_url.url',
    ],
    ['a numeric name', [{ role: 'user', content: 'a', name: 1 }], 'messages[0].name'],
    [
      'a tool message without tool_call_id',
      [
        { role: 'user', content: 'a' },
        { role: 'tool', content: 'r' },
      ],
      'messages[1].tool_call_id',
    ],
    ['tool_calls that are not a list', [{ role: 'assistant', content: null, tool_calls: {} }], 'messages[0].tool_calls'],
    [
      'a tool call without function name',
      [
        { role: 'user', content: 'a' },
        { role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { arguments: '{}' } }] },
      ],
      'messages[1].tool_calls[0].function.name',
    ],
    [
      'tool call arguments as an object',
      [{ role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: {} } }] }],
      'messages[0].tool_calls[0].function.arguments',
    ],
  ])('rejects %s', (_what, messages, param) => {
    const err = rejection(withMessages(...messages));
    expect(err.param).toBe(param);
    expect(err.status).toBe(400);
    expect(err.message).toContain(`"${param}"`);
  });

  it.each<[string, unknown]>([
    ['temperature', -0.1],
    ['temperature', '0.7'],
    ['top_p', 1.5],
    ['n', 0],
    ['n', 1.5],
    ['max_tokens', 0],
    ['max_completion_tokens', 2.5],
    ['stop', ['a', 1]],
    ['stop', 5],
    ['seed', 'x'],
    ['frequency_penalty', 2.5],
    ['presence_penalty', -3],
    ['logprobs', 'yes'],
    ['top_logprobs', 21],
    ['logit_bias', [1]],
    ['logit_bias', { '50256': 'ban' }],
    ['logit_bias', { '50256': -101 }],
    ['modalities', 'audio'],
    ['audio', 'alloy'],
    ['prediction', 'the old file'],
    ['web_search_options', true],
    ['metadata', 'tag'],
    ['store', 'yes'],
    ['service_tier', 1],
    ['verbosity', 2],
    ['prompt_cache_key', 7],
    ['safety_identifier', {}],
    ['user', 5],
    ['stream', 'true'],
    ['stream_options', true],
    ['parallel_tool_calls', 1],
    ['response_format', 'json'],
    ['top_k', 1.5],
    ['top_k', -2],
    ['min_p', 1.5],
    ['repetition_penalty', -1],
    ['min_tokens', -1],
  ])('rejects %s = %p', (param, value) => {
    const err = rejection({ ...minimal(), [param]: value });
    expect(err.param).toBe(param);
    expect(err.status).toBe(400);
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['include_usage that is not a boolean', { stream: true, stream_options: { include_usage: 'yes' } }, 'stream_options.include_usage'],
    ['response_format without type', { response_format: { json_schema: {} } }, 'response_format.type'],
    ['tools that are not a list', { tools: { type: 'function' } }, 'tools'],
    ['a tool of another type', { tools: [{ type: 'retrieval', function: { name: 'f' } }] }, 'tools[0].type'],
    ['a tool without function', { tools: [{ type: 'function' }] }, 'tools[0].function'],
    ['a tool with an empty name', { tools: [{ type: 'function', function: { name: '' } }] }, 'tools[0].function.name'],
    [
      'a second tool without name',
      {
        tools: [
          { type: 'function', function: { name: 'a' } },
          { type: 'function', function: {} },
        ],
      },
      'tools[1].function.name',
    ],
    [
      'tool parameters that are not a schema',
      { tools: [{ type: 'function', function: { name: 'f', parameters: '{}' } }] },
      'tools[0].function.parameters',
    ],
    ['an unknown tool_choice', { tool_choice: 'always' }, 'tool_choice'],
    ['a reasoning_effort that is not a string', { reasoning_effort: 5 }, 'reasoning_effort'],
    ['a reasoning that is not an object', { reasoning: 'high' }, 'reasoning'],
    ['a reasoning effort that is an object', { reasoning: { effort: { toString: 1 } } }, 'reasoning.effort'],
    ['a reasoning budget past any number', { reasoning: { max_tokens: Infinity } }, 'reasoning.max_tokens'],
    ['a fractional reasoning budget', { reasoning: { max_tokens: 1.5 } }, 'reasoning.max_tokens'],
    ['a reasoning exclude that is not a boolean', { reasoning: { exclude: 'yes' } }, 'reasoning.exclude'],
    ['a thinking that is not an object', { thinking: true }, 'thinking'],
    ['a tool_choice without function name', { tool_choice: { type: 'function', function: {} } }, 'tool_choice'],
  ])('rejects %s', (_what, extra, param) => {
    const err = rejection({ ...minimal(), ...extra });
    expect(err.param).toBe(param);
    expect(err.status).toBe(400);
  });

  it('answers with an OpenAI error body that names the field', () => {
    const err = rejection({ ...minimal(), temperature: -1 });
    expect(err.toBody()).toEqual({
      error: {
        message: expect.stringContaining('"temperature" must be at least 0'),
        type: 'invalid_request_error',
        param: 'temperature',
        code: 'invalid_request',
      },
    });
  });
});
