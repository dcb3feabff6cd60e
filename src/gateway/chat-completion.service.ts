import { Injectable } from '@nestjs/common';
import type { Request, Response } from 'express';
import { withOpenRouterReasoning, stripReasoning, type ChatChunk, type ChatRequest, type ChatResponse } from '../common/chat.types';
import { ChatAggregator, stripChunkReasoning } from '../common/chunks';
import { UpstreamError } from '../common/errors';
import { carriesMedia, estimatePromptTokens, outputUnits, unitsToTokens } from '../common/tokens';
import { clientUsage, isSoundUsage, usageFromCounts } from '../common/usage';
import { AppConfig } from '../config/app-config';
import { Execution, RouteExecutor } from '../routing/route-executor.service';
import { validateChatRequest } from './chat-request.validator';
import { GatewayCalls } from './gateway-call.service';
import { generationId, type RequestRecord } from './request-record';
import { keepaliveWhileAccepted, SseWriter } from './sse-writer';
import { StreamUsage } from './stream-usage';

/**
 * Serves POST /v1/chat/completions: validate, resolve the model, run the routes, answer as JSON
 * or as a relayed event stream, and account for the request in exactly one log row whatever
 * happened (success, upstream failure, client gone, shutdown).
 */
@Injectable()
export class ChatCompletionService {
  constructor(
    private readonly config: AppConfig,
    private readonly executor: RouteExecutor,
    private readonly calls: GatewayCalls,
  ) {}

  async handle(req: Request, res: Response): Promise<void> {
    await this.calls.handle(req, res, 'chat completion', async (scope) => {
      const { rec } = scope;
      const chat = validateChatRequest(req.body);
      rec.request = chat;
      rec.stream = chat.stream === true;
      rec.userId = typeof chat.user === 'string' ? chat.user : null;
      const model = this.calls.resolveModel(scope, chat.model, 'chat');
      const ex = new Execution(model, chat, rec.id, scope.signal, scope.snapshot);
      const models = this.executor.models(ex);
      await this.calls.admit(scope, res, () => this.calls.chatCharge(models, chat));
      rec.execution = ex;
      if (rec.stream) await this.stream(chat, ex, rec, res, scope.signal);
      else await this.json(ex, rec, res);
    });
  }

  private async json(ex: Execution, rec: RequestRecord, res: Response): Promise<void> {
    const upstream = await this.executor.complete(ex);
    rec.answered();
    const out = this.present(upstream, rec, ex);
    if (!isSoundUsage(out.usage)) {
      // A server that reports no usage still gets accounted; the client sees the estimate too.
      // Every choice's text, reasoning and tool calls, as a stream of the same answer counts them.
      const chars = out.choices.reduce((s, c) => s + outputUnits(c.message), 0);
      out.usage = usageFromCounts(estimatePromptTokens(ex.request), unitsToTokens(chars));
      rec.deliveredUnits = chars;
    } else {
      rec.usage = out.usage;
      // No output counted for an answer with some: the record estimates it, and the client sees that.
      if (out.usage.completion_tokens === 0) rec.deliveredUnits = out.choices.reduce((s, c) => s + outputUnits(c.message), 0);
      out.usage = clientUsage(rec.presentedUsage()!);
    }
    // What the gateway bills for it, in USD, as OpenRouter's usage.cost says (the row's cost_usd).
    out.usage = { ...out.usage, cost: rec.costUsd() };
    rec.finishReason = out.choices[0]?.finish_reason ? String(out.choices[0].finish_reason) : null;
    if (this.config.env.DB_STORE_FULL_CONTENT) rec.responseContent = out;
    if (reasoningExcluded(ex.request)) for (const c of out.choices) if (c.message) stripReasoning(c.message);
    this.calls.sendJson(res, out);
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
    for (const c of upstream.choices) if (c.message) withOpenRouterReasoning(c.message);
    return upstream;
  }

  private async stream(chat: ChatRequest, ex: Execution, rec: RequestRecord, res: Response, signal: AbortSignal): Promise<void> {
    const sse = new SseWriter(res, {
      keepaliveMs: this.config.env.STREAM_KEEPALIVE_MS,
      stallMs: this.config.env.CLIENT_WRITE_TIMEOUT_MS,
      signal,
    });
    keepaliveWhileAccepted(ex, sse);
    const usage = new StreamUsage(chat, rec);
    const id = generationId(rec.id);
    // The stored copy of the answer: every choice whole, as a one-shot answer is stored.
    const stored = this.config.env.DB_STORE_FULL_CONTENT ? new ChatAggregator() : undefined;
    let first = true;
    const exclude = reasoningExcluded(chat);
    const chunks = this.executor.stream(ex);
    try {
      for await (const chunk of chunks) {
        if (sse.closed || signal.aborted) break;
        rec.upstreamId ??= typeof chunk.id === 'string' ? chunk.id : undefined;
        chunk.id = id;
        // As a one-shot answer gets them: clients with strict types need both.
        chunk.object = 'chat.completion.chunk';
        chunk.created ??= Math.floor(Date.now() / 1000);
        chunk.model = ex.model.id;
        chunk.provider = ex.route?.kind;
        chunk.route = ex.route?.id;
        if (!usage.take(chunk)) continue;
        sse.stopKeepalive();
        if (first && chunk.choices.length > 0) {
          first = false;
          const d = chunk.choices[0].delta;
          if (d && !d.role) chunk.choices[0].delta = { role: 'assistant', ...d };
        }
        for (const c of chunk.choices) if (c.delta) withOpenRouterReasoning(c.delta);
        this.track(chunk, rec);
        stored?.push(chunk);
        if (exclude && !stripChunkReasoning(chunk)) continue;
        const wait = sse.write(`data: ${JSON.stringify(chunk)}\n\n`);
        if (wait) await wait;
      }
    } finally {
      sse.stopKeepalive();
    }
    if (signal.aborted || sse.closed) {
      throw new UpstreamError({ failure: 'aborted', message: 'the client closed the request' });
    }
    if (usage.wanted) {
      const final = { ...clientUsage(usage.final(() => estimatePromptTokens(chat))), cost: rec.costUsd() };
      const last = usage.held
        ? { ...usage.held, usage: final }
        : {
            id,
            object: 'chat.completion.chunk',
            created: Math.floor(Date.now() / 1000),
            model: ex.model.id,
            provider: ex.route?.kind,
            route: ex.route?.id,
            choices: [],
            usage: final,
          };
      void sse.write(`data: ${JSON.stringify(last)}\n\n`);
    }
    if (stored) {
      const answer = stored.result();
      if (rec.usage) answer.usage = rec.usage;
      rec.responseContent = answer;
    }
    sse.done();
  }

  private track(chunk: ChatChunk, rec: RequestRecord): void {
    for (const c of chunk.choices) {
      const d = c.delta;
      if (d) {
        const chars = outputUnits(d);
        // An image or audio (an image model's, a spoken answer) is content too, though it counts no text.
        const content = chars > 0 || carriesMedia(d);
        if (content && rec.ttftMs === undefined) rec.ttftMs = performance.now() - rec.startedAt;
        rec.deliveredUnits += chars;
      }
      // Choice 0's, as a one-shot answer's row has it (n > 1 ends its choices in any order).
      if (c.finish_reason && (c.index ?? 0) === 0) rec.finishReason = String(c.finish_reason);
      rec.sentChoice(c.index, !!c.finish_reason);
    }
  }
}

/** OpenRouter's `reasoning: {exclude: true}`: the model reasons, the answer leaves it out. */
function reasoningExcluded(req: ChatRequest): boolean {
  const r = req.reasoning as { exclude?: unknown } | undefined;
  return typeof r === 'object' && r !== null && r.exclude === true;
}
