import { Injectable } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import type { ChatChunk, ChatRequest, ChatResponse } from '../../common/chat.types';
import { UpstreamError } from '../../common/errors';
import { isJsonObject } from '../../common/json-object';
import { isReasoningCarrier } from '../../common/reasoning';
import { bodyChunks, SseDecoder } from '../../common/sse';
import type { RouteDef } from '../../config/registry.types';
import { KeyPool } from '../http/key-pool.service';
import {
  callInfo,
  joinUrl,
  notEventStreamError,
  optionNumber,
  optionString,
  parseAnswer,
  parseEvent,
  postJson,
  probeGet,
  protocolError,
  readJson,
  releaseBody,
  withExtraBody,
} from '../http/upstream-call';
import { UpstreamClient } from '../http/upstream-client.service';
import {
  LlmAdapter,
  type CallContext,
  type MessagesCall,
  type MessagesEvent,
  type MessagesRelay,
  type MessagesReply,
  type ProbeResult,
} from '../llm-adapter';
import {
  ANTHROPIC_VERSION,
  AnthropicStreamTranslator,
  anthropicHttpError,
  anthropicStreamError,
  fitThinking,
  fromAnthropicResponse,
  mergeBetas,
  toAnthropicRequest,
  claudeOutputAllowance,
} from './anthropic.mapper';
import type { AnthropicRequest, AnthropicResponse, AnthropicStreamEvent, AnthropicThinking } from './anthropic.types';

export const ANTHROPIC_API = 'https://api.anthropic.com/v1';

/** The Messages API's endpoints, relative to the API root. */
export type MessagesEndpoint = 'messages' | 'messages/count_tokens';

/** What the client said about the protocol, carried upstream on the Anthropic surface's passthrough. */
export interface ClientProtocol {
  betas?: readonly string[];
  version?: string;
}

/** An upstream call the upstream accepted (status below 400), its body unread. */
export interface Accepted {
  res: Dispatcher.ResponseData;
  /** What an `error` event in this call's stream means (an account-level limit, for subscriptions). */
  streamError(err: { type?: string; message?: string }): UpstreamError;
}

/**
 * Anthropic's Messages API (`x-api-key`, `anthropic-version`). Route options: `default_max_tokens`
 * (sent when the client sets no max_tokens; default 4096) and `anthropic_beta` (the
 * `anthropic-beta` header). Chat requests are translated; the Anthropic surface's requests are
 * relayed as they are (`messages`). Subclasses (Claude on Vertex, subscription accounts) change
 * where requests go and how they authenticate through the protected hooks.
 */
@Injectable()
@LlmAdapter({ kind: 'anthropic', options: ['default_max_tokens', 'anthropic_beta'] })
export class AnthropicAdapter implements LlmAdapter {
  readonly messages?: MessagesRelay = {
    send: (call, route, ctx) => this.relay(call, route, ctx),
    stream: (call, route, ctx) => this.relayStream(call, route, ctx),
    countTokens: (call, route, ctx) => this.countTokens(call, route, ctx),
  };

  constructor(
    protected readonly http: UpstreamClient,
    protected readonly keys: KeyPool,
  ) {}

  outputLimit(req: ChatRequest, allowed: number, route: RouteDef): number {
    // A route's own thinking is what the body will carry (fitThinking): reserved for as sent.
    return claudeOutputAllowance(req, allowed, route.providerModelId, routeThinking(route).thinking);
  }

  validateRoute(route: RouteDef): string[] {
    const problems: string[] = [];
    const max = route.options.default_max_tokens;
    if (max !== undefined && !(Number(max) >= 1)) problems.push(`${route.where}: default_max_tokens must be a positive number`);
    if (route.apiKeys.length === 0) problems.push(`${route.where}: route kind ${route.kind} needs api_key (or api_keys)`);
    return problems;
  }

  async complete(req: ChatRequest, route: RouteDef, ctx: CallContext): Promise<ChatResponse> {
    const { res } = await this.accept(this.body(req, route, false), route, ctx, false);
    const json = await readJson<AnthropicResponse>(this.http, res, route, ctx);
    if (!json || !Array.isArray(json.content)) throw protocolError(route, 'answered without content');
    return fromAnthropicResponse(json);
  }

  async *stream(req: ChatRequest, route: RouteDef, ctx: CallContext): AsyncGenerator<ChatChunk> {
    const call = await this.accept(this.body(req, route, true), route, ctx, true);
    const { res } = call;
    const translator = new AnthropicStreamTranslator(route);
    const sse = new SseDecoder();
    try {
      read: for await (const bytes of bodyChunks(res.body)) {
        for (const ev of sse.push(bytes)) {
          const event = parseEvent<AnthropicStreamEvent>(ev.data, route);
          if (event.type === 'error') throw call.streamError(event.error ?? {});
          for (const chunk of translator.push(event)) yield chunk;
          if (translator.done) break read;
        }
      }
    } catch (err) {
      throw this.http.toUpstreamError(err, callInfo(route, ctx));
    } finally {
      sse.close();
      releaseBody(res, translator.done);
    }
    if (!translator.done && sse.notEventStream) throw notEventStreamError(res, route);
    // The answer and its stop reason came, then the connection ended without the terminator:
    // a whole answer (the Anthropic surface's relay ends it with its message_stop), not a failure.
    if (!translator.done && translator.answered) {
      yield* translator.push({ type: 'message_stop' });
      return;
    }
    if (!translator.done) throw this.unfinished(route);
  }

  async probe(route: RouteDef, signal: AbortSignal): Promise<ProbeResult> {
    return probeGet(
      this.http,
      joinUrl(this.baseUrl(route), 'models?limit=1'),
      await this.headers(route, route.apiKeys[0], false),
      route,
      signal,
      // A model listing, which an API compatible with this one may not have (a 404): the server answers.
      true,
    );
  }

  /** The API root (`https://api.anthropic.com/v1` unless the route says otherwise). */
  protected baseUrl(route: RouteDef): string {
    return route.baseUrl ?? ANTHROPIC_API;
  }

  protected url(route: RouteDef, _stream: boolean, endpoint: MessagesEndpoint = 'messages'): string {
    return joinUrl(this.baseUrl(route), endpoint);
  }

  protected body(req: ChatRequest, route: RouteDef, stream: boolean): AnthropicRequest {
    // The route's thinking takes the request's place, with what Claude requires beside it.
    const { thinking, extra } = routeThinking(route);
    const body = toAnthropicRequest(req, {
      model: route.providerModelId,
      defaultMaxTokens: optionNumber(route, 'default_max_tokens'),
      thinking,
    });
    if (stream) body.stream = true;
    else delete body.stream;
    return withExtraBody(body, extra) as unknown as AnthropicRequest;
  }

  /** A client's Messages body for this route: its upstream model, the route's extra body. */
  protected relayBody(call: MessagesCall, route: RouteDef): Record<string, unknown> {
    const { thinking, extra } = routeThinking(route);
    const body: Record<string, unknown> = { ...call.body, model: route.providerModelId };
    const messages = withoutUnsignedThinking(body.messages);
    if (messages !== body.messages) body.messages = messages;
    const out = withExtraBody(body, extra);
    if (thinking) fitThinking(out, thinking, true);
    return out;
  }

  protected async headers(
    route: RouteDef,
    key: string | undefined,
    stream: boolean,
    client?: ClientProtocol,
  ): Promise<Record<string, string>> {
    const h: Record<string, string> = {
      'content-type': 'application/json',
      accept: stream ? 'text/event-stream' : 'application/json',
      'anthropic-version': client?.version ?? ANTHROPIC_VERSION,
    };
    const beta = mergeBetas(optionString(route, 'anthropic_beta'), client?.betas);
    if (beta) h['anthropic-beta'] = beta;
    if (key) h['x-api-key'] = key;
    return { ...h, ...route.headers };
  }

  /** Maps an error response; subclasses whose front end speaks another error dialect override it. */
  protected error(status: number, text: string, route: RouteDef, retryAfterMs: number | undefined): UpstreamError {
    return anthropicHttpError(status, text, route, retryAfterMs);
  }

  /** One call the upstream accepted; subscriptions override it to spend an account of their pool. */
  protected async accept(
    body: unknown,
    route: RouteDef,
    ctx: CallContext,
    stream: boolean,
    client?: ClientProtocol,
    endpoint: MessagesEndpoint = 'messages',
  ): Promise<Accepted> {
    const res = await this.send(body as AnthropicRequest, route, ctx, stream, client, endpoint);
    return { res, streamError: (err) => anthropicStreamError(err, route) };
  }

  protected send(
    body: AnthropicRequest,
    route: RouteDef,
    ctx: CallContext,
    stream: boolean,
    client?: ClientProtocol,
    endpoint: MessagesEndpoint = 'messages',
  ): Promise<Dispatcher.ResponseData> {
    const text = JSON.stringify(body);
    const url = this.url(route, stream, endpoint);
    return this.keys.run(route, ctx, async (key) =>
      postJson(this.http, url, await this.headers(route, key, stream, client), text, route, ctx, (status, errText, retryAfter) =>
        this.error(status, errText, route, retryAfter),
      ),
    );
  }

  protected unfinished(route: RouteDef): UpstreamError {
    return new UpstreamError({
      failure: 'reset',
      message: `upstream ${route.id} ended the stream before message_stop`,
      provider: route.kind,
      route: route.id,
    });
  }

  // --- identity passthrough for the Anthropic surface ---------------------------------------

  private async relay(call: MessagesCall, route: RouteDef, ctx: CallContext): Promise<MessagesReply> {
    const body = this.relayBody(call, route);
    if (body.stream === true) body.stream = false;
    const { res } = await this.accept(body, route, ctx, false, call);
    const text = await this.http.readAnswer(res.body, res.headers, callInfo(route, ctx));
    const message = parseAnswer<unknown>(text, res, route);
    if (!message || typeof message !== 'object' || Array.isArray(message)) throw protocolError(route, 'answered without a message');
    return { text, message: message as Record<string, unknown> };
  }

  /**
   * The upstream's events as they arrive, each with its data exactly as sent (only the event
   * name is looked at). An `error` event is thrown as the typed error it stands for.
   */
  private async *relayStream(call: MessagesCall, route: RouteDef, ctx: CallContext): AsyncGenerator<MessagesEvent> {
    const body = this.relayBody(call, route);
    body.stream = true;
    const accepted = await this.accept(body, route, ctx, true, call);
    const { res } = accepted;
    const sse = new SseDecoder();
    let done = false;
    let answered = false;
    try {
      read: for await (const bytes of bodyChunks(res.body)) {
        for (const ev of sse.push(bytes)) {
          const event = ev.event ?? parseEvent<{ type?: string }>(ev.data, route).type ?? 'message';
          if (event === 'error')
            throw accepted.streamError(parseEvent<{ error?: { type?: string; message?: string } }>(ev.data, route).error ?? {});
          if (event === 'message_delta')
            answered ||= parseEvent<{ delta?: { stop_reason?: unknown } }>(ev.data, route).delta?.stop_reason != null;
          yield { event, data: ev.data };
          if (event === 'message_stop') {
            done = true;
            break read;
          }
        }
      }
    } catch (err) {
      throw this.http.toUpstreamError(err, callInfo(route, ctx));
    } finally {
      sse.close();
      releaseBody(res, done);
    }
    if (!done && sse.notEventStream) throw notEventStreamError(res, route);
    // The stop reason came, then the connection ended without the terminator: a whole answer.
    if (!done && answered) {
      yield { event: 'message_stop', data: '{"type":"message_stop"}' };
      return;
    }
    if (!done) throw this.unfinished(route);
  }

  private async countTokens(call: MessagesCall, route: RouteDef, ctx: CallContext): Promise<number> {
    const { stream: _stream, max_tokens: _max, ...body } = this.relayBody(call, route);
    const { res } = await this.accept(body, route, ctx, false, call, 'messages/count_tokens');
    const json = await readJson<{ input_tokens?: unknown }>(this.http, res, route, ctx);
    if (typeof json?.input_tokens !== 'number') throw protocolError(route, 'answered count_tokens without input_tokens');
    return json.input_tokens;
  }
}

/**
 * Assistant turns without the thinking blocks that carry no signature: a translated route's
 * reasoning (another model's), which a client such as Claude Code sends back when the
 * conversation moves to a Claude route. Anthropic checks every thinking block's signature and
 * refuses the request over one it did not sign. Likewise the redacted blocks carrying another
 * model's encrypted reasoning (isReasoningCarrier), whose data Claude refuses as not its own.
 * The same list when there are none.
 */
function withoutUnsignedThinking(messages: unknown): unknown {
  if (!Array.isArray(messages)) return messages;
  const unsigned = (b: unknown) =>
    isReasoningCarrier(b) ||
    (typeof b === 'object' && b !== null && (b as { type?: unknown }).type === 'thinking' && !(b as { signature?: unknown }).signature);
  const carries = (m: unknown) =>
    typeof m === 'object' &&
    m !== null &&
    (m as { role?: unknown }).role === 'assistant' &&
    Array.isArray((m as { content?: unknown }).content) &&
    (m as { content: unknown[] }).content.some(unsigned);
  if (!messages.some(carries)) return messages;
  const out: unknown[] = [];
  let dropped = false;
  for (const m of messages) {
    if (carries(m)) {
      const content = (m as { content: unknown[] }).content.filter((b) => !unsigned(b));
      // A turn that was nothing but such reasoning (a model cut off while it reasoned): Anthropic
      // refuses an empty turn, so it goes, and the user turns around it become one.
      if (content.length === 0) {
        dropped = true;
        continue;
      }
      out.push({ ...(m as object), content });
    } else if (dropped && isUserTurn(m) && isUserTurn(out[out.length - 1])) {
      out[out.length - 1] = { ...(out[out.length - 1] as object), content: [...blocksOf(out[out.length - 1]), ...blocksOf(m)] };
    } else out.push(m);
    dropped = false;
  }
  return out;
}

function isUserTurn(m: unknown): boolean {
  return typeof m === 'object' && m !== null && (m as { role?: unknown }).role === 'user';
}

/** A turn's content as blocks (a string is one text block). */
function blocksOf(m: unknown): unknown[] {
  const c = (m as { content?: unknown }).content;
  return typeof c === 'string' ? [{ type: 'text', text: c }] : Array.isArray(c) ? c : [];
}

/**
 * A route's `extra_body.thinking` apart from the rest of it: set as it is over a body, it kept
 * the temperature, top_k and max_tokens Claude refuses beside thinking.
 */
function routeThinking(route: RouteDef): { thinking?: AnthropicThinking; extra?: Readonly<Record<string, unknown>> } {
  const extra = route.extraBody;
  if (!extra || !isJsonObject(extra.thinking) || typeof extra.thinking.type !== 'string') return { extra };
  const { thinking, ...rest } = extra;
  return { thinking: thinking as unknown as AnthropicThinking, extra: rest };
}
