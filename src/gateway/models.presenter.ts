import { perTokenUsd } from '../common/money';
import type { ModelDef } from '../config/registry.types';

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
    pricing: {
      prompt: perTokenUsd(p.prompt),
      completion: perTokenUsd(p.completion),
      request: perTokenUsd(p.request),
      image: perTokenUsd(p.image),
      input_cache_read: perTokenUsd(p.input_cache_read ?? p.prompt),
      input_cache_write: perTokenUsd(p.input_cache_write ?? p.prompt),
      internal_reasoning: perTokenUsd(p.internal_reasoning ?? p.completion),
      ...(p.web_search ? { web_search: perTokenUsd(p.web_search) } : {}),
    },
    top_provider: { context_length: m.contextLength, max_completion_tokens: m.maxCompletionTokens, is_moderated: m.isModerated },
    per_request_limits: null,
    supported_parameters: [...m.supportedParameters],
  };
}
