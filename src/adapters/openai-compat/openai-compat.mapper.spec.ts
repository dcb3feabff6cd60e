import type { ChatChunk, ChatRequest, ChatResponse, Usage } from '../../common/chat.types';
import { UpstreamError } from '../../common/errors';
import type { RouteDef } from '../../config/registry.types';
import {
  buildChatBody,
  buildCompletionBody,
  buildEmbeddingsBody,
  endpointUrl,
  miniMaxError,
  normalizeChunk,
  normalizeResponse,
  callIdPrefix,
  normalizeUsage,
  upstreamHttpError,
} from './openai-compat.mapper';
import { profileFor, type OpenAiCompatProfile } from './openai-compat.profiles';

function route(overrides: Partial<RouteDef> = {}): RouteDef {
  return {
    id: 'gpu-1',
    kind: 'vllm',
    baseUrl: 'http://gpu-1:8000/v1',
    apiKeys: [],
    providerModelId: 'meta-llama/Llama-3.1-8B-Instruct',
    weight: 1,
    locality: 'local',
    headers: {},
    timeouts: {},
    options: {},
    where: 'models.yaml:10',
    ...overrides,
  };
}

const vllm = profileFor('vllm');

function request(extra: Partial<ChatRequest> = {}): ChatRequest {
  return { model: 'llama', messages: [{ role: 'user', content: 'hi' }], ...extra };
}

describe('buildChatBody', () => {
  it('passes every parameter through, known or not, and names the upstream model', () => {
    const req = request({
      temperature: 0.2,
      max_tokens: 100,
      stop: ['END'],
      tools: [{ type: 'function', function: { name: 'f' } }],
      top_k: 40,
      min_p: 0.05,
      repetition_penalty: 1.1,
      guided_json: { type: 'object' },
    });
    expect(buildChatBody(req, route(), false, vllm)).toEqual({
      model: 'meta-llama/Llama-3.1-8B-Instruct',
      messages: [{ role: 'user', content: 'hi' }],
      temperature: 0.2,
      max_tokens: 100,
      stop: ['END'],
      tools: [{ type: 'function', function: { name: 'f' } }],
      top_k: 40,
      min_p: 0.05,
      repetition_penalty: 1.1,
      guided_json: { type: 'object' },
    });
  });

  it("merges the route's extra_body", () => {
    const body = buildChatBody(
      request({ temperature: 1 }),
      route({ extraBody: { chat_template_kwargs: { enable_thinking: false } } }),
      false,
      vllm,
    );
    expect(body).toMatchObject({ temperature: 1, chat_template_kwargs: { enable_thinking: false } });
  });

  it("merges objects of the route's extra_body into the request's, key by key, the route's values winning", () => {
    const req = request({ chat_template_kwargs: { documents: ['d'], enable_thinking: true }, stop: ['x'] });
    const body = buildChatBody(req, route({ extraBody: { chat_template_kwargs: { enable_thinking: false }, stop: ['y'] } }), false, vllm);
    expect(body).toMatchObject({ chat_template_kwargs: { documents: ['d'], enable_thinking: false }, stop: ['y'] });
    // The client's request is not changed.
    expect(req).toMatchObject({ chat_template_kwargs: { enable_thinking: true } });
  });

  it('replaces, never merges, a setting that is one choice among alternatives (a type, or fields that exclude each other)', () => {
    const req = request({
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: {} } },
      reasoning: { effort: 'high' },
    });
    const body = buildChatBody(
      req,
      route({ extraBody: { response_format: { type: 'json_object' }, reasoning: { max_tokens: 100 } } }),
      false,
      vllm,
    );
    expect(body.response_format).toEqual({ type: 'json_object' });
    expect(body.reasoning).toEqual({ max_tokens: 100 });
  });

  it('strips the fields only the gateway acts on', () => {
    const req = request({
      models: ['a', 'b'],
      provider: { order: ['x'] },
      route: 'fallback',
      transforms: ['middle-out'],
      plugins: [{ id: 'web' }],
      usage: { include: true },
      session_id: 's-1',
      debug: { echo_upstream_body: true },
    });
    const body = buildChatBody(req, route(), false, vllm);
    for (const f of ['models', 'provider', 'route', 'transforms', 'plugins', 'usage', 'session_id', 'debug'])
      expect(body).not.toHaveProperty(f);
    expect(body.messages).toEqual(req.messages);
  });

  it("drops the fields the upstream's profile rejects", () => {
    const picky: OpenAiCompatProfile = { name: 'picky', healthPath: '/health', dropFields: ['logit_bias'] };
    const body = buildChatBody(request({ logit_bias: { '1': 5 }, seed: 1 }), route(), false, picky);
    expect(body).not.toHaveProperty('logit_bias');
    expect(body.seed).toBe(1);
  });

  it('asks a stream for usage and keeps the other stream options', () => {
    const body = buildChatBody(
      request({ stream: true, stream_options: { include_usage: false, continuous_usage_stats: true } }),
      route(),
      true,
      vllm,
    );
    expect(body.stream).toBe(true);
    expect(body.stream_options).toEqual({ include_usage: true, continuous_usage_stats: true });
  });

  it('asks for usage when a stream request has no stream options', () => {
    const body = buildChatBody(request(), route(), true, vllm);
    expect(body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
  });

  it('removes stream and stream_options from a non-streaming body', () => {
    const body = buildChatBody(request({ stream: true, stream_options: { include_usage: true } }), route(), false, vllm);
    expect(body).not.toHaveProperty('stream');
    expect(body).not.toHaveProperty('stream_options');
  });

  it('does not change the request', () => {
    const req = request({ stream: true, stream_options: { include_usage: false }, provider: { order: ['x'] } });
    const before = structuredClone(req);
    buildChatBody(req, route({ extraBody: { top_k: 5 } }), true, vllm);
    buildChatBody(req, route(), false, vllm);
    expect(req).toEqual(before);
  });
});

describe('endpointUrl', () => {
  it.each([
    ['http://gpu-1:8000/v1', 'chat/completions'],
    ['http://gpu-1:8000/v1/', 'chat/completions'],
    ['http://gpu-1:8000/v1', '/chat/completions'],
    ['http://gpu-1:8000/v1//', '//chat/completions'],
  ])('joins %s and %s with one slash', (base, path) => {
    expect(endpointUrl(base, path)).toBe('http://gpu-1:8000/v1/chat/completions');
  });
});

it("keeps a base URL's query after the path (Azure's api-version), joined with the path's own", () => {
  expect(endpointUrl('https://x.openai.azure.com/openai/v1?api-version=preview', 'chat/completions')).toBe(
    'https://x.openai.azure.com/openai/v1/chat/completions?api-version=preview',
  );
  expect(endpointUrl('https://g.example/v1beta/?tenant=a', 'models/m:stream?alt=sse')).toBe(
    'https://g.example/v1beta/models/m:stream?alt=sse&tenant=a',
  );
});

describe('upstreamHttpError', () => {
  const r = route({ id: 'gpu-1', kind: 'vllm' });

  it("says a 402 is about the operator's account with the provider, not the client's credits", () => {
    const body = JSON.stringify({ error: { message: 'Insufficient credits', code: 402 } });
    const err = upstreamHttpError(402, body, route({ id: 'or-main', kind: 'openrouter' }), undefined);
    expect(err).toMatchObject({
      status: 502,
      type: 'upstream_error',
      code: 'upstream_payment_required',
      message: "upstream or-main refused for payment: the operator's account with the provider (402): Insufficient credits",
    });
  });

  it("reads Z.AI's account codes behind its 429s: arrears is the operator's payment, a locked account this route's refusal", () => {
    const zai = route({ id: 'glm', kind: 'zai' });
    const body = (code: string, message: string) => JSON.stringify({ error: { code, message } });
    expect(upstreamHttpError(429, body('1113', 'Your account is in arrears'), zai, undefined)).toMatchObject({
      status: 502,
      code: 'upstream_payment_required',
      retryable: false,
    });
    expect(upstreamHttpError(429, body('1112', 'Your account has been locked'), zai, undefined)).toMatchObject({
      status: 403,
      retryable: false,
    });
    // A real rate limit stays one, and other servers' codes mean nothing here.
    expect(upstreamHttpError(429, body('1302', 'High concurrency'), zai, undefined)).toMatchObject({ status: 429, retryable: true });
    expect(upstreamHttpError(429, body('1113', 'x'), r, undefined)).toMatchObject({ status: 429 });
  });

  it("takes an upstream's 408 for its own timeout: a 504, retried, never the client's stalled body", () => {
    const err = upstreamHttpError(408, JSON.stringify({ error: { message: 'Request timed out', code: 408 } }), r, undefined);
    expect(err).toMatchObject({ status: 504, type: 'timeout_error', code: 'upstream_timeout', retryable: true });
    expect(err.message).toBe('upstream gpu-1 answered 408: Request timed out');
  });

  it("blanks the route's credential headers and URL parameters in the text a client sees, not only its keys", () => {
    const secretive = route({
      baseUrl: 'http://gpu-1:8000/v1?code=QUERYSECRET-123&region=eu-west-1x',
      apiKeys: ['sk-routekey-1234'],
      headers: { 'api-key': 'HEADERSECRET-456', authorization: 'Bearer BEARERSECRET-789', 'x-title': 'Team dashboard' },
    });
    const quoted =
      'refused sk-routekey-1234 at /v1?code=QUERYSECRET-123&region=eu-west-1x with api-key: HEADERSECRET-456, ' +
      'Authorization: Bearer BEARERSECRET-789 (x-title: Team dashboard)';
    const err = upstreamHttpError(401, JSON.stringify({ error: { message: quoted } }), secretive, undefined);
    expect(err.message).not.toMatch(/SECRET|routekey/);
    // What names no credential is left as it was.
    expect(err.message).toContain('region=eu-west-1x');
    expect(err.message).toContain('Team dashboard');
    // One header's value inside another's: the longer goes whole, not cut by the shorter.
    const nested = route({ headers: { 'x-api-key': 'TENANT-01234', authorization: 'Bearer TENANT-01234.s3cr3tpart' } });
    const echoed = upstreamHttpError(401, JSON.stringify({ error: { message: 'got Bearer TENANT-01234.s3cr3tpart' } }), nested, undefined);
    expect(echoed.message).not.toContain('s3cr3t');
  });

  it("keeps an OpenAI error body's status, message, type, code and param for 4xx", () => {
    const body = JSON.stringify({
      error: {
        message: 'This model maximum context length is 8192 tokens',
        type: 'invalid_request_error',
        code: 'context_length_exceeded',
        param: 'messages',
      },
    });
    const err = upstreamHttpError(400, body, r, undefined);
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err).toMatchObject({
      status: 400,
      upstreamStatus: 400,
      failure: 'http',
      message: 'This model maximum context length is 8192 tokens',
      type: 'invalid_request_error',
      code: 'context_length_exceeded',
      param: 'messages',
      retryable: false,
      route: 'gpu-1',
      provider: 'vllm',
    });
  });

  it("reads vLLM's flat error object", () => {
    const body = JSON.stringify({
      object: 'error',
      message: 'max_tokens must be at least 1, got 0.',
      type: 'BadRequestError',
      param: null,
      code: 400,
    });
    const err = upstreamHttpError(400, body, r, undefined);
    // Its numeric code is the status again: OpenAI's codes are strings.
    expect(err).toMatchObject({ status: 400, message: 'max_tokens must be at least 1, got 0.', type: 'BadRequestError', code: null });
  });

  it("reads FastAPI's detail", () => {
    const err = upstreamHttpError(404, JSON.stringify({ detail: 'Not Found' }), r, undefined);
    expect(err).toMatchObject({ status: 404, message: 'Not Found', type: 'not_found_error' });
  });

  it("reads FastAPI's validation detail list as JSON", () => {
    const detail = [{ loc: ['body', 'messages'], msg: 'field required', type: 'value_error.missing' }];
    const err = upstreamHttpError(422, JSON.stringify({ detail }), r, undefined);
    expect(err.status).toBe(422);
    expect(JSON.parse(err.message)).toEqual(detail);
  });

  it('reads an error given as a plain string', () => {
    expect(upstreamHttpError(404, JSON.stringify({ error: 'model not found' }), r, undefined).message).toBe('model not found');
  });

  it('keeps a plain-text body', () => {
    const err = upstreamHttpError(403, '  Forbidden: bad key\n', r, undefined);
    expect(err).toMatchObject({ status: 403, message: 'Forbidden: bad key', type: 'permission_error' });
  });

  it('answers 502 for an upstream 5xx and names the route', () => {
    const body = JSON.stringify({ error: { message: 'CUDA out of memory', type: 'InternalServerError', code: 'oom' } });
    const err = upstreamHttpError(500, body, r, undefined);
    expect(err.status).toBe(502);
    expect(err.upstreamStatus).toBe(500);
    expect(err.type).toBe('upstream_error');
    expect(err.message).toContain('gpu-1');
    expect(err.message).toContain('500');
    expect(err.message).toContain('CUDA out of memory');
    expect(err.retryable).toBe(true);
  });

  it('says something for an empty 5xx body', () => {
    const err = upstreamHttpError(503, '', r, undefined);
    expect(err.status).toBe(502);
    expect(err.message).toMatch(/gpu-1.*503.*HTTP 503/);
  });

  it.each([
    [500, true],
    [502, true],
    [503, true],
    [429, true],
    [408, true],
    [400, false],
    [401, false],
    [404, false],
    [422, false],
  ])('marks HTTP %d retryable: %s', (status, retryable) => {
    expect(upstreamHttpError(status, 'x', r, undefined).retryable).toBe(retryable);
  });

  it('passes a 429 through with its Retry-After', () => {
    const err = upstreamHttpError(429, JSON.stringify({ error: { message: 'slow down' } }), r, 2500);
    expect(err).toMatchObject({ status: 429, type: 'rate_limit_error', message: 'slow down', retryAfterMs: 2500 });
    expect(err.headers).toEqual({ 'retry-after': '3' });
  });
});

describe('provider profiles', () => {
  it("OpenAI: a Gemini tool call's thought signature (extra_content) is not sent; OpenAI refuses the parameter", () => {
    const call = { id: 'call_1', type: 'function' as const, function: { name: 'f', arguments: '{}' } };
    const turn = {
      role: 'assistant' as const,
      content: null,
      tool_calls: [{ ...call, extra_content: { google: { thought_signature: 'SIG' } } }],
    };
    const messages = [{ role: 'user' as const, content: 'a' }, turn, { role: 'tool' as const, tool_call_id: 'call_1', content: 'r' }];
    const strict = buildChatBody(request({ messages }), route({ kind: 'openai' }), false, profileFor('openai'));
    expect((strict.messages as Array<{ tool_calls?: unknown }>)[1].tool_calls).toEqual([call]);
    // Other servers get it as sent (Google's OpenAI-compatible API reads it).
    expect((buildChatBody(request({ messages }), route(), false, vllm).messages as Array<{ tool_calls?: unknown }>)[1].tool_calls).toEqual(
      turn.tool_calls,
    );
  });

  it("OpenAI: OpenRouter's reasoning becomes reasoning_effort; fields OpenAI refuses are not sent", () => {
    const body = buildChatBody(
      request({ reasoning: { effort: 'high', exclude: true }, include_reasoning: true }),
      route({ kind: 'openai' }),
      false,
      profileFor('openai'),
    );
    expect(body).toMatchObject({ reasoning_effort: 'high' });
    expect(body).not.toHaveProperty('reasoning');
    // Its reasoning models refuse max_tokens; every chat model takes max_completion_tokens.
    const limited = buildChatBody(request({ max_tokens: 32000 }), route({ kind: 'openai' }), false, profileFor('openai'));
    expect(limited).toMatchObject({ max_completion_tokens: 32000 });
    expect(limited).not.toHaveProperty('max_tokens');
    // Both sent: OpenAI reads max_completion_tokens, and max_tokens is not sent along.
    const both = buildChatBody(
      request({ max_tokens: 100, max_completion_tokens: 50 }),
      route({ kind: 'openai' }),
      false,
      profileFor('openai'),
    );
    expect(both).toMatchObject({ max_completion_tokens: 50 });
    expect(both).not.toHaveProperty('max_tokens');
    expect(buildChatBody(request({ max_tokens: 32000 }), route(), false, vllm)).toMatchObject({ max_tokens: 32000 });
    expect(body).not.toHaveProperty('include_reasoning');
    // Sampling extras OpenAI refuses, and reasoning another backend returned, sent back on a turn.
    const turn = { role: 'assistant' as const, content: 'ok', reasoning_content: 'hmm', thinking_blocks: [{ type: 'thinking' }] };
    const strict = buildChatBody(
      request({
        top_k: 40,
        min_p: 0.1,
        repetition_penalty: 1.1,
        messages: [{ role: 'user', content: 'a' }, turn, { role: 'user', content: 'b' }],
      }),
      route({ kind: 'openai' }),
      false,
      profileFor('openai'),
    );
    expect(Object.keys(strict)).not.toEqual(expect.arrayContaining(['top_k']));
    expect(strict).not.toHaveProperty('min_p');
    expect(strict).not.toHaveProperty('repetition_penalty');
    expect((strict.messages as unknown[])[1]).toEqual({ role: 'assistant', content: 'ok' });
    expect(buildChatBody(request({ top_k: 40, messages: [turn] }), route(), false, vllm)).toMatchObject({ top_k: 40, messages: [turn] });
    // The client's own reasoning_effort stands; other servers get what the client sent.
    expect(
      buildChatBody(
        request({ reasoning: { effort: 'high' }, reasoning_effort: 'low' }),
        route({ kind: 'openai' }),
        false,
        profileFor('openai'),
      ).reasoning_effort,
    ).toBe('low');
    expect(buildChatBody(request({ reasoning: { effort: 'high' } }), route(), false, vllm)).toMatchObject({
      reasoning: { effort: 'high' },
    });
  });

  it('DeepSeek: a json_schema response_format becomes json_object, the schema told in a system message', () => {
    const schema = { type: 'object', properties: { a: { type: 'number' } } };
    const req = request({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema } } });
    const body = buildChatBody(req, route({ kind: 'deepseek' }), false, profileFor('deepseek'));
    expect(body.response_format).toEqual({ type: 'json_object' });
    const messages = body.messages as Array<{ role: string; content: string }>;
    expect(messages[0].role).toBe('system');
    expect(messages[0].content).toContain(JSON.stringify(schema));
    expect(messages[0].content.toLowerCase()).toContain('json');
    expect(messages.slice(1)).toEqual(req.messages);
    // json_object itself passes unchanged; other servers keep json_schema
    expect(
      buildChatBody(request({ response_format: { type: 'json_object' } }), route(), false, profileFor('deepseek')).response_format,
    ).toEqual({ type: 'json_object' });
    expect(buildChatBody(req, route(), false, vllm).response_format).toEqual(req.response_format);
  });

  it.each(['deepseek', 'zhipu', 'zai'])('%s: max_completion_tokens is sent as max_tokens, the only limit it documents', (kind) => {
    const body = buildChatBody(request({ max_completion_tokens: 20 }), route({ kind }), false, profileFor(kind));
    expect(body).toMatchObject({ max_tokens: 20 });
    expect(body).not.toHaveProperty('max_completion_tokens');
    // max_tokens given too: it stands.
    expect(buildChatBody(request({ max_tokens: 5, max_completion_tokens: 20 }), route({ kind }), false, profileFor(kind))).toMatchObject({
      max_tokens: 5,
    });
    // Other servers get what the client sent.
    expect(buildChatBody(request({ max_completion_tokens: 20 }), route(), false, vllm)).toMatchObject({ max_completion_tokens: 20 });
  });

  it('Kimi: required tool choice asked in words, temperature capped at 1, max_completion_tokens as max_tokens, tool schemas cleaned', () => {
    const req = request({
      temperature: 1.5,
      max_completion_tokens: 300,
      tool_choice: 'required',
      tools: [
        {
          type: 'function',
          function: {
            name: 'f',
            strict: true,
            parameters: { $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', properties: {} },
          },
        },
        { type: 'function', function: { name: 'g' } },
      ],
    });
    const body = buildChatBody(req, route({ kind: 'kimi', providerModelId: 'kimi-k2' }), false, profileFor('kimi'));
    expect(body).toMatchObject({ temperature: 1, max_tokens: 300 });
    expect(body).not.toHaveProperty('max_completion_tokens');
    expect(body).not.toHaveProperty('tool_choice');
    expect((body.messages as unknown[]).at(-1)).toEqual({ role: 'user', content: 'Please select a tool to handle the current issue.' });
    expect(body.tools).toEqual([
      { type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } },
      { type: 'function', function: { name: 'g', parameters: { type: 'object', properties: {} } } },
    ]);
    expect(req.tool_choice).toBe('required');
  });

  it('Kimi thinking models: every assistant message with tool calls carries reasoning_content', () => {
    const messages: ChatRequest['messages'] = [
      { role: 'user', content: 'x' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
      { role: 'tool', tool_call_id: 'c1', content: 'r' },
    ];
    const body = buildChatBody(
      request({ messages }),
      route({ kind: 'moonshot', providerModelId: 'kimi-k2-thinking' }),
      false,
      profileFor('moonshot'),
    );
    expect((body.messages as ChatRequest['messages'])[1].reasoning_content).toBe(' ');
    expect(messages[1]).not.toHaveProperty('reasoning_content');
  });

  it('Zhipu: text-only list content of assistant and tool messages is sent as a string', () => {
    const messages: ChatRequest['messages'] = [
      { role: 'user', content: [{ type: 'text', text: 'keep me a list' }] },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'a' },
          { type: 'text', text: 'b' },
        ],
      },
      { role: 'tool', tool_call_id: 'c', content: [{ type: 'text', text: 'r' }] },
    ];
    const body = buildChatBody(request({ messages }), route({ kind: 'zai' }), false, profileFor('zai'));
    expect(body.messages).toEqual([messages[0], { role: 'assistant', content: 'ab' }, { role: 'tool', tool_call_id: 'c', content: 'r' }]);
  });

  it('MiniMax: temperature and top_p are kept inside (0, 1]', () => {
    const body = buildChatBody(request({ temperature: 0, top_p: 1.5 }), route({ kind: 'minimax' }), false, profileFor('minimax'));
    expect(body).toMatchObject({ temperature: 0.01, top_p: 1 });
  });
});

describe('callIdPrefix', () => {
  it('takes the random end of a UUIDv7 request id, not its time (alike for two requests of one millisecond)', () => {
    const a = callIdPrefix('018bcfe5-6800-746c-8a1b-2c3d4e5f6a7b');
    const b = callIdPrefix('018bcfe5-6800-7fb4-9c0d-1e2f3a4b5c6d');
    expect(a).toBe('8a1b2c3d4e5f6a7b');
    expect(a).not.toBe(b);
  });
});

describe('usage and answer normalisation', () => {
  it('gives whole answers ids for calls that have none', () => {
    const res = normalizeResponse(
      {
        id: 'chatcmpl-9',
        object: 'chat.completion',
        created: 0,
        model: 'm',
        choices: [
          {
            index: 0,
            finish_reason: 'tool_calls',
            message: {
              role: 'assistant',
              content: null,
              tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{}' } }] as never,
            },
          },
        ],
      },
      'req1',
    );
    // The request's own, not the upstream's answer id (which may be the same for every answer).
    expect(res.choices[0].message.tool_calls![0].id).toBe('call_req1_0_0');
  });
  it('gives answered tool calls the type "function" where the server left it out', () => {
    const res = normalizeResponse(
      {
        id: 'x',
        object: 'chat.completion',
        created: 0,
        model: 'm',
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: null, tool_calls: [{ function: { name: 'f', arguments: '{}' } }] as never },
            finish_reason: 'tool_calls',
          },
        ],
      },
      'r2',
    );
    expect(res.choices[0].message.tool_calls![0]).toMatchObject({ id: 'call_r2_0_0', type: 'function' });
  });

  it("moves DeepSeek's cache-hit count into prompt_tokens_details", () => {
    const u = normalizeUsage({
      prompt_tokens: 10,
      completion_tokens: 11,
      total_tokens: 21,
      prompt_cache_hit_tokens: 6,
      prompt_cache_miss_tokens: 4,
    });
    expect(u).toMatchObject({ prompt_tokens_details: { cached_tokens: 6 }, prompt_cache_hit_tokens: 6 });
  });

  it("moves Kimi's top-level cached_tokens and SGLang's top-level reasoning_tokens", () => {
    expect(normalizeUsage({ prompt_tokens: 9, completion_tokens: 1, total_tokens: 10, cached_tokens: 8 }).prompt_tokens_details).toEqual({
      cached_tokens: 8,
    });
    expect(
      normalizeUsage({ prompt_tokens: 9, completion_tokens: 5, total_tokens: 14, reasoning_tokens: 3 }).completion_tokens_details,
    ).toEqual({ reasoning_tokens: 3 });
  });

  it("puts reasoning counted apart from the completion into it (xAI's Grok), so the client sees what is billed", () => {
    const u = normalizeUsage({
      prompt_tokens: 100,
      completion_tokens: 50,
      total_tokens: 300,
      completion_tokens_details: { reasoning_tokens: 150 },
    });
    expect(u).toMatchObject({
      prompt_tokens: 100,
      completion_tokens: 200,
      total_tokens: 300,
      completion_tokens_details: { reasoning_tokens: 150 },
    });
  });

  it('corrects canonical details out of range to what is billed, so the client and the log agree', () => {
    const over = normalizeUsage({ prompt_tokens: 3, completion_tokens: 2, total_tokens: 5, prompt_tokens_details: { cached_tokens: 100 } });
    expect(over.prompt_tokens_details).toEqual({ cached_tokens: 3 });
    const negative = normalizeUsage({
      prompt_tokens: 3,
      completion_tokens: 2,
      total_tokens: 5,
      prompt_tokens_details: { cached_tokens: -4 },
      completion_tokens_details: { reasoning_tokens: 9 },
    });
    expect(negative.prompt_tokens_details).toEqual({ cached_tokens: 0 });
    expect(negative.completion_tokens_details).toEqual({ reasoning_tokens: 2 });
    // A total that is not the prompt plus the completion is the sum the log stores.
    expect(normalizeUsage({ prompt_tokens: 1000, completion_tokens: 500, total_tokens: 99999 }).total_tokens).toBe(1500);
    // Zeros the provider sent stay as they are.
    const zeros = normalizeUsage({ prompt_tokens: 3, completion_tokens: 2, total_tokens: 5, prompt_tokens_details: { cached_tokens: 0 } });
    expect(zeros.prompt_tokens_details).toEqual({ cached_tokens: 0 });
  });

  it('keeps canonical details that are there, and fills a missing total', () => {
    const u = normalizeUsage({
      prompt_tokens: 9,
      completion_tokens: 5,
      prompt_tokens_details: { cached_tokens: 2 },
      cached_tokens: 8,
    } as unknown as Usage);
    expect(u.prompt_tokens_details).toEqual({ cached_tokens: 2 });
    expect(u.total_tokens).toBe(14);
  });

  it("lifts Kimi's usage out of the finishing choice of a stream", () => {
    const chunk = {
      id: 'c',
      object: 'chat.completion.chunk',
      created: 1,
      model: 'k',
      choices: [
        {
          index: 0,
          delta: {},
          finish_reason: 'stop',
          usage: { prompt_tokens: 39, completion_tokens: 211, total_tokens: 250, cached_tokens: 30 },
        },
      ],
    } as ChatChunk;
    const out = normalizeChunk(chunk);
    expect(out.usage).toMatchObject({ prompt_tokens: 39, completion_tokens: 211, prompt_tokens_details: { cached_tokens: 30 } });
    expect(out.choices[0]).not.toHaveProperty('usage');
  });

  it('gives a choice without its index the index of its place, in chunks and answers', () => {
    const chunk = {
      id: 'c',
      object: 'chat.completion.chunk',
      created: 1,
      model: 'm',
      choices: [{ delta: { content: 'hi' }, finish_reason: null }],
    };
    expect(normalizeChunk(chunk as unknown as ChatChunk).choices[0].index).toBe(0);
    const res = {
      id: 'r',
      object: 'chat.completion',
      created: 1,
      model: 'm',
      choices: [{ message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }],
    };
    expect(normalizeResponse(res as unknown as ChatResponse, 'r').choices[0].index).toBe(0);
  });

  it("drops MiniMax's empty role and placeholder usage, and reads its reasoning_details", () => {
    const chunk = {
      id: 'c',
      object: 'chat.completion.chunk',
      created: 1,
      model: 'm',
      choices: [
        { index: 0, delta: { role: '', content: 'x', reasoning_details: [{ type: 'reasoning.text', text: 'hmm' }] }, finish_reason: null },
      ],
      usage: { total_tokens: 0, total_characters: 0 },
    } as unknown as ChatChunk;
    const out = normalizeChunk(chunk);
    expect(out.choices[0].delta).toMatchObject({ content: 'x', reasoning_content: 'hmm' });
    expect(out.choices[0].delta).not.toHaveProperty('role');
    expect(out).not.toHaveProperty('usage');
  });

  it("maps DeepSeek's insufficient_system_resource to length and keeps the original", () => {
    const res = {
      id: 'x',
      object: 'chat.completion',
      created: 1,
      model: 'd',
      choices: [{ index: 0, message: { role: 'assistant', content: 'cut' }, finish_reason: 'insufficient_system_resource' }],
    } as ChatResponse;
    expect(normalizeResponse(res, 'r').choices[0]).toMatchObject({
      finish_reason: 'length',
      native_finish_reason: 'insufficient_system_resource',
    });
  });

  it("finds MiniMax's errors inside an HTTP 200 answer", () => {
    const err = miniMaxError(
      { choices: null, base_resp: { status_code: 1008, status_msg: 'insufficient balance' } },
      route({ kind: 'minimax' }),
    );
    expect(err).toMatchObject({ status: 502, code: 'upstream_payment_required' });
    expect(err!.message).toMatch(/the operator's account with the provider \(402\): insufficient balance \(1008\)$/);
    expect(miniMaxError({ base_resp: { status_code: 1002, status_msg: 'rate limit' } }, route())).toMatchObject({
      status: 429,
      retryable: true,
    });
    expect(miniMaxError({ base_resp: { status_code: 0, status_msg: 'success' } }, route())).toBeUndefined();
    expect(miniMaxError({ choices: [] }, route())).toBeUndefined();
  });
});

describe('completion and embedding bodies', () => {
  it('sends a legacy completion as the client wrote it, with the upstream model and stream usage', () => {
    const body = buildCompletionBody(
      { model: 'pub', prompt: [1, 2, 3], echo: true, logprobs: 2, provider: { order: ['x'] } },
      route(),
      true,
      vllm,
    );
    expect(body).toEqual({
      model: 'meta-llama/Llama-3.1-8B-Instruct',
      prompt: [1, 2, 3],
      echo: true,
      logprobs: 2,
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it('asks for floats unless the client wants base64', () => {
    expect(buildEmbeddingsBody({ model: 'pub', input: ['a'], dimensions: 8 }, route(), vllm)).toEqual({
      model: 'meta-llama/Llama-3.1-8B-Instruct',
      input: ['a'],
      dimensions: 8,
      encoding_format: 'float',
    });
    expect(buildEmbeddingsBody({ model: 'pub', input: 'a', encoding_format: 'base64' }, route(), vllm).encoding_format).toBe('base64');
  });
});
