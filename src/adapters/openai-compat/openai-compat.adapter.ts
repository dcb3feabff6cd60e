import { Injectable } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import type { ChatChunk, ChatRequest, ChatResponse } from '../../common/chat.types';
import { UpstreamError } from '../../common/errors';
import { bodyChunks, SseDecoder } from '../../common/sse';
import type { RouteDef } from '../../config/registry.types';
import { readBodyText, retryAfterMs, UpstreamClient } from '../http/upstream-client.service';
import { LlmAdapter, type CallContext, type ProbeResult } from '../llm-adapter';
import { responseToChunks } from '../../common/chunks';
import { buildChatBody, endpointUrl, upstreamHttpError } from './openai-compat.mapper';
import { OPENAI_COMPAT_ALIASES, profileFor } from './openai-compat.profiles';

type WireChunk = ChatChunk & { error?: { message?: string; code?: unknown; type?: string } };

function parseChunk(data: string, route: RouteDef): WireChunk {
  try {
    return JSON.parse(data) as WireChunk;
  } catch {
    throw new UpstreamError({ failure: 'protocol', message: `upstream ${route.id} sent a malformed stream event`, provider: route.kind, route: route.id });
  }
}

/** Any server that speaks OpenAI's chat-completions protocol: vLLM, SGLang, Ollama, DeepSeek, ... */
@Injectable()
@LlmAdapter({ kind: 'openai_compat', aliases: OPENAI_COMPAT_ALIASES })
export class OpenAiCompatAdapter implements LlmAdapter {
  constructor(private readonly http: UpstreamClient) {}

  validateRoute(route: RouteDef): string[] {
    return route.baseUrl ? [] : [`${route.where}: route kind ${route.kind} needs base_url (the API root, e.g. http://host:8000/v1)`];
  }

  async complete(req: ChatRequest, route: RouteDef, ctx: CallContext): Promise<ChatResponse> {
    const res = await this.send(req, route, ctx, false);
    const text = await this.readAll(res, route, ctx);
    let json: ChatResponse;
    try {
      json = JSON.parse(text) as ChatResponse;
    } catch {
      throw new UpstreamError({ failure: 'protocol', message: `upstream ${route.id} answered with invalid JSON`, provider: route.kind, route: route.id });
    }
    if (!json || !Array.isArray(json.choices)) {
      throw new UpstreamError({ failure: 'protocol', message: `upstream ${route.id} answered without choices`, provider: route.kind, route: route.id });
    }
    return json;
  }

  async *stream(req: ChatRequest, route: RouteDef, ctx: CallContext): AsyncGenerator<ChatChunk> {
    const res = await this.send(req, route, ctx, true);
    const type = String(res.headers['content-type'] ?? '');
    if (type.includes('application/json')) {
      // Some servers ignore `stream: true`; their whole answer becomes a stream of one piece.
      const text = await this.readAll(res, route, ctx);
      let json: ChatResponse;
      try {
        json = JSON.parse(text) as ChatResponse;
      } catch {
        throw new UpstreamError({ failure: 'protocol', message: `upstream ${route.id} answered with invalid JSON`, provider: route.kind, route: route.id });
      }
      yield* responseToChunks(json);
      return;
    }
    let done = false;
    let finished = false;
    const sse = new SseDecoder();
    try {
      read: for await (const bytes of bodyChunks(res.body)) {
        for (const ev of sse.push(bytes)) {
          if (ev.data === '[DONE]') {
            done = true;
            break read;
          }
          const chunk = parseChunk(ev.data, route);
          if (chunk.error) {
            throw new UpstreamError({
              failure: 'http',
              upstreamStatus: 502,
              message: `upstream ${route.id} failed mid-stream: ${chunk.error.message ?? JSON.stringify(chunk.error)}`,
              provider: route.kind,
              route: route.id,
            });
          }
          if (!Array.isArray(chunk.choices)) continue;
          if (chunk.choices.some((c) => c.finish_reason)) finished = true;
          yield chunk;
        }
      }
    } catch (err) {
      throw this.http.toUpstreamError(err, this.callInfo(route, ctx));
    } finally {
      if (done) {
        // Read the (empty) rest so the keep-alive connection goes back to the pool; destroying
        // an unfinished body would close it and cost the next stream a new connection.
        res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
      } else if (!res.body.destroyed) {
        res.body.destroy();
      }
    }
    if (!done && !finished) {
      throw new UpstreamError({ failure: 'reset', message: `upstream ${route.id} ended the stream before the answer was complete`, provider: route.kind, route: route.id });
    }
  }

  async probe(route: RouteDef, signal: AbortSignal): Promise<ProbeResult> {
    const started = performance.now();
    const profile = profileFor(route.kind);
    const base = route.baseUrl ?? '';
    const url = profile.healthPath.startsWith('/') ? new URL(profile.healthPath, base).toString() : endpointUrl(base, profile.healthPath);
    const res = await this.http.request({
      url,
      method: 'GET',
      headers: this.headers(route, false),
      signal,
      timeouts: { connectMs: 5000, firstByteMs: 5000, firstTokenMs: 5000, idleMs: 5000, totalMs: 5000 },
      route: route.id,
      provider: route.kind,
    });
    await readBodyText(res.body, 1024);
    return { ok: res.statusCode < 400, latencyMs: performance.now() - started, detail: `HTTP ${res.statusCode}` };
  }

  private async send(req: ChatRequest, route: RouteDef, ctx: CallContext, stream: boolean): Promise<Dispatcher.ResponseData> {
    const body = buildChatBody(req, route, stream, profileFor(route.kind));
    const res = await this.http.request({
      url: endpointUrl(route.baseUrl ?? '', 'chat/completions'),
      method: 'POST',
      headers: this.headers(route, stream),
      body: JSON.stringify(body),
      ...this.callInfo(route, ctx),
    });
    if (res.statusCode >= 400) {
      const text = await readBodyText(res.body);
      throw upstreamHttpError(res.statusCode, text, route, retryAfterMs(res.headers));
    }
    return res;
  }

  private async readAll(res: Dispatcher.ResponseData, route: RouteDef, ctx: CallContext): Promise<string> {
    try {
      return await res.body.text();
    } catch (err) {
      throw this.http.toUpstreamError(err, this.callInfo(route, ctx));
    }
  }

  private callInfo(route: RouteDef, ctx: CallContext) {
    return { signal: ctx.signal, timeouts: ctx.timeouts, route: route.id, provider: route.kind };
  }

  private headers(route: RouteDef, stream: boolean): Record<string, string> {
    const h: Record<string, string> = {
      'content-type': 'application/json',
      accept: stream ? 'text/event-stream' : 'application/json',
      ...route.headers,
    };
    if (route.apiKeys.length > 0) h.authorization = `Bearer ${route.apiKeys[0]}`;
    return h;
  }
}
