import { effortForBudget, REASONING_CARRIER_PREFIX } from '../../common/reasoning';
import { anthropicToolId, uniqueToolId } from '../../adapters/anthropic/anthropic.mapper';
import { ToolCallFixer } from '../../common/chunks';
import type { AnthropicUsage } from '../../adapters/anthropic/anthropic.types';
import { unsupported } from '../../adapters/http/upstream-call';
import { UpstreamError } from '../../common/errors';
import type { MessagesEvent } from '../../adapters/llm-adapter';
import type {
  ChatChunk,
  ChatMessage,
  ChatRequest,
  ChatResponse,
  ContentPart,
  ToolCall,
  ToolDefinition,
  Usage,
} from '../../common/chat.types';
import { isSoundUsage, tokenCounts } from '../../common/usage';
import { isJsonObject } from '../../common/json-object';

/**
 * The Anthropic surface's translation for backends that do not speak the Messages API, as pure
 * functions: a Messages request as a canonical (OpenAI chat) request, a chat completion as a
 * Messages answer, and a chat chunk stream as Messages stream events. The reverse directions
 * (OpenAI → Anthropic) live in the anthropic adapter's mapper.
 */

type Block = { type: string; [k: string]: unknown };
type Json = Record<string, unknown>;

/** `reasoning_effort` for adaptive thinking's `output_config.effort` (`max` is OpenAI's `high`). */
function adaptiveEffort(effort: unknown): 'low' | 'medium' | 'high' {
  return effort === 'low' || effort === 'medium' ? effort : 'high';
}

/**
 * A block's prompt-cache marker, kept (`keep`: for OpenRouter) on the text part it becomes:
 * OpenRouter reads them, and Claude behind it caches the prompt up to there.
 */
function marker(b: Block, keep: boolean): { cache_control?: unknown } {
  return keep && b.cache_control !== undefined && b.cache_control !== null ? { cache_control: b.cache_control } : {};
}

function hasMarker(b: Block, keep: boolean): boolean {
  return marker(b, keep).cache_control !== undefined;
}

/** Text parts, with their markers where kept. */
function textPart(text: string, b: Block, keep: boolean): ContentPart {
  return { type: 'text', text, ...marker(b, keep) };
}

function marked(parts: ContentPart[]): boolean {
  return parts.some((p) => 'cache_control' in p);
}

function blocksOf(content: unknown): Block[] {
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }];
  return Array.isArray(content) ? (content as Block[]) : [];
}

function imagePart(b: Block, at: string): ContentPart {
  const src = b.source as { type?: string; media_type?: string; data?: string; url?: string } | undefined;
  if (src?.type === 'base64') return { type: 'image_url', image_url: { url: `data:${src.media_type};base64,${src.data}` } };
  if (src?.type === 'url') return { type: 'image_url', image_url: { url: String(src.url) } };
  throw unsupported(`${at}.source: images must be base64 or url sources for this model`, `${at}.source`);
}

function documentPart(b: Block, at: string): ContentPart {
  const src = b.source as { type?: string; media_type?: string; data?: string } | undefined;
  if (src?.type === 'base64')
    return {
      type: 'file',
      file: { file_data: `data:${src.media_type};base64,${src.data}`, ...(typeof b.title === 'string' ? { filename: b.title } : {}) },
    };
  if (src?.type === 'text') return { type: 'text', text: String(src.data ?? '') };
  throw unsupported(`${at}.source: documents must be base64 or text sources for this model`, `${at}.source`);
}

/** User content blocks (text, images, documents) as chat content parts. */
function userParts(blocks: Block[], at: string, keep: boolean): ContentPart[] {
  const parts: ContentPart[] = [];
  blocks.forEach((b, j) => {
    const where = `${at}.content.${j}`;
    switch (b.type) {
      case 'text':
        parts.push(textPart(String(b.text ?? ''), b, keep));
        break;
      case 'image':
        parts.push(imagePart(b, where));
        break;
      case 'document':
        parts.push(documentPart(b, where));
        break;
      default:
        throw unsupported(`${where}: content of type "${b.type}" can only be sent to Claude models`, `${where}.type`);
    }
  });
  return parts;
}

/**
 * Separate text blocks (Claude Code sends a <system-reminder> block beside the user's words, and
 * tools answer in several blocks) stay apart as lines when they become one text.
 */
const BLOCK_SEPARATOR = '\n';

/** Two user turns' contents as one (a string each: lines; else parts). */
function joinedContent(a: ChatMessage['content'], b: string | ContentPart[]): string | ContentPart[] {
  if (typeof a === 'string' && typeof b === 'string') return `${a}${BLOCK_SEPARATOR}${b}`;
  const parts = (c: ChatMessage['content']): ContentPart[] =>
    typeof c === 'string' ? [{ type: 'text', text: c }] : Array.isArray(c) ? c : [];
  return [...parts(a), ...parts(b)];
}

/** Parts as a chat message's content: a plain string when they are all text (and carry no cache marker). */
function asContent(parts: ContentPart[]): string | ContentPart[] {
  return parts.every((p) => p.type === 'text') && !marked(parts)
    ? parts.map((p) => (p as { text: string }).text).join(BLOCK_SEPARATOR)
    : parts;
}

/** A tool result as text, and the images and documents in it (which a chat tool message cannot hold). */
function toolResultText(content: unknown, at: string): { text: string; images: ContentPart[] } {
  if (content === undefined || content === null) return { text: '', images: [] };
  if (typeof content === 'string') return { text: content, images: [] };
  const texts: string[] = [];
  const images: ContentPart[] = [];
  blocksOf(content).forEach((b, j) => {
    if (b.type === 'text') texts.push(String(b.text ?? ''));
    else if (b.type === 'image') images.push(imagePart(b, `${at}.content.${j}`));
    else if (b.type === 'document') {
      // A PDF a tool read (Claude Code's Read tool returns one so): with the images, after the results.
      const part = documentPart(b, `${at}.content.${j}`);
      if (part.type === 'text') texts.push(String((part as { text: unknown }).text));
      else images.push(part);
    } else
      throw unsupported(
        `${at}.content.${j}: tool results of type "${b.type}" can only be sent to Claude models`,
        `${at}.content.${j}.type`,
      );
  });
  return { text: texts.join(BLOCK_SEPARATOR), images };
}

/**
 * Claude Code's attribution line (`x-anthropic-billing-header: cc_version=...; cc_entrypoint=...`),
 * the first system block of each request: for Anthropic's billing, and different in each
 * conversation. At the start of another server's prompt it made every prompt-cache lookup (vLLM,
 * SGLang, DeepSeek) miss the ~20k tokens of system prompt and tools the conversations share.
 */
const BILLING_LINE = /^\s*x-anthropic-billing-header:[^\n]*\n?/i;

/** A system text without the attribution line it starts with, if it does (the rest of a merged block stays). */
function withoutBillingLine(text: string): string {
  return BILLING_LINE.test(text) ? text.replace(BILLING_LINE, '') : text;
}

function systemText(system: unknown, keep: boolean): string | ContentPart[] | undefined {
  if (system === undefined || system === null) return undefined;
  if (typeof system === 'string') {
    const text = withoutBillingLine(system);
    return text === '' ? undefined : text;
  }
  const blocks = blocksOf(system)
    .filter((b) => b.type === 'text')
    .map((b) => (BILLING_LINE.test(String(b.text ?? '')) ? { ...b, text: withoutBillingLine(String(b.text)) } : b))
    .filter((b) => String(b.text ?? '') !== '');
  // Marked blocks stay apart, each with its marker (Claude Code marks the end of its prompt).
  if (blocks.some((b) => hasMarker(b, keep))) return blocks.map((b) => textPart(String(b.text ?? ''), b, keep));
  const text = blocks.map((b) => String(b.text ?? '')).join('\n\n');
  return text === '' ? undefined : text;
}

function toolsOf(tools: unknown): ToolDefinition[] | undefined {
  if (!Array.isArray(tools) || tools.length === 0) return undefined;
  return (tools as Json[]).map((t, i): ToolDefinition => {
    // Client tools have no type (or "custom"); Anthropic's server tools (web search, code
    // execution, ...) run at Anthropic and have no counterpart elsewhere.
    if (t.type !== undefined && t.type !== null && t.type !== 'custom')
      throw unsupported(
        `tools.${i}: the tool type "${String(t.type)}" runs at Anthropic and can only be used with Claude models`,
        `tools.${i}.type`,
      );
    return {
      type: 'function',
      function: {
        name: String(t.name),
        ...(typeof t.description === 'string' ? { description: t.description } : {}),
        parameters: (t.input_schema as Json | undefined) ?? { type: 'object', properties: {} },
      },
    };
  });
}

/**
 * A message thread (`thread: {type: "continue", previous_message_id}` sends only the new turns) is
 * conversation state Claude's API keeps; a translated route keeps none, and would answer the new
 * turns alone. Refused as Anthropic refuses a thread it cannot keep, `details` included: Anthropic's
 * SDKs (the tool runner) then send the whole conversation without `thread`.
 */
const threadUnsupported = (): UpstreamError =>
  new UpstreamError({
    failure: 'http',
    upstreamStatus: 400,
    type: 'invalid_request_error',
    code: 'thread_unsupported_request',
    param: 'thread',
    message:
      'thread: message threads are kept by Claude routes only, and this route is not one; send the whole conversation without `thread`',
    retryable: false,
    unsupportedByRoute: true,
    details: { error_code: 'thread_unsupported_request' },
  });

/**
 * The fields only a Claude route can serve, each refused by `messagesToChat`: a thread Anthropic
 * keeps, MCP servers it connects, a code execution container it runs.
 */
export const CLAUDE_ONLY_FIELDS = ['thread', 'mcp_servers', 'container'] as const;

/**
 * A Messages request as a canonical chat request: `system` becomes a system message, and so does
 * each mid-conversation system message, where it stands; user turns
 * keep text, images and documents, and their `tool_result` blocks become `tool` messages (before
 * the rest of the turn, right after the assistant's calls); assistant `tool_use` blocks become
 * `tool_calls`, thinking becomes `reasoning_content` with the signed `thinking_blocks`; tools,
 * `tool_choice`, `stop_sequences`, `metadata.user_id`, sampling and `thinking` (as
 * `reasoning_effort`) map across. What other backends cannot express (server tools, citations
 * sources, ...) is a 400 naming the field.
 *
 * `openRouterExtras`: the form for OpenRouter routes (adapters with `openRouterExtras`), which
 * also keeps the prompt-cache markers (`cache_control` on the text parts of system, user text,
 * tool results and assistant text, and at the top), gives signed thinking as OpenRouter's
 * `reasoning_details` and a thinking budget as `reasoning.max_tokens`; other servers get none of it.
 */
export function messagesToChat(body: Json, model: string, openRouterExtras = false): ChatRequest {
  if (body.thread !== undefined && body.thread !== null) throw threadUnsupported();
  // Tools and a sandbox that Anthropic runs: a translated route would answer without them, the
  // client's MCP tools never called and nothing said.
  if (Array.isArray(body.mcp_servers) && body.mcp_servers.length > 0)
    throw unsupported('mcp_servers: MCP servers are connected by Anthropic and can only be used with Claude models', 'mcp_servers');
  if (body.container !== undefined && body.container !== null)
    throw unsupported('container: code execution containers run at Anthropic and can only be used with Claude models', 'container');
  const keep = openRouterExtras;
  const messages: ChatMessage[] = [];
  const system = systemText(body.system, keep);
  if (system !== undefined) messages.push({ role: 'system', content: system });
  /** The assistant turn just before was left out (see below). */
  let afterDropped = false;
  (body.messages as Json[]).forEach((m, i) => {
    const at = `messages.${i}`;
    const blocks = blocksOf(m.content);
    if (m.role === 'system') {
      // Mid-conversation instructions: a system message where it stands (chat takes one anywhere).
      // Tool changes (`tool_addition`, ...) change what Claude is offered; no chat form says that.
      blocks.forEach((b, j) => {
        if (b.type !== 'text')
          throw unsupported(
            `${at}.content.${j}: system content of type "${b.type}" can only be sent to Claude models`,
            `${at}.content.${j}.type`,
          );
      });
      const text = systemText(m.content, keep);
      if (text !== undefined) messages.push({ role: 'system', content: text });
      return;
    }
    if (m.role === 'assistant') {
      const texts: Block[] = [];
      let reasoning = '';
      const calls: ToolCall[] = [];
      const thinking: Json[] = [];
      blocks.forEach((b, j) => {
        if (b.type === 'text') texts.push(b);
        else if (b.type === 'tool_use')
          calls.push({
            id: anthropicToolId(String(b.id)),
            type: 'function',
            function: { name: String(b.name), arguments: JSON.stringify(b.input ?? {}) },
          });
        else if (b.type === 'thinking') {
          reasoning += String(b.thinking ?? '');
          thinking.push({ type: 'thinking', thinking: b.thinking, signature: b.signature });
        } else if (b.type === 'redacted_thinking') {
          // Another model's encrypted reasoning this gateway carried in the block (toCarrier):
          // OpenRouter's again, and for no other backend (Claude would refuse it as its own).
          const foreign = fromCarrier(b.data);
          thinking.push(foreign ? { type: FOREIGN, detail: foreign } : { type: 'redacted_thinking', data: b.data });
        } else
          throw unsupported(`${at}.content.${j}: content of type "${b.type}" can only be sent to Claude models`, `${at}.content.${j}.type`);
      });
      const text = texts.map((t) => String(t.text ?? '')).join(BLOCK_SEPARATOR);
      const msg: ChatMessage = {
        role: 'assistant',
        content: texts.some((t) => hasMarker(t, keep))
          ? texts.map((t) => textPart(String(t.text ?? ''), t, keep))
          : text === '' && calls.length > 0
            ? null
            : text,
      };
      if (calls.length > 0) msg.tool_calls = calls;
      // Gemini's thought signatures, carried (see geminiSignatureCarrier): on their calls again, as
      // the gateway's Gemini translation and Google's OpenAI-compatible API take them.
      if (!keep)
        for (const b of thinking) {
          const d = b.detail as Json | undefined;
          if (b.type !== FOREIGN || d?.format !== GEMINI_REASONING_FORMAT || typeof d.id !== 'string') continue;
          const call = calls.find((c) => c.id === d.id || c.id === anthropicToolId(String(d.id)));
          if (call) (call as ToolCall & { extra_content?: unknown }).extra_content = { google: { thought_signature: d.data } };
        }
      if (reasoning) msg.reasoning_content = reasoning;
      const blocksOwn = thinking.filter((b) => b.type !== FOREIGN);
      if (blocksOwn.length > 0) msg.thinking_blocks = blocksOwn;
      // OpenRouter's form of the signed blocks, which it wants back whole (Claude checks the
      // signatures), with another model's encrypted reasoning as it came (Gemini 3 refuses a
      // tool call's turn without its thought signature); unsigned thinking has no form to go back in.
      const details = keep
        ? thinking.filter((b) => b.type === 'redacted_thinking' || b.type === FOREIGN || (typeof b.signature === 'string' && b.signature))
        : [];
      if (details.length > 0)
        msg.reasoning_details = details.map((b, k) => (b.type === FOREIGN ? { ...(b.detail as Json), index: k } : reasoningDetail(b, k)));
      // A turn that was only reasoning (cut off while it reasoned) says nothing a chat backend
      // can take: an empty assistant message, which some chat templates refuse. It goes, unless
      // it carries Claude's signed reasoning for OpenRouter, and the user turns around it join.
      afterDropped = texts.length === 0 && calls.length === 0 && details.length === 0;
      if (!afterDropped) messages.push(msg);
      return;
    }
    const rest: Block[] = [];
    const images: ContentPart[] = [];
    // Results in the order of the calls they answer (Claude Code sends them as parallel tools
    // finish): chat templates and some backends pair a result with its call by position.
    const prev = messages[messages.length - 1];
    const callOrder = new Map((prev?.role === 'assistant' ? (prev.tool_calls ?? []) : []).map((c, k) => [c.id, k]));
    const results = blocks
      .map((b, j) => ({ b, j }))
      .filter(({ b }) => b.type === 'tool_result')
      .sort(
        (x, y) =>
          (callOrder.get(anthropicToolId(String(x.b.tool_use_id))) ?? Infinity) -
          (callOrder.get(anthropicToolId(String(y.b.tool_use_id))) ?? Infinity),
      );
    for (const b of blocks) if (b.type !== 'tool_result') rest.push(b);
    results.forEach(({ b, j }) => {
      const result = toolResultText(b.content, `${at}.content.${j}`);
      images.push(...result.images);
      // Chat has no error flag on tool results (OpenAI refuses unknown message fields): the
      // model is told in the text that the tool failed.
      const failed = b.is_error === true && !/^\s*(<tool_use_error>|error\b)/i.test(result.text);
      const text = failed ? `Error: ${result.text}` : result.text;
      messages.push({
        role: 'tool',
        tool_call_id: anthropicToolId(String(b.tool_use_id)),
        content: hasMarker(b, keep) ? [textPart(text, b, keep)] : text,
      });
    });
    const parts = [...images, ...userParts(rest, at, keep)];
    if (parts.length > 0 || blocks.length === 0) {
      const content = typeof m.content === 'string' ? m.content : asContent(parts);
      const last = messages[messages.length - 1];
      if (afterDropped && last?.role === 'user') last.content = joinedContent(last.content, content);
      else messages.push({ role: 'user', content });
    }
    afterDropped = false;
  });

  const req: ChatRequest = { model, messages };
  if (keep && body.cache_control !== undefined && body.cache_control !== null) req.cache_control = body.cache_control;
  if (typeof body.max_tokens === 'number') req.max_tokens = body.max_tokens;
  if (typeof body.temperature === 'number') req.temperature = body.temperature;
  if (typeof body.top_p === 'number') req.top_p = body.top_p;
  if (typeof body.top_k === 'number') req.top_k = body.top_k;
  if (Array.isArray(body.stop_sequences) && body.stop_sequences.length > 0) req.stop = body.stop_sequences as string[];
  const user = (body.metadata as { user_id?: unknown } | undefined)?.user_id;
  if (typeof user === 'string' && user) req.user = user;
  const tools = toolsOf(body.tools);
  if (tools) req.tools = tools;
  const tc = body.tool_choice as { type?: string; name?: string; disable_parallel_tool_use?: boolean } | undefined;
  if (tc && tools) {
    if (tc.type === 'auto') req.tool_choice = 'auto';
    else if (tc.type === 'any') req.tool_choice = 'required';
    else if (tc.type === 'none') req.tool_choice = 'none';
    else if (tc.type === 'tool') req.tool_choice = { type: 'function', function: { name: String(tc.name) } };
    if (tc.disable_parallel_tool_use === true) req.parallel_tool_calls = false;
  }
  const thinking = body.thinking as { type?: string; budget_tokens?: number } | undefined;
  if (thinking?.type === 'enabled' && typeof thinking.budget_tokens === 'number') {
    // OpenRouter takes the budget itself (Claude's budget_tokens behind it); others an effort.
    if (keep) req.reasoning = { max_tokens: thinking.budget_tokens };
    else req.reasoning_effort = effortForBudget(thinking.budget_tokens);
  }
  // Adaptive thinking (Claude Code on Claude 4.6 and later): the effort, high unless said.
  else if (thinking?.type === 'adaptive')
    req.reasoning_effort = adaptiveEffort((body.output_config as { effort?: unknown } | undefined)?.effort);
  // Structured output: the schema becomes OpenAI's json_schema response format.
  const format = (body.output_config as { format?: { type?: unknown; schema?: unknown } } | undefined)?.format;
  if (format?.type === 'json_schema' && typeof format.schema === 'object' && format.schema !== null)
    // Not `strict`: OpenAI's strict mode wants every property required, which Claude's schemas need not say.
    req.response_format = { type: 'json_schema', json_schema: { name: 'output', schema: format.schema } };
  if (body.stream === true) {
    req.stream = true;
    // Usage comes at the end of OpenAI streams only when asked for; message_delta needs it.
    req.stream_options = { include_usage: true };
  }
  return req;
}

/** OpenAI finish reasons as Anthropic stop reasons. */
export function stopReason(finish: string | null | undefined): string {
  switch (finish) {
    case 'length':
      return 'max_tokens';
    case 'tool_calls':
    case 'function_call':
      return 'tool_use';
    case 'content_filter':
      return 'refusal';
    default:
      return 'end_turn';
  }
}

/**
 * Canonical usage in Anthropic's terms: `input_tokens` without the cache reads and writes, which
 * have fields of their own (OpenAI's `prompt_tokens` includes them).
 */
export function messagesUsage(u: Usage | null | undefined): AnthropicUsage & { input_tokens: number; output_tokens: number } {
  if (!u) return { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 };
  const c = tokenCounts(u);
  return {
    input_tokens: Math.max(0, c.prompt - c.cachedRead - c.cacheWrite),
    output_tokens: c.completion,
    cache_creation_input_tokens: c.cacheWrite,
    cache_read_input_tokens: c.cachedRead,
  };
}

/**
 * A tool call's arguments as Anthropic's `input`, always an object. A model that produced broken
 * JSON, or JSON that is not an object (`"Paris"`, `[1,2]`, `null`, which small models' tool
 * parsers write): the client still sees what it produced, in an object, since a tool_use block
 * whose input is not one is refused when the conversation sends it back.
 */
function parseInput(args: string | undefined): Record<string, unknown> {
  if (!args || args.trim() === '') return {};
  try {
    const v: unknown = JSON.parse(args);
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // as below
  }
  return { _raw_arguments: args };
}

/** A thinking block as OpenRouter's `reasoning_details` entry (Claude's format). */
function reasoningDetail(b: Json, index: number): Json {
  return b.type === 'redacted_thinking'
    ? { type: 'reasoning.encrypted', data: b.data, format: CLAUDE_REASONING_FORMAT, index }
    : { type: 'reasoning.text', text: b.thinking, signature: b.signature ?? null, format: CLAUDE_REASONING_FORMAT, index };
}

const CLAUDE_REASONING_FORMAT = 'anthropic-claude-v1';

/** A `reasoning_details` entry in Claude's format (or one that names none): its signature and data are Claude's. */
function isClaudeDetail(d: Json): boolean {
  return d.format === undefined || d.format === null || d.format === CLAUDE_REASONING_FORMAT;
}

/** A thinking block entry standing for another model's encrypted reasoning (see fromCarrier). */
const FOREIGN = 'foreign_reasoning';

/**
 * Another model's encrypted reasoning (OpenRouter's `reasoning.encrypted` in a format not
 * Claude's: Gemini's thought signatures, `google-gemini-v1`, which Gemini 3 wants back with the
 * tool calls they came with) as the `data` of a `redacted_thinking` block: clients keep such a
 * block as it is and send it back with the turn, which gives the entry back to OpenRouter.
 */
function toCarrier(detail: Json): string {
  const { type, data, id, format } = detail;
  return REASONING_CARRIER_PREFIX + Buffer.from(JSON.stringify({ type, data, id, format })).toString('base64url');
}

/** The entry a carrier block holds (see toCarrier); undefined for Claude's own redacted reasoning. */
function fromCarrier(data: unknown): Json | undefined {
  if (typeof data !== 'string' || !data.startsWith(REASONING_CARRIER_PREFIX)) return undefined;
  try {
    const d = JSON.parse(Buffer.from(data.slice(REASONING_CARRIER_PREFIX.length), 'base64url').toString('utf8')) as unknown;
    if (!isJsonObject(d) || d.type !== 'reasoning.encrypted' || typeof d.data !== 'string' || typeof d.format !== 'string')
      return undefined;
    return { type: d.type, data: d.data, ...(typeof d.id === 'string' ? { id: d.id } : {}), format: d.format };
  } catch {
    return undefined;
  }
}

/** OpenRouter's format name for Gemini's reasoning entries. */
const GEMINI_REASONING_FORMAT = 'google-gemini-v1';

/**
 * A Gemini tool call's thought signature (`extra_content.google.thought_signature`, as the Gemini
 * translation gives it) as a carrier block for the call whose client-side id is `id`, in the form
 * OpenRouter gives it: either backend can take it back. Undefined for a call without one.
 */
function geminiSignatureCarrier(call: unknown, id: string): Json | undefined {
  const sig = (call as { extra_content?: { google?: { thought_signature?: unknown } } } | undefined)?.extra_content?.google
    ?.thought_signature;
  if (typeof sig !== 'string' || sig === '') return undefined;
  return { type: 'redacted_thinking', data: toCarrier({ type: 'reasoning.encrypted', data: sig, id, format: GEMINI_REASONING_FORMAT }) };
}

/**
 * OpenRouter's `reasoning_details` as thinking blocks: Claude's text with its signature and its
 * encrypted (redacted) reasoning as `redacted_thinking`; another model's text and summaries as
 * unsigned thinking, its encrypted reasoning as a `redacted_thinking` block that carries it back.
 */
function thinkingOfDetails(details: unknown): Json[] {
  if (!Array.isArray(details)) return [];
  const out: Json[] = [];
  for (const d of details as Json[]) {
    if (!d || typeof d !== 'object') continue;
    const claude = isClaudeDetail(d);
    if (d.type === 'reasoning.encrypted' && typeof d.data === 'string')
      out.push({ type: 'redacted_thinking', data: claude ? d.data : toCarrier(d) });
    else if (d.type === 'reasoning.text' && typeof d.text === 'string')
      out.push({ type: 'thinking', thinking: d.text, signature: claude && typeof d.signature === 'string' ? d.signature : '' });
    else if (d.type === 'reasoning.summary' && typeof d.summary === 'string')
      out.push({ type: 'thinking', thinking: d.summary, signature: '' });
  }
  return out;
}

/**
 * The tool-use ids a Messages request's history holds, as the client wrote them and as the
 * backend saw them: an answer's calls take others. Servers that number calls per answer
 * (`call_0` at every turn) would repeat them, and Claude Code drops a call whose id it has seen.
 */
export function toolUseIdsOf(messages: unknown): Set<string> {
  const ids = new Set<string>();
  if (!Array.isArray(messages)) return ids;
  for (const m of messages as Json[]) {
    if (m?.role !== 'assistant' || !Array.isArray(m.content)) continue;
    for (const b of m.content as Json[]) if (b?.type === 'tool_use' && typeof b.id === 'string') ids.add(b.id).add(anthropicToolId(b.id));
  }
  return ids;
}

/**
 * A chat completion as a Messages answer: thinking blocks (signed ones as they were, OpenRouter's
 * `reasoning_details` with their signatures, plain reasoning as a thinking block without
 * signature), the text, then the tool calls as `tool_use`.
 */
export function chatToMessage(
  res: ChatResponse,
  id: string,
  model: string,
  stopSequences?: readonly string[],
  /** Tool-use ids the conversation holds (see toolUseIdsOf); this answer's are added. */
  usedToolIds = new Set<string>(),
): Json {
  const choice = res.choices[0];
  const msg = (choice?.message ?? { role: 'assistant', content: '' }) as ChatMessage;
  const content: Json[] = [];
  const signed = Array.isArray(msg.thinking_blocks) ? (msg.thinking_blocks as Json[]) : thinkingOfDetails(msg.reasoning_details);
  if (signed.length > 0) content.push(...signed.map((b) => ({ ...b })));
  else {
    const reasoning =
      typeof msg.reasoning_content === 'string' ? msg.reasoning_content : typeof msg.reasoning === 'string' ? msg.reasoning : '';
    if (reasoning) content.push({ type: 'thinking', thinking: reasoning, signature: '' });
  }
  const text =
    typeof msg.content === 'string'
      ? msg.content
      : Array.isArray(msg.content)
        ? msg.content.map((p) => String((p as { text?: unknown }).text ?? '')).join('')
        : '';
  // OpenAI's refusal field: the model declined; the client reads why as text.
  const refusal = typeof msg.refusal === 'string' && msg.refusal !== '' ? msg.refusal : undefined;
  if (text !== '') content.push({ type: 'text', text });
  else if (refusal !== undefined) content.push({ type: 'text', text: refusal });
  // Function calls only: Messages has no counterpart for other kinds (OpenAI's custom tools).
  let toolUses = 0;
  for (const t of msg.tool_calls ?? []) {
    if (!t.function) continue;
    // Some servers send calls without ids; the client's tool_result must still name each one.
    const tid = uniqueToolId(anthropicToolId(t.id, `toolu_${id.replace(/^msg_/, '')}_${toolUses}`), usedToolIds);
    const carrier = geminiSignatureCarrier(t, tid);
    if (carrier) content.push(carrier);
    content.push({ type: 'tool_use', id: tid, name: t.function.name, input: parseInput(t.function.arguments) });
    toolUses++;
  }
  const finish = choice?.finish_reason;
  const matched = finish === 'stop' ? matchedStop(choice, stopSequences) : null;
  return {
    id,
    type: 'message',
    role: 'assistant',
    model,
    content,
    stop_reason:
      toolUses > 0 && finish !== 'length'
        ? 'tool_use'
        : matched !== null
          ? 'stop_sequence'
          : refusal !== undefined && text === ''
            ? 'refusal'
            : stopReason(finish),
    stop_sequence: matched,
    usage: messagesUsage(res.usage),
  };
}

/**
 * The stop sequence a backend says it stopped at (vLLM's `stop_reason`, SGLang's `matched_stop`),
 * when it is one the client asked for (either may also be a token id, or the end-of-text token).
 */
function matchedStop(choice: Record<string, unknown> | undefined, stops: readonly string[] | undefined): string | null {
  if (!choice || !stops?.length) return null;
  const v = choice.stop_reason ?? choice.matched_stop;
  return typeof v === 'string' && stops.includes(v) ? v : null;
}

type OpenBlock = { kind: 'text' | 'thinking' | 'tool_use'; index: number; call?: ToolCallState };

/** A tool call of the chat stream: its content block once started, its arguments while held back. */
interface ToolCallState {
  id: string;
  name: string;
  block?: number;
  held: string[];
  /**
   * The arguments, held until the block ends and then sent as one delta, checked: a JSON object
   * as it came, anything else (`[1,2]`, `null`, a Python dict, `True`, a trailing comma, two
   * objects) as `{"_raw_arguments": ...}`, as in one-shot answers. Streamed as they came, text
   * that is not an object made the Anthropic SDK's parse of the block throw, and the whole
   * answer was lost; no check short of a whole JSON parser can tell that from the first bytes.
   */
  text: string;
}

/** Text or reasoning that came while a tool call's block was open, sent after the calls (`redacted`: its data). */
interface DeferredBlock {
  kind: 'text' | 'thinking' | 'redacted';
  text: string;
  signature?: string;
}

/**
 * Translates a chat chunk stream into Messages stream events, chunk by chunk: `message_start`
 * (with a `ping`) at the first chunk, a content block per run of text, reasoning or tool call
 * (`content_block_start` / `_delta` / `_stop`; tool arguments as `input_json_delta`), and at the
 * end (`finish()`) the closing block, `message_delta` with the stop reason and the usage, and
 * `message_stop`.
 *
 * Anthropic's clients take blocks one after the other and a block as complete at its
 * `content_block_stop`, while a chat stream may interleave: a call's name after its first
 * arguments, text between a call's arguments, a second call before the first's arguments are all
 * there. So a call's block starts once its name is known; the first call streams in its block,
 * which stays open to the end, and what comes meanwhile (further calls, text, reasoning) goes out
 * whole after it.
 */
export class ChatToMessagesStream {
  private started = false;
  private open?: OpenBlock;
  private blocks = 0;
  /** Tool calls by their index (the fixer gives one to a call that came without). */
  private readonly tools = new Map<number, ToolCallState>();
  /** Tool calls whose block has not started (no name yet, or another call's block is open). */
  private readonly pending: ToolCallState[] = [];
  /** Text and reasoning that came while a call's block was open. */
  private readonly deferred: DeferredBlock[] = [];
  private readonly calls: ToolCallFixer;
  private finish: string | null = null;
  private matched: string | null = null;
  private refused = false;
  private sawText = false;
  private sawTools = false;
  private usage?: Usage;

  constructor(
    private readonly id: string,
    private readonly model: string,
    /** The prompt estimate for `message_start` (the real count comes in `message_delta`). */
    private readonly inputEstimate: number,
    /** The request's `stop_sequences`, to report which one ended the answer. */
    private readonly stopSequences?: readonly string[],
    /** Tool-use ids the conversation holds (see toolUseIdsOf); this answer's are added. */
    private readonly usedToolIds = new Set<string>(),
  ) {
    // Servers that send calls without index or id (not only through openai_compat routes).
    const suffix = id.replace(/^msg_/, '');
    this.calls = new ToolCallFixer((_choice, call) => `toolu_${suffix}_${call}`);
  }

  push(chunk: ChatChunk): MessagesEvent[] {
    this.calls.fix(chunk);
    const out: MessagesEvent[] = [];
    if (isSoundUsage(chunk.usage)) this.usage = chunk.usage;
    if (!this.started) this.begin(out);
    for (const c of chunk.choices) {
      if ((c.index ?? 0) !== 0) continue;
      const d = c.delta ?? {};
      const reasoning = typeof d.reasoning_content === 'string' ? d.reasoning_content : typeof d.reasoning === 'string' ? d.reasoning : '';
      if (reasoning) this.content('thinking', reasoning, out);
      // A delta's thinking_blocks may repeat the blocks before (the Anthropic adapter sends all so
      // far): the last is the one that goes with the open block.
      const lastBlock = Array.isArray(d.thinking_blocks) ? (d.thinking_blocks as Json[]).at(-1) : undefined;
      if (lastBlock && typeof lastBlock.signature === 'string' && lastBlock.signature) this.sign(lastBlock.signature, out);
      // OpenRouter's: the text came as `reasoning` above; a signature (Claude's) ends its block,
      // and encrypted reasoning is a block of its own (another model's, carried: toCarrier).
      if (Array.isArray(d.reasoning_details))
        for (const detail of d.reasoning_details as Json[]) {
          if (!detail) continue;
          const claude = isClaudeDetail(detail);
          if (claude && typeof detail.signature === 'string' && detail.signature) this.sign(detail.signature, out, true);
          if (detail.type === 'reasoning.encrypted' && typeof detail.data === 'string')
            this.redacted(claude ? detail.data : toCarrier(detail), out);
        }
      if (typeof d.content === 'string' && d.content !== '') {
        this.sawText = true;
        this.content('text', d.content, out);
      }
      // OpenAI's refusal: the model declined; the client reads why as text.
      if (typeof d.refusal === 'string' && d.refusal !== '') {
        this.refused = true;
        this.content('text', d.refusal, out);
      }
      for (const t of d.tool_calls ?? []) this.tool(t, out);
      if (c.finish_reason) {
        this.finish = c.finish_reason;
        if (c.finish_reason === 'stop') this.matched = matchedStop(c, this.stopSequences);
      }
    }
    return out;
  }

  /** The closing events, once the chat stream ended. */
  finishEvents(): MessagesEvent[] {
    const out: MessagesEvent[] = [];
    if (!this.started) this.begin(out);
    this.closeAll(out);
    const stop =
      this.sawTools && this.finish !== 'length'
        ? 'tool_use'
        : this.matched !== null
          ? 'stop_sequence'
          : this.refused && !this.sawText
            ? 'refusal'
            : stopReason(this.finish);
    const usage = messagesUsage(this.usage);
    out.push(
      ev('message_delta', { delta: { stop_reason: stop, stop_sequence: this.matched }, usage: this.usage ? usage : { output_tokens: 0 } }),
    );
    out.push(ev('message_stop', {}));
    return out;
  }

  /** The usage the upstream reported, if it did. */
  get reported(): Usage | undefined {
    return this.usage;
  }

  private begin(out: MessagesEvent[]): void {
    this.started = true;
    out.push(
      ev('message_start', {
        message: {
          id: this.id,
          type: 'message',
          role: 'assistant',
          model: this.model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          // The backend's figures when its first chunk carried them, else the estimate.
          usage: { ...messagesUsage(this.usage), ...(this.usage ? {} : { input_tokens: this.inputEstimate }), output_tokens: 0 },
        },
      }),
    );
    out.push(ev('ping', {}));
  }

  /** Text or reasoning: into the open block of its kind, a new one, or (a call's block is open) held back. */
  private content(kind: 'text' | 'thinking', text: string, out: MessagesEvent[]): void {
    if (this.open?.kind === 'tool_use') {
      const last = this.deferred.at(-1);
      if (last?.kind === kind && last.signature === undefined) last.text += text;
      else this.deferred.push({ kind, text });
      return;
    }
    if (this.open?.kind !== kind) {
      this.closeOpen(out);
      this.openBlock(kind, out);
    }
    out.push(ev('content_block_delta', { index: this.open!.index, delta: this.delta(kind, text) }));
  }

  /** `ends`: the signature closes its block (OpenRouter's: the next reasoning is another block). */
  private sign(signature: string, out: MessagesEvent[], ends = false): void {
    if (this.open?.kind === 'thinking') {
      out.push(ev('content_block_delta', { index: this.open.index, delta: { type: 'signature_delta', signature } }));
      if (ends) this.closeOpen(out);
    } else if (this.open?.kind === 'tool_use' && this.deferred.at(-1)?.kind === 'thinking') this.deferred.at(-1)!.signature = signature;
  }

  /** Encrypted reasoning: a `redacted_thinking` block, whole (after the calls if one's block is open). */
  private redacted(data: string, out: MessagesEvent[]): void {
    if (this.open?.kind === 'tool_use') {
      this.deferred.push({ kind: 'redacted', text: data });
      return;
    }
    this.closeOpen(out);
    const index = this.blocks++;
    out.push(ev('content_block_start', { index, content_block: { type: 'redacted_thinking', data } }));
    out.push(ev('content_block_stop', { index }));
  }

  private delta(kind: 'text' | 'thinking', text: string): Json {
    return kind === 'text' ? { type: 'text_delta', text } : { type: 'thinking_delta', thinking: text };
  }

  private openBlock(kind: 'text' | 'thinking', out: MessagesEvent[]): void {
    const index = this.blocks++;
    this.open = { kind, index };
    out.push(
      ev('content_block_start', {
        index,
        content_block: kind === 'text' ? { type: 'text', text: '' } : { type: 'thinking', thinking: '', signature: '' },
      }),
    );
  }

  /** One tool-call delta: the call's arguments go to its block once that has started, else wait with it. */
  private tool(t: NonNullable<ChatChunk['choices'][number]['delta']['tool_calls']>[number], out: MessagesEvent[]): void {
    this.sawTools = true;
    let call = this.tools.get(t.index);
    if (!call) {
      call = {
        id: uniqueToolId(anthropicToolId(t.id, `toolu_${this.tools.size}`), this.usedToolIds),
        name: '',
        held: [],
        text: '',
      };
      this.tools.set(t.index, call);
      this.pending.push(call);
    }
    if (!call.name && t.function?.name) call.name = t.function.name;
    const carrier = geminiSignatureCarrier(t, call.id);
    if (carrier) this.redacted(String(carrier.data), out);
    const args = t.function?.arguments;
    if (args) {
      if (call.block === undefined) call.held.push(args);
      else this.arguments(call, args);
    }
    // The first waiting call starts streaming once it has a name and no other call's block is open.
    const next = this.pending[0];
    if (next?.name && this.open?.kind !== 'tool_use') {
      this.pending.shift();
      this.closeOpen(out);
      this.startTool(next, out);
    }
  }

  /** A call's block: start, and the arguments that came before it. */
  private startTool(call: ToolCallState, out: MessagesEvent[]): void {
    const index = this.blocks++;
    call.block = index;
    this.open = { kind: 'tool_use', index, call };
    out.push(ev('content_block_start', { index, content_block: { type: 'tool_use', id: call.id, name: call.name, input: {} } }));
    if (call.held.length) {
      this.arguments(call, call.held.join(''));
      call.held = [];
    }
  }

  /** A started call's next arguments: held for its block's end (see ToolCallState.text). */
  private arguments(call: ToolCallState, args: string): void {
    call.text += args;
  }

  private closeOpen(out: MessagesEvent[]): void {
    const call = this.open?.call;
    if (call && call.text.trim() !== '') {
      const input = JSON.stringify(parseInput(call.text));
      out.push(ev('content_block_delta', { index: call.block, delta: { type: 'input_json_delta', partial_json: input } }));
      call.text = '';
    }
    if (this.open) out.push(ev('content_block_stop', { index: this.open.index }));
    this.open = undefined;
  }

  /** At the end: the open block, then each call still waiting whole, then what was held back behind them. */
  private closeAll(out: MessagesEvent[]): void {
    this.closeOpen(out);
    for (const call of this.pending.splice(0)) {
      this.startTool(call, out);
      this.closeOpen(out);
    }
    for (const block of this.deferred.splice(0)) {
      if (block.kind === 'redacted') {
        this.redacted(block.text, out);
        continue;
      }
      this.openBlock(block.kind, out);
      out.push(ev('content_block_delta', { index: this.open!.index, delta: this.delta(block.kind, block.text) }));
      if (block.signature !== undefined)
        out.push(ev('content_block_delta', { index: this.open!.index, delta: { type: 'signature_delta', signature: block.signature } }));
      this.closeOpen(out);
    }
  }
}

function ev(type: string, payload: Json): MessagesEvent {
  return { event: type, data: JSON.stringify({ type, ...payload }) };
}
