import type { ChatChunk, ChatRequest, ChatResponse } from '../common/chat.types';
import type { Completion, CompletionRequest } from '../common/completion.types';
import { contentText } from '../common/tokens';
import { unsupported } from './http/upstream-call';

/**
 * Legacy text completions (`/v1/completions`) and the canonical chat shape, both ways. Backends
 * with a native endpoint answer in the legacy shape and adapters turn that into chat
 * (`completionToChat`); the gateway turns every answer back into the legacy shape
 * (`chatToCompletion`). Chat-only backends get the prompt as one user message
 * (`completionAsChatRequest`).
 */

/** Fields of a completion request that only a native endpoint can honour. */
const NATIVE_ONLY = ['suffix', 'echo', 'best_of'] as const;

/**
 * The chat request that answers a text completion on a chat-only backend: the prompt becomes
 * the single user message. Only a single text prompt can be served this way; token-id prompts,
 * several prompts, `suffix`, `echo` and `best_of` need a backend with native completions, and
 * are refused with a 400 rather than answered differently.
 */
export function completionAsChatRequest(req: CompletionRequest): ChatRequest {
  let prompt = req.prompt;
  if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === 'string') prompt = prompt[0];
  if (typeof prompt !== 'string') {
    throw unsupported('This model is served by a chat backend, which takes a single text prompt; send "prompt" as one string', 'prompt');
  }
  for (const f of NATIVE_ONLY) {
    const v = req[f];
    if (v !== undefined && v !== null && v !== false && !(f === 'best_of' && v === 1)) {
      throw unsupported(`"${f}" needs a backend with native text completions; this model is served by a chat backend`, f);
    }
  }
  // Scoring a prompt without generating is a completion's own; chat takes at least one token.
  if (req.max_tokens === 0)
    throw unsupported('"max_tokens": 0 needs a backend with native text completions; this model is served by a chat backend', 'max_tokens');
  const { prompt: _p, suffix: _s, echo: _e, best_of: _b, logprobs, ...rest } = req;
  const chat: ChatRequest = { ...rest, messages: [{ role: 'user', content: prompt }] };
  if (typeof logprobs === 'number') {
    chat.logprobs = true;
    chat.top_logprobs = logprobs;
  }
  return chat;
}

/** A native legacy answer in the canonical chat shape (lossless for text, logprobs and usage). */
export function completionToChat(c: Completion): ChatResponse {
  const { object: _o, choices, ...rest } = c;
  return {
    ...rest,
    object: 'chat.completion',
    choices: (choices ?? []).map((ch) => {
      const { text, index, logprobs, finish_reason, ...extra } = ch;
      return { ...extra, index, message: { role: 'assistant' as const, content: text ?? '' }, finish_reason, logprobs };
    }),
    usage: c.usage ?? undefined,
  };
}

/** A native legacy stream chunk as a canonical chat chunk (`delta.content` is the text). */
export function completionChunkToChat(c: Completion): ChatChunk {
  const { object: _o, choices, ...rest } = c;
  return {
    ...rest,
    object: 'chat.completion.chunk',
    choices: (choices ?? []).map((ch) => {
      const { text, index, logprobs, finish_reason, ...extra } = ch;
      return { ...extra, index, delta: { content: text ?? '' }, finish_reason, logprobs };
    }),
  };
}

/** A canonical answer in the legacy shape the client asked for. */
export function chatToCompletion(res: ChatResponse): Completion {
  const { object: _o, choices, ...rest } = res;
  return {
    ...rest,
    object: 'text_completion',
    choices: choices.map((c) => ({
      text: contentText(c.message?.content ?? null),
      index: c.index,
      logprobs: legacyLogprobs(c.logprobs),
      finish_reason: c.finish_reason,
    })),
  };
}

/**
 * A canonical stream chunk in the legacy shape (same object as the whole answer, per OpenAI).
 * `offsets`: where each choice's text has got to, so that `text_offset` runs on across chunks
 * (kept up to date here; one map per stream).
 */
export function chatChunkToCompletion(chunk: ChatChunk, offsets?: Map<number, number>): Completion {
  const { object: _o, choices, ...rest } = chunk;
  return {
    ...rest,
    object: 'text_completion',
    choices: choices.map((c) => {
      const start = offsets?.get(c.index) ?? 0;
      const logprobs = legacyLogprobs(c.logprobs, start);
      // Chat logprobs were converted from `start` on (legacy ones, from a native endpoint, carry their own offsets).
      const content = (c.logprobs as { content?: unknown } | null | undefined)?.content;
      if (offsets && Array.isArray(content))
        offsets.set(c.index, start + (content as ChatTokenLogprob[]).reduce((n, t) => n + t.token.length, 0));
      return {
        text: typeof c.delta?.content === 'string' ? c.delta.content : '',
        index: c.index,
        logprobs,
        finish_reason: c.finish_reason,
      };
    }),
  };
}

interface ChatTokenLogprob {
  token: string;
  logprob: number;
  top_logprobs?: Array<{ token: string; logprob: number }>;
}

/**
 * Logprobs in the legacy shape: chat's `{content: [{token, logprob, top_logprobs}]}` becomes
 * `{tokens, token_logprobs, top_logprobs, text_offset}`; legacy logprobs (from a native
 * endpoint) stay as they are.
 */
export function legacyLogprobs(lp: unknown, start = 0): unknown {
  if (!lp || typeof lp !== 'object') return null;
  const content = (lp as { content?: unknown }).content;
  if (!Array.isArray(content)) return lp;
  const tokens: string[] = [];
  const tokenLogprobs: number[] = [];
  const top: Array<Record<string, number>> = [];
  const offsets: number[] = [];
  let offset = start;
  for (const t of content as ChatTokenLogprob[]) {
    tokens.push(t.token);
    tokenLogprobs.push(t.logprob);
    top.push(Object.fromEntries((t.top_logprobs ?? []).map((x) => [x.token, x.logprob])));
    offsets.push(offset);
    offset += t.token.length;
  }
  return { tokens, token_logprobs: tokenLogprobs, top_logprobs: top, text_offset: offsets };
}
