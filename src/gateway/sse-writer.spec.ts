import { createServer, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import type { Response } from 'express';
import { SseWriter } from './sse-writer';

/** A server's response to a client's GET, both ends open; `onData`: the client reads (else it reads nothing). */
async function openResponse(onData?: (d: Buffer) => void): Promise<{ server: Server; client: Socket; res: ServerResponse }> {
  let server!: Server;
  const answered = new Promise<ServerResponse>((resolve) => {
    server = createServer((_req, r) => resolve(r));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
  if (onData) client.on('data', onData);
  else client.pause(); // sends its request, then reads nothing
  client.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  return { server, client, res: await answered };
}

async function closeResponse(ends: { server: Server; client: Socket; res: ServerResponse }): Promise<void> {
  ends.client.destroy();
  ends.res.destroy();
  await new Promise((resolve) => ends.server.close(resolve));
}

describe('SseWriter, a client that does not read', () => {
  let ends: Awaited<ReturnType<typeof openResponse>>;
  let res: ServerResponse;
  let client: Socket;

  beforeEach(async () => {
    ends = await openResponse();
    ({ res, client } = ends);
  });

  afterEach(() => closeResponse(ends));

  it('waits for it once, however many writes and keepalives queue behind', async () => {
    const sse = new SseWriter(res as unknown as Response, { keepaliveMs: 60_000, stallMs: 60_000 });
    const drain = res.listenerCount('drain');
    const close = res.listenerCount('close');
    const big = `data: ${'x'.repeat(8 * 1024 * 1024)}\n\n`;
    const first = sse.write(big);
    expect(first).toBeInstanceOf(Promise);
    // The stream's producer waits on the first; keepalive timers fire meanwhile.
    for (let i = 0; i < 20; i++) sse.keepalive();
    const second = sse.write(big);
    expect(res.listenerCount('drain')).toBe(drain + 2); // the wait and its stall watch
    expect(res.listenerCount('close')).toBe(close + 2);
    expect(second).toBe(first);
    client.resume();
    await first;
    expect(res.listenerCount('drain')).toBe(drain);
    expect(res.listenerCount('close')).toBe(close);
  });
});

describe('SseWriter keepalives', () => {
  let ends: Awaited<ReturnType<typeof openResponse>>;
  let res: ServerResponse;
  let received = '';

  beforeEach(async () => {
    received = '';
    ends = await openResponse((d) => (received += d.toString()));
    res = ends.res;
  });

  afterEach(() => closeResponse(ends));

  const keepalives = () => received.split(': keepalive').length - 1;
  const waitFor = async (ok: () => boolean) => {
    for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 5));
  };

  it('resume for the next attempt after a failed one, though the first keepalive sent the headers', async () => {
    const sse = new SseWriter(res as unknown as Response, { keepaliveMs: 10 });
    sse.startKeepalive();
    await waitFor(() => keepalives() >= 1);
    sse.stopKeepalive(); // the attempt failed; the next route is tried
    const before = keepalives();
    sse.startKeepalive(); // the next route accepted the request
    await waitFor(() => keepalives() > before);
    sse.stopKeepalive();
    expect(keepalives()).toBeGreaterThan(before);
  });

  it('do not start again once an event has gone out', async () => {
    const sse = new SseWriter(res as unknown as Response, { keepaliveMs: 10 });
    void sse.write('data: {}\n\n');
    sse.startKeepalive();
    await new Promise((r) => setTimeout(r, 60));
    expect(keepalives()).toBe(0);
    sse.stopKeepalive();
  });
});
