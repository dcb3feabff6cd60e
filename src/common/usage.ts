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
  let completion = n(u.completion_tokens);
  // Some servers count reasoning apart from completion_tokens (xAI's Grok, on its own API and
  // Vertex's; Gemini behind some OpenAI-compatible proxies), and their total says so: prompt +
  // completion + reasoning. Every other server's total is prompt + completion, which with any
  // reasoning cannot also be that sum. The reasoning is output, billed as the completion.
  const reported = n(cd.reasoning_tokens) || n(u.reasoning_tokens);
  if (reported > 0 && u.total_tokens === prompt + completion + reported && completion + reported <= MAX_TOKEN_COUNT) completion += reported;
  // Parts of a total never exceed it (the prompt includes its cache reads and writes): an
  // upstream that says otherwise would skew every sum of the request log.
  const cachedRead = Math.min(prompt, n(pd.cached_tokens) || n(u.prompt_cache_hit_tokens) || n(u.cached_tokens));
  const cacheWrite = Math.min(prompt - cachedRead, n(pd.cache_write_tokens) || n(u.cache_creation_input_tokens));
  const counts: TokenCounts = {
    prompt,
    completion,
    cachedRead,
    cacheWrite,
    reasoning: Math.min(completion, reported),
  };
  const cacheWrite1h = Math.min(cacheWrite, n(pd.cache_write_1h_tokens));
  if (cacheWrite1h > 0) counts.cacheWrite1h = cacheWrite1h;
  const tools = u.server_tool_use;
  const searches = tools && typeof tools === 'object' ? n((tools as { web_search_requests?: unknown }).web_search_requests) : 0;
  if (searches > 0) counts.webSearches = searches;
  return counts;
}

/** The upstream's own billing figures in a usage object (OpenRouter's). */
const PROVIDER_BILLING = ['cost', 'is_byok', 'cost_details'] as const;

/**
 * Usage as a client sees it: without the upstream's own billing figures (OpenRouter's `cost`,
 * `is_byok`, `cost_details`). They are what the operator pays, logged as `upstream_cost_usd`; the
 * client is billed by the gateway, at the model's price, and OpenRouter's clients read `cost` as
 * their own charge.
 */
export function clientUsage<U extends Record<string, unknown>>(u: U): U {
  if (!PROVIDER_BILLING.some((k) => u[k] !== undefined)) return u;
  const rest: Record<string, unknown> = { ...u };
  for (const k of PROVIDER_BILLING) delete rest[k];
  return rest as U;
}

/** The upstream's own billing figures in a usage object (see `clientUsage`), for the request log. */
export function providerBilling(u: Record<string, unknown>): Pick<Usage, 'cost'> & Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of PROVIDER_BILLING) if (u[k] !== undefined) out[k] = u[k];
  return out;
}

/**
 * What the upstream charged for a request, in USD, from its usage: OpenRouter's `cost`, plus, when
 * the operator brought their own provider key (`is_byok`), `cost_details.upstream_inference_cost`,
 * which the provider charges them directly (OpenRouter's `cost` is then only its fee).
 */
export function upstreamChargeUsd(u: Usage | undefined): number | undefined {
  const fee = u?.cost;
  if (typeof fee !== 'number' || !Number.isFinite(fee) || fee < 0) return undefined;
  const inference =
    u!.is_byok === true ? (u!.cost_details as { upstream_inference_cost?: unknown } | undefined)?.upstream_inference_cost : undefined;
  return typeof inference === 'number' && Number.isFinite(inference) && inference > 0 ? fee + inference : fee;
}

export function usageFromCounts(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
