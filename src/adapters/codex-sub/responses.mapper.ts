import { createHash } from 'node:crypto';
import { refuseUntranslatableTools } from '../http/upstream-call';
import type { ChatChunk, ChatMessage, ChatRequest, ChunkDelta, ContentPart, Usage } from '../../common/chat.types';

/**
 * Chat completions ⇄ the OpenAI Responses API as the ChatGPT backend for Codex speaks it
 * (`/backend-api/codex/responses`). Pure functions and small state machines: the adapter does
 * the I/O. Backend rules (from Codex's own client and what it is known to refuse): `instructions`
 * is required and carries the system prompt; `input` must be a list; `store: false` and
 * `stream: true` always; no `max_output_tokens`, no sampling parameters (temperature, top_p, ...).
 */

/** Route options of `kind: codex_sub` that shape the request. */
export interface CodexRequestOptions {
  /** Fixed instructions; the request's system messages then go into `input` as developer messages. */
  instructions?: string;
  /** Default `reasoning.effort` when the request names none (`reasoning_effort`). */
  reasoningEffort?: string;
  /** `reasoning.summary`: `auto` (default), `concise`, `detailed`, or `none` to ask for none. */
  reasoningSummary?: string;
  /** `text.verbosity`: low, medium, high. */
  textVerbosity?: string;
}

/** Used only when neither the request nor the route gives instructions (the backend requires some). */
export const DEFAULT_INSTRUCTIONS = 'You are a helpful assistant.';

/** A request the backend cannot take, found before sending it. */
export class UnsupportedRequestError extends Error {
  constructor(
    message: string,
    readonly param: string,
  ) {
    super(message);
  }
}

type Item = Record<string, unknown>;

export function buildResponsesBody(req: ChatRequest, model: string, opts: CodexRequestOptions = {}): Record<string, unknown> {
  if (typeof req.n === 'number' && req.n > 1)
    throw new UnsupportedRequestError('codex_sub routes answer with one choice; n must be 1', 'n');
  refuseUntranslatableTools(req, 'codex_sub');
  const system: string[] = [];
  const input: Item[] = [];
  const calls = new Set<string>();
  /** A turn came: system messages from here on stand where they are (Claude Code's mid-conversation ones). */
  let turns = false;
  req.messages.forEach((m, i) => {
    if (m.role !== 'system' && m.role !== 'developer') turns = true;
    switch (m.role) {
      case 'system':
      case 'developer': {
        const text = textOf(m.content);
        // The instructions are the leading system messages only: one added later (Claude Code adds
        // them mid-conversation) must not change them, nor the conversation's cache key with them.
        if (opts.instructions !== undefined || turns)
          input.push({ type: 'message', role: 'developer', content: [{ type: 'input_text', text }] });
        else if (text) system.push(text);
        break;
      }
      case 'user':
        input.push({ type: 'message', role: 'user', content: userContent(m.content, i) });
        break;
      case 'assistant': {
        const text = textOf(m.content);
        if (text) input.push({ type: 'message', role: 'assistant', content: [{ type: 'output_text', text }] });
        for (const tc of m.tool_calls ?? []) {
          calls.add(tc.id);
          input.push({ type: 'function_call', call_id: tc.id, name: tc.function?.name ?? '', arguments: tc.function?.arguments ?? '' });
        }
        break;
      }
      case 'tool':
      case 'function': {
        const output = textOf(m.content);
        const id = m.tool_call_id ?? '';
        // The backend refuses an output whose call is not in the same input; keep it as text.
        if (id && calls.has(id)) input.push({ type: 'function_call_output', call_id: id, output });
        else
          input.push({
            type: 'message',
            role: 'user',
            content: [{ type: 'input_text', text: `Result of tool call ${id || m.name || ''}: ${output}` }],
          });
        break;
      }
    }
  });
  const instructions = opts.instructions ?? (system.join('\n\n') || DEFAULT_INSTRUCTIONS);
  const body: Record<string, unknown> = { model, instructions, input, store: false, stream: true };
  if (Array.isArray(req.tools) && req.tools.length > 0) {
    body.tools = req.tools.map((t) =>
      t.type === 'function' && t.function
        ? {
            type: 'function',
            name: t.function.name,
            description: t.function.description,
            parameters: t.function.parameters ?? { type: 'object', properties: {} },
            strict: t.function.strict ?? false,
          }
        : t,
    );
    body.tool_choice = toolChoice(req.tool_choice);
    body.parallel_tool_calls = req.parallel_tool_calls ?? true;
  }
  const requested = req.reasoning_effort ?? (req.reasoning as { effort?: unknown } | undefined)?.effort;
  const effort = typeof requested === 'string' ? requested : opts.reasoningEffort;
  const summary = opts.reasoningSummary ?? 'auto';
  if (effort !== undefined || summary !== 'none') {
    body.reasoning = { ...(effort !== undefined ? { effort } : {}), ...(summary !== 'none' ? { summary } : {}) };
  }
  const text: Record<string, unknown> = {};
  const rf = req.response_format;
  if (rf?.type === 'json_schema') {
    const js = (rf.json_schema ?? {}) as Record<string, unknown>;
    text.format = { type: 'json_schema', name: js.name ?? 'response', schema: js.schema ?? {}, strict: js.strict ?? false };
  } else if (rf?.type === 'json_object') {
    text.format = { type: 'json_object' };
  }
  if (opts.textVerbosity) text.verbosity = opts.textVerbosity;
  if (Object.keys(text).length > 0) body.text = text;
  body.prompt_cache_key =
    typeof req.prompt_cache_key === 'string' && req.prompt_cache_key
      ? req.prompt_cache_key
      : conversationKey(instructions, input, req.user);
  return body;
}

/**
 * A stable id for a conversation: the instructions, its first input item and the end user, if
 * named. Every turn of one conversation gets the same key, so the backend's prompt cache (and the
 * session header) follow it.
 */
export function conversationKey(instructions: string, input: Item[], user?: string): string {
  const h = createHash('sha256')
    .update(instructions)
    .update('\u0000')
    .update(JSON.stringify(input[0] ?? null))
    .update('\u0000')
    .update(user ?? '')
    .digest('hex');
  return uuidOf(h);
}

/**
 * The `session_id` header for a cache key: the key itself when it is a short run of visible
 * ASCII, else a hash of it. A client's `prompt_cache_key` may hold a newline or characters past
 * Latin-1, which no header can carry (the call failed before it was sent), or be too long for one.
 */
export function sessionHeader(key: string): string {
  return /^[\x21-\x7e]{1,128}$/.test(key) ? key : uuidOf(createHash('sha256').update(key).digest('hex'));
}

function uuidOf(h: string): string {
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function toolChoice(c: ChatRequest['tool_choice']): unknown {
  if (c === undefined) return 'auto';
  if (typeof c === 'string') return c;
  if (c && typeof c === 'object' && c.type === 'function') return { type: 'function', name: c.function?.name };
  return c;
}

function textOf(content: ChatMessage['content']): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((p) => (p.type === 'text' && typeof p.text === 'string' ? p.text : '')).join('');
}

function userContent(content: ChatMessage['content'], index: number): Item[] {
  if (typeof content === 'string' || content === null || content === undefined) return [{ type: 'input_text', text: content ?? '' }];
  return content.map((p: ContentPart, j) => {
    if (p.type === 'text') return { type: 'input_text', text: String((p as { text?: unknown }).text ?? '') };
    if (p.type === 'image_url') {
      const img = (p as { image_url?: { url?: string; detail?: string } | string }).image_url;
      const url = typeof img === 'string' ? img : img?.url;
      return { type: 'input_image', image_url: url ?? '', ...(typeof img === 'object' && img?.detail ? { detail: img.detail } : {}) };
    }
    throw new UnsupportedRequestError(
      `content parts of type "${p.type}" are not supported by codex_sub routes`,
      `messages[${index}].content[${j}].type`,
    );
  });
}

// --- streaming events → chat chunks ---------------------------------------------------------

/** `response.failed` or an `error` event: what the backend said. */
export interface ResponsesFailure {
  code?: string;
  type?: string;
  message: string;
  /** Epoch seconds, for usage limits. */
  resetsAt?: number;
}

export class ResponsesFailedError extends Error {
  constructor(readonly failure: ResponsesFailure) {
    super(failure.message);
  }
}

/** The `codex.rate_limits` event and `x-codex-*-used-percent` headers: how much of the window is used. */
export interface RateLimitReport {
  usedPercent: number;
}

/**
 * Turns the backend's Responses events into chat-completion chunks, one event at a time. Throws
 * `ResponsesFailedError` on `response.failed` and `error` events. `completed` tells whether the
 * stream reached its end (`response.completed` or `response.incomplete`).
 */
export class ResponsesStreamTranslator {
  completed = false;
  rateLimit?: RateLimitReport;
  private id: string;
  private readonly created = Math.floor(Date.now() / 1000);
  private started = false;
  private tools = 0;
  private readonly toolByItem = new Map<string, { index: number; args: string }>();
  private readonly textByItem = new Map<string, string>();
  private lastSummary?: string;

  constructor(
    private readonly model: string,
    fallbackId: string,
  ) {
    this.id = fallbackId;
  }

  handle(eventName: string | undefined, data: Record<string, unknown>): ChatChunk[] {
    const type = typeof data.type === 'string' ? data.type : (eventName ?? '');
    const out: ChatChunk[] = [];
    switch (type) {
      case 'response.created':
      case 'response.in_progress': {
        const id = (data.response as Item | undefined)?.id;
        if (typeof id === 'string' && !this.started) this.id = id;
        this.open(out);
        break;
      }
      case 'response.output_item.added': {
        const item = (data.item ?? {}) as Item;
        if (item.type === 'function_call') this.toolStart(item, data, out);
        break;
      }
      case 'response.function_call_arguments.delta': {
        const entry = this.toolByItem.get(itemKey(data));
        const delta = typeof data.delta === 'string' ? data.delta : '';
        if (entry && delta) {
          entry.args += delta;
          this.emit(out, { tool_calls: [{ index: entry.index, function: { arguments: delta } }] });
        }
        break;
      }
      case 'response.output_text.delta':
        if (typeof data.delta === 'string' && data.delta) {
          const k = itemKey(data);
          this.textByItem.set(k, (this.textByItem.get(k) ?? '') + data.delta);
          this.emit(out, { content: data.delta });
        }
        break;
      case 'response.refusal.delta':
        if (typeof data.delta === 'string' && data.delta) this.emit(out, { refusal: data.delta });
        break;
      case 'response.reasoning_summary_text.delta':
      case 'response.reasoning_text.delta':
        if (typeof data.delta === 'string' && data.delta) {
          // Summary parts are separate paragraphs; keep them apart in the one reasoning text.
          const part = `${itemKey(data)}#${String(data.summary_index ?? data.content_index ?? 0)}`;
          const sep = this.lastSummary !== undefined && this.lastSummary !== part ? '\n\n' : '';
          this.lastSummary = part;
          this.emit(out, { reasoning_content: sep + data.delta });
        }
        break;
      case 'response.function_call_arguments.done':
      case 'response.output_item.done': {
        const item = (data.item ?? {}) as Item;
        if (type === 'response.function_call_arguments.done' || item.type === 'function_call') this.toolDone(item, data, out);
        else if (item.type === 'message') this.messageDone(item, data, out);
        break;
      }
      case 'response.completed':
      case 'response.done':
      case 'response.incomplete':
        this.finish((data.response ?? {}) as Item, out);
        break;
      case 'response.failed': {
        const err = ((data.response as Item | undefined)?.error ?? {}) as Item;
        throw new ResponsesFailedError(failure(err, 'the response failed'));
      }
      case 'error':
        throw new ResponsesFailedError(failure((data.error as Item | undefined) ?? data, 'the backend reported an error'));
      case 'codex.rate_limits': {
        const used = usedPercent(data.rate_limits);
        if (used !== undefined) this.rateLimit = { usedPercent: used };
        break;
      }
      default:
        break;
    }
    return out;
  }

  private open(out: ChatChunk[]): void {
    if (this.started) return;
    this.started = true;
    out.push(this.chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]));
  }

  private emit(out: ChatChunk[], delta: ChunkDelta): void {
    this.open(out);
    out.push(this.chunk([{ index: 0, delta, finish_reason: null }]));
  }

  private toolStart(item: Item, data: Item, out: ChatChunk[]): void {
    const key = typeof item.id === 'string' ? item.id : itemKey(data);
    if (this.toolByItem.has(key)) return;
    const entry = { index: this.tools++, args: '' };
    this.toolByItem.set(key, entry);
    const callId = typeof item.call_id === 'string' ? item.call_id : typeof item.id === 'string' ? item.id : `call_${entry.index}`;
    const args = typeof item.arguments === 'string' ? item.arguments : '';
    entry.args = args;
    this.emit(out, {
      tool_calls: [{ index: entry.index, id: callId, type: 'function', function: { name: String(item.name ?? ''), arguments: args } }],
    });
  }

  /** The final arguments: whatever the deltas did not deliver yet (all of it if there were none). */
  private toolDone(item: Item, data: Item, out: ChatChunk[]): void {
    const key = typeof item.id === 'string' ? item.id : itemKey(data);
    if (!this.toolByItem.has(key) && item.type === 'function_call') this.toolStart({ ...item, arguments: '' }, data, out);
    const entry = this.toolByItem.get(key);
    const final = typeof item.arguments === 'string' ? item.arguments : typeof data.arguments === 'string' ? data.arguments : undefined;
    if (!entry || final === undefined || final === entry.args) return;
    if (final.startsWith(entry.args)) {
      const rest = final.slice(entry.args.length);
      entry.args = final;
      this.emit(out, { tool_calls: [{ index: entry.index, function: { arguments: rest } }] });
    }
  }

  /** A message whose text arrived only whole (no deltas) is delivered here. */
  private messageDone(item: Item, data: Item, out: ChatChunk[]): void {
    const parts = Array.isArray(item.content) ? (item.content as Item[]) : [];
    const text = parts.map((p) => (p.type === 'output_text' && typeof p.text === 'string' ? p.text : '')).join('');
    const key = typeof item.id === 'string' ? item.id : itemKey(data);
    const seen = this.textByItem.get(key) ?? '';
    if (text.length > seen.length && text.startsWith(seen)) {
      this.textByItem.set(key, text);
      this.emit(out, { content: text.slice(seen.length) });
    }
  }

  private finish(response: Item, out: ChatChunk[]): void {
    this.open(out);
    this.completed = true;
    const incomplete = response.status === 'incomplete';
    const reason = ((response.incomplete_details ?? {}) as Item).reason;
    const finish = incomplete ? (reason === 'content_filter' ? 'content_filter' : 'length') : this.tools > 0 ? 'tool_calls' : 'stop';
    out.push(this.chunk([{ index: 0, delta: {}, finish_reason: finish }]));
    const usage = chatUsage(response.usage);
    if (usage) out.push({ ...this.chunk([]), usage });
  }

  private chunk(choices: ChatChunk['choices']): ChatChunk {
    return { id: this.id, object: 'chat.completion.chunk', created: this.created, model: this.model, choices };
  }
}

/** Links a delta to its item: `item_id`, else the output index. */
function itemKey(data: Item): string {
  return typeof data.item_id === 'string' ? data.item_id : `#${String(data.output_index ?? 0)}`;
}

function failure(err: Item, fallback: string): ResponsesFailure {
  const str = (v: unknown) => (typeof v === 'string' && v ? v : undefined);
  return {
    code: str(err.code),
    type: str(err.type),
    message: str(err.message) ?? str(err.code) ?? str(err.type) ?? fallback,
    resetsAt: resetsAtOf(err),
  };
}

/**
 * When a usage limit resets, in epoch seconds: the error's `resets_at`, or `resets_in_seconds`
 * from now (the backend has sent both forms).
 */
export function resetsAtOf(err: Record<string, unknown>, nowMs = Date.now()): number | undefined {
  const at = err.resets_at;
  if (typeof at === 'number' && Number.isFinite(at)) return at;
  const inSeconds = err.resets_in_seconds;
  if (typeof inSeconds === 'number' && Number.isFinite(inSeconds) && inSeconds >= 0) return nowMs / 1000 + inSeconds;
  return undefined;
}

function usedPercent(limits: unknown): number | undefined {
  if (!limits || typeof limits !== 'object') return undefined;
  const values = ['primary', 'secondary']
    .map((k) => ((limits as Record<string, { used_percent?: unknown } | undefined>)[k] ?? {}).used_percent)
    .filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  return values.length ? Math.max(...values) : undefined;
}

/** Responses usage → chat usage. `input_tokens` already includes the cached ones, as `prompt_tokens` does. */
export function chatUsage(u: unknown): Usage | undefined {
  if (!u || typeof u !== 'object') return undefined;
  const o = u as Record<string, unknown>;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  const prompt = num(o.input_tokens);
  const completion = num(o.output_tokens);
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: num(o.total_tokens) || prompt + completion,
    prompt_tokens_details: { cached_tokens: num((o.input_tokens_details as Item | undefined)?.cached_tokens) },
    completion_tokens_details: { reasoning_tokens: num((o.output_tokens_details as Item | undefined)?.reasoning_tokens) },
  };
}
