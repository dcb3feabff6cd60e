import 'reflect-metadata';
import { maxHeaderSize, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { DynamicModule, ForwardReference, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NextFunction, Request, Response } from 'express';
import { AppModule } from './app.module';
import { anthropicErrorBody, isAnthropicPath } from './common/anthropic-error';
import { cors } from './common/cors';
import { GatewayExpressAdapter } from './common/express-adapter';
import { draining, jsonBody } from './common/json-body';
import { errorBody, sendErrorJson } from './common/openai-error';
import { attachContext } from './common/request-context';
import { requestId as newRequestId } from './common/request-id';
import { allowedMethods, hasRoute, type RoutedApp } from './common/routes';
import { AppConfig } from './config/app-config';
import type { AppConfigOptions } from './config/app-config.module';
import { startupEnv } from './config/env-file';
import { ApiKeyGuard } from './gateway/api-key.guard';
import { isFramedPath } from './gateway/framed-paths';
import { AppLogger } from './observability/app-logger';
import { MetricsService } from './observability/metrics.service';

export interface CreateAppOptions extends AppConfigOptions {
  /** Defaults to a pino logger at LOG_LEVEL writing JSON to stdout. */
  logger?: AppLogger;
  /** More modules (e.g. a provider adapter a team ships on its own; docs/adding-a-provider.md). */
  imports?: Array<Type | DynamicModule | ForwardReference>;
}

/**
 * Builds and initialises the gateway (not yet listening); a start it refuses leaves nothing
 * behind. `main.ts` and the end-to-end tests both start here, so what is tested is what runs.
 */
export async function createApp(options: CreateAppOptions = {}): Promise<NestExpressApplication> {
  // Needed before the config module validates the environment; from `.env` too, as it reads it.
  const level = options.overrides?.LOG_LEVEL ?? startupEnv(options.envFile).LOG_LEVEL ?? 'info';
  const logger = options.logger ?? new AppLogger(level);
  const root = AppModule.forRoot({ ...options, logger });
  if (options.imports?.length) root.imports = [...(root.imports ?? []), ...options.imports];
  const app = await NestFactory.create<NestExpressApplication>(root, new GatewayExpressAdapter(), {
    bodyParser: false,
    logger,
    abortOnError: false,
  });
  const config = app.get(AppConfig);
  const express = app.getHttpAdapter().getInstance();
  express.disable('x-powered-by');
  express.set('etag', false);
  // No answer carries a validator (ETag, Last-Modified), so no request can be fresh; Express's
  // `res.send` still asked `req.fresh`, which takes `If-None-Match: *` as a match whatever the
  // answer, and answered a JSON GET with an empty 304. Set once on the app's request prototype,
  // which every request is built from (GatewayExpressAdapter).
  Object.defineProperty(express.request, 'fresh', { configurable: true, enumerable: true, get: () => false });

  // Request id and context first, so that even a body that fails to parse is answered with one;
  // then CORS and the origin guard, in the same middleware (a layer of its own cost ~40 µs of
  // CPU a request in bench:ab, JSON at 32 connections: 4,199 against 3,620 req/s).
  const origins = cors(config.corsOrigins);
  const keyCheck = app.get(ApiKeyGuard);
  app.use((req: Request, res: Response, next: NextFunction) => {
    // OpenRouter's base URL is https://openrouter.ai/api/v1: a client set up for it only changes
    // the host. Every /api/v1/... path is served as /v1/... (logs keep the path as sent).
    req.url = underV1(req.url);
    const requestId = newRequestId();
    res.setHeader('x-request-id', requestId);
    // Anthropic's SDKs read the id from `request-id` (err.requestID), on errors too.
    if (isAnthropicPath(req.path)) res.setHeader('request-id', requestId);
    if (req.headers.host === undefined && req.httpVersionMajor === 1 && req.httpVersionMinor >= 1)
      return refuseWithoutHost(req, res, requestId);
    attachContext(req, { requestId, startedAt: performance.now() });
    origins(req, res, next);
  });
  app.use(
    jsonBody({
      limitBytes: config.bodyLimitBytes,
      limitText: config.env.BODY_LIMIT,
      framed: isFramedPath,
      idleTimeoutMs: config.env.BODY_IDLE_TIMEOUT_MS,
      pace: { minBytesPerSecond: config.env.BODY_MIN_BYTES_PER_SECOND, graceMs: config.env.BODY_RATE_GRACE_MS },
      refusedBeforeBody: (req) => keyCheck.refuses(req),
      routed: (method, path) => hasRoute(express as unknown as RoutedApp, method, path),
    }),
  );
  app.getHttpServer().on('clientError', answerClientError);
  app
    .getHttpServer()
    .on('connect', (req: IncomingMessage, socket: Duplex) =>
      answerConnect(req, socket, (path) => allowedMethods(express as unknown as RoutedApp, underV1(path))),
    );
  // Node's own refusal of an HTTP/1.1 request without Host is a bare 400 with no body and no
  // request id; the first middleware refuses it instead, in the API's shape.
  (app.getHttpServer() as Server & { requireHostHeader: boolean }).requireHostHeader = false;
  // The body reader times out a body that pauses or comes too slowly (and logs it); Node's own
  // limit on the whole request (5 minutes) would cut a large upload that keeps the pace, and
  // answer it with an id no row has.
  if (config.env.BODY_IDLE_TIMEOUT_MS > 0) app.getHttpServer().requestTimeout = 0;
  app.getHttpServer().on('checkExpectation', answerExpectation);
  // (Asked before the first middleware has moved an /api/v1/... path to /v1/...: moved here too.)
  continueUnlessRefused(
    app.getHttpServer(),
    (req) => isFramedPath(underV1(req.url ?? '/').split('?')[0]) && keyCheck.refuses(req as Request),
  );
  capConnections(app.getHttpServer(), config.maxConnections, logger, app.get(MetricsService));
  // Headers that do not come (a connection that sends nothing, or a line every few seconds) held
  // their connection, and a place under the cap, for Node's 60 s, checked every 30 s: up to 90 s.
  const server = app.getHttpServer() as Server & { connectionsCheckingInterval: number };
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  server.connectionsCheckingInterval = 1000;
  stopOnSignals(app, logger);
  // Initialised here rather than by listen(), so that a start the modules refuse (a bootstrap
  // check, a key file that cannot be read) closes the app again: Nest runs no hook by itself
  // after a failed init, and the modules that had started kept their database and Redis
  // connections, their timers, the signal handlers above and the heap reclaimer's watch on every
  // HTTP server of the process. A process that goes on (an embedder, the test suite) collected
  // them: each refused start added a 'close' listener to every response it served afterwards.
  try {
    await app.init();
  } catch (err) {
    await app.close().catch((e: Error) => logger.error(`closing after a failed start: ${e.message}`, e.stack, 'Gateway'));
    throw err;
  }
  return app;
}

const STOP_SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];

/**
 * SIGTERM and SIGINT close the app (open streams finish, the request log is written), then the
 * logs are flushed and the signal raised again, so that the exit says why the process stopped.
 * Nest's enableShutdownHooks() raised it the moment the app had closed, with the last lines (the
 * request log writer's "drained: ...") possibly still in pino's asynchronous destination: that
 * line was missing after 1 of 5 single-process stops and 1 of 3 two-worker stops, measured.
 */
function stopOnSignals(nest: NestExpressApplication, logger: AppLogger): void {
  // Nest's class takes the signal, for the hooks' `onApplicationShutdown(signal)`; its interface does not say so.
  const app = nest as unknown as { close(signal?: string): Promise<void> };
  let stopping = false;
  const off = () => {
    for (const s of STOP_SIGNALS) process.off(s, onSignal);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    // A second signal while stopping changes nothing: the first stop goes on to its end (said,
    // so that an operator pressing Ctrl-C again knows why nothing happens).
    if (stopping) return logger.log(`${signal}: already stopping; open requests finish or are cut at the grace deadline`, 'Gateway');
    stopping = true;
    app.close(signal).then(
      async () => {
        await logger.flush();
        off();
        process.kill(process.pid, signal);
      },
      async (err: Error) => {
        logger.error(`shutdown failed: ${err.message}`, err.stack, 'Gateway');
        await logger.flush();
        process.exit(1);
      },
    );
  };
  for (const s of STOP_SIGNALS) process.on(s, onSignal);
  // Closed by its owner instead (the tests close their gateways): the signals are no longer its
  // to handle. (Told by its server closing: Nest's application proxy drops properties set on it,
  // so app.close cannot be wrapped.) Stopping on a signal, they stay taken until the end, so
  // that a second signal does not cut the shutdown short.
  nest.getHttpServer().once('close', () => {
    if (!stopping) off();
  });
}

/**
 * At most `cap` client connections open at once (0: no cap); those past it are closed as they
 * come, unanswered (answering would take the descriptor the cap keeps free). Without a cap, slow
 * clients could take every descriptor: a thousand took a process with 1,024 offline, every new
 * connection closed, /health's too. Counted, and said in the log at most once a minute (what a
 * minute closed, at its end). Counted here rather than by Node's `maxConnections`: under
 * node:cluster a worker at that limit hands each connection back to the primary, which offers it
 * to the next worker, and so on, for as long as it stays open, burning CPU and closing nothing.
 */
function capConnections(server: Server, cap: number, logger: AppLogger, metrics: MetricsService): void {
  if (cap <= 0) return;
  let open = 0;
  let dropped = 0;
  let unsaid = 0;
  let telling: NodeJS.Timeout | undefined;
  const tell = () => {
    const first = telling === undefined;
    telling = undefined;
    if (unsaid === 0) return;
    logger.warn(
      `${unsaid} client connection(s) closed unanswered${first ? '' : ' in the last minute'}: ${cap} were open (MAX_CONNECTIONS; unset, half the open-file limit)`,
      'Gateway',
    );
    unsaid = 0;
    telling = setTimeout(tell, 60_000).unref();
  };
  metrics.counterOf('hybridinference_connections_dropped_total', 'Client connections closed unanswered at MAX_CONNECTIONS', () => dropped);
  server.on('connection', (socket: Duplex) => {
    if (open >= cap) {
      socket.destroy();
      dropped++;
      unsaid++;
      // The first of a quiet spell is said at once; the rest at the end of the minute.
      if (!telling) tell();
      return;
    }
    open++;
    socket.once('close', () => open--);
  });
}

/**
 * `Expect: 100-continue` (curl sends it for bodies over 1 MB): Node said "100 Continue" to every
 * such request, so a caller the key check refuses uploaded its whole body to hear the 401. Such
 * a caller now gets its refusal instead of the 100 (and the connection closes: whether the body
 * follows is then the client's choice); every other request its 100 as before.
 */
function continueUnlessRefused(server: Server, refused: (req: IncomingMessage) => boolean | Promise<boolean>): void {
  const go = (req: IncomingMessage, res: ServerResponse, refuse: boolean) => {
    if (refuse) res.setHeader('connection', 'close');
    else res.writeContinue();
    server.emit('request', req, res);
  };
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    const r = refused(req);
    if (typeof r === 'boolean') return go(req, res, r);
    r.then(
      (refuse) => go(req, res, refuse),
      () => go(req, res, false),
    );
  });
}

/** A URL under OpenRouter's base path (`/api/v1/...`) as the `/v1/...` it is served as. */
function underV1(url: string): string {
  return url.startsWith('/api/v1/') ? url.slice(4) : url;
}

/** How long a request's line and headers may take to arrive (408 past it, with the connection closed). */
const HEADERS_TIMEOUT_MS = 15_000;

/** How long a socket whose request Node's parser refused stays open for its answer to be read. */
const REFUSED_SOCKET_LINGER_MS = 2000;

/**
 * A request Node's parser refuses before any route sees it (headers or URL over the limit, a
 * malformed request line) gets an answer in the API's shape instead of Node's bare status line:
 * Anthropic's on the Anthropic surface when the path can be told (Claude Code reads that shape),
 * OpenAI's otherwise.
 */
function answerClientError(err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex): void {
  const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent || draining.has(socket)) {
    socket.destroy();
    return;
  }
  const [status, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, `The request line and headers exceed the size limit (${Math.round(maxHeaderSize / 1024)} KB); send long values in the body`]
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'The request was not received in time']
        : [400, `The request is not valid HTTP (${err.code ?? 'parse error'})`];
  const path = refusedPath(err, socket);
  // No route saw the request, but its answer still carries an id like every other.
  const requestId = newRequestId();
  const anthropic = path !== undefined && isAnthropicPath(path);
  const code = status === 431 ? 'request_too_large' : status === 408 ? 'request_timeout' : 'invalid_request';
  endRefused(socket, status, refusalBody(path, status, message, code, null, requestId), requestId, anthropic);
}

/**
 * A CONNECT request (a proxy tunnel, which this server is not): Node hands its socket over and,
 * with no one listening, destroyed it unanswered. Refused with 405 in the API's shape.
 */
function answerConnect(req: IncomingMessage, socket: Duplex, allowed: (path: string) => string[]): void {
  // Node takes its own error listener off a socket it hands over: a client that resets while the
  // answer is written would raise an error no one hears, and end the process.
  socket.on('error', () => socket.destroy());
  const path = (req.url ?? '').split('?')[0];
  const requestId = newRequestId();
  const message = 'The CONNECT method is not supported: this server is an API, not a proxy';
  const body = refusalBody(path, 405, message, 'method_not_allowed', null, requestId);
  // A 405 names the methods the resource takes (RFC 9110 §15.5.6): none for a host:port.
  endRefused(socket, 405, body, requestId, isAnthropicPath(path), { allow: allowed(path).join(', ') });
}

/** Writes a refusal on a socket no response object owns, and closes it. */
function endRefused(
  socket: Duplex,
  status: number,
  payload: object,
  requestId: string,
  anthropic: boolean,
  headers: Record<string, string> = {},
): void {
  const body = JSON.stringify(payload);
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\n${anthropic ? `request-id: ${requestId}\r\n` : ''}${extra}connection: close\r\n\r\n${body}`,
  );
  // The server's sockets are half-open: after this end, a peer that never closes its side held
  // the socket and its descriptor for good, as no parser and so no timeout watches it any more
  // (3,000 slow-header clients left 3,000 descriptors). Destroyed after a grace in which the
  // peer reads the answer; at once, a peer still sending would get a reset that can discard it.
  const linger = setTimeout(() => socket.destroy(), REFUSED_SOCKET_LINGER_MS).unref();
  socket.once('close', () => clearTimeout(linger));
}

/**
 * A request with an `Expect` header other than 100-continue: refused with 417, as Node would,
 * but in the API's shape and with a request id. (Node calls this instead of answering itself
 * once someone listens; the request never reaches a route.)
 */
function answerExpectation(req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0];
  const message = `The Expect header "${String(req.headers.expect).slice(0, 100)}" is not supported; only 100-continue is`;
  const requestId = newRequestId();
  const body = refusalBody(path, 417, message, 'expectation_failed', 'expect', requestId);
  const headers: Record<string, string> = { 'x-request-id': requestId, connection: 'close' };
  if (isAnthropicPath(path)) headers['request-id'] = requestId;
  sendErrorJson(res as unknown as Response, 417, body, headers);
}

/**
 * An HTTP/1.1 request without a Host header, which the protocol requires (RFC 9112 §3.2): refused
 * with 400, as Node would, but in the API's shape and with the request id already set. HTTP/1.0
 * requests need no Host and go on.
 */
function refuseWithoutHost(req: Request, res: Response, requestId: string): void {
  const message = 'The Host header is required in an HTTP/1.1 request (RFC 9112 §3.2)';
  sendErrorJson(res, 400, refusalBody(req.path, 400, message, 'missing_host', 'host', requestId), { connection: 'close' });
}

/**
 * The body of a refusal made before any route saw the request: Anthropic's shape on the
 * Anthropic surface when the path can be told (Claude Code reads that shape), OpenAI's otherwise.
 */
function refusalBody(path: string | undefined, status: number, message: string, code: string, param: string | null, requestId: string) {
  return path !== undefined && isAnthropicPath(path)
    ? anthropicErrorBody(status, message, requestId)
    : errorBody(message, 'invalid_request_error', code, param);
}

/**
 * The path of a request Node refused, when it can be told: from the request it had parsed (a
 * body that came too slowly), else from the request line at the start of the bytes it was
 * parsing (headers over the limit, sent in one piece). Without a query string.
 */
function refusedPath(err: { rawPacket?: Buffer }, socket: Duplex): string | undefined {
  const parsed = (socket as Duplex & { parser?: { incoming?: { url?: string } | null } | null }).parser?.incoming?.url;
  const target = parsed ?? /^[A-Z]+ ([^\s?]+)/.exec(err.rawPacket?.subarray(0, 2048).toString('latin1') ?? '')?.[1];
  return target?.split('?')[0];
}
