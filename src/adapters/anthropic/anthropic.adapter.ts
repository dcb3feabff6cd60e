import { Injectable } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import type { ChatChunk, ChatRequest, ChatResponse } from '../../common/chat.types';
import { UpstreamError } from '../../common/errors';
import { bodyChunks, SseDecoder } from '../../common/sse';
import type { RouteDef } from '../../config/registry.types';
import { KeyPool } from '../http/key-pool.service';
import { callInfo, joinUrl, optionNumber, optionString, parseEvent, postJson, probeGet, protocolError, readJson, releaseBody } from '../http/upstream-call';
import { UpstreamClient } from '../http/upstream-client.service';
import { LlmAdapter, type CallContext, type ProbeResult } from '../llm-adapter';
import { ANTHROPIC_VERSION, AnthropicStreamTranslator, anthropicHttpError, fromAnthropicResponse, toAnthropicRequest } from './anthropic.mapper';
import type { AnthropicRequest, AnthropicResponse, AnthropicStreamEvent } from './anthropic.types';

export const ANTHROPIC_API = 'https://api.anthropic.com/v1';

/**
 * Anthropic's Messages API (`x-api-key`, `anthropic-version`). Route options: `default_max_tokens`
 * (sent when the client sets no max_tokens; default 4096) and `anthropic_beta` (the
 * `anthropic-beta` header). Subclasses (Claude on Vertex, subscription accounts) change where
 * requests go and how they authenticate through the protected hooks.
 */
@Injectable()
@LlmAdapter({ kind: 'anthropic' })
export class AnthropicAdapter implements LlmAdapter {
  constructor(
    protected readonly http: UpstreamClient,
    protected readonly keys: KeyPool,
  ) {}

  validateRoute(route: RouteDef): string[] {
    const problems: string[] = [];
    const max = route.options.default_max_tokens;
    if (max !== undefined && !(Number(max) >= 1)) problems.push(`${route.where}: default_max_tokens must be a positive number`);
    if (route.apiKeys.length === 0) problems.push(`${route.where}: route kind ${route.kind} needs api_key (or api_keys)`);
    return problems;
  }

  async complete(req: ChatRequest, route: RouteDef, ctx: CallContext): Promise<ChatResponse> {
    const res = await this.send(this.body(req, route, false), route, ctx, false);
    const json = await readJson<AnthropicResponse>(this.http, res, route, ctx);
    if (!json || !Array.isArray(json.content)) throw protocolError(route, 'answered without content');
    return fromAnthropicResponse(json);
  }

  async *stream(req: ChatRequest, route: RouteDef, ctx: CallContext): AsyncGenerator<ChatChunk> {
    const res = await this.send(this.body(req, route, true), route, ctx, true);
    const translator = new AnthropicStreamTranslator(route);
    const sse = new SseDecoder();
    try {
      read: for await (const bytes of bodyChunks(res.body)) {
        for (const ev of sse.push(bytes)) {
          const event = parseEvent<AnthropicStreamEvent>(ev.data, route);
          for (const chunk of translator.push(event)) yield chunk;
          if (translator.done) break read;
        }
      }
    } catch (err) {
      throw this.http.toUpstreamError(err, callInfo(route, ctx));
    } finally {
      releaseBody(res, translator.done);
    }
    if (!translator.done) {
      throw new UpstreamError({ failure: 'reset', message: `upstream ${route.id} ended the stream before message_stop`, provider: route.kind, route: route.id });
    }
  }

  async probe(route: RouteDef, signal: AbortSignal): Promise<ProbeResult> {
    return probeGet(this.http, joinUrl(this.baseUrl(route), 'models?limit=1'), await this.headers(route, route.apiKeys[0], false), route, signal);
  }

  /** The API root (`https://api.anthropic.com/v1` unless the route says otherwise). */
  protected baseUrl(route: RouteDef): string {
    return route.baseUrl ?? ANTHROPIC_API;
  }

  protected url(route: RouteDef, _stream: boolean): string {
    return joinUrl(this.baseUrl(route), 'messages');
  }

  protected body(req: ChatRequest, route: RouteDef, stream: boolean): AnthropicRequest {
    const body = toAnthropicRequest(req, { model: route.providerModelId, defaultMaxTokens: optionNumber(route, 'default_max_tokens') });
    if (stream) body.stream = true;
    else delete body.stream;
    return route.extraBody ? { ...body, ...route.extraBody } : body;
  }

  protected async headers(route: RouteDef, key: string | undefined, stream: boolean): Promise<Record<string, string>> {
    const h: Record<string, string> = {
      'content-type': 'application/json',
      accept: stream ? 'text/event-stream' : 'application/json',
      'anthropic-version': ANTHROPIC_VERSION,
    };
    const beta = optionString(route, 'anthropic_beta');
    if (beta) h['anthropic-beta'] = beta;
    if (key) h['x-api-key'] = key;
    return { ...h, ...route.headers };
  }

  /** Maps an error response; subclasses whose front end speaks another error dialect override it. */
  protected error(status: number, text: string, route: RouteDef, retryAfterMs: number | undefined): UpstreamError {
    return anthropicHttpError(status, text, route, retryAfterMs);
  }

  protected send(body: AnthropicRequest, route: RouteDef, ctx: CallContext, stream: boolean): Promise<Dispatcher.ResponseData> {
    const text = JSON.stringify(body);
    const url = this.url(route, stream);
    return this.keys.run(route, ctx, async (key) =>
      postJson(this.http, url, await this.headers(route, key, stream), text, route, ctx, (status, errText, retryAfter) => this.error(status, errText, route, retryAfter)),
    );
  }
}
