import { Injectable } from '@nestjs/common';
import type { Request, Response } from 'express';
import type { CallContext, LlmAdapter } from '../adapters/llm-adapter';
import { chatChunkToCompletion, chatToCompletion, completionAsChatRequest } from '../adapters/text-completion.mapper';
import type { ChatChunk, ChatRequest } from '../common/chat.types';
import type { CompletionRequest } from '../common/completion.types';
import { UpstreamError } from '../common/errors';
import { estimatePromptTokens, textUnits, unitsToTokens } from '../common/tokens';
import { clientUsage, isSoundUsage, usageFromCounts } from '../common/usage';
import { AppConfig } from '../config/app-config';
import type { RouteDef } from '../config/registry.types';
import { Execution, RouteExecutor } from '../routing/route-executor.service';
import { validateCompletionRequest } from './completion-request.validator';
import { GatewayCalls, TEXT_COMPLETION_ERRORS, type CallScope } from './gateway-call.service';
import { generationId, type RequestRecord } from './request-record';
import { keepaliveWhileAccepted, SseWriter } from './sse-writer';
import { StreamUsage } from './stream-usage';

/**
 * Serves POST /v1/completions (OpenAI's legacy text completions), JSON or SSE. Backends with a
 * native endpoint (vLLM, SGLang, Ollama, OpenAI, OpenRouter, ...) get the request as it is;
 * chat-only backends (Anthropic, Gemini, DeepSeek, ...) get the prompt as one user message.
 * Either way the client sees `text_completion` objects, and the request is accounted like chat.
 */
@Injectable()
export class TextCompletionService {
  constructor(
    private readonly config: AppConfig,
    private readonly calls: GatewayCalls,
    private readonly executor: RouteExecutor,
  ) {}

  async handle(req: Request, res: Response): Promise<void> {
    await this.calls.handle(
      req,
      res,
      'text completion',
      async (scope) => {
        const body = validateCompletionRequest(req.body);
        const { rec } = scope;
        rec.body = body;
        // An echo the estimate cannot take off (token-id prompts): the record counts no output from what was delivered.
        rec.echoed = body.echo === true && !EchoedPrompts.strippable(body);
        rec.stream = body.stream === true;
        rec.userId = typeof body.user === 'string' ? body.user : null;
        const model = this.calls.resolveModel(scope, body.model, 'chat');
        // The chat form serves chat-only routes; a prompt it cannot express fails only those.
        let chat: ChatRequest | UpstreamError;
        try {
          chat = completionAsChatRequest(body);
        } catch (err) {
          if (!(err instanceof UpstreamError)) throw err;
          chat = err;
        }
        const view = chat instanceof UpstreamError ? promptView(body) : chat;
        rec.request = view;
        const ex = new Execution(model, view, rec.id, scope.signal, scope.snapshot);
        const models = this.executor.models(ex);
        await this.calls.admit(scope, res, () => this.calls.chatCharge(models, { ...view, n: completionsAsked(body) }));
        rec.execution = ex;
        if (rec.stream) await this.stream(body, chat, ex, scope, res);
        else await this.json(body, chat, ex, rec, res);
      },
      TEXT_COMPLETION_ERRORS,
    );
  }

  private async json(
    body: CompletionRequest,
    chat: ChatRequest | UpstreamError,
    ex: Execution,
    rec: RequestRecord,
    res: Response,
  ): Promise<void> {
    const answer = await this.executor.run(ex, (adapter, route, ctx) => {
      if (adapter.completeText) return adapter.completeText(body, route, ctx);
      return chat instanceof UpstreamError ? Promise.reject(chat) : adapter.complete(chat, route, ctx);
    });
    rec.answered();
    rec.upstreamId = typeof answer.id === 'string' ? answer.id : undefined;
    const out = chatToCompletion(answer);
    out.id = generationId(rec.id);
    out.model = ex.model.id;
    out.provider = ex.route?.kind;
    out.route = ex.route?.id;
    out.created ??= Math.floor(Date.now() / 1000);
    // What the choices generated: their text, less the prompt an `echo` repeats before it.
    const echo = new EchoedPrompts(body);
    const generated = () => out.choices.reduce((s, c) => s + textUnits(echo.strip(c.index ?? 0, c.text ?? '')), 0);
    if (isSoundUsage(out.usage)) {
      rec.usage = out.usage;
      // No output counted for an answer with some: the record estimates it, and the client sees that.
      if (out.usage.completion_tokens === 0) rec.deliveredUnits = generated();
      out.usage = clientUsage(rec.presentedUsage()!);
    } else {
      // Counted as a stream of the same choices is: all of the text, turned into tokens once.
      const units = generated();
      out.usage = usageFromCounts(estimatePromptTokens(ex.request), unitsToTokens(units));
      rec.deliveredUnits = units;
    }
    // What the gateway bills for it, in USD, as OpenRouter's usage.cost says (the row's cost_usd).
    out.usage = { ...out.usage, cost: rec.costUsd() };
    rec.finishReason = out.choices[0]?.finish_reason ?? null;
    if (this.config.env.DB_STORE_FULL_CONTENT) rec.responseContent = out;
    this.calls.sendJson(res, out);
  }

  private async stream(
    body: CompletionRequest,
    chat: ChatRequest | UpstreamError,
    ex: Execution,
    scope: CallScope,
    res: Response,
  ): Promise<void> {
    const { rec, signal } = scope;
    const sse = new SseWriter(res, {
      keepaliveMs: this.config.env.STREAM_KEEPALIVE_MS,
      stallMs: this.config.env.CLIENT_WRITE_TIMEOUT_MS,
      signal,
    });
    keepaliveWhileAccepted(ex, sse);
    const usage = new StreamUsage(body, rec);
    const id = generationId(rec.id);
    // The stored copy: each choice's text apart, with its finish reason, as a one-shot answer.
    const stored = this.config.env.DB_STORE_FULL_CONTENT ? new Map<number, { text: string; finish_reason: string | null }>() : undefined;
    // Where each choice's text has got to, for logprobs' text_offset across chunks.
    const offsets = new Map<number, number>();
    const echo = new EchoedPrompts(body);
    const open = (adapter: LlmAdapter, route: RouteDef, ctx: CallContext): AsyncIterable<ChatChunk> => {
      if (adapter.streamText) return adapter.streamText(body, route, ctx);
      return chat instanceof UpstreamError ? failing(chat) : adapter.stream(chat, route, ctx);
    };
    try {
      for await (const chunk of this.executor.stream(ex, open)) {
        if (sse.closed || signal.aborted) break;
        rec.upstreamId ??= typeof chunk.id === 'string' ? chunk.id : undefined;
        if (!usage.take(chunk)) continue;
        sse.stopKeepalive();
        const out = chatChunkToCompletion(chunk, offsets);
        out.id = id;
        out.model = ex.model.id;
        out.provider = ex.route?.kind;
        out.route = ex.route?.id;
        for (const c of out.choices) {
          const kept = stored && (stored.get(c.index) ?? stored.set(c.index, { text: '', finish_reason: null }).get(c.index)!);
          if (c.text) {
            rec.ttftMs ??= performance.now() - rec.startedAt;
            rec.deliveredUnits += textUnits(echo.strip(c.index ?? 0, c.text));
            if (kept) kept.text += c.text;
          }
          rec.sentChoice(c.index, !!c.finish_reason);
          if (c.finish_reason) {
            // Choice 0's, as a one-shot answer's row has it.
            if ((c.index ?? 0) === 0) rec.finishReason = c.finish_reason;
            if (kept) kept.finish_reason = c.finish_reason;
          }
        }
        const wait = sse.write(`data: ${JSON.stringify(out)}\n\n`);
        if (wait) await wait;
      }
    } finally {
      sse.stopKeepalive();
    }
    if (signal.aborted || sse.closed) throw new UpstreamError({ failure: 'aborted', message: 'the client closed the request' });
    if (usage.wanted) {
      const final = { ...clientUsage(usage.final(() => estimatePromptTokens(ex.request))), cost: rec.costUsd() };
      const named = { id, model: ex.model.id, provider: ex.route?.kind, route: ex.route?.id };
      const last = usage.held
        ? { ...chatChunkToCompletion(usage.held), ...named, usage: final }
        : { ...named, object: 'text_completion', created: Math.floor(Date.now() / 1000), choices: [], usage: final };
      void sse.write(`data: ${JSON.stringify(last)}\n\n`);
    }
    if (stored)
      rec.responseContent = {
        object: 'text_completion',
        model: ex.model.id,
        choices: [...stored.entries()].sort(([a], [b]) => a - b).map(([index, c]) => ({ index, ...c })),
        ...(rec.usage ? { usage: rec.usage } : {}),
      };
    sse.done();
  }
}

/**
 * How many completions a request makes the upstream write, for its charge: one per prompt of a
 * list, each `best_of` times (all of them billed, the best `n` returned) or `n` times.
 */
function completionsAsked(body: CompletionRequest): number {
  const p = body.prompt;
  const prompts = Array.isArray(p) && p.length > 0 && typeof p[0] !== 'number' ? p.length : 1;
  const each = Math.max(positiveInt(body.n) ?? 1, positiveInt(body.best_of) ?? 1);
  return prompts * each;
}

function positiveInt(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : undefined;
}

/** The prompt as a chat request, for planning and estimates only (never sent). */
function promptView(body: CompletionRequest): ChatRequest {
  const { prompt, ...rest } = body;
  const text =
    typeof prompt === 'string'
      ? prompt
      : (prompt as unknown[])
          .map((p) => (typeof p === 'string' ? p : Array.isArray(p) ? ' '.repeat(p.length * 4) : ' '.repeat(4)))
          .join('\n');
  return { ...rest, messages: [{ role: 'user', content: text }] };
}

/** A stream that fails with `err` when first read (a request this route cannot serve). */
function failing(err: Error): AsyncIterable<ChatChunk> {
  return {
    [Symbol.asyncIterator]: () => ({
      next: () => Promise.reject(err),
      return: () => Promise.resolve({ done: true as const, value: undefined }),
    }),
  };
}

/**
 * The prompts an `echo: true` answer repeats at the start of each choice's text, taken off again
 * where the output is estimated (an upstream without usage): the echo is the prompt, billed as
 * such, not output. Choice i answers prompt floor(i / n), as OpenAI orders them; a streamed
 * choice's echo may span chunks. Token-id prompts come back as text no one here can match.
 */
export class EchoedPrompts {
  private readonly left = new Map<number, string>();
  private readonly prompts: string[] | undefined;
  private readonly n: number;

  constructor(body: CompletionRequest) {
    this.prompts = body.echo === true ? EchoedPrompts.texts(body) : undefined;
    this.n = typeof body.n === 'number' && body.n > 0 ? body.n : 1;
  }

  /** Whether the prompts are text, which an echo repeats as it was sent (token ids come back decoded). */
  static strippable(body: CompletionRequest): boolean {
    return EchoedPrompts.texts(body) !== undefined;
  }

  private static texts(body: CompletionRequest): string[] | undefined {
    const p = body.prompt;
    return typeof p === 'string' ? [p] : Array.isArray(p) && p.every((x) => typeof x === 'string') ? p : undefined;
  }

  /** `text` (the next of choice `index`'s) without what is left of its echoed prompt. */
  strip(index: number, text: string): string {
    if (!this.prompts || !text) return text;
    let left = this.left.get(index);
    if (left === undefined) left = this.prompts[Math.floor(index / this.n)] ?? '';
    if (left === '') return text;
    let k = 0;
    while (k < left.length && k < text.length && left.charCodeAt(k) === text.charCodeAt(k)) k++;
    // All of the text was echo, or all of the echo has come; else the answer is not an echo after all.
    this.left.set(index, k === left.length || k === text.length ? left.slice(k) : '');
    return k === left.length || k === text.length ? text.slice(k) : text;
  }
}
