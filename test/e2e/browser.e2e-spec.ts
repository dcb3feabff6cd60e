import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startGateway, type TestGateway } from '../helpers/gateway';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const MODELS = 'models:\n  - id: demo/mock\n    context_length: 4096\n    route: [{ kind: mock, tokens: 5 }]\n';

// Debian's chromium (`apt-get install -y chromium`; .ci/run installs it). Outside CI a machine
// without it skips this spec; in CI its absence is a failure, not a skip.
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI === 'true') throw new Error(`${CHROMIUM} is missing; .ci/run installs Debian's chromium`);
const describeWithBrowser = haveChromium ? describe : describe.skip;

/** What a page's fetch() saw, or the error it threw. */
type Outcome = { ok: true; status: number; requestId: string | null; body: string } | { ok: false; error: string };

/**
 * A real browser enforces CORS: a page served from one origin calls the gateway on another, with
 * the headers the OpenAI and Anthropic SDKs send (JSON, a bearer key, Anthropic's version and
 * browser-access headers), which makes every call preflighted.
 */
describeWithBrowser('a browser page on another origin', () => {
  let gw: TestGateway;
  let site: Server;
  let sitePort: number;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    site = createServer((_req, res) => {
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end('<!doctype html><title>app</title><p>app</p>');
    });
    await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
    sitePort = (site.address() as AddressInfo).port;
    // The page at http://127.0.0.1:<port> may call; the same page at http://localhost:<port> is
    // another origin and may not.
    gw = await startGateway({ models: MODELS, env: { CORS_ORIGINS: `http://127.0.0.1:${sitePort}` } });
    browser = await chromium.launch({ executablePath: CHROMIUM });
    page = await browser.newPage();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await gw?.close();
    await new Promise((resolve) => site?.close(resolve));
  });

  async function callFrom(origin: string, path: string, headers: Record<string, string>, body: unknown): Promise<Outcome> {
    if (!page.url().startsWith(origin)) await page.goto(`${origin}/`);
    return page.evaluate(
      async ({ url, headers, body }) => {
        try {
          const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body) });
          return { ok: true, status: res.status, requestId: res.headers.get('x-request-id'), body: await res.text() } as const;
        } catch (err) {
          return { ok: false, error: String(err) } as const;
        }
      },
      { url: `${gw.url}${path}`, headers, body },
    );
  }

  const openai = { 'content-type': 'application/json', authorization: 'Bearer sk-page' };
  const anthropic = {
    'content-type': 'application/json',
    'x-api-key': 'sk-page',
    'anthropic-version': '2023-06-01',
    'anthropic-dangerous-direct-browser-access': 'true',
  };
  const chat = { model: 'demo/mock', messages: [{ role: 'user', content: 'hi' }] };

  it('reads a chat completion and its request id', async () => {
    const out = await callFrom(`http://127.0.0.1:${sitePort}`, '/v1/chat/completions', openai, chat);
    expect(out).toMatchObject({ ok: true, status: 200 });
    if (!out.ok) return;
    expect(out.requestId).toMatch(/^[0-9a-f-]{36}$/);
    const body = JSON.parse(out.body) as { id: string; choices: Array<{ message: { content: string } }> };
    expect(body.id).toBe(`gen-${out.requestId}`);
    expect(body.choices[0].message.content.length).toBeGreaterThan(0);
  });

  it('reads a stream to its end', async () => {
    const out = await callFrom(`http://127.0.0.1:${sitePort}`, '/v1/chat/completions', openai, {
      ...chat,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(out).toMatchObject({ ok: true, status: 200 });
    if (!out.ok) return;
    const events = out.body.split('\n\n').filter((e) => e.startsWith('data: '));
    expect(events.at(-1)).toBe('data: [DONE]');
    expect(events.length).toBeGreaterThanOrEqual(5);
  });

  it('reads an Anthropic Messages answer sent with the Anthropic SDK’s browser headers', async () => {
    const out = await callFrom(`http://127.0.0.1:${sitePort}`, '/anthropic/v1/messages', anthropic, { ...chat, max_tokens: 16 });
    expect(out).toMatchObject({ ok: true, status: 200 });
    if (!out.ok) return;
    expect(JSON.parse(out.body)).toMatchObject({ type: 'message', role: 'assistant', model: 'demo/mock' });
  });

  it('reads an error’s message', async () => {
    const out = await callFrom(`http://127.0.0.1:${sitePort}`, '/v1/chat/completions', openai, { ...chat, model: 'nope/none' });
    expect(out).toMatchObject({ ok: true, status: 404 });
    if (!out.ok) return;
    expect(JSON.parse(out.body)).toMatchObject({ error: { code: 'model_not_found' } });
  });

  it('cannot be made to spend by a page not listed that sends a request without asking (no-cors, text/plain)', async () => {
    const before = (await gw.rows()).length;
    await page.goto(`http://localhost:${sitePort}/`);
    const sent = await page.evaluate(async (url) => {
      // The browser sends this without a preflight; the page cannot read the answer, only cause it.
      await fetch(url, {
        method: 'POST',
        mode: 'no-cors',
        headers: { 'content-type': 'text/plain' },
        body: '{"model":"demo/mock","messages":[{"role":"user","content":"hi"}]}',
      });
      return true;
    }, `${gw.url}/v1/chat/completions`);
    expect(sent).toBe(true);
    // Refused before it reached a model: no request, no row.
    expect((await gw.rows()).length).toBe(before);
  });

  it('is refused on an origin not listed, and the gateway never sees the call', async () => {
    const before = (await gw.rows()).length;
    const out = await callFrom(`http://localhost:${sitePort}`, '/v1/chat/completions', openai, chat);
    expect(out).toEqual({ ok: false, error: expect.stringContaining('Failed to fetch') });
    // The refused preflight stopped the browser before the POST: no request, no row.
    expect((await gw.rows()).length).toBe(before);
  });
});
