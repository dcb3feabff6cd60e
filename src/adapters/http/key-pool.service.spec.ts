import { testRoute } from '../../../test/helpers/route';
import { UpstreamError } from '../../common/errors';
import type { RouteDef } from '../../config/registry.types';
import { KEY_MUTE_MS, KeyPool } from './key-pool.service';
import { providerHttpError } from './upstream-call';

function route(apiKeys: string[], baseUrl = 'https://api.example.com/v1'): RouteDef {
  return testRoute({ id: 'r', kind: 'openai_compat', baseUrl, apiKeys, providerModelId: 'm' });
}

const refused = (status: number, retryAfterMs?: number) =>
  new UpstreamError({ failure: 'http', upstreamStatus: status, message: `HTTP ${status}`, retryAfterMs });

describe('KeyPool', () => {
  let pool: KeyPool;
  let now: number;
  const signal = new AbortController().signal;
  let requests = 0;
  /** A new request's call context. */
  const req = () => ({ requestId: `req-${++requests}`, signal });

  beforeEach(() => {
    pool = new KeyPool();
    now = 1_000_000;
    pool.now = () => now;
  });

  it('takes the keys in turn, one per call', async () => {
    const r = route(['a', 'b', 'c']);
    const used: Array<string | undefined> = [];
    for (let i = 0; i < 4; i++) await pool.run(r, req(), async (k) => used.push(k));
    expect(used).toEqual(['a', 'b', 'c', 'a']);
  });

  it('calls a keyless route once, without a key', async () => {
    const calls: Array<string | undefined> = [];
    await pool.run(route([]), req(), async (k) => calls.push(k));
    expect(calls).toEqual([undefined]);
  });

  it.each([429, 401, 403])('on %d moves to another key, never reusing one, and mutes the refused key', async (status) => {
    const r = route(['a', 'b', 'c']);
    const calls: string[] = [];
    const res = await pool.run(r, req(), async (k) => {
      calls.push(k!);
      if (k === 'a') throw refused(status);
      return `ok with ${k}`;
    });
    expect(res).toBe('ok with b');
    expect(calls).toEqual(['a', 'b']);
    expect(pool.isMuted(r, 'a')).toBe(true);
    expect(pool.isMuted(r, 'b')).toBe(false);
  });

  it('throws the last refusal, marked not worth repeating on this route, once every key was tried once', async () => {
    const r = route(['a', 'b', 'c']);
    const calls: string[] = [];
    const run = pool.run(r, req(), async (k) => {
      calls.push(k!);
      throw refused(429, 2000);
    });
    await expect(run).rejects.toMatchObject({ upstreamStatus: 429, status: 429, retryable: false, retryAfterMs: 2000 });
    expect(calls.sort()).toEqual(['a', 'b', 'c']);
  });

  it("keeps the status the refusal gave the client: every key's 401 is the gateway's credentials refused, a 502", async () => {
    const r = route(['a', 'b']);
    const run = pool.run(r, req(), async () => {
      throw providerHttpError(401, { message: 'Incorrect API key provided' }, r, undefined);
    });
    await expect(run).rejects.toMatchObject({
      upstreamStatus: 401,
      status: 502,
      code: 'upstream_unauthorized',
      headers: { 'x-should-retry': 'false' },
    });
  });

  it("keeps the upstream's own x-should-retry: false once every key refused", async () => {
    const run = pool.run(route(['a', 'b']), req(), async () => {
      throw refused(429, 7000).refuseRetry();
    });
    await expect(run).rejects.toMatchObject({ status: 429, headers: { 'retry-after': '7', 'x-should-retry': 'false' } });
  });

  it('never sends a request again to a key that refused it, also when the route is tried again later', async () => {
    const r = route(['a', 'b', 'c']);
    const ctx = req();
    const calls: string[] = [];
    // a refuses; b fails for another reason (the executor may try the route again)
    await expect(
      pool.run(r, ctx, async (k) => {
        calls.push(k!);
        throw k === 'a' ? refused(429, 1000) : refused(500);
      }),
    ).rejects.toMatchObject({ upstreamStatus: 500 });
    now += 5000; // a's pause is over, but it refused this request
    const again: string[] = [];
    await pool
      .run(r, ctx, async (k) => {
        again.push(k!);
        if (k !== 'a') throw refused(403);
      })
      .catch(() => undefined);
    expect(calls).toEqual(['a', 'b']);
    expect(again).not.toContain('a');
    expect(again.sort()).toEqual(['b', 'c']);
    // every key has now refused this request: the next try calls nobody
    const last: string[] = [];
    await expect(pool.run(r, ctx, async (k) => last.push(k!))).rejects.toMatchObject({ upstreamStatus: 403, retryable: false });
    expect(last).toEqual([]);
  });

  it('does not change keys for other failures', async () => {
    const r = route(['a', 'b']);
    const calls: string[] = [];
    const run = pool.run(r, req(), async (k) => {
      calls.push(k!);
      throw refused(500);
    });
    await expect(run).rejects.toMatchObject({ upstreamStatus: 500 });
    expect(calls).toEqual(['a']);
    expect(pool.isMuted(r, 'a')).toBe(false);
  });

  it('skips a muted key until its pause (Retry-After, else the default) is over', async () => {
    const r = route(['a', 'b']);
    await pool.run(r, req(), async (k) => {
      if (k === 'a') throw refused(429, 5000);
    });
    const used: string[] = [];
    for (let i = 0; i < 3; i++) await pool.run(r, req(), async (k) => used.push(k!));
    expect(used).toEqual(['b', 'b', 'b']);
    now += 5001;
    for (let i = 0; i < 2; i++) await pool.run(r, req(), async (k) => used.push(k!));
    expect(used.slice(3).sort()).toEqual(['a', 'b']);
  });

  it('mutes 401/403 keys for longer than a rate limit', async () => {
    const r = route(['a', 'b', 'c']);
    await pool.run(r, req(), async (k) => {
      if (k === 'a') throw refused(401);
      if (k === 'b') throw refused(429);
    });
    now += KEY_MUTE_MS.rateLimited + 1;
    expect(pool.isMuted(r, 'b')).toBe(false);
    expect(pool.isMuted(r, 'a')).toBe(true);
    now += KEY_MUTE_MS.refused;
    expect(pool.isMuted(r, 'a')).toBe(false);
  });

  it('when every key sits out, still tries the one whose pause ends first (once)', async () => {
    const r = route(['a', 'b']);
    pool.mute(r, 'a', refused(429, 60_000));
    pool.mute(r, 'b', refused(429, 2_000));
    const calls: string[] = [];
    await expect(
      pool.run(r, req(), async (k) => {
        calls.push(k!);
        throw refused(429, 2_000);
      }),
    ).rejects.toBeInstanceOf(UpstreamError);
    expect(calls).toEqual(['b']);
  });

  it('shares a key’s pause between routes of the same upstream, not across upstreams', async () => {
    const one = route(['a', 'b']);
    const two = { ...route(['a', 'b']), id: 'other' };
    const elsewhere = route(['a', 'b'], 'https://other.example.com/v1');
    await pool.run(one, req(), async (k) => {
      if (k === 'a') throw refused(429);
    });
    expect(pool.isMuted(two, 'a')).toBe(true);
    expect(pool.isMuted(elsewhere, 'a')).toBe(false);
  });

  it('stops when the request was cancelled', async () => {
    const ac = new AbortController();
    const calls: string[] = [];
    const run = pool.run(route(['a', 'b']), { requestId: 'cancelled', signal: ac.signal }, async (k) => {
      calls.push(k!);
      ac.abort();
      throw refused(429);
    });
    await expect(run).rejects.toBeInstanceOf(UpstreamError);
    expect(calls).toEqual(['a']);
  });
});
