import { testRoute } from '../helpers/route';
import { KeyPool } from '../../src/adapters/http/key-pool.service';
import { UpstreamClient } from '../../src/adapters/http/upstream-client.service';
import { OpenAiCompatAdapter } from '../../src/adapters/openai-compat/openai-compat.adapter';
import { AppConfig } from '../../src/config/app-config';
import { validateEnv } from '../../src/config/env.schema';
import type { RouteDef } from '../../src/config/registry.types';
import { OpenAiUpstream } from '../fixtures/openai-upstream';

/** The openai_compat adapter against the stand-in, without the gateway around it. */
describe('openai_compat adapter', () => {
  const upstream = new OpenAiUpstream();
  let base: string;
  const config = new AppConfig(validateEnv({}));
  const http = new UpstreamClient(config);
  const adapter = new OpenAiCompatAdapter(http, new KeyPool());
  const route = (providerModelId: string): RouteDef =>
    testRoute({ id: 'standin', kind: 'vllm', baseUrl: base, providerModelId, locality: 'local' });
  const ctx = (signal = new AbortController().signal) => ({
    requestId: 'r1',
    signal,
    timeouts: config.upstreamTimeouts,
    publicModel: 'm',
    served: {},
  });

  beforeAll(async () => {
    base = await upstream.start();
  });
  afterAll(async () => {
    await http.onApplicationShutdown();
    await upstream.stop();
  });

  it('stops a stream it leaves early without an unhandled error, and the upstream sees the abort', async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    try {
      const stream = adapter.stream(
        { model: 'm', messages: [{ role: 'user', content: 'one two three four five six' }] },
        route('slow-tokens:50'),
        ctx(),
      );
      const it = stream[Symbol.asyncIterator]();
      await it.next();
      await it.next();
      await it.return?.(undefined);
      await upstream.waitForAborts(1);
      await new Promise((r) => setTimeout(r, 50));
      expect(uncaught).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });

  it("keeps a base URL's query (a key in ?code=) on calls and on vLLM's /health probe", async () => {
    upstream.reset();
    const keyed = testRoute({ id: 'keyed', kind: 'vllm', baseUrl: `${base}?code=k-123`, providerModelId: 'ok', locality: 'local' });
    await adapter.complete({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }, keyed, ctx());
    expect((await adapter.probe(keyed, new AbortController().signal)).ok).toBe(true);
    expect(upstream.requests.map((r) => r.url)).toEqual(['/v1/chat/completions?code=k-123', '/health?code=k-123']);
  });

  it('sends a text completion as chat to a server without /completions (it answers 404 for the path)', async () => {
    upstream.reset();
    const answer = await adapter.completeText({ model: 'm', prompt: 'one two' }, route('ok'), ctx());
    expect(answer.choices[0].message.content).toBe('echo: one two');
    const streamed: string[] = [];
    for await (const c of adapter.streamText({ model: 'm', prompt: 'three', stream: true }, route('ok'), ctx()))
      for (const choice of c.choices) streamed.push(choice.delta.content ?? '');
    expect(streamed.join('')).toBe('echo: three');
    expect(upstream.requests.map((r) => r.url)).toEqual([
      '/v1/completions',
      '/v1/chat/completions',
      '/v1/completions',
      '/v1/chat/completions',
    ]);
    // Several prompts cannot be one chat request: a 400 naming the parameter, with the server's
    // own words (its 404 may have been about the model).
    await expect(adapter.completeText({ model: 'm', prompt: ['a', 'b'] }, route('ok'), ctx())).rejects.toMatchObject({
      status: 400,
      param: 'prompt',
      code: 'unsupported_parameter',
      message: expect.stringMatching(/single text prompt.*\(the server answered 404 for \/completions: /),
    });
  });

  it('treats a stream that ends after its finish reason but without [DONE] as complete', async () => {
    const chunks = [];
    for await (const c of adapter.stream({ model: 'm', messages: [{ role: 'user', content: 'a b' }] }, route('no-done'), ctx()))
      chunks.push(c);
    expect(chunks.some((c) => c.choices[0]?.finish_reason === 'stop')).toBe(true);
  });

  it('judges an answer of n choices complete only when every one has finished', async () => {
    const collect = async (model: string) => {
      const chunks = [];
      for await (const c of adapter.stream({ model: 'm', n: 2, messages: [{ role: 'user', content: 'a b' }] }, route(model), ctx()))
        chunks.push(c);
      return chunks;
    };
    // The body ends with the second choice unfinished: a stream cut short, not a complete answer.
    await expect(collect('n-cut')).rejects.toMatchObject({
      message: expect.stringMatching(/ended the stream before the answer was complete/),
    });
    // The first choice finished with the usage, the second comes after a silence longer than
    // the grace after an answer: still waited for, since two were asked for.
    const chunks = await collect('n-late:1500');
    const finished = chunks.flatMap((c) => c.choices.filter((x) => x.finish_reason).map((x) => x.index));
    expect(finished.sort()).toEqual([0, 1]);
  });

  it('ends an answer of one choice to n = 2 from a server that ignores n and then goes silent, after a longer grace', async () => {
    const started = Date.now();
    const chunks = [];
    for await (const c of adapter.stream(
      { model: 'm', n: 2, messages: [{ role: 'user', content: 'a b' }], stream_options: { include_usage: true } },
      route('silent-after-usage'),
      ctx(),
    ))
      chunks.push(c);
    expect(chunks.some((c) => c.choices[0]?.finish_reason === 'stop')).toBe(true);
    // Neither the one-second grace of a whole answer nor the idle deadline (60 s): five seconds.
    expect(Date.now() - started).toBeGreaterThanOrEqual(4500);
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 20_000);

  it('ends a choice that [DONE] left without a finish reason as stopped', async () => {
    const chunks = [];
    for await (const c of adapter.stream(
      { model: 'm', messages: [{ role: 'user', content: 'a b' }], stream_options: { include_usage: true } },
      route('no-finish'),
      ctx(),
    ))
      chunks.push(c);
    expect(chunks.map((c) => c.choices.map((x) => x.delta.content ?? '').join('')).join('')).toBe('echo: a b');
    const last = chunks[chunks.length - 1];
    expect(last.choices).toEqual([{ index: 0, delta: {}, finish_reason: 'stop' }]);
    expect(last.usage).toBeUndefined();
    expect(chunks.some((c) => c.usage)).toBe(true); // the usage chunk came, before [DONE]
  });

  it('takes the usage from a usage chunk that has no choices key', async () => {
    const chunks = [];
    for await (const c of adapter.stream(
      { model: 'm', messages: [{ role: 'user', content: 'a b' }], stream_options: { include_usage: true } },
      route('usage-no-choices'),
      ctx(),
    ))
      chunks.push(c);
    const last = chunks[chunks.length - 1];
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ prompt_tokens: expect.any(Number), completion_tokens: expect.any(Number) });
  });

  it('skips stream events with no data, as a client would have to', async () => {
    let text = '';
    for await (const c of adapter.stream(
      { model: 'm', messages: [{ role: 'user', content: 'one two three four' }] },
      route('empty-data'),
      ctx(),
    ))
      text += c.choices[0]?.delta.content ?? '';
    expect(text).toBe('echo: one two three four');
  });

  it.each([
    ['truncated', /ended the stream before the answer was complete/],
    ['malformed', /malformed stream event/],
    ['mid-error', /failed mid-stream: The model crashed mid-answer/],
    ['null-event', /sent a stream event that is not a JSON object \(null\)/],
    // Not read as no choices (the text in them lost, the answer "finished" by the gateway).
    ['choices-object', /cannot read \(choices is not a list\)/],
    ['bad-index', /cannot read \(choices\[0\]\.index is not a choice number\)/],
    // An `event: error` says why, in whatever shape: not lost as a chunk without choices.
    ['named-error', /failed mid-stream: the model server ran out of memory/],
  ])('fails a %s stream with a typed error', async (scenario, message) => {
    const run = async () => {
      for await (const _ of adapter.stream(
        { model: 'm', messages: [{ role: 'user', content: 'one two three four' }] },
        route(scenario),
        ctx(),
      ))
        void _;
    };
    await expect(run()).rejects.toMatchObject({ message: expect.stringMatching(message) });
  });
});
