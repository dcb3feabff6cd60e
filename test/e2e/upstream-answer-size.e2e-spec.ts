import type { ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import { StandIn, type SeenRequest } from '../fixtures/standin';
import { rawPost, startGateway, type TestGateway } from '../helpers/gateway';

/**
 * A server that answers a call that does not stream with more than UPSTREAM_BODY_LIMIT (64kb
 * here), or with something that is no JSON answer at all, chosen by the model name the gateway
 * sends. What the gateway owes its client: a 502 that says what the upstream did, the next route
 * when there is one, and one api_logs row; and for an oversized answer, the upstream's connection
 * cut rather than the whole answer read into memory.
 */
class OddAnswers extends StandIn {
  /** Per oversized answer sent: whether it was written to the end or cut off by the gateway. */
  readonly bigAnswers: Array<Promise<'finished' | 'cut'>> = [];

  async start(): Promise<string> {
    return `${await this.listen()}/v1`;
  }

  protected route(req: SeenRequest, res: ServerResponse): void {
    const model = String(req.body.model);
    const anthropic = req.path === '/v1/messages';
    if (req.path === '/v1/embeddings') return this.embeddings(model, req, res);
    switch (model) {
      case 'big':
        return this.big(res, anthropic);
      case 'big-declared':
        // Announces 1 MB, sends a little, then nothing: only its content-length says it is too large.
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(1024 * 1024) });
        res.write(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"`);
        return;
      case 'redirect':
        // The usual one: the route's base_url says http where the server wants https.
        res.writeHead(301, { location: `https://${req.headers.host}${req.url}`, 'content-type': 'text/html' });
        res.end('<html><body>Moved</body></html>');
        return;
      case 'redirect-away':
        res.writeHead(302, { location: 'https://login.example.com/sso?next=/v1/chat/completions', 'content-type': 'text/html' });
        res.end('<html><body>Sign in</body></html>');
        return;
      case 'html':
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end('<!DOCTYPE html><html><head><title>Sign in</title></head><body>Sign in to continue</body></html>');
        return;
      case 'gzip':
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
        res.end(gzipSync(JSON.stringify(chatAnswer('hello'))));
        return;
      case 'json-as-text':
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(JSON.stringify(chatAnswer('hello')));
        return;
      default:
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(anthropic ? messageAnswer('hello') : chatAnswer('hello')));
    }
  }

  /**
   * Floats whatever the encoding asked for (as servers that ignore encoding_format do): 1,024
   * dimensions an input from `embed-big`, some 21 KB of JSON each, so four inputs are over the
   * 64kb cap; 3 from any other.
   */
  private embeddings(model: string, req: SeenRequest, res: ServerResponse): void {
    const inputs = Array.isArray(req.body.input) ? req.body.input.length : 1;
    const vector = Array.from({ length: model === 'embed-big' ? 1024 : 3 }, (_, i) => Math.fround(Math.sin(i + 1) / 32));
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        object: 'list',
        model,
        data: Array.from({ length: inputs }, (_, index) => ({ object: 'embedding', index, embedding: vector })),
        usage: { prompt_tokens: inputs, total_tokens: inputs },
      }),
    );
  }

  /**
   * A sound answer of 32 MB, written chunk by chunk as the connection takes it (no
   * content-length), so only counting what arrives catches it; far more than the socket buffers
   * hold, so an answer the gateway stops reading is never written to the end.
   */
  private big(res: ServerResponse, anthropic: boolean): void {
    const [head, tail] = JSON.stringify(anthropic ? messageAnswer('@') : chatAnswer('@')).split('@');
    const filler = Buffer.alloc(64 * 1024, 'x');
    let left = 512;
    this.bigAnswers.push(
      new Promise((resolve) => {
        res.on('finish', () => resolve('finished'));
        res.on('close', () => resolve(res.writableFinished ? 'finished' : 'cut'));
      }),
    );
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write(head);
    const more = () => {
      while (left > 0 && !res.destroyed) {
        left--;
        if (!res.write(filler)) return void res.once('drain', more);
      }
      if (!res.destroyed) res.end(tail);
    };
    more();
  }
}

const chatAnswer = (content: string) => ({
  id: 'chatcmpl-1',
  object: 'chat.completion',
  created: 1,
  model: 'x',
  choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
});

const messageAnswer = (text: string) => ({
  id: 'msg_1',
  type: 'message',
  role: 'assistant',
  model: 'x',
  content: [{ type: 'text', text }],
  stop_reason: 'end_turn',
  stop_sequence: null,
  usage: { input_tokens: 3, output_tokens: 1 },
});

const model = (id: string, routes: string[], kind = 'vllm') => `
  - id: ${id}
    context_length: 8192
    router: priority
    pricing: { prompt: 1, completion: 1 }
    route:
${routes.map((r) => `      - { kind: ${kind}, id: ${r}, base_url: "{URL}", provider_model_id: ${r}, api_key: sk-route-0123456789 }`).join('\n')}`;

const MODELS =
  'models:' +
  [
    model('t/big', ['big']),
    model('t/big-declared', ['big-declared']),
    model('t/big-then-ok', ['big', 'ok']),
    model('t/redirect', ['redirect']),
    model('t/redirect-away', ['redirect-away']),
    model('t/html', ['html']),
    model('t/gzip', ['gzip']),
    model('t/json-as-text', ['json-as-text']),
    model('claude/big', ['big'], 'anthropic'),
    model('emb/big-then-ok', ['embed-big', 'embed-ok']).replace('context_length', 'type: embedding\n    context_length'),
  ].join('');

type OpenAiError = { error: { message: string; type: string; param: string | null; code: string | null } };

describe('an upstream answer too large to read whole, or no JSON answer at all', () => {
  const upstream = new OddAnswers();
  let gw: TestGateway;

  beforeAll(async () => {
    const url = await upstream.start();
    gw = await startGateway({
      models: MODELS.replaceAll('{URL}', url),
      // Short body deadlines: without the cap, an answer that announces more than it sends would
      // hold the request this long instead of failing at once.
      env: { UPSTREAM_BODY_LIMIT: '64kb', UPSTREAM_IDLE_TIMEOUT_MS: '2000', UPSTREAM_FIRST_TOKEN_TIMEOUT_MS: '2000' },
    });
  });
  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
  });

  const chat = (m: string, extra: Record<string, unknown> = {}) =>
    rawPost(`${gw.url}/v1/chat/completions`, { model: m, messages: [{ role: 'user', content: 'hi' }], ...extra });
  /** The rows written since `before` rows were there: this request's. */
  const newRows = async (before: number) => (await gw.rows()).slice(before);

  it('answers 502 upstream_too_large naming the route and the cap, cuts the connection, and logs one row', async () => {
    const before = (await gw.rows()).length;
    const res = await chat('t/big');
    expect(res.status).toBe(502);
    expect(JSON.parse(res.text)).toEqual({
      error: {
        message: 'upstream big answered more than 64kb (UPSTREAM_BODY_LIMIT)',
        type: 'upstream_error',
        param: null,
        code: 'upstream_too_large',
      },
    });
    await expect(upstream.bigAnswers.at(-1)).resolves.toBe('cut');
    const rows = await newRows(before);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ status_code: 502, error_code: 'upstream_too_large' });
  });

  it('refuses an answer whose content-length is over the cap before reading it', async () => {
    const before = (await gw.rows()).length;
    const res = await chat('t/big-declared');
    expect(res.status).toBe(502);
    expect((JSON.parse(res.text) as OpenAiError).error).toMatchObject({
      code: 'upstream_too_large',
      message: expect.stringContaining('upstream big-declared answered more than 64kb'),
    });
    expect(await newRows(before)).toEqual([expect.objectContaining({ status_code: 502, error_code: 'upstream_too_large' })]);
  });

  it('tries the next route after an oversized answer', async () => {
    const before = (await gw.rows()).length;
    const res = await chat('t/big-then-ok');
    expect(res.status).toBe(200);
    expect(res.text.length).toBeLessThan(4096); // the second route's answer, not the first's 32 MB
    expect((JSON.parse(res.text) as { choices: Array<{ message: { content: string } }> }).choices[0].message.content).toBe('hello');
    const rows = await newRows(before);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ status_code: 200, endpoint: 'ok' });
    expect((rows[0].metadata as { attempts: Array<{ route: string; outcome: string }> }).attempts).toEqual([
      expect.objectContaining({ route: 'big', outcome: 'error' }),
      expect.objectContaining({ route: 'ok', outcome: 'ok' }),
    ]);
  });

  it('answers an embeddings request whose answer is over the cap at once, without trying the next route', async () => {
    // The size is the request's (inputs × dimensions): every route would compute, bill and
    // answer the same, so the next one is never asked and the client hears how to get it.
    const before = (await gw.rows()).length;
    const calls = () => upstream.requests.filter((r) => r.path === '/v1/embeddings').map((r) => r.body.model);
    const seen = calls().length;
    const input = ['a', 'b', 'c', 'd', 'e', 'f'];
    const res = await rawPost(`${gw.url}/v1/embeddings`, { model: 'emb/big-then-ok', input });
    expect(res.status).toBe(502);
    expect(JSON.parse(res.text)).toEqual({
      error: {
        message:
          'upstream embed-big answered more than 64kb (UPSTREAM_BODY_LIMIT): the embeddings asked for are that large on every route, ' +
          'so no other was tried. To get them, send fewer inputs per request, ask for encoding_format "base64" (under half the ' +
          "size) or raise the gateway's UPSTREAM_BODY_LIMIT",
        type: 'upstream_error',
        param: null,
        code: 'upstream_too_large',
      },
    });
    expect(calls().slice(seen)).toEqual(['embed-big']); // no retry, and embed-ok never called
    const rows = await newRows(before);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ model: 'emb/big-then-ok', status_code: 502, error_code: 'upstream_too_large' });
    expect(rows[0].error).toContain('so no other was tried');
    expect((rows[0].metadata as { attempts: Array<{ route: string; outcome: string }> }).attempts).toEqual([
      expect.objectContaining({ route: 'embed-big', outcome: 'error' }),
    ]);

    // Already base64 (this upstream ignores it and sends floats): that way is not offered again.
    const b64 = await rawPost(`${gw.url}/v1/embeddings`, { model: 'emb/big-then-ok', input, encoding_format: 'base64' });
    expect(b64.status).toBe(502);
    expect((JSON.parse(b64.text) as OpenAiError).error.message).toMatch(
      /To get them, send fewer inputs per request or raise the gateway's UPSTREAM_BODY_LIMIT$/,
    );
    expect(calls().slice(seen)).toEqual(['embed-big', 'embed-big']);

    // A request whose answer fits is served by the same route.
    const small = await rawPost(`${gw.url}/v1/embeddings`, { model: 'emb/big-then-ok', input: ['a'] });
    expect(small.status).toBe(200);
    expect(calls().slice(seen)).toEqual(['embed-big', 'embed-big', 'embed-big']);
  });

  it("caps a Messages answer relayed as it came, in Anthropic's error shape", async () => {
    const before = (await gw.rows()).length;
    const res = await rawPost(`${gw.url}/anthropic/v1/messages`, {
      model: 'claude/big',
      max_tokens: 10,
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(res.status).toBe(502);
    expect(JSON.parse(res.text)).toMatchObject({
      type: 'error',
      error: { type: 'api_error', message: 'upstream big answered more than 64kb (UPSTREAM_BODY_LIMIT)' },
    });
    await expect(upstream.bigAnswers.at(-1)).resolves.toBe('cut');
    expect(await newRows(before)).toEqual([expect.objectContaining({ status_code: 502, error_code: 'upstream_too_large' })]);
  });

  it.each([
    ['a redirect to https', 't/redirect', {}, "upstream redirect answered 301 (a redirect to https: the route's base_url should use it)"],
    [
      'a redirect elsewhere, to a stream',
      't/redirect-away',
      { stream: true },
      'upstream redirect-away answered 302 (a redirect to another host)',
    ],
    ['an HTML page', 't/html', {}, 'upstream html answered text/html, not JSON'],
    ['a compressed body it did not ask for', 't/gzip', {}, 'upstream gzip answered gzip-encoded, which the gateway did not ask for'],
  ])('says what the upstream sent when it is %s', async (_what, m, extra, message) => {
    const before = (await gw.rows()).length;
    const res = await chat(m, extra);
    expect(res.status).toBe(502);
    const { error } = JSON.parse(res.text) as OpenAiError;
    expect(error).toMatchObject({ type: 'upstream_error', code: 'upstream_protocol' });
    expect(error.message).toContain(message);
    expect(error.message).not.toContain('127.0.0.1'); // a redirect names no upstream address
    expect(await newRows(before)).toEqual([expect.objectContaining({ status_code: 502, error_code: 'upstream_protocol' })]);
  });

  it('reads JSON sent with another content type as the answer it is', async () => {
    const res = await chat('t/json-as-text');
    expect(res.status).toBe(200);
    expect((JSON.parse(res.text) as { choices: Array<{ message: { content: string } }> }).choices[0].message.content).toBe('hello');
  });
});
