import type { ChatChunk, ChatResponse } from '../../common/chat.types';
import { UpstreamError } from '../../common/errors';
import { ChatToMessagesStream, chatToMessage, messagesToChat, messagesUsage, stopReason, toolUseIdsOf } from './messages.mapper';

describe('messagesToChat', () => {
  it("keeps a turn that was only Claude's signed reasoning for OpenRouter, which wants it back", () => {
    const body = {
      max_tokens: 10,
      messages: [
        { role: 'user', content: 'q' },
        { role: 'assistant', content: [{ type: 'thinking', thinking: 'signed', signature: 'sig' }] },
        { role: 'user', content: 'go on' },
      ],
    };
    expect(messagesToChat(body, 'm').messages).toEqual([{ role: 'user', content: 'q\ngo on' }]);
    const rich = messagesToChat(body, 'm', true).messages;
    expect(rich.map((m) => m.role)).toEqual(['user', 'assistant', 'user']);
    expect(rich[1].reasoning_details).toHaveLength(1);
  });

  it("keeps OpenRouter's extras only in the form for OpenRouter: cache markers, signed reasoning as reasoning_details", () => {
    const body = {
      max_tokens: 10,
      cache_control: { type: 'ephemeral' },
      system: [
        { type: 'text', text: 'A' },
        { type: 'text', text: 'B', cache_control: { type: 'ephemeral' } },
      ],
      messages: [
        {
          role: 'assistant',
          content: [
            { type: 'thinking', thinking: 'signed', signature: 'sig' },
            { type: 'thinking', thinking: 'unsigned', signature: '' },
            { type: 'redacted_thinking', data: 'ENC' },
            { type: 'text', text: 'one' },
            { type: 'text', text: 'two', cache_control: { type: 'ephemeral' } },
          ],
        },
        { role: 'user', content: [{ type: 'text', text: 'q', cache_control: { type: 'ephemeral' } }] },
      ],
    };
    const plain = messagesToChat(body, 'm');
    expect(JSON.stringify(plain)).not.toMatch(/cache_control|reasoning_details/);
    expect(plain.messages[0]).toEqual({ role: 'system', content: 'A\n\nB' });
    expect(plain.messages[1].content).toBe('one\ntwo');
    expect(plain.messages[2]).toEqual({ role: 'user', content: 'q' });
    const rich = messagesToChat(body, 'm', true);
    expect(rich.cache_control).toEqual({ type: 'ephemeral' });
    expect(rich.messages[0].content).toEqual([
      { type: 'text', text: 'A' },
      { type: 'text', text: 'B', cache_control: { type: 'ephemeral' } },
    ]);
    expect(rich.messages[1]).toMatchObject({
      content: [
        { type: 'text', text: 'one' },
        { type: 'text', text: 'two', cache_control: { type: 'ephemeral' } },
      ],
      // Unsigned thinking (another model's) has no Claude form to go back in.
      reasoning_details: [
        { type: 'reasoning.text', text: 'signed', signature: 'sig', format: 'anthropic-claude-v1', index: 0 },
        { type: 'reasoning.encrypted', data: 'ENC', format: 'anthropic-claude-v1', index: 1 },
      ],
    });
    expect(rich.messages[2].content).toEqual([{ type: 'text', text: 'q', cache_control: { type: 'ephemeral' } }]);
  });

  it("leaves Claude Code's attribution line out of another server's system prompt, where it spoiled the prompt cache", () => {
    const system = [
      { type: 'text', text: 'x-anthropic-billing-header: cc_version=2.1.197.3bb; cc_entrypoint=sdk-cli;' },
      { type: 'text', text: 'You are Claude Code.', cache_control: { type: 'ephemeral' } },
      { type: 'text', text: 'Tools follow.' },
    ];
    const body = { model: 'x', max_tokens: 10, system, messages: [{ role: 'user', content: 'hi' }] };
    expect(messagesToChat(body, 'x').messages[0]).toEqual({ role: 'system', content: 'You are Claude Code.\n\nTools follow.' });
    // Only the line goes: a block a client merged keeps the prompt after it; so does a string.
    const merged = 'x-anthropic-billing-header: cc_version=2.1.197.3bb;\nYou are Claude Code. Never delete files.';
    for (const s of [[{ type: 'text', text: merged }], merged])
      expect(messagesToChat({ ...body, system: s }, 'x').messages[0]).toEqual({
        role: 'system',
        content: 'You are Claude Code. Never delete files.',
      });
    // The line alone: no system message at all.
    expect(messagesToChat({ ...body, system: [system[0]] }, 'x').messages[0]).toEqual({ role: 'user', content: 'hi' });
  });

  it('maps system, turns, tool use and tool results, images and parameters', () => {
    const chat = messagesToChat(
      {
        model: 'x',
        max_tokens: 100,
        system: [
          { type: 'text', text: 'A' },
          { type: 'text', text: 'B', cache_control: { type: 'ephemeral' } },
        ],
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'look' },
              { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AAA' } },
            ],
          },
          {
            role: 'assistant',
            content: [
              { type: 'thinking', thinking: 'hm', signature: 'sig' },
              { type: 'text', text: 'calling' },
              { type: 'tool_use', id: 'toolu_1', name: 'f', input: { a: 1 } },
            ],
          },
          {
            role: 'user',
            content: [
              { type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'text', text: 'ok' }], is_error: true },
              { type: 'text', text: 'next?' },
            ],
          },
        ],
        tools: [{ name: 'f', description: 'F', input_schema: { type: 'object', properties: {} } }],
        tool_choice: { type: 'any', disable_parallel_tool_use: true },
        stop_sequences: ['END'],
        temperature: 0.2,
        top_k: 4,
        metadata: { user_id: 'u' },
        thinking: { type: 'enabled', budget_tokens: 4000 },
        stream: true,
      },
      'public/model',
    );
    expect(chat).toEqual({
      model: 'public/model',
      messages: [
        { role: 'system', content: 'A\n\nB' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'look' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,AAA' } },
          ],
        },
        {
          role: 'assistant',
          content: 'calling',
          tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }],
          reasoning_content: 'hm',
          thinking_blocks: [{ type: 'thinking', thinking: 'hm', signature: 'sig' }],
        },
        { role: 'tool', tool_call_id: 'toolu_1', content: 'Error: ok' },
        { role: 'user', content: 'next?' },
      ],
      max_tokens: 100,
      temperature: 0.2,
      top_k: 4,
      stop: ['END'],
      user: 'u',
      tools: [{ type: 'function', function: { name: 'f', description: 'F', parameters: { type: 'object', properties: {} } } }],
      tool_choice: 'required',
      parallel_tool_calls: false,
      reasoning_effort: 'medium',
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it.each([
    [{ type: 'adaptive' }, undefined, 'high'],
    [{ type: 'adaptive' }, { effort: 'low' }, 'low'],
    [{ type: 'adaptive' }, { effort: 'medium' }, 'medium'],
    [{ type: 'adaptive' }, { effort: 'max' }, 'high'],
    [{ type: 'enabled', budget_tokens: 1024 }, undefined, 'low'],
    [{ type: 'disabled' }, { effort: 'low' }, undefined],
  ])('asks other backends to reason for thinking %j with output_config %j: %s', (thinking, outputConfig, effort) => {
    const chat = messagesToChat(
      { max_tokens: 5, messages: [{ role: 'user', content: 'hi' }], thinking, ...(outputConfig ? { output_config: outputConfig } : {}) },
      'm',
    );
    expect(chat.reasoning_effort).toBe(effort);
  });

  it("keeps separate text blocks apart as lines (Claude Code's system reminders, multi-part tool output)", () => {
    const chat = messagesToChat(
      {
        max_tokens: 5,
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: '<system-reminder>ctx</system-reminder>' },
              { type: 'text', text: 'Fix the bug' },
            ],
          },
          {
            role: 'assistant',
            content: [
              { type: 'text', text: 'Looking.' },
              { type: 'text', text: 'Reading the file.' },
              { type: 'tool_use', id: 'toolu_1', name: 'read', input: {} },
            ],
          },
          {
            role: 'user',
            content: [
              {
                type: 'tool_result',
                tool_use_id: 'toolu_1',
                content: [
                  { type: 'text', text: 'line1' },
                  { type: 'text', text: 'line2' },
                ],
              },
            ],
          },
        ],
      },
      'm',
    );
    expect(chat.messages.map((m) => m.content)).toEqual([
      '<system-reminder>ctx</system-reminder>\nFix the bug',
      'Looking.\nReading the file.',
      'line1\nline2',
    ]);
  });

  it('answers calls in their order, carries a PDF a tool read, and leaves out a turn that was only reasoning', () => {
    const pdf = { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: 'JVBERi0=' } };
    const chat = messagesToChat(
      {
        max_tokens: 10,
        messages: [
          { role: 'user', content: 'read them' },
          {
            role: 'assistant',
            content: [
              { type: 'tool_use', id: 't1', name: 'Read', input: {} },
              { type: 'tool_use', id: 't2', name: 'Read', input: {} },
              { type: 'tool_use', id: 't3', name: 'Read', input: {} },
            ],
          },
          {
            role: 'user',
            content: [
              // As parallel tools finish.
              { type: 'tool_result', tool_use_id: 't3', content: 'three' },
              { type: 'tool_result', tool_use_id: 't1', content: [pdf] },
              { type: 'tool_result', tool_use_id: 't2', content: 'two' },
            ],
          },
          { role: 'assistant', content: [{ type: 'thinking', thinking: 'cut off while it reasoned', signature: '' }] },
          { role: 'user', content: 'go on' },
        ],
      },
      'm',
    );
    expect(chat.messages.slice(2)).toEqual([
      { role: 'tool', tool_call_id: 't1', content: '' },
      { role: 'tool', tool_call_id: 't2', content: 'two' },
      { role: 'tool', tool_call_id: 't3', content: 'three' },
      // The turn that was only reasoning goes; the user turns around it become one.
      {
        role: 'user',
        content: [
          { type: 'file', file: { file_data: 'data:application/pdf;base64,JVBERi0=' } },
          { type: 'text', text: 'go on' },
        ],
      },
    ]);
  });

  it('tells the model in the text that a tool failed, since chat has no is_error field', () => {
    const toolMessage = (content: string) =>
      messagesToChat(
        {
          model: 'x',
          max_tokens: 10,
          messages: [
            { role: 'assistant', content: [{ type: 'tool_use', id: 't1', name: 'f', input: {} }] },
            { role: 'user', content: [{ type: 'tool_result', tool_use_id: 't1', is_error: true, content }] },
          ],
        },
        'm',
      ).messages[1];
    expect(toolMessage('file not found')).toEqual({ role: 'tool', tool_call_id: 't1', content: 'Error: file not found' });
    // Text that says so already (Claude Code marks its errors) is left as it is.
    expect(toolMessage('<tool_use_error>No such file</tool_use_error>').content).toBe('<tool_use_error>No such file</tool_use_error>');
    expect(toolMessage('Error: boom').content).toBe('Error: boom');
  });

  it("carries Claude's structured output to chat backends as a json_schema response format", () => {
    const schema = { type: 'object', properties: { a: { type: 'string' } }, additionalProperties: false };
    const chat = messagesToChat(
      { max_tokens: 5, messages: [{ role: 'user', content: 'x' }], output_config: { format: { type: 'json_schema', schema } } },
      'm',
    );
    expect(chat.response_format).toEqual({ type: 'json_schema', json_schema: { name: 'output', schema } });
    expect(
      messagesToChat({ max_tokens: 5, messages: [{ role: 'user', content: 'x' }], output_config: { effort: 'low' } }, 'm').response_format,
    ).toBeUndefined();
  });

  it('keeps a mid-conversation system message where it stands, as a chat system message', () => {
    const body = {
      max_tokens: 10,
      system: 'top',
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'system', content: 'Available agent types: general' },
        { role: 'assistant', content: 'hello' },
        { role: 'user', content: 'go' },
        {
          role: 'system',
          content: [
            { type: 'text', text: 'a' },
            { type: 'text', text: 'b' },
          ],
        },
      ],
    };
    expect(messagesToChat(body, 'm').messages).toEqual([
      { role: 'system', content: 'top' },
      { role: 'user', content: 'hi' },
      { role: 'system', content: 'Available agent types: general' },
      { role: 'assistant', content: 'hello' },
      { role: 'user', content: 'go' },
      { role: 'system', content: 'a\n\nb' },
    ]);
    const change = {
      ...body,
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'system', content: [{ type: 'tool_removal', name: 'x' }] },
      ],
    };
    expect(() => messagesToChat(change, 'm')).toThrow(
      expect.objectContaining({ status: 400, param: 'messages.1.content.0.type', unsupportedByRoute: true }),
    );
  });

  it('refuses server tools and unknown blocks with a 400 naming the field', () => {
    const server = () =>
      messagesToChat(
        { max_tokens: 1, messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'web_search_20250305', name: 'web_search' }] },
        'm',
      );
    expect(server).toThrow(UpstreamError);
    expect(server).toThrow(expect.objectContaining({ status: 400, param: 'tools.0.type' }));
    const block = () =>
      messagesToChat({ max_tokens: 1, messages: [{ role: 'user', content: [{ type: 'search_result', source: 's' }] }] }, 'm');
    expect(block).toThrow(expect.objectContaining({ status: 400, param: 'messages.0.content.0.type' }));
    // MCP servers and code execution containers Anthropic connects and runs.
    const base = { max_tokens: 1, messages: [{ role: 'user', content: 'x' }] };
    const mcp = [{ type: 'url', url: 'https://mcp.example.com/sse', name: 'docs' }];
    expect(() => messagesToChat({ ...base, mcp_servers: mcp }, 'm')).toThrow(
      expect.objectContaining({ status: 400, param: 'mcp_servers', unsupportedByRoute: true }),
    );
    expect(() => messagesToChat({ ...base, container: 'container_011' }, 'm')).toThrow(
      expect.objectContaining({ status: 400, param: 'container' }),
    );
    expect(() => messagesToChat({ ...base, mcp_servers: [], container: null }, 'm')).not.toThrow();
  });
});

/** A one-choice chat completion holding `message`. */
const answerOf = (message: Record<string, unknown>, finish = 'stop'): ChatResponse =>
  ({ id: 'x', object: 'chat.completion', created: 0, model: 'm', choices: [{ index: 0, message, finish_reason: finish }] }) as ChatResponse;

describe('chatToMessage', () => {
  it('gives every tool_use an object input, wrapping arguments that are broken or not an object', () => {
    const answer = (args: string): ChatResponse => ({
      id: 'x',
      object: 'chat.completion',
      created: 0,
      model: 'm',
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: null,
            tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: args } }],
          },
          finish_reason: 'tool_calls',
        },
      ],
    });
    const input = (args: string) => (chatToMessage(answer(args), 'msg_1', 'm').content as Array<{ input: unknown }>)[0].input;
    expect(input('{"city":"Oslo"}')).toEqual({ city: 'Oslo' });
    expect(input('')).toEqual({});
    for (const raw of ['Paris please', '[1,2]', 'null', '"Paris"', '42', '{"a":'])
      expect([raw, input(raw)]).toEqual([raw, { _raw_arguments: raw }]);
  });

  it("turns Claude's reasoning_details into signed and redacted thinking, another model's into plain thinking and carried encrypted reasoning", () => {
    const answer = (details: unknown[]): ChatResponse => ({
      id: 'x',
      object: 'chat.completion',
      created: 0,
      model: 'm',
      choices: [
        { index: 0, message: { role: 'assistant', content: 'hi', reasoning: 'r', reasoning_details: details }, finish_reason: 'stop' },
      ],
    });
    expect(
      chatToMessage(
        answer([
          { type: 'reasoning.text', text: 'r', signature: 'sig', format: 'anthropic-claude-v1', index: 0 },
          { type: 'reasoning.encrypted', data: 'ENC', format: 'anthropic-claude-v1', index: 1 },
        ]),
        'msg_1',
        'm',
      ).content,
    ).toEqual([
      { type: 'thinking', thinking: 'r', signature: 'sig' },
      { type: 'redacted_thinking', data: 'ENC' },
      { type: 'text', text: 'hi' },
    ]);
    expect(
      chatToMessage(
        answer([
          { type: 'reasoning.summary', summary: 's', format: 'openai-responses-v1', index: 0 },
          { type: 'reasoning.encrypted', data: 'ENC', id: 'rs_1', format: 'openai-responses-v1', index: 1 },
        ]),
        'msg_1',
        'm',
      ).content,
    ).toEqual([
      { type: 'thinking', thinking: 's', signature: '' },
      { type: 'redacted_thinking', data: expect.stringMatching(/^hybridinference-reasoning-v1\./) },
      { type: 'text', text: 'hi' },
    ]);
  });

  it("carries Gemini's thought signature from OpenRouter through the client's turn back to OpenRouter, and to no other backend", () => {
    // OpenRouter's form of a Gemini 3 tool call's signature: Gemini refuses the next turn without it.
    const signature = { type: 'reasoning.encrypted', data: 'ORSIG', id: 'tool_abc', format: 'google-gemini-v1', index: 1 };
    const answer = chatToMessage(
      answerOf(
        {
          role: 'assistant',
          content: null,
          reasoning: 'I will call',
          reasoning_details: [{ type: 'reasoning.text', text: 'I will call', format: 'google-gemini-v1', index: 0 }, signature],
          tool_calls: [{ id: 'tool_abc', type: 'function', function: { name: 'f', arguments: '{}' } }],
        },
        'tool_calls',
      ),
      'msg_1',
      'm',
    );
    const body = {
      max_tokens: 10,
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: answer.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'tool_abc', content: 'done' }] },
      ],
    };
    const { index: _index, ...asSent } = signature;
    expect(messagesToChat(body, 'm', true).messages[1]).toMatchObject({
      tool_calls: [{ id: 'tool_abc' }],
      reasoning_details: [{ ...asSent, index: 0 }],
    });
    // Not Claude's, nor any chat backend's to read: left out (Claude would refuse it as its own).
    const plain = messagesToChat(body, 'm').messages[1];
    expect(plain.reasoning_details).toBeUndefined();
    expect(JSON.stringify(plain)).not.toContain('hybridinference-reasoning');
    // A block that only looks like one (a client's own redacted reasoning) stays Claude's.
    const forged = {
      ...body,
      messages: [
        body.messages[0],
        {
          role: 'assistant',
          content: [
            { type: 'redacted_thinking', data: 'hybridinference-reasoning-v1.!!' },
            { type: 'text', text: 'x' },
          ],
        },
      ],
    };
    expect(messagesToChat(forged, 'm', true).messages[1].reasoning_details).toEqual([
      { type: 'reasoning.encrypted', data: 'hybridinference-reasoning-v1.!!', format: 'anthropic-claude-v1', index: 0 },
    ]);
  });

  it('answers text, reasoning and tool calls as blocks, with usage split as Anthropic splits it', () => {
    const msg = chatToMessage(
      {
        id: 'c',
        object: 'chat.completion',
        created: 0,
        model: 'up',
        choices: [
          {
            index: 0,
            finish_reason: 'tool_calls',
            message: {
              role: 'assistant',
              content: 'sure',
              reasoning_content: 'think',
              tool_calls: [{ id: 'call.1', type: 'function', function: { name: 'f', arguments: '{"x":2}' } }],
            },
          },
        ],
        usage: {
          prompt_tokens: 30,
          completion_tokens: 5,
          total_tokens: 35,
          prompt_tokens_details: { cached_tokens: 10, cache_write_tokens: 4 },
        },
      },
      'msg_1',
      'public/model',
    );
    expect(msg).toEqual({
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'public/model',
      content: [
        { type: 'thinking', thinking: 'think', signature: '' },
        { type: 'text', text: 'sure' },
        { type: 'tool_use', id: 'call_1', name: 'f', input: { x: 2 } },
      ],
      stop_reason: 'tool_use',
      stop_sequence: null,
      usage: { input_tokens: 16, output_tokens: 5, cache_read_input_tokens: 10, cache_creation_input_tokens: 4 },
    });
  });

  it('gives tool calls without an id, or with an empty one, distinct ids', () => {
    const msg = chatToMessage(
      {
        id: 'c',
        object: 'chat.completion',
        created: 0,
        model: 'up',
        choices: [
          {
            index: 0,
            finish_reason: 'tool_calls',
            message: {
              role: 'assistant',
              content: null,
              tool_calls: [
                { type: 'function', function: { name: 'f', arguments: '{}' } },
                { id: '', type: 'function', function: { name: 'g', arguments: '{}' } },
              ] as never,
            },
          },
        ],
      },
      'msg_abc',
      'p',
    );
    expect((msg.content as Array<{ id: string }>).map((b) => b.id)).toEqual(['toolu_abc_0', 'toolu_abc_1']);
  });

  it('gives calls ids the conversation has not used yet, as servers that number calls per answer repeat them', () => {
    const history = [
      { role: 'user', content: 'weather in Paris and Rome' },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'call_0', name: 'w', input: { city: 'Paris' } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call_0', content: 'sunny' }] },
    ];
    const calls = ['call_0', 'call_0', 'call_1'].map((id, k) => ({
      id,
      type: 'function',
      function: { name: 'w', arguments: `{"k":${k}}` },
    }));
    const msg = chatToMessage(
      {
        id: 'c',
        object: 'chat.completion',
        created: 0,
        model: 'up',
        choices: [{ index: 0, finish_reason: 'tool_calls', message: { role: 'assistant', content: null, tool_calls: calls as never } }],
      },
      'msg_abc',
      'p',
      undefined,
      toolUseIdsOf(history),
    );
    expect((msg.content as Array<{ id: string }>).map((b) => b.id)).toEqual(['call_0_2', 'call_0_3', 'call_1']);
    // Ids as the backend saw them count too: `a.b` reached it as `a_b`.
    expect([
      ...toolUseIdsOf([
        { role: 'assistant', content: [{ type: 'tool_use', id: 'a.b' }] },
        { role: 'user', content: 'x' },
      ]),
    ]).toEqual(['a.b', 'a_b']);
  });

  it('reports the stop sequence a backend names, and a refusal as text with stop_reason refusal', () => {
    const res = (choice: Record<string, unknown>): ChatResponse => ({
      id: 'c',
      object: 'chat.completion',
      created: 0,
      model: 'up',
      choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: 'a' }, ...choice } as never],
    });
    expect(chatToMessage(res({ stop_reason: 'END' }), 'm', 'p', ['END'])).toMatchObject({
      stop_reason: 'stop_sequence',
      stop_sequence: 'END',
    });
    expect(chatToMessage(res({ matched_stop: 'END' }), 'm', 'p', ['X', 'END'])).toMatchObject({ stop_sequence: 'END' });
    // A token id, the end-of-text token, or no stop_sequences asked for: an ordinary end of turn.
    for (const [choice, stops] of [
      [{ stop_reason: 151645 }, ['END']],
      [{ stop_reason: '<|im_end|>' }, ['END']],
      [{ stop_reason: 'END' }, undefined],
    ] as const)
      expect(chatToMessage(res(choice), 'm', 'p', stops)).toMatchObject({ stop_reason: 'end_turn', stop_sequence: null });
    const refusal = chatToMessage(res({ message: { role: 'assistant', content: null, refusal: 'I cannot help with that.' } }), 'm', 'p');
    expect(refusal).toMatchObject({ stop_reason: 'refusal', content: [{ type: 'text', text: 'I cannot help with that.' }] });
  });

  it('maps finish reasons', () => {
    expect(['stop', 'length', 'tool_calls', 'content_filter', null].map(stopReason)).toEqual([
      'end_turn',
      'max_tokens',
      'tool_use',
      'refusal',
      'end_turn',
    ]);
    expect(messagesUsage(undefined)).toMatchObject({ input_tokens: 0, output_tokens: 0 });
  });
});

describe('ChatToMessagesStream', () => {
  const chunk = (delta: Record<string, unknown>, finish: string | null = null): ChatChunk => ({
    id: 'c',
    object: 'chat.completion.chunk',
    created: 0,
    model: 'up',
    choices: [{ index: 0, delta, finish_reason: finish }],
  });

  it("gives OpenRouter's signed reasoning a block each, and encrypted reasoning that came during a call after it", () => {
    const t = new ChatToMessagesStream('msg_1', 'public', 12);
    const claude = (detail: Record<string, unknown>) => [{ ...detail, format: 'anthropic-claude-v1' }];
    const events = [
      ...t.push(
        chunk({ reasoning: 'First.', reasoning_details: claude({ type: 'reasoning.text', text: 'First.', signature: 'S1', index: 0 }) }),
      ),
      ...t.push(
        chunk({ reasoning: 'Second.', reasoning_details: claude({ type: 'reasoning.text', text: 'Second.', signature: 'S2', index: 1 }) }),
      ),
      ...t.push(chunk({ tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'f', arguments: '{}' } }] })),
      ...t.push(chunk({ reasoning_details: claude({ type: 'reasoning.encrypted', data: 'ENC', index: 2 }) })),
      ...t.push(chunk({}, 'tool_calls')),
      ...t.finishEvents(),
    ].map((e) => JSON.parse(e.data) as { type: string; content_block?: Record<string, unknown>; delta?: Record<string, unknown> });
    expect(events.filter((e) => e.type === 'content_block_start').map((e) => e.content_block)).toEqual([
      { type: 'thinking', thinking: '', signature: '' },
      { type: 'thinking', thinking: '', signature: '' },
      { type: 'tool_use', id: 'call_a', name: 'f', input: {} },
      { type: 'redacted_thinking', data: 'ENC' },
    ]);
    expect(events.filter((e) => e.delta?.type === 'signature_delta').map((e) => e.delta!.signature)).toEqual(['S1', 'S2']);
  });

  it("carries a Gemini call's thought signature through the client's turn, to Gemini on the call and to OpenRouter as its entry", () => {
    const call = {
      id: 'call_g1',
      type: 'function',
      function: { name: 'f', arguments: '{}' },
      extra_content: { google: { thought_signature: 'SIG_A' } },
    };
    const answer = chatToMessage(answerOf({ role: 'assistant', content: null, tool_calls: [call] }, 'tool_calls'), 'msg_1', 'm');
    expect((answer.content as Array<{ type: string }>).map((b) => b.type)).toEqual(['redacted_thinking', 'tool_use']);
    const body = (content: unknown) => ({
      max_tokens: 10,
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call_g1', content: 'done' }] },
      ],
    });
    // Before, the next turn went to Gemini with Google's placeholder signature: its reasoning lost.
    expect(messagesToChat(body(answer.content), 'm').messages[1].tool_calls).toEqual([
      { ...call, function: { name: 'f', arguments: '{}' } },
    ]);
    expect(messagesToChat(body(answer.content), 'm', true).messages[1].reasoning_details).toEqual([
      { type: 'reasoning.encrypted', data: 'SIG_A', id: 'call_g1', format: 'google-gemini-v1', index: 0 },
    ]);
    // Streamed alike.
    const t = new ChatToMessagesStream('msg_2', 'public', 12);
    const events = [...t.push(chunk({ tool_calls: [{ index: 0, ...call }] })), ...t.push(chunk({}, 'tool_calls')), ...t.finishEvents()].map(
      (e) => JSON.parse(e.data) as { type: string; content_block?: Record<string, unknown> },
    );
    const blocks = events.filter((e) => e.type === 'content_block_start').map((e) => e.content_block!);
    expect(blocks.map((b) => b.type)).toEqual(['redacted_thinking', 'tool_use']);
    expect(messagesToChat(body([blocks[0], { ...blocks[1], input: {} }]), 'm').messages[1].tool_calls![0]).toMatchObject({
      id: 'call_g1',
      extra_content: { google: { thought_signature: 'SIG_A' } },
    });
  });

  it("streams another model's encrypted reasoning (Gemini's signature from OpenRouter) as a carried redacted block", () => {
    const t = new ChatToMessagesStream('msg_1', 'public', 12);
    const gemini = { type: 'reasoning.encrypted', data: 'ORSIG', id: 'tool_abc', format: 'google-gemini-v1', index: 0 };
    const events = [
      ...t.push(chunk({ tool_calls: [{ index: 0, id: 'tool_abc', type: 'function', function: { name: 'f', arguments: '{}' } }] })),
      ...t.push(chunk({ reasoning_details: [gemini] })),
      ...t.push(chunk({}, 'tool_calls')),
      ...t.finishEvents(),
    ].map((e) => JSON.parse(e.data) as { type: string; content_block?: Record<string, unknown> });
    const blocks = events.filter((e) => e.type === 'content_block_start').map((e) => e.content_block!);
    expect(blocks.map((b) => b.type)).toEqual(['tool_use', 'redacted_thinking']);
    const back = messagesToChat(
      {
        max_tokens: 5,
        messages: [
          { role: 'user', content: 'q' },
          { role: 'assistant', content: [{ ...blocks[0], input: {} }, blocks[1]] },
        ],
      },
      'm',
      true,
    );
    expect(back.messages[1].reasoning_details).toEqual([
      { type: 'reasoning.encrypted', data: 'ORSIG', id: 'tool_abc', format: 'google-gemini-v1', index: 0 },
    ]);
  });

  it('reads a choice that came without its index as the first', () => {
    const t = new ChatToMessagesStream('msg_1', 'public', 12);
    const bare = (delta: Record<string, unknown>, finish: string | null = null) =>
      ({
        id: 'c',
        object: 'chat.completion.chunk',
        created: 0,
        model: 'up',
        choices: [{ delta, finish_reason: finish }],
      }) as unknown as ChatChunk;
    const events = [...t.push(bare({ role: 'assistant', content: 'hi there' })), ...t.push(bare({}, 'length')), ...t.finishEvents()].map(
      (e) => JSON.parse(e.data) as { type: string; delta?: Record<string, unknown> },
    );
    expect(events.filter((e) => e.delta?.type === 'text_delta').map((e) => e.delta!.text)).toEqual(['hi there']);
    expect(events.find((e) => e.type === 'message_delta')?.delta).toMatchObject({ stop_reason: 'max_tokens' });
  });

  it('opens and closes a block per run of reasoning, text and each tool call, and ends with usage', () => {
    const t = new ChatToMessagesStream('msg_1', 'public', 12);
    const out = [
      ...t.push(chunk({ role: 'assistant', content: '' })),
      ...t.push(chunk({ reasoning_content: 'hmm' })),
      ...t.push(chunk({ content: 'Hi' })),
      ...t.push(chunk({ tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'f', arguments: '' } }] })),
      ...t.push(chunk({ tool_calls: [{ index: 0, function: { arguments: '{"a":' } }] })),
      ...t.push(chunk({ tool_calls: [{ index: 0, function: { arguments: '1}' } }] })),
      ...t.push(chunk({ tool_calls: [{ index: 1, id: 'call_b', type: 'function', function: { name: 'g', arguments: '{}' } }] })),
      ...t.push(chunk({}, 'tool_calls')),
      ...t.push({
        id: 'c',
        object: 'chat.completion.chunk',
        created: 0,
        model: 'up',
        choices: [],
        usage: { prompt_tokens: 20, completion_tokens: 9, total_tokens: 29 },
      }),
      ...t.finishEvents(),
    ].map((e) => [e.event, JSON.parse(e.data) as Record<string, unknown>] as const);
    for (const [event, data] of out) expect(data.type).toBe(event);
    expect(out.map(([e, d]) => (e === 'content_block_delta' ? `${e}:${(d.delta as { type: string }).type}` : e))).toEqual([
      'message_start',
      'ping',
      'content_block_start',
      'content_block_delta:thinking_delta',
      'content_block_stop',
      'content_block_start',
      'content_block_delta:text_delta',
      'content_block_stop',
      'content_block_start',
      // A call's arguments: one delta, checked, as its block ends.
      'content_block_delta:input_json_delta',
      'content_block_stop',
      'content_block_start',
      'content_block_delta:input_json_delta',
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
    expect(out[9][1]).toMatchObject({ index: 2, delta: { type: 'input_json_delta', partial_json: '{"a":1}' } });
    expect(out[0][1].message).toMatchObject({ id: 'msg_1', model: 'public', usage: { input_tokens: 12, output_tokens: 0 } });
    expect(out[8][1]).toEqual({
      type: 'content_block_start',
      index: 2,
      content_block: { type: 'tool_use', id: 'call_a', name: 'f', input: {} },
    });
    expect(out[11][1]).toMatchObject({ index: 3, content_block: { name: 'g' } });
    expect(out[14][1]).toEqual({
      type: 'message_delta',
      delta: { stop_reason: 'tool_use', stop_sequence: null },
      usage: { input_tokens: 20, output_tokens: 9, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    });
  });

  /**
   * Replays events as Anthropic's SDK does: blocks one after the other, a block complete at its
   * `content_block_stop`. Returns each tool_use block as it stood at its stop.
   */
  function replay(events: Array<{ event: string; data: string }>): Array<{ id: string; name: string; input: unknown }> {
    const done: Array<{ id: string; name: string; input: unknown }> = [];
    let open: { index: number; id: string; name: string; json: string } | undefined;
    const stopped = new Set<number>();
    for (const e of events) {
      const d = JSON.parse(e.data) as {
        index?: number;
        content_block?: { type: string; id: string; name: string };
        delta?: { partial_json?: string };
      };
      if (e.event === 'content_block_start') {
        expect(open).toBeUndefined();
        open = { index: d.index!, id: d.content_block!.id, name: d.content_block!.name, json: '' };
      } else if (e.event === 'content_block_delta') {
        expect([d.index, stopped.has(d.index!)]).toEqual([open?.index, false]);
        open!.json += d.delta?.partial_json ?? '';
      } else if (e.event === 'content_block_stop') {
        expect(d.index).toBe(open?.index);
        stopped.add(d.index!);
        if (open!.id) done.push({ id: open!.id, name: open!.name, input: JSON.parse(open!.json || '{}') });
        open = undefined;
      }
    }
    return done;
  }

  /** A tool-call delta of choice 0: its first (`name` given, with an id) or a later one of its arguments. */
  const call = (index: number, args: string, name?: string) =>
    chunk({
      tool_calls: [
        { index, ...(name ? { id: `call_${index}`, type: 'function' } : {}), function: { ...(name ? { name } : {}), arguments: args } },
      ],
    });

  it('sends arguments that are not a JSON object as an object, once the block ends', () => {
    const t = new ChatToMessagesStream('msg_r', 'p', 1);
    const events = [
      ...t.push(call(0, '  ', 'a')),
      ...t.push(call(0, 'Paris ')),
      ...t.push(call(0, 'please')),
      ...t.push(call(1, '[1,', 'b')),
      ...t.push(call(1, '2]')),
      ...t.push(call(2, 'null', 'c')),
      ...t.push(call(3, ' \n', 'd')),
      ...t.push(call(3, '{"x":')),
      ...t.push(call(3, '1}')),
      ...t.push(chunk({}, 'tool_calls')),
      ...t.finishEvents(),
    ];
    expect(replay(events)).toEqual([
      { id: 'call_0', name: 'a', input: { _raw_arguments: '  Paris please' } },
      { id: 'call_1', name: 'b', input: { _raw_arguments: '[1,2]' } },
      { id: 'call_2', name: 'c', input: { _raw_arguments: 'null' } },
      { id: 'call_3', name: 'd', input: { x: 1 } },
    ]);
  });

  it('sends a JSON object as it came, and as _raw_arguments a Python dict, Python values, a trailing comma or two objects', () => {
    const t = new ChatToMessagesStream('msg_p', 'p', 1);
    const events = [
      ...t.push(call(0, '{', 'a')),
      ...t.push(call(0, "'city': ")),
      ...t.push(call(0, "'Paris'}")),
      ...t.push(call(1, '{"q": "a } \\" {", "n": [1, {"m": 2}]', 'b')),
      ...t.push(call(1, '}{"q": "again"}')),
      ...t.push(call(2, '{"q": "a } \\" {", ', 'c')),
      ...t.push(call(2, '"n": [1, {"m": 2}]}')),
      ...t.push(call(3, '{"ok": True, ', 'd')),
      ...t.push(call(3, '"x": 1,}')),
      ...t.push(chunk({}, 'tool_calls')),
      ...t.finishEvents(),
    ];
    expect(replay(events)).toEqual([
      { id: 'call_0', name: 'a', input: { _raw_arguments: "{'city': 'Paris'}" } },
      { id: 'call_1', name: 'b', input: { _raw_arguments: '{"q": "a } \\" {", "n": [1, {"m": 2}]}{"q": "again"}' } },
      { id: 'call_2', name: 'c', input: { q: 'a } " {', n: [1, { m: 2 }] } },
      { id: 'call_3', name: 'd', input: { _raw_arguments: '{"ok": True, "x": 1,}' } },
    ]);
  });

  it('holds back a call that starts while another is open, so that late arguments reach their own open block', () => {
    const t = new ChatToMessagesStream('msg_9', 'p', 1);
    const events = [
      ...t.push(
        chunk({ tool_calls: [{ index: 0, id: 'call_A', type: 'function', function: { name: 'weather', arguments: '{"city":' } }] }),
      ),
      ...t.push(
        chunk({ tool_calls: [{ index: 1, id: 'call_B', type: 'function', function: { name: 'time', arguments: '{"tz":"UTC"}' } }] }),
      ),
      ...t.push(chunk({ tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] })),
      ...t.push(chunk({}, 'tool_calls')),
      ...t.finishEvents(),
    ];
    expect(replay(events)).toEqual([
      { id: 'call_A', name: 'weather', input: { city: 'Paris' } },
      { id: 'call_B', name: 'time', input: { tz: 'UTC' } },
    ]);
  });

  it("starts a call's block once its name has come, with the arguments sent before it", () => {
    const t = new ChatToMessagesStream('msg_8', 'p', 1);
    const events = [
      ...t.push(chunk({ content: 'Let me look.' })),
      ...t.push(chunk({ tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { arguments: '' } }] })),
      ...t.push(chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] })),
      ...t.push(chunk({ tool_calls: [{ index: 0, function: { name: 'get_weather', arguments: '"Oslo"}' } }] })),
      ...t.push(chunk({ tool_calls: [{ index: 1, id: 'call_2', type: 'function', function: { arguments: '{}' } }] })),
      ...t.push(chunk({}, 'tool_calls')),
      ...t.finishEvents(),
    ];
    // A call whose name never came still goes out, whole, at the end (the client sees what the server sent).
    expect(replay(events)).toEqual([
      { id: 'call_1', name: 'get_weather', input: { city: 'Oslo' } },
      { id: 'call_2', name: '', input: {} },
    ]);
    const starts = events.filter((e) => e.event === 'content_block_start').map((e) => JSON.parse(e.data).content_block.type);
    expect(starts).toEqual(['text', 'tool_use', 'tool_use']);
  });

  it("sends text and reasoning that come between a call's arguments after the calls, never into a closed block", () => {
    const t = new ChatToMessagesStream('msg_7', 'p', 1);
    const events = [
      ...t.push(chunk({ content: 'a' })),
      ...t.push(chunk({ tool_calls: [{ index: 0, id: 'call_x', type: 'function', function: { name: 'f', arguments: '{"x":' } }] })),
      ...t.push(chunk({ content: 'b' })),
      ...t.push(chunk({ content: 'c' })),
      ...t.push(chunk({ reasoning_content: 'r', thinking_blocks: [{ type: 'thinking', thinking: 'r', signature: 'sig' }] })),
      ...t.push(chunk({ tool_calls: [{ index: 0, function: { arguments: '1}' } }] })),
      ...t.push(chunk({}, 'tool_calls')),
      ...t.finishEvents(),
    ];
    expect(replay(events)).toEqual([{ id: 'call_x', name: 'f', input: { x: 1 } }]);
    const shown = events
      .filter((e) => e.event === 'content_block_delta')
      .map((e) => JSON.parse(e.data) as { index: number; delta: Record<string, string> })
      .map((d) => `${d.index}:${d.delta.text ?? d.delta.thinking ?? d.delta.partial_json ?? d.delta.signature}`);
    expect(shown).toEqual(['0:a', '1:{"x":1}', '2:bc', '3:r', '3:sig']);
    expect(JSON.parse(events.find((e) => e.event === 'message_delta')!.data).delta.stop_reason).toBe('tool_use');
  });

  it('gives message_start every usage field Anthropic sends, also when it holds an estimate', () => {
    const t = new ChatToMessagesStream('msg_6', 'p', 33);
    const start = JSON.parse(t.push(chunk({ content: 'x' }))[0].data);
    expect(start.message.usage).toEqual({ input_tokens: 33, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 });
  });

  it('tells calls apart by id when the server sends no index, and continues the last call on a delta with neither', () => {
    const t = new ChatToMessagesStream('msg_9', 'p', 1);
    const noIndex = (calls: Array<Record<string, unknown>>) => chunk({ tool_calls: calls });
    const events = [
      ...t.push(
        noIndex([
          { id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
          { id: 'call_2', type: 'function', function: { name: 'time', arguments: '{"tz":' } },
        ]),
      ),
      ...t.push(noIndex([{ function: { arguments: '"UTC"}' } }])),
      ...t.finishEvents(),
    ];
    expect(replay(events)).toEqual([
      { id: 'call_1', name: 'weather', input: { city: 'Paris' } },
      { id: 'call_2', name: 'time', input: { tz: 'UTC' } },
    ]);
  });

  it('keeps calls with neither index nor id apart when each names its function', () => {
    const t = new ChatToMessagesStream('msg_9', 'p', 1);
    const events = [
      ...t.push(
        chunk({
          tool_calls: [
            { type: 'function', function: { name: 'a', arguments: '{"x":1}' } },
            { type: 'function', function: { name: 'b', arguments: '{"y":' } },
          ],
        }),
      ),
      ...t.push(chunk({ tool_calls: [{ function: { arguments: '2}' } }] })),
      ...t.finishEvents(),
    ];
    expect(replay(events).map((c) => [c.name, c.input])).toEqual([
      ['a', { x: 1 }],
      ['b', { y: 2 }],
    ]);
  });

  it('gives calls without an id, or with an empty one, ids of their own', () => {
    const t = new ChatToMessagesStream('msg_9', 'p', 1);
    const events = [
      ...t.push(chunk({ tool_calls: [{ index: 0, id: '', type: 'function', function: { name: 'a', arguments: '{}' } }] })),
      ...t.push(chunk({ tool_calls: [{ index: 1, type: 'function', function: { name: 'b', arguments: '{}' } }] })),
      ...t.finishEvents(),
    ];
    const ids = replay(events).map((c) => c.id);
    expect(new Set(ids).size).toBe(2);
    for (const id of ids) expect(id).toMatch(/^toolu_9_\d$/);
  });

  it('gives streamed calls ids the conversation has not used yet', () => {
    const t = new ChatToMessagesStream('msg_9', 'p', 1, undefined, new Set(['call_0']));
    const events = [
      ...t.push(chunk({ tool_calls: [{ index: 0, id: 'call_0', type: 'function', function: { name: 'a', arguments: '{}' } }] })),
      ...t.push(chunk({ tool_calls: [{ index: 1, id: 'call_1', type: 'function', function: { name: 'b', arguments: '{}' } }] })),
      ...t.finishEvents(),
    ];
    expect(replay(events).map((c) => c.id)).toEqual(['call_0_2', 'call_1']);
  });

  it('reports the stop sequence and a refusal in message_delta', () => {
    const last = (t: ChatToMessagesStream) => JSON.parse(t.finishEvents().at(-2)!.data) as { delta: unknown };
    const stopped = new ChatToMessagesStream('m', 'p', 1, ['END']);
    stopped.push(chunk({ content: 'a' }));
    stopped.push({ ...chunk({}, 'stop'), choices: [{ index: 0, delta: {}, finish_reason: 'stop', stop_reason: 'END' }] });
    expect(last(stopped).delta).toEqual({ stop_reason: 'stop_sequence', stop_sequence: 'END' });
    const refused = new ChatToMessagesStream('m', 'p', 1);
    const events = [...refused.push(chunk({ refusal: 'No.' })), ...refused.push(chunk({}, 'stop'))];
    expect(events.map((e) => e.event)).toContain('content_block_delta');
    expect(events.find((e) => e.event === 'content_block_delta')!.data).toContain('"text":"No."');
    expect(last(refused).delta).toEqual({ stop_reason: 'refusal', stop_sequence: null });
  });

  it('still opens and closes the message when the stream had no content', () => {
    const t = new ChatToMessagesStream('m', 'p', 1);
    expect(t.finishEvents().map((e) => e.event)).toEqual(['message_start', 'ping', 'message_delta', 'message_stop']);
  });
});
