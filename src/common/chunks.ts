import { type ChatChunk, type ChatResponse, type ChunkChoice, stripReasoning, type ToolCall, type Usage } from './chat.types';
import { carriesMedia, contentText } from './tokens';

/** A whole response as the stream of chunks an upstream would have sent for it. */
export function* responseToChunks(res: ChatResponse): Generator<ChatChunk> {
  const base: Pick<ChatChunk, 'id' | 'object' | 'created' | 'model'> & Record<string, unknown> = {
    id: res.id,
    object: 'chat.completion.chunk',
    created: res.created,
    model: res.model,
  };
  // The answer's other fields, as a stream's chunks carry them.
  for (const k of ['system_fingerprint', 'service_tier'] as const) if (res[k] != null) base[k] = res[k];
  yield {
    ...base,
    choices: res.choices.map((c) => {
      const { role: _role, tool_calls, ...rest } = c.message;
      const delta: ChunkChoice['delta'] = { ...rest, role: 'assistant', content: contentText(c.message.content) };
      if (tool_calls) delta.tool_calls = tool_calls.map((t, index) => ({ index, ...t }));
      return { index: c.index, delta, finish_reason: null, ...(c.logprobs != null ? { logprobs: c.logprobs } : {}) };
    }),
  };
  yield {
    ...base,
    choices: res.choices.map((c) => ({
      index: c.index,
      delta: {},
      finish_reason: c.finish_reason,
      ...(c.native_finish_reason != null ? { native_finish_reason: c.native_finish_reason } : {}),
    })),
  };
  if (res.usage) yield { ...base, choices: [], usage: res.usage };
}

/**
 * Whether a chunk carries part of the answer (text, reasoning, a tool call, a refusal, audio or
 * images, a finish reason) rather than only the opening role. Streams are committed to a route at
 * the first such chunk; until then the gateway may still fail over. A usage figure is not an
 * answer, on the role chunk (Anthropic's message_start input count) or in a chunk of its own: a
 * stream that sent one and then broke has sent nothing the client could keep.
 */
export function chunkHasContent(chunk: ChatChunk): boolean {
  for (const c of chunk.choices) if (c.finish_reason || deltaHasContent(c.delta)) return true;
  return false;
}

/** Whether a choice's delta carries part of the answer (see chunkHasContent), its finish aside. */
export function deltaHasContent(d: ChunkChoice['delta'] | undefined): boolean {
  if (!d) return false;
  if ((typeof d.content === 'string' && d.content.length > 0) || d.tool_calls?.length) return true;
  if (typeof d.reasoning_content === 'string' && d.reasoning_content.length > 0) return true;
  if (typeof d.reasoning === 'string' && d.reasoning.length > 0) return true;
  if (d.refusal) return true;
  const transcript = (d.audio as { transcript?: unknown } | null | undefined)?.transcript;
  return (typeof transcript === 'string' && transcript.length > 0) || carriesMedia(d);
}

/**
 * Takes the reasoning out of a chunk for a client that asked for it not to be returned (in
 * place); false when nothing is left to send (a chunk that carried reasoning alone).
 */
export function stripChunkReasoning(chunk: ChatChunk): boolean {
  let carried = false;
  let left = chunk.usage != null;
  for (const c of chunk.choices) {
    const d = c.delta;
    if (!d) continue;
    if (stripReasoning(d)) carried = true;
    // Whatever else the delta carries (text, tool calls, a refusal, audio, images) goes on.
    if (c.finish_reason || c.logprobs || Object.values(d).some((v) => v != null && v !== '')) left = true;
  }
  return !carried || left;
}

/**
 * Tool-call deltas as OpenAI sends them, from servers that do not quite: a call without an
 * `index` (Gemini's OpenAI-compatible endpoint, some Ollama versions) gets one — by its id, or
 * the call before it for an arguments-only delta — and a call's first delta without an `id`
 * gets one, so that clients can accumulate the calls (the OpenAI SDKs key them by index) and
 * answer each by id. A call that starts (a new id and a function name) at an index another call
 * holds (Ollama behind LiteLLM, some SGLang and Qwen tool parsers send every parallel call as
 * index 0) gets an index of its own, and the deltas after it at that index follow it: else its
 * arguments were joined to the first call's (`{"city":"A"}{"tz":"B"}`) and the call was lost. One
 * per stream; deltas that are already whole pass untouched. Used where chunks come from such
 * servers (openai_compat) and where a surface keys calls itself (the Anthropic translation).
 */
export class ToolCallFixer {
  private readonly choices = new Map<
    number,
    {
      byId: Map<string, number>;
      /** Each call's id, by the index given to it (an index here has been seen). */
      idAt: Map<number, string>;
      /** The upstream's index → the index given to the call that last started there, when they differ. */
      moved: Map<number, number>;
      next: number;
      last: number;
    }
  >();

  /** `idFor(choice, call)`: the id given to a call that came without one. */
  constructor(private readonly idFor: (choice: number, call: number) => string) {}

  fix(chunk: ChatChunk): ChatChunk {
    for (const c of chunk.choices) {
      const calls = c.delta?.tool_calls;
      if (!Array.isArray(calls)) continue;
      let st = this.choices.get(c.index);
      if (!st) this.choices.set(c.index, (st = { byId: new Map(), idAt: new Map(), moved: new Map(), next: 0, last: -1 }));
      for (const t of calls) {
        if (!t || typeof t !== 'object') continue;
        let i: number | undefined = typeof t.index === 'number' ? t.index : undefined;
        if (i === undefined) {
          // By id; else a delta that names a function starts a call, one without continues the last.
          i = t.id ? st.byId.get(t.id) : t.function?.name ? undefined : st.last >= 0 ? st.last : undefined;
          i ??= st.next;
          t.index = i;
        } else {
          const at = st.moved.get(i) ?? i;
          const held = st.idAt.get(at);
          // An index not seen yet is taken as given, whatever its id (some servers give parallel
          // calls one id). At an index a call holds, a delta with another id is that call's if the id
          // is known (named again), else a call starting there if it names a function.
          if (held !== undefined && t.id && t.id !== held) {
            const known = st.byId.get(t.id);
            if (known !== undefined) i = known;
            else if (t.function?.name) {
              st.moved.set(i, st.next);
              i = st.next;
            } else i = at;
          } else i = at;
          t.index = i;
        }
        if (!st.idAt.has(i)) {
          if (!t.id) t.id = this.idFor(c.index, i);
          st.idAt.set(i, t.id);
          // The SDKs' stream helpers want the type on a call's first delta (some servers omit it).
          t.type ??= 'function';
        }
        if (t.id) st.byId.set(t.id, i);
        st.next = Math.max(st.next, i + 1);
        st.last = i;
      }
    }
    return chunk;
  }
}

/** What one choice of a stream said, collected. */
interface CollectedChoice {
  content: string;
  reasoning: string;
  refusal: string;
  calls: ToolCall[];
  thinkingBlocks: unknown[];
  images: unknown[];
  finish: string | null;
}

function emptyChoice(): CollectedChoice {
  return { content: '', reasoning: '', refusal: '', calls: [], thinkingBlocks: [], images: [], finish: null };
}

/**
 * Collects a stream of chunks into one chat.completion, choice by choice: text, reasoning,
 * refusal, tool calls (arguments joined by index), the last thinking blocks, images, finish
 * reasons and usage. For backends that only stream (Codex) and for the stored copy of a streamed answer.
 */
export class ChatAggregator {
  private id = '';
  private model = '';
  private created = Math.floor(Date.now() / 1000);
  private readonly choices = new Map<number, CollectedChoice>();
  private usage?: Usage;

  push(chunk: ChatChunk): void {
    this.id ||= chunk.id;
    this.model ||= chunk.model;
    this.created = chunk.created ?? this.created;
    if (chunk.usage) this.usage = chunk.usage;
    for (const c of chunk.choices) {
      let st = this.choices.get(c.index);
      if (!st) this.choices.set(c.index, (st = emptyChoice()));
      const d = c.delta ?? {};
      if (typeof d.content === 'string') st.content += d.content;
      if (typeof d.reasoning_content === 'string') st.reasoning += d.reasoning_content;
      else if (typeof d.reasoning === 'string') st.reasoning += d.reasoning;
      if (typeof d.refusal === 'string') st.refusal += d.refusal;
      if (Array.isArray(d.thinking_blocks)) st.thinkingBlocks = d.thinking_blocks;
      // Images a model made (OpenRouter's delta.images), each whole.
      if (Array.isArray(d.images)) st.images.push(...(d.images as unknown[]));
      for (const t of d.tool_calls ?? []) {
        // A custom tool's call (OpenAI's free-form tools): its name, and its input in pieces.
        const free = t as { type?: string; custom?: { name?: string; input?: string } };
        if (free.type === 'custom' || free.custom) {
          const call = (st.calls[t.index] ??= {
            id: '',
            type: 'custom',
            custom: { name: '', input: '' },
          } as unknown as ToolCall) as unknown as {
            id: string;
            custom: { name: string; input: string };
          };
          if (t.id) call.id = t.id;
          if (free.custom?.name) call.custom.name = free.custom.name;
          if (free.custom?.input) call.custom.input += free.custom.input;
          continue;
        }
        const call = (st.calls[t.index] ??= { id: '', type: 'function', function: { name: '', arguments: '' } });
        if (t.id) call.id = t.id;
        if (t.function?.name) call.function.name = t.function.name;
        if (t.function?.arguments) call.function.arguments += t.function.arguments;
      }
      if (c.finish_reason) st.finish = c.finish_reason;
    }
  }

  result(): ChatResponse {
    const indexes = [...this.choices.keys()].sort((a, b) => a - b);
    if (indexes.length === 0) indexes.push(0);
    const choices = indexes.map((index) => {
      const st = this.choices.get(index) ?? emptyChoice();
      const calls = st.calls.filter(Boolean);
      const message: ChatResponse['choices'][number]['message'] = {
        role: 'assistant',
        content: calls.length > 0 && !st.content ? null : st.content,
      };
      if (st.reasoning) message.reasoning_content = st.reasoning;
      if (st.refusal) message.refusal = st.refusal;
      if (calls.length > 0) message.tool_calls = calls;
      if (st.thinkingBlocks.length > 0) message.thinking_blocks = st.thinkingBlocks;
      if (st.images.length > 0) message.images = st.images;
      return { index, message, finish_reason: st.finish ?? 'stop', logprobs: null };
    });
    return {
      id: this.id,
      object: 'chat.completion',
      created: this.created,
      model: this.model,
      choices,
      ...(this.usage ? { usage: this.usage } : {}),
    };
  }
}
