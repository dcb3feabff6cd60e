import { InvalidRequestError } from '../../common/errors';
import { betasOf, validateMessagesRequest } from './messages.validator';

describe('validateMessagesRequest', () => {
  const ok = { model: 'm', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] };
  const problem = (body: unknown, countOnly = false) => {
    try {
      validateMessagesRequest(body, countOnly);
      return undefined;
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidRequestError);
      return (err as InvalidRequestError).message;
    }
  };

  it('passes a valid body through, unknown fields included', () => {
    const body = { ...ok, service_tier: 'auto', thinking: { type: 'enabled', budget_tokens: 5 } };
    expect(validateMessagesRequest(body)).toBe(body);
    expect(problem({ model: 'm', messages: [{ role: 'user', content: 'x' }] }, true)).toBeUndefined();
  });

  it("takes a message thread's later turn without a new message (a paused turn resumed), and checks the thread's shape", () => {
    const thread = { type: 'continue', previous_message_id: 'msg_1' };
    expect(problem({ ...ok, messages: [], thread })).toBeUndefined();
    expect(problem({ ...ok, messages: [], thread: { type: 'create' } })).toBe('messages: at least one message is required');
    expect(problem({ ...ok, thread: { type: 'fork' } })).toMatch(/^thread\.type:/);
    expect(problem({ ...ok, thread: { type: 'continue' } })).toBe('thread.previous_message_id: Field required');
  });

  it('takes a system message after the first turn (mid-conversation instructions), with text', () => {
    const user = { role: 'user', content: 'hi' };
    expect(problem({ ...ok, messages: [user, { role: 'system', content: 'be terse' }] })).toBeUndefined();
    expect(problem({ ...ok, messages: [user, { role: 'system', content: [{ type: 'text', text: 'be terse' }] }] })).toBeUndefined();
    expect(problem({ ...ok, messages: [{ role: 'system', content: 'x' }, user] })).toMatch(
      /^messages\.0\.role: a system message cannot be the first/,
    );
    expect(problem({ ...ok, messages: [user, { role: 'system', content: [{ type: 'image', source: {} }] }] })).toBe(
      'messages.1.content.0.type: "image" blocks are not allowed in a system message',
    );
    expect(problem({ ...ok, messages: [user, { role: 'system', content: [{ type: 'text' }] }] })).toBe(
      'messages.1.content.0.text: Input should be a valid string',
    );
  });

  it('refuses empty turns, tool calls without input and a tool result error flag that is not a boolean', () => {
    const user = { role: 'user', content: 'hi' };
    for (const content of [[], '']) {
      expect(problem({ ...ok, messages: [{ role: 'user', content }] })).toBe(
        'messages.0: all messages must have non-empty content except for the optional final assistant message',
      );
      expect(problem({ ...ok, messages: [user, { role: 'system', content }] })).toMatch(/^messages\.1: all messages must have non-empty/);
    }
    // An assistant turn may be empty: last (a prefill of nothing), and before a user turn (the
    // gateway answers `content: []` itself when a reasoning model is cut off, and the client sends it back).
    expect(problem({ ...ok, messages: [user, { role: 'assistant', content: [] }] })).toBeUndefined();
    expect(problem({ ...ok, messages: [user, { role: 'assistant', content: [] }, { role: 'user', content: 'go on' }] })).toBeUndefined();
    const call = { type: 'tool_use', id: 'toolu_1', name: 'f' };
    expect(problem({ ...ok, messages: [user, { role: 'assistant', content: [call] }] })).toBe('messages.1.content.0.input: Field required');
    expect(problem({ ...ok, messages: [user, { role: 'assistant', content: [{ ...call, input: {} }] }] })).toBeUndefined();
    const result = { type: 'tool_result', tool_use_id: 'toolu_1', content: 'a', is_error: 'yes' };
    expect(problem({ ...ok, messages: [{ role: 'user', content: [result] }] })).toBe(
      'messages.0.content.0.is_error: Input should be a valid boolean',
    );
  });

  it('names the first bad field as Anthropic does', () => {
    expect(problem([])).toMatch(/^body:/);
    expect(problem({ max_tokens: 1, messages: [] })).toBe('model: Field required');
    expect(problem({ model: 'm', messages: [] })).toBe('max_tokens: Field required');
    expect(problem({ ...ok, max_tokens: 0 })).toBe('max_tokens: Input should be greater than or equal to 1');
    expect(problem({ ...ok, messages: [] })).toBe('messages: at least one message is required');
    expect(problem({ ...ok, messages: [{ role: 'tool', content: 'x' }] })).toBe(
      "messages.0.role: Input should be 'user', 'assistant' or 'system'",
    );
    expect(problem({ ...ok, messages: [{ role: 'user', content: [{ type: 'text' }] }] })).toBe(
      'messages.0.content.0.text: Input should be a valid string',
    );
    expect(problem({ ...ok, messages: [{ role: 'assistant', content: [{ type: 'tool_result', tool_use_id: 'a' }] }] })).toMatch(
      /^messages\.0\.content\.0\.type:/,
    );
    expect(problem({ ...ok, temperature: 2 })).toBe('temperature: Input should be less than or equal to 1');
    expect(problem({ ...ok, tools: [{ name: 'f' }] })).toBe('tools.0.input_schema: Field required');
    expect(problem({ ...ok, tool_choice: { type: 'tool' } })).toBe('tool_choice.name: Field required');
    expect(problem({ ...ok, thinking: { type: 'enabled', budget_tokens: 10 } })).toBe(
      'max_tokens: must be greater than thinking.budget_tokens',
    );
    expect(problem({ ...ok, system: [{ type: 'image' }] })).toMatch(/^system\.0:/);
  });

  it("takes a thinking budget over max_tokens with interleaved thinking, where it is the whole turn's", () => {
    const body = { ...ok, max_tokens: 2000, thinking: { type: 'enabled', budget_tokens: 5000 } };
    expect(() => validateMessagesRequest(body, false, ['interleaved-thinking-2025-05-14'])).not.toThrow();
    expect(() => validateMessagesRequest(body, false, ['oauth-2025-04-20'])).toThrow(/must be greater than thinking.budget_tokens/);
  });

  it('refuses a tool_choice no answer can satisfy, unless a toolset or MCP server offers tools the request does not list', () => {
    const tools = [{ name: 'get_weather', input_schema: { type: 'object' } }];
    expect(problem({ ...ok, tool_choice: { type: 'any' } })).toBe("tool_choice: Input type 'any' is only allowed when tools are specified");
    expect(problem({ ...ok, tools, tool_choice: { type: 'tool', name: 'get_time' } })).toBe(
      "tool_choice.name: Tool 'get_time' is not one of the tools in tools",
    );
    expect(problem({ ...ok, tools, tool_choice: { type: 'tool', name: 'get_weather' } })).toBeUndefined();
    expect(problem({ ...ok, tools, tool_choice: { type: 'any' } })).toBeUndefined();
    expect(problem({ ...ok, tool_choice: { type: 'auto' } })).toBeUndefined();
    expect(problem({ ...ok, tool_choice: { type: 'none' } })).toBeUndefined();
    const mcp = { mcp_servers: [{ type: 'url', url: 'https://mcp.example/sse', name: 'docs' }] };
    expect(problem({ ...ok, ...mcp, tool_choice: { type: 'tool', name: 'search_docs' } })).toBeUndefined();
    const toolset = [{ type: 'mcp_toolset', mcp_server_name: 'docs' }];
    expect(problem({ ...ok, ...mcp, tools: toolset, tool_choice: { type: 'any' } })).toBeUndefined();
  });

  it('says what is wrong with a field that is there but of the wrong type, not that it is missing', () => {
    expect(problem({ ...ok, tools: [{ name: 5, input_schema: {} }] })).toBe('tools.0.name: Input should be a valid string');
    expect(problem({ ...ok, tools: [{ type: { toString: 1 }, name: 'x' }] })).toBe('tools.0.type: Input should be a valid string');
    expect(problem({ ...ok, tools: [{ type: [], name: 'x' }] })).toBe('tools.0.type: Input should be a valid string');
    expect(problem({ ...ok, tools: [{ name: '', input_schema: {} }] })).toBe('tools.0.name: String should have at least 1 character');
    expect(problem({ ...ok, tools: [{ name: 'f', input_schema: 'x' }] })).toBe('tools.0.input_schema: Input should be an object');
    expect(problem({ ...ok, tool_choice: { type: 'tool', name: 1 } })).toBe('tool_choice.name: Input should be a valid string');
    expect(problem({ ...ok, thinking: 5 })).toBe('thinking: Input should be an object');
    expect(problem({ ...ok, thinking: {} })).toBe('thinking.type: Field required');
    expect(problem({ ...ok, thinking: { type: 'enabled' } })).toBe('thinking.budget_tokens: Field required');
    expect(problem({ ...ok, thinking: { type: 'enabled', budget_tokens: 'x' } })).toBe(
      'thinking.budget_tokens: Input should be a valid integer',
    );
    const block = (b: Record<string, unknown>) => problem({ ...ok, messages: [{ role: 'assistant', content: [b] }] });
    expect(block({ type: 'tool_use', id: 7, name: 'f' })).toBe('messages.0.content.0.id: Input should be a valid string');
    expect(block({ type: 'thinking' })).toBe('messages.0.content.0.thinking: Field required');
    expect(block({ type: 'thinking', thinking: '', signature: 's' })).toBeUndefined();
    expect(problem({ ...ok, messages: [{ role: 'user', content: [{ type: 'image', source: 'x' }] }] })).toBe(
      'messages.0.content.0.source: Input should be an object',
    );
  });

  it('checks the blocks inside a tool result, and sources by their type', () => {
    const result = (content: unknown) => ({
      ...ok,
      messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'a', content }] }],
    });
    expect(
      problem(
        result([
          { type: 'text', text: 'fine' },
          { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AA==' } },
        ]),
      ),
    ).toBeUndefined();
    expect(problem(result([null]))).toBe('messages.0.content.0.content.0: Input should be an object');
    expect(problem(result([1]))).toBe('messages.0.content.0.content.0: Input should be an object');
    expect(problem(result([{}]))).toBe('messages.0.content.0.content.0.type: Field required');
    expect(problem(result([{ type: 'tool_use', id: 'x', name: 'y' }]))).toMatch(
      /^messages\.0\.content\.0\.content\.0\.type: "tool_use" blocks are not allowed in a tool result/,
    );
    expect(problem(result([{ type: 'text', text: 7 }]))).toBe('messages.0.content.0.content.0.text: Input should be a valid string');
    const doc = (source: unknown) => ({ ...ok, messages: [{ role: 'user', content: [{ type: 'document', source }] }] });
    expect(problem(doc({ type: 'text', media_type: 'text/plain', data: { nested: true } }))).toBe(
      'messages.0.content.0.source.data: Input should be a valid string',
    );
    expect(problem(doc({ type: 'url', url: 5 }))).toBe('messages.0.content.0.source.url: Input should be a valid string');
    expect(problem(doc({ type: 'url', url: 'https://example.com/a.pdf' }))).toBeUndefined();
    expect(problem(doc({ type: 'base64', media_type: 'application/pdf', data: 'JVBE' }))).toBeUndefined();
    expect(problem(doc({ type: 'base64', media_type: 'image/png', data: 'AA==' }))).toBe(
      "messages.0.content.0.source.media_type: Input should be 'application/pdf'",
    );
    const image = (source: unknown) => ({ ...ok, messages: [{ role: 'user', content: [{ type: 'image', source }] }] });
    for (const source of [
      { type: 'base64', data: 'AAAA' },
      { type: 'base64', media_type: 'text/plain', data: 'AAAA' },
    ])
      expect(problem(image(source))).toBe(
        "messages.0.content.0.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif', 'image/webp'",
      );
    expect(problem({ ...ok, max_tokens: 1e308 })).toBe('max_tokens: Input should be less than or equal to 2147483647');
  });

  it('passes block and tool types it does not know to Claude routes, and refuses a block where it cannot be', () => {
    const turns = [
      { role: 'user', content: 'run it' },
      {
        role: 'assistant',
        content: [
          { type: 'server_tool_use', id: 'srvtoolu_1', name: 'bash_code_execution', input: { command: 'ls' } },
          { type: 'bash_code_execution_tool_result', tool_use_id: 'srvtoolu_1', content: { type: 'bash_code_execution_result' } },
          { type: 'compaction', content: 'summary' },
        ],
      },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 't', content: [{ type: 'tool_reference', tool_name: 'a' }] }] },
    ];
    expect(problem({ ...ok, messages: turns, tools: [{ type: 'mcp_toolset', mcp_server_name: 'ex' }] })).toBeUndefined();
    expect(problem({ ...ok, tools: [{ type: 'custom', input_schema: {} }] })).toBe('tools.0.name: Field required');
    expect(problem({ ...ok, tools: [{ type: 'web_search_20250305', name: 7 }] })).toBe('tools.0.name: Input should be a valid string');
    expect(problem({ ...ok, messages: [{ role: 'user', content: [{ type: 'tool_use', id: 'a', name: 'f' }] }] })).toBe(
      'messages.0.content.0.type: "tool_use" blocks are not allowed in a user message',
    );
  });

  it('reads betas from one or several headers', () => {
    expect(betasOf('a, b,,c')).toEqual(['a', 'b', 'c']);
    expect(betasOf(['a', 'b,c'])).toEqual(['a', 'b', 'c']);
    expect(betasOf(undefined)).toEqual([]);
  });
});
