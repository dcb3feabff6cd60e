import { createHash } from 'node:crypto';
import type { ChatChunk, ChatMessage, ChatRequest, ChatResponse, ChunkDelta, ContentPart, ToolCall, Usage } from '../../common/chat.types';
import type { UpstreamError } from '../../common/errors';
import type { RouteDef } from '../../config/registry.types';
import { parseEmbeddedJson } from '../../common/json-body';
import { claudeEffort, effortForBudget, type Effort } from '../../common/reasoning';
import { isJsonObject, ownValue } from '../../common/json-object';
import { countOrZero as n, isTokenCount } from '../../common/usage';
import { assistantContent } from '../../common/tokens';
import { base64DataUrl, checkEffort, providerHttpError, refuseUntranslatableTools, unsupported } from '../http/upstream-call';
import type {
  AnthropicContentBlock,
  AnthropicMessage,
  AnthropicRequest,
  AnthropicResponse,
  AnthropicStreamEvent,
  AnthropicTextBlock,
  AnthropicThinking,
  AnthropicTool,
  AnthropicToolChoice,
  AnthropicUsage,
} from './anthropic.types';

/**
 * OpenAI chat ⇄ Anthropic Messages, as pure functions: the canonical request as a Messages body,
 * a Messages answer (whole or as stream events) as canonical chat, usage, stop reasons and
 * errors. The `anthropic`, `vertex_claude` (and subscription) adapters share them; so can an
 * Anthropic-shaped surface.
 */

export const ANTHROPIC_VERSION = '2023-06-01';
export const DEFAULT_MAX_TOKENS = 4096;

/** `reasoning_effort` as a thinking budget (LiteLLM's mapping). */
export const THINKING_BUDGETS: Readonly<Record<string, number>> = {
  minimal: 1024,
  low: 1024,
  medium: 2048,
  high: 4096,
  xhigh: 8192,
  max: 16384,
};
/** The smallest thinking budget Anthropic accepts. */
const MIN_THINKING_BUDGET = 1024;

export interface AnthropicRequestOptions {
  /** The upstream model id; omitted from the body when undefined (Vertex puts it in the URL). */
  model?: string;
  /** `max_tokens` when the request sets none (Anthropic requires one). */
  defaultMaxTokens?: number;
  /** The route's own `thinking` (its `extra_body`): in place of what the request asked for. */
  thinking?: AnthropicThinking;
}

type Blocks = AnthropicContentBlock[];

/**
 * A tool-use id as Anthropic accepts it (`^[a-zA-Z0-9_-]+$`, at most 64 characters); `fallback`
 * (unique within the message) when there is none to clean.
 */
export function anthropicToolId(id: string | undefined, fallback = 'toolu_'): string {
  const clean = (id ?? '').replace(/[^a-zA-Z0-9_-]/g, '_').slice(0, 64);
  return clean || fallback;
}

/** `base`, or else `base_2`, `base_3`, ... (within 64 characters): the first `used` lacks, which is added to it. */
export function uniqueToolId(base: string, used: Set<string>): string {
  let unique = base;
  for (let n = 2; used.has(unique); n++) unique = `${base.slice(0, 64 - String(n).length - 1)}_${n}`;
  used.add(unique);
  return unique;
}

/**
 * The tool-use ids of one request in Anthropic's spelling, unique across the conversation:
 * Anthropic refuses an id used twice, which OpenAI takes (servers that number calls `call_0` in
 * every turn; two ids that clean to the same). A tool result takes the id of its call in the
 * latest assistant turn that made one of that id (in order, should that turn repeat it).
 */
class ToolIds {
  private readonly used = new Set<string>();
  private readonly latest = new Map<string, string[]>();

  /** The ids of an assistant turn's calls. */
  forCalls(ids: Array<string | undefined>): string[] {
    const turn = new Map<string, string[]>();
    const out = ids.map((id) => {
      const unique = uniqueToolId(anthropicToolId(id), this.used);
      if (id !== undefined) turn.set(id, [...(turn.get(id) ?? []), unique]);
      return unique;
    });
    for (const [id, list] of turn) this.latest.set(id, list);
    return out;
  }

  forResult(id: string): string {
    const list = this.latest.get(id);
    if (!list) return anthropicToolId(id);
    return list.length > 1 ? list.shift()! : list[0];
  }
}

function cacheControl(part: unknown): Pick<AnthropicTextBlock, 'cache_control'> {
  const cc = (part as { cache_control?: AnthropicTextBlock['cache_control'] })?.cache_control;
  return cc ? { cache_control: cc } : {};
}

/** OpenAI content parts → Anthropic content blocks (text, images, PDFs). */
export function contentBlocks(content: ChatMessage['content'], at: string): Blocks {
  if (content === null || content === undefined) return [];
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }];
  const out: Blocks = [];
  /** A breakpoint on an empty text part before any block: the next block takes it. */
  let pendingCache: Pick<AnthropicTextBlock, 'cache_control'> | undefined;
  content.forEach((part: ContentPart, j) => {
    switch (part.type) {
      case 'text': {
        // Anthropic refuses an empty text block, which OpenAI takes; a cache breakpoint on one
        // goes to the block before it (the prefix it marks is the same).
        const text = String((part as { text: unknown }).text);
        const cc = cacheControl(part);
        if (text !== '') {
          out.push({ type: 'text', text, ...pendingCache, ...cc });
          pendingCache = undefined;
        } else if (cc.cache_control && out.length > 0) {
          // Not over a breakpoint the block has of its own (its TTL may be longer).
          const prev = out[out.length - 1] as { cache_control?: unknown };
          prev.cache_control ??= cc.cache_control;
        } else if (cc.cache_control) pendingCache = cc;
        break;
      }
      case 'image_url': {
        const iu = (part as { image_url: string | { url: string } }).image_url;
        const url = typeof iu === 'string' ? iu : iu.url;
        const d = base64DataUrl(url, `${at}.content[${j}]`);
        out.push({
          type: 'image',
          source: d ? { type: 'base64', media_type: d.mediaType, data: d.data } : { type: 'url', url },
          ...cacheControl(part),
        });
        break;
      }
      case 'file': {
        const f = (part as { file?: { file_data?: string; filename?: string } }).file;
        const d = f?.file_data ? base64DataUrl(f.file_data, `${at}.content[${j}]`) : undefined;
        if (!d)
          throw unsupported(`${at}.content[${j}]: files must be sent inline as file_data (a base64 data: URL)`, `${at}.content[${j}]`);
        out.push({
          type: 'document',
          source: { type: 'base64', media_type: d.mediaType, data: d.data },
          ...(f?.filename ? { title: f.filename } : {}),
          ...cacheControl(part),
        });
        break;
      }
      default:
        throw unsupported(`${at}.content[${j}]: content of type "${part.type}" cannot be sent to Anthropic`, `${at}.content[${j}].type`);
    }
  });
  return out;
}

function parseArguments(args: string, at: string): unknown {
  if (args.trim() === '') return {};
  try {
    return parseEmbeddedJson(args);
  } catch (err) {
    throw unsupported(`${at}: function.arguments ${err instanceof RangeError ? err.message : 'must be JSON'}`, at);
  }
}

function assistantBlocks(m: ChatMessage, at: string, ids: ToolIds): Blocks {
  const out: Blocks = [];
  // Thinking blocks go back first and unchanged (their signatures are checked).
  const thinking = m.thinking_blocks;
  if (Array.isArray(thinking)) {
    const blocks = thinking as Array<{ type?: string; thinking?: string; signature?: string; data?: string }>;
    // A client that kept a streamed signature apart from the text (one signed block, no text)
    // has the text as reasoning_content: together they are the block Anthropic signed.
    const signed = blocks.filter((b) => b?.type === 'thinking' && b.signature);
    const text = signed.length === 1 && !signed[0].thinking && typeof m.reasoning_content === 'string' ? m.reasoning_content : undefined;
    for (const b of blocks) {
      if (b?.type === 'thinking' && typeof b.signature === 'string' && b.signature)
        out.push({ type: 'thinking', thinking: b.thinking || (text ?? ''), signature: b.signature });
      else if (b?.type === 'redacted_thinking' && typeof b.data === 'string') out.push({ type: 'redacted_thinking', data: b.data });
    }
  }
  // Anthropic refuses a text block of whitespace alone ("text content blocks must contain
  // non-whitespace text"), which models write before a tool call ("\n\n"): sent back, it stuck
  // the conversation on that 400.
  for (const b of contentBlocks(assistantContent(m), at)) if (b.type !== 'text' || b.text.trim() !== '') out.push(b);
  const calls = m.tool_calls ?? [];
  const callIds = ids.forCalls(calls.map((t) => t.id));
  calls.forEach((t: ToolCall, j) => {
    out.push({
      type: 'tool_use',
      id: callIds[j],
      name: t.function.name,
      input: parseArguments(t.function.arguments, `${at}.tool_calls[${j}]`),
    });
  });
  return out;
}

function toolResult(m: ChatMessage, at: string, ids: ToolIds): AnthropicContentBlock {
  const blocks = typeof m.content === 'string' ? m.content : contentBlocks(m.content, at);
  return {
    type: 'tool_result',
    tool_use_id: ids.forResult(String(m.tool_call_id)),
    content:
      typeof blocks === 'string'
        ? blocks
        : blocks.filter((b): b is Extract<AnthropicContentBlock, { type: 'text' | 'image' }> => b.type === 'text' || b.type === 'image'),
    ...(m.is_error === true ? { is_error: true } : {}),
  };
}

/** Appends blocks to the conversation, merging into the previous message of the same role. */
function push(messages: AnthropicMessage[], role: 'user' | 'assistant', blocks: Blocks | string): void {
  const last = messages[messages.length - 1];
  if (last && last.role === role) {
    // An empty string merged would be an empty text block, which Anthropic refuses.
    const asBlocks = (c: Blocks | string): Blocks => (typeof c !== 'string' ? c : c === '' ? [] : [{ type: 'text', text: c }]);
    const merged = [...asBlocks(last.content), ...asBlocks(blocks)];
    if (merged.length > 0) last.content = merged;
  } else {
    messages.push({ role, content: blocks });
  }
}

function systemOf(messages: ChatMessage[]): AnthropicRequest['system'] {
  const blocks: AnthropicTextBlock[] = [];
  messages.forEach((m, i) => {
    if (m.role !== 'system' && m.role !== 'developer') return;
    contentBlocks(m.content, `messages[${i}]`).forEach((b, j) => {
      // Claude's system prompt is text only: an image or a file there would be dropped unseen.
      if (b.type !== 'text')
        throw unsupported(
          `messages[${i}].content[${j}]: Claude takes text only in system prompts; send images and files in a user message`,
          `messages[${i}].content[${j}]`,
        );
      blocks.push(b);
    });
  });
  if (blocks.length === 0) return undefined;
  return blocks.some((b) => b.cache_control) ? blocks : blocks.map((b) => b.text).join('\n\n');
}

function toolChoice(req: ChatRequest): AnthropicToolChoice | undefined {
  const tc = req.tool_choice;
  let out: AnthropicToolChoice | undefined;
  if (tc === 'auto') out = { type: 'auto' };
  else if (tc === 'none') out = { type: 'none' };
  else if (tc === 'required') out = { type: 'any' };
  else if (tc && typeof tc === 'object') out = { type: 'tool', name: tc.function.name };
  if (req.parallel_tool_calls === false && out?.type !== 'none') out = { ...(out ?? { type: 'auto' }), disable_parallel_tool_use: true };
  return out;
}

/**
 * The most a Claude route may write for a request allowed `allowed` completion tokens: thinking's
 * budget is part of Anthropic's max_tokens, so when it would not fit in them it is added on top
 * (see `toAnthropicRequest`), and the answer may be that much longer than the client allowed.
 */
export function claudeOutputAllowance(req: ChatRequest, allowed: number, model?: string, routeThinking?: AnthropicThinking): number {
  let thinking: AnthropicThinking | undefined;
  try {
    thinking = routeThinking ?? thinkingOf(req, model);
  } catch {
    // An effort no table knows: the route refuses it when it is tried (the model's next route
    // may take it), not the admission of every route.
    return allowed;
  }
  return thinking?.type === 'enabled' && allowed <= thinking.budget_tokens ? allowed + thinking.budget_tokens : allowed;
}

function thinkingOf(req: ChatRequest, model?: string): AnthropicThinking | undefined {
  const native = req.thinking as AnthropicThinking | undefined;
  if (native && typeof native === 'object') return native;
  const asked = requestedThinking(req);
  if (!asked) return undefined;
  return budgetedThinking(model) ? { type: 'enabled', budget_tokens: asked.budget } : { type: 'adaptive' };
}

/**
 * The thinking asked for in OpenAI's terms (`reasoning`, `reasoning_effort`), if any: a budget
 * for the Claudes that take one, and the effort adaptive thinking takes (none: Claude's default).
 */
function requestedThinking(req: ChatRequest): { budget: number; effort?: Effort } | undefined {
  const reasoning = req.reasoning as { effort?: string; max_tokens?: number; enabled?: boolean } | undefined;
  const byEffort = (effort: unknown, param: string) => {
    checkEffort(effort, param);
    const budget = typeof effort === 'string' ? ownValue(THINKING_BUDGETS, effort) : undefined;
    return budget === undefined ? undefined : { budget, effort: claudeEffort(effort as string) };
  };
  if (reasoning && typeof reasoning === 'object') {
    // Anthropic's smallest budget is 1,024 tokens; a smaller one is a 400 there. None is none
    // (as Gemini takes a budget of 0).
    if (typeof reasoning.max_tokens === 'number')
      return reasoning.max_tokens > 0
        ? { budget: Math.max(MIN_THINKING_BUDGET, Math.floor(reasoning.max_tokens)), effort: effortForBudget(reasoning.max_tokens) }
        : undefined;
    const asked = byEffort(reasoning.effort, 'reasoning.effort');
    if (asked) return asked;
    if (reasoning.enabled === true) return { budget: THINKING_BUDGETS.medium };
  }
  return byEffort(req.reasoning_effort, 'reasoning_effort');
}

/**
 * Whether a Claude model thinks on a token budget (`thinking: {type: enabled, budget_tokens}`):
 * the models before 4.6. Opus and Sonnet 4.6 deprecate budgets for adaptive thinking (with
 * `output_config.effort`), and Opus 4.7 and later refuse them with a 400, so a model whose id
 * names no version before 4.6 (or no version at all) gets adaptive thinking.
 */
export function budgetedThinking(model: string | undefined): boolean {
  // claude-3-5-sonnet-20241022, claude-sonnet-4-20250514, claude-opus-4-1@20250805,
  // anthropic.claude-haiku-4-5-v1, claude-sonnet-4.5
  const m = /claude-(?:[a-z]+-)?(\d+)(?:[-.](\d)(?!\d))?/.exec(model ?? '');
  if (!m) return false;
  const major = Number(m[1]);
  const minor = m[2] === undefined ? 0 : Number(m[2]);
  return major < 4 || (major === 4 && minor < 6);
}

/**
 * OpenAI's `user` as Anthropic's `metadata.user_id`, which is to be opaque: Anthropic refuses one
 * over 256 characters or that looks like an email address or a phone number, and OpenAI takes
 * any. Such a value goes as its SHA-256 (the same user, the same id), others as they are.
 */
export function claudeUserId(user: string): string {
  return user.length <= 256 && /^[\w.:-]+$/.test(user) && !/^\+?\d[\d.-]{6,}$/.test(user)
    ? user
    : createHash('sha256').update(user).digest('hex');
}

/**
 * The canonical request as a Messages body: system and developer messages become `system`,
 * tool results become `tool_result` blocks in a user turn (consecutive ones merged), images and
 * PDFs become blocks, tools and `tool_choice` map across (`parallel_tool_calls: false` →
 * `disable_parallel_tool_use`), `stop` → `stop_sequences`, `user` → `metadata.user_id`,
 * `reasoning_effort` / `reasoning` / `thinking` → `thinking`, and `max_tokens` is always set.
 * What Anthropic cannot express (`n` > 1, unknown content) is a 400.
 */
export function toAnthropicRequest(req: ChatRequest, opts: AnthropicRequestOptions = {}): AnthropicRequest {
  if (typeof req.n === 'number' && req.n > 1) throw unsupported('Anthropic models answer with one choice; n must be 1', 'n');
  refuseUntranslatableTools(req, 'Claude');
  const messages: AnthropicMessage[] = [];
  const ids = new ToolIds();
  req.messages.forEach((m, i) => {
    const at = `messages[${i}]`;
    switch (m.role) {
      case 'system':
      case 'developer':
        return;
      case 'user':
      case 'function':
        push(messages, 'user', typeof m.content === 'string' ? m.content : contentBlocks(m.content, at));
        return;
      case 'assistant': {
        const blocks = assistantBlocks(m, at, ids);
        if (blocks.length > 0) push(messages, 'assistant', blocks);
        return;
      }
      case 'tool':
        push(messages, 'user', [toolResult(m, at, ids)]);
        return;
    }
  });

  const body: AnthropicRequest = {
    ...(opts.model !== undefined ? { model: opts.model } : {}),
    max_tokens: req.max_completion_tokens ?? req.max_tokens ?? opts.defaultMaxTokens ?? DEFAULT_MAX_TOKENS,
    messages,
  };
  const system = systemOf(req.messages);
  if (system !== undefined) body.system = system;
  if (req.tools?.length) {
    body.tools = req.tools.map((t): AnthropicTool => ({
      name: t.function.name,
      ...(t.function.description ? { description: t.function.description } : {}),
      input_schema: t.function.parameters ?? { type: 'object', properties: {} },
      ...cacheControl(t),
    }));
    const tc = toolChoice(req);
    if (tc) body.tool_choice = tc;
  }
  if (req.stop !== undefined && req.stop !== null) {
    const stops = (Array.isArray(req.stop) ? req.stop : [req.stop]).filter((s) => s.trim() !== '');
    if (stops.length > 0) body.stop_sequences = stops;
  }
  if (typeof req.temperature === 'number') body.temperature = Math.min(1, req.temperature);
  // Claude 4.5 and later refuse temperature and top_p together ("cannot both be specified"), and
  // Anthropic advises changing only one; many OpenAI clients send both. Temperature is kept.
  else if (typeof req.top_p === 'number') body.top_p = req.top_p;
  // vLLM's -1 (and 0) is top-k off: Claude is told nothing.
  if (typeof req.top_k === 'number' && req.top_k >= 1) body.top_k = req.top_k;
  if (typeof req.user === 'string' && req.user) body.metadata = { user_id: claudeUserId(req.user) };
  const format = outputFormat(req.response_format);
  if (format) body.output_config = { format };
  // Thinking asked for in OpenAI's terms (reasoning_effort, reasoning), or set by the route, is
  // left out where Claude refuses it, rather than failing the request: a forced tool choice, or
  // a tool loop whose last assistant turn came back without its thinking block (as the OpenAI
  // SDK's runTools sends it). A client's own Anthropic `thinking` goes as it is.
  const asked = !opts.thinking && req.thinking !== null && typeof req.thinking === 'object';
  const thinking = opts.thinking ?? thinkingOf(req, opts.model);
  if (thinking && fitThinking(body, thinking, !asked)) {
    // Adaptive thinking asked for in OpenAI's terms: how hard to think is the effort.
    let effort = thinking.type === 'adaptive' && !asked && !opts.thinking ? requestedThinking(req)?.effort : undefined;
    // Claude's max effort is for its Opus, Sonnet and newer lines, not Haiku.
    if (effort === 'max' && /haiku/i.test(opts.model ?? '')) effort = 'high';
    if (effort) body.output_config = { ...body.output_config, effort };
  }
  if (req.stream === true) body.stream = true;
  return body;
}

/**
 * Puts `thinking` in a Messages body with what Claude requires beside it: a `max_tokens` above
 * the budget (the budget is part of it: the answer keeps the room it was given) and no sampling
 * changes. With `optional`, it is left out where Claude would refuse it (see thinkingRefused).
 * Whether it went in.
 */
export function fitThinking(
  body: { max_tokens?: unknown; temperature?: unknown; top_k?: unknown; top_p?: unknown; thinking?: unknown },
  thinking: AnthropicThinking,
  optional: boolean,
): boolean {
  if (thinking.type !== 'disabled' && optional && thinkingRefused(body as AnthropicRequest)) {
    delete body.thinking;
    return false;
  }
  body.thinking = thinking;
  if (thinking.type === 'disabled') return true;
  if (thinking.type === 'enabled' && typeof body.max_tokens === 'number' && body.max_tokens <= thinking.budget_tokens)
    body.max_tokens = thinking.budget_tokens + body.max_tokens;
  delete body.temperature;
  delete body.top_k;
  delete body.top_p;
  return true;
}

/**
 * Whether Claude would refuse extended thinking for this body: the tool choice forces a tool,
 * or the last assistant turn uses a tool without starting with a thinking block.
 */
function thinkingRefused(body: AnthropicRequest): boolean {
  const tc = body.tool_choice as { type?: string } | undefined;
  if (tc?.type === 'any' || tc?.type === 'tool') return true;
  const last = body.messages.findLast((m) => m.role === 'assistant');
  if (!last || typeof last.content === 'string') return false;
  const blocks = last.content as Array<{ type: string }>;
  return blocks.some((b) => b.type === 'tool_use') && blocks[0]?.type !== 'thinking' && blocks[0]?.type !== 'redacted_thinking';
}

/**
 * OpenAI's `response_format` as Claude's structured output (`output_config.format`): a JSON
 * schema carries over as it is. Claude has no JSON mode without a schema, so `json_object` is
 * refused rather than silently answered in prose.
 */
function outputFormat(rf: unknown): { type: 'json_schema'; schema: Record<string, unknown> } | undefined {
  if (rf === undefined || rf === null) return undefined;
  const f = rf as { type?: unknown; json_schema?: { schema?: unknown } };
  if (f.type === 'text') return undefined;
  if (f.type === 'json_schema') {
    const schema = f.json_schema?.schema;
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema))
      throw unsupported('response_format.json_schema.schema must be a JSON Schema object', 'response_format.json_schema.schema');
    return { type: 'json_schema', schema: schema as Record<string, unknown> };
  }
  if (f.type === 'json_object')
    throw unsupported(
      'Claude has no JSON mode without a schema: send response_format {"type": "json_schema", "json_schema": {"schema": ...}}',
      'response_format',
    );
  throw unsupported(`response_format of type ${JSON.stringify(f.type)} is not supported by Claude`, 'response_format');
}

/**
 * A `message_delta`'s cumulative usage laid over what `message_start` said: only figures that
 * are token counts are taken. True when it gave the output's count (the stream's last word on it).
 */
export function mergeDeltaUsage(into: AnthropicUsage, delta: unknown): boolean {
  if (!isJsonObject(delta)) return false;
  for (const [k, v] of Object.entries(delta)) if (isTokenCount(v)) into[k] = v;
  // Cumulative, like the counts: the searches run so far.
  const tools = (delta as AnthropicUsage).server_tool_use;
  if (isJsonObject(tools)) into.server_tool_use = { ...tools };
  return isTokenCount((delta as AnthropicUsage).output_tokens);
}

/**
 * Anthropic usage in OpenAI's terms. Anthropic's `input_tokens` excludes cache reads and writes;
 * OpenAI's `prompt_tokens` includes them, with the reads as `cached_tokens` and the writes as
 * `cache_write_tokens`.
 */
export function anthropicUsage(u: AnthropicUsage | null | undefined): Usage | undefined {
  // Without both counts (missing, text, negative) there is no usage: the request is estimated.
  if (!u || typeof u !== 'object' || !isTokenCount(u.input_tokens) || !isTokenCount(u.output_tokens)) return undefined;
  const cacheRead = n(u.cache_read_input_tokens);
  // `cache_creation` splits the writes by lifetime; a one-hour write costs more than a 5-minute one.
  const split = isJsonObject(u.cache_creation) ? u.cache_creation : {};
  const fiveMinutes = n(split.ephemeral_5m_input_tokens);
  const oneHour = n(split.ephemeral_1h_input_tokens);
  const cacheWrite = n(u.cache_creation_input_tokens) || fiveMinutes + oneHour;
  const prompt = u.input_tokens + cacheRead + cacheWrite;
  const completion = u.output_tokens;
  const details: NonNullable<Usage['prompt_tokens_details']> = { cached_tokens: cacheRead, cache_write_tokens: cacheWrite };
  if (oneHour > 0) details.cache_write_1h_tokens = Math.min(oneHour, cacheWrite);
  const out: Usage = {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: details,
  };
  // Web searches Claude ran (its server tool), billed apart from the tokens.
  const searches = isJsonObject(u.server_tool_use) ? n(u.server_tool_use.web_search_requests) : 0;
  if (searches > 0) out.server_tool_use = { web_search_requests: searches };
  return out;
}

/** Anthropic stop reasons as OpenAI finish reasons (LiteLLM's mapping). */
export function finishReason(stop: string | null | undefined): string | null {
  switch (stop) {
    case null:
    case undefined:
      return null;
    case 'end_turn':
    case 'stop_sequence':
    case 'pause_turn':
      return 'stop';
    case 'max_tokens':
    case 'model_context_window_exceeded':
      return 'length';
    case 'tool_use':
      return 'tool_calls';
    case 'refusal':
      return 'content_filter';
    default:
      return 'stop';
  }
}

/**
 * A Messages answer as a chat completion: text blocks → `content` (null when there is none),
 * `tool_use` → `tool_calls`, thinking → `reasoning_content` plus `thinking_blocks` (with their
 * signatures, for the client to send back on the next turn).
 */
export function fromAnthropicResponse(msg: AnthropicResponse): ChatResponse {
  let text = '';
  let reasoning = '';
  const toolCalls: ToolCall[] = [];
  const thinkingBlocks: Array<Record<string, unknown>> = [];
  for (const b of msg.content ?? []) {
    if (b.type === 'text') text += typeof b.text === 'string' ? b.text : '';
    else if (b.type === 'tool_use')
      toolCalls.push({ id: b.id, type: 'function', function: { name: b.name, arguments: JSON.stringify(b.input ?? {}) } });
    else if (b.type === 'thinking') {
      reasoning += typeof b.thinking === 'string' ? b.thinking : '';
      thinkingBlocks.push({ type: 'thinking', thinking: b.thinking, signature: b.signature });
    } else if (b.type === 'redacted_thinking') thinkingBlocks.push({ type: 'redacted_thinking', data: b.data });
  }
  const message: ChatResponse['choices'][number]['message'] = {
    role: 'assistant',
    content: text === '' && toolCalls.length > 0 ? null : text,
  };
  if (toolCalls.length > 0) message.tool_calls = toolCalls;
  if (reasoning) message.reasoning_content = reasoning;
  if (thinkingBlocks.length > 0) message.thinking_blocks = thinkingBlocks;
  return {
    id: msg.id,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: msg.model,
    choices: [{ index: 0, message, finish_reason: finishReason(msg.stop_reason) ?? 'stop', logprobs: null }],
    usage: anthropicUsage(msg.usage),
  };
}

/**
 * Translates a Messages event stream into chat chunks, event by event. Usage is split across
 * `message_start` (input and cache figures) and `message_delta` (cumulative output, sometimes
 * input again); both are kept and the total goes out in a `choices: []` chunk at
 * `message_stop`. `error` events throw.
 */
export class AnthropicStreamTranslator {
  private id = '';
  private model = '';
  private readonly created = Math.floor(Date.now() / 1000);
  private usage: AnthropicUsage = {};
  /** Content block index → the tool call index it streams into. */
  private readonly toolIndex = new Map<number, number>();
  private tools = 0;
  /** `message_stop` arrived: the answer is complete. */
  done = false;
  /** A finish reason went out. */
  private finished = false;

  /** `message_delta` said how the answer ended: it is whole, whether or not `message_stop` follows. */
  get answered(): boolean {
    return this.finished;
  }
  /** A message_delta gave the output's count. */
  private outputCounted = false;
  /** Tool-use blocks (by content index) that have streamed no arguments yet. */
  private readonly argumentless = new Set<number>();
  /** Thinking blocks' text so far, by content index (for the block sent with its signature). */
  private readonly thinking = new Map<number, string>();
  /** The signed thinking and redacted thinking blocks so far, in order. */
  private readonly signedBlocks: Array<Record<string, unknown>> = [];

  constructor(private readonly route: RouteDef) {}

  push(ev: AnthropicStreamEvent): ChatChunk[] {
    switch (ev.type) {
      case 'message_start': {
        this.id = ev.message.id;
        this.model = ev.message.model;
        this.usage = isJsonObject(ev.message.usage) ? { ...ev.message.usage } : {};
        // The input and cache figures so far: a stream cut before message_delta bills on them.
        const role = this.chunk({ role: 'assistant', content: '' });
        const soFar = anthropicUsage(this.usage);
        return [soFar ? { ...role, usage: soFar } : role];
      }
      case 'content_block_start': {
        const b = ev.content_block;
        if (b.type === 'tool_use') {
          const index = this.tools++;
          this.toolIndex.set(ev.index, index);
          // Anthropic starts a call with input {} and streams the arguments after.
          const given = isJsonObject(b.input) && Object.keys(b.input).length > 0 ? JSON.stringify(b.input) : '';
          if (given === '') this.argumentless.add(ev.index);
          return [this.chunk({ tool_calls: [{ index, id: b.id, type: 'function', function: { name: b.name, arguments: given } }] })];
        }
        if (b.type === 'text' && b.text) return [this.chunk({ content: b.text })];
        if (b.type === 'thinking') this.thinking.set(ev.index, typeof b.thinking === 'string' ? b.thinking : '');
        if (b.type === 'thinking' && b.thinking) return [this.chunk({ reasoning_content: b.thinking })];
        if (b.type === 'redacted_thinking') {
          this.signedBlocks.push({ type: 'redacted_thinking', data: b.data });
          return [this.chunk({ thinking_blocks: [...this.signedBlocks] })];
        }
        return [];
      }
      case 'content_block_delta': {
        const d = ev.delta;
        switch (d.type) {
          case 'text_delta':
            return d.text ? [this.chunk({ content: d.text })] : [];
          case 'input_json_delta': {
            const index = this.toolIndex.get(ev.index);
            if (index === undefined || !d.partial_json) return [];
            this.argumentless.delete(ev.index);
            return [this.chunk({ tool_calls: [{ index, function: { arguments: d.partial_json } }] })];
          }
          case 'thinking_delta':
            if (!d.thinking) return [];
            this.thinking.set(ev.index, (this.thinking.get(ev.index) ?? '') + d.thinking);
            return [this.chunk({ reasoning_content: d.thinking })];
          case 'signature_delta':
            // Every signed block so far, each whole, as they must go back on the next turn: the
            // OpenAI SDK (and the gateway's own aggregator) keep the last thinking_blocks they saw.
            this.signedBlocks.push({ type: 'thinking', thinking: this.thinking.get(ev.index) ?? '', signature: d.signature });
            return [this.chunk({ thinking_blocks: [...this.signedBlocks] })];
          default:
            return [];
        }
      }
      case 'content_block_stop': {
        // A call whose input stayed {} (no argument deltas): its arguments are "{}", as in a whole answer.
        const index = this.toolIndex.get(ev.index);
        if (index === undefined || !this.argumentless.delete(ev.index)) return [];
        return [this.chunk({ tool_calls: [{ index, function: { arguments: '{}' } }] })];
      }
      case 'message_delta': {
        if (mergeDeltaUsage(this.usage, ev.usage)) this.outputCounted = true;
        const finish = finishReason(ev.delta?.stop_reason);
        if (!finish) return [];
        this.finished = true;
        return [{ ...this.chunk({}), choices: [{ index: 0, delta: {}, finish_reason: finish }] }];
      }
      case 'message_stop': {
        this.done = true;
        const out: ChatChunk[] = [];
        // A message_delta without a stop reason: the answer still ends, as a plain stop.
        if (!this.finished) out.push({ ...this.chunk({}), choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
        // Without a final output count (message_delta sent none that is one), no final usage: the
        // running figure of message_start stands, and what was delivered after it is estimated.
        const usage = this.outputCounted ? anthropicUsage(this.usage) : undefined;
        if (usage) out.push({ ...this.chunk({}), choices: [], usage });
        return out;
      }
      case 'error':
        throw anthropicStreamError(ev.error, this.route);
      default:
        return [];
    }
  }

  private chunk(delta: ChunkDelta): ChatChunk {
    return {
      id: this.id,
      object: 'chat.completion.chunk',
      created: this.created,
      model: this.model,
      choices: [{ index: 0, delta, finish_reason: null }],
    };
  }
}

/** Anthropic error types as OpenAI's (where the two differ) and the status the client sees. */
const ERROR_TYPES: Readonly<Record<string, { type: string; status?: number; retryable?: boolean }>> = {
  invalid_request_error: { type: 'invalid_request_error' },
  authentication_error: { type: 'authentication_error' },
  permission_error: { type: 'permission_error' },
  not_found_error: { type: 'not_found_error' },
  request_too_large: { type: 'invalid_request_error', status: 413 },
  billing_error: { type: 'insufficient_quota' },
  rate_limit_error: { type: 'rate_limit_error' },
  overloaded_error: { type: 'server_error', status: 503, retryable: true },
};

interface ParsedError {
  /** Anthropic's error type (`overloaded_error`, ...). */
  type?: string;
  message?: string;
  /** Google's canonical status (`RESOURCE_EXHAUSTED`, ...) from Vertex's front end. */
  status?: string;
  /** Anthropic's `details` (`{error_code: "thread_not_found"}`, ...). */
  details?: unknown;
}

/**
 * The error in an Anthropic error body, `{type: "error", error: {type, message}}`; also Google's
 * `{error: {code, message, status}}` (Vertex's front end), possibly wrapped in an array.
 */
export function parseAnthropicError(text: string): ParsedError {
  try {
    let json = JSON.parse(text) as unknown;
    if (Array.isArray(json)) json = json[0];
    const err = (json as { error?: unknown })?.error;
    if (err && typeof err === 'object') {
      const e = err as { type?: unknown; message?: unknown; status?: unknown; details?: unknown };
      return {
        type: typeof e.type === 'string' ? e.type : undefined,
        status: typeof e.status === 'string' ? e.status : undefined,
        message: typeof e.message === 'string' ? e.message : undefined,
        details: e.details,
      };
    }
  } catch {
    // not JSON
  }
  return { message: text.trim().slice(0, 2000) };
}

/**
 * An Anthropic error response as a typed error: `overloaded_error` (529) is a retryable 503,
 * `rate_limit_error` a 429 carrying Retry-After, other 4xx pass through with OpenAI's error type,
 * 5xx are retryable 502s.
 */
export function anthropicHttpError(
  status: number,
  text: string,
  route: RouteDef,
  retryAfterMs: number | undefined,
  what?: string,
): UpstreamError {
  const e = parseAnthropicError(text);
  const known = e.type ? ERROR_TYPES[e.type] : undefined;
  const overloaded = status === 529 || e.type === 'overloaded_error';
  return providerHttpError(
    status,
    {
      message: e.message ?? '',
      type: overloaded ? 'server_error' : (known?.type ?? e.type),
      code: overloaded ? 'overloaded' : (e.type ?? e.status ?? null),
      status: overloaded ? 503 : known?.status,
      retryable: overloaded ? true : undefined,
      details: e.details,
    },
    route,
    retryAfterMs,
    what,
  );
}

/** The HTTP status Anthropic answers each error type with (its errors page). */
const STATUS_OF_TYPE: Readonly<Record<string, number>> = {
  invalid_request_error: 400,
  authentication_error: 401,
  billing_error: 402,
  permission_error: 403,
  not_found_error: 404,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  overloaded_error: 529,
};

/**
 * An `error` event inside a stream that had started with HTTP 200: the error its type stands
 * for, so that the client's in-band event keeps the upstream's type (an invalid_request_error
 * stays one), and a server error says it came as an event, not as a status.
 */
export function anthropicStreamError(err: { type?: string; message?: string }, route: RouteDef): UpstreamError {
  const status = (err.type !== undefined ? STATUS_OF_TYPE[err.type] : undefined) ?? 502;
  return anthropicHttpError(
    status,
    JSON.stringify({ type: 'error', error: err }),
    route,
    undefined,
    `sent an error event${err.type ? ` (${err.type})` : ''}`,
  );
}

/**
 * An `anthropic-beta` header value from several sources (comma-separated lists, or lists of
 * names), each beta once, in order of first appearance; undefined when there is none.
 */
export function mergeBetas(...sources: Array<string | readonly string[] | undefined>): string | undefined {
  const out: string[] = [];
  for (const s of sources) {
    if (s === undefined) continue;
    for (const part of typeof s === 'string' ? s.split(',') : s.flatMap((v) => v.split(','))) {
      const beta = part.trim();
      if (beta && !out.includes(beta)) out.push(beta);
    }
  }
  return out.length > 0 ? out.join(',') : undefined;
}
