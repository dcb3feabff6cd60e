import { fixDeepSeekRequest, fixKimiRequest, fixMiniMaxRequest, fixOpenAiRequest, fixZhipuRequest } from './openai-compat.mapper';

/**
 * Known OpenAI-compatible servers. They all speak the same chat-completions protocol; a profile
 * records where each one differs (health endpoint, fields it rejects, endpoints it lacks, request
 * fix-ups). Answers are normalised the same way for all (usage details, reasoning fields), since
 * each normalisation only acts on the field that one provider sends.
 */
export interface OpenAiCompatProfile {
  readonly name: string;
  /** Path (below base_url's origin, or relative to base_url when it starts without '/') probed for health. */
  readonly healthPath: string;
  /** Request fields this server rejects; removed before sending. */
  readonly dropFields: readonly string[];
  /** OpenRouter-style fields this server acts on itself, kept for it (others never leave the gateway). */
  readonly passFields?: readonly string[];
  /** Has the legacy `/completions` endpoint; without it, text completions go through chat. Default true. */
  readonly textCompletions?: boolean;
  /** Has `/embeddings`. Default true. */
  readonly embeddings?: boolean;
  /**
   * `response_format` types the server accepts (default: any). Others become `json_object` with
   * the requested schema given to the model in a system message.
   */
  readonly responseFormats?: readonly string[];
  /** Rewrites a chat body (already a copy) for the server's quirks. */
  readonly fixRequest?: (body: Record<string, unknown>) => void;
}

const GENERIC: OpenAiCompatProfile = { name: 'openai_compat', healthPath: 'models', dropFields: [] };

export const OPENAI_COMPAT_PROFILES: Readonly<Record<string, OpenAiCompatProfile>> = {
  openai_compat: GENERIC,
  openai: { ...GENERIC, name: 'openai', fixRequest: fixOpenAiRequest },
  vllm: { ...GENERIC, name: 'vllm', healthPath: '/health' },
  sglang: { ...GENERIC, name: 'sglang', healthPath: '/health' },
  ollama: { ...GENERIC, name: 'ollama', healthPath: '/api/tags' },
  // DeepSeek: no legacy completions on /v1 (FIM lives under /beta), no embeddings,
  // response_format limited to json_object, and max_tokens only.
  deepseek: {
    ...GENERIC,
    name: 'deepseek',
    textCompletions: false,
    embeddings: false,
    responseFormats: ['text', 'json_object'],
    fixRequest: fixDeepSeekRequest,
  },
  // Z.AI / Zhipu (base_url .../api/paas/v4, no /v1): chat only, no model list, max_tokens only;
  // GLM's template drops list content on assistant and tool messages.
  zhipu: { ...GENERIC, name: 'zhipu', textCompletions: false, fixRequest: fixZhipuRequest },
  zai: { ...GENERIC, name: 'zai', textCompletions: false, fixRequest: fixZhipuRequest },
  minimax: { ...GENERIC, name: 'minimax', textCompletions: false, embeddings: false, fixRequest: fixMiniMaxRequest },
  kimi: { ...GENERIC, name: 'kimi', textCompletions: false, embeddings: false, fixRequest: fixKimiRequest },
  moonshot: { ...GENERIC, name: 'moonshot', textCompletions: false, embeddings: false, fixRequest: fixKimiRequest },
  chutes: { ...GENERIC, name: 'chutes' },
  featherless: { ...GENERIC, name: 'featherless', embeddings: false },
};

export const OPENAI_COMPAT_ALIASES = Object.keys(OPENAI_COMPAT_PROFILES).filter((k) => k !== 'openai_compat');

export function profileFor(kind: string): OpenAiCompatProfile {
  return OPENAI_COMPAT_PROFILES[kind] ?? GENERIC;
}
