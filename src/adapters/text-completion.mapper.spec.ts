import type { ChatChunk, ChatResponse } from '../common/chat.types';
import type { Completion } from '../common/completion.types';
import {
  chatChunkToCompletion,
  chatToCompletion,
  completionAsChatRequest,
  completionChunkToChat,
  completionToChat,
  legacyLogprobs,
} from './text-completion.mapper';

describe('completionAsChatRequest', () => {
  it('sends the prompt as the one user message and keeps the sampling parameters', () => {
    const chat = completionAsChatRequest({
      model: 'm',
      prompt: 'Once upon',
      max_tokens: 5,
      temperature: 0.2,
      stop: ['\n'],
      stream: true,
      logprobs: 2,
    });
    expect(chat).toEqual({
      model: 'm',
      messages: [{ role: 'user', content: 'Once upon' }],
      max_tokens: 5,
      temperature: 0.2,
      stop: ['\n'],
      stream: true,
      logprobs: true,
      top_logprobs: 2,
    });
  });

  it('accepts a list holding one string', () => {
    expect(completionAsChatRequest({ model: 'm', prompt: ['hi'] }).messages).toEqual([{ role: 'user', content: 'hi' }]);
  });

  it.each([
    [{ prompt: ['a', 'b'] }, 'prompt'],
    [{ prompt: [1, 2, 3] }, 'prompt'],
    [{ prompt: 'x', suffix: 'end' }, 'suffix'],
    [{ prompt: 'x', echo: true }, 'echo'],
    [{ prompt: 'x', best_of: 3 }, 'best_of'],
    [{ prompt: 'x', max_tokens: 0 }, 'max_tokens'],
  ])('refuses what a chat backend cannot answer faithfully (%j) with a 400 naming %s', (extra, param) => {
    expect(() => completionAsChatRequest({ model: 'm', ...extra })).toThrow(
      expect.objectContaining({ status: 400, param, retryable: false }),
    );
  });

  it('lets harmless defaults through (echo false, best_of 1)', () => {
    expect(() => completionAsChatRequest({ model: 'm', prompt: 'x', echo: false, best_of: 1, suffix: null })).not.toThrow();
  });
});

describe('legacy ⇄ chat', () => {
  const native: Completion = {
    id: 'cmpl-1',
    object: 'text_completion',
    created: 1,
    model: 'base',
    choices: [
      {
        text: ' there',
        index: 0,
        logprobs: { tokens: [' there'], token_logprobs: [-0.1], top_logprobs: null, text_offset: [0] },
        finish_reason: 'length',
      },
    ],
    usage: { prompt_tokens: 2, completion_tokens: 1, total_tokens: 3 },
  };

  it('round-trips a native answer through the canonical shape', () => {
    const chat = completionToChat(native);
    expect(chat.object).toBe('chat.completion');
    expect(chat.choices[0]).toMatchObject({ index: 0, message: { role: 'assistant', content: ' there' }, finish_reason: 'length' });
    expect(chatToCompletion(chat)).toEqual(native);
  });

  it('round-trips a native stream chunk', () => {
    const chunk = { ...native, choices: [{ text: 'x', index: 0, logprobs: null, finish_reason: null }], usage: null };
    const chat = completionChunkToChat(chunk);
    expect(chat).toMatchObject({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'x' }, finish_reason: null }] });
    expect(chatChunkToCompletion(chat)).toEqual(chunk);
  });

  it('turns a chat answer into text (a null content is empty text)', () => {
    const res: ChatResponse = {
      id: 'c',
      object: 'chat.completion',
      created: 1,
      model: 'm',
      choices: [{ index: 0, message: { role: 'assistant', content: null }, finish_reason: 'stop' }],
    };
    expect(chatToCompletion(res).choices).toEqual([{ text: '', index: 0, logprobs: null, finish_reason: 'stop' }]);
  });

  it('gives chat logprobs the legacy layout', () => {
    const lp = {
      content: [
        {
          token: 'Hel',
          logprob: -0.5,
          top_logprobs: [
            { token: 'Hel', logprob: -0.5 },
            { token: 'Hi', logprob: -1 },
          ],
        },
        { token: 'lo', logprob: -0.1, top_logprobs: [] },
      ],
    };
    expect(legacyLogprobs(lp)).toEqual({
      tokens: ['Hel', 'lo'],
      token_logprobs: [-0.5, -0.1],
      top_logprobs: [{ Hel: -0.5, Hi: -1 }, {}],
      text_offset: [0, 3],
    });
    expect(legacyLogprobs(null)).toBeNull();
  });

  it("runs a stream's text_offset on across its chunks, per choice", () => {
    const offsets = new Map<number, number>();
    const chunk = (index: number, tokens: string[]): ChatChunk => ({
      id: 'x',
      object: 'chat.completion.chunk',
      created: 0,
      model: 'm',
      choices: [
        {
          index,
          delta: { content: tokens.join('') },
          finish_reason: null,
          logprobs: { content: tokens.map((token) => ({ token, logprob: -1, top_logprobs: [] })) },
        },
      ],
    });
    const offsetsOf = (c: Completion) => (c.choices[0].logprobs as { text_offset: number[] }).text_offset;
    expect(offsetsOf(chatChunkToCompletion(chunk(0, ['Say', ' hi']), offsets))).toEqual([0, 3]);
    expect(offsetsOf(chatChunkToCompletion(chunk(1, ['No']), offsets))).toEqual([0]);
    expect(offsetsOf(chatChunkToCompletion(chunk(0, [' there']), offsets))).toEqual([6]);
    expect(offsetsOf(chatChunkToCompletion(chunk(1, ['pe']), offsets))).toEqual([2]);
  });
});
