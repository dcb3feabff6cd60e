import { createVerify, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { APIError } from 'openai';
import { UpstreamClient } from '../../src/adapters/http/upstream-client.service';
import { GoogleTokenSource, loadServiceAccount } from '../../src/adapters/vertex-claude/google-auth';
import { AppConfig } from '../../src/config/app-config';
import { validateEnv } from '../../src/config/env.schema';
import { VertexUpstream } from '../fixtures/vertex-upstream';
import { rawPost } from '../helpers/gateway';
import { startGateway, type TestGateway } from '../helpers/gateway';

/**
 * kind: vertex_claude end to end: a service account (with an RSA key made for this test) signs a
 * JWT, a stand-in token endpoint checks it and issues access tokens, and a Vertex stand-in serves
 * rawPredict / streamRawPredict.
 */
const EMAIL = 'gateway@test-proj.iam.gserviceaccount.com';

describe('vertex_claude adapter', () => {
  const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const upstream = new VertexUpstream(keys.publicKey, EMAIL);
  const dir = mkdtempSync(join(tmpdir(), 'hi-vertex-'));
  let base: string;
  let gw: TestGateway;
  let client: OpenAI;

  const writeAccount = (name: string, key: typeof keys.privateKey) => {
    const file = join(dir, name);
    const json = {
      type: 'service_account',
      project_id: 'test-proj',
      private_key_id: 'k1',
      private_key: key.export({ type: 'pkcs8', format: 'pem' }).toString(),
      client_email: EMAIL,
      client_id: '1',
      token_uri: upstream.tokenUri,
    };
    writeFileSync(file, JSON.stringify(json));
    return file;
  };

  beforeAll(async () => {
    base = await upstream.start();
    const good = writeAccount('sa.json', keys.privateKey);
    const wrong = writeAccount('wrong.json', stranger.privateKey);
    const models = `
models:
  - id: vertex/sonnet
    context_length: 200000
    pricing: { prompt: 3, completion: 15 }
    route:
      - { kind: vertex_claude, base_url: "${base}", region: us-east5, credentials: "${good}", provider_model_id: "ok" }
  - id: vertex/beta
    context_length: 200000
    route:
      - { kind: vertex_claude, base_url: "${base}", region: us-east5, credentials: "${good}", provider_model_id: "ok", anthropic_beta: "context-1m-2025-08-07" }
  - id: vertex/quota
    context_length: 200000
    route:
      - { kind: vertex_claude, base_url: "${base}", region: us-east5, credentials: "${good}", provider_model_id: quota }
  - id: vertex/quote-token
    context_length: 200000
    route:
      - { kind: vertex_claude, base_url: "${base}", region: us-east5, credentials: "${good}", provider_model_id: quote-token }
  - id: vertex/wrong-key
    context_length: 200000
    route:
      - { kind: vertex_claude, base_url: "${base}", region: us-east5, credentials: "${wrong}", project_id: other-proj, provider_model_id: ok }
  - id: vertex/wrong-too
    context_length: 200000
    route:
      - { kind: vertex_claude, id: wrong-too, base_url: "${base}", region: us-east5, credentials: "${wrong}", project_id: other-proj, provider_model_id: ok }
  - id: vertex/not-allowed
    context_length: 200000
    router: priority
    route:
      - { kind: vertex_claude, id: refused, base_url: "${base}", region: us-east5, credentials: "${good}", provider_model_id: not-allowed }
      - { kind: vertex_claude, id: allowed, base_url: "${base}", region: europe-west1, credentials: "${good}", provider_model_id: ok }
  - id: vertex/fallback
    context_length: 200000
    router: priority
    route:
      - { kind: vertex_claude, id: wrong, base_url: "${base}", region: us-east5, credentials: "${wrong}", provider_model_id: ok }
      - { kind: vertex_claude, id: right, base_url: "${base}", region: europe-west1, credentials: "${good}", provider_model_id: ok }
`;
    gw = await startGateway({ models });
    client = gw.client();
  });

  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    upstream.reset();
    upstream.expiresIn = 3599;
  });

  const predictions = () => upstream.requests.filter((r) => r.path !== '/token');
  const exchanges = () => upstream.requests.filter((r) => r.path === '/token');

  it('exchanges a signed JWT for a token once, then calls rawPredict with it', async () => {
    const res = await client.chat.completions.create({ model: 'vertex/sonnet', messages: [{ role: 'user', content: 'hello vertex' }] });
    expect(res.choices[0].message.content).toBe('echo: hello vertex');
    await client.chat.completions.create({ model: 'vertex/sonnet', messages: [{ role: 'user', content: 'again' }] });
    expect(exchanges()).toHaveLength(1);
    expect(exchanges()[0].headers['content-type']).toBe('application/x-www-form-urlencoded');
    const calls = predictions();
    expect(calls.map((c) => c.path)).toEqual(
      Array(2).fill('/v1/projects/test-proj/locations/us-east5/publishers/anthropic/models/ok:rawPredict'),
    );
    expect(new Set(calls.map((c) => c.headers.authorization))).toEqual(new Set([`Bearer ${upstream.issued[0]}`]));
    expect(calls[0].headers).not.toHaveProperty('x-api-key');
    expect(calls[0].headers).not.toHaveProperty('anthropic-version');
    expect(calls[0].body).toMatchObject({ anthropic_version: 'vertex-2023-10-16', max_tokens: 4096 });
    expect(calls[0].body).not.toHaveProperty('model');
    const row = (await gw.rows()).find((r) => `gen-${r.id}` === res.id)!;
    expect(row).toMatchObject({ provider: 'vertex_claude', prompt_tokens: 5, completion_tokens: 3 });
  });

  it('refuses an image by URL, which Vertex does not fetch, without calling it', async () => {
    const before = predictions().length;
    const err = await client.chat.completions
      .create({
        model: 'vertex/sonnet',
        messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/cat.png' } }] }],
      })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({
      status: 400,
      message: expect.stringContaining('Claude on Vertex AI takes images inline only (base64), not by URL'),
    });
    expect(predictions()).toHaveLength(before);
  });

  it('streams through streamRawPredict', async () => {
    const stream = await client.chat.completions.create({
      model: 'vertex/sonnet',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'stream it' }],
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const c of stream) {
      text += c.choices[0]?.delta.content ?? '';
      usage = c.usage ?? usage;
    }
    expect(text).toBe('echo: stream it');
    expect(usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 3 });
    expect(predictions()[0]).toMatchObject({ path: expect.stringMatching(/:streamRawPredict$/), body: { stream: true } });
  });

  it('keeps a token that lives less than the refresh margin for half its life, not one call', async () => {
    upstream.expiresIn = 120;
    upstream.revokeAll();
    // The cached token is refused once (revoked), and replaced by a two-minute one that serves both.
    for (const m of ['a', 'b']) await client.chat.completions.create({ model: 'vertex/sonnet', messages: [{ role: 'user', content: m }] });
    expect(exchanges()).toHaveLength(1);
    const [refused, first, second] = predictions().map((c) => c.headers.authorization);
    expect(refused).not.toBe(first);
    expect(first).toBe(second);
  });

  it('drops a token Vertex refuses and retries once with a fresh one', async () => {
    await client.chat.completions.create({ model: 'vertex/sonnet', messages: [{ role: 'user', content: 'warm' }] });
    upstream.reset();
    upstream.revokeAll();
    const res = await client.chat.completions.create({ model: 'vertex/sonnet', messages: [{ role: 'user', content: 'after rotation' }] });
    expect(res.choices[0].message.content).toBe('echo: after rotation');
    expect(upstream.requests.map((r) => (r.path.endsWith(':rawPredict') ? 'predict' : 'token'))).toEqual(['predict', 'token', 'predict']);
  });

  describe('on the Anthropic surface', () => {
    const body = {
      model: 'vertex/sonnet',
      max_tokens: 32000,
      system: [{ type: 'text', text: 'You are terse.', cache_control: { type: 'ephemeral', ttl: '1h' } }],
      thinking: { type: 'enabled', budget_tokens: 31999 },
      stop_sequences: ['END'],
      messages: [{ role: 'user', content: [{ type: 'text', text: 'hello vertex', cache_control: { type: 'ephemeral' } }] }],
    };

    it("relays the client's request as it is: cache markers, thinking budget, stop sequences", async () => {
      const res = await rawPost(`${gw.url}/anthropic/v1/messages`, body, {
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'anthropic-beta': 'context-1m-2025-08-07' },
      });
      expect(res.status).toBe(200);
      expect(JSON.parse(res.text)).toMatchObject({
        type: 'message',
        model: 'vertex/sonnet',
        content: [{ type: 'text', text: 'echo: hello vertex' }],
      });
      const [call] = predictions();
      expect(call.path).toBe('/v1/projects/test-proj/locations/us-east5/publishers/anthropic/models/ok:rawPredict');
      const { model: _model, ...rest } = body;
      expect(call.body).toEqual({ ...rest, anthropic_version: 'vertex-2023-10-16' });
      // Vertex refuses first-party betas: only the route's own are sent (this route sets none).
      expect(call.headers).not.toHaveProperty('anthropic-beta');
      await rawPost(
        `${gw.url}/anthropic/v1/messages`,
        { ...body, model: 'vertex/beta' },
        {
          headers: { 'content-type': 'application/json', 'anthropic-beta': 'oauth-2025-04-20' },
        },
      );
      expect(predictions()[1].headers['anthropic-beta']).toBe('context-1m-2025-08-07');
    });

    it("passes a client's interleaved-thinking beta on, so a budget over max_tokens is Vertex's to take", async () => {
      const res = await rawPost(
        `${gw.url}/anthropic/v1/messages`,
        { ...body, model: 'vertex/beta', max_tokens: 1000, thinking: { type: 'enabled', budget_tokens: 4000 } },
        {
          headers: {
            'content-type': 'application/json',
            'anthropic-beta': 'oauth-2025-04-20,interleaved-thinking-2025-05-14, context-1m-2025-08-07',
          },
        },
      );
      expect(res.status).toBe(200);
      const [call] = predictions();
      expect(call.headers['anthropic-beta']).toBe('context-1m-2025-08-07,interleaved-thinking-2025-05-14');
      expect(call.body).toMatchObject({ max_tokens: 1000, thinking: { type: 'enabled', budget_tokens: 4000 } });
      // A later version of the beta, which the gateway's validator takes alike, goes along too.
      await rawPost(`${gw.url}/anthropic/v1/messages`, body, {
        headers: { 'content-type': 'application/json', 'anthropic-beta': 'interleaved-thinking-2026-09-01' },
      });
      expect(predictions()[1].headers['anthropic-beta']).toBe('interleaved-thinking-2026-09-01');
    });

    it('relays a stream event by event under the public model id', async () => {
      const res = await rawPost(`${gw.url}/anthropic/v1/messages`, { ...body, stream: true });
      expect(res.status).toBe(200);
      expect(res.text).toMatch(
        /^event: message_start\ndata: \{"type":"message_start","message":\{"id":"msg_[^"]+","type":"message","role":"assistant","content":\[\],"model":"vertex\/sonnet"/,
      );
      expect(res.text).toContain('"text_delta","text":"echo: "');
      expect(res.text).toMatch(/event: message_stop\ndata: \{"type":"message_stop"\}\n\n$/);
      expect(predictions()[0]).toMatchObject({
        path: expect.stringMatching(/ok:streamRawPredict$/),
        body: { stream: true, thinking: body.thinking },
      });
    });

    it("folds Claude Code's mid-conversation system messages into the top-level system (Vertex AI has none)", async () => {
      const messages = [
        body.messages[0],
        { role: 'system', content: 'Available agent types: general-purpose' },
        { role: 'assistant', content: 'hi' },
        { role: 'user', content: 'go on' },
        { role: 'system', content: [{ type: 'text', text: 'Be brief.', cache_control: { type: 'ephemeral' } }] },
      ];
      const res = await rawPost(`${gw.url}/anthropic/v1/messages`, { ...body, messages });
      expect(res.status).toBe(200);
      const system = [
        ...body.system,
        { type: 'text', text: 'Available agent types: general-purpose' },
        { type: 'text', text: 'Be brief.', cache_control: { type: 'ephemeral' } },
      ];
      expect(predictions()[0].body).toMatchObject({ system, messages: [messages[0], messages[2], messages[3]] });
      const { max_tokens: _max, ...countBody } = body;
      expect((await rawPost(`${gw.url}/anthropic/v1/messages/count_tokens`, { ...countBody, messages })).status).toBe(200);
      expect(predictions()[1].body).toMatchObject({ system, messages: [messages[0], messages[2], messages[3]] });
      // A tool change has no such form: this route's refusal, before any call.
      const change = await rawPost(`${gw.url}/anthropic/v1/messages`, {
        ...body,
        messages: [body.messages[0], { role: 'system', content: [{ type: 'tool_removal', name: 'Bash' }] }],
      });
      expect(change.status).toBe(400);
      expect(JSON.parse(change.text).error.message).toContain('mid-conversation system content of type "tool_removal"');
      expect(predictions()).toHaveLength(2);
    });

    it('counts tokens at count-tokens:rawPredict, the model named in the body', async () => {
      const { max_tokens: _max, ...countBody } = body;
      const res = await rawPost(`${gw.url}/anthropic/v1/messages/count_tokens`, countBody);
      expect(res.status).toBe(200);
      expect(JSON.parse(res.text)).toEqual({ input_tokens: expect.any(Number) });
      expect(predictions()[0]).toMatchObject({
        path: '/v1/projects/test-proj/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict',
        body: { model: 'ok', anthropic_version: 'vertex-2023-10-16', system: body.system },
      });
      // An image by URL is refused there too, before any call.
      const before = predictions().length;
      const url = await rawPost(`${gw.url}/anthropic/v1/messages/count_tokens`, {
        model: countBody.model,
        messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'url', url: 'https://example.com/cat.png' } }] }],
      });
      expect([url.status, JSON.parse(url.text).error.message]).toEqual([400, expect.stringContaining('inline only')]);
      expect(predictions()).toHaveLength(before);
    });
  });

  it("passes Vertex's quota 429 on as a rate limit", async () => {
    const err = await client.chat.completions
      .create({ model: 'vertex/quota', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect(err).toMatchObject({ status: 429, code: 'RESOURCE_EXHAUSTED' });
    expect((err as APIError).message).toContain('Quota exceeded');
    // The wait Google's RetryInfo gives (30.2 s), as Retry-After.
    expect((err as APIError).headers?.get('retry-after')).toBe('31');
  });

  it('tries the next route when the project may not use the model (a 400 FAILED_PRECONDITION)', async () => {
    const res = await client.chat.completions.create({ model: 'vertex/not-allowed', messages: [{ role: 'user', content: 'x' }] });
    expect(res.choices[0].message.content).toBeTruthy();
    expect(predictions().map((r) => r.path.split('/')[5])).toEqual(['us-east5', 'europe-west1']);
  });

  it('blanks out the access token in an error that quotes it', async () => {
    const err = await client.chat.completions
      .create({ model: 'vertex/quote-token', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 400 });
    const sent = /^Bearer (.+)$/.exec(String(predictions().at(-1)!.headers.authorization))![1];
    expect((err as APIError).message).toContain('request refused for token [redacted]');
    expect((err as APIError).message).not.toContain(sent);
  });

  it('reports a refused token exchange as a 502 naming the route, and fails over', async () => {
    const err = await client.chat.completions
      .create({ model: 'vertex/wrong-key', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 502, code: 'upstream_auth_failed' });
    expect((err as APIError).message).toContain('invalid_grant: Invalid JWT Signature.');
    // The account's address is the operator's to know, not the client's.
    expect((err as APIError).message).not.toContain(EMAIL);
    expect(predictions()).toHaveLength(0);
    expect(exchanges()).toHaveLength(1);
    // The refusal is held for a while: the next requests fail over without asking again.
    const again = await client.chat.completions
      .create({ model: 'vertex/wrong-key', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(again).toMatchObject({ status: 502, code: 'upstream_auth_failed' });
    // Another route of the same account is told the held refusal under its own name.
    const other = await client.chat.completions
      .create({ model: 'vertex/wrong-too', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect((other as APIError).message).toMatch(/^502 route wrong-too: .*invalid_grant/);
    expect(exchanges()).toHaveLength(1);
    const res = await client.chat.completions.create({ model: 'vertex/fallback', messages: [{ role: 'user', content: 'x' }] });
    const byWrongKey = exchanges().filter((r) => {
      const [h, c, sig] = String(r.body.assertion).split('.');
      return createVerify('RSA-SHA256').update(`${h}.${c}`).verify(stranger.publicKey, Buffer.from(sig, 'base64url'));
    });
    expect(byWrongKey).toHaveLength(1);
    expect(res.choices[0].message.content).toBe('echo: x');
    expect(predictions()[0].path).toContain('/locations/europe-west1/');
  });

  it('refuses to start without usable credentials', async () => {
    const models = (creds: string) => `
models:
  - id: v
    context_length: 1000
    route:
      - { kind: vertex_claude, base_url: "${base}", region: us-east5, credentials: "${creds}", provider_model_id: ok }
`;
    await expect(startGateway({ models: models(join(dir, 'missing.json')) })).rejects.toThrow(
      /credentials: cannot read the service-account key file .*missing.json: ENOENT/,
    );
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ type: 'service_account', client_email: EMAIL, private_key: 'not a key' }));
    await expect(startGateway({ models: models(bad) })).rejects.toThrow(/private_key is not a usable PEM key/);
  });

  describe('GoogleTokenSource', () => {
    const http = new UpstreamClient(new AppConfig(validateEnv({})));
    afterAll(() => http.onApplicationShutdown());
    const call = () => ({ signal: new AbortController().signal, route: 'r', provider: 'vertex_claude' });

    it('caches a token until five minutes before it expires, and shares one exchange between concurrent callers', async () => {
      const source = new GoogleTokenSource(http);
      let now = Date.now();
      source.now = () => now;
      const sa = loadServiceAccount(writeAccount('cache.json', keys.privateKey));
      const [a, b, c] = await Promise.all([source.token(sa, call()), source.token(sa, call()), source.token(sa, call())]);
      expect(new Set([a, b, c]).size).toBe(1);
      expect(source.exchanges).toBe(1);
      now += (3599 - 301) * 1000;
      expect(await source.token(sa, call())).toBe(a);
      expect(source.exchanges).toBe(1);
      now += 2000;
      // The stand-in checks iat against its own clock: move the real clock's view back into range.
      source.now = () => Date.now();
      source.invalidate(sa);
      const d = await source.token(sa, call());
      expect(d).not.toBe(a);
      expect(source.exchanges).toBe(2);
    });

    it('replaces a token that lives less than twice the margin half-way through its life', async () => {
      upstream.expiresIn = 60;
      try {
        const source = new GoogleTokenSource(http);
        let now = Date.now();
        source.now = () => now;
        const sa = loadServiceAccount(writeAccount('short.json', keys.privateKey));
        const a = await source.token(sa, call());
        now += 29_000;
        expect(await source.token(sa, call())).toBe(a);
        expect(source.exchanges).toBe(1);
        now += 2000; // within the stand-in's minute of clock skew
        expect(await source.token(sa, call())).not.toBe(a);
        expect(source.exchanges).toBe(2);
      } finally {
        upstream.expiresIn = 3599;
      }
    });

    it('lets a caller leave without cancelling the exchange for the others', async () => {
      const source = new GoogleTokenSource(http);
      const sa = loadServiceAccount(writeAccount('leave.json', keys.privateKey));
      const ac = new AbortController();
      const leaving = source.token(sa, { ...call(), signal: ac.signal });
      const staying = source.token(sa, call());
      ac.abort();
      await expect(leaving).rejects.toMatchObject({ failure: 'aborted' });
      await expect(staying).resolves.toMatch(/^ya29\./);
    });
  });
});
