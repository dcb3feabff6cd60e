import type { EmbeddingsRequest } from '../common/embedding.types';
import { checkOpenRouterFields, invalidParameter as fail, PARAMETER_CHECKS } from './chat-request.validator';
import { isJsonObject } from '../common/json-object';

const isTokenList = (v: unknown): boolean => Array.isArray(v) && v.length > 0 && v.every((t) => Number.isInteger(t) && (t as number) >= 0);

/** OpenAI's limit on inputs per request. */
export const MAX_EMBEDDING_INPUTS = 2048;

/**
 * Checks an embeddings body and names the first bad field: `input` is a non-empty string, a
 * list of them, a list of token ids, or a list of such lists.
 */
export function validateEmbeddingsRequest(body: unknown): EmbeddingsRequest {
  if (!isJsonObject(body)) fail('body', 'must be a JSON object');
  checkOpenRouterFields(body);
  if (typeof body.model !== 'string' || body.model.trim() === '')
    fail('model', body.model === undefined || body.model === null ? 'is required' : 'must be a non-empty string');
  const input = body.input;
  if (input === undefined || input === null) fail('input', 'is required');
  if (typeof input === 'string') {
    if (input === '') fail('input', 'must not be empty');
  } else if (Array.isArray(input)) {
    if (input.length === 0) fail('input', 'must not be an empty array');
    if (input.length > MAX_EMBEDDING_INPUTS) fail('input', `must have at most ${MAX_EMBEDDING_INPUTS} entries`);
    if (typeof input[0] === 'number') {
      if (!isTokenList(input)) fail('input', 'must be a string, an array of strings, an array of token ids or an array of token-id arrays');
    } else {
      input.forEach((x, i) => {
        if (typeof x === 'string') {
          if (x === '') fail(`input[${i}]`, 'must not be empty');
        } else if (!isTokenList(x)) fail(`input[${i}]`, 'must be a non-empty string or a non-empty array of token ids');
      });
    }
  } else {
    fail('input', 'must be a string, an array of strings, an array of token ids or an array of token-id arrays');
  }
  if (
    body.encoding_format !== undefined &&
    body.encoding_format !== null &&
    body.encoding_format !== 'float' &&
    body.encoding_format !== 'base64'
  ) {
    fail('encoding_format', 'must be "float" or "base64"');
  }
  if (body.dimensions !== undefined && body.dimensions !== null && !(Number.isInteger(body.dimensions) && (body.dimensions as number) >= 1))
    fail('dimensions', 'must be a positive integer');
  const userProblem = body.user === undefined || body.user === null ? undefined : PARAMETER_CHECKS.user(body.user);
  if (userProblem) fail('user', userProblem);
  if (body.encoding_format === null) delete body.encoding_format;
  // Embeddings are never streamed (OpenAI's API has no such option): an answer is one JSON body,
  // and an upstream that refuses arguments it does not know is not sent these.
  const streamProblem = body.stream === undefined || body.stream === null ? undefined : PARAMETER_CHECKS.stream(body.stream);
  if (streamProblem) fail('stream', streamProblem);
  delete body.stream;
  delete body.stream_options;
  return body as EmbeddingsRequest;
}
