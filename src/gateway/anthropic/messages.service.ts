import { Injectable } from '@nestjs/common';
import type { Request, Response } from 'express';
import { AdapterRegistry } from '../../adapters/adapter-registry.service';
import { anthropicUsage, finishReason, mergeDeltaUsage } from '../../adapters/anthropic/anthropic.mapper';
import type { AnthropicUsage } from '../../adapters/anthropic/anthropic.types';
import type { CallContext, LlmAdapter, MessagesCall, MessagesEvent } from '../../adapters/llm-adapter';
import { GATEWAY_ONLY_FIELDS, type ChatChunk, type ChatMessage, type ChatRequest, type Usage } from '../../common/chat.types';
import { chunkHasContent } from '../../common/chunks';
import { UpstreamError } from '../../common/errors';
import { charUnits, contentText, estimatePromptTokens, outputUnits, textUnits, unitsToTokens } from '../../common/tokens';
import { isSoundUsage } from '../../common/usage';
import { AppConfig } from '../../config/app-config';
import type { RouteDef } from '../../config/registry.types';
import { Execution, RouteExecutor, type StreamShape } from '../../routing/route-executor.service';
import { ANTHROPIC_ERRORS, GatewayCalls, type CallScope } from '../gateway-call.service';
import type { RequestRecord } from '../request-record';
import { keepaliveWhileAccepted, SseWriter } from '../sse-writer';
import { CLAUDE_ONLY_FIELDS, ChatToMessagesStream, chatToMessage, messagesToChat, toolUseIdsOf } from './messages.mapper';
import { betasOf, validateMessagesRequest } from './messages.validator';

type Json = Record<string, unknown>;

/**
 * A surface event; `estimated` marks a `message_delta` whose usage the gateway estimated, and
 * `chatUsage` carries a translated one's usage as the backend reported it (reasoning tokens and
 * a provider's cost have no place in Anthropic's usage, but are billed and logged).
 */
/**
 * An event as the surface relays it, with what the tally reads beside it: a translated stream's
 * final usage as its backend reported it (`chatUsage`, on `message_delta`), and the backend's
 * running figure so far (`runningUsage`, on the last event of the chunk that carried it: Gemini's
 * usage on every event), which bills a stream cut later on the backend's count.
 */
/** `upstreamId`: a translated stream's upstream answer id, on its first event (its message_start carries the gateway's own). */
type SurfaceEvent = MessagesEvent & { estimated?: boolean; chatUsage?: Usage; runningUsage?: Usage; upstreamId?: string };

/**
 * Streams commit to a route at the first event after the opening (`message_start`, `ping`): until
 * then another route may still take over.
 */
const MESSAGES_SHAPE: StreamShape<SurfaceEvent> = {
  hasContent: (e) => e.event !== 'message_start' && e.event !== 'ping',
  completionTokens: (e) => (e.event === 'message_delta' ? outputTokensOf(e.data) : undefined),
  usage: (e) =>
    e.event === 'message_start' ? anthropicUsage((parse(e.data)?.message as Json | undefined)?.usage as AnthropicUsage) : undefined,
};

/** What a request on this surface is, whichever way it is served. */
interface MessagesJob {
  body: Json;
  call: MessagesCall;
  /** The canonical form for translated routes, or why this request cannot be translated. */
  chat: ChatRequest | UpstreamError;
  /** The same for adapters that read OpenRouter's extras (cache markers, reasoning_details); made when first asked for. */
  rich: () => ChatRequest | UpstreamError;
  ex: Execution;
}

/** The smallest thinking budget Claude takes. */
const MIN_THINKING_BUDGET = 1024;

/**
 * The translation an adapter gets: with OpenRouter's extras if it reads them. That form is a
 * request of its own: a completion limit the executor lowered on the plain one (to what a
 * route's context window leaves) is carried over, and a thinking budget kept below it.
 */
function chatFor(adapter: LlmAdapter, job: Pick<MessagesJob, 'chat' | 'rich' | 'ex'>): ChatRequest | UpstreamError {
  if (!adapter.openRouterExtras) return job.chat;
  const rich = job.rich();
  if (rich instanceof UpstreamError || !job.ex.completionFitted) return rich;
  const limit = job.ex.request.max_tokens;
  if (typeof limit !== 'number') return rich;
  const fitted: ChatRequest = { ...rich, max_tokens: limit };
  const budget = (rich.reasoning as { max_tokens?: unknown } | undefined)?.max_tokens;
  if (typeof budget === 'number' && budget >= limit) {
    // Claude's budget is at least 1,024 tokens and below the limit: half the limit, else no thinking.
    if (limit > MIN_THINKING_BUDGET)
      fitted.reasoning = { ...(rich.reasoning as object), max_tokens: Math.max(MIN_THINKING_BUDGET, Math.floor(limit / 2)) };
    else delete fitted.reasoning;
  }
  return fitted;
}

/**
 * The Anthropic Messages API: `POST /anthropic/v1/messages` (and `/v1/messages`), `.../count_tokens`.
 * Routes whose adapter speaks Messages (`anthropic`, `vertex_claude`, `claude_sub`) get the client's request as it
 * is, model and credentials replaced, and their answer and events go back as they come (usage
 * read from `message_start` and `message_delta`); every other route gets the request translated
 * to the canonical chat form, and its answer or chunks translated back. Routing, failover, limits,
 * errors (in Anthropic's shape) and the one `api_logs` row per request are the gateway's usual.
 */
@Injectable()
export class MessagesService {
  constructor(
    private readonly config: AppConfig,
    private readonly executor: RouteExecutor,
    private readonly calls: GatewayCalls,
    private readonly adapters: AdapterRegistry,
  ) {}

  async create(req: Request, res: Response): Promise<void> {
    await this.calls.handle(
      req,
      res,
      'anthropic messages',
      async (scope) => {
        // Known before the body is checked, so that a refused stream request is logged as one.
        scope.rec.stream = (req.body as { stream?: unknown } | undefined)?.stream === true;
        const job = this.prepare(req, scope, false);
        const { rec } = scope;
        rec.stream = job.body.stream === true;
        const models = this.executor.models(job.ex);
        await this.calls.admit(scope, res, () => this.calls.chatCharge(models, job.ex.request));
        if (rec.stream) await this.stream(job, scope, res);
        else await this.json(job, rec, res);
      },
      ANTHROPIC_ERRORS,
    );
  }

  /** The input tokens of a request: the upstream's count on Claude routes, else the gateway's estimate. Not billed. */
  async countTokens(req: Request, res: Response): Promise<void> {
    await this.calls.handle(
      req,
      res,
      'anthropic count_tokens',
      async (scope) => {
        const { call, chat, ex } = this.prepare(req, scope, true);
        // Counting is free: the row records the call, with no tokens and no cost.
        scope.rec.free = true;
        scope.rec.notes.operation = 'count_tokens';
        scope.rec.usage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
        await this.calls.admit(scope, res, () => ({ tokens: 0, costPico: 0n }));
        // No route that counts (none speaks Messages): the estimate, without calling on a route
        // (an attempt it never made would count in its figures, and its 1 ms in its latency).
        const counts = this.executor.matching(ex).some((r) => this.adapters.get(r.kind)?.messages);
        if (!counts) {
          if (chat instanceof UpstreamError) throw chat;
          const estimate = estimatePromptTokens(chat);
          scope.rec.notes.input_tokens = estimate;
          this.calls.sendJson(res, { input_tokens: estimate });
          return;
        }
        const tokens = await this.executor.run(
          ex,
          (adapter, route, ctx) => {
            if (adapter.messages) return adapter.messages.countTokens(call, route, ctx);
            // Refused as /v1/messages refuses it on this route: no count for a request that cannot be sent.
            if (chat instanceof UpstreamError) throw chat;
            return Promise.resolve(estimatePromptTokens(chat));
          },
          'headers',
        );
        scope.rec.notes.input_tokens = tokens;
        this.calls.sendJson(res, { input_tokens: tokens });
      },
      ANTHROPIC_ERRORS,
    );
  }

  private prepare(req: Request, scope: CallScope, countOnly: boolean): MessagesJob {
    const { rec } = scope;
    const betas = betasOf(req.headers['anthropic-beta']);
    const body = validateMessagesRequest(req.body, countOnly, betas);
    rec.body = body;
    const user = (body.metadata as { user_id?: unknown } | undefined)?.user_id;
    rec.userId = typeof user === 'string' ? user : null;
    const model = this.calls.resolveModel(scope, body.model as string, 'chat');
    const version = req.headers['anthropic-version'];
    const { relayed, options } = splitGatewayFields(body);
    const call: MessagesCall = {
      body: relayed,
      betas,
      version: typeof version === 'string' && version ? version : undefined,
    };
    // The canonical form serves translated routes; a request it cannot express fails only those.
    let chat: ChatRequest | UpstreamError;
    try {
      chat = messagesToChat(body, model.id);
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      chat = err;
    }
    let rich: ChatRequest | UpstreamError | undefined;
    // Translated alike (the same blocks refused), only when an OpenRouter route is tried.
    // With the gateway's own options (OpenRouter's session_id, plugins, ...), as the plain form.
    const richChat = () => (rich ??= chat instanceof UpstreamError ? chat : Object.assign(messagesToChat(body, model.id, true), options));
    rec.request = chat instanceof UpstreamError ? estimateView(body, model.id) : chat;
    Object.assign(rec.request, options);
    const ex = new Execution(model, rec.request, rec.id, scope.signal, scope.snapshot);
    rec.execution = ex;
    return { body, call, chat, rich: richChat, ex };
  }

  private async json(job: MessagesJob, rec: RequestRecord, res: Response): Promise<void> {
    const { chat, call, ex } = job;
    const answer = await this.executor.run(
      ex,
      async (
        adapter,
        route,
        ctx,
      ): Promise<{ text: string; message: Json; estimated?: boolean; chatUsage?: Usage; upstreamId?: string }> => {
        if (adapter.messages) {
          // Relayed as the backend wrote it, but under the model's public id, as every answer is.
          const relayed = await adapter.messages.send(call, route, ctx);
          if (relayed.message.model === ctx.publicModel) return relayed;
          const message = { ...relayed.message, model: ctx.publicModel };
          return { ...relayed, message, text: JSON.stringify(message) };
        }
        const req = chatFor(adapter, job);
        if (req instanceof UpstreamError) throw req;
        const out = await adapter.complete(req, route, ctx);
        const ids = toolUseIdsOf(job.body.messages);
        const message = chatToMessage(out, messageId(rec.id), ctx.publicModel, stopSequencesOf(job.body), ids);
        // The message's id is the gateway's; the row keeps the backend's, as on the chat surface.
        const upstreamId = typeof out.id === 'string' ? out.id : undefined;
        if (isSoundUsage(out.usage)) return { text: JSON.stringify(message), message, chatUsage: out.usage, upstreamId };
        // No usage from the backend: the client sees the estimate the request is billed on.
        message.usage = {
          ...(message.usage as AnthropicUsage),
          // The plain form, as the request is estimated everywhere (translated alike whenever req is).
          input_tokens: estimatePromptTokens(chat as ChatRequest),
          output_tokens: unitsToTokens(contentUnits(message.content)),
        };
        return { text: JSON.stringify(message), message, estimated: true, upstreamId };
      },
    );
    rec.answered();
    const message = answer.message;
    rec.upstreamId = answer.upstreamId ?? (typeof message.id === 'string' ? message.id : undefined);
    rec.finishReason = finishReason(typeof message.stop_reason === 'string' ? message.stop_reason : null);
    const usage = message.usage as AnthropicUsage | undefined;
    if (usage) rec.usage = answer.chatUsage ?? anthropicUsage(usage);
    // Also with usage: should it be unusable, the record estimates from what was delivered.
    rec.deliveredUnits = contentUnits(message.content);
    rec.usageEstimated = answer.estimated === true;
    let text = answer.text;
    // A backend's figure that counted no output although output came is billed on an estimate: shown the same.
    const billed = answer.chatUsage && usage ? billedOutput(rec, usage.output_tokens) : undefined;
    if (billed !== undefined) {
      message.usage = { ...usage, output_tokens: billed };
      text = JSON.stringify(message);
    }
    if (this.config.env.DB_STORE_FULL_CONTENT) rec.responseContent = message;
    res.statusCode = 200;
    res.setHeader('content-type', 'application/json; charset=utf-8');
    res.setHeader('content-length', Buffer.byteLength(text));
    res.end(text);
  }

  private async stream(job: MessagesJob, scope: CallScope, res: Response): Promise<void> {
    const { rec, signal } = scope;
    const { chat, call, ex } = job;
    const sse = new SseWriter(res, {
      keepaliveMs: this.config.env.STREAM_KEEPALIVE_MS,
      stallMs: this.config.env.CLIENT_WRITE_TIMEOUT_MS,
      signal,
    });
    keepaliveWhileAccepted(ex, sse);
    const tally = new StreamTally(this.config.env.DB_STORE_FULL_CONTENT);
    /** The public id of the model the route being read serves (`message_start` names it). */
    let publicModel = ex.model.id;
    const open = (adapter: LlmAdapter, route: RouteDef, ctx: CallContext): AsyncIterable<SurfaceEvent> => {
      publicModel = ctx.publicModel;
      if (adapter.messages) return adapter.messages.stream(call, route, ctx);
      const req = chatFor(adapter, job);
      if (req instanceof UpstreamError) return failing(req);
      return translated(
        adapter.stream(req, route, ctx),
        new ChatToMessagesStream(
          messageId(rec.id),
          ctx.publicModel,
          estimatePromptTokens(chat as ChatRequest),
          stopSequencesOf(job.body),
          toolUseIdsOf(job.body.messages),
        ),
        route,
      );
    };
    try {
      for await (let event of this.executor.streamItems(ex, open, MESSAGES_SHAPE)) {
        sse.stopKeepalive();
        if (sse.closed || signal.aborted) break;
        if (event.event === 'message_start') event = underModel(event, publicModel);
        tally.see(event, rec);
        if (event.chatUsage) event = withBilledOutput(event, rec);
        // Data may span lines (a backend may pretty-print it): each line needs its own field.
        const data = event.data.includes('\n') ? event.data.replaceAll('\n', '\ndata: ') : event.data;
        const wait = sse.write(`event: ${event.event}\ndata: ${data}\n\n`);
        if (wait) await wait;
      }
    } finally {
      sse.stopKeepalive();
      tally.settle(rec);
    }
    if (signal.aborted || sse.closed) throw new UpstreamError({ failure: 'aborted', message: 'the client closed the request' });
    sse.end();
  }
}

/**
 * What a relayed or translated stream tells the request log: usage from `message_start` (input
 * and cache figures) overlaid with the cumulative figures of `message_delta`, the stop reason,
 * the time to the first content, and — for estimates when a stream is cut short — how much was
 * delivered. `message_start`, `message_delta` and content deltas are parsed; the other events
 * are relayed without being looked into.
 */
export class StreamTally {
  private usage?: AnthropicUsage;
  /** A translated stream's usage as its backend reported it. */
  private chatUsage?: Usage;
  private final = false;
  private estimated = false;
  /** A translated stream's backend reported its running usage (rec.usage holds the latest). */
  private running = false;
  /** The stored copy of the message, block by block (DB_STORE_FULL_CONTENT). */
  private readonly blocks?: Map<number, Json>;
  private stop: unknown = null;

  constructor(storeContent: boolean) {
    if (storeContent) this.blocks = new Map();
  }

  /** Keeps a block as the message will hold it: text, thinking and tool input joined from their deltas. */
  private keep(e: SurfaceEvent): void {
    // Parsed only when stored: on the relay's path every other event passes unread.
    if (!this.blocks) return;
    const d = parse(e.data);
    const index = typeof d?.index === 'number' ? d.index : undefined;
    if (index === undefined) return;
    if (e.event === 'content_block_start' && d?.content_block && typeof d.content_block === 'object') {
      const b = { ...(d.content_block as Json) };
      // Any block whose input streams (tool_use, server_tool_use, mcp_tool_use) starts as {}.
      if (b.input !== null && typeof b.input === 'object') b.input = Object.keys(b.input).length > 0 ? JSON.stringify(b.input) : '';
      this.blocks.set(index, b);
      return;
    }
    const b = this.blocks.get(index);
    const delta = d?.delta as Json | undefined;
    if (!b || !delta) return;
    if (typeof delta.text === 'string') b.text = String(b.text ?? '') + delta.text;
    if (typeof delta.thinking === 'string') b.thinking = String(b.thinking ?? '') + delta.thinking;
    if (typeof delta.signature === 'string') b.signature = delta.signature;
    if (typeof delta.partial_json === 'string') b.input = String(b.input ?? '') + delta.partial_json;
  }

  see(e: SurfaceEvent, rec: RequestRecord): void {
    if (e.upstreamId) rec.upstreamId ??= e.upstreamId;
    if (e.runningUsage) {
      // Up to and including what this event's chunk delivered (its deltas came before it).
      this.running = true;
      rec.usage = e.runningUsage;
      rec.usageSoFarAt = rec.deliveredUnits + (e.event === 'content_block_delta' ? deltaUnits(e.data) : 0);
    }
    switch (e.event) {
      case 'message_start': {
        const m = parse(e.data)?.message as Json | undefined;
        if (typeof m?.id === 'string') rec.upstreamId ??= m.id;
        if (m?.usage && typeof m.usage === 'object') this.usage = { ...(m.usage as AnthropicUsage) };
        return;
      }
      case 'message_delta': {
        const d = parse(e.data);
        const counted = mergeDeltaUsage((this.usage ??= {}), d?.usage);
        const stop = (d?.delta as { stop_reason?: unknown } | undefined)?.stop_reason;
        if (typeof stop === 'string') rec.finishReason = finishReason(stop);
        this.stop = stop ?? null;
        this.final = true;
        this.chatUsage = e.chatUsage;
        // The final figure, now: the event shows the output it bills (withBilledOutput).
        if (e.chatUsage && !e.estimated) {
          rec.usage = e.chatUsage;
          rec.usageSoFarAt = undefined;
        }
        // Without a final output count, the output is estimated from what was delivered.
        if (e.estimated || !counted) this.estimated = true;
        return;
      }
      case 'ping':
      case 'message_stop':
        return;
      case 'content_block_delta': {
        rec.ttftMs ??= performance.now() - rec.startedAt;
        // What the delta delivered, for an estimate if the upstream never reports usage (its
        // envelope is most of a short token's event, so the event's length would overstate it).
        rec.deliveredUnits += deltaUnits(e.data);
        this.keep(e);
        return;
      }
      default:
        rec.ttftMs ??= performance.now() - rec.startedAt;
        if (e.event === 'content_block_start') this.keep(e);
    }
  }

  /** Usage into the record: exact when `message_delta` came, else the input figures and an estimate of the output. */
  settle(rec: RequestRecord): void {
    if (this.blocks) {
      const content = [...this.blocks.entries()]
        .sort(([a], [b]) => a - b)
        .map(([, b]) => (typeof b.input === 'string' ? { ...b, input: parseInput(b.input) } : b));
      rec.responseContent = { type: 'message', role: 'assistant', content, stop_reason: this.stop };
    }
    if (this.final && !this.estimated && this.usage) {
      rec.usage = this.chatUsage ?? anthropicUsage(this.usage);
      rec.usageSoFarAt = undefined;
      return;
    }
    // Cut short, after the backend's running figure: that figure, and an estimate of what followed it (RequestRecord.tokens).
    if (this.running) return;
    if (!this.usage) return;
    const delivered = unitsToTokens(rec.deliveredUnits);
    rec.usage = anthropicUsage({ ...this.usage, output_tokens: Math.max(Number(this.usage.output_tokens) || 0, delivered) });
    rec.usageEstimated = true;
  }
}

const DELTA_KEYS = ['"text":"', '"partial_json":"', '"thinking":"'];

/**
 * What a `content_block_delta` event's data carries (its text, partial JSON or thinking), in
 * estimate units (textUnits), without parsing the event: the field's string up to its closing
 * quote, an escape counting as one character (a \uXXXX escape as five, close enough for an
 * estimate). Unknown deltas (signatures) count nothing.
 */
export function deltaUnits(data: string): number {
  for (const key of DELTA_KEYS) {
    const at = data.indexOf(key);
    if (at < 0) continue;
    let n = 0;
    for (let i = at + key.length; i < data.length; i++) {
      const c = data.charCodeAt(i);
      if (c === 0x22) break;
      if (c === 0x5c) i++; // a backslash escapes the next character
      n += c === 0x5c ? 1 : charUnits(c);
    }
    return n;
  }
  return 0;
}

/** A chat stream as Messages events (the translator's closing events once the chat stream ended). */
async function* translated(chunks: AsyncIterable<ChatChunk>, t: ChatToMessagesStream, route: RouteDef): AsyncGenerator<SurfaceEvent> {
  let chars = 0;
  let answered = false;
  let upstreamId: string | undefined;
  for await (const chunk of chunks) {
    answered ||= chunkHasContent(chunk);
    for (const c of chunk.choices) chars += outputUnits(c.delta);
    const events: SurfaceEvent[] = t.push(chunk);
    if (upstreamId === undefined && typeof chunk.id === 'string' && events.length > 0)
      events[0] = { ...events[0], upstreamId: (upstreamId = chunk.id) };
    // A running figure rides on a chunk with content; the usage-only chunk at the end is the final one.
    if (chunk.choices.length > 0 && isSoundUsage(chunk.usage) && events.length > 0)
      events[events.length - 1] = { ...events[events.length - 1], runningUsage: chunk.usage };
    yield* events;
  }
  // Nothing with content (a bare [DONE], or a role chunk and [DONE]): no answer, as on the chat
  // surface, not an empty message.
  if (!answered)
    throw new UpstreamError({
      failure: 'protocol',
      message: `upstream ${route.id} ended the stream without an answer`,
      route: route.id,
      provider: route.kind,
    });
  const closing: SurfaceEvent[] = t.finishEvents();
  if (!t.reported) {
    // The backend reported no usage: estimate the output from what was delivered.
    const i = closing.findIndex((e) => e.event === 'message_delta');
    const d = parse(closing[i].data)!;
    closing[i] = {
      event: 'message_delta',
      data: JSON.stringify({ ...d, usage: { output_tokens: unitsToTokens(chars) } }),
      estimated: true,
    };
  }
  const usage = t.reported;
  if (usage) {
    const i = closing.findIndex((e) => e.event === 'message_delta');
    closing[i] = { ...closing[i], chatUsage: usage };
  }
  yield* closing;
}

/**
 * The output count a translated answer's usage should show when it differs from the backend's
 * `shown`: the record's billed one (its estimate where the backend counted no output although
 * output came, RequestRecord.presentedUsage), so that the count and the cost agree.
 */
function billedOutput(rec: RequestRecord, shown: unknown): number | undefined {
  const billed = rec.presentedUsage()?.completion_tokens;
  return billed !== undefined && billed !== shown ? billed : undefined;
}

/** A translated stream's `message_delta` with the output count it is billed on. */
function withBilledOutput(e: SurfaceEvent, rec: RequestRecord): SurfaceEvent {
  const d = parse(e.data);
  const usage = d?.usage as Json | undefined;
  const billed = usage && typeof usage === 'object' ? billedOutput(rec, usage.output_tokens) : undefined;
  return billed === undefined ? e : { ...e, data: JSON.stringify({ ...d, usage: { ...usage, output_tokens: billed } }) };
}

/** A relayed `message_start` under the model's public id (a translated one names it already). */
function underModel(e: SurfaceEvent, model: string): SurfaceEvent {
  const d = parse(e.data);
  const message = d?.message as Json | undefined;
  if (!message || typeof message !== 'object' || message.model === model) return e;
  return { ...e, data: JSON.stringify({ ...d, message: { ...message, model } }) };
}

/** A stream that fails with `err` when first read (a request this route cannot be sent). */
function failing(err: Error): AsyncIterable<SurfaceEvent> {
  return {
    [Symbol.asyncIterator]: () => ({
      next: () => Promise.reject(err),
      return: () => Promise.resolve({ done: true as const, value: undefined }),
    }),
  };
}

/**
 * OpenRouter's request options (`models`, `provider`, ...) are the gateway's, as on chat: they
 * steer the routing (and reach OpenRouter routes through the canonical form), while a Claude
 * route gets the body without them; Anthropic refuses fields it does not know.
 */
function splitGatewayFields(body: Json): { relayed: Json; options: Partial<ChatRequest> } {
  if (!GATEWAY_ONLY_FIELDS.some((f) => f in body)) return { relayed: body, options: {} };
  const relayed = { ...body };
  const options: Partial<ChatRequest> = {};
  for (const f of GATEWAY_ONLY_FIELDS) {
    if (!(f in relayed)) continue;
    options[f] = relayed[f];
    delete relayed[f];
  }
  return { relayed, options };
}

/**
 * A request that cannot be translated, for planning and estimates (never sent): one with a thread,
 * MCP servers or a container as if it had none (its tools and images count), anything else as
 * text only.
 */
function estimateView(body: Json, model: string): ChatRequest {
  if (CLAUDE_ONLY_FIELDS.some((k) => body[k] !== undefined && body[k] !== null)) {
    const plain = { ...body };
    for (const k of CLAUDE_ONLY_FIELDS) delete plain[k];
    try {
      return messagesToChat(plain, model);
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
    }
  }
  return textView(body, model);
}

/** A request that cannot be translated, as text only: for planning and estimates (never sent). */
function textView(body: Json, model: string): ChatRequest {
  const messages: ChatMessage[] = [];
  const system = body.system;
  if (typeof system === 'string') messages.push({ role: 'system', content: system });
  else if (Array.isArray(system)) messages.push({ role: 'system', content: contentText(system as ChatMessage['content']) });
  for (const m of body.messages as Array<{ role: 'user' | 'assistant'; content: unknown }>) {
    messages.push({ role: m.role, content: typeof m.content === 'string' ? m.content : contentText(m.content as ChatMessage['content']) });
  }
  return { model, messages, max_tokens: typeof body.max_tokens === 'number' ? body.max_tokens : undefined };
}

function contentUnits(content: unknown): number {
  if (!Array.isArray(content)) return 0;
  let n = 0;
  for (const b of content as Json[]) {
    if (typeof b.text === 'string') n += textUnits(b.text);
    if (typeof b.thinking === 'string') n += textUnits(b.thinking);
    if (b.input !== undefined) n += textUnits(JSON.stringify(b.input));
  }
  return n;
}

function stopSequencesOf(body: Json): string[] | undefined {
  return Array.isArray(body.stop_sequences) ? (body.stop_sequences as string[]) : undefined;
}

/** The id of a translated answer (`msg_` and the request id, as Anthropic's ids look). */
function messageId(requestId: string): string {
  return `msg_${requestId.replace(/-/g, '')}`;
}

function parse(data: string): Json | undefined {
  try {
    const v = JSON.parse(data) as unknown;
    return v && typeof v === 'object' ? (v as Json) : undefined;
  } catch {
    return undefined;
  }
}

function outputTokensOf(data: string): number | undefined {
  const n = (parse(data)?.usage as { output_tokens?: unknown } | undefined)?.output_tokens;
  return typeof n === 'number' ? n : undefined;
}

/** A tool call's streamed input as the object it spells (the text itself if it spells none). */
function parseInput(text: unknown): unknown {
  if (typeof text !== 'string' || text === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
