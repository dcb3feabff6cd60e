import {
  GATEWAY_ONLY_FIELDS,
  REASONING_FIELDS,
  stripReasoning,
  type ChatChunk,
  type ChatMessage,
  type ChatRequest,
  type ChatResponse,
  type Usage,
} from '../../common/chat.types';
import type { CompletionRequest } from '../../common/completion.types';
import type { EmbeddingsRequest } from '../../common/embedding.types';
import { UpstreamError } from '../../common/errors';
import { isSoundUsage, tokenCounts } from '../../common/usage';
import type { RouteDef } from '../../config/registry.types';
import { joinUrl, providerHttpError, withExtraBody, withoutKeys } from '../http/upstream-call';
import type { OpenAiCompatProfile } from './openai-compat.profiles';
import { isJsonObject } from '../../common/json-object';

/**
 * The upstream request body: everything the client sent (standard and server-specific
 * parameters alike), the route's `extra_body`, and the upstream's model name. Streams always ask
 * for usage so the gateway can account for them.
 */
export function buildChatBody(req: ChatRequest, route: RouteDef, stream: boolean, profile: OpenAiCompatProfile): Record<string, unknown> {
  const body: Record<string, unknown> = withExtraBody({ ...req }, route.extraBody);
  dropGatewayFields(body, profile);
  for (const f of profile.dropFields) delete body[f];
  body.model = route.providerModelId;
  setStream(body, req.stream_options, stream);
  const rf = body.response_format as { type?: unknown } | undefined;
  if (profile.responseFormats && rf && typeof rf.type === 'string' && !profile.responseFormats.includes(rf.type))
    downgradeResponseFormat(body);
  profile.fixRequest?.(body);
  return body;
}

/** OpenRouter's options, which never leave the gateway but for a server that acts on them itself. */
function dropGatewayFields(body: Record<string, unknown>, profile: OpenAiCompatProfile): void {
  for (const f of GATEWAY_ONLY_FIELDS) if (!profile.passFields?.includes(f)) delete body[f];
}

function setStream(body: Record<string, unknown>, options: ChatRequest['stream_options'], stream: boolean): void {
  if (stream) {
    body.stream = true;
    body.stream_options = { ...(options ?? {}), include_usage: true };
  } else {
    delete body.stream;
    delete body.stream_options;
  }
}

/**
 * For servers that only know `json_object` (DeepSeek): ask for a JSON object and give the model
 * the requested schema in a system message (DeepSeek also wants the word "json" in the prompt).
 */
function downgradeResponseFormat(body: Record<string, unknown>): void {
  const rf = body.response_format as { type: string; json_schema?: { schema?: unknown; name?: string } };
  body.response_format = { type: 'json_object' };
  if (rf.type !== 'json_schema') return;
  const schema = rf.json_schema?.schema;
  const note = `Answer with a single JSON object${schema ? ` that conforms to this JSON Schema:\n${JSON.stringify(schema)}` : ''}`;
  body.messages = [{ role: 'system', content: note }, ...(body.messages as ChatMessage[])];
}

/** The legacy `/completions` body: the client's fields, the upstream model, usage asked for on streams. */
export function buildCompletionBody(
  req: CompletionRequest,
  route: RouteDef,
  stream: boolean,
  profile: OpenAiCompatProfile,
): Record<string, unknown> {
  const body: Record<string, unknown> = { ...req };
  dropGatewayFields(body, profile);
  body.model = route.providerModelId;
  setStream(body, req.stream_options, stream);
  return body;
}

/**
 * The `/embeddings` body. Floats are asked for unless the client wants base64: some servers
 * ignore `encoding_format`, and the gateway encodes whatever comes back as the client asked.
 */
export function buildEmbeddingsBody(req: EmbeddingsRequest, route: RouteDef, profile: OpenAiCompatProfile): Record<string, unknown> {
  const body: Record<string, unknown> = { ...req, model: route.providerModelId, encoding_format: req.encoding_format ?? 'float' };
  dropGatewayFields(body, profile);
  return body;
}

/** `{base_url}/chat/completions`, whatever slashes the operator wrote. */
export const endpointUrl = joinUrl;

const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * Usage in OpenAI's canonical fields, wherever the provider put the figures: DeepSeek's
 * `prompt_cache_hit_tokens` and Kimi's top-level `cached_tokens` become
 * `prompt_tokens_details.cached_tokens`, SGLang's top-level `reasoning_tokens` becomes
 * `completion_tokens_details.reasoning_tokens`. The provider's own fields stay; the canonical ones
 * say what is billed.
 */
export function normalizeUsage(u: Usage): Usage {
  const c = tokenCounts(u);
  // The canonical fields carry the figures the request is billed on: set where the provider
  // put them elsewhere, corrected where they were out of range (cached above the prompt, negative).
  const fix = (v: unknown, count: number) => (v === undefined || v === null ? count > 0 : v !== count);
  if (fix(u.prompt_tokens_details?.cached_tokens, c.cachedRead))
    u.prompt_tokens_details = { ...u.prompt_tokens_details, cached_tokens: c.cachedRead };
  if (fix(u.prompt_tokens_details?.cache_write_tokens, c.cacheWrite))
    u.prompt_tokens_details = { ...u.prompt_tokens_details, cache_write_tokens: c.cacheWrite };
  if (fix(u.completion_tokens_details?.reasoning_tokens, c.reasoning))
    u.completion_tokens_details = { ...u.completion_tokens_details, reasoning_tokens: c.reasoning };
  // The completion includes reasoning a server counted apart from it (see tokenCounts).
  if (u.completion_tokens !== c.completion) u.completion_tokens = c.completion;
  // The total is the prompt plus the completion, as the log has it, whatever total was sent.
  if (u.total_tokens !== c.prompt + c.completion) u.total_tokens = c.prompt + c.completion;
  return u;
}

/**
 * What makes an upstream's choices unreadable, if anything, named by path (`choices[0].delta`):
 * a choice, message or delta that is not an object, content that is not text, tool calls that
 * are not a list of objects. Checked before anything reads them, so that a broken answer is the
 * route's protocol failure (502, or the next route), never the gateway's TypeError. In place, a
 * null delta becomes `{}` and tool-call arguments sent as a JSON value (as Ollama's native API
 * does) become the string OpenAI's format has. `part` is what each choice carries: `message`
 * (answers), `delta` (stream chunks) or `text` (legacy completions).
 */
export function choicesProblem(choices: readonly unknown[], part: 'message' | 'delta' | 'text'): string | undefined {
  for (let i = 0; i < choices.length; i++) {
    const c = choices[i];
    if (!isJsonObject(c)) return `choices[${i}] is not an object`;
    // Absent, it is read as 0 (normalizeChunk); a negative or fractional one no client can place.
    if (c.index !== undefined && c.index !== null && !(Number.isSafeInteger(c.index) && (c.index as number) >= 0))
      return `choices[${i}].index is not a choice number`;
    if (part === 'text') {
      if (c.text !== undefined && c.text !== null && typeof c.text !== 'string') return `choices[${i}].text is not text`;
      continue;
    }
    let m = c[part];
    if (m === undefined || m === null) {
      // A choice with only its finish reason (a content-filter stop) is an empty answer.
      if (part === 'message' && !c.finish_reason) return `choices[${i}] has no message`;
      m = c[part] = part === 'message' ? { role: 'assistant', content: null } : {};
    }
    if (!isJsonObject(m)) return `choices[${i}].${part} is not an object`;
    const content = m.content;
    if (content !== undefined && content !== null && typeof content !== 'string' && !Array.isArray(content))
      return `choices[${i}].${part}.content is not text`;
    const calls = m.tool_calls;
    if (calls === undefined || calls === null) continue;
    if (!Array.isArray(calls)) return `choices[${i}].${part}.tool_calls is not a list`;
    for (let j = 0; j < calls.length; j++) {
      const t: unknown = calls[j];
      if (!isJsonObject(t)) return `choices[${i}].${part}.tool_calls[${j}] is not an object`;
      // Absent in later deltas of a call, and in calls of other types (OpenAI's custom tools).
      const f = t.function;
      if (f === undefined || f === null) continue;
      if (!isJsonObject(f)) return `choices[${i}].${part}.tool_calls[${j}].function is not an object`;
      if (f.name !== undefined && f.name !== null && typeof f.name !== 'string')
        return `choices[${i}].${part}.tool_calls[${j}].function.name is not text`;
      if (f.arguments !== undefined && f.arguments !== null && typeof f.arguments !== 'string') f.arguments = JSON.stringify(f.arguments);
    }
  }
  return undefined;
}

/** Finish reasons outside OpenAI's set, as the nearest OpenAI one (the original is kept as `native_finish_reason`). */
const FINISH_REASONS: Readonly<Record<string, string>> = {
  // DeepSeek: generation cut off for lack of inference resources: the answer is truncated.
  insufficient_system_resource: 'length',
  // SGLang: the request was aborted on the server.
  abort: 'error',
  // Z.AI / Zhipu: a model inference failure; the output was blocked by moderation; the context
  // window filled up.
  network_error: 'error',
  sensitive: 'content_filter',
  model_context_window_exceeded: 'length',
};

/**
 * A choice that ended in failure rather than with an answer: OpenRouter's `error`, and the
 * servers' own words for it (SGLang's `abort`, Z.AI's `network_error`). A failure, tried on the
 * next route and never billed as an answer.
 */
export function failedFinish(reason: unknown): boolean {
  return typeof reason === 'string' && (reason === 'error' || FINISH_REASONS[reason] === 'error');
}

function normalizeFinish(c: { finish_reason: string | null; [k: string]: unknown }): void {
  const mapped = c.finish_reason ? FINISH_REASONS[c.finish_reason] : undefined;
  if (mapped) {
    c.native_finish_reason ??= c.finish_reason;
    c.finish_reason = mapped;
  }
}

/** Reasoning text in `reasoning_content`, from MiniMax's `reasoning_details` when that is all there is. */
function reasoningFromDetails(m: { reasoning_content?: unknown; reasoning_details?: unknown }): void {
  if (typeof m.reasoning_content === 'string' || !Array.isArray(m.reasoning_details)) return;
  const text = (m.reasoning_details as Array<{ text?: unknown }>).map((d) => (typeof d?.text === 'string' ? d.text : '')).join('');
  if (text) m.reasoning_content = text;
}

/**
 * The part of the gateway's ids for tool calls that came without one, from the request id: its
 * random end (a UUIDv7 begins with the time, two requests of one millisecond alike).
 */
export function callIdPrefix(requestId: string): string {
  return requestId.replaceAll('-', '').slice(-16);
}

/**
 * A whole answer with usage, finish reasons and reasoning in canonical fields (in place). A tool
 * call without an id gets `call_<callIdPrefix(requestId)>_<choice>_<call>`, the request's own, as
 * a stream's calls get, so ids never repeat between answers (an upstream's answer id may be
 * constant, or missing).
 */
export function normalizeResponse(res: ChatResponse, requestId: string): ChatResponse {
  // Usage worth accounting: MiniMax sends `{total_tokens: 0, total_characters: 0}` on every
  // chunk, and counts out of range are the upstream's error; without it the request is estimated.
  if (isSoundUsage(res.usage)) normalizeUsage(res.usage);
  else delete res.usage;
  for (let i = 0; i < res.choices.length; i++) {
    const c = res.choices[i];
    // Some servers leave out the index of their one choice; clients and the gateway key by it.
    if (typeof c.index !== 'number') c.index = i;
    normalizeFinish(c);
    if (c.message) {
      reasoningFromDetails(c.message);
      // A call the client cannot name in its tool message is one it cannot answer.
      c.message.tool_calls?.forEach((t, i) => {
        if (!t || typeof t !== 'object') return;
        if (!t.id) t.id = `call_${callIdPrefix(requestId)}_${c.index}_${i}`;
        // The SDKs' tool helpers accept only type "function" (some servers leave it out).
        t.type ??= 'function';
      });
    }
  }
  return res;
}

/**
 * A stream chunk with usage, finish reasons and reasoning in canonical fields (in place): Kimi's
 * usage inside the finishing choice moves to the chunk, MiniMax's empty `role` and placeholder
 * usage go, and the usage fields are normalised.
 */
export function normalizeChunk(chunk: ChatChunk): ChatChunk {
  for (let i = 0; i < chunk.choices.length; i++) {
    const c = chunk.choices[i];
    // Some servers leave out the index of their one choice; clients and the gateway key by it.
    if (typeof c.index !== 'number') c.index = i;
    if (c.usage !== undefined) {
      if (isSoundUsage(c.usage) && !isSoundUsage(chunk.usage)) chunk.usage = c.usage;
      delete c.usage;
    }
    const d = c.delta;
    if (d) {
      if ((d.role as string | undefined) === '') delete d.role;
      if (d.reasoning_details !== undefined) reasoningFromDetails(d);
    }
    if (c.finish_reason) normalizeFinish(c);
  }
  if (chunk.usage !== undefined && chunk.usage !== null) {
    if (isSoundUsage(chunk.usage)) normalizeUsage(chunk.usage);
    else delete chunk.usage;
  }
  return chunk;
}

/** MiniMax `base_resp` codes as HTTP statuses (it answers errors with HTTP 200). */
const MINIMAX_STATUS: Readonly<Record<number, number>> = {
  1000: 500,
  1001: 504,
  1002: 429,
  1004: 401,
  1008: 402,
  1024: 500,
  1026: 400,
  1027: 400,
  1028: 429,
  1030: 429,
  1039: 429,
  2013: 400,
  2049: 401,
  2056: 429,
  2061: 403,
};

/**
 * The error inside a MiniMax answer that came with HTTP 200 (`base_resp.status_code` not 0), if
 * any. Other servers never send `base_resp`.
 */
export function miniMaxError(json: unknown, route: RouteDef): UpstreamError | undefined {
  const br = (json as { base_resp?: { status_code?: unknown; status_msg?: unknown } } | null)?.base_resp;
  if (!br || typeof br.status_code !== 'number' || br.status_code === 0) return undefined;
  const status = MINIMAX_STATUS[br.status_code] ?? 502;
  const text = JSON.stringify({
    error: {
      message: `${typeof br.status_msg === 'string' && br.status_msg ? br.status_msg : 'error'} (${br.status_code})`,
      code: String(br.status_code),
    },
  });
  return upstreamHttpError(status, text, route, undefined);
}

/** The text of list content (GLM's template drops list content on assistant and tool messages). */
function flattenText(content: unknown): unknown {
  if (!Array.isArray(content) || !content.every((p) => (p as { type?: string })?.type === 'text')) return content;
  return (content as Array<{ text: string }>).map((p) => p.text).join('');
}

/**
 * For servers whose documented length limit is `max_tokens` only (DeepSeek, Z.AI / Zhipu, Kimi):
 * OpenAI's newer `max_completion_tokens` would be ignored, leaving the answer unbounded.
 */
function useMaxTokens(body: Record<string, unknown>): void {
  if (!num(body.max_completion_tokens)) return;
  body.max_tokens ??= body.max_completion_tokens;
  delete body.max_completion_tokens;
}

/** Sampling extras of vLLM, SGLang and OpenRouter that OpenAI's API refuses as unrecognised arguments. */
const NOT_OPENAI = ['top_k', 'min_p', 'top_a', 'repetition_penalty', 'include_reasoning'] as const;

/**
 * OpenAI: its chat completions API refuses arguments and message fields it does not know, so
 * what other servers take is left out, as OpenRouter leaves out what a provider does not support:
 * the sampling extras, and the reasoning other backends returned that a client sends back on an
 * assistant turn (`reasoning_content`, `thinking_blocks`). OpenRouter's unified `reasoning`
 * becomes `reasoning_effort`, which the client's own `reasoning_effort` takes precedence over.
 * A length limit goes as `max_completion_tokens`.
 */
export function fixOpenAiRequest(body: Record<string, unknown>): void {
  // max_tokens is deprecated there, and refused by its reasoning models (o-series, gpt-5: "use
  // max_completion_tokens instead"); every chat model takes max_completion_tokens. Claude Code
  // and older clients send max_tokens.
  if (body.max_tokens != null) {
    // The client's max_completion_tokens, if it sent both, is the one OpenAI reads.
    if (body.max_completion_tokens == null && num(body.max_tokens)) body.max_completion_tokens = body.max_tokens;
    delete body.max_tokens;
  }
  const r = body.reasoning as { effort?: unknown } | undefined;
  if (r && typeof r === 'object' && typeof r.effort === 'string' && body.reasoning_effort === undefined) body.reasoning_effort = r.effort;
  delete body.reasoning;
  for (const f of NOT_OPENAI) delete body[f];
  const messages = body.messages as ChatMessage[];
  // Gemini's thought signatures ride on tool calls (`extra_content`, Google's OpenAI-compatible
  // form, which the gateway's Gemini translation gives): OpenAI refuses the unknown parameter.
  const signed = (m: ChatMessage) =>
    Array.isArray(m.tool_calls) && m.tool_calls.some((c) => c && typeof c === 'object' && 'extra_content' in c);
  const carries = (m: ChatMessage) => REASONING_FIELDS.some((f) => m[f] !== undefined) || signed(m);
  if (messages.some(carries))
    body.messages = messages.map((m) => {
      if (!carries(m)) return m;
      const rest: ChatMessage = { ...m };
      stripReasoning(rest);
      if (signed(rest))
        rest.tool_calls = rest.tool_calls!.map((c) => {
          if (!c || typeof c !== 'object' || !('extra_content' in c)) return c;
          const { extra_content: _signature, ...call } = c;
          return call;
        });
      return rest;
    });
}

/** DeepSeek: `max_tokens` for the length limit. */
export function fixDeepSeekRequest(body: Record<string, unknown>): void {
  useMaxTokens(body);
}

/** Z.AI / Zhipu: `max_tokens`; text-only list content of assistant and tool messages as a string. */
export function fixZhipuRequest(body: Record<string, unknown>): void {
  useMaxTokens(body);
  const messages = body.messages as ChatMessage[];
  if (!messages.some((m) => (m.role === 'assistant' || m.role === 'tool') && Array.isArray(m.content))) return;
  body.messages = messages.map((m) =>
    (m.role === 'assistant' || m.role === 'tool') && Array.isArray(m.content)
      ? { ...m, content: flattenText(m.content) as ChatMessage['content'] }
      : m,
  );
}

/** MiniMax: temperature and top_p must lie in (0, 1]. */
export function fixMiniMaxRequest(body: Record<string, unknown>): void {
  for (const k of ['temperature', 'top_p']) {
    const v = body[k];
    if (num(v)) body[k] = Math.min(1, Math.max(0.01, v));
  }
}

/**
 * Kimi / Moonshot: temperature in [0, 1]; `max_tokens` rather than `max_completion_tokens`; no
 * `tool_choice: "required"` (asked for in words instead, as Moonshot's migration guide says);
 * tool schemas without `$schema` and `strict` and always with `parameters`; and, for thinking
 * models, a `reasoning_content` on every assistant message with tool calls.
 */
export function fixKimiRequest(body: Record<string, unknown>): void {
  if (num(body.temperature) && body.temperature > 1) body.temperature = 1;
  useMaxTokens(body);
  let messages = body.messages as ChatMessage[];
  if (body.tool_choice === 'required') {
    delete body.tool_choice;
    messages = [...messages, { role: 'user', content: 'Please select a tool to handle the current issue.' }];
  }
  if (Array.isArray(body.tools)) {
    body.tools = (body.tools as Array<{ type: string; function: Record<string, unknown> }>).map((t) => {
      if (!t?.function) return t;
      const { strict: _strict, parameters, ...fn } = t.function;
      let params = (parameters ?? { type: 'object', properties: {} }) as Record<string, unknown>;
      if ('$schema' in params) {
        const { $schema: _s, ...rest } = params;
        params = rest;
      }
      return { ...t, function: { ...fn, parameters: params } };
    });
  }
  if (/thinking/i.test(String(body.model))) {
    messages = messages.map((m) =>
      m.role === 'assistant' && m.tool_calls?.length && typeof m.reasoning_content !== 'string' ? { ...m, reasoning_content: ' ' } : m,
    );
  }
  body.messages = messages;
}

/**
 * An upstream error response as a typed error, keeping the upstream's own message. Understands
 * OpenAI's `{error: {message, type, code, param}}` (with OpenRouter's `metadata`), vLLM's flat `{object: "error", message}`,
 * FastAPI's `{detail}` and plain text.
 */
export function upstreamHttpError(status: number, text: string, route: RouteDef, retryAfterMs: number | undefined): UpstreamError {
  // Keys blanked out before the cut, so that no part of one survives it.
  let message = withoutKeys(text.trim(), route).slice(0, 2000);
  let type: string | undefined;
  let code: string | number | null | undefined;
  let param: string | null | undefined;
  let metadata: unknown;
  try {
    const json = JSON.parse(text) as Record<string, unknown>;
    const err = (typeof json.error === 'object' && json.error !== null ? json.error : json) as Record<string, unknown>;
    const m = err.message ?? (typeof json.error === 'string' ? json.error : undefined) ?? json.detail ?? json.msg;
    if (typeof m === 'string' && m) message = m;
    else if (m !== undefined) message = JSON.stringify(m);
    if (typeof err.type === 'string') type = err.type;
    if (typeof err.code === 'string' || typeof err.code === 'number') code = err.code;
    if (typeof err.param === 'string') param = err.param;
    metadata = err.metadata;
  } catch {
    // not JSON: keep the text
  }
  const zai = route.kind === 'zai' || route.kind === 'zhipu' ? ZAI_STATUS[Number(code)] : undefined;
  return providerHttpError(zai ?? status, { message, type, code, param, metadata }, route, retryAfterMs);
}

/**
 * Z.AI / Zhipu business codes whose HTTP status (429 for all of them) says less than they do: the
 * account in arrears or its coding plan expired is the operator's payment (402), a locked,
 * inactive or missing account a refusal of this route (403). Left as 429, they were retried as
 * rate limits and counted against the circuit. (docs.z.ai/api-reference/api-code)
 */
const ZAI_STATUS: Readonly<Record<number, number>> = { 1110: 403, 1111: 403, 1112: 403, 1113: 402, 1121: 403, 1309: 402 };
