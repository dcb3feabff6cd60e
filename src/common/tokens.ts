import type { ChatMessage, ChatRequest } from './chat.types';

/**
 * Rough token counts for when an upstream reports none (or a stream was cut): about four
 * characters per token plus OpenAI's per-message overhead. Only ever used as an estimate and
 * marked as such in the request log.
 */
export function estimateTextTokens(text: string): number {
  return text.length === 0 ? 0 : Math.ceil(text.length / 4);
}

export function estimateMessageTokens(messages: readonly ChatMessage[]): number {
  let total = 3; // every reply is primed with <|start|>assistant<|message|>
  for (const m of messages) {
    total += 4;
    total += estimateTextTokens(contentText(m.content));
    if (m.name) total += estimateTextTokens(m.name);
    if (m.tool_calls) total += estimateTextTokens(JSON.stringify(m.tool_calls));
  }
  return total;
}

export function estimatePromptTokens(req: Pick<ChatRequest, 'messages' | 'tools'>): number {
  return estimateMessageTokens(req.messages) + (req.tools ? estimateTextTokens(JSON.stringify(req.tools)) : 0);
}

/** The text of a message's content, whether a string or a list of parts. */
export function contentText(content: ChatMessage['content']): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  let out = '';
  for (const part of content) if (part && typeof (part as { text?: unknown }).text === 'string') out += (part as { text: string }).text;
  return out;
}

/**
 * Characters a model generated in a message or a stream delta: its text (a string or a list of
 * parts), its reasoning and its tool calls' names and arguments. What an estimate of completion
 * tokens is made from when an upstream reports no usage, for JSON answers and streams alike.
 */
export function outputChars(m: OutputPart | null | undefined): number {
  if (!m) return 0;
  let chars = contentText(m.content as ChatMessage['content']).length;
  if (typeof m.reasoning_content === 'string') chars += m.reasoning_content.length;
  if (typeof m.reasoning === 'string') chars += m.reasoning.length;
  if (Array.isArray(m.tool_calls))
    for (const t of m.tool_calls as Array<{ function?: { name?: unknown; arguments?: unknown } } | null>) {
      const f = t?.function;
      if (!f) continue;
      if (typeof f.name === 'string') chars += f.name.length;
      if (typeof f.arguments === 'string') chars += f.arguments.length;
    }
  return chars;
}

interface OutputPart {
  content?: unknown;
  reasoning_content?: unknown;
  reasoning?: unknown;
  tool_calls?: unknown;
}

/** Images in a chat request's messages (billed at `pricing.image` each). */
export function countImages(req: Pick<ChatRequest, 'messages'>): number {
  let n = 0;
  for (const m of req.messages) {
    if (!Array.isArray(m.content)) continue;
    for (const part of m.content) if (part && typeof part === 'object' && (part as { type?: unknown }).type === 'image_url') n++;
  }
  return n;
}
