import type { ChatRequest } from '../../common/chat.types';
import { UpstreamError } from '../../common/errors';
import type { RouteDef } from '../../config/registry.types';
import { buildChatBody, endpointUrl, upstreamHttpError } from './openai-compat.mapper';
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

  it('strips the fields only the gateway acts on', () => {
    const req = request({
      models: ['a', 'b'],
      provider: { order: ['x'] },
      route: 'fallback',
      transforms: ['middle-out'],
      plugins: [{ id: 'web' }],
      usage: { include: true },
    });
    const body = buildChatBody(req, route(), false, vllm);
    for (const f of ['models', 'provider', 'route', 'transforms', 'plugins', 'usage']) expect(body).not.toHaveProperty(f);
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

describe('upstreamHttpError', () => {
  const r = route({ id: 'gpu-1', kind: 'vllm' });

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
    expect(err).toMatchObject({ status: 400, message: 'max_tokens must be at least 1, got 0.', type: 'BadRequestError', code: 400 });
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
