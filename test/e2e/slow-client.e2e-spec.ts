import { connect, type NetConnectOpts, type Socket } from 'node:net';
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
`;

describe('clients that stop reading', () => {
  let gw: TestGateway;
  let port: number;

  beforeAll(async () => {
    gw = await startGateway({ models: MODELS, env: { CLIENT_WRITE_TIMEOUT_MS: '400' } });
    port = Number(new URL(gw.url).port);
  });
  afterAll(() => gw.close());

  /** Sends a request over a socket that reads nothing; resolves with the gateway's side of it. */
  const unread = async (body: object, readableHighWaterMark?: number): Promise<{ client: Socket; server: Socket }> => {
    const server = gw.app.getHttpServer();
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    // A larger read buffer (Node's types omit the Duplex option) lets the slow reader take more at a time.
    const client = connect({ port, host: '127.0.0.1', allowHalfOpen: true, readableHighWaterMark } as NetConnectOpts);
    client.on('error', () => undefined);
    client.pause();
    const json = JSON.stringify(body);
    client.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(json)}\r\n\r\n${json}`,
    );
    return { client, server: await accepted };
  };

  const closedWithin = (socket: Socket, ms: number) =>
    new Promise<boolean>((resolve) => {
      if (socket.destroyed) return resolve(true);
      const timer = setTimeout(() => resolve(false), ms);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });

  it('disconnects a stream its client stopped reading, and logs the request as the client leaving', async () => {
    const { client, server } = await unread({ model: 'demo/long', stream: true, messages: [{ role: 'user', content: 'x' }] });
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
    const { client, server } = await unread({ model: 'demo/long', messages: [{ role: 'user', content: 'x' }] });
    const closed = await closedWithin(server, 8000);
    client.destroy();
    expect(closed).toBe(true);
  });

  /** Reads what has arrived every 50 ms (up to 256 KB) until the answer ends or the gateway closes. */
  const readSlowly = async (client: Socket, server: Socket, done: (text: string) => boolean): Promise<string> => {
    let text = '';
    const ended = new Promise<void>((resolve) => client.once('end', resolve));
    const reader = setInterval(() => {
      const chunk = client.read() as Buffer | null;
      if (chunk) text += chunk.toString('latin1');
      if (done(text)) client.end();
    }, 50);
    await Promise.race([ended, closedWithin(server, 60_000)]);
    clearInterval(reader);
    client.destroy();
    return text;
  };

  it('gives a slow but steady reader its whole answer, though it takes longer than the limit', async () => {
    const { client, server } = await unread({ model: 'demo/long', messages: [{ role: 'user', content: 'x' }] }, 256 * 1024);
    // One write of 6 MB that the client takes over seconds: the limit is on progress, not on
    // the time the whole answer takes.
    const started = Date.now();
    const text = await readSlowly(client, server, (t) => t.endsWith('}') && t.includes('"usage"'));
    expect(Date.now() - started).toBeGreaterThan(800);
    const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { usage: { completion_tokens: number } };
    expect(body.usage.completion_tokens).toBe(1_000_000);
  });

  it('gives a slow but steady reader its whole stream', async () => {
    const { client, server } = await unread({ model: 'demo/medium', stream: true, messages: [{ role: 'user', content: 'x' }] }, 256 * 1024);
    // Chunked: the last event is followed by the chunk framing's end.
    const text = await readSlowly(client, server, (t) => t.endsWith('data: [DONE]\n\n\r\n0\r\n\r\n'));
    expect(text.length).toBeGreaterThan(3_000_000);
    expect(text.endsWith('data: [DONE]\n\n\r\n0\r\n\r\n')).toBe(true);
  });
});
