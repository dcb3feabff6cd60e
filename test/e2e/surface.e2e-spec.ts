import OpenAI, { APIError } from 'openai';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { request } from 'undici';
import { answerJson, rawPost, startGateway, trickle as trickleTo, type TestGateway } from '../helpers/gateway';

/** The API surface besides chat itself: error shapes, models, health, routing, metrics. */
const MODELS = `
models:
  - id: demo/mock
    name: Mock
    description: the built-in mock
    created: 1700000000
    context_length: 4096
    max_output_length: 1024
    input_modalities: [text, image]
    supported_params: [temperature, max_tokens]
    pricing: { prompt: "0.15", completion: 0.6, request: "0.001", input_cache_reads: "0.075" }
    aliases: [mock-alias]
    route:
      - kind: mock
        tokens: 5
  - id: demo/split
    context_length: 4096
    router: fixed
    route:
      - { kind: vllm, id: gpu-a, base_url: "http://gpu-a.internal:8000/v1", api_key: "sk-secret-a", local: true }
      - { kind: vllm, id: gpu-b, base_url: "http://gpu-b.internal:8000/v1", api_key: "sk-secret-b", local: true }
      - { kind: deepseek, id: cloud, base_url: "https://api.deepseek.example/v1", api_key: "sk-secret-c", context_length: 2048 }
`;

describe('API surface', () => {
  let gw: TestGateway;
  let client: OpenAI;

  beforeAll(async () => {
    gw = await startGateway({
      models: MODELS,
      routing: 'routing_strategy: weighted\nrouting_parameter: { local_fraction: 0.8 }\n',
      env: { BODY_LIMIT: '64kb', BODY_IDLE_TIMEOUT_MS: '400' },
    });
    client = gw.client();
  });
  afterAll(() => gw.close());

  const chat = `/v1/chat/completions`;

  /** Writes `parts` on a new connection (what undici will not send); everything read until the server ends it. */
  const exchange = (...parts: Array<string | Buffer>) =>
    new Promise<string>((resolve, reject) => {
      const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
      for (const p of parts) socket.write(p);
    });

  it.each([
    ['invalid JSON', '{"model": "demo/mock", ', 400, 'body'],
    ['a body that is not an object', '[1, 2]', 400, 'body'],
    // JSON.parse takes it; serialising it again for the upstream would overflow the stack.
    [
      'a body nested 4,500 levels deep',
      `{"model": "demo/mock", "messages": [{"role": "user", "content": "x"}], "metadata": ${'['.repeat(4500)}${']'.repeat(4500)}}`,
      400,
      'body',
    ],
    // A wide object costs seconds to parse and copy; the body is refused before it is parsed.
    [
      'an object of 10,001 members',
      `{"model": "demo/mock", "messages": [{"role": "user", "content": "x"}], "metadata": {${'"":0,'.repeat(10_000)}"":0}}`,
      400,
      'body',
    ],
    ['no model', { messages: [{ role: 'user', content: 'x' }] }, 400, 'model'],
    ['no messages', { model: 'demo/mock' }, 400, 'messages'],
    ['empty messages', { model: 'demo/mock', messages: [] }, 400, 'messages'],
    ['a message without role', { model: 'demo/mock', messages: [{ content: 'x' }] }, 400, 'messages[0].role'],
    ['content of the wrong type', { model: 'demo/mock', messages: [{ role: 'user', content: 42 }] }, 400, 'messages[0].content'],
    ['max_tokens as text', { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }], max_tokens: 'ten' }, 400, 'max_tokens'],
    [
      'max_tokens beyond any model',
      { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }], max_tokens: 1e308 },
      400,
      'max_tokens',
    ],
    ['stream as text', { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }], stream: 'yes' }, 400, 'stream'],
    [
      'a malformed tool',
      { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function' }] },
      400,
      'tools[0].function',
    ],
    ['an unknown model', { model: 'nobody/nothing', messages: [{ role: 'user', content: 'x' }] }, 404, 'model'],
  ])('answers %s in the OpenAI error shape', async (_what, body, status, param) => {
    const res = await rawPost(`${gw.url}${chat}`, body);
    expect(res.status).toBe(status);
    const json = JSON.parse(res.text) as { error: { message: string; type: string; param: string | null; code: string | null } };
    expect(json.error).toEqual({ message: expect.any(String), type: 'invalid_request_error', param, code: expect.any(String) });
    expect(json.error.message.length).toBeGreaterThan(10);
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("serves OpenRouter's base path /api/v1 as /v1, so a client set up for OpenRouter only changes the host", async () => {
    const openRouterStyle = gw.client({ baseURL: `${gw.url}/api/v1` });
    const res = await openRouterStyle.chat.completions.create({ model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
    expect(res.choices[0].message.content).toBeTruthy();
    expect((await openRouterStyle.models.list()).data.map((m) => m.id)).toContain('demo/mock');
    // A refused body there is logged like any on a model endpoint.
    const bad = await rawPost(`${gw.url}/api/v1/chat/completions`, '{"model": ');
    expect(bad.status).toBe(400);
    const id = bad.headers.get('x-request-id')!;
    await gw.waitForRows(1);
    let row = (await gw.rows()).find((r) => r.id === id);
    for (let i = 0; !row && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 25));
      row = (await gw.rows()).find((r) => r.id === id);
    }
    expect(row).toMatchObject({ status_code: 400, error_code: 'invalid_json' });
    expect((await fetch(`${gw.url}/api/v2/models`)).status).toBe(404);
  });

  it('says model_not_found for an unknown model', async () => {
    const err = await client.chat.completions
      .create({ model: 'nobody/nothing', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect((err as APIError).code).toBe('model_not_found');
  });

  it('refuses a body over BODY_LIMIT with 413', async () => {
    const res = await rawPost(`${gw.url}${chat}`, { model: 'demo/mock', messages: [{ role: 'user', content: 'x'.repeat(70 * 1024) }] });
    expect(res.status).toBe(413);
    expect(JSON.parse(res.text).error.code).toBe('request_too_large');
  });

  it("logs a body the reader refused on every model endpoint, one row each, in the surface's shape", async () => {
    const paths = [
      '/v1/chat/completions',
      '/v1/completions',
      '/v1/embeddings',
      '/v1/messages',
      '/v1/messages/count_tokens',
      '/anthropic/v1/messages',
      '/anthropic/v1/messages/count_tokens',
      '/v1/chat/completions/',
    ];
    const answers: Array<[string, number, string]> = [];
    for (const path of paths) {
      const res = await rawPost(`${gw.url}${path}`, '{"model": ');
      const body = JSON.parse(res.text) as { error: { type: string } };
      expect([path, res.status, body.error.type]).toEqual([path, 400, 'invalid_request_error']);
      answers.push([path, 400, res.headers.get('x-request-id')!]);
    }
    const tooLarge = await rawPost(`${gw.url}${chat}`, {
      model: 'demo/mock',
      messages: [{ role: 'user', content: 'x'.repeat(70 * 1024) }],
    });
    expect(tooLarge.status).toBe(413);
    answers.push(['413', 413, tooLarge.headers.get('x-request-id')!]);
    const gzip = await rawPost(`${gw.url}${chat}`, '{}', { headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' } });
    expect(gzip.status).toBe(415);
    answers.push(['415', 415, gzip.headers.get('x-request-id')!]);
    const rows = new Map((await gw.rows()).map((r) => [r.id, r]));
    for (const [what, status, id] of answers) expect([what, rows.get(id)?.status_code]).toEqual([what, status]);
    const anthropic = JSON.parse((await rawPost(`${gw.url}/anthropic/v1/messages`, '[')).text) as Record<string, unknown>;
    expect(anthropic).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
    // Other endpoints answer at once, as before (no row: they are not model calls).
    const admin = await rawPost(`${gw.url}/admin/routing/reload`, '{"x": ');
    expect(admin.status).toBe(400);
  });

  const trickle = (path: string, body: string, parts: number, gapMs: number) => trickleTo(gw.url, path, body, parts, gapMs);
  const jsonOf = answerJson;

  it('refuses a body that stops arriving with 408 after BODY_IDLE_TIMEOUT_MS, closes, and logs the request', async () => {
    const body = JSON.stringify({ model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
    // Half the body, then nothing: the gateway answers after 0.4 s instead of Node's 5 minutes.
    const stalled = await trickle(chat, body, 2, 60_000);
    expect(stalled.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(stalled.ms).toBeLessThan(5000);
    expect(jsonOf(stalled.text)).toEqual({
      error: {
        message: expect.stringContaining('BODY_IDLE_TIMEOUT_MS'),
        type: 'invalid_request_error',
        param: null,
        code: 'request_timeout',
      },
    });
    const id = /x-request-id: ([0-9a-f-]{36})/.exec(stalled.text)?.[1];
    expect(id).toBeDefined();
    const anthropic = await trickle('/anthropic/v1/messages', body, 2, 60_000);
    expect(anthropic.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(jsonOf(anthropic.text)).toMatchObject({
      type: 'error',
      error: { type: expect.any(String), message: expect.stringContaining('BODY_IDLE_TIMEOUT_MS') },
    });
    // The limit is on pauses, not on the whole upload: eight parts 150 ms apart take longer than
    // the limit in all and are answered.
    const slow = await trickle(chat, body, 8, 150);
    expect(slow.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(slow.ms).toBeGreaterThan(800);
    const rows = await gw.rows();
    expect(rows.find((r) => r.id === id)?.status_code).toBe(408);
  });

  it('answers 413 to a client still sending its body, instead of resetting the connection', async () => {
    // Closing on unread bytes made the kernel reset the connection: fetch (and Python's
    // http.client) then failed with a broken pipe instead of showing the 413. The client runs in
    // a process of its own, so that it sends while the gateway answers and closes.
    const script = `
      const body = Buffer.alloc(16 * 1024 * 1024, 'a');
      (async () => {
        const out = [];
        for (let i = 0; i < 5; i++)
          out.push(await fetch(process.argv[1], { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then(
            async (r) => (await r.arrayBuffer(), r.status),
            (e) => (e.cause && e.cause.code) || e.message));
        process.stdout.write(JSON.stringify(out));
      })();`;
    const child = spawn(process.execPath, ['-e', script, `${gw.url}${chat}`]);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((resolve) => child.on('exit', resolve));
    expect(JSON.parse(out)).toEqual([413, 413, 413, 413, 413]);
  });

  it('answers 413 to a client that asked for the connection to close, once its body is read', async () => {
    // The connection closes after the answer: answered at once, the unread rest of the body
    // made the close a reset, and the client saw a broken pipe instead.
    const script = `
      const http = require('node:http');
      const send = (headers, mb) => new Promise((resolve) => {
        const req = http.request(process.argv[1], { method: 'POST', agent: false, headers: { connection: 'close', 'content-length': mb * 1024 * 1024, ...headers } });
        req.on('response', (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
        req.on('error', (e) => resolve(e.code || e.message));
        const piece = Buffer.alloc(1024 * 1024, 'a');
        (async () => {
          for (let i = 0; i < mb; i++) if (!req.write(piece)) await new Promise((r) => req.once('drain', r));
          req.end();
        })();
      });
      (async () => {
        const out = [];
        for (let i = 0; i < 5; i++) out.push(await send({ 'content-type': 'application/json' }, 11));
        process.stdout.write(JSON.stringify(out));
      })();`;
    const url = `${gw.url}${chat}`.replace('localhost', '127.0.0.1');
    const child = spawn(process.execPath, ['-e', script, url]);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((resolve) => child.on('exit', resolve));
    expect(JSON.parse(out)).toEqual([413, 413, 413, 413, 413]);
  });

  it('logs a refused body on a closing connection whose client leaves before sending the rest', async () => {
    const id = `gone-${Date.now()}`;
    await new Promise<void>((resolve, reject) => {
      const socket = connect(Number(new URL(gw.url).port), '127.0.0.1', () => {
        socket.write(
          `POST ${chat} HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-request-id: ${id}\r\ncontent-type: application/json\r\ncontent-length: 5000000\r\n\r\n`,
        );
        socket.write('x'.repeat(100 * 1024));
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 100);
      });
      socket.on('error', reject);
    });
    await new Promise((r) => setTimeout(r, 300));
    const row = (await gw.rows()).find((r) => (r.metadata as { client_request_id?: string } | null)?.client_request_id === id);
    expect(row?.status_code).toBe(413);
  });

  it('answers a refused body once, even when what follows it breaks the framing', async () => {
    const text = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
      let got = '';
      socket.on('data', (d: Buffer) => (got += d.toString()));
      socket.on('close', () => resolve(got));
      socket.on('error', reject);
      const piece = 'x'.repeat(70 * 1024);
      socket.write(`POST ${chat} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n${piece.length.toString(16)}\r\n${piece}\r\n`);
      setTimeout(() => socket.write('ZZZ\r\n\r\n'), 100);
    });
    expect(text).toMatch(/^HTTP\/1\.1 413 /);
    expect(text.match(/HTTP\/1\.1 \d{3}/g)).toHaveLength(1);
  });

  it("leaves a slow but steady upload to the idle limit, not to Node's five minutes for the whole request", () => {
    expect(gw.app.getHttpServer().requestTimeout).toBe(0);
  });

  it('logs a request whose client left before its body arrived, with 499', async () => {
    const before = (await gw.rows()).filter((r) => r.status_code === 499).length;
    await new Promise<void>((resolve, reject) => {
      const socket = connect(Number(new URL(gw.url).port), '127.0.0.1', () => {
        socket.write(`POST ${chat} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"model": "demo/`);
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 50);
      });
      socket.on('error', reject);
    });
    await new Promise((r) => setTimeout(r, 200));
    const rows = (await gw.rows()).filter((r) => r.status_code === 499);
    expect(rows).toHaveLength(before + 1);
    expect(rows[rows.length - 1]).toMatchObject({ error_code: 'client_closed_request' });
  });

  it('reads a body declared as Content-Encoding IDENTITY (codings ignore case), one with a byte order mark, one in many pieces', async () => {
    const text = JSON.stringify({ model: 'demo/mock', messages: [{ role: 'user', content: 'ünïcödé 🙂 '.repeat(3000) }] });
    const res = await rawPost(`${gw.url}${chat}`, text, {
      headers: { 'content-type': 'application/json', 'content-encoding': 'IDENTITY' },
    });
    expect(res.status).toBe(200);
    expect((await rawPost(`${gw.url}${chat}`, `\ufeff${text}`)).status).toBe(200);
    // Split inside multi-byte characters, sent apart: decoded piece by piece, it must come out whole.
    const pieces = await trickle(chat, text, 7, 20);
    expect(pieces.text).toMatch(/^HTTP\/1\.1 200 /);
    const rows = await gw.rows();
    const id = /x-request-id: ([0-9a-f-]{36})/.exec(pieces.text)![1];
    expect(rows.find((r) => r.id === id)?.prompt_tokens).toBe(rows.find((r) => r.id === res.headers.get('x-request-id'))?.prompt_tokens);
  });

  it('decodes a body in the charset it declares, and refuses one it cannot read with 415', async () => {
    const text = JSON.stringify({ model: 'démo/ünknown', messages: [{ role: 'user', content: 'x' }] });
    const send = (bytes: Buffer, contentType: string) =>
      rawPost(`${gw.url}${chat}`, '', { headers: { 'content-type': contentType }, body: bytes });
    for (const [encoding, contentType] of [
      ['latin1', 'application/json; charset=ISO-8859-1'],
      ['utf16le', 'application/json;charset="utf-16le"'],
      ['utf8', 'text/plain;charset=UTF-8'],
      ['latin1', 'application/json; charset=windows-1252'],
      // An empty charset says nothing: UTF-8.
      ['utf8', 'application/json; charset='],
    ] as const) {
      const res = await send(Buffer.from(text, encoding), contentType);
      // Read right, the model name comes back whole in the 404.
      expect([contentType, res.status, (JSON.parse(res.text) as { error: { message: string } }).error.message]).toEqual([
        contentType,
        404,
        expect.stringContaining('"démo/ünknown"'),
      ]);
    }
    // Windows-1252's own characters (0x80-0x9F) are read as such, not as Latin-1's control codes.
    const cp1252 = Buffer.concat([
      Buffer.from('{"model":"price '),
      Buffer.from([0x80, 0x20, 0x93, 0x71, 0x94, 0x20, 0x97, 0x20, 0x81]),
      Buffer.from('","messages":[{"role":"user","content":"x"}]}'),
    ]);
    for (const contentType of ['application/json; charset=windows-1252', 'application/json; charset=CP1252']) {
      const res = await send(cp1252, contentType);
      expect((JSON.parse(res.text) as { error: { message: string } }).error.message).toContain('"price € “q” — \u0081"');
    }
    for (const contentType of ['application/json; charset=utf-16', 'application/json; charset=shift_jis']) {
      const res = await send(Buffer.from(text, 'utf16le'), contentType);
      expect(res.status).toBe(415);
      expect(JSON.parse(res.text)).toEqual({
        error: {
          message: expect.stringMatching(/charset ".+" is not supported/),
          type: 'invalid_request_error',
          param: null,
          code: 'unsupported_charset',
        },
      });
      expect((await gw.rows()).find((r) => r.id === res.headers.get('x-request-id'))?.status_code).toBe(415);
    }
  });

  it('refuses a body in a compressed transfer-coding with 415, as a compressed content-coding, without echoing its bytes', async () => {
    /** A POST whose body goes out chunked under `transferEncoding`; the raw answer. */
    const send = (path: string, transferEncoding: string, body: Buffer) =>
      exchange(
        `POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: ${transferEncoding}\r\nconnection: close\r\n\r\n`,
        Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]),
      );
    const json = JSON.stringify({ model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
    const gzipped = gzipSync(json);
    for (const te of ['gzip, chunked', 'GZIP,chunked', 'deflate, chunked', 'identity, gzip, chunked']) {
      const raw = await send(chat, te, gzipped);
      expect([te, raw.slice(0, 13)]).toEqual([te, 'HTTP/1.1 415 ']);
      expect(jsonOf(raw)).toEqual({
        error: {
          message: expect.stringContaining('Transfer-Encoding'),
          type: 'invalid_request_error',
          param: null,
          code: 'unsupported_encoding',
        },
      });
      // Nothing of the gzip stream (its magic bytes 1f 8b) in the answer.
      expect([raw.includes('\x1f'), raw.includes('\x8b')]).toEqual([false, false]);
      const id = /x-request-id: ([0-9a-f-]{36})/.exec(raw)![1];
      expect((await gw.rows()).find((r) => r.id === id)?.status_code).toBe(415);
    }
    const anthropic = await send('/anthropic/v1/messages', 'gzip, chunked', gzipped);
    expect(anthropic).toMatch(/^HTTP\/1\.1 415 /);
    expect(jsonOf(anthropic)).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
    // Chunked alone (any case) is read as before.
    for (const te of ['chunked', 'Chunked']) expect((await send(chat, te, Buffer.from(json))).slice(0, 13)).toBe('HTTP/1.1 200 ');
  });

  it('answers a path that does not decode with a 400 naming the path', async () => {
    const res = await request(`${gw.url}/v1/models/%ZZ`);
    expect(res.statusCode).toBe(400);
    expect(await res.body.json()).toEqual({
      error: { message: expect.stringContaining('%ZZ'), type: 'invalid_request_error', param: 'path', code: 'invalid_path' },
    });
  });

  it("answers a request line over Node's header limit with 431 in the same shape", async () => {
    const res = await request(`${gw.url}/v1/models/${'x'.repeat(20_000)}`);
    expect(res.statusCode).toBe(431);
    expect(res.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(await res.body.json()).toEqual({
      error: { message: expect.stringContaining('size limit'), type: 'invalid_request_error', param: null, code: 'request_too_large' },
    });
  });

  it('closes a refused connection whose client never closes its side', async () => {
    // The answer ends the gateway's side only; a client that kept its side open (a slow-header
    // flood) held the socket and its descriptor on the gateway for good.
    const server = gw.app.getHttpServer();
    const accepted = new Promise<import('node:net').Socket>((resolve) => server.once('connection', resolve));
    // allowHalfOpen: Node's sockets otherwise close their side when the other's ends.
    const socket = connect({ port: Number(new URL(gw.url).port), host: '127.0.0.1', allowHalfOpen: true });
    socket.on('error', () => undefined);
    let text = '';
    const answered = new Promise<void>((resolve) => {
      socket.on('data', (d: Buffer) => (text += d.toString()));
      socket.on('end', resolve);
    });
    // A malformed request line: the same refusal path as a slow-header 408, without its minute.
    socket.write('G@T /v1/models HTTP/1.1\r\nhost: x\r\n\r\n');
    const serverSide = await accepted;
    await answered;
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    // The client keeps its side open; the gateway lets go of the socket all the same.
    const closed = await new Promise<boolean>((resolve) => {
      if (serverSide.destroyed) return resolve(true);
      const timer = setTimeout(() => resolve(false), 6000);
      serverSide.once('close', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    socket.destroy();
    expect(closed).toBe(true);
  });

  it("answers headers over the limit on the Anthropic surface in Anthropic's shape", async () => {
    for (const path of ['/anthropic/v1/messages', '/v1/messages?beta=true']) {
      const res = await request(`${gw.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-big': 'a'.repeat(20_000) },
        body: '{}',
      });
      expect(res.statusCode).toBe(431);
      expect(res.headers['request-id']).toMatch(/^[0-9a-f-]{36}$/);
      expect(await res.body.json()).toEqual({
        type: 'error',
        error: { type: 'invalid_request_error', message: expect.stringContaining('size limit') },
        request_id: res.headers['request-id'],
      });
    }
    // The OpenAI surface keeps OpenAI's shape for the same refusal.
    const openai = await request(`${gw.url}${chat}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-big': 'a'.repeat(20_000) },
      body: '{}',
    });
    expect(openai.statusCode).toBe(431);
    expect(((await openai.body.json()) as { error: { code: string } }).error.code).toBe('request_too_large');
  });

  it("answers CONNECT (a proxy tunnel) with 405 in the surface's shape, not a closed socket", async () => {
    const answer = async (target: string) => {
      const text = await exchange(`CONNECT ${target} HTTP/1.1\r\nhost: x\r\n\r\n`);
      const [head, body] = text.split('\r\n\r\n');
      return { head, body: JSON.parse(body) as Record<string, unknown> };
    };
    const openai = await answer(chat);
    expect(openai.head).toMatch(/^HTTP\/1\.1 405 Method Not Allowed\r\n[\s\S]*x-request-id: [0-9a-f-]{36}/);
    expect(openai.body).toEqual({
      error: { message: expect.stringContaining('CONNECT'), type: 'invalid_request_error', param: null, code: 'method_not_allowed' },
    });
    const anthropic = await answer('/anthropic/v1/messages');
    expect(anthropic.head).toMatch(/^HTTP\/1\.1 405 /);
    expect(anthropic.body).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
    expect(openai.head).toMatch(/\r\nallow: POST\r\n/);
    const tunnel = await answer('example.com:443');
    expect(tunnel.head).toMatch(/^HTTP\/1\.1 405 [\s\S]*\r\nallow: \r\n/);
    // A client that resets while the answer is written: nothing in the process hears the error
    // but the handler's own listener (before, an uncaught 'error' event ended the process).
    for (let i = 0; i < 30; i++) {
      const s = connect(Number(new URL(gw.url).port), '127.0.0.1', () => {
        s.write(`CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n${'x'.repeat(100_000)}`);
        s.resetAndDestroy();
      });
      s.on('error', () => undefined);
      await once(s, 'close');
    }
    expect((await fetch(`${gw.url}/health`)).status).toBe(200);
  });

  it("refuses an Expect header it cannot meet with 417 in the surface's shape", async () => {
    // undici refuses to send Expect, so over a plain socket.
    const raw = (path: string) =>
      exchange(`POST ${path} HTTP/1.1\r\nhost: x\r\nexpect: bogus\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`);
    const openai = await raw(chat);
    expect(openai).toMatch(/^HTTP\/1\.1 417 /);
    expect(openai).toMatch(/x-request-id: [0-9a-f-]{36}/);
    expect(JSON.parse(openai.slice(openai.indexOf('\r\n\r\n') + 4))).toEqual({
      error: {
        message: expect.stringContaining('"bogus" is not supported'),
        type: 'invalid_request_error',
        param: 'expect',
        code: 'expectation_failed',
      },
    });
    const anthropic = await raw('/anthropic/v1/messages');
    expect(anthropic).toMatch(/^HTTP\/1\.1 417 /);
    expect(JSON.parse(anthropic.slice(anthropic.indexOf('\r\n\r\n') + 4))).toMatchObject({
      type: 'error',
      error: { type: 'invalid_request_error' },
    });
  });

  it("refuses an HTTP/1.1 request without Host with 400 in the surface's shape, and serves one in HTTP/1.0", async () => {
    // Node's own refusal was a bare 400 with no body and no request id.
    const raw = (path: string, version: string) =>
      exchange(`POST ${path} HTTP/${version}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`);
    const openai = await raw(chat, '1.1');
    expect(openai).toMatch(/^HTTP\/1\.1 400 /);
    expect(openai).toMatch(/x-request-id: [0-9a-f-]{36}/);
    expect(jsonOf(openai)).toEqual({
      error: {
        message: expect.stringContaining('Host header is required'),
        type: 'invalid_request_error',
        param: 'host',
        code: 'missing_host',
      },
    });
    for (const path of ['/v1/messages', '/anthropic/v1/messages']) {
      const anthropic = await raw(path, '1.1');
      expect(anthropic).toMatch(/^HTTP\/1\.1 400 /);
      const requestId = /request-id: ([0-9a-f-]{36})/.exec(anthropic)?.[1];
      expect(jsonOf(anthropic)).toEqual({
        type: 'error',
        error: { type: 'invalid_request_error', message: expect.stringContaining('Host header is required') },
        request_id: requestId,
      });
    }
    // HTTP/1.0 has no Host requirement: the request is read and answered as any other.
    const old = await raw(chat, '1.0');
    expect(old).toMatch(/^HTTP\/1\.1 400 /);
    expect((jsonOf(old) as { error: { param: string } }).error.param).toBe('model');
  });

  it('answers a conditional GET in full: the gateway sends no validator for a request to match', async () => {
    const chatted = await rawPost(`${gw.url}${chat}`, { model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
    const generation = (JSON.parse(chatted.text) as { id: string }).id;
    await gw.rows();
    const conditions = [
      { 'if-none-match': '*' },
      { 'if-none-match': '"x", W/"y"' },
      { 'if-modified-since': new Date(Date.now() + 86_400_000).toUTCString() },
      { 'if-none-match': '*', 'if-modified-since': new Date(Date.now() + 86_400_000).toUTCString() },
    ];
    for (const path of ['/health', '/routing', '/v1/models', '/v1/models/demo/mock', '/health/ready', `/v1/generation?id=${generation}`]) {
      for (const headers of conditions) {
        const res = await request(`${gw.url}${path}`, { headers });
        const text = await res.body.text();
        expect([path, headers, res.statusCode, res.headers['etag'], res.headers['last-modified']]).toEqual([
          path,
          headers,
          200,
          undefined,
          undefined,
        ]);
        expect(JSON.parse(text)).toEqual(expect.any(Object));
      }
    }
  });

  it('answers unknown paths and methods with 404 in the same shape', async () => {
    const res = await request(`${gw.url}/v1/nothing-here`);
    expect(res.statusCode).toBe(404);
    expect(((await res.body.json()) as { error: { type: string } }).error.type).toBe('not_found_error');
    // Whatever the body: a typo in the path is not a JSON error, nor a body too large.
    for (const body of ['{"model": ', 'x'.repeat(70_000)]) {
      const posted = await rawPost(`${gw.url}/v1/chat/completion`, body);
      expect([posted.status, (JSON.parse(posted.text) as { error: { type: string } }).error.type]).toEqual([404, 'not_found_error']);
    }
    // A path that is served still says what is wrong with its body.
    expect((await rawPost(`${gw.url}/admin/routing/reload`, '{"x": ')).status).toBe(400);
  });

  it("answers a method a served path does not take with 405 naming the ones it takes, in the surface's shape", async () => {
    for (const [method, path, allow] of [
      ['GET', chat, 'POST'],
      ['PUT', '/api/v1/chat/completions', 'POST'],
      ['DELETE', '/v1/models/demo/mock', 'GET'],
    ] as const) {
      const res = await request(`${gw.url}${path}`, { method });
      expect([method, path, res.statusCode, res.headers.allow]).toEqual([method, path, 405, allow]);
      expect(((await res.body.json()) as { error: unknown }).error).toEqual({
        message: expect.stringContaining(`${method} is not allowed`),
        type: 'invalid_request_error',
        param: null,
        code: 'method_not_allowed',
      });
    }
    const anthropic = await request(`${gw.url}/anthropic/v1/messages`, { method: 'GET' });
    expect([anthropic.statusCode, anthropic.headers.allow]).toEqual([405, 'POST']);
    expect(await anthropic.body.json()).toMatchObject({ type: 'error', error: { message: expect.stringContaining('not allowed') } });
  });

  it('serves 30 pipelined requests on one connection without piling a listener per request on it', async () => {
    // Node warns (MaxListenersExceededWarning, a line that is not JSON in the log) at the eleventh.
    let most = 0;
    gw.app.getHttpServer().once('connection', (socket: import('node:net').Socket) => {
      let now = socket.listenerCount('close');
      socket.on('newListener', (event) => event === 'close' && (most = Math.max(most, ++now)));
      socket.on('removeListener', (event) => event === 'close' && now--);
    });
    const body = JSON.stringify({ model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
    const one = `POST ${chat} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
    const text = await exchange(one.repeat(30) + 'GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
    expect(text.match(/HTTP\/1\.1 200 /g)).toHaveLength(31);
    expect(most).toBeLessThan(10);
  });

  it('reads a JSON body whatever content type the client declared', async () => {
    const res = await fetch(`${gw.url}${chat}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: JSON.stringify({ model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] }),
    });
    expect(res.status).toBe(200);
  });

  it('serves a model by its alias under its own id', async () => {
    const res = await client.chat.completions.create({ model: 'mock-alias', messages: [{ role: 'user', content: 'x' }] });
    expect(res.model).toBe('demo/mock');
    expect(res.choices[0].message.content).toBe('Hello from the HybridInference mock'); // tokens: 5
  });

  it('streams every choice from the mock when n > 1, each with its role, finish and tokens counted', async () => {
    const stream = await client.chat.completions.create({
      model: 'demo/mock',
      n: 2,
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'x' }],
    });
    const text = ['', ''];
    const roles: number[] = [];
    const finish: Array<string | null> = [];
    let completionTokens = 0;
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        text[c.index] += c.delta.content ?? '';
        if (c.delta.role) roles.push(c.index);
        if (c.finish_reason) finish[c.index] = c.finish_reason;
      }
      if (chunk.usage) completionTokens = chunk.usage.completion_tokens;
    }
    expect(text).toEqual(['Hello from the HybridInference mock', 'Hello from the HybridInference mock']);
    expect(roles).toEqual([0, 1]);
    expect(finish).toEqual(['stop', 'stop']);
    expect(completionTokens).toBe(10);
  });

  it('lists models in the OpenRouter schema, prices per token as strings', async () => {
    const res = await fetch(`${gw.url}/v1/models`);
    const body = (await res.json()) as { data: Array<Record<string, unknown>> };
    const m = body.data.find((x) => x.id === 'demo/mock')!;
    expect(m).toEqual({
      id: 'demo/mock',
      object: 'model',
      owned_by: 'demo',
      canonical_slug: 'demo/mock',
      hugging_face_id: null,
      name: 'Mock',
      created: 1700000000,
      description: 'the built-in mock',
      context_length: 4096,
      architecture: {
        modality: 'text+image->text',
        input_modalities: ['text', 'image'],
        output_modalities: ['text'],
        tokenizer: 'Other',
        instruct_type: null,
      },
      pricing: {
        prompt: '0.00000015',
        completion: '0.0000006',
        request: '0.001',
        image: '0',
        input_cache_read: '0.000000075',
        input_cache_write: '0.00000015',
        internal_reasoning: '0.0000006',
      },
      top_provider: { context_length: 4096, max_completion_tokens: 1024, is_moderated: false },
      per_request_limits: null,
      supported_parameters: ['temperature', 'max_tokens'],
      default_parameters: null,
    });
    // The OpenAI SDK reads the same list.
    const ids: string[] = [];
    for await (const model of client.models.list()) ids.push(model.id);
    expect(ids).toEqual(['demo/mock', 'demo/split']);
    const one = await client.models.retrieve('demo/mock');
    expect(one.id).toBe('demo/mock');
  });

  it("filters the model list by OpenRouter's supported_parameters and output_modalities", async () => {
    const ids = async (query: string) => {
      const res = await fetch(`${gw.url}/api/v1/models?${query}`);
      expect(res.status).toBe(200);
      return ((await res.json()) as { data: Array<{ id: string }> }).data.map((m) => m.id);
    };
    // demo/mock declares only temperature and max_tokens; demo/split has the defaults.
    expect(await ids('supported_parameters=tools')).toEqual(['demo/split']);
    expect(await ids('supported_parameters=temperature,max_tokens')).toEqual(['demo/mock', 'demo/split']);
    expect(await ids('output_modalities=image')).toEqual([]);
    expect(await ids('output_modalities=text,image')).toEqual(['demo/mock', 'demo/split']);
    expect(await ids('output_modalities=all&category=programming')).toEqual(['demo/mock', 'demo/split']);
    const twice = await fetch(`${gw.url}/v1/models?supported_parameters=a&supported_parameters=b`);
    expect(twice.status).toBe(400);
    expect(((await twice.json()) as { error: { param: string } }).error.param).toBe('supported_parameters');
  });

  it("lists a model's routes as OpenRouter lists a model's endpoints, without URLs or keys", async () => {
    const res = await fetch(`${gw.url}/api/v1/models/demo/split/endpoints`);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).not.toMatch(/\.internal|deepseek\.example|sk-secret|base_url|api_key/);
    const body = JSON.parse(text) as { data: { id: string; endpoints: Array<Record<string, unknown>> } };
    expect(body.data.id).toBe('demo/split');
    expect(body.data.endpoints.map((e) => [e.tag, e.provider_name])).toEqual([
      ['gpu-a', 'vllm'],
      ['gpu-b', 'vllm'],
      ['cloud', 'deepseek'],
    ]);
    // A route's own window, where it has one.
    expect(body.data.endpoints.map((e) => e.context_length)).toEqual([4096, 4096, 2048]);
    expect(body.data.endpoints[0]).toMatchObject({
      model_id: 'demo/split',
      context_length: 4096,
      pricing: { prompt: '0', completion: '0' },
      status: expect.any(Number),
      latency_last_30m: null,
    });
    // An alias names the model here too; a model the gateway does not serve is a 404.
    expect((await fetch(`${gw.url}/v1/models/mock-alias/endpoints`)).status).toBe(200);
    const missing = await fetch(`${gw.url}/v1/models/nobody/none/endpoints`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('model_not_found');
  });

  it('reports liveness and database status on /health', async () => {
    const res = await fetch(`${gw.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ok', info: { database: { status: 'up', backend: 'sqlite' } } });
    expect((await fetch(`${gw.url}/health/ready`)).status).toBe(200);
  });

  it('shows routing on /routing without upstream URLs or keys', async () => {
    const res = await fetch(`${gw.url}/routing`);
    const text = await res.text();
    expect(text).not.toMatch(/internal|deepseek\.example|sk-secret|base_url|api_key/);
    const body = JSON.parse(text) as {
      default_strategy: string;
      models: Array<{ id: string; strategy: string; routes: Array<{ id: string; share: number; locality: string }> }>;
    };
    expect(body.default_strategy).toBe('weighted');
    const split = body.models.find((m) => m.id === 'demo/split')!;
    expect(split.strategy).toBe('fixed');
    expect(split.routes).toEqual([
      expect.objectContaining({ id: 'gpu-a', locality: 'local', share: 0.4 }),
      expect.objectContaining({ id: 'gpu-b', locality: 'local', share: 0.4 }),
      expect.objectContaining({ id: 'cloud', locality: 'remote', share: 0.2 }),
    ]);
  });

  it('exposes Prometheus metrics by model, provider and status', async () => {
    const counter = (text: string, re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    const before = await (await fetch(`${gw.url}/metrics`)).text();
    const tokens = /hybridinference_tokens_total\{model="demo\/mock",provider="mock",type="completion"\} (\d+)/;
    const served = /hybridinference_requests_total\{model="demo\/mock",provider="mock",status="200"\} (\d+)/;
    const ttft = /hybridinference_time_to_first_token_seconds_count\{model="demo\/mock",provider="mock",status="200"\} (\d+)/;
    await client.chat.completions.create({ model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
    const stream = await client.chat.completions.create({ model: 'demo/mock', stream: true, messages: [{ role: 'user', content: 'x' }] });
    for await (const _ of stream) void _;
    const res = await fetch(`${gw.url}/metrics`);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    // The two calls above, counted whatever the other tests served before.
    expect(counter(text, served) - (counter(before, served) || 0)).toBe(2);
    expect(text).toMatch(/hybridinference_request_duration_seconds_bucket\{le="[^"]+",model="demo\/mock",provider="mock",status="200"\}/);
    // Two more answers of five tokens each; one of them streamed (time to first token).
    expect(counter(text, tokens) - (counter(before, tokens) || 0)).toBe(10);
    expect(counter(text, ttft) - (counter(before, ttft) || 0)).toBe(1);
    expect(text).toMatch(/hybridinference_requests_total\{model="unknown",provider="none",status="404"\}/);
    // Totals since start are counters (rate() reads a restart as a reset); the queue is a gauge.
    expect(text).toContain('# TYPE hybridinference_request_log_spooled_total counter\nhybridinference_request_log_spooled_total 0\n');
    expect(text).toContain('# TYPE hybridinference_request_log_rejected_total counter\n');
    expect(text).toContain('# TYPE hybridinference_request_log_queue gauge\n');
  });

  it('quotes only the start of an unknown model name that long in its 404', async () => {
    // Under this gateway's BODY_LIMIT of 64 KB.
    const res = await rawPost(`${gw.url}/v1/chat/completions`, { model: 'x'.repeat(50_000), messages: [{ role: 'user', content: 'x' }] });
    expect(res.status).toBe(404);
    expect(res.text.length).toBeLessThan(1000);
    expect(JSON.parse(res.text).error.message).toContain(`"${'x'.repeat(200)}…"`);
  });

  it('labels a refused request on a configured model with that model', async () => {
    const refused = /hybridinference_requests_total\{model="demo\/mock",provider="none",status="400"\} (\d+)/;
    const count = async () => Number(refused.exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1] ?? 0);
    const before = await count();
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'demo/mock', messages: [{ role: 'user', content: 'x' }], temperature: 'hot' }),
    });
    expect(res.status).toBe(400);
    expect((await count()) - before).toBe(1);
  });
});
