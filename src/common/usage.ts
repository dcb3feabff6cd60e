import type { Usage } from './chat.types';
import type { TokenCounts } from './money';

const n = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? Math.trunc(v) : 0);

/**
 * Token counts from an OpenAI-style usage object, wherever the provider put the cached and
 * reasoning figures (OpenAI's `*_details`, DeepSeek's `prompt_cache_hit_tokens`, Kimi's top-level
 * `cached_tokens`, SGLang's top-level `reasoning_tokens`).
 */
export function tokenCounts(u: Usage): TokenCounts {
  const pd = u.prompt_tokens_details ?? {};
  const cd = u.completion_tokens_details ?? {};
  return {
    prompt: n(u.prompt_tokens),
    completion: n(u.completion_tokens),
    cachedRead: n(pd.cached_tokens) || n(u.prompt_cache_hit_tokens) || n(u.cached_tokens),
    cacheWrite: n(pd.cache_write_tokens) || n(u.cache_creation_input_tokens),
    reasoning: n(cd.reasoning_tokens) || n(u.reasoning_tokens),
  };
}

export function usageFromCounts(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
