import type { ChatChunk } from '../common/chat.types';
import { RequestRecord } from './request-record';
import { StreamUsage } from './stream-usage';

const chunk = (choices: ChatChunk['choices'], usage?: ChatChunk['usage']): ChatChunk => ({
  id: 'c',
  object: 'chat.completion.chunk',
  created: 1,
  model: 'm',
  choices,
  usage,
});
const usage = (prompt: number, completion: number) => ({
  prompt_tokens: prompt,
  completion_tokens: completion,
  total_tokens: prompt + completion,
});

/** A request that asks for the usage chunk. */
const ASKED = { stream_options: { include_usage: true } };

describe('StreamUsage', () => {
  it("holds the upstream's usage-only chunk back for the end and records its usage", () => {
    const rec = new RequestRecord('r', 0);
    const u = new StreamUsage(ASKED, rec);
    const content = chunk([{ index: 0, delta: { content: 'hi' }, finish_reason: null }]);
    expect(u.take(content)).toBe(true);
    expect(content.usage).toBeNull();
    expect(u.take(chunk([], usage(3, 2)))).toBe(false);
    expect(u.held?.usage).toEqual(usage(3, 2));
    expect(u.final(() => 99)).toEqual(usage(3, 2));
  });

  it('relays no other chunk without choices: one with no usage, or with usage it cannot use', () => {
    for (const asked of [ASKED, {}]) {
      const rec = new RequestRecord('r', 0);
      const u = new StreamUsage(asked, rec);
      // Azure's first chunk: prompt filter results, no choices.
      expect(u.take({ ...chunk([]), prompt_filter_results: [] })).toBe(false);
      expect(u.take(chunk([], { prompt_tokens: -1, completion_tokens: 'x' } as never))).toBe(false);
      expect(u.held).toBeUndefined();
      expect(rec.usage).toBeUndefined();
    }
  });

  it('takes a figure on a content chunk as exact when nothing followed it, else adds an estimate of what did', () => {
    const run = (status: number) => {
      const rec = new RequestRecord('r', 0);
      const u = new StreamUsage({}, rec);
      const first = chunk([{ index: 0, delta: { content: 'abcd' }, finish_reason: null }], usage(7, 1));
      u.take(first);
      rec.deliveredUnits += 4;
      u.take(chunk([{ index: 0, delta: { content: '12345678' }, finish_reason: null }]));
      rec.deliveredUnits += 8;
      rec.status = status;
      return rec.tokens();
    };
    // The 8 characters after the figure are about 2 tokens more.
    expect(run(502)).toEqual({ counts: expect.objectContaining({ prompt: 7, completion: 3 }), estimated: true });
    // Content after the figure, even in a stream that ended well: the figure was not the last word.
    expect(run(200)).toEqual({ counts: expect.objectContaining({ prompt: 7, completion: 3 }), estimated: true });
    const rec = new RequestRecord('r', 0);
    const u = new StreamUsage({}, rec);
    rec.deliveredUnits = 4;
    u.take(chunk([{ index: 0, delta: { content: 'abcd' }, finish_reason: 'stop' }], usage(7, 1)));
    rec.deliveredUnits += 4;
    expect(rec.tokens()).toEqual({ counts: expect.objectContaining({ prompt: 7, completion: 1 }), estimated: false });
  });

  it('estimates all delivered output when the running figure counted none of it', () => {
    const rec = new RequestRecord('r', 0);
    const u = new StreamUsage({}, rec);
    u.take(chunk([{ index: 0, delta: { content: 'Hello world fr' }, finish_reason: null }], usage(7, 0)));
    rec.deliveredUnits += 14;
    rec.status = 499;
    expect(rec.tokens()).toEqual({ counts: expect.objectContaining({ prompt: 7, completion: 4 }), estimated: true });
  });

  it('shows the client the output count it is billed on, where the figure it had was not the last word', () => {
    // A running figure (vLLM's continuous usage on the first content chunk), then more content.
    const rec = new RequestRecord('r', 0);
    const u = new StreamUsage(ASKED, rec);
    u.take(chunk([{ index: 0, delta: { content: 'abcd' }, finish_reason: null }], usage(7, 1)));
    rec.deliveredUnits += 4;
    u.take(chunk([{ index: 0, delta: { content: '12345678' }, finish_reason: 'stop' }]));
    rec.deliveredUnits += 8;
    rec.status = 200;
    expect(rec.tokens().counts.completion).toBe(3);
    expect(u.final(() => 99)).toEqual(usage(7, 3));
    // A last usage that counts no output although some came (Gemini's prompt-only figure sent again at the end).
    const gem = new RequestRecord('r', 0);
    const g = new StreamUsage(ASKED, gem);
    g.take(chunk([{ index: 0, delta: { content: 'Hello world fr' }, finish_reason: 'stop' }]));
    gem.deliveredUnits += 14;
    expect(g.take(chunk([], usage(5, 0)))).toBe(false);
    gem.status = 200;
    expect(gem.tokens()).toEqual({ counts: expect.objectContaining({ prompt: 5, completion: 4 }), estimated: true });
    expect(g.final(() => 99)).toEqual(usage(5, 4));
  });

  it("counts a legacy completion chunk's text as delivered with the running figure", () => {
    const rec = new RequestRecord('r', 0);
    const u = new StreamUsage({}, rec);
    u.take({ ...chunk([]), choices: [{ index: 0, text: 'abcd', finish_reason: null }] as never, usage: usage(7, 1) });
    rec.deliveredUnits += 4;
    rec.status = 502;
    expect(rec.tokens()).toEqual({ counts: expect.objectContaining({ prompt: 7, completion: 1 }), estimated: true });
  });

  it('drops usage with counts out of range, whichever backend sent it, and ends with the estimate', () => {
    const rec = new RequestRecord('r', 0);
    rec.deliveredUnits = 8;
    const u = new StreamUsage(ASKED, rec);
    expect(u.take(chunk([], usage(1e300, 2)))).toBe(false);
    const finish = chunk([{ index: 0, delta: {}, finish_reason: 'stop' }], usage(-1, 5));
    expect(u.take(finish)).toBe(true);
    expect(finish.usage).toBeNull();
    expect(u.held).toBeUndefined();
    expect(rec.usage).toBeUndefined();
    expect(u.final(() => 7)).toEqual(usage(7, 2));
  });
});

describe('StreamUsage.wanted', () => {
  it("takes stream_options.include_usage and OpenRouter's usage: {include: true}, on chat and completions alike", () => {
    const rec = {} as RequestRecord;
    expect(new StreamUsage(ASKED, rec).wanted).toBe(true);
    expect(new StreamUsage({ usage: { include: true } }, rec).wanted).toBe(true);
    expect(new StreamUsage({ usage: { include: false }, stream_options: null }, rec).wanted).toBe(false);
    expect(new StreamUsage({}, rec).wanted).toBe(false);
  });
});
