import { InvalidRequestError } from '../../common/errors';
import { MAX_TOKENS_LIMIT } from '../chat-request.validator';
import { isJsonObject } from '../../common/json-object';
import { isInterleavedThinkingBeta } from '../../common/reasoning';

type Json = Record<string, unknown>;

function fail(field: string, problem: string): never {
  throw new InvalidRequestError(`${field}: ${problem}`, field, 'invalid_request');
}

/**
 * Blocks that are the assistant's alone: a user turn that carries one is wrong on every backend.
 * Other block types are not listed: Anthropic adds new ones often (tool search, compaction, code
 * execution results, ...), Claude routes relay them as they are, and a translated route refuses
 * what it cannot express by name (messages.mapper).
 */
const ASSISTANT_ONLY = new Set(['tool_use', 'thinking', 'redacted_thinking']);
/** Blocks that only a user turn carries. */
const USER_ONLY = new Set(['tool_result']);
/**
 * Blocks a mid-conversation system message cannot hold: it carries instructions (text; Anthropic's
 * newer tool changes are relayed to Claude routes as they are), never conversation or media.
 */
const NOT_IN_SYSTEM = new Set([...ASSISTANT_ONLY, ...USER_ONLY, 'image', 'document']);
/** Blocks a tool result's content cannot hold. */
const NOT_IN_TOOL_RESULT = new Set(['tool_use', 'tool_result', 'thinking', 'redacted_thinking']);

/** A field that must be text: "Field required" when it is missing, else what is wrong with it. */
function requireString(v: unknown, where: string, nonEmpty = true): void {
  if (v === undefined || v === null) fail(where, 'Field required');
  if (typeof v !== 'string') fail(where, 'Input should be a valid string');
  if (nonEmpty && v === '') fail(where, 'String should have at least 1 character');
}

/** A field that must be an object: "Field required" when it is missing, else that it is not one. */
function requireObject(v: unknown, where: string): asserts v is Json {
  if (v === undefined || v === null) fail(where, 'Field required');
  if (!isJsonObject(v)) fail(where, 'Input should be an object');
}

function checkNumber(body: Json, key: string, min: number, max?: number, integer = false): void {
  const v = body[key];
  if (v === undefined || v === null) return;
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(key, 'Input should be a valid number');
  if (integer && !Number.isInteger(v)) fail(key, 'Input should be a valid integer');
  if (v < min) fail(key, `Input should be greater than or equal to ${min}`);
  if (max !== undefined && v > max) fail(key, `Input should be less than or equal to ${max}`);
}

function checkContent(content: unknown, at: string, role: string): void {
  if (typeof content === 'string') return;
  if (!Array.isArray(content)) fail(`${at}.content`, 'Input should be a valid string or a list of content blocks');
  const refused = role === 'user' ? ASSISTANT_ONLY : role === 'system' ? NOT_IN_SYSTEM : USER_ONLY;
  content.forEach((b: unknown, j) => checkBlock(b, `${at}.content.${j}`, refused, `${role === 'assistant' ? 'an' : 'a'} ${role} message`));
}

function checkBlock(b: unknown, where: string, refused: ReadonlySet<string>, inside: string): void {
  if (!isJsonObject(b)) fail(where, 'Input should be an object');
  requireString(b.type, `${where}.type`);
  if (refused.has(b.type as string)) fail(`${where}.type`, `"${b.type}" blocks are not allowed in ${inside}`);
  switch (b.type) {
    case 'text':
      if (typeof b.text !== 'string') fail(`${where}.text`, 'Input should be a valid string');
      break;
    case 'image':
    case 'document':
      checkSource(b.source, `${where}.source`, b.type);
      break;
    case 'tool_use':
      requireString(b.id, `${where}.id`);
      requireString(b.name, `${where}.name`);
      // Required, as Anthropic has it: a translated route sent a call without one as `{}`.
      requireObject(b.input, `${where}.input`);
      break;
    case 'tool_result':
      requireString(b.tool_use_id, `${where}.tool_use_id`);
      // A string ("yes") was read as no error, and the result sent as a success.
      if (b.is_error !== undefined && b.is_error !== null && typeof b.is_error !== 'boolean')
        fail(`${where}.is_error`, 'Input should be a valid boolean');
      if (b.content === undefined || b.content === null || typeof b.content === 'string') break;
      if (!Array.isArray(b.content)) fail(`${where}.content`, 'Input should be a valid string or a list of content blocks');
      b.content.forEach((c: unknown, k) => checkBlock(c, `${where}.content.${k}`, NOT_IN_TOOL_RESULT, 'a tool result'));
      break;
    case 'thinking':
      requireString(b.thinking, `${where}.thinking`, false);
      break;
  }
}

/** The media types Anthropic takes in base64 sources. */
const BASE64_MEDIA_TYPES: Readonly<Record<string, readonly string[]>> = {
  image: ['image/jpeg', 'image/png', 'image/gif', 'image/webp'],
  document: ['application/pdf'],
};

/**
 * An image's or document's `source`: base64 and text carry `data` as a string, url a `url`; a
 * base64 source names a media type Anthropic takes for that block (a translated route would
 * otherwise send a `data:undefined;base64,...` URL).
 */
function checkSource(source: unknown, where: string, block: 'image' | 'document'): void {
  requireObject(source, where);
  requireString(source.type, `${where}.type`);
  if ((source.type === 'base64' || source.type === 'text') && typeof source.data !== 'string')
    fail(`${where}.data`, 'Input should be a valid string');
  if (source.type === 'base64') {
    const allowed = BASE64_MEDIA_TYPES[block];
    if (typeof source.media_type !== 'string' || !allowed.includes(source.media_type))
      fail(`${where}.media_type`, `Input should be ${allowed.map((t) => `'${t}'`).join(', ')}`);
  }
  if (source.type === 'url' && typeof source.url !== 'string') fail(`${where}.url`, 'Input should be a valid string');
}

/**
 * Checks an Anthropic Messages body (or a count_tokens body, which has no `max_tokens`) quickly
 * and names the first bad field the way Anthropic's API does (`messages.1.content.0.text`).
 * Unknown fields pass through untouched (for Claude routes, which relay the body as it is).
 * `betas`: the request's `anthropic-beta` values.
 */
export function validateMessagesRequest(body: unknown, countOnly = false, betas: readonly string[] = []): Json {
  if (!isJsonObject(body)) fail('body', 'the request body must be a JSON object');
  if (body.model === undefined || body.model === null) fail('model', 'Field required');
  if (typeof body.model !== 'string' || body.model.trim() === '') fail('model', 'Input should be a non-empty string');
  if (!countOnly) {
    if (body.max_tokens === undefined || body.max_tokens === null) fail('max_tokens', 'Field required');
    checkNumber(body, 'max_tokens', 1, MAX_TOKENS_LIMIT, true);
  }
  if (body.messages === undefined || body.messages === null) fail('messages', 'Field required');
  if (!Array.isArray(body.messages)) fail('messages', 'Input should be a valid list');
  // A thread's later turn may add no message: Anthropic's SDK resumes a paused turn (pause_turn) so.
  const continues = isJsonObject(body.thread) && body.thread.type === 'continue';
  if (body.messages.length === 0 && !continues) fail('messages', 'at least one message is required');
  body.messages.forEach((m: unknown, i) => {
    const at = `messages.${i}`;
    if (!isJsonObject(m)) fail(at, 'Input should be an object');
    if (m.role !== 'user' && m.role !== 'assistant' && m.role !== 'system')
      fail(`${at}.role`, "Input should be 'user', 'assistant' or 'system'");
    if (m.content === undefined || m.content === null) fail(`${at}.content`, 'Field required');
    // A mid-conversation system message (Claude Code sends them): instructions that apply from
    // there on, after the conversation's start (the top-level `system` is for those that apply
    // from the first turn).
    if (m.role === 'system' && i === 0)
      fail(
        `${at}.role`,
        'a system message cannot be the first message; put instructions for the whole conversation in the top-level system field',
      );
    checkContent(m.content, at, m.role);
    // An empty user turn says nothing (a translated route got it as empty text), and Anthropic
    // refuses one. An empty assistant turn is taken: the gateway answers one itself (a reasoning
    // model cut off by max_tokens gives `content: []`), and a client sends it back; a translated
    // route leaves it out, a Claude route answers for itself.
    if (m.role !== 'assistant' && (m.content === '' || (Array.isArray(m.content) && m.content.length === 0)))
      fail(at, 'all messages must have non-empty content except for the optional final assistant message');
  });
  if (body.system !== undefined && body.system !== null) {
    if (typeof body.system !== 'string') {
      if (!Array.isArray(body.system)) fail('system', 'Input should be a valid string or a list of text blocks');
      body.system.forEach((b: unknown, j) => {
        if (!isJsonObject(b) || b.type !== 'text' || typeof b.text !== 'string')
          fail(`system.${j}`, 'Input should be a text block ({"type": "text", "text": ...})');
      });
    }
  }
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean')
    fail('stream', 'Input should be a valid boolean');
  checkNumber(body, 'temperature', 0, 1);
  checkNumber(body, 'top_p', 0, 1);
  checkNumber(body, 'top_k', 0, undefined, true);
  if (
    body.stop_sequences !== undefined &&
    body.stop_sequences !== null &&
    !(Array.isArray(body.stop_sequences) && body.stop_sequences.every((s) => typeof s === 'string'))
  ) {
    fail('stop_sequences', 'Input should be a valid list of strings');
  }
  if (body.metadata !== undefined && body.metadata !== null && !isJsonObject(body.metadata)) fail('metadata', 'Input should be an object');
  if (
    isJsonObject(body.metadata) &&
    body.metadata.user_id !== undefined &&
    body.metadata.user_id !== null &&
    typeof body.metadata.user_id !== 'string'
  )
    fail('metadata.user_id', 'Input should be a valid string');
  if (body.tools !== undefined && body.tools !== null) {
    if (!Array.isArray(body.tools)) fail('tools', 'Input should be a valid list');
    body.tools.forEach((t: unknown, i) => {
      if (!isJsonObject(t)) fail(`tools.${i}`, 'Input should be an object');
      if (t.type !== undefined && t.type !== null) requireString(t.type, `tools.${i}.type`);
      // A client tool has a name and a schema; Anthropic's own (web search, bash, an MCP
      // toolset, ...) are described by their type, and not all have a name.
      const custom = t.type === undefined || t.type === null || t.type === 'custom';
      if (custom || t.name !== undefined) requireString(t.name, `tools.${i}.name`);
      if (custom) requireObject(t.input_schema, `tools.${i}.input_schema`);
    });
  }
  if (body.tool_choice !== undefined && body.tool_choice !== null) {
    const tc = body.tool_choice;
    if (!isJsonObject(tc)) fail('tool_choice', 'Input should be an object');
    if (tc.type !== 'auto' && tc.type !== 'any' && tc.type !== 'tool' && tc.type !== 'none')
      fail('tool_choice.type', "Input should be 'auto', 'any', 'tool' or 'none'");
    if (tc.type === 'tool') requireString(tc.name, 'tool_choice.name');
    checkChoiceAmongTools(tc, Array.isArray(body.tools) ? body.tools : [], body.mcp_servers);
  }
  if (body.thread !== undefined && body.thread !== null) {
    const t = body.thread;
    requireObject(t, 'thread');
    if (t.type !== 'create' && t.type !== 'continue') fail('thread.type', "Input should be 'create' or 'continue'");
    if (t.type === 'continue') requireString(t.previous_message_id, 'thread.previous_message_id');
  }
  if (body.thinking !== undefined && body.thinking !== null) {
    const th = body.thinking;
    requireObject(th, 'thinking');
    requireString(th.type, 'thinking.type');
    if (th.type === 'enabled') {
      if (th.budget_tokens === undefined || th.budget_tokens === null) fail('thinking.budget_tokens', 'Field required');
      if (typeof th.budget_tokens !== 'number' || !Number.isInteger(th.budget_tokens))
        fail('thinking.budget_tokens', 'Input should be a valid integer');
      // With interleaved thinking the budget is the whole turn's, across its thinking blocks, and
      // may exceed max_tokens (Anthropic's extended-thinking docs); Claude Code sends that beta.
      const interleaved = betas.some(isInterleavedThinkingBeta);
      if (!countOnly && !interleaved && typeof body.max_tokens === 'number' && th.budget_tokens >= body.max_tokens)
        fail('max_tokens', 'must be greater than thinking.budget_tokens');
    }
  }
  return body;
}

/** The `anthropic-beta` values of a request (comma-separated, possibly in several headers). */
export function betasOf(header: string | string[] | undefined): string[] {
  const values = Array.isArray(header) ? header : header === undefined ? [] : [header];
  return values
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

/**
 * A choice no answer can satisfy is refused here, as Claude's API does: a tool use
 * demanded with no tools offered, or a tool named that is not offered. Passed on, a
 * translated route's server may answer 500 or call another tool. A named toolset or MCP
 * server offers tools the request does not list, so then any name is taken.
 */
function checkChoiceAmongTools(tc: Record<string, unknown>, tools: readonly Record<string, unknown>[], mcpServers: unknown): void {
  if (tc.type !== 'any' && tc.type !== 'tool') return;
  const elsewhere = (Array.isArray(mcpServers) && mcpServers.length > 0) || tools.some((t) => t.name === undefined || t.name === null);
  if (elsewhere) return;
  if (tools.length === 0) fail('tool_choice', `Input type '${tc.type}' is only allowed when tools are specified`);
  if (tc.type === 'tool' && !tools.some((t) => t.name === tc.name))
    fail('tool_choice.name', `Tool '${String(tc.name).slice(0, 64)}' is not one of the tools in tools`);
}
