import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { NextFunction, Request, Response } from 'express';
import { type ExpressApp, GatewayExpressAdapter } from './express-adapter';

describe('GatewayExpressAdapter', () => {
  let server: Server;
  let app: ExpressApp;
  const built: Array<{ req: boolean; res: boolean }> = [];

  beforeAll(async () => {
    const adapter = new GatewayExpressAdapter();
    adapter.initHttpServer({});
    app = adapter.getInstance<ExpressApp>();
    // What Node built, seen before Express re-parents anything.
    const handle = (app as unknown as { handle: (req: IncomingMessage, res: ServerResponse, next?: NextFunction) => void }).handle;
    (app as unknown as { handle: typeof handle }).handle = function (req, res, next) {
      built.push({ req: Object.getPrototypeOf(req) === app.request, res: Object.getPrototypeOf(res) === app.response });
      return handle.call(this, req, res, next);
    };
    app.get('/echo', (req: Request, res: Response) => {
      res.status(201).json({ host: req.get('host'), query: req.query, sameApp: req.app === app && res.app === app });
    });
    server = adapter.getHttpServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('has Node build requests and responses with Express prototypes, so Express changes none', async () => {
    const { port } = server.address() as AddressInfo;
    const first = await fetch(`http://127.0.0.1:${port}/echo?a=1`);
    const second = await fetch(`http://127.0.0.1:${port}/echo?a=2`);
    expect(built).toEqual([
      { req: true, res: true },
      { req: true, res: true },
    ]);
    expect(first.status).toBe(201);
    expect(await first.json()).toEqual({ host: `127.0.0.1:${port}`, query: { a: '1' }, sameApp: true });
    expect(await second.json()).toEqual({ host: `127.0.0.1:${port}`, query: { a: '2' }, sameApp: true });
  });

  it('keeps Express answering what no route matches', async () => {
    const { port } = server.address() as AddressInfo;
    const res = await fetch(`http://127.0.0.1:${port}/nothing`);
    expect(res.status).toBe(404);
  });
});
