import { perTokenUsd, type Pricing } from '../common/money';
import type { ModelDef } from '../config/registry.types';
import type { RouteView } from '../routing/routing-manager.service';

/** A model as OpenRouter's /api/v1/models lists it (also readable by OpenAI's SDK). */
export function presentModel(m: ModelDef) {
  const p = m.pricing;
  return {
    id: m.id,
    object: 'model',
    owned_by: m.id.includes('/') ? m.id.split('/')[0] : 'hybridinference',
    canonical_slug: m.canonicalSlug,
    hugging_face_id: m.huggingFaceId,
    name: m.name,
    created: m.created,
    description: m.description,
    context_length: m.contextLength,
    architecture: { ...m.architecture },
    pricing: presentPricing(p),
    top_provider: { context_length: m.contextLength, max_completion_tokens: m.maxCompletionTokens, is_moderated: m.isModerated },
    per_request_limits: null,
    supported_parameters: [...m.supportedParameters],
    // OpenRouter's model object has it (the sampling defaults a model is served with); none are set here.
    default_parameters: null,
  };
}

/** Prices as OpenRouter lists them: USD per token (per request, per image), as strings. */
function presentPricing(p: Pricing) {
  return {
    prompt: perTokenUsd(p.prompt),
    completion: perTokenUsd(p.completion),
    request: perTokenUsd(p.request),
    image: perTokenUsd(p.image),
    input_cache_read: perTokenUsd(p.input_cache_read ?? p.prompt),
    input_cache_write: perTokenUsd(p.input_cache_write ?? p.prompt),
    internal_reasoning: perTokenUsd(p.internal_reasoning ?? p.completion),
    ...(p.web_search ? { web_search: perTokenUsd(p.web_search) } : {}),
  };
}

/**
 * A model's routes as OpenRouter's `GET /models/{author}/{slug}/endpoints` lists a model's
 * providers: each route by its id (`tag`) and kind (`provider_name`, the bracketed provider of
 * `openrouter[slug]`), at its own price, `status` 0 while it takes traffic (-1 while it is
 * unhealthy or its circuit is open), and `uptime_last_30m` from its recent failure rate. Never a
 * URL or a key (as /routing). The gateway keeps means, not percentiles, of its routes' latency
 * and throughput: those fields are null, as OpenRouter leaves them for unauthenticated callers.
 */
export function presentEndpoints(m: ModelDef, routes: readonly RouteView[]) {
  return {
    data: {
      id: m.id,
      name: m.name,
      created: m.created,
      description: m.description,
      architecture: { ...m.architecture },
      endpoints: routes.map(({ route, contextLength, available, stats }) => {
        const provider = route.kindArg ?? route.kind;
        return {
          name: `${provider}: ${m.name}`,
          model_id: m.id,
          model_name: m.name,
          context_length: contextLength,
          pricing: presentPricing(route.pricing ?? m.pricing),
          provider_name: provider,
          tag: route.id,
          quantization: null,
          max_completion_tokens: m.maxCompletionTokens,
          max_prompt_tokens: null,
          supported_parameters: [...m.supportedParameters],
          status: available ? 0 : -1,
          uptime_last_30m: stats.errorRate === undefined ? null : Math.round((1 - stats.errorRate) * 10000) / 100,
          supports_implicit_caching: false,
          latency_last_30m: null,
          throughput_last_30m: null,
        };
      }),
    },
  };
}
