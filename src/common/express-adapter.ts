import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import type { NestApplicationOptions } from '@nestjs/common';
import { ExpressAdapter } from '@nestjs/platform-express';
import type { Application } from 'express';

/** An Express app with the prototypes it gives requests and responses (typed by neither @types). */
export type ExpressApp = Application & { request: object; response: object };

/**
 * Express's adapter with one change: Node builds each request and response with Express's
 * prototypes already in place, instead of Express re-parenting them as it starts handling them.
 *
 * Express calls `Object.setPrototypeOf(req, app.request)` (and the same for `res`) on every
 * request. On V8 (Node 20) an object whose prototype was changed after it was built survives
 * young-generation GCs together with everything it references, until the next full GC: measured
 * with `--trace-gc-nvp`, a bare Express app promoted ~8 KB per request to the old generation
 * (scavenges of 6–7 ms and a mark-compact every ~0.4 s, against 0.5 ms and none; the gateway
 * ~13 KB). Here the server builds them from subclasses whose prototypes *are* `app.request` and
 * `app.response`, so Express's call changes nothing. (A plain function as `new.target` for
 * `Reflect.construct` would be shorter, but V8 then gives every object a map of its own: ~24 µs
 * per construction.)
 *
 * HTTPS and `forceCloseConnections` keep Nest's own server set-up.
 */
export class GatewayExpressAdapter extends ExpressAdapter {
  override initHttpServer(options: NestApplicationOptions): void {
    super.initHttpServer(options);
    if (options?.httpsOptions || options?.forceCloseConnections) return;
    const app = this.getInstance<ExpressApp>();
    this.httpServer = createServer(
      { IncomingMessage: bornAs(IncomingMessage, app, 'request'), ServerResponse: bornAs(ServerResponse, app, 'response') },
      app,
    );
  }
}

/**
 * A subclass of `base` that takes the place of `app[key]`: its prototype has the same parent
 * (Express's request or response methods) and the same `app` property, and becomes `app[key]`.
 */
function bornAs<C extends typeof IncomingMessage | typeof ServerResponse>(base: C, app: ExpressApp, key: 'request' | 'response'): C {
  const Born = class extends (base as typeof IncomingMessage) {};
  Object.setPrototypeOf(Born.prototype, Object.getPrototypeOf(app[key]) as object);
  Object.defineProperty(Born.prototype, 'app', { configurable: true, enumerable: true, writable: true, value: app });
  app[key] = Born.prototype;
  return Born as unknown as C;
}
