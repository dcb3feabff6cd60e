import { createServer, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import type { Response } from 'express';
import { SseWriter } from './sse-writer';

describe('SseWriter, a client that does not read', () => {
  let server: Server;
  let client: Socket;
  let res: ServerResponse;

  beforeEach(async () => {
    const answered = new Promise<ServerResponse>((resolve) => {
      server = createServer((_req, r) => resolve(r));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    client = connect((server.address() as AddressInfo).port, '127.0.0.1');
    client.pause(); // sends its request, then reads nothing
    client.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    res = await answered;
  });

  afterEach(async () => {
    client.destroy();
    res.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

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
