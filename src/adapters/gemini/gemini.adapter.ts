import { Injectable } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import type { ChatChunk, ChatRequest, ChatResponse } from '../../common/chat.types';
import type { EmbeddingsRequest, EmbeddingsResponse } from '../../common/embedding.types';
import { UpstreamError } from '../../common/errors';
import { bodyChunks, SseDecoder } from '../../common/sse';
import type { RouteDef } from '../../config/registry.types';
import { KeyPool } from '../http/key-pool.service';
import {
  callInfo,
  joinUrl,
  notEventStreamError,
  optionString,
  parseEvent,
  postJson,
  probeGet,
  protocolError,
  readJson,
  releaseBody,
  withExtraBody,
} from '../http/upstream-call';
import { UpstreamClient } from '../http/upstream-client.service';
import { LlmAdapter, type CallContext, type ProbeResult } from '../llm-adapter';
import {
  fromGeminiEmbedResponse,
  fromGeminiResponse,
  geminiHttpError,
  geminiModelPath,
  GeminiStreamTranslator,
  toGeminiEmbedRequest,
  toGeminiRequest,
} from './gemini.mapper';
import type { GeminiBatchEmbedResponse, GeminiResponse } from './gemini.types';

export const GEMINI_API = 'https://generativelanguage.googleapis.com/v1beta';

/**
 * Google's Gemini API: `generateContent`, `streamGenerateContent?alt=sse` and
 * `batchEmbedContents`, keyed with `x-goog-api-key`. Route options: `safety_settings` (Gemini's
 * list, sent as `safetySettings`) and `task_type` for embeddings.
 */
/** Requests one `batchEmbedContents` call may carry. */
const GEMINI_EMBED_BATCH = 100;

@Injectable()
@LlmAdapter({ kind: 'gemini', options: ['safety_settings', 'task_type'] })
export class GeminiAdapter implements LlmAdapter {
  constructor(
    private readonly http: UpstreamClient,
    private readonly keys: KeyPool,
  ) {}

  validateRoute(route: RouteDef): string[] {
    const problems: string[] = [];
    if (route.apiKeys.length === 0) problems.push(`${route.where}: route kind gemini needs api_key (or api_keys)`);
    const s = route.options.safety_settings;
    if (s !== undefined && !Array.isArray(s)) problems.push(`${route.where}: safety_settings must be a list of {category, threshold}`);
    return problems;
  }

  async complete(req: ChatRequest, route: RouteDef, ctx: CallContext): Promise<ChatResponse> {
    const res = await this.send(this.modelUrl(route, 'generateContent'), this.body(req, route), route, ctx, false);
    const json = await readJson<GeminiResponse>(this.http, res, route, ctx);
    if (!json || typeof json !== 'object') throw protocolError(route, 'answered without a response object');
    // No candidate and no reason (a blocked prompt says why in promptFeedback): no answer, as an
    // empty stream is; `choices: []` would break every OpenAI client.
    if (!json.candidates?.length && !json.promptFeedback?.blockReason) throw protocolError(route, 'answered without candidates');
    return fromGeminiResponse(json, route.providerModelId);
  }

  async *stream(req: ChatRequest, route: RouteDef, ctx: CallContext): AsyncGenerator<ChatChunk> {
    const res = await this.send(this.modelUrl(route, 'streamGenerateContent?alt=sse'), this.body(req, route), route, ctx, true);
    const translator = new GeminiStreamTranslator(route.providerModelId);
    const sse = new SseDecoder();
    let ended = false;
    try {
      for await (const bytes of bodyChunks(res.body)) {
        for (const ev of sse.push(bytes)) {
          const event = parseEvent<GeminiResponse>(ev.data, route);
          if (event.error)
            throw geminiHttpError(
              event.error.code && event.error.code >= 400 ? event.error.code : 502,
              JSON.stringify({ error: event.error }),
              route,
              undefined,
            );
          for (const chunk of translator.push(event)) yield chunk;
        }
      }
      ended = true;
    } catch (err) {
      throw this.http.toUpstreamError(err, callInfo(route, ctx));
    } finally {
      sse.close();
      releaseBody(res, ended);
    }
    if (!translator.complete && sse.notEventStream) throw notEventStreamError(res, route);
    if (!translator.complete) {
      throw new UpstreamError({
        failure: 'reset',
        message: `upstream ${route.id} ended the stream before the answer was complete`,
        provider: route.kind,
        route: route.id,
      });
    }
    yield* translator.end();
  }

  /**
   * `batchEmbedContents` takes at most 100 requests a call; OpenAI's API takes up to 2,048 inputs.
   * Larger requests go in calls of 100, one after the other, their vectors joined in order.
   */
  async embed(req: EmbeddingsRequest, route: RouteDef, ctx: CallContext): Promise<EmbeddingsResponse> {
    const { requests } = toGeminiEmbedRequest(req, route.providerModelId, optionString(route, 'task_type'));
    // A retry of the request on this route goes on from the batch that failed: the ones before
    // it were embedded (and paid for) already.
    let done = this.embedded.get(req);
    if (!done) this.embedded.set(req, (done = new Map()));
    const key = `${route.id}\n${route.providerModelId}`;
    const embeddings = done.get(key) ?? [];
    done.set(key, embeddings);
    for (let i = embeddings.length; i < requests.length; i += GEMINI_EMBED_BATCH) {
      const batch = requests.slice(i, i + GEMINI_EMBED_BATCH);
      const res = await this.send(this.modelUrl(route, 'batchEmbedContents'), { requests: batch }, route, ctx, false);
      const json = await readJson<GeminiBatchEmbedResponse>(this.http, res, route, ctx);
      if (!json || !Array.isArray(json.embeddings) || json.embeddings.length !== batch.length)
        throw protocolError(route, 'answered with a different number of embeddings than inputs');
      embeddings.push(...json.embeddings);
    }
    done.delete(key);
    return fromGeminiEmbedResponse({ embeddings }, route.providerModelId);
  }

  /** Batches a request's earlier attempts embedded, by route and model: kept for its retries, gone with the request. */
  private readonly embedded = new WeakMap<EmbeddingsRequest, Map<string, NonNullable<GeminiBatchEmbedResponse['embeddings']>>>();

  probe(route: RouteDef, signal: AbortSignal): Promise<ProbeResult> {
    return probeGet(
      this.http,
      joinUrl(this.baseUrl(route), 'models?pageSize=1'),
      this.headers(route, route.apiKeys[0], false),
      route,
      signal,
      // A model listing, which an API compatible with this one may not have (a 404): the server answers.
      true,
    );
  }

  private baseUrl(route: RouteDef): string {
    return route.baseUrl ?? GEMINI_API;
  }

  /** `{base}/models/{model}:{method}` */
  private modelUrl(route: RouteDef, method: string): string {
    return joinUrl(this.baseUrl(route), `${geminiModelPath(route.providerModelId)}:${method}`);
  }

  private body(req: ChatRequest, route: RouteDef): Record<string, unknown> {
    const body: Record<string, unknown> = toGeminiRequest(req, route.providerModelId);
    const safety = route.options.safety_settings;
    if (Array.isArray(safety)) body.safetySettings = safety;
    return withExtraBody(body, route.extraBody);
  }

  private headers(route: RouteDef, key: string | undefined, stream: boolean): Record<string, string> {
    const h: Record<string, string> = {
      'content-type': 'application/json',
      accept: stream ? 'text/event-stream' : 'application/json',
      ...route.headers,
    };
    if (key) h['x-goog-api-key'] = key;
    return h;
  }

  private send(url: string, body: unknown, route: RouteDef, ctx: CallContext, stream: boolean): Promise<Dispatcher.ResponseData> {
    const text = JSON.stringify(body);
    return this.keys.run(route, ctx, (key) =>
      postJson(this.http, url, this.headers(route, key, stream), text, route, ctx, (status, errText, retryAfter) =>
        geminiHttpError(status, errText, route, retryAfter),
      ),
    );
  }
}
