import { InvalidRequestError } from '../common/errors';
import { validateCompletionRequest } from './completion-request.validator';
import { validateEmbeddingsRequest } from './embeddings-request.validator';

const failure = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return e as InvalidRequestError;
  }
  throw new Error('expected a validation error');
};

describe('validateEmbeddingsRequest', () => {
  it.each([
    ['a string', 'hello'],
    ['strings', ['a', 'b']],
    ['token ids', [1, 2, 3]],
    ['lists of token ids', [[1, 2], [3]]],
  ])('accepts %s', (_, input) => {
    expect(validateEmbeddingsRequest({ model: 'e', input, encoding_format: 'base64', dimensions: 8, user: 'u' })).toMatchObject({
      model: 'e',
      input,
    });
  });

  it.each([
    [{ input: 'x' }, 'model', 'is required'],
    [{ model: 'e' }, 'input', 'is required'],
    [{ model: 'e', input: '' }, 'input', 'must not be empty'],
    [{ model: 'e', input: [] }, 'input', 'must not be an empty array'],
    [{ model: 'e', input: ['a', ''] }, 'input[1]', 'must not be empty'],
    [{ model: 'e', input: ['a', 3] }, 'input[1]', 'token ids'],
    [{ model: 'e', input: [1, -2] }, 'input', 'token ids'],
    [{ model: 'e', input: { text: 'x' } }, 'input', 'must be a string'],
    [{ model: 'e', input: 'x', encoding_format: 'int8' }, 'encoding_format', '"float" or "base64"'],
    [{ model: 'e', input: 'x', dimensions: 0 }, 'dimensions', 'positive integer'],
    [{ model: 'e', input: 'x', user: 5 }, 'user', 'must be a string'],
  ])('refuses %j naming %s', (body, param, text) => {
    const e = failure(() => validateEmbeddingsRequest(body));
    expect(e).toBeInstanceOf(InvalidRequestError);
    expect(e.param).toBe(param);
    expect(e.message).toContain(text);
  });

  it('refuses more than 2048 inputs', () => {
    expect(failure(() => validateEmbeddingsRequest({ model: 'e', input: Array(2049).fill('x') })).param).toBe('input');
  });
});

describe('validateCompletionRequest', () => {
  it.each([
    ['a string', 'Once'],
    ['strings', ['a', 'b']],
    ['token ids', [1, 2]],
    ['lists of token ids', [[1], [2, 3]]],
  ])('accepts %s as prompt', (_, prompt) => {
    expect(
      validateCompletionRequest({
        model: 'm',
        prompt,
        max_tokens: 5,
        logprobs: 2,
        echo: true,
        suffix: 's',
        best_of: 2,
        stream_options: { include_usage: true },
      }),
    ).toMatchObject({ prompt });
  });

  it('accepts max_tokens 0, which scores a prompt (echo and logprobs) without generating', () => {
    expect(validateCompletionRequest({ model: 'm', prompt: 'x', max_tokens: 0, echo: true, logprobs: 1 })).toMatchObject({ max_tokens: 0 });
    expect(validateCompletionRequest({ model: 'm', prompt: 'x', n: 2, best_of: 3 })).toMatchObject({ best_of: 3 });
  });

  it.each([
    [{ model: 'm' }, 'prompt', 'is required'],
    [{ model: 'm', prompt: [] }, 'prompt', 'must be a string'],
    [{ model: 'm', prompt: ['a', 1] }, 'prompt', 'must be a string'],
    [{ model: 'm', prompt: 'x', max_tokens: -1 }, 'max_tokens', 'from 0'],
    [{ model: 'm', prompt: 'x', n: 3, best_of: 2 }, 'best_of', 'at least n'],
    [{ model: 'm', prompt: 'x', best_of: 2, stream: true }, 'best_of', 'when streaming'],
    [{ model: 'm', prompt: 'x', temperature: -1 }, 'temperature', 'at least 0'],
    [{ model: 'm', prompt: 'x', logprobs: 6 }, 'logprobs', '0 to 5'],
    [{ model: 'm', prompt: 'x', logprobs: true }, 'logprobs', '0 to 5'],
    [{ model: 'm', prompt: 'x', echo: 'yes' }, 'echo', 'boolean'],
    [{ model: 'm', prompt: 'x', best_of: 21 }, 'best_of', '1 to 20'],
    [{ model: 'm', prompt: 'x', stop: 5 }, 'stop', 'string or an array'],
    [{ model: 'm', prompt: 'x', stream_options: { include_usage: 'y' } }, 'stream_options.include_usage', 'boolean'],
    // As chat checks them: the chat form and OpenRouter's completions pass them on.
    [{ model: 'm', prompt: 'x', reasoning: 'x' }, 'reasoning', 'must be an object'],
    [{ model: 'm', prompt: 'x', reasoning: { effort: 5 } }, 'reasoning.effort', 'must be a string'],
    [{ model: 'm', prompt: 'x', reasoning: { max_tokens: -1 } }, 'reasoning.max_tokens', 'at least 0'],
    [{ model: 'm', prompt: 'x', reasoning_effort: 3 }, 'reasoning_effort', 'must be a string'],
  ])('refuses %j naming %s', (body, param, text) => {
    const e = failure(() => validateCompletionRequest(body));
    expect(e.param).toBe(param);
    expect(e.message).toContain(text);
  });
});
