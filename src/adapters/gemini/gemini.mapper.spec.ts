import { testRoute } from '../../../test/helpers/route';
import type { ChatChunk, ChatRequest } from '../../common/chat.types';
import type { UpstreamError } from '../../common/errors';
import { classifyFailure, countsAgainstEndpoint } from '../../routing/retry-policy';
import { durationMs } from '../http/google-error';
import {
  finishReason,
  fromGeminiEmbedResponse,
  fromGeminiResponse,
  geminiHttpError,
  geminiModelPath,
  GeminiStreamTranslator,
  geminiUsage,
  SKIP_THOUGHT_SIGNATURE,
  syntheticToolCallId,
  toGeminiEmbedRequest,
  toGeminiRequest,
} from './gemini.mapper';

const route = testRoute({ id: 'gem', kind: 'gemini', apiKeys: ['k'], providerModelId: 'gemini-2.5-flash' });
const req = (extra: Partial<ChatRequest> = {}): ChatRequest => ({ model: 'pub', messages: [{ role: 'user', content: 'hi' }], ...extra });
const refused = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return e as UpstreamError;
  }
  throw new Error('expected an error');
};

describe('toGeminiRequest', () => {
  it('leaves out empty text, which Gemini refuses as a part without data, and refuses a request left with no contents', () => {
    const body = toGeminiRequest(
      req({
        messages: [
          { role: 'system', content: '' },
          {
            role: 'user',
            content: [
              { type: 'text', text: '' },
              { type: 'text', text: 'q' },
            ],
          },
          { role: 'assistant', content: 'a' },
          { role: 'user', content: '' },
          { role: 'user', content: 'again' },
        ],
      }),
    );
    expect(body.systemInstruction).toBeUndefined();
    expect(body.contents).toEqual([
      { role: 'user', parts: [{ text: 'q' }] },
      { role: 'model', parts: [{ text: 'a' }] },
      { role: 'user', parts: [{ text: 'again' }] },
    ]);
    for (const messages of [
      [{ role: 'user' as const, content: '' }],
      [
        { role: 'system' as const, content: 'Be terse.' },
        { role: 'user' as const, content: [{ type: 'text' as const, text: '' }] },
      ],
    ]) {
      const err = refused(() => toGeminiRequest(req({ messages })));
      expect(err).toMatchObject({ upstreamStatus: 400, param: 'messages', unsupportedByRoute: true });
    }
  });

  it('puts system and developer messages in systemInstruction and turns into user/model contents', () => {
    const body = toGeminiRequest(
      req({
        messages: [
          { role: 'system', content: 'Be terse.' },
          { role: 'developer', content: 'No lists.' },
          { role: 'user', content: 'q1' },
          { role: 'assistant', content: 'a1' },
          { role: 'user', content: [{ type: 'text', text: 'q2' }] },
          { role: 'user', content: 'more' },
        ],
      }),
    );
    expect(body).toEqual({
      systemInstruction: { parts: [{ text: 'Be terse.' }, { text: 'No lists.' }] },
      contents: [
        { role: 'user', parts: [{ text: 'q1' }] },
        { role: 'model', parts: [{ text: 'a1' }] },
        { role: 'user', parts: [{ text: 'q2' }, { text: 'more' }] },
      ],
    });
  });

  it('refuses an image in a system message (Gemini takes text only there) instead of dropping it', () => {
    const withImage = () =>
      toGeminiRequest(
        req({
          messages: [
            { role: 'system', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] },
            { role: 'user', content: 'q' },
          ],
        }),
      );
    expect(withImage).toThrow(expect.objectContaining({ status: 400, param: 'messages[0].content' }));
  });

  it('sends data-URL images inline and other URLs as fileData', () => {
    const body = toGeminiRequest(
      req({
        messages: [
          {
            role: 'user',
            content: [
              { type: 'image_url', image_url: { url: 'data:image/jpeg;base64,/9j/4AAQ' } },
              { type: 'image_url', image_url: { url: 'https://generativelanguage.googleapis.com/v1beta/files/abc.png' } },
              { type: 'file', file: { file_data: 'data:application/pdf;base64,JVBERi0=' } },
              { type: 'image_url', image_url: { url: 'https://www.youtube.com/watch?v=9hE5-98ZeCg' } },
              { type: 'file', file: { file_id: 'https://example.com/talk.webm?sig=1' } },
              { type: 'image_url', image_url: { url: 'https://example.com/a.constructor' } },
            ],
          },
        ],
      }),
    );
    expect(body.contents[0].parts).toEqual([
      { inlineData: { mimeType: 'image/jpeg', data: '/9j/4AAQ' } },
      { fileData: { fileUri: 'https://generativelanguage.googleapis.com/v1beta/files/abc.png', mimeType: 'image/png' } },
      { inlineData: { mimeType: 'application/pdf', data: 'JVBERi0=' } },
      // A YouTube video goes by URL alone; a media type comes from the extension, Object's own names are none.
      { fileData: { fileUri: 'https://www.youtube.com/watch?v=9hE5-98ZeCg' } },
      { fileData: { fileUri: 'https://example.com/talk.webm?sig=1', mimeType: 'video/webm' } },
      { fileData: { fileUri: 'https://example.com/a.constructor', mimeType: 'image/jpeg' } },
    ]);
  });

  it('refuses a data: URL that is not base64, which Gemini would take for a file URI', () => {
    const err = refused(() =>
      toGeminiRequest(
        req({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/svg+xml,%3Csvg%3E' } }] }] }),
      ),
    );
    expect(err).toMatchObject({ upstreamStatus: 400, param: 'messages[0].content[0]' });
    expect(err.message).toContain('must be base64');
  });

  it('replays tool calls as functionCall parts and answers them with functionResponse parts named after the call', () => {
    const synthetic = syntheticToolCallId();
    const body = toGeminiRequest(
      req({
        messages: [
          { role: 'user', content: 'weather?' },
          {
            role: 'assistant',
            content: null,
            tool_calls: [
              { id: synthetic, type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
              {
                id: 'fc-7',
                type: 'function',
                function: { name: 'time', arguments: '{}' },
                extra_content: { google: { thought_signature: 'SIG' } },
              } as never,
            ],
          },
          { role: 'tool', tool_call_id: synthetic, content: '{"tempC":21}' },
          { role: 'tool', tool_call_id: 'fc-7', content: 'noon' },
        ],
      }),
    );
    expect(body.contents[1]).toEqual({
      role: 'model',
      parts: [
        { functionCall: { name: 'weather', args: { city: 'Paris' } }, thoughtSignature: SKIP_THOUGHT_SIGNATURE },
        { functionCall: { name: 'time', args: {}, id: 'fc-7' }, thoughtSignature: 'SIG' },
      ],
    });
    expect(body.contents[2]).toEqual({
      role: 'user',
      parts: [
        { functionResponse: { name: 'weather', response: { output: { tempC: 21 } } } },
        { functionResponse: { name: 'time', response: { output: 'noon' }, id: 'fc-7' } },
      ],
    });
  });

  it("sends a tool result's images after the turn's function responses, where every model reads them, instead of dropping them", () => {
    const png = 'data:image/png;base64,iVBORw0KGgo=';
    const body = toGeminiRequest(
      req({
        messages: [
          { role: 'user', content: 'look at both pages' },
          {
            role: 'assistant',
            content: null,
            tool_calls: [
              { id: 'fc-1', type: 'function', function: { name: 'screenshot', arguments: '{"page":1}' } },
              { id: 'fc-2', type: 'function', function: { name: 'screenshot', arguments: '{"page":2}' } },
            ],
          },
          {
            role: 'tool',
            tool_call_id: 'fc-1',
            content: [
              { type: 'text', text: 'page 1' },
              { type: 'image_url', image_url: { url: png } },
            ],
          },
          { role: 'tool', tool_call_id: 'fc-2', content: [{ type: 'image_url', image_url: { url: 'https://example.com/p2.webp' } }] },
          { role: 'user', content: 'which is longer?' },
        ],
      }),
    );
    expect(body.contents[2]).toEqual({
      role: 'user',
      parts: [
        { functionResponse: { name: 'screenshot', response: { output: 'page 1' }, id: 'fc-1' } },
        { functionResponse: { name: 'screenshot', response: { output: '' }, id: 'fc-2' } },
        { inlineData: { mimeType: 'image/png', data: 'iVBORw0KGgo=' } },
        { fileData: { fileUri: 'https://example.com/p2.webp', mimeType: 'image/webp' } },
        { text: 'which is longer?' },
      ],
    });
    expect(body.contents).toHaveLength(3);
    // At the end of the conversation too; a part Gemini cannot take is refused, not dropped.
    const last = toGeminiRequest(
      req({
        messages: [
          { role: 'user', content: 'look' },
          {
            role: 'assistant',
            content: null,
            tool_calls: [{ id: 'fc-1', type: 'function', function: { name: 'screenshot', arguments: '{}' } }],
          },
          { role: 'tool', tool_call_id: 'fc-1', content: [{ type: 'image_url', image_url: { url: png } }] },
        ],
      }),
    );
    expect(last.contents[2].parts).toEqual([
      { functionResponse: { name: 'screenshot', response: { output: '' }, id: 'fc-1' } },
      { inlineData: { mimeType: 'image/png', data: 'iVBORw0KGgo=' } },
    ]);
    expect(() =>
      toGeminiRequest(
        req({
          messages: [
            { role: 'user', content: 'look' },
            {
              role: 'assistant',
              content: null,
              tool_calls: [{ id: 'fc-1', type: 'function', function: { name: 'rec', arguments: '{}' } }],
            },
            { role: 'tool', tool_call_id: 'fc-1', content: [{ type: 'input_audio', input_audio: { data: 'x', format: 'wav' } }] as never },
          ],
        }),
      ),
    ).toThrow(/messages\[2\]\.content\[0\]: content of type "input_audio" cannot be sent to Gemini/);
  });

  it("sends an assistant's refusal back as the text it was (a refusal part, or the message's refusal)", () => {
    const body = toGeminiRequest(
      req({
        messages: [
          { role: 'user', content: 'q' },
          { role: 'assistant', content: [{ type: 'refusal', refusal: "I can't help with that." }] },
          { role: 'user', content: 'another' },
          { role: 'assistant', content: null, refusal: 'No.' },
          { role: 'user', content: 'why' },
        ],
      }),
    );
    expect(body.contents[1]).toEqual({ role: 'model', parts: [{ text: "I can't help with that." }] });
    expect(body.contents[3]).toEqual({ role: 'model', parts: [{ text: 'No.' }] });
  });

  it('refuses tool-call arguments nested too deep to send, and sends such a tool result as text', () => {
    const deep = '['.repeat(5000) + ']'.repeat(5000);
    const call = { id: 'call_1', type: 'function' as const, function: { name: 'f', arguments: deep } };
    expect(
      refused(() =>
        toGeminiRequest(
          req({
            messages: [
              { role: 'user', content: 'x' },
              { role: 'assistant', content: null, tool_calls: [call] },
            ],
          }),
        ),
      ),
    ).toMatchObject({ status: 400, param: 'messages[1].tool_calls[0]', message: expect.stringContaining('deeper than 128') });
    const body = toGeminiRequest(
      req({
        messages: [
          { role: 'user', content: 'x' },
          { role: 'assistant', content: null, tool_calls: [{ ...call, function: { name: 'f', arguments: '{}' } }] },
          { role: 'tool', tool_call_id: 'call_1', content: deep },
        ],
      }),
    );
    expect(JSON.stringify(body)).toContain(JSON.stringify({ output: deep }));
  });

  it('refuses a tool result that answers no earlier call', () => {
    expect(
      refused(() =>
        toGeminiRequest(
          req({
            messages: [
              { role: 'user', content: 'x' },
              { role: 'tool', tool_call_id: 'nope', content: 'r' },
            ],
          }),
        ),
      ),
    ).toMatchObject({ status: 400, param: 'messages[1].tool_call_id' });
  });

  it.each([
    ['auto', { mode: 'AUTO' }],
    ['none', { mode: 'NONE' }],
    ['required', { mode: 'ANY' }],
    [
      { type: 'function', function: { name: 'f' } },
      { mode: 'ANY', allowedFunctionNames: ['f'] },
    ],
  ] as const)('maps tool_choice %j', (choice, config) => {
    const body = toGeminiRequest(
      req({
        tools: [{ type: 'function', function: { name: 'f', description: 'd', parameters: { type: 'object' } } }],
        tool_choice: choice as ChatRequest['tool_choice'],
      }),
    );
    expect(body.tools).toEqual([{ functionDeclarations: [{ name: 'f', description: 'd', parametersJsonSchema: { type: 'object' } }] }]);
    expect(body.toolConfig).toEqual({ functionCallingConfig: config });
  });

  it('maps sampling, stop sequences, n, JSON mode, schema, logprobs and reasoning effort into generationConfig', () => {
    const body = toGeminiRequest(
      req({
        temperature: 0.4,
        top_p: 0.9,
        top_k: 20,
        n: 2,
        max_completion_tokens: 100,
        stop: 'END',
        presence_penalty: 0.1,
        frequency_penalty: 0.2,
        seed: 7,
        response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } },
        logprobs: true,
        top_logprobs: 3,
        reasoning_effort: 'low',
      }),
    );
    expect(body.generationConfig).toEqual({
      temperature: 0.4,
      topP: 0.9,
      topK: 20,
      candidateCount: 2,
      maxOutputTokens: 100,
      stopSequences: ['END'],
      presencePenalty: 0.1,
      frequencyPenalty: 0.2,
      seed: 7,
      responseMimeType: 'application/json',
      responseJsonSchema: { type: 'object' },
      responseLogprobs: true,
      logprobs: 3,
      thinkingConfig: { thinkingBudget: 1024, includeThoughts: true },
    });
    expect(toGeminiRequest(req({ response_format: { type: 'json_object' } })).generationConfig).toEqual({
      responseMimeType: 'application/json',
    });
    expect(toGeminiRequest(req({ reasoning_effort: 'none' })).generationConfig).toEqual({
      thinkingConfig: { thinkingBudget: 0, includeThoughts: false },
    });
    expect(toGeminiRequest(req())).not.toHaveProperty('generationConfig');
    // vLLM's "top-k off" is not a value Gemini takes.
    expect(toGeminiRequest(req({ top_k: -1 }))).not.toHaveProperty('generationConfig');
  });

  it('gives effort max the largest budget and reasoning.enabled a medium one; refuses an effort it does not know', () => {
    expect(toGeminiRequest(req({ reasoning_effort: 'max' })).generationConfig).toEqual({
      thinkingConfig: { thinkingBudget: 24576, includeThoughts: true },
    });
    expect(toGeminiRequest(req({ reasoning: { enabled: true } })).generationConfig).toEqual({
      thinkingConfig: { thinkingBudget: 8192, includeThoughts: true },
    });
    expect(() => toGeminiRequest(req({ reasoning_effort: 'ultra' }))).toThrow(/^reasoning_effort must be one of/);
  });

  it("sends each model family the thinking it takes: Gemini 3's levels, 2.5's budgets in range", () => {
    const thinking = (model: string, r: Partial<ChatRequest>) => toGeminiRequest(req(r), model).generationConfig?.thinkingConfig;
    // Gemini 3 Pro takes low and high, and cannot stop thinking; Flash also minimal and medium.
    expect(thinking('gemini-3-pro-preview', { reasoning_effort: 'none' })).toEqual({ thinkingLevel: 'low', includeThoughts: false });
    expect(thinking('gemini-3-pro-preview', { reasoning_effort: 'medium' })).toEqual({ thinkingLevel: 'high', includeThoughts: true });
    expect(thinking('gemini-3-flash-preview', { reasoning_effort: 'minimal' })).toEqual({
      thinkingLevel: 'minimal',
      includeThoughts: true,
    });
    expect(thinking('gemini-3-flash-preview', { reasoning: { effort: 'medium', exclude: true } })).toEqual({
      thinkingLevel: 'medium',
      includeThoughts: false,
    });
    expect(thinking('models/gemini-3.1-pro', { reasoning_effort: 'xhigh' })).toEqual({ thinkingLevel: 'high', includeThoughts: true });
    // A budget asked for still goes as one (Gemini 3 takes it), but not 0.
    expect(thinking('gemini-3-pro-preview', { reasoning: { max_tokens: 2000 } })).toEqual({ thinkingBudget: 2000, includeThoughts: true });
    expect(thinking('gemini-3-pro-preview', { reasoning: { max_tokens: 0 } })).toEqual({ thinkingLevel: 'low', includeThoughts: false });
    // 2.5 Pro: 128 to 32,768, never 0; Flash-Lite from 512 unless 0; Flash as asked.
    expect(thinking('gemini-2.5-pro', { reasoning_effort: 'none' })).toEqual({ thinkingBudget: 128, includeThoughts: false });
    expect(thinking('gemini-2.5-pro', { reasoning: { max_tokens: 100_000 } })).toEqual({ thinkingBudget: 32_768, includeThoughts: true });
    expect(thinking('gemini-2.5-flash-lite', { reasoning: { max_tokens: 100 } })).toEqual({ thinkingBudget: 512, includeThoughts: true });
    expect(thinking('gemini-2.5-flash-lite', { reasoning_effort: 'none' })).toEqual({ thinkingBudget: 0, includeThoughts: false });
    expect(thinking('gemini-2.5-flash', { reasoning_effort: 'none' })).toEqual({ thinkingBudget: 0, includeThoughts: false });
    expect(thinking('gemini-2.5-flash', { reasoning: { max_tokens: -1 } })).toEqual({ thinkingBudget: -1, includeThoughts: true });
    // A name it does not know, or an older model: the budget as asked.
    expect(thinking('gemini-2.0-pro-exp-02-05', { reasoning_effort: 'none' })).toEqual({ thinkingBudget: 0, includeThoughts: false });
    expect(thinking('my-tuned-model', { reasoning_effort: 'none' })).toEqual({ thinkingBudget: 0, includeThoughts: false });
    expect(() => toGeminiRequest(req({ reasoning: { effort: 'toString' } }))).toThrow(/^reasoning\.effort must be one of/);
  });
});

describe('fromGeminiResponse', () => {
  it('maps text, thoughts, function calls (with ids and signatures) and usage', () => {
    const res = fromGeminiResponse(
      {
        responseId: 'r1',
        modelVersion: 'gemini-2.5-flash-001',
        candidates: [
          {
            index: 0,
            finishReason: 'STOP',
            content: {
              role: 'model',
              parts: [
                { text: 'thinking...', thought: true },
                { text: 'Calling ' },
                { text: 'tools.' },
                { functionCall: { name: 'weather', args: { city: 'Paris' } }, thoughtSignature: 'SIG' },
                { functionCall: { id: 'fc-2', name: 'time', args: {} } },
              ],
            },
          },
        ],
        usageMetadata: {
          promptTokenCount: 12,
          candidatesTokenCount: 20,
          thoughtsTokenCount: 28,
          cachedContentTokenCount: 4,
          totalTokenCount: 60,
        },
      },
      'gemini-2.5-flash',
      () => 'call_new',
    );
    expect(res).toMatchObject({ id: 'r1', object: 'chat.completion', model: 'gemini-2.5-flash-001' });
    expect(res.choices[0]).toEqual({
      index: 0,
      logprobs: null,
      finish_reason: 'tool_calls',
      message: {
        role: 'assistant',
        content: 'Calling tools.',
        reasoning_content: 'thinking...',
        tool_calls: [
          {
            id: 'call_new',
            type: 'function',
            function: { name: 'weather', arguments: '{"city":"Paris"}' },
            extra_content: { google: { thought_signature: 'SIG' } },
          },
          { id: 'fc-2', type: 'function', function: { name: 'time', arguments: '{}' } },
        ],
      },
    });
    expect(res.usage).toEqual({
      prompt_tokens: 12,
      completion_tokens: 48,
      total_tokens: 60,
      prompt_tokens_details: { cached_tokens: 4 },
      completion_tokens_details: { reasoning_tokens: 28 },
    });
  });

  it('answers a blocked prompt with an empty content_filter choice', () => {
    const res = fromGeminiResponse(
      { promptFeedback: { blockReason: 'SAFETY' }, usageMetadata: { promptTokenCount: 5, totalTokenCount: 5 } },
      'g',
    );
    expect(res.choices).toEqual([
      { index: 0, message: { role: 'assistant', content: '' }, finish_reason: 'content_filter', logprobs: null },
    ]);
  });

  it('gives a synthetic id the shape the request mapper recognises', () => {
    expect(syntheticToolCallId()).toMatch(/^call_[A-Za-z0-9]{24}$/);
  });
});

describe('finishReason', () => {
  it.each([
    ['STOP', false, 'stop'],
    ['STOP', true, 'tool_calls'],
    ['MAX_TOKENS', false, 'length'],
    ['SAFETY', false, 'content_filter'],
    ['RECITATION', false, 'content_filter'],
    ['PROHIBITED_CONTENT', false, 'content_filter'],
    ['IMAGE_PROHIBITED_CONTENT', false, 'content_filter'],
    ['SOMETHING_NEW', false, 'stop'],
    ['OTHER', true, 'tool_calls'],
    [undefined, false, null],
  ])('maps %s (tools called: %s) to %s', (reason, tools, expected) => {
    expect(finishReason(reason, tools)).toBe(expected);
  });
});

describe("OpenAI's deprecated function calling", () => {
  it('is refused with a 400 naming the field, not sent half-translated', () => {
    const base = { model: 'm', messages: [{ role: 'user', content: 'x' }] } as ChatRequest;
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ functions: [{ name: 'f', parameters: {} }] }, 'functions'],
      [{ function_call: 'auto' }, 'function_call'],
      [
        {
          messages: [
            { role: 'user', content: 'x' },
            { role: 'assistant', content: null, function_call: { name: 'f', arguments: '{}' } },
            { role: 'function', name: 'f', content: '{}' },
          ],
        },
        'messages[1]',
      ],
    ];
    for (const [extra, param] of cases) {
      let err: unknown;
      try {
        toGeminiRequest({ ...base, ...extra });
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ status: 400, param, code: 'unsupported_parameter', message: expect.stringContaining('tools') });
    }
  });
});

describe('logprobs', () => {
  const logprobsResult = {
    topCandidates: [
      {
        candidates: [
          { token: 'Hi', logProbability: -0.1 },
          { token: 'Hey', logProbability: -2.5 },
        ],
      },
      { candidates: [{ token: '!', logProbability: -0.2 }] },
    ],
    chosenCandidates: [
      { token: 'Hi', logProbability: -0.1 },
      { token: '!', logProbability: -0.2 },
    ],
  };
  const expected = {
    content: [
      {
        token: 'Hi',
        logprob: -0.1,
        bytes: [72, 105],
        top_logprobs: [
          { token: 'Hi', logprob: -0.1, bytes: [72, 105] },
          { token: 'Hey', logprob: -2.5, bytes: [72, 101, 121] },
        ],
      },
      { token: '!', logprob: -0.2, bytes: [33], top_logprobs: [{ token: '!', logprob: -0.2, bytes: [33] }] },
    ],
  };

  it("come back in OpenAI's shape, JSON and streamed", () => {
    const candidate = { content: { role: 'model', parts: [{ text: 'Hi!' }] }, finishReason: 'STOP', logprobsResult };
    expect(fromGeminiResponse({ candidates: [candidate] } as never, 'm').choices[0].logprobs).toEqual(expected);
    const chunks = new GeminiStreamTranslator('m').push({ candidates: [candidate] } as never);
    expect(chunks.find((c) => c.choices[0]?.delta.content === 'Hi!')!.choices[0].logprobs).toEqual(expected);
  });

  it('are null when Gemini sent none', () => {
    expect(
      fromGeminiResponse({ candidates: [{ content: { parts: [{ text: 'x' }] }, finishReason: 'STOP' }] }, 'm').choices[0].logprobs,
    ).toBeNull();
  });
});

describe('failed function calls and empty answers', () => {
  const malformed = {
    candidates: [
      { content: { role: 'model', parts: [] }, finishReason: 'MALFORMED_FUNCTION_CALL', finishMessage: 'Malformed function call: print(' },
    ],
  };
  it('fails an answer whose function call Gemini could not use, JSON or streamed, with its finishMessage', () => {
    for (const run of [() => fromGeminiResponse(malformed as never, 'm'), () => new GeminiStreamTranslator('m').push(malformed as never)]) {
      let err: unknown;
      try {
        run();
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({
        failure: 'protocol',
        status: 502,
        code: 'malformed_function_call',
        message: expect.stringContaining('print('),
      });
      expect(classifyFailure(err as UpstreamError)).toBe('broken');
      // The request's tools made the model fail: not the endpoint's fault.
      expect(countsAgainstEndpoint(err as UpstreamError)).toBe(false);
    }
  });

  it('fails after text too, in the same event or streamed before: the call the text announced is lost, the turn not done', () => {
    const withText = { candidates: [{ ...malformed.candidates[0], content: { role: 'model', parts: [{ text: 'I will call it now.' }] } }] };
    expect(() => fromGeminiResponse(withText as never, 'm')).toThrow(/function call could not be used/);
    const t = new GeminiStreamTranslator('m');
    t.push({ candidates: [{ content: { role: 'model', parts: [{ text: 'I will call it now.' }] } }] } as never);
    expect(() => t.push(malformed as never)).toThrow(/function call could not be used/);
    // A call that did come with it is the answer, in the same event or streamed before.
    const withCall = {
      candidates: [{ ...malformed.candidates[0], content: { role: 'model', parts: [{ functionCall: { name: 'f', args: {} } }] } }],
    };
    expect(fromGeminiResponse(withCall as never, 'm').choices[0].message.tool_calls).toHaveLength(1);
    const called = new GeminiStreamTranslator('m');
    called.push({ candidates: [{ content: { role: 'model', parts: [{ functionCall: { name: 'f', args: {} } }] } }] } as never);
    expect(() => called.push(malformed as never)).not.toThrow();
  });

  it('leaves another candidate (n > 1) that answered as the answer, this one an empty choice', () => {
    const two = {
      candidates: [
        { index: 0, content: { role: 'model', parts: [{ text: 'Answer A' }] }, finishReason: 'STOP' },
        { index: 1, content: { role: 'model', parts: [] }, finishReason: 'MALFORMED_FUNCTION_CALL' },
      ],
    };
    expect(fromGeminiResponse(two as never, 'm').choices.map((c) => c.message.content)).toEqual(['Answer A', '']);
    expect(() => new GeminiStreamTranslator('m').push(two as never)).not.toThrow();
  });

  it.each([
    ['MISSING_THOUGHT_SIGNATURE', /without its thought signature/],
    ['TOO_MANY_TOOL_CALLS', /more function calls than Gemini allows/],
    ['MALFORMED_RESPONSE', /could not complete/],
    ['OTHER', /without any content/],
    ['SOMETHING_NEW', /without any content/],
  ])('fails an answer that ended with %s and nothing to show, JSON or streamed, instead of billing an empty stop', (reason, message) => {
    const ended = { candidates: [{ index: 0, finishReason: reason }], usageMetadata: { promptTokenCount: 10, candidatesTokenCount: 1 } };
    for (const run of [() => fromGeminiResponse(ended, 'm'), () => new GeminiStreamTranslator('m').push(ended)]) {
      let err: unknown;
      try {
        run();
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ failure: 'protocol', status: 502, code: reason.toLowerCase(), message: expect.stringMatching(message) });
      expect(countsAgainstEndpoint(err as UpstreamError)).toBe(false);
    }
  });

  it('with n > 1, keeps the candidates that answered and makes an empty choice of one that failed', () => {
    const two = {
      candidates: [
        { index: 0, content: { role: 'model', parts: [{ text: 'fine' }] }, finishReason: 'STOP' },
        { index: 1, content: { role: 'model', parts: [] }, finishReason: 'OTHER' },
      ],
    };
    expect(fromGeminiResponse(two as never, 'm').choices.map((c) => [c.message.content, c.finish_reason])).toEqual([
      ['fine', 'stop'],
      ['', 'stop'],
    ]);
    const t = new GeminiStreamTranslator('m');
    expect(() => t.push(two as never)).not.toThrow();
  });

  it('keeps an empty answer that ended normally or was filtered, and text that ended with OTHER', () => {
    for (const [reason, finish] of [
      ['STOP', 'stop'],
      ['MAX_TOKENS', 'length'],
      ['IMAGE_RECITATION', 'content_filter'],
    ]) {
      const json = fromGeminiResponse({ candidates: [{ content: { role: 'model', parts: [] }, finishReason: reason }] } as never, 'm');
      expect(json.choices[0]).toMatchObject({ message: { content: '' }, finish_reason: finish });
    }
    const other = { candidates: [{ content: { role: 'model', parts: [{ text: 'Partly.' }] }, finishReason: 'OTHER' }] };
    expect(fromGeminiResponse(other as never, 'm').choices[0]).toMatchObject({ message: { content: 'Partly.' }, finish_reason: 'stop' });
    const t = new GeminiStreamTranslator('m');
    t.push({ candidates: [{ content: { role: 'model', parts: [{ text: 'Partly.' }] } }] } as never);
    expect(t.push({ candidates: [{ finishReason: 'OTHER' }] }).map((c) => c.choices[0]?.finish_reason)).toEqual(['stop']);
  });
});

describe('GeminiStreamTranslator', () => {
  it('turns SSE events into chunks: role first, text, whole function calls, finish, usage last', () => {
    const t = new GeminiStreamTranslator('gemini-x', () => 'call_x');
    const chunks: ChatChunk[] = [
      ...t.push({
        responseId: 'r',
        candidates: [{ index: 0, content: { role: 'model', parts: [{ text: 'Hel' }] } }],
        usageMetadata: { promptTokenCount: 4, candidatesTokenCount: 1 },
      }),
      ...t.push({
        responseId: 'r',
        candidates: [
          {
            index: 0,
            content: { role: 'model', parts: [{ text: 'lo' }, { functionCall: { name: 'f', args: { a: 1 } } }] },
            finishReason: 'STOP',
          },
        ],
        usageMetadata: { promptTokenCount: 4, candidatesTokenCount: 9, totalTokenCount: 13 },
      }),
    ];
    expect(t.complete).toBe(true);
    chunks.push(...t.end());
    expect(chunks.map((c) => c.choices[0]?.delta)).toEqual([
      { role: 'assistant', content: '' },
      { content: 'Hel' },
      { content: 'lo' },
      { tool_calls: [{ index: 0, id: 'call_x', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }] },
      {},
      undefined,
    ]);
    expect(chunks[4].choices[0].finish_reason).toBe('tool_calls');
    expect(chunks[5]).toMatchObject({ choices: [], usage: { prompt_tokens: 4, completion_tokens: 9, total_tokens: 13 } });
    expect(new Set(chunks.map((c) => c.id))).toEqual(new Set(['r']));
  });

  it('is incomplete until a finish reason arrives, and reports safety stops', () => {
    const t = new GeminiStreamTranslator('g');
    t.push({ candidates: [{ index: 0, content: { role: 'model', parts: [{ text: 'a' }] } }] });
    expect(t.complete).toBe(false);
    const out = t.push({ candidates: [{ index: 0, finishReason: 'SAFETY' }] });
    expect(out.at(-1)?.choices[0].finish_reason).toBe('content_filter');
    expect(t.complete).toBe(true);
  });

  it('keeps candidates apart by index', () => {
    const t = new GeminiStreamTranslator('g');
    const out = t.push({
      candidates: [
        { index: 0, content: { parts: [{ text: 'a' }] }, finishReason: 'STOP' },
        { index: 1, content: { parts: [{ text: 'b' }] }, finishReason: 'MAX_TOKENS' },
      ],
    });
    expect(out.filter((c) => c.choices[0].finish_reason).map((c) => [c.choices[0].index, c.choices[0].finish_reason])).toEqual([
      [0, 'stop'],
      [1, 'length'],
    ]);
  });

  it('treats a blocked prompt as a complete, filtered answer', () => {
    const t = new GeminiStreamTranslator('g');
    const out = t.push({ promptFeedback: { blockReason: 'SAFETY' } });
    expect(out[0].choices[0]).toMatchObject({ finish_reason: 'content_filter' });
    expect(t.complete).toBe(true);
  });
});

describe('geminiUsage', () => {
  it('counts thoughts as completion (reasoning) tokens and tool-use prompts as prompt tokens', () => {
    expect(
      geminiUsage({
        promptTokenCount: 10,
        toolUsePromptTokenCount: 2,
        candidatesTokenCount: 5,
        thoughtsTokenCount: 7,
        cachedContentTokenCount: 6,
      }),
    ).toEqual({
      prompt_tokens: 12,
      completion_tokens: 12,
      total_tokens: 24,
      prompt_tokens_details: { cached_tokens: 6 },
      completion_tokens_details: { reasoning_tokens: 7 },
    });
  });
});

describe('geminiHttpError', () => {
  it('makes an invalid API key (400 API_KEY_INVALID) a 401', () => {
    const text = JSON.stringify({
      error: {
        code: 400,
        message: 'API key not valid. Please pass a valid API key.',
        status: 'INVALID_ARGUMENT',
        details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com' }],
      },
    });
    expect(geminiHttpError(400, text, route, undefined)).toMatchObject({
      status: 502,
      upstreamStatus: 401,
      type: 'upstream_error',
      code: 'upstream_unauthorized',
      message: expect.stringContaining("refused the gateway's credentials for it (401): API key not valid"),
      retryable: false,
    });
  });

  it("turns RESOURCE_EXHAUSTED's RetryInfo into Retry-After", () => {
    const text = JSON.stringify([
      {
        error: {
          code: 429,
          message: 'quota',
          status: 'RESOURCE_EXHAUSTED',
          details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '57.238747106s' }],
        },
      },
    ]);
    const err = geminiHttpError(429, text, route, undefined);
    expect(err).toMatchObject({ status: 429, type: 'rate_limit_error', code: 'RESOURCE_EXHAUSTED', retryAfterMs: 57239, retryable: true });
    expect(err.headers).toEqual({ 'retry-after': '58' });
  });

  it.each([
    [400, 'INVALID_ARGUMENT', 400, false],
    [403, 'PERMISSION_DENIED', 403, false],
    [404, 'NOT_FOUND', 404, false],
    [500, 'INTERNAL', 502, true],
    [503, 'UNAVAILABLE', 503, true],
    [504, 'DEADLINE_EXCEEDED', 502, true],
  ])('maps %d %s to %d (retryable %s)', (code, status, out, retryable) => {
    const err = geminiHttpError(code, JSON.stringify({ error: { code, message: 'why', status } }), route, undefined);
    expect(err).toMatchObject({ status: out, retryable });
    if (out < 500) expect(err).toMatchObject({ message: 'why', code: status });
  });

  it('makes a 400 FAILED_PRECONDITION (region, billing) a 403, so that the next route is tried', () => {
    const text = JSON.stringify({
      error: { code: 400, message: 'User location is not supported for the API use.', status: 'FAILED_PRECONDITION' },
    });
    const err = geminiHttpError(400, text, route, undefined);
    expect(err).toMatchObject({ status: 403, message: 'User location is not supported for the API use.', code: 'FAILED_PRECONDITION' });
    expect(classifyFailure(err)).toBe('route');
  });

  it('parses protobuf durations', () => {
    expect(durationMs('12s')).toBe(12000);
    expect(durationMs('0.5s')).toBe(500);
    expect(durationMs('soon')).toBeUndefined();
  });
});

describe('embeddings', () => {
  it('asks batchEmbedContents for every input, with dimensions and task type', () => {
    expect(
      toGeminiEmbedRequest({ model: 'pub', input: ['a', 'b'], dimensions: 256 }, 'gemini-embedding-001', 'RETRIEVAL_DOCUMENT'),
    ).toEqual({
      requests: [
        {
          model: 'models/gemini-embedding-001',
          content: { parts: [{ text: 'a' }] },
          outputDimensionality: 256,
          taskType: 'RETRIEVAL_DOCUMENT',
        },
        {
          model: 'models/gemini-embedding-001',
          content: { parts: [{ text: 'b' }] },
          outputDimensionality: 256,
          taskType: 'RETRIEVAL_DOCUMENT',
        },
      ],
    });
    expect(refused(() => toGeminiEmbedRequest({ model: 'pub', input: [1, 2] }, 'm'))).toMatchObject({ status: 400, param: 'input' });
  });

  it("answers in OpenAI's shape", () => {
    expect(fromGeminiEmbedResponse({ embeddings: [{ values: [1, 2] }, { values: [3] }] }, 'm')).toEqual({
      object: 'list',
      model: 'm',
      data: [
        { object: 'embedding', index: 0, embedding: [1, 2] },
        { object: 'embedding', index: 1, embedding: [3] },
      ],
    });
  });

  it('writes model paths the way the API names models', () => {
    expect(geminiModelPath('gemini-2.5-flash')).toBe('models/gemini-2.5-flash');
    expect(geminiModelPath('tunedModels/my-model')).toBe('tunedModels/my-model');
  });
});
