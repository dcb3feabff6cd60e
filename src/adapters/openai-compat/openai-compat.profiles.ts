/**
 * Known OpenAI-compatible servers. They all speak the same chat-completions protocol; a profile
 * records where each one differs (health endpoint, fields it rejects).
 */
export interface OpenAiCompatProfile {
  readonly name: string;
  /** Path (below base_url's origin, or relative to base_url when it starts without '/') probed for health. */
  readonly healthPath: string;
  /** Request fields this server rejects; removed before sending. */
  readonly dropFields: readonly string[];
}

const GENERIC: OpenAiCompatProfile = { name: 'openai_compat', healthPath: 'models', dropFields: [] };

export const OPENAI_COMPAT_PROFILES: Readonly<Record<string, OpenAiCompatProfile>> = {
  openai_compat: GENERIC,
  openai: { ...GENERIC, name: 'openai' },
  vllm: { ...GENERIC, name: 'vllm', healthPath: '/health' },
  sglang: { ...GENERIC, name: 'sglang', healthPath: '/health' },
  ollama: { ...GENERIC, name: 'ollama', healthPath: '/api/tags' },
  deepseek: { ...GENERIC, name: 'deepseek' },
  zhipu: { ...GENERIC, name: 'zhipu' },
  zai: { ...GENERIC, name: 'zai' },
  minimax: { ...GENERIC, name: 'minimax' },
  chutes: { ...GENERIC, name: 'chutes' },
  featherless: { ...GENERIC, name: 'featherless' },
};

export const OPENAI_COMPAT_ALIASES = Object.keys(OPENAI_COMPAT_PROFILES).filter((k) => k !== 'openai_compat');

export function profileFor(kind: string): OpenAiCompatProfile {
  return OPENAI_COMPAT_PROFILES[kind] ?? GENERIC;
}
