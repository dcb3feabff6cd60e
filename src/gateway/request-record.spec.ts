import type { Execution } from '../routing/route-executor.service';
import { RequestRecord } from './request-record';

describe('RequestRecord.tokens', () => {
  /** A client that left while `accepted`'s upstream worked on the call. */
  const left = (setUp: (rec: RequestRecord) => void) => {
    const rec = new RequestRecord('r1', 0);
    rec.execution = { accepted: { route: {}, model: {} } } as unknown as Execution;
    setUp(rec);
    rec.fail(499, 'the client closed the request', 'client_closed_request');
    return rec.tokens();
  };

  it("bills a left call's prompt as estimated: from the chat request, or the estimate given (embeddings)", () => {
    expect(
      left((rec) => (rec.request = { model: 'm', messages: [{ role: 'user', content: 'one two three four five six seven eight' }] })),
    ).toMatchObject({ counts: { prompt: expect.any(Number), completion: 0 }, estimated: true });
    expect(left((rec) => (rec.promptEstimate = 42))).toEqual({
      counts: { prompt: 42, completion: 0, cachedRead: 0, cacheWrite: 0, reasoning: 0 },
      estimated: true,
    });
    expect(left(() => undefined).counts.prompt).toBe(0);
  });

  it('estimates output a usage left uncounted, except the prompt a legacy completion echoed (lm-eval scoring)', () => {
    const answered = (echoed: boolean) => {
      const rec = new RequestRecord('r2', 0);
      rec.usage = { prompt_tokens: 50, completion_tokens: 0, total_tokens: 50 };
      rec.deliveredUnits = 136;
      rec.echoed = echoed;
      rec.status = 200;
      return rec;
    };
    expect(answered(false).tokens()).toMatchObject({ counts: { prompt: 50, completion: 34 }, estimated: true });
    expect(answered(true).tokens()).toMatchObject({ counts: { prompt: 50, completion: 0 }, estimated: false });
    expect(answered(true).presentedUsage()).toEqual({ prompt_tokens: 50, completion_tokens: 0, total_tokens: 50 });
  });
});

describe('RequestRecord.openChoices', () => {
  it('names the choices sent and not finished, else choice 0', () => {
    const rec = new RequestRecord('r', 0);
    expect(rec.openChoices()).toEqual([0]); // nothing sent yet
    rec.sentChoice(0, false);
    rec.sentChoice(1, false);
    rec.sentChoice(0, true);
    expect(rec.openChoices()).toEqual([1]);
    // All finished, and the upstream failed after all: choice 0, never a chunk without choices.
    rec.sentChoice(1, true);
    expect(rec.openChoices()).toEqual([0]);
  });
});
