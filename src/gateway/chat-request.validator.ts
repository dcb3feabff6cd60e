import type { ChatRequest } from '../common/chat.types';
import { InvalidRequestError } from '../common/errors';
import { isJsonObject } from '../common/json-object';

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool', 'function']);

type Check = (v: unknown) => string | undefined;

const num =
  (min?: number, max?: number): Check =>
  (v) =>
    typeof v !== 'number' || !Number.isFinite(v)
      ? 'must be a number'
      : min !== undefined && v < min
        ? `must be at least ${min}`
        : max !== undefined && v > max
          ? `must be at most ${max}`
          : undefined;
const int =
  (min?: number, max?: number): Check =>
  (v) =>
    typeof v === 'number' && !Number.isInteger(v) ? 'must be an integer' : num(min, max)(v);
const bool: Check = (v) => (typeof v === 'boolean' ? undefined : 'must be a boolean');
const str: Check = (v) => (typeof v === 'string' ? undefined : 'must be a string');
const obj: Check = (v) => (isJsonObject(v) ? undefined : 'must be an object');
const strings: Check = (v) => (Array.isArray(v) && v.every((s) => typeof s === 'string') ? undefined : 'must be an array of strings');
const objects: Check = (v) => (Array.isArray(v) && v.every(isJsonObject) ? undefined : 'must be an array of objects');
const stop: Check = (v) =>
  typeof v === 'string' || (Array.isArray(v) && v.every((s) => typeof s === 'string'))
    ? undefined
    : 'must be a string or an array of strings';

/**
 * The most tokens a request may ask for: far beyond any model, within a 32-bit integer (what
 * servers and the request log store), and small enough that no price times it overflows.
 */
export const MAX_TOKENS_LIMIT = 2_147_483_647;

/** Optional top-level parameters and their types; null means "not set", as OpenAI allows. */
const PARAMS: Record<string, Check> = {
  stream: bool,
  stream_options: obj,
  temperature: num(0),
  top_p: num(0, 1),
  n: int(1, 128),
  max_tokens: int(1, MAX_TOKENS_LIMIT),
  max_completion_tokens: int(1, MAX_TOKENS_LIMIT),
  stop,
  seed: int(),
  frequency_penalty: num(-2, 2),
  presence_penalty: num(-2, 2),
  logprobs: bool,
  top_logprobs: int(0, 20),
  logit_bias: (v) =>
    obj(v) ??
    (Object.values(v as object).every((b) => num(-100, 100)(b) === undefined)
      ? undefined
      : 'must map token ids to numbers from -100 to 100'),
  user: str,
  parallel_tool_calls: bool,
  response_format: obj,
  // OpenAI's other options: checked for shape, passed on to servers that take them
  modalities: strings,
  audio: obj,
  prediction: obj,
  web_search_options: obj,
  metadata: obj,
  store: bool,
  service_tier: str,
  verbosity: str,
  prompt_cache_key: str,
  safety_identifier: str,
  // vLLM / SGLang sampling extras
  top_k: int(-1),
  min_p: num(0, 1),
  repetition_penalty: num(0),
  min_tokens: int(0, MAX_TOKENS_LIMIT),
  // reasoning: OpenAI's effort, OpenRouter's object, Anthropic's own
  reasoning_effort: str,
  reasoning: obj,
  thinking: obj,
  // OpenRouter's own options (`models` and `provider` are read by the routing)
  transforms: strings,
  plugins: objects,
  route: str,
  usage: obj,
  session_id: (v) => str(v) ?? (String(v).length > 128 ? 'must be at most 128 characters' : undefined),
  debug: obj,
};

/** Fields of the object-valued options above, and their types. */
const NESTED: Record<string, Record<string, Check>> = {
  stream_options: { include_usage: bool },
  usage: { include: bool },
  debug: { echo_upstream_body: bool },
};

/** The fields of OpenRouter's `reasoning` object and their types. */
const REASONING: Record<string, Check> = {
  effort: str,
  max_tokens: int(0, MAX_TOKENS_LIMIT),
  exclude: bool,
  enabled: bool,
};

function fail(param: string, problem: string): never {
  throw new InvalidRequestError(`Invalid request: "${param}" ${problem}`, param, 'invalid_request');
}

/** OpenRouter's own options every endpoint takes (`models` and `provider` are read by the routing). */
const OPENROUTER_OPTIONS = ['transforms', 'plugins', 'route', 'usage', 'session_id', 'debug'] as const;

/**
 * The parts of a body all of OpenRouter's OpenAI endpoints share: without `model`, the first of
 * the fallback list `models` is the model asked for; and its own options, checked for type.
 */
export function checkOpenRouterFields(body: Record<string, unknown>): void {
  if ((body.model === undefined || body.model === null) && Array.isArray(body.models) && typeof body.models[0] === 'string')
    body.model = body.models[0];
  for (const key of OPENROUTER_OPTIONS) {
    const v = body[key];
    if (v === undefined || v === null) continue;
    const problem = PARAMS[key](v);
    if (problem) fail(key, problem);
    checkNested(body, key);
  }
}

/** OpenRouter's `reasoning` object's fields (its type is checked with the other parameters). */
export function checkReasoningFields(body: Record<string, unknown>): void {
  if (!isJsonObject(body.reasoning)) return;
  for (const key in REASONING) {
    const v = body.reasoning[key];
    if (v === undefined || v === null) continue;
    const problem = REASONING[key](v);
    if (problem) fail(`reasoning.${key}`, problem);
  }
}

function checkNested(body: Record<string, unknown>, key: string): void {
  const o = body[key];
  const fields = NESTED[key];
  if (!fields || !isJsonObject(o)) return;
  for (const field in fields) {
    const v = o[field];
    if (v === undefined || v === null) continue;
    const problem = fields[field](v);
    if (problem) fail(`${key}.${field}`, problem);
  }
}

/**
 * Checks a chat-completions body quickly and names the first bad field. Unknown fields pass
 * through untouched (servers have their own extras); known ones must have the right type.
 */
export function validateChatRequest(body: unknown): ChatRequest {
  if (!isJsonObject(body)) fail('body', 'must be a JSON object');
  checkOpenRouterFields(body);
  if (body.model === undefined || body.model === null) fail('model', 'is required');
  if (typeof body.model !== 'string' || body.model.trim() === '') fail('model', 'must be a non-empty string');
  if (body.messages === undefined || body.messages === null) fail('messages', 'is required');
  if (!Array.isArray(body.messages)) fail('messages', 'must be an array');
  if (body.messages.length === 0) fail('messages', 'must contain at least one message');
  body.messages.forEach(checkMessage);

  for (const key in PARAMS) {
    const v = body[key];
    if (v === undefined || v === null) continue;
    const problem = PARAMS[key](v);
    if (problem) fail(key, problem);
  }
  for (const key in NESTED) checkNested(body, key);
  checkReasoningFields(body);
  if (isJsonObject(body.response_format) && typeof body.response_format.type !== 'string')
    fail('response_format.type', 'is required and must be a string');
  if (body.tools !== undefined && body.tools !== null) checkTools(body.tools);
  if (body.tool_choice !== undefined && body.tool_choice !== null) {
    checkToolChoice(body.tool_choice);
    checkChoiceAmongTools(body.tool_choice, Array.isArray(body.tools) ? (body.tools as Record<string, unknown>[]) : []);
  }
  return body as ChatRequest;
}

function checkMessage(m: unknown, i: number): void {
  const at = `messages[${i}]`;
  if (!isJsonObject(m)) fail(at, 'must be an object');
  if (typeof m.role !== 'string') fail(`${at}.role`, 'is required and must be a string');
  if (!ROLES.has(m.role)) fail(`${at}.role`, `must be one of ${[...ROLES].join(', ')}`);
  const c = m.content;
  if (c === undefined || c === null) {
    if (m.role !== 'assistant') fail(`${at}.content`, 'is required');
  } else if (Array.isArray(c)) {
    c.forEach((part, j) => {
      if (!isJsonObject(part) || typeof part.type !== 'string') fail(`${at}.content[${j}]`, 'must be an object with a string "type"');
      if (part.type === 'text' && typeof part.text !== 'string') fail(`${at}.content[${j}].text`, 'must be a string');
      if (
        part.type === 'image_url' &&
        !(isJsonObject(part.image_url) && typeof part.image_url.url === 'string') &&
        typeof part.image_url !== 'string'
      ) {
        fail(`${at}.content[${j}].image_url.url`, 'must be a string');
      }
    });
  } else if (typeof c !== 'string') {
    fail(`${at}.content`, 'must be a string or an array of content parts');
  }
  // null is "not set" (the SDK types allow it); dropped so that no backend sees a null name.
  if (m.name === null) delete m.name;
  if (m.name !== undefined && typeof m.name !== 'string') fail(`${at}.name`, 'must be a string');
  if (m.role === 'tool' && typeof m.tool_call_id !== 'string')
    fail(`${at}.tool_call_id`, 'is required for tool messages and must be a string');
  if (m.tool_calls !== undefined && m.tool_calls !== null) {
    if (!Array.isArray(m.tool_calls)) fail(`${at}.tool_calls`, 'must be an array');
    m.tool_calls.forEach((t: unknown, j: number) => {
      const tat = `${at}.tool_calls[${j}]`;
      if (!isJsonObject(t)) fail(tat, 'must be an object');
      if (typeof t.id !== 'string') fail(`${tat}.id`, 'must be a string');
      // A custom tool's call (OpenAI's free-form tools): its name and raw input.
      if (t.type === 'custom') {
        if (!isJsonObject(t.custom)) fail(`${tat}.custom`, 'must be an object');
        if (typeof t.custom.name !== 'string') fail(`${tat}.custom.name`, 'must be a string');
        if (typeof t.custom.input !== 'string') fail(`${tat}.custom.input`, 'must be a string');
        return;
      }
      if (!isJsonObject(t.function)) fail(`${tat}.function`, 'must be an object');
      if (typeof t.function.name !== 'string') fail(`${tat}.function.name`, 'must be a string');
      if (typeof t.function.arguments !== 'string') fail(`${tat}.function.arguments`, 'must be a string (JSON-encoded arguments)');
    });
  }
}

function checkTools(tools: unknown): void {
  if (!Array.isArray(tools)) fail('tools', 'must be an array');
  tools.forEach((t, i) => {
    const at = `tools[${i}]`;
    if (!isJsonObject(t)) fail(at, 'must be an object');
    // OpenAI's custom (free-form input) tools: a name, and optionally a description and a format.
    if (t.type === 'custom') {
      if (!isJsonObject(t.custom)) fail(`${at}.custom`, 'must be an object');
      if (typeof t.custom.name !== 'string' || t.custom.name === '') fail(`${at}.custom.name`, 'must be a non-empty string');
      if (t.custom.format !== undefined && t.custom.format !== null && !isJsonObject(t.custom.format))
        fail(`${at}.custom.format`, 'must be an object');
      return;
    }
    if (t.type !== 'function')
      fail(
        `${at}.type`,
        typeof t.type === 'string'
          ? `"${t.type.slice(0, 40)}" is not supported; tools must be "function" or "custom" tools`
          : 'must be "function"',
      );
    if (!isJsonObject(t.function)) fail(`${at}.function`, 'must be an object');
    if (typeof t.function.name !== 'string' || t.function.name === '') fail(`${at}.function.name`, 'must be a non-empty string');
    if (t.function.parameters === null) delete t.function.parameters;
    if (t.function.parameters !== undefined && !isJsonObject(t.function.parameters))
      fail(`${at}.function.parameters`, 'must be a JSON Schema object');
  });
}

function checkToolChoice(tc: unknown): void {
  if (typeof tc === 'string') {
    if (!['none', 'auto', 'required'].includes(tc))
      fail('tool_choice', 'must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}');
    return;
  }
  // OpenAI's other forms: a custom tool by name, or a subset of the tools offered.
  if (isJsonObject(tc) && tc.type === 'custom') {
    if (!isJsonObject(tc.custom) || typeof tc.custom.name !== 'string') fail('tool_choice.custom.name', 'must be a string');
    return;
  }
  if (isJsonObject(tc) && tc.type === 'allowed_tools') {
    const a = tc.allowed_tools;
    if (!isJsonObject(a)) fail('tool_choice.allowed_tools', 'must be an object');
    if (a.mode !== 'auto' && a.mode !== 'required') fail('tool_choice.allowed_tools.mode', 'must be "auto" or "required"');
    if (!Array.isArray(a.tools) || !a.tools.every(isJsonObject)) fail('tool_choice.allowed_tools.tools', 'must be an array of objects');
    return;
  }
  if (isJsonObject(tc) && typeof tc.type === 'string' && tc.type !== 'function')
    fail(
      'tool_choice',
      `of type "${tc.type.slice(0, 40)}" is not supported; use "none", "auto", "required" or {"type": "function" | "custom" | "allowed_tools", ...}`,
    );
  if (!isJsonObject(tc) || tc.type !== 'function' || !isJsonObject(tc.function) || typeof tc.function.name !== 'string') {
    fail('tool_choice', 'must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}');
  }
}

/**
 * A choice no answer can satisfy is refused here, as OpenAI and vLLM do: a tool call
 * demanded with no tools offered, or a tool named that is not offered. Passed on, some
 * servers answer 500 and others call a different tool than the one named.
 */
function checkChoiceAmongTools(tc: unknown, tools: readonly Record<string, unknown>[]): void {
  if (tc === 'none' || tc === 'auto' || (isJsonObject(tc) && tc.type === 'allowed_tools')) return;
  if (tools.length === 0) fail('tool_choice', 'is only allowed when tools are specified');
  if (!isJsonObject(tc)) return;
  const kind = tc.type === 'custom' ? 'custom' : 'function';
  const name = (tc[kind] as Record<string, unknown>).name as string;
  const offered = tools.some((t) => t.type === kind && isJsonObject(t[kind]) && t[kind].name === name);
  if (!offered) fail(`tool_choice.${kind}.name`, `names "${name.slice(0, 64)}", which is not a ${kind} tool in tools`);
}

/** The parameter checks and the error, for the other OpenAI endpoints' validators. */
export { PARAMS as PARAMETER_CHECKS, fail as invalidParameter };
