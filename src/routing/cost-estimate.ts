import type { ChatRequest } from '../common/chat.types';
import { costPico, type Pricing } from '../common/money';
import { countImages, estimatePromptTokens, estimateTextTokens } from '../common/tokens';
import type { ModelDef, RouteDef } from '../config/registry.types';

export interface TokenEstimate {
  prompt: number;
  completion: number;
  images?: number;
}

/** Completion tokens assumed when a request sets no max_tokens (router_params.expected_completion_tokens overrides). */
export const DEFAULT_EXPECTED_COMPLETION = 256;

/**
 * The `router_params` read for every model whatever its strategy: a request's `provider.sort:
 * price` (or `:floor`) orders any model's routes by this estimate.
 */
export const ESTIMATE_PARAMS: readonly string[] = ['expected_completion_tokens'];

/** Problems with the `router_params` of ESTIMATE_PARAMS, checked for every model (any may be sorted by price). */
export function estimateParamsProblems(model: ModelDef): string[] {
  const v = model.routerParams.expected_completion_tokens;
  return v === undefined || (Number.isInteger(Number(v)) && Number(v) > 0)
    ? []
    : [`${model.where}: router_params.expected_completion_tokens must be a whole number above 0`];
}

/** For shares shown without a request: a typical chat turn. */
export const NOMINAL_REQUEST: TokenEstimate = { prompt: 1000, completion: DEFAULT_EXPECTED_COMPLETION };

/**
 * The tokens a request will likely cost: its prompt (estimated from the text) and its completion
 * (max_tokens when set, else the model's expected completion).
 */
export function estimateRequestTokens(req: ChatRequest | undefined, model: ModelDef): TokenEstimate {
  const expected = Number(model.routerParams.expected_completion_tokens);
  const fallback = Number.isFinite(expected) && expected > 0 ? expected : DEFAULT_EXPECTED_COMPLETION;
  if (!req) return { prompt: NOMINAL_REQUEST.prompt, completion: fallback };
  // run() also serves one-shot operations without messages (embeddings, text completions).
  const prompt = Array.isArray(req.messages)
    ? estimatePromptTokens(req)
    : estimateTextTokens(JSON.stringify(req.input ?? req.prompt ?? ''));
  const cap = req.max_completion_tokens ?? req.max_tokens;
  return {
    prompt,
    completion: typeof cap === 'number' && cap > 0 ? cap : fallback,
    images: Array.isArray(req.messages) ? countImages(req) : 0,
  };
}

export function pricingOf(model: ModelDef, route: RouteDef): Pricing {
  return route.pricing ?? model.pricing;
}

/** Pico-dollars a request of `tokens` would cost on this route. */
export function estimateCost(model: ModelDef, route: RouteDef, tokens: TokenEstimate): bigint {
  return costPico(
    { prompt: tokens.prompt, completion: tokens.completion, cachedRead: 0, cacheWrite: 0, reasoning: 0 },
    pricingOf(model, route),
    1,
    tokens.images ?? 0,
  );
}

/** Indices ordered by ascending cost; equal costs keep listed order. */
export function cheapestFirst(costs: readonly bigint[]): number[] {
  return costs.map((_, i) => i).sort((a, b) => (costs[a] < costs[b] ? -1 : costs[a] > costs[b] ? 1 : a - b));
}
