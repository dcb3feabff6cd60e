import { connect, type NetConnectOpts, type Socket } from 'node:net';
import { waitFor } from '../helpers/access';
import { startGateway, type TestGateway } from '../helpers/gateway';

/**
 * Clients that stop taking the answer: a stream the client no longer reads, a large answer it
 * does not fetch. Each is disconnected after CLIENT_WRITE_TIMEOUT_MS without progress; one that
 * reads slowly but steadily gets its whole answer.
 */
const MODELS = `
models:
  - id: demo/long
    context_length: 2000000
    max_output_length: 1000000
    pricing: { prompt: 1, completion: 1 }
    route:
      - { kind: mock, tokens: 1000000 }
  - id: demo/medium
    context_length: 2000000
    route:
      - { kind: mock, tokens: 30000 }
  - id: demo/paced
    context_length: 2000000
    route:
      - { kind: mock, tokens: 4000, tokens_per_second: 400 }
`;

const ask = (model: string, stream = false) => ({ model, stream, messages: [{ role: 'user', content: 'x' }] });

/** Requests over one socket that reads nothing (sent back to back: pipelined); with the gateway's side of it. */
async function unread(gw: TestGateway, bodies: object[], readableHighWaterMark?: number): Promise<{ client: Socket; server: Socket }> {
  const server = gw.app.getHttpServer();
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  // A larger read buffer (Node's types omit the Duplex option) lets a slow reader take more at a time.
  const client = connect({
    port: Number(new URL(gw.url).port),
    host: '127.0.0.1',
    allowHalfOpen: true,
    readableHighWaterMark,
  } as NetConnectOpts);
  client.on('error', () => undefined);
  client.pause();
  client.write(
    bodies
      .map((body) => {
        const json = JSON.stringify(body);
        return `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(json)}\r\n\r\n${json}`;
      })
      .join(''),
  );
  return { client, server: await accepted };
}

const closedWithin = (socket: Socket, ms: number) =>
  new Promise<boolean>((resolve) => {
    if (socket.destroyed) return resolve(true);
    const timer = setTimeout(() => resolve(false), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });

describe('clients that stop reading', () => {
  let gw: TestGateway;

  beforeAll(async () => {
    gw = await startGateway({ models: MODELS, env: { CLIENT_WRITE_TIMEOUT_MS: '400' } });
  });
  afterAll(() => gw.close());

  it('disconnects a stream its client stopped reading, and logs the request as the client leaving', async () => {
    const { client, server } = await unread(gw, [ask('demo/long', true)]);
    // Without a limit the stream waits on the client for ever: no row, the socket held.
    const closed = await closedWithin(server, 8000);
    client.destroy();
    expect(closed).toBe(true);
    const row = (await gw.waitForRows(1)).find((r) => r.model === 'demo/long');
    expect(row).toMatchObject({ status_code: 499, stream: true });
    // What was generated up to the cut is billed.
    expect(row!.completion_tokens).toBeGreaterThan(0);
  });

  it('disconnects a client that does not fetch a large answer', async () => {
    const { client, server } = await unread(gw, [ask('demo/long')]);
    const closed = await closedWithin(server, 8000);
    client.destroy();
    expect(closed).toBe(true);
  });

  it('keeps serving others while flat-out mock streams fill the buffers of clients that do not read', async () => {
    const before = (await gw.rows()).length;
    // One after another: each waits for the server's next connection (20 at once would stack 20 listeners).
    const held: Array<{ client: Socket; server: Socket }> = [];
    for (let i = 0; i < 20; i++) held.push(await unread(gw, [ask('demo/long', true)]));
    try {
      const slowest = Math.max(
        ...(await Promise.all(
          Array.from({ length: 5 }, async (_, i) => {
            await new Promise((r) => setTimeout(r, i * 40));
            const started = performance.now();
            expect((await fetch(`${gw.url}/health`)).status).toBeLessThan(600);
            return performance.now() - started;
          }),
        )),
      );
      // Each stream wrote megabytes into the kernel's buffers in microtasks, never yielding: /health
      // waited seconds behind them.
      expect(slowest).toBeLessThan(1500);
    } finally {
      for (const { client } of held) client.destroy();
    }
    // Their rows, before the next test counts its own.
    await waitFor(async () => (await gw.rows()).length >= before + 20, 'the 20 rows', 10_000);
  });

  it('ends a pipelined stream whose connection died before its turn, as one the client left', async () => {
    // The second stream's response has no socket until the first finishes, and Node gives it no
    // close when the connection dies: it waited on a drain for ever, holding its slot, and wrote no row.
    const before = (await gw.rows()).length;
    const { client } = await unread(gw, [ask('demo/paced', true), ask('demo/paced', true)]);
    await new Promise((r) => setTimeout(r, 1500));
    client.destroy();
    await waitFor(async () => (await gw.rows()).slice(before).filter((r) => r.model === 'demo/paced').length === 2, 'both rows', 8000);
    expect((await gw.rows()).slice(before).map((r) => r.status_code)).toEqual([499, 499]);
  });
});

describe('clients that read slowly but steadily', () => {
  let gw: TestGateway;

  // A limit well above any pause of a loaded machine's event loop, so that only a reader that
  // really stopped could be cut.
  beforeAll(async () => {
    gw = await startGateway({ models: MODELS, env: { CLIENT_WRITE_TIMEOUT_MS: '3000' } });
  });
  afterAll(() => gw.close());

  /** Reads what has arrived every `everyMs` (at most 64 KB) until the answer ends or the gateway closes. */
  const readSlowly = async (client: Socket, server: Socket, done: (text: string) => boolean, everyMs = 50): Promise<string> => {
    let text = '';
    const ended = new Promise<void>((resolve) => client.once('end', resolve));
    const reader = setInterval(() => {
      const chunk = client.read() as Buffer | null;
      if (chunk) text += chunk.toString('latin1');
      if (done(text)) client.end();
    }, everyMs);
    await Promise.race([ended, closedWithin(server, 60_000)]);
    clearInterval(reader);
    client.destroy();
    return text;
  };

  it('gives a slow reader its whole answer, though taking it lasts longer than the limit', async () => {
    // One write of 6 MB taken at about 0.65 MB/s: some 9 s, most of it with the gateway's side
    // still queued, against a limit of 3 s on progress.
    const { client, server } = await unread(gw, [ask('demo/long')], 64 * 1024);
    const text = await readSlowly(client, server, (t) => t.endsWith('}') && t.includes('"usage"'), 100);
    const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { usage: { completion_tokens: number } };
    expect(body.usage.completion_tokens).toBe(1_000_000);
  });

  it('cuts a reader that stopped about one limit after it stopped, not two', async () => {
    const before = (await gw.rows()).length;
    const { client, server } = await unread(gw, [ask('demo/long', true)]);
    const started = performance.now();
    expect(await closedWithin(server, 12_000)).toBe(true);
    const took = performance.now() - started;
    client.destroy();
    // The stream fills the socket's buffers at once, then nothing moves for 3 s. (Looking once
    // a limit, the watcher saw the kernel's last intake as progress and cut after 6 s or more.)
    expect(took).toBeGreaterThanOrEqual(3000);
    expect(took).toBeLessThan(5500);
    await waitFor(async () => (await gw.rows()).length > before, 'the row');
  });

  it('gives a slow reader its whole stream', async () => {
    const { client, server } = await unread(gw, [ask('demo/medium', true)], 64 * 1024);
    // Chunked: the last event is followed by the chunk framing's end.
    const text = await readSlowly(client, server, (t) => t.endsWith('data: [DONE]\n\n\r\n0\r\n\r\n'));
    expect(text.length).toBeGreaterThan(3_000_000);
    expect(text.endsWith('data: [DONE]\n\n\r\n0\r\n\r\n')).toBe(true);
  });
});
