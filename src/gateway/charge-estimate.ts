import type { ChatRequest } from '../common/chat.types';
import { costPico, type Pricing } from '../common/money';
import { countImages, estimatePromptTokens } from '../common/tokens';
import type { ModelDef, RouteDef } from '../config/registry.types';

/** What a request is expected to use, reserved against the key's limits before the upstream call. */
export interface Charge {
  /** Counted against tokens per minute: the prompt estimate plus the max_tokens the client asked for. */
  tokens: number;
  /** Reserved against budgets: the prompt estimate plus the most it may generate, at the model's price. */
  costPico: bigint;
  /** The request generates nothing (embeddings): its charge is its input alone, as refusals say. */
  inputOnly?: boolean;
}

/**
 * The most any route of the model would charge for these tokens: routes may override the model's
 * pricing, and which route serves is only known afterwards. The prompt may all be written to a
 * cache (one-hour writes are the dearest) and the completion may all be reasoning, where those
 * cost more than plain tokens.
 */
export function worstCaseCost(model: ModelDef, tokens: { prompt: number; completion: number }, images = 0): bigint {
  const { prompt, completion } = tokens;
  const prompts = [0, prompt]; // cache writes: none, or all of the prompt
  const pricings: Pricing[] = [model.pricing, ...model.routes.flatMap((r) => (r.pricing ? [r.pricing] : []))];
  let max = 0n;
  for (const p of pricings) {
    for (const cacheWrite of prompts)
      for (const cacheWrite1h of cacheWrite > 0 ? [0, cacheWrite] : [0])
        for (const reasoning of [0, completion]) {
          const c = costPico({ prompt, completion, cachedRead: 0, cacheWrite, cacheWrite1h, reasoning }, p, 1, images);
          if (c > max) max = c;
        }
  }
  return max;
}

/**
 * A chat request's charge. The completion is what the client allows (`max_completion_tokens` or
 * `max_tokens`, up to the model's maximum output, times `n`); without either, the model's maximum output, else what is left of its
 * context — so a budget can never be overshot by more than what is in flight, at the cost of
 * reserving generously for requests that set no limit. `outputLimit`: what a route's upstream
 * may write when the client allows `allowed` (an adapter's `outputLimit`); the dearest route counts.
 */
export function chatCharge(
  model: ModelDef,
  req: ChatRequest,
  outputLimit: (route: RouteDef, allowed: number) => number = (_route, allowed) => allowed,
  /** The request's prompt estimate, when the caller has it (one request priced for several models). */
  prompt = estimatePromptTokens(req),
): Charge {
  // No model writes past its own output cap, whatever the client allows.
  const allowed = positive(req.max_completion_tokens) ?? positive(req.max_tokens);
  const asked = allowed === undefined || model.maxCompletionTokens === null ? allowed : Math.min(allowed, model.maxCompletionTokens);
  const choices = positive(req.n) ?? 1;
  const room = Math.max(0, model.contextLength - prompt);
  // A route's adapter may have its upstream write more than asked (Claude's thinking budget).
  const perChoice = asked === undefined ? undefined : Math.max(asked, ...model.routes.map((r) => outputLimit(r, asked)));
  const completion = (perChoice ?? Math.min(model.maxCompletionTokens ?? room, room)) * choices;
  return {
    tokens: prompt + (asked ?? 0) * choices,
    costPico: worstCaseCost(model, { prompt, completion }, countImages(req)),
  };
}

/**
 * The charge of a request any of several models may answer (the request's `models` fallbacks):
 * the most of each part, so that whichever answers, the reservation covers it.
 */
export function dearest(charges: readonly Charge[]): Charge {
  return charges.reduce((a, b) => ({
    tokens: Math.max(a.tokens, b.tokens),
    costPico: a.costPico > b.costPico ? a.costPico : b.costPico,
    ...(a.inputOnly && b.inputOnly ? { inputOnly: true } : {}),
  }));
}

/** A prompt-only request's charge (embeddings): its tokens at the model's prompt price. */
export function promptCharge(model: ModelDef, promptTokens: number): Charge {
  return { tokens: promptTokens, costPico: worstCaseCost(model, { prompt: promptTokens, completion: 0 }), inputOnly: true };
}

function positive(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? Math.floor(v) : undefined;
}
