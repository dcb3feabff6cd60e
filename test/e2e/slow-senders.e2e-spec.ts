import { connect, type Socket } from 'node:net';
import { request } from 'undici';
import { waitFor } from '../helpers/access';
import { answerJson, startGateway, trickle as trickleTo, type TestGateway } from '../helpers/gateway';

/**
 * Clients that send too slowly to matter, and more connections than the process can hold: a
 * thousand connections trickling a body a byte every few seconds took a gateway with 1,024
 * descriptors offline for as long as they went on. A body must keep BODY_MIN_BYTES_PER_SECOND
 * after BODY_RATE_GRACE_MS, and MAX_CONNECTIONS keeps descriptors free for the rest.
 */
const MODELS = `
models:
  - id: demo/mock
    context_length: 100000
    route:
      - { kind: mock, tokens: 3 }
`;

const chat = '/v1/chat/completions';
const body = (pad = 0) => JSON.stringify({ model: 'demo/mock', messages: [{ role: 'user', content: 'x'.repeat(pad) }] });

const trickle = (gw: TestGateway, text: string, parts: number, gapMs: number, path = chat) => trickleTo(gw.url, path, text, parts, gapMs);
const jsonOf = answerJson;

describe('request bodies that come too slowly', () => {
  let gw: TestGateway;

  beforeAll(async () => {
    // 2,000 bytes a second after 1 s; the idle limit alone (a pause of 2 s) never fires here.
    gw = await startGateway({
      models: MODELS,
      env: { BODY_MIN_BYTES_PER_SECOND: '2000', BODY_RATE_GRACE_MS: '1000', BODY_IDLE_TIMEOUT_MS: '2000', BODY_LIMIT: '64kb' },
    });
  });
  afterAll(() => gw.close());

  it('refuses a body trickled slower than BODY_MIN_BYTES_PER_SECOND with 408, closes, and logs the request', async () => {
    // 4 KB in 40 pieces 100 ms apart: 1,000 bytes a second, each pause far below the idle limit.
    const slow = await trickle(gw, body(4000), 40, 100);
    expect(slow.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(slow.text).toMatch(/connection: close/i);
    // Due once the bytes stop paying for the time: 1 s + received / 2,000 per s, about 2 s.
    expect(slow.ms).toBeGreaterThan(1000);
    expect(slow.ms).toBeLessThan(3500);
    expect(slow.sentParts).toBeLessThan(40);
    expect(jsonOf(slow.text)).toEqual({
      error: {
        message: expect.stringContaining('BODY_MIN_BYTES_PER_SECOND'),
        type: 'invalid_request_error',
        param: null,
        code: 'request_timeout',
      },
    });
    const id = /x-request-id: ([0-9a-f-]{36})/.exec(slow.text)?.[1];
    expect((await gw.rows()).find((r) => r.id === id)?.status_code).toBe(408);
  });

  it('answers a body that keeps the pace, though it takes longer than the grace and the pauses add up past it', async () => {
    // 8 KB in 16 pieces 100 ms apart: about 5,000 bytes a second over 1.5 s.
    const steady = await trickle(gw, body(8000), 16, 100);
    expect(steady.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(steady.ms).toBeGreaterThan(1400);
  });

  it('answers a small body sent slowly within the grace', async () => {
    const small = await trickle(gw, body(), 2, 200);
    expect(small.text).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('refuses on the Anthropic surface in its shape', async () => {
    const slow = await trickle(gw, body(4000), 40, 100, '/anthropic/v1/messages');
    expect(slow.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(jsonOf(slow.text)).toMatchObject({ type: 'error', error: { message: expect.stringContaining('BODY_MIN_BYTES_PER_SECOND') } });
  });

  it('cuts a client that trickles the rest of a body already refused', async () => {
    // Declared over BODY_LIMIT: answered 413 at once, the rest read and thrown away, but not at any pace.
    const started = performance.now();
    const result = await new Promise<{ text: string; closedAfter: number }>((resolve) => {
      const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString()));
      socket.on('error', () => undefined);
      socket.on('close', () => {
        clearInterval(drip);
        resolve({ text, closedAfter: performance.now() - started });
      });
      socket.write(`POST ${chat} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{`);
      const drip = setInterval(() => socket.write(' '), 100);
    });
    expect(result.text).toMatch(/^HTTP\/1\.1 413 /);
    expect(result.closedAfter).toBeLessThan(3000);
  });
});

describe('MAX_CONNECTIONS', () => {
  let gw: TestGateway;
  const open: Socket[] = [];

  beforeAll(async () => {
    gw = await startGateway({ models: MODELS, env: { MAX_CONNECTIONS: '3' } });
  });
  afterAll(async () => {
    for (const s of open) s.destroy();
    await gw.close();
  });

  const connected = () =>
    new Promise<Socket>((resolve, reject) => {
      const s = connect(Number(new URL(gw.url).port), '127.0.0.1', () => resolve(s));
      s.on('error', reject);
    });
  const health = () =>
    request(`${gw.url}/health`, { reset: true }).then(
      async (r) => (await r.body.text(), r.statusCode),
      (err: NodeJS.ErrnoException) => err.code ?? err.message,
    );
  const dropped = async () => {
    const text = await (await request(`${gw.url}/metrics`, { reset: true })).body.text();
    return Number(/^hybridinference_connections_dropped_total (\d+)/m.exec(text)?.[1]);
  };

  it('closes connections past the cap unanswered, counts them, and serves again once one closes', async () => {
    expect(await health()).toBe(200);
    expect(await dropped()).toBe(0);
    const server = gw.app.getHttpServer();
    const count = () => new Promise<number>((resolve) => server.getConnections((_: unknown, n: number) => resolve(n)));
    await waitFor(async () => (await count()) === 0, 'no connection open');
    // Three connections that send nothing hold every place.
    for (let i = 0; i < 3; i++) open.push(await connected());
    await waitFor(async () => (await count()) === 3, 'three connections open');
    expect(await health()).not.toBe(200);
    // One place free: served again.
    open.pop()!.destroy();
    await waitFor(async () => (await count()) === 2, 'two connections open');
    expect(await health()).toBe(200);
    await waitFor(async () => (await count()) === 2, 'two connections open');
    expect(await dropped()).toBeGreaterThanOrEqual(1);
  });
});
