import { UpstreamError, type UpstreamErrorInit } from '../common/errors';
import { backoffDelay, classifyFailure, countsAgainstEndpoint, decideRetry, MIN_RETRY_MS } from './retry-policy';
import { seededRandom } from './weights';

const http = (status: number, extra: Partial<UpstreamErrorInit> = {}) =>
  new UpstreamError({ failure: 'http', upstreamStatus: status, message: `status ${status}`, ...extra });
const policy = { maxRetries: 2, backoffMs: 100, maxBackoffMs: 1000, maxRetryAfterMs: 5000, maxAttempts: 6 };

describe('classifyFailure', () => {
  it.each([
    ['connection refused', new UpstreamError({ failure: 'connect', message: 'refused' }), 'transient'],
    ['reset before any byte', new UpstreamError({ failure: 'reset', message: 'reset' }), 'transient'],
    ['500', http(500), 'transient'],
    ['503', http(503), 'transient'],
    ['429', http(429), 'transient'],
    ['408', http(408), 'transient'],
    ['first-token timeout', new UpstreamError({ failure: 'timeout', code: 'first_token_timeout', message: 't' }), 'slow'],
    ['malformed answer', new UpstreamError({ failure: 'protocol', message: 'bad json' }), 'broken'],
    ['client gone', new UpstreamError({ failure: 'aborted', message: 'gone' }), 'aborted'],
    ['400', http(400), 'request'],
    ['422', http(422), 'request'],
    ['401', http(401), 'route'],
    ['402', http(402), 'route'],
    ['403', http(403), 'route'],
    ['404', http(404), 'route'],
    ['invalid URL (not retryable)', new UpstreamError({ failure: 'connect', message: 'bad url', retryable: false }), 'route'],
  ])('%s is %s', (_, err, expected) => {
    expect(classifyFailure(err)).toBe(expected);
  });

  it.each([
    ['OpenAI code', http(400, { code: 'context_length_exceeded', message: 'too long' })],
    [
      'OpenAI / vLLM message',
      http(400, { message: "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens." }),
    ],
    ['Anthropic message', http(400, { message: 'prompt is too long: 201234 tokens > 200000 maximum' })],
    ['Gemini message', http(400, { message: 'The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).' })],
    ['413 too long', http(413, { message: 'Prompt is too long' })],
  ])('recognises a context-length error (%s)', (_, err) => {
    expect(classifyFailure(err)).toBe('context_length');
  });

  it.each([
    [
      'Azure code',
      http(400, {
        code: 'content_filter',
        message: "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
      }),
    ],
    [
      'OpenAI code',
      http(400, { code: 'content_policy_violation', message: 'Your request was rejected as a result of our safety system.' }),
    ],
    ['OpenRouter moderation 403', http(403, { message: 'Input was flagged by moderation: violence' })],
  ])('recognises a content-filter refusal (%s)', (_, err) => {
    expect(classifyFailure(err)).toBe('content_filter');
  });

  it.each([
    ["DeepSeek's 400", http(400, { message: 'Model Not Exist' })],
    ['a 400 naming the model', http(400, { message: 'The model `qwen2.5-72b` does not exist.' })],
    ['a model_not_found code', http(400, { code: 'model_not_found', message: 'no' })],
    ['a 422 from a server without it', http(422, { message: "model 'llama3.1:70b' not found, try pulling it first" })],
  ])("takes a 4xx saying the route's server lacks the model for the route's (%s): the next route may have it", (_, err) => {
    expect(classifyFailure(err)).toBe('route');
  });

  it('keeps a 400 that only mentions the model, or quotes what the client sent, for the request', () => {
    // OpenAI's refusal of an unknown parameter names it: a client choosing the name chose the class.
    expect(classifyFailure(http(400, { message: 'Unrecognized request argument supplied: model not found' }))).toBe('request');
    expect(classifyFailure(http(400, { message: "function 'select-model' not found in 'tools'" }))).toBe('request');
    expect(classifyFailure(http(400, { message: 'response_format json_schema is not supported by this model' }))).toBe('request');
    expect(classifyFailure(http(400, { message: "This model's maximum context length is 4096 tokens." }))).toBe('context_length');
  });

  it('does not take a 5xx for a context or filter problem, whatever it says', () => {
    expect(classifyFailure(http(500, { message: 'maximum context length exceeded while batching' }))).toBe('transient');
  });
});

describe('countsAgainstEndpoint', () => {
  it("counts 5xx, 408, 429, connection, reset, timeout and protocol failures, and the operator's key or credit refused", () => {
    for (const s of [500, 502, 503, 408, 429, 401, 402]) expect(countsAgainstEndpoint(http(s))).toBe(true);
    for (const failure of ['connect', 'reset', 'timeout', 'protocol'] as const)
      expect(countsAgainstEndpoint(new UpstreamError({ failure, message: 'x' }))).toBe(true);
  });

  it('does not count other client errors nor our client leaving', () => {
    for (const s of [400, 403, 404, 413, 422]) expect(countsAgainstEndpoint(http(s))).toBe(false);
    // OpenRouter's 402 may be about the request's max_tokens against the credit left.
    expect(countsAgainstEndpoint(http(402, { provider: 'openrouter' }))).toBe(false);
    const dear = 'This request requires more credits, or fewer max_tokens. You requested up to 65536 tokens, but can only afford 3919';
    expect(countsAgainstEndpoint(http(402, { message: dear }))).toBe(false);
    expect(countsAgainstEndpoint(new UpstreamError({ failure: 'aborted', message: 'gone' }))).toBe(false);
  });

  it('does not count the gateway failing on one request', () => {
    expect(countsAgainstEndpoint(new UpstreamError({ failure: 'protocol', message: 'adapter threw', gatewayFault: true }))).toBe(false);
  });
});

describe('backoffDelay', () => {
  it('stays within [ceiling/2, ceiling] where the ceiling doubles per retry up to the cap', () => {
    const random = seededRandom(7);
    for (let retry = 0; retry < 8; retry++) {
      const ceiling = Math.min(1000, 100 * 2 ** retry);
      for (let i = 0; i < 500; i++) {
        const d = backoffDelay(retry, policy, random);
        expect(d).toBeGreaterThanOrEqual(ceiling / 2);
        expect(d).toBeLessThanOrEqual(ceiling);
      }
    }
  });

  it('is jittered: spread evenly over the upper half of the ceiling', () => {
    // 10,000 draws of uniform [200, 400]: mean 300 (standard error ~0.6), and both quarters of
    // the range are hit about equally. A constant delay, or jitter over [0, 400], would fail.
    const random = seededRandom(42);
    const xs = Array.from({ length: 10_000 }, () => backoffDelay(2, policy, random));
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(Math.abs(mean - 300)).toBeLessThan(5);
    const low = xs.filter((x) => x < 300).length / xs.length;
    expect(Math.abs(low - 0.5)).toBeLessThan(0.03);
    expect(new Set(xs).size).toBeGreaterThan(150);
  });

  it('never overflows for large retry numbers', () => {
    expect(backoffDelay(1000, policy, () => 1)).toBe(1000);
  });
});

describe('decideRetry', () => {
  const random = () => 0.5;

  it('retries a transient failure on the same route with backoff, up to max_retries, then moves on', () => {
    expect(decideRetry(http(503), 0, policy, 60_000, random)).toEqual({ kind: 'retry', delayMs: 75 });
    expect(decideRetry(http(503), 1, policy, 60_000, random)).toEqual({ kind: 'retry', delayMs: 150 });
    expect(decideRetry(http(503), 2, policy, 60_000, random)).toEqual({ kind: 'next' });
    expect(decideRetry(http(503), 0, { ...policy, maxRetries: 0 }, 60_000, random)).toEqual({ kind: 'next' });
  });

  it('honours Retry-After within the cap, never retrying sooner', () => {
    expect(decideRetry(http(429, { retryAfterMs: 2000 }), 0, policy, 60_000, random)).toEqual({ kind: 'retry', delayMs: 2000 });
    // A Retry-After shorter than the backoff does not make the retry tighter.
    expect(decideRetry(http(429, { retryAfterMs: 10 }), 1, policy, 60_000, random)).toEqual({ kind: 'retry', delayMs: 150 });
  });

  it("retries at once when another credential will serve, whatever the failed one's wait", () => {
    const account = http(429, { retryAfterMs: 3_600_000, retryAtOnce: true });
    expect(decideRetry(account, 0, policy, 60_000, random)).toEqual({ kind: 'retry', delayMs: 0 });
    // Not a retry of the route: max_retries does not stop it (max_attempts still does).
    expect(decideRetry(account, 2, policy, 60_000, random)).toEqual({ kind: 'retry', delayMs: 0 });
  });

  it('moves on when Retry-After is beyond the cap', () => {
    expect(decideRetry(http(429, { retryAfterMs: 60_000 }), 0, policy, 600_000, random)).toEqual({ kind: 'next' });
    // With another route of the model left to try, a 429 moves on at once; a reset is retried here.
    expect(decideRetry(http(429, { retryAfterMs: 2000 }), 0, policy, 60_000, random, 1)).toEqual({ kind: 'next' });
    expect(decideRetry(http(503), 0, policy, 60_000, random, 1)).toMatchObject({ kind: 'retry' });
  });

  it('moves on when the wait would not fit in the time left', () => {
    expect(decideRetry(http(503), 0, policy, 50, random)).toEqual({ kind: 'next' });
    expect(decideRetry(http(429, { retryAfterMs: 2000 }), 0, policy, 1999, random)).toEqual({ kind: 'next' });
    // Nor when it would leave less than the try itself needs (MIN_RETRY_MS): the wait is not made.
    expect(decideRetry(http(429, { retryAfterMs: 2000 }), 0, policy, 2050, random)).toEqual({ kind: 'next' });
    expect(decideRetry(http(429, { retryAfterMs: 2000 }), 0, policy, 2000 + MIN_RETRY_MS, random)).toEqual({
      kind: 'retry',
      delayMs: 2000,
    });
  });

  it('never retries a deterministic client error, and stops there', () => {
    expect(decideRetry(http(400), 0, policy, 60_000, random)).toEqual({ kind: 'stop' });
    expect(decideRetry(http(400, { code: 'content_filter' }), 0, policy, 60_000, random)).toEqual({ kind: 'stop' });
  });

  it('sends a context-length error looking for a larger context', () => {
    expect(decideRetry(http(400, { code: 'context_length_exceeded' }), 0, policy, 60_000, random)).toEqual({ kind: 'larger_context' });
  });

  it('moves on, without retrying here, after a timeout, a broken answer or a route-specific 4xx', () => {
    expect(decideRetry(new UpstreamError({ failure: 'timeout', message: 't' }), 0, policy, 60_000, random)).toEqual({ kind: 'next' });
    expect(decideRetry(new UpstreamError({ failure: 'protocol', message: 'p' }), 0, policy, 60_000, random)).toEqual({ kind: 'next' });
    expect(decideRetry(http(401), 0, policy, 60_000, random)).toEqual({ kind: 'next' });
  });

  it('stops, neither retrying nor moving on, after a failure every route would repeat', () => {
    const tooLarge = (extra: Partial<UpstreamErrorInit> = {}) =>
      new UpstreamError({ failure: 'protocol', code: 'upstream_too_large', message: 'big', gatewayFault: true, ...extra });
    expect(decideRetry(tooLarge({ sameOnEveryRoute: true }), 0, policy, 60_000, random)).toEqual({ kind: 'stop' });
    expect(decideRetry(tooLarge(), 0, policy, 60_000, random)).toEqual({ kind: 'next' });
  });

  it('stops when the client has left', () => {
    expect(decideRetry(new UpstreamError({ failure: 'aborted', message: 'gone' }), 0, policy, 60_000, random)).toEqual({ kind: 'stop' });
  });
});
