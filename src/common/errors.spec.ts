import { UpstreamError } from './errors';

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
