import type { ChatChunk, ChatResponse, ChunkChoice } from './chat.types';
import { contentText } from './tokens';

/** A whole response as the stream of chunks an upstream would have sent for it. */
export function* responseToChunks(res: ChatResponse): Generator<ChatChunk> {
  const base = { id: res.id, object: 'chat.completion.chunk' as const, created: res.created, model: res.model };
  yield {
    ...base,
    choices: res.choices.map((c) => {
      const { role: _role, tool_calls, ...rest } = c.message;
      const delta: ChunkChoice['delta'] = { ...rest, role: 'assistant', content: contentText(c.message.content) };
      if (tool_calls) delta.tool_calls = tool_calls.map((t, index) => ({ index, ...t }));
      return { index: c.index, delta, finish_reason: null };
    }),
  };
  yield { ...base, choices: res.choices.map((c) => ({ index: c.index, delta: {}, finish_reason: c.finish_reason })) };
  if (res.usage) yield { ...base, choices: [], usage: res.usage };
}

/**
 * Whether a chunk carries part of the answer (text, reasoning, a tool call, a finish reason or
 * usage) rather than only the opening role. Streams are committed to a route at the first such
 * chunk; until then the gateway may still fail over.
 */
export function chunkHasContent(chunk: ChatChunk): boolean {
  if (chunk.usage) return true;
  for (const c of chunk.choices) {
    if (c.finish_reason) return true;
    const d = c.delta;
    if (!d) continue;
    if ((typeof d.content === 'string' && d.content.length > 0) || d.tool_calls?.length) return true;
    if (typeof d.reasoning_content === 'string' && d.reasoning_content.length > 0) return true;
    if (typeof d.reasoning === 'string' && d.reasoning.length > 0) return true;
    if (d.refusal) return true;
  }
  return false;
}
