import type { CompletionRequest } from '../common/completion.types';
import {
  checkOpenRouterFields,
  checkReasoningFields,
  invalidParameter as fail,
  MAX_TOKENS_LIMIT,
  PARAMETER_CHECKS,
} from './chat-request.validator';
import { isJsonObject } from '../common/json-object';

const isTokenList = (v: unknown): boolean => Array.isArray(v) && v.length > 0 && v.every((t) => Number.isInteger(t) && (t as number) >= 0);

/** The chat parameters legacy completions share (same types and ranges). */
const SHARED = [
  'stream',
  'stream_options',
  'temperature',
  'top_p',
  'n',
  'stop',
  'seed',
  'frequency_penalty',
  'presence_penalty',
  'logit_bias',
  'user',
  'top_k',
  'min_p',
  'repetition_penalty',
  'min_tokens',
  // reasoning models served through the chat form (and OpenRouter's completions) take these
  'reasoning_effort',
  'reasoning',
] as const;

/**
 * Checks a legacy completions body and names the first bad field. `prompt` is a string, a list
 * of strings, a list of token ids or a list of such lists; unknown fields pass through.
 */
export function validateCompletionRequest(body: unknown): CompletionRequest {
  if (!isJsonObject(body)) fail('body', 'must be a JSON object');
  checkOpenRouterFields(body);
  if (typeof body.model !== 'string' || body.model.trim() === '')
    fail('model', body.model === undefined || body.model === null ? 'is required' : 'must be a non-empty string');
  const p = body.prompt;
  if (p === undefined || p === null) fail('prompt', 'is required');
  const ok =
    typeof p === 'string' ||
    (Array.isArray(p) && p.length > 0 && (isTokenList(p) || p.every((x) => typeof x === 'string') || p.every(isTokenList)));
  if (!ok) fail('prompt', 'must be a string, an array of strings, an array of token ids or an array of token-id arrays');
  for (const key of SHARED) {
    const v = body[key];
    if (v === undefined || v === null) continue;
    const problem = PARAMETER_CHECKS[key](v);
    if (problem) fail(key, problem);
  }
  checkReasoningFields(body);
  if (
    isJsonObject(body.stream_options) &&
    body.stream_options.include_usage !== undefined &&
    typeof body.stream_options.include_usage !== 'boolean'
  ) {
    fail('stream_options.include_usage', 'must be a boolean');
  }
  if (
    body.logprobs !== undefined &&
    body.logprobs !== null &&
    !(Number.isInteger(body.logprobs) && (body.logprobs as number) >= 0 && (body.logprobs as number) <= 5)
  ) {
    fail('logprobs', 'must be an integer from 0 to 5');
  }
  if (body.echo !== undefined && body.echo !== null && typeof body.echo !== 'boolean') fail('echo', 'must be a boolean');
  if (body.suffix !== undefined && body.suffix !== null && typeof body.suffix !== 'string') fail('suffix', 'must be a string');
  // 0 is a completion's own: with echo and logprobs it scores a prompt without generating.
  if (
    body.max_tokens !== undefined &&
    body.max_tokens !== null &&
    !(Number.isInteger(body.max_tokens) && (body.max_tokens as number) >= 0 && (body.max_tokens as number) <= MAX_TOKENS_LIMIT)
  ) {
    fail('max_tokens', `must be an integer from 0 to ${MAX_TOKENS_LIMIT}`);
  }
  if (
    body.best_of !== undefined &&
    body.best_of !== null &&
    !(Number.isInteger(body.best_of) && (body.best_of as number) >= 1 && (body.best_of as number) <= 20)
  ) {
    fail('best_of', 'must be an integer from 1 to 20');
  }
  const bestOf = typeof body.best_of === 'number' ? body.best_of : 1;
  // As OpenAI's API documents them: best_of candidates, of which n are returned, and none streamed.
  if (typeof body.n === 'number' && bestOf < body.n && body.best_of !== undefined && body.best_of !== null)
    fail('best_of', 'must be at least n (best_of candidates are made, n of them returned)');
  if (bestOf > 1 && body.stream === true)
    fail('best_of', 'cannot be more than 1 when streaming: the best of several completions is known only at the end');
  return body as CompletionRequest;
}
