import type { ChatChunk, ChatRequest, ChatResponse, Usage } from '../../../src/common/chat.types';
import type { UpstreamError } from '../../../src/common/errors';
import { contentText } from '../../../src/common/tokens';
import type { RouteDef } from '../../../src/config/registry.types';
import { providerHttpError, unsupported } from '../../../src/adapters/http/upstream-call';

/** Ollama's native chat API (https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion). */
export interface OllamaChatRequest {
  model: string;
  messages: Array<{ role: string; content: string; images?: string[] }>;
  stream: boolean;
  format?: 'json' | Record<string, unknown>;
  options?: Record<string, unknown>;
  keep_alive?: string | number;
}

export interface OllamaChatResponse {
  model: string;
  created_at: string;
  message?: { role: string; content: string; thinking?: string };
  done: boolean;
  done_reason?: string;
  prompt_eval_count?: number;
  eval_count?: number;
  error?: string;
}

/**
 * The canonical request in Ollama's terms: messages with images as bare base64, sampling
 * parameters under `options` (`max_tokens` is `num_predict`), JSON mode as `format`.
 */
export function toOllamaChat(req: ChatRequest, model: string, stream: boolean, keepAlive?: string): OllamaChatRequest {
  const messages = req.messages.map((m, i) => {
    const images: string[] = [];
    if (Array.isArray(m.content)) {
      m.content.forEach((p, j) => {
        if (p.type !== 'image_url') return;
        const url = (p as { image_url: { url: string } }).image_url.url;
        const data = /^data:[^,]*;base64,(.*)$/s.exec(url)?.[1];
        if (!data)
          throw unsupported(
            `messages[${i}].content[${j}]: Ollama takes images as base64 data: URLs`,
            `messages[${i}].content[${j}].image_url`,
          );
        images.push(data);
      });
    }
    return {
      role: m.role === 'developer' ? 'system' : m.role,
      content: contentText(m.content ?? null),
      ...(images.length ? { images } : {}),
    };
  });
  const options: Record<string, unknown> = {};
  const max = req.max_completion_tokens ?? req.max_tokens;
  if (typeof max === 'number') options.num_predict = max;
  if (typeof req.temperature === 'number') options.temperature = req.temperature;
  if (typeof req.top_p === 'number') options.top_p = req.top_p;
  if (typeof req.top_k === 'number') options.top_k = req.top_k;
  if (typeof req.seed === 'number') options.seed = req.seed;
  if (req.stop !== undefined && req.stop !== null) options.stop = Array.isArray(req.stop) ? req.stop : [req.stop];
  const body: OllamaChatRequest = { model, messages, stream };
  if (Object.keys(options).length > 0) body.options = options;
  if (req.response_format?.type === 'json_object') body.format = 'json';
  if (req.response_format?.type === 'json_schema')
    body.format = (req.response_format.json_schema as { schema: Record<string, unknown> }).schema;
  if (keepAlive) body.keep_alive = keepAlive;
  return body;
}

export function ollamaUsage(r: OllamaChatResponse): Usage {
  const prompt = r.prompt_eval_count ?? 0;
  const completion = r.eval_count ?? 0;
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

const finish = (r: OllamaChatResponse) => (r.done_reason === 'length' ? 'length' : 'stop');

/** A whole Ollama answer as a chat completion. */
export function fromOllamaChat(r: OllamaChatResponse, id: string): ChatResponse {
  return {
    id,
    object: 'chat.completion',
    created: Math.floor(Date.parse(r.created_at) / 1000) || Math.floor(Date.now() / 1000),
    model: r.model,
    choices: [
      {
        index: 0,
        message: {
          role: 'assistant',
          content: r.message?.content ?? '',
          ...(r.message?.thinking ? { reasoning_content: r.message.thinking } : {}),
        },
        finish_reason: finish(r),
        logprobs: null,
      },
    ],
    usage: ollamaUsage(r),
  };
}

/** One NDJSON line of a streamed answer as chat chunks (the last one also carries usage). */
export function ollamaLineToChunks(r: OllamaChatResponse, id: string, first: boolean): ChatChunk[] {
  const base = { id, object: 'chat.completion.chunk' as const, created: Math.floor(Date.now() / 1000), model: r.model };
  const out: ChatChunk[] = [];
  const content = r.message?.content ?? '';
  if (first || content)
    out.push({ ...base, choices: [{ index: 0, delta: first ? { role: 'assistant', content } : { content }, finish_reason: null }] });
  if (r.done) {
    out.push({ ...base, choices: [{ index: 0, delta: {}, finish_reason: finish(r) }] });
    out.push({ ...base, choices: [], usage: ollamaUsage(r) });
  }
  return out;
}

/** Ollama's errors are `{"error": "..."}` with the HTTP status. */
export function ollamaError(status: number, text: string, route: RouteDef, retryAfterMs: number | undefined): UpstreamError {
  let message = text.trim();
  try {
    const e = (JSON.parse(text) as { error?: unknown }).error;
    if (typeof e === 'string') message = e;
  } catch {
    // plain text
  }
  return providerHttpError(status, { message }, route, retryAfterMs);
}
