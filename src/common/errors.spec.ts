import { contextWindowOf, retryAfterHeaders, UpstreamError } from './errors';

describe('UpstreamError', () => {
  it('tells the client when to come back on a 429 or a 503 whose upstream said so, and not otherwise', () => {
    const at = (status: number, retryAfterMs?: number) =>
      new UpstreamError({ failure: 'http', upstreamStatus: status, message: 'x', status: status === 503 ? 503 : undefined, retryAfterMs })
        .headers;
    expect(at(429, 2500)).toEqual({ 'retry-after': '3' });
    expect(at(503, 7000)).toEqual({ 'retry-after': '7' });
    expect(at(503)).toBeUndefined();
    // A plain 5xx becomes a 502: the gateway, not the upstream, is answering.
    expect(at(500, 7000)).toBeUndefined();
  });
});

describe('contextWindowOf', () => {
  const err = (message: string) => new UpstreamError({ failure: 'http', upstreamStatus: 400, message });
  it.each([
    [
      "vLLM's and OpenAI's",
      "This model's maximum context length is 32768 tokens. However, you requested 37000 tokens (5000 in the messages, 32000 in the completion). Please reduce the length of the messages or completion.",
    ],
    [
      "vLLM's newer",
      "'max_tokens' or 'max_completion_tokens' is too large: 32000. This model's maximum context length is 32768 tokens and your request has 5000 input tokens (32000 > 32768 - 5000).",
    ],
    [
      "SGLang's",
      "Requested token count exceeds the model's maximum context length of 32768 tokens. You requested a total of 37000 tokens: 5000 tokens from the input messages and 32000 tokens for the completion.",
    ],
    [
      "OpenRouter's (its input in parts)",
      'This endpoint\'s maximum context length is 32768 tokens. However, you requested about 37000 tokens (4000 of text input, 1000 of tool input, 32000 in the output). Please reduce the length of either one, or use the "middle-out" transform to compress your prompt automatically.',
    ],
  ])('reads the window and the prompt from %s message', (_, message) => {
    expect(contextWindowOf(err(message))).toEqual({ window: 32768, prompt: 5000 });
  });

  it('says nothing where the message does not give both', () => {
    expect(
      contextWindowOf(err("This model's maximum context length is 5 tokens. However, your messages resulted in 9 tokens.")),
    ).toBeUndefined();
    expect(contextWindowOf(err('prompt is too long: 210000 tokens > 200000 maximum'))).toBeUndefined();
  });
});

describe('retryAfterHeaders', () => {
  it('gives whole seconds, at least one, and tells clients not to retry on their own past a minute', () => {
    expect(retryAfterHeaders(0)).toEqual({ 'retry-after': '1' });
    expect(retryAfterHeaders(1500)).toEqual({ 'retry-after': '2' });
    expect(retryAfterHeaders(60_000)).toEqual({ 'retry-after': '60' });
    expect(retryAfterHeaders(86_399_000)).toEqual({ 'retry-after': '86399', 'x-should-retry': 'false' });
  });
});

describe('an upstream client error passed through', () => {
  const of = (upstreamStatus: number, code?: string | number | null) =>
    new UpstreamError({ failure: 'http', upstreamStatus, message: 'm', code: code });

  it("keeps a string code, drops a numeric one (OpenRouter's status again), and names a rate limit as OpenAI does", () => {
    expect(of(400, 'context_length_exceeded').code).toBe('context_length_exceeded');
    expect(of(429, 429).code).toBe('rate_limit_exceeded');
    expect(of(429).code).toBe('rate_limit_exceeded');
    expect(of(402, 402).code).toBeNull();
    expect(of(403).code).toBeNull();
  });

  it("answers a provider's context-window refusal with OpenAI's code, whatever the provider called it", () => {
    const claude = new UpstreamError({
      failure: 'http',
      upstreamStatus: 400,
      code: 'invalid_request_error',
      message: 'prompt is too long: 201234 tokens > 200000 maximum',
    });
    expect(claude.toBody().error).toMatchObject({ code: 'context_length_exceeded', message: claude.message });
    const gemini = new UpstreamError({
      failure: 'http',
      upstreamStatus: 400,
      code: 'INVALID_ARGUMENT',
      message: 'The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).',
    });
    expect(gemini.toBody().error.code).toBe('context_length_exceeded');
    // Another 400 keeps its own.
    expect(of(400, 'invalid_value').toBody().error.code).toBe('invalid_value');
  });
});

describe('UpstreamError.with', () => {
  it('changes what it is told and keeps the rest: status, details, metadata, x-should-retry', () => {
    const err = new UpstreamError({
      failure: 'http',
      upstreamStatus: 429,
      message: 'slow down',
      status: 429,
      retryAfterMs: 2000,
      metadata: { provider_name: 'p' },
      details: { error_code: 'x' },
      route: 'r1',
    }).refuseRetry();
    const again = err.with({ retryable: true, retryAtOnce: true });
    expect(again).toMatchObject({
      status: 429,
      upstreamStatus: 429,
      message: 'slow down',
      retryable: true,
      retryAtOnce: true,
      route: 'r1',
      metadata: { provider_name: 'p' },
      details: { error_code: 'x' },
      headers: { 'retry-after': '2', 'x-should-retry': 'false' },
    });
  });
});
