import { randomUUID } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import { KeyPool } from '../../../src/adapters/http/key-pool.service';
import { callInfo, joinUrl, optionString, postJson, protocolError, readJson, releaseBody } from '../../../src/adapters/http/upstream-call';
import { UpstreamClient } from '../../../src/adapters/http/upstream-client.service';
import { LlmAdapter, type CallContext } from '../../../src/adapters/llm-adapter';
import type { ChatChunk, ChatRequest, ChatResponse } from '../../../src/common/chat.types';
import { UpstreamError } from '../../../src/common/errors';
import { bodyChunks } from '../../../src/common/sse';
import type { RouteDef } from '../../../src/config/registry.types';
import { fromOllamaChat, ollamaError, ollamaLineToChunks, toOllamaChat, type OllamaChatResponse } from './ollama-chat.mapper';

/**
 * Ollama's native `/api/chat` (kind `ollama_chat`): base_url is the server root
 * (`http://host:11434`); route option `keep_alive` keeps the model loaded. Streams are NDJSON.
 */
@Injectable()
@LlmAdapter({ kind: 'ollama_chat', options: ['keep_alive'] })
export class OllamaChatAdapter implements LlmAdapter {
  constructor(
    private readonly http: UpstreamClient,
    private readonly keys: KeyPool,
  ) {}

  validateRoute(route: RouteDef): string[] {
    return route.baseUrl ? [] : [`${route.where}: kind ollama_chat needs base_url (the server root, e.g. http://gpu-1:11434)`];
  }

  async complete(req: ChatRequest, route: RouteDef, ctx: CallContext): Promise<ChatResponse> {
    const res = await this.send(req, route, ctx, false);
    const json = await readJson<OllamaChatResponse>(this.http, res, route, ctx);
    if (!json?.done) throw protocolError(route, 'answered without done: true');
    return fromOllamaChat(json, `ollama-${randomUUID()}`);
  }

  async *stream(req: ChatRequest, route: RouteDef, ctx: CallContext): AsyncGenerator<ChatChunk> {
    const res = await this.send(req, route, ctx, true);
    const id = `ollama-${randomUUID()}`;
    const decoder = new TextDecoder();
    let buffered = '';
    let first = true;
    let done = false;
    try {
      read: for await (const bytes of bodyChunks(res.body)) {
        buffered += typeof bytes === 'string' ? bytes : decoder.decode(bytes, { stream: true });
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          let event: OllamaChatResponse;
          try {
            event = JSON.parse(line) as OllamaChatResponse;
          } catch {
            throw protocolError(route, 'sent a malformed stream line');
          }
          if (event.error)
            throw new UpstreamError({
              failure: 'http',
              upstreamStatus: 502,
              message: `upstream ${route.id} failed mid-stream: ${event.error}`,
              provider: route.kind,
              route: route.id,
            });
          yield* ollamaLineToChunks(event, id, first);
          first = false;
          if (event.done) {
            done = true;
            break read;
          }
        }
      }
    } catch (err) {
      throw this.http.toUpstreamError(err, callInfo(route, ctx));
    } finally {
      releaseBody(res, done);
    }
    if (!done)
      throw new UpstreamError({
        failure: 'reset',
        message: `upstream ${route.id} ended the stream before done`,
        provider: route.kind,
        route: route.id,
      });
  }

  private send(req: ChatRequest, route: RouteDef, ctx: CallContext, stream: boolean) {
    const body = JSON.stringify(toOllamaChat(req, route.providerModelId, stream, optionString(route, 'keep_alive')));
    const url = joinUrl(route.baseUrl ?? '', 'api/chat');
    return this.keys.run(route, ctx, (key) =>
      postJson(
        this.http,
        url,
        { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...route.headers },
        body,
        route,
        ctx,
        (status, text, retryAfter) => ollamaError(status, text, route, retryAfter),
      ),
    );
  }
}
