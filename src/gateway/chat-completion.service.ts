import { Injectable, Logger } from '@nestjs/common';
import type { Request, Response } from 'express';
import type { ChatChunk, ChatRequest, ChatResponse } from '../common/chat.types';
import { GatewayError, ModelNotFoundError, ServiceUnavailableError, UpstreamError } from '../common/errors';
import { errorBody, sendError, sendGatewayError } from '../common/openai-error';
import { requestContext } from '../common/request-context';
import { estimatePromptTokens } from '../common/tokens';
import { usageFromCounts } from '../common/usage';
import { AppConfig } from '../config/app-config';
import { ModelRegistry } from '../config/model-registry.service';
import { AppLogger } from '../observability/app-logger';
import { MetricsService } from '../observability/metrics.service';
import { Execution, RouteExecutor } from '../routing/route-executor.service';
import { RequestLogWriter } from '../storage/request-log.writer';
import { validateChatRequest } from './chat-request.validator';
import { InflightService } from './inflight.service';
import { RequestRecord } from './request-record';
import { SseWriter } from './sse-writer';
import { chatCharge } from './charge-estimate';
import { UsageLimiter } from './usage-limiter.service';

/**
 * Serves POST /v1/chat/completions: validate, resolve the model, run the routes, answer as JSON
 * or as a relayed event stream, and account for the request in exactly one log row whatever
 * happened (success, upstream failure, client gone, shutdown).
 */
@Injectable()
export class ChatCompletionService {
  private readonly logger = new Logger('Chat');

  constructor(
    private readonly config: AppConfig,
    private readonly registry: ModelRegistry,
    private readonly executor: RouteExecutor,
    private readonly writer: RequestLogWriter,
    private readonly metrics: MetricsService,
    private readonly inflight: InflightService,
    private readonly appLogger: AppLogger,
    private readonly limits: UsageLimiter,
  ) {}

  async handle(req: Request, res: Response): Promise<void> {
    const ctx = requestContext.getStore();
    const rec = new RequestRecord(ctx?.requestId ?? crypto.randomUUID(), ctx?.startedAt ?? performance.now());
    const clientId = req.headers['x-request-id'];
    if (typeof clientId === 'string' && clientId) rec.clientRequestId = clientId.slice(0, 200);
    rec.keyId = ctx?.keyId ?? null;
    const abort = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) abort.abort();
    };
    res.on('close', onClose);
    const ticket = this.inflight.enter(abort);
    try {
      if (!ticket) throw new ServiceUnavailableError('The gateway is shutting down; retry on another instance');
      const body = req.body as Record<string, unknown> | undefined;
      if (body && typeof body.model === 'string') rec.model = body.model;
      const chat = validateChatRequest(body);
      rec.request = chat;
      rec.stream = chat.stream === true;
      rec.userId = typeof chat.user === 'string' ? chat.user : null;
      const snapshot = this.registry.current();
      const model = snapshot.find(chat.model);
      if (!model) throw new ModelNotFoundError(chat.model);
      rec.model = model.id;
      rec.modelDef = model;
      rec.lease = await this.limits.admit(res, () => chatCharge(model, chat));
      const ex = new Execution(model, chat, rec.id, abort.signal, snapshot);
      rec.execution = ex;
      if (rec.stream) await this.stream(chat, ex, rec, res, abort.signal);
      else await this.json(ex, rec, res);
    } catch (err) {
      this.answerError(err, rec, res, abort.signal, ticket?.shutdown);
    } finally {
      res.off('close', onClose);
      ticket?.leave();
      this.account(rec);
    }
  }

  private async json(ex: Execution, rec: RequestRecord, res: Response): Promise<void> {
    const upstream = await this.executor.complete(ex);
    const out = this.present(upstream, rec, ex);
    if (!out.usage) {
      // A server that reports no usage still gets accounted; the client sees the estimate too.
      const completion = out.choices.reduce((s, c) => s + Math.ceil(String(c.message?.content ?? '').length / 4), 0);
      out.usage = usageFromCounts(estimatePromptTokens(ex.request), completion);
      rec.deliveredChars = completion * 4;
    } else {
      rec.usage = out.usage;
    }
    rec.finishReason = out.choices[0]?.finish_reason ? String(out.choices[0].finish_reason) : null;
    if (this.config.env.DB_STORE_FULL_CONTENT) rec.responseContent = out;
    const json = JSON.stringify(out);
    res.statusCode = 200;
    res.setHeader('content-type', 'application/json; charset=utf-8');
    res.setHeader('content-length', Buffer.byteLength(json));
    res.end(json);
  }

  /** The upstream's answer as the client sees it: our id, the public model name, who served. */
  private present(upstream: ChatResponse, rec: RequestRecord, ex: Execution): ChatResponse {
    rec.upstreamId = typeof upstream.id === 'string' ? upstream.id : undefined;
    upstream.id = generationId(rec.id);
    upstream.object = 'chat.completion';
    upstream.model = ex.model.id;
    upstream.provider = ex.route?.kind;
    upstream.route = ex.route?.id;
    upstream.created ??= Math.floor(Date.now() / 1000);
    return upstream;
  }

  private async stream(chat: ChatRequest, ex: Execution, rec: RequestRecord, res: Response, signal: AbortSignal): Promise<void> {
    const sse = new SseWriter(res);
    const wantUsage = chat.stream_options?.include_usage === true;
    const id = generationId(rec.id);
    const content: string[] | undefined = this.config.env.DB_STORE_FULL_CONTENT ? [] : undefined;
    let keepalive: ReturnType<typeof setInterval> | undefined = setInterval(() => sse.keepalive(), this.config.env.STREAM_KEEPALIVE_MS);
    let first = true;
    let usageSent = false;
    const chunks = this.executor.stream(ex);
    try {
      for await (const chunk of chunks) {
        if (keepalive) {
          clearInterval(keepalive);
          keepalive = undefined;
        }
        if (sse.closed || signal.aborted) break;
        rec.upstreamId ??= typeof chunk.id === 'string' ? chunk.id : undefined;
        chunk.id = id;
        chunk.model = ex.model.id;
        chunk.provider = ex.route?.kind;
        chunk.route = ex.route?.id;
        if (chunk.usage) {
          rec.usage = chunk.usage;
          if (!wantUsage) {
            if (chunk.choices.length === 0) continue;
            delete chunk.usage;
          } else {
            usageSent = true;
          }
        }
        if (first && chunk.choices.length > 0) {
          first = false;
          const d = chunk.choices[0].delta;
          if (d && !d.role) chunk.choices[0].delta = { role: 'assistant', ...d };
        }
        this.track(chunk, rec, content);
        const wait = sse.write(`data: ${JSON.stringify(chunk)}\n\n`);
        if (wait) await wait;
      }
    } finally {
      if (keepalive) clearInterval(keepalive);
    }
    if (signal.aborted || sse.closed) {
      throw new UpstreamError({ failure: 'aborted', message: 'the client closed the request' });
    }
    if (wantUsage && !usageSent) {
      const usage = rec.usage ?? usageFromCounts(estimatePromptTokens(chat), Math.ceil(rec.deliveredChars / 4));
      void sse.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: ex.model.id, choices: [], usage })}\n\n`);
    }
    if (content) rec.responseContent = { content: content.join('') };
    sse.done();
  }

  private track(chunk: ChatChunk, rec: RequestRecord, content: string[] | undefined): void {
    for (const c of chunk.choices) {
      const d = c.delta;
      if (d) {
        let chars = 0;
        if (typeof d.content === 'string') {
          chars += d.content.length;
          content?.push(d.content);
        }
        if (typeof d.reasoning_content === 'string') chars += d.reasoning_content.length;
        if (typeof d.reasoning === 'string') chars += d.reasoning.length;
        if (d.tool_calls) for (const t of d.tool_calls) chars += (t.function?.arguments?.length ?? 0) + (t.function?.name?.length ?? 0);
        if (chars > 0 && rec.ttftMs === undefined) rec.ttftMs = performance.now() - rec.startedAt;
        rec.deliveredChars += chars;
      }
      if (c.finish_reason) rec.finishReason = String(c.finish_reason);
    }
  }

  private answerError(err: unknown, rec: RequestRecord, res: Response, signal: AbortSignal, shutdown?: boolean): void {
    let e: GatewayError;
    if (shutdown && signal.aborted) {
      e = new ServiceUnavailableError('The gateway shut down before the answer was complete');
    } else if (err instanceof GatewayError) {
      e = err;
    } else {
      this.logger.error(err instanceof Error ? err : String(err));
      rec.fail(500, `internal error: ${(err as Error)?.message ?? String(err)}`, 'internal_error');
      sendError(res, 500, errorBody(`The gateway failed to handle this request (request id ${rec.id})`, 'server_error', 'internal_error'));
      return;
    }
    if (e instanceof UpstreamError && e.failure === 'aborted' && !shutdown) {
      rec.fail(499, 'the client closed the request', 'client_closed_request');
      return;
    }
    rec.fail(e.status, e.message, e.code);
    if (res.headersSent) {
      // Mid-stream: the status line is gone; the error travels in-band and no [DONE] follows.
      new SseWriter(res).fail({ error: { message: e.message, type: e.type, code: e.code, param: e.param } });
    } else {
      sendGatewayError(res, e);
    }
  }

  private account(rec: RequestRecord): void {
    try {
      const row = rec.toRow(this.config.env.DB_STORE_FULL_CONTENT);
      rec.lease?.settle(row);
      this.writer.enqueue(row);
      this.metrics.observeRequest(rec.observation(row));
      for (const a of rec.execution?.attempts ?? []) this.metrics.observeAttempt(a.provider, a.route, a.outcome);
      const log = this.appLogger.access;
      if (log.isLevelEnabled('info')) {
        log.info(
          { reqId: rec.id, model: row.model, route: row.endpoint, stream: row.stream, status: row.status_code, latency_ms: row.latency_ms, ttft_ms: row.ttft_ms, prompt_tokens: row.prompt_tokens, completion_tokens: row.completion_tokens, error: row.error ?? undefined },
          'chat completion',
        );
      }
    } catch (err) {
      this.logger.error(err instanceof Error ? err : String(err));
    }
  }
}

/** The id clients see (and later look a generation up by). */
export function generationId(requestId: string): string {
  return `gen-${requestId}`;
}
