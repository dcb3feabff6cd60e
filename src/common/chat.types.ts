/**
 * The canonical internal format: OpenAI's chat-completions shape. Adapters translate to and from
 * their provider's wire format; fields the gateway does not know pass through untouched.
 */

export type Role = 'system' | 'developer' | 'user' | 'assistant' | 'tool' | 'function';

export interface TextPart {
  type: 'text';
  text: string;
}
export interface ImagePart {
  type: 'image_url';
  image_url: { url: string; detail?: 'auto' | 'low' | 'high' };
}
export type ContentPart = TextPart | ImagePart | { type: string; [k: string]: unknown };

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export interface ChatMessage {
  role: Role;
  content?: string | ContentPart[] | null;
  name?: string;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
  reasoning_content?: string | null;
  [extra: string]: unknown;
}

export interface ToolDefinition {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean };
}

export type ToolChoice = 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } };

export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean; [k: string]: unknown } | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  n?: number | null;
  stop?: string | string[] | null;
  seed?: number | null;
  tools?: ToolDefinition[];
  tool_choice?: ToolChoice;
  parallel_tool_calls?: boolean;
  response_format?: { type: string; [k: string]: unknown };
  user?: string;
  [extra: string]: unknown;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** `cache_write_1h_tokens`: of the cache writes, those for one hour (Anthropic), priced apart. */
  prompt_tokens_details?: {
    cached_tokens?: number;
    cache_write_tokens?: number;
    cache_write_1h_tokens?: number;
    [k: string]: unknown;
  } | null;
  completion_tokens_details?: { reasoning_tokens?: number; [k: string]: unknown } | null;
  /** Server tools the upstream ran (Anthropic's name): web searches are billed at `web_search`. */
  server_tool_use?: { web_search_requests?: number; [k: string]: unknown } | null;
  /**
   * Provider-reported cost in USD (OpenRouter; with `is_byok`, only its fee, the provider's charge
   * in `cost_details.upstream_inference_cost`). Logged, never shown to clients (`clientUsage`).
   */
  cost?: number;
  [extra: string]: unknown;
}

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'function_call' | 'error' | null;

export interface ChatChoice {
  index: number;
  message: ChatMessage & { role: 'assistant' };
  /** A `FinishReason`, or a provider's own value passed through. */
  finish_reason: string | null;
  logprobs?: unknown;
  [extra: string]: unknown;
}

export interface ChatResponse {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: ChatChoice[];
  usage?: Usage;
  system_fingerprint?: string | null;
  [extra: string]: unknown;
}

export interface ChunkDelta {
  role?: 'assistant';
  content?: string | null;
  reasoning_content?: string | null;
  tool_calls?: Array<{ index: number; id?: string; type?: 'function'; function?: { name?: string; arguments?: string } }>;
  [extra: string]: unknown;
}

export interface ChunkChoice {
  index: number;
  delta: ChunkDelta;
  finish_reason: string | null;
  logprobs?: unknown;
  [extra: string]: unknown;
}

export interface ChatChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: ChunkChoice[];
  usage?: Usage | null;
  [extra: string]: unknown;
}

/**
 * The reasoning fields providers and the gateway's translations put on a message or a delta
 * (DeepSeek's and vLLM's `reasoning_content`, OpenRouter's `reasoning` and `reasoning_details`,
 * the Claude translation's signed `thinking_blocks`).
 */
export const REASONING_FIELDS = ['reasoning_content', 'reasoning', 'reasoning_details', 'thinking_blocks'] as const;

/** Removes the reasoning fields from a message or a delta; whether it carried any. */
export function stripReasoning(m: object): boolean {
  const o = m as Record<string, unknown>;
  let had = false;
  for (const f of REASONING_FIELDS) {
    if (o[f] === undefined) continue;
    delete o[f];
    had = true;
  }
  return had;
}

/**
 * Reasoning text also under OpenRouter's name, `reasoning`, where it came as `reasoning_content`
 * (DeepSeek's, Z.AI's, SGLang's, vLLM's before 0.11, the gateway's own translations), in place:
 * clients written for OpenRouter read `reasoning`. Never the other way: some servers (Groq,
 * Cerebras) refuse `reasoning_content` on an assistant turn a client sends back, so an answer
 * that came with `reasoning` alone keeps it alone. The gateway reads either.
 */
export function withOpenRouterReasoning(m: object): void {
  const o = m as { reasoning?: unknown; reasoning_content?: unknown };
  if (typeof o.reasoning_content === 'string' && (o.reasoning === undefined || o.reasoning === null)) o.reasoning = o.reasoning_content;
}

/** OpenRouter-style request options the gateway acts on itself; upstreams never see them (OpenRouter routes some). */
export const GATEWAY_ONLY_FIELDS = ['models', 'provider', 'route', 'transforms', 'plugins', 'usage', 'session_id', 'debug'] as const;

/**
 * OpenRouter `provider` preferences about data policy and serving rather than about which
 * provider: the gateway's own routes carry no such information, so its routing accepts them
 * without acting on them, and OpenRouter routes pass them on to OpenRouter, which does.
 */
export const PROVIDER_POLICY_KEYS = [
  'data_collection',
  'zdr',
  'enforce_distillable_text',
  'quantizations',
  'preferred_min_throughput',
  'preferred_max_latency',
] as const;
