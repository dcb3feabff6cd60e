import { HeldTextLimit } from '../../common/held-text';
import { SseDecoder } from '../../common/sse';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { errors as undiciErrors } from 'undici';
import { UpstreamError } from '../../common/errors';
import type { AppConfig, UpstreamTimeouts } from '../../config/app-config';
import type { RouteDef } from '../../config/registry.types';
import { classifyFailure, countsAgainstEndpoint } from '../../routing/retry-policy';
import { probeGet } from './upstream-call';
import { UpstreamClient } from './upstream-client.service';

describe('UpstreamClient', () => {
  let server: Server;
  let url: string;
  let client: UpstreamClient;
  const timeouts = (connectMs: number): UpstreamTimeouts => ({
    connectMs,
    firstByteMs: 5000,
    firstTokenMs: 5000,
    idleMs: 5000,
    totalMs: 5000,
  });
  const get = async (connectMs: number) => {
    const res = await client.request({
      url,
      method: 'GET',
      signal: new AbortController().signal,
      timeouts: timeouts(connectMs),
      route: 'r',
      provider: 'p',
    });
    await res.body.text();
  };

  beforeAll(async () => {
    server = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/models`;
  });
  beforeEach(() => {
    client = new UpstreamClient({ env: { UPSTREAM_MAX_CONNECTIONS: 4, UPSTREAM_KEEPALIVE_MS: 1000 } } as unknown as AppConfig);
  });
  afterEach(() => client.onApplicationShutdown());
  afterAll(() => new Promise((r) => server.close(r)));

  const pools = () => (client as unknown as { pools: Map<string, unknown> }).pools.size;

  it('keeps one pool per origin for calls with the same connect timeout', async () => {
    await get(1000);
    await get(1000);
    expect(pools()).toBe(1);
  });

  it('takes a connect timeout as a timeout: a 504, and the next route at once', () => {
    const err = client.toUpstreamError(new undiciErrors.ConnectTimeoutError(), {
      signal: new AbortController().signal,
      timeouts: timeouts(1000),
      route: 'r',
      provider: 'p',
    });
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err).toMatchObject({ status: 504, code: 'connect_timeout', message: 'could not connect to upstream r within 1000 ms' });
    expect(classifyFailure(err as UpstreamError)).toBe('slow');
  });

  it('takes a header undici will not send as no fault of the endpoint, not a reset to try again there', async () => {
    const err = await client
      .request({
        url,
        method: 'GET',
        headers: { session_id: 'a\nb' },
        signal: new AbortController().signal,
        timeouts: timeouts(1000),
        route: 'r',
        provider: 'p',
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toMatchObject({ failure: 'protocol', gatewayFault: true, status: 502 });
    expect(countsAgainstEndpoint(err as UpstreamError)).toBe(false);
    expect(classifyFailure(err as UpstreamError)).toBe('broken');
  });

  it('takes a stream event past the limit as an answer too large, not a broken connection to try again', () => {
    let thrown: unknown;
    try {
      new SseDecoder(100).push('data: ' + 'x'.repeat(200));
    } catch (e) {
      thrown = e;
    }
    const err = client.toUpstreamError(thrown, {
      signal: new AbortController().signal,
      timeouts: timeouts(1000),
      route: 'r',
      provider: 'p',
    });
    expect(err).toMatchObject({ status: 502, failure: 'protocol', code: 'upstream_too_large' });
    expect(err.message).toBe('upstream r sent a stream event longer than 100 characters');
  });

  it('takes unfinished upstream text past what the process may hold as the gateway overloaded: a 503, no route at fault', () => {
    const err = client.toUpstreamError(new HeldTextLimit('sent a stream event of over 2 characters'), {
      signal: new AbortController().signal,
      timeouts: timeouts(1000),
      route: 'r',
      provider: 'p',
    });
    expect(err).toMatchObject({ status: 503, code: 'gateway_overloaded', gatewayFault: true, retryable: false });
    expect((err as UpstreamError).headers).toEqual({ 'retry-after': '1' });
  });

  it('lets a health probe take as long as its signal allows (health_check_timeout_ms may exceed 5 s)', async () => {
    const slow = createServer((_req, res) => setTimeout(() => res.end('{"data":[]}'), 6300));
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    try {
      const route = { id: 'r', kind: 'openai_compat' } as RouteDef;
      const result = await probeGet(
        client,
        `http://127.0.0.1:${(slow.address() as AddressInfo).port}/v1/models`,
        {},
        route,
        AbortSignal.timeout(9000),
      );
      expect(result).toMatchObject({ ok: true, detail: 'HTTP 200' });
      expect(result.latencyMs).toBeGreaterThan(6000);
    } finally {
      slow.closeAllConnections();
      await new Promise((r) => slow.close(r));
    }
  }, 15_000);

  it("gives a route on the same origin its own connect timeout (not the first route's)", async () => {
    await get(1000);
    await get(250);
    expect(pools()).toBe(2);
  });

  it("takes a success answer cut short as the next route's turn, not a reset to try again here", async () => {
    const cutter = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '500' });
      res.write('{"id": "chatcmpl-1", "choices": [');
      setTimeout(() => res.socket?.destroy(), 20);
    });
    await new Promise<void>((r) => cutter.listen(0, '127.0.0.1', r));
    try {
      const call = { signal: new AbortController().signal, timeouts: timeouts(1000), route: 'r', provider: 'p' };
      const url = `http://127.0.0.1:${(cutter.address() as AddressInfo).port}/`;
      const res = await client.request({ ...call, url, method: 'GET' });
      const err = (await client.readAnswer(res.body, res.headers, call).catch((e: unknown) => e)) as UpstreamError;
      expect(err).toBeInstanceOf(UpstreamError);
      expect(err).toMatchObject({ failure: 'reset', retryable: false, status: 502 });
      expect(classifyFailure(err)).toBe('route');
      expect(countsAgainstEndpoint(err)).toBe(true);
    } finally {
      cutter.closeAllConnections();
      await new Promise((r) => cutter.close(r));
    }
  });

  it('reads an answer up to the limit, a character split between chunks whole', async () => {
    // "é" is two bytes in UTF-8: sent apart, each half alone would decode to U+FFFD.
    const halves = Buffer.from('"é"');
    const split = createServer((_req, res) => {
      res.write(halves.subarray(0, 2));
      setTimeout(() => res.end(halves.subarray(2)), 20);
    });
    await new Promise<void>((r) => split.listen(0, '127.0.0.1', r));
    const limited = new UpstreamClient({
      env: { UPSTREAM_MAX_CONNECTIONS: 4, UPSTREAM_KEEPALIVE_MS: 1000, UPSTREAM_BODY_LIMIT: '4b' },
      upstreamBodyLimitBytes: 4,
    } as unknown as AppConfig);
    const over = new UpstreamClient({
      env: { UPSTREAM_MAX_CONNECTIONS: 4, UPSTREAM_KEEPALIVE_MS: 1000, UPSTREAM_BODY_LIMIT: '3b' },
      upstreamBodyLimitBytes: 3,
    } as unknown as AppConfig);
    try {
      const call = { signal: new AbortController().signal, timeouts: timeouts(1000), route: 'r', provider: 'p' };
      const url = `http://127.0.0.1:${(split.address() as AddressInfo).port}/`;
      const res = await limited.request({ ...call, url, method: 'GET' });
      await expect(limited.readAnswer(res.body, res.headers, call)).resolves.toBe('"é"');
      const cut = await over.request({ ...call, url, method: 'GET' });
      await expect(over.readAnswer(cut.body, cut.headers, call)).rejects.toMatchObject({
        status: 502,
        code: 'upstream_too_large',
        message: 'upstream r answered more than 3b (UPSTREAM_BODY_LIMIT)',
      });
      expect(cut.body.destroyed).toBe(true);
    } finally {
      await Promise.all([limited.onApplicationShutdown(), over.onApplicationShutdown()]);
      split.closeAllConnections();
      await new Promise((r) => split.close(r));
    }
  });
});
