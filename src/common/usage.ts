import type { Usage } from './chat.types';
import type { TokenCounts } from './money';

/**
 * The largest token count taken from an upstream for one request. Beyond it a figure is garbage
 * (no context holds a billion tokens), would bill absurd sums and would not fit `api_logs`'
 * integer columns on PostgreSQL.
 */
export const MAX_TOKEN_COUNT = 1_000_000_000;

/**
 * A token count as an upstream may report it: a whole number from 0 to MAX_TOKEN_COUNT. A
 * fraction is no count of tokens; taking it would show the client one figure and bill another.
 */
export function isTokenCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= MAX_TOKEN_COUNT;
}

/** A token count, or 0 for anything that is not one. */
export const countOrZero = (v: unknown): number => (isTokenCount(v) ? v : 0);
const n = countOrZero;

/**
 * Usage that can be billed: prompt and completion are token counts. Anything else (negative,
 * text, 1e300) is the upstream's error, and the request is billed on the gateway's estimate.
 */
export function isSoundUsage(u: unknown): u is Usage {
  return typeof u === 'object' && u !== null && isTokenCount((u as Usage).prompt_tokens) && isTokenCount((u as Usage).completion_tokens);
}

/**
 * Token counts from an OpenAI-style usage object, wherever the provider put the cached and
 * reasoning figures (OpenAI's `*_details`, DeepSeek's `prompt_cache_hit_tokens`, Kimi's top-level
 * `cached_tokens`, SGLang's top-level `reasoning_tokens`).
 */
export function tokenCounts(u: Usage): TokenCounts {
  const pd = u.prompt_tokens_details ?? {};
  const cd = u.completion_tokens_details ?? {};
  const prompt = n(u.prompt_tokens);
  const completion = n(u.completion_tokens);
  // Parts of a total never exceed it (the prompt includes its cache reads and writes): an
  // upstream that says otherwise would skew every sum of the request log.
  const cachedRead = Math.min(prompt, n(pd.cached_tokens) || n(u.prompt_cache_hit_tokens) || n(u.cached_tokens));
  const cacheWrite = Math.min(prompt - cachedRead, n(pd.cache_write_tokens) || n(u.cache_creation_input_tokens));
  const counts: TokenCounts = {
    prompt,
    completion,
    cachedRead,
    cacheWrite,
    reasoning: Math.min(completion, n(cd.reasoning_tokens) || n(u.reasoning_tokens)),
  };
  const cacheWrite1h = Math.min(cacheWrite, n(pd.cache_write_1h_tokens));
  if (cacheWrite1h > 0) counts.cacheWrite1h = cacheWrite1h;
  return counts;
}

export function usageFromCounts(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
