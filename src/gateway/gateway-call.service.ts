import { Injectable, Logger } from '@nestjs/common';
import type { Request, Response } from 'express';
import { GatewayError, InvalidRequestError, ModelNotFoundError, ServiceUnavailableError, UpstreamError } from '../common/errors';
import { anthropicBodyOf, anthropicStatus, sendAnthropicGatewayError } from '../common/anthropic-error';
import { sendGatewayError } from '../common/openai-error';
import { bodyErrorOf } from '../common/json-body';
import { contextOf, type RequestContext } from '../common/request-context';
import { requestId } from '../common/request-id';
import { AdapterRegistry } from '../adapters/adapter-registry.service';
import type { ChatRequest } from '../common/chat.types';
import { AppConfig } from '../config/app-config';
import { ModelRegistry, type RegistrySnapshot } from '../config/model-registry.service';
import type { ModelDef, RouteDef } from '../config/registry.types';
import { AppLogger } from '../observability/app-logger';
import { MetricsService } from '../observability/metrics.service';
import { RequestLogWriter } from '../storage/request-log.writer';
import type { ApiLog } from '../storage/entities/api-log.entity';
import { estimatePromptTokens } from '../common/tokens';
import { chatCharge, dearest, type Charge } from './charge-estimate';
import { InflightService } from './inflight.service';
import { generationId, RequestRecord } from './request-record';
import { SseWriter } from './sse-writer';
import { disconnectIfStalled } from './stalled-client';
import { onSocketClose } from '../common/socket-close';
import { UsageLimiter } from './usage-limiter.service';

/** What one request's handler gets: its record, the signal that fires when the client leaves. */
export interface CallScope {
  rec: RequestRecord;
  /** Who is calling (set by ApiKeyGuard); undefined outside the app's middleware (unit tests). */
  ctx: RequestContext | undefined;
  signal: AbortSignal;
  snapshot: RegistrySnapshot;
}

/**
 * How a surface answers errors: a whole error response, or — once a stream has started — the
 * in-band event that ends it. OpenAI's shape by default; the Anthropic surface passes its own.
 */
export interface ErrorShape {
  send(res: Response, err: GatewayError, requestId: string): void;
  endStream(res: Response, err: GatewayError, rec: RequestRecord): void;
  /** The status the client is told, where the surface's differs from the error's own (for the row). */
  status?(err: GatewayError): number;
}

export const OPENAI_ERRORS: ErrorShape = {
  send: (res, err) => sendGatewayError(res, err),
  endStream: (res, err, rec) => new SseWriter(res).fail(streamError(err, rec, 'chat.completion.chunk', { delta: { content: '' } })),
};

/** OpenAI's shape for the legacy `/v1/completions`: its chunks' choices carry `text`. */
export const TEXT_COMPLETION_ERRORS: ErrorShape = {
  send: (res, err) => sendGatewayError(res, err),
  endStream: (res, err, rec) => new SseWriter(res).fail(streamError(err, rec, 'text_completion', { text: '', logprobs: null })),
};

/**
 * The event that ends a stream which failed after it started, as OpenRouter sends it: a chunk of
 * the stream (same id and model) with the error beside a choice whose `finish_reason` is
 * `error`, so that a client reading `choices[0]` sees the end too. The OpenAI SDKs throw on any
 * event with an `error` member, as for OpenAI's own bare `{"error": …}` event.
 */
function streamError(err: GatewayError, rec: RequestRecord, object: string, choice: Record<string, unknown>): unknown {
  const route = rec.execution?.route;
  return {
    id: generationId(rec.id),
    object,
    created: Math.floor(rec.createdAt.getTime() / 1000),
    // The model whose stream it ends: a `models` fallback's, when one answered.
    model: rec.execution?.model.id ?? rec.model,
    ...(route ? { provider: route.kind, route: route.id } : {}),
    error: { message: err.message, type: err.type, code: err.code, param: err.param, ...(err.metadata ? { metadata: err.metadata } : {}) },
    choices: rec.openChoices().map((index) => ({ index, ...choice, finish_reason: 'error' })),
  };
}

/** `{"type": "error", "error": {"type", "message"}}`; in a stream, `event: error` with the same body. */
export const ANTHROPIC_ERRORS: ErrorShape = {
  send: (res, err, requestId) => sendAnthropicGatewayError(res, err, requestId),
  endStream: (res, err, rec) => new SseWriter(res).fail(anthropicBodyOf(err, rec.id), 'error'),
  status: (err) => anthropicStatus(err.status, err.code),
};

/** A bug: the client learns only the request id. */
class InternalError extends GatewayError {
  readonly status = 500;
  readonly type = 'server_error';
  override readonly code = 'internal_error';
}

/**
 * The frame around every endpoint that calls an upstream (chat, embeddings, text
 * completions, Anthropic messages): request id and record, abort when the client leaves,
 * shutdown tracking, the caller's limits (admitted before the upstream call, settled with the
 * final row), errors in the surface's shape (OpenAI's unless told; in-band once a stream
 * started), and exactly one `api_logs` row and metrics observation per request.
 */
@Injectable()
export class GatewayCalls {
  private readonly logger = new Logger('Gateway');

  constructor(
    private readonly config: AppConfig,
    private readonly registry: ModelRegistry,
    private readonly writer: RequestLogWriter,
    private readonly metrics: MetricsService,
    private readonly inflight: InflightService,
    private readonly appLogger: AppLogger,
    private readonly limits: UsageLimiter,
    private readonly adapters: AdapterRegistry,
  ) {}

  /**
   * Holds the request to its key's limits before any upstream call (429 when over); the hold is
   * settled with the request's real usage when its row is written. Endpoints need ApiKeyGuard.
   */
  /**
   * A chat request's charge, with what each route's adapter may have its upstream write, at the
   * dearest of the models that may answer it (RouteExecutor.models).
   */
  chatCharge(models: readonly ModelDef[], req: ChatRequest): Charge {
    const outputLimit = (route: RouteDef, allowed: number) => this.adapters.get(route.kind)?.outputLimit?.(req, allowed, route) ?? allowed;
    const prompt = estimatePromptTokens(req);
    return dearest(models.map((model) => chatCharge(model, req, outputLimit, prompt)));
  }

  async admit(scope: CallScope, res: Response, estimate: () => Charge): Promise<void> {
    scope.rec.lease = await this.limits.admit(scope.ctx, res, estimate);
  }

  async handle(
    req: Request,
    res: Response,
    what: string,
    work: (scope: CallScope) => Promise<void>,
    shape: ErrorShape = OPENAI_ERRORS,
  ): Promise<void> {
    const ctx = contextOf(req);
    const rec = new RequestRecord(ctx?.requestId ?? requestId(), ctx?.startedAt ?? performance.now());
    const clientId = req.headers['x-request-id'];
    if (typeof clientId === 'string' && clientId) rec.clientRequestId = clientId.slice(0, 200);
    rec.keyId = ctx?.principal?.id ?? null;
    // Express keeps the path as sent; the first middleware served it as /v1/... .
    rec.openRouterBase = req.originalUrl.startsWith('/api/v1/');
    const body = req.body as Record<string, unknown> | undefined;
    if (body && typeof body.model === 'string') rec.model = body.model;
    // Also for a request refused before its handler reads the body (shutdown's 503).
    if (body?.stream === true) rec.stream = true;
    const abort = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) abort.abort();
    };
    res.on('close', onClose);
    // A pipelined request's response gets no close should the connection die before its turn:
    // the connection's own close says the client left.
    const closers = onSocketClose(req.socket);
    closers.add(onClose);
    if (req.socket.destroyed) onClose();
    const ticket = this.inflight.enter(abort, res);
    try {
      if (!ticket) {
        // Its connection closes after the answer: the client's next request goes elsewhere.
        if (!res.headersSent) res.setHeader('connection', 'close');
        throw new ServiceUnavailableError('The gateway is shutting down; retry on another instance');
      }
      const refused = bodyErrorOf(req);
      if (refused) throw refused;
      await work({ rec, ctx, signal: abort.signal, snapshot: this.registry.current() });
    } catch (err) {
      this.answerError(err, rec, res, abort.signal, shape, ticket?.shutdown);
    } finally {
      res.off('close', onClose);
      closers.delete(onClose);
      // An answer the client has not taken whole yet (large, or a client that stopped reading).
      if (res.writableEnded && !res.writableFinished) disconnectIfStalled(res, 'finish', this.config.env.CLIENT_WRITE_TIMEOUT_MS);
      ticket?.leave();
      this.account(rec, what);
    }
  }

  /**
   * The model a request names, checked against the endpoint: embedding models answer only
   * `/v1/embeddings`, chat models every other endpoint.
   */
  resolveModel(scope: CallScope, name: string, type: ModelDef['type']): ModelDef {
    // The name asked for, also when the body named it only in `models` (read by the validator).
    scope.rec.model = name;
    const model = scope.snapshot.find(name);
    if (!model) throw new ModelNotFoundError(name);
    if (model.type !== type) {
      throw new InvalidRequestError(
        type === 'embedding'
          ? `The model "${model.id}" is a chat model; /v1/embeddings serves models configured with type: embedding`
          : `The model "${model.id}" is an embedding model; use /v1/embeddings`,
        'model',
        'model_not_supported',
      );
    }
    scope.rec.model = model.id;
    scope.rec.modelDef = model;
    return model;
  }

  sendJson(res: Response, payload: unknown): void {
    const json = JSON.stringify(payload);
    res.statusCode = 200;
    res.setHeader('content-type', 'application/json; charset=utf-8');
    res.setHeader('content-length', Buffer.byteLength(json));
    res.end(json);
  }

  private answerError(err: unknown, rec: RequestRecord, res: Response, signal: AbortSignal, shape: ErrorShape, shutdown?: boolean): void {
    let e: GatewayError;
    if (shutdown && signal.aborted) {
      e = new ServiceUnavailableError('The gateway shut down before the answer was complete');
    } else if (err instanceof GatewayError) {
      e = err;
    } else {
      this.appLogger.pino.error({ reqId: rec.id, err }, `request ${rec.id} failed: ${(err as Error)?.message ?? String(err)}`);
      rec.fail(500, `internal error: ${(err as Error)?.message ?? String(err)}`, 'internal_error');
      const internal = new InternalError(`The gateway failed to handle this request (request id ${rec.id})`);
      if (res.headersSent) shape.endStream(res, internal, rec);
      else shape.send(res, internal, rec.id);
      return;
    }
    if (e instanceof UpstreamError && e.failure === 'aborted' && !shutdown) {
      rec.fail(499, 'the client closed the request', 'client_closed_request');
      return;
    }
    rec.fail(shape.status?.(e) ?? e.status, e.message, e.code);
    if (res.headersSent) shape.endStream(res, e, rec);
    else shape.send(res, e, rec.id);
  }

  private account(rec: RequestRecord, what: string): void {
    try {
      let row: ApiLog;
      try {
        row = rec.toRow(this.config.env.DB_STORE_FULL_CONTENT);
      } catch (err) {
        // A bug here must not cost the request its row, nor its key a concurrency slot for good.
        this.appLogger.pino.error({ reqId: rec.id, err }, `request ${rec.id}: its row could not be made from the upstream's figures`);
        rec.usage = undefined;
        row = rec.toRow(this.config.env.DB_STORE_FULL_CONTENT);
      }
      rec.lease?.settle(row);
      this.writer.enqueue(row);
      this.metrics.observeRequest(rec.observation(row, rec.modelDef || !rec.model ? undefined : this.registry.current().find(rec.model)));
      const ex = rec.execution;
      for (const a of ex?.attempts ?? []) this.metrics.observeAttempt(a.model ?? ex!.requested.id, a.provider, a.route, a.outcome);
      const log = this.appLogger.access;
      if (log.isLevelEnabled('info')) {
        log.info(
          {
            reqId: rec.id,
            client_request_id: rec.clientRequestId,
            model: row.model,
            route: row.endpoint,
            stream: row.stream,
            status: row.status_code,
            latency_ms: row.latency_ms,
            ttft_ms: row.ttft_ms,
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            error: row.error ?? undefined,
          },
          what,
        );
      }
    } catch (err) {
      this.logger.error(err instanceof Error ? err : String(err));
      rec.lease?.settle({ total_tokens: 0, cost_usd: '0' });
    }
  }
}
