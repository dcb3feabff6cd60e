import type { Usage } from './chat.types';
import { isSoundUsage, tokenCounts, usageFromCounts } from './usage';

const usage = (u: Partial<Usage>): Usage => ({ prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, ...u });

describe('tokenCounts', () => {
  it('reads plain prompt and completion counts', () => {
    expect(tokenCounts(usage({ prompt_tokens: 12, completion_tokens: 34, total_tokens: 46 }))).toEqual({
      prompt: 12,
      completion: 34,
      cachedRead: 0,
      cacheWrite: 0,
      reasoning: 0,
    });
  });

  it("reads OpenAI's details objects", () => {
    const u = usage({
      prompt_tokens: 1000,
      completion_tokens: 300,
      prompt_tokens_details: { cached_tokens: 640, cache_write_tokens: 100 },
      completion_tokens_details: { reasoning_tokens: 120 },
    });
    expect(tokenCounts(u)).toEqual({ prompt: 1000, completion: 300, cachedRead: 640, cacheWrite: 100, reasoning: 120 });
  });

  it("reads DeepSeek's prompt_cache_hit_tokens", () => {
    const u = usage({ prompt_tokens: 100, completion_tokens: 5, prompt_cache_hit_tokens: 64, prompt_cache_miss_tokens: 36 });
    expect(tokenCounts(u).cachedRead).toBe(64);
  });

  it("reads Kimi's top-level cached_tokens", () => {
    expect(tokenCounts(usage({ prompt_tokens: 100, cached_tokens: 50 })).cachedRead).toBe(50);
  });

  it("reads SGLang's top-level reasoning_tokens", () => {
    expect(tokenCounts(usage({ completion_tokens: 80, reasoning_tokens: 30 })).reasoning).toBe(30);
  });

  it("counts reasoning in the completion when the total says it was counted apart (xAI's Grok)", () => {
    const grok = { prompt_tokens: 100, completion_tokens: 50, total_tokens: 300, completion_tokens_details: { reasoning_tokens: 150 } };
    expect(tokenCounts(grok)).toMatchObject({ prompt: 100, completion: 200, reasoning: 150 });
    // All of it reasoning, none counted as completion.
    expect(tokenCounts({ prompt_tokens: 21, completion_tokens: 0, total_tokens: 81, reasoning_tokens: 60 })).toMatchObject({
      completion: 60,
      reasoning: 60,
    });
    // Reasoning within the completion (OpenAI's way), and a total that adds up to neither: as sent.
    expect(tokenCounts({ ...grok, total_tokens: 150 })).toMatchObject({ completion: 50, reasoning: 50 });
    expect(tokenCounts({ ...grok, total_tokens: 999 })).toMatchObject({ completion: 50, reasoning: 50 });
  });

  it('reads Anthropic-style cache_creation_input_tokens as cache writes', () => {
    expect(tokenCounts(usage({ prompt_tokens: 100, cache_creation_input_tokens: 40 })).cacheWrite).toBe(40);
  });

  it('prefers the details object when a provider reports both', () => {
    const u = usage({ prompt_tokens: 100, prompt_tokens_details: { cached_tokens: 20 }, cached_tokens: 99 });
    expect(tokenCounts(u).cachedRead).toBe(20);
  });

  it('treats null details and nonsense numbers as zero', () => {
    const u = {
      prompt_tokens: -5,
      completion_tokens: 'many',
      total_tokens: 0,
      prompt_tokens_details: null,
      completion_tokens_details: null,
      cached_tokens: Number.NaN,
    } as unknown as Usage;
    expect(tokenCounts(u)).toEqual({ prompt: 0, completion: 0, cachedRead: 0, cacheWrite: 0, reasoning: 0 });
  });

  it('reads a fraction as no count', () => {
    expect(tokenCounts(usage({ prompt_tokens: 10.9, completion_tokens: 2, cached_tokens: 1.5 }))).toMatchObject({
      prompt: 0,
      completion: 2,
      cachedRead: 0,
    });
  });

  it('keeps cached, cache-write and reasoning figures within their totals', () => {
    const u = usage({
      prompt_tokens: 10,
      completion_tokens: 5,
      prompt_tokens_details: { cached_tokens: 50, cache_write_tokens: 3 },
      completion_tokens_details: { reasoning_tokens: 99 },
    });
    expect(tokenCounts(u)).toEqual({ prompt: 10, completion: 5, cachedRead: 10, cacheWrite: 0, reasoning: 5 });
    const w = usage({ prompt_tokens: 10, prompt_tokens_details: { cached_tokens: 8, cache_write_tokens: 5 } });
    expect(tokenCounts(w)).toMatchObject({ cachedRead: 8, cacheWrite: 2 });
  });
});

describe('usageFromCounts', () => {
  it('adds up the total', () => {
    expect(usageFromCounts(7, 3)).toEqual({ prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 });
  });
});

describe('isSoundUsage', () => {
  it('takes whole counts from 0 to a billion, and no fractions', () => {
    expect(isSoundUsage(usage({ prompt_tokens: 0, completion_tokens: 1_000_000_000 }))).toBe(true);
    expect(isSoundUsage(usage({ prompt_tokens: 12.5, completion_tokens: 3 }))).toBe(false);
    expect(isSoundUsage(usage({ prompt_tokens: 12, completion_tokens: 3.0 }))).toBe(true);
  });

  it('refuses what an upstream sends by mistake', () => {
    for (const bad of [-1, 1_000_000_001, 1e300, Infinity, NaN, '12', null, undefined]) {
      expect(isSoundUsage({ prompt_tokens: bad, completion_tokens: 1 })).toBe(false);
      expect(isSoundUsage({ prompt_tokens: 1, completion_tokens: bad })).toBe(false);
    }
    expect(isSoundUsage(null)).toBe(false);
    expect(isSoundUsage({ total_tokens: 0, total_characters: 0 })).toBe(false);
  });

  it('reads a count out of range as none', () => {
    expect(tokenCounts(usage({ prompt_tokens: 10, cached_tokens: 1e300 })).cachedRead).toBe(0);
  });
});
