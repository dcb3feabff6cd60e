import { UpstreamError } from '../../common/errors';
import type { RouteDef } from '../../config/registry.types';
import { KEY_MUTE_MS, KeyPool } from './key-pool.service';

function route(apiKeys: string[], baseUrl = 'https://api.example.com/v1'): RouteDef {
  return { id: 'r', kind: 'openai_compat', baseUrl, apiKeys, providerModelId: 'm', weight: 1, locality: 'remote', headers: {}, timeouts: {}, options: {}, where: 'test' };
}

const refused = (status: number, retryAfterMs?: number) => new UpstreamError({ failure: 'http', upstreamStatus: status, message: `HTTP ${status}`, retryAfterMs });

describe('KeyPool', () => {
  let pool: KeyPool;
  let now: number;
  const signal = new AbortController().signal;

  beforeEach(() => {
    pool = new KeyPool();
    now = 1_000_000;
    pool.now = () => now;
  });

  it('takes the keys in turn, one per call', async () => {
    const r = route(['a', 'b', 'c']);
    const used: Array<string | undefined> = [];
    for (let i = 0; i < 4; i++) await pool.run(r, signal, async (k) => used.push(k));
    expect(used).toEqual(['a', 'b', 'c', 'a']);
  });

  it('calls a keyless route once, without a key', async () => {
    const calls: Array<string | undefined> = [];
    await pool.run(route([]), signal, async (k) => calls.push(k));
    expect(calls).toEqual([undefined]);
  });

  it.each([429, 401, 403])('on %d moves to another key, never reusing one, and mutes the refused key', async (status) => {
    const r = route(['a', 'b', 'c']);
    const calls: string[] = [];
    const res = await pool.run(r, signal, async (k) => {
      calls.push(k!);
      if (k === 'a') throw refused(status);
      return `ok with ${k}`;
    });
    expect(res).toBe('ok with b');
    expect(calls).toEqual(['a', 'b']);
    expect(pool.isMuted(r, 'a')).toBe(true);
    expect(pool.isMuted(r, 'b')).toBe(false);
  });

  it('throws the last refusal once every key was tried once', async () => {
    const r = route(['a', 'b', 'c']);
    const calls: string[] = [];
    const run = pool.run(r, signal, async (k) => {
      calls.push(k!);
      throw refused(429);
    });
    await expect(run).rejects.toMatchObject({ upstreamStatus: 429 });
    expect(calls.sort()).toEqual(['a', 'b', 'c']);
  });

  it('does not change keys for other failures', async () => {
    const r = route(['a', 'b']);
    const calls: string[] = [];
    const run = pool.run(r, signal, async (k) => {
      calls.push(k!);
      throw refused(500);
    });
    await expect(run).rejects.toMatchObject({ upstreamStatus: 500 });
    expect(calls).toEqual(['a']);
    expect(pool.isMuted(r, 'a')).toBe(false);
  });

  it('skips a muted key until its pause (Retry-After, else the default) is over', async () => {
    const r = route(['a', 'b']);
    await pool.run(r, signal, async (k) => {
      if (k === 'a') throw refused(429, 5000);
    });
    const used: string[] = [];
    for (let i = 0; i < 3; i++) await pool.run(r, signal, async (k) => used.push(k!));
    expect(used).toEqual(['b', 'b', 'b']);
    now += 5001;
    for (let i = 0; i < 2; i++) await pool.run(r, signal, async (k) => used.push(k!));
    expect(used.slice(3).sort()).toEqual(['a', 'b']);
  });

  it('mutes 401/403 keys for longer than a rate limit', async () => {
    const r = route(['a', 'b', 'c']);
    await pool.run(r, signal, async (k) => {
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
      pool.run(r, signal, async (k) => {
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
    await pool.run(one, signal, async (k) => {
      if (k === 'a') throw refused(429);
    });
    expect(pool.isMuted(two, 'a')).toBe(true);
    expect(pool.isMuted(elsewhere, 'a')).toBe(false);
  });

  it('stops when the request was cancelled', async () => {
    const ac = new AbortController();
    const calls: string[] = [];
    const run = pool.run(route(['a', 'b']), ac.signal, async (k) => {
      calls.push(k!);
      ac.abort();
      throw refused(429);
    });
    await expect(run).rejects.toBeInstanceOf(UpstreamError);
    expect(calls).toEqual(['a']);
  });
});
