import { Injectable } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import type { ChatChunk, ChatRequest, ChatResponse } from '../../common/chat.types';
import { deltaHasContent, responseToChunks, ToolCallFixer } from '../../common/chunks';
import type { Completion, CompletionRequest } from '../../common/completion.types';
import type { EmbeddingsRequest, EmbeddingsResponse } from '../../common/embedding.types';
import { UpstreamError } from '../../common/errors';
import { bodyChunks, SseDecoder } from '../../common/sse';
import type { RouteDef } from '../../config/registry.types';
import { KeyPool } from '../http/key-pool.service';
import {
  callInfo,
  notEventStreamError,
  parseEvent,
  postJson,
  probeGet,
  protocolError,
  providerHttpError,
  readJson,
  releaseBody,
  unsupported,
} from '../http/upstream-call';
import { UpstreamClient } from '../http/upstream-client.service';
import { LlmAdapter, type CallContext, type ProbeResult } from '../llm-adapter';
import { completionAsChatRequest, completionChunkToChat, completionToChat } from '../text-completion.mapper';
import {
  buildChatBody,
  buildCompletionBody,
  buildEmbeddingsBody,
  choicesProblem,
  endpointUrl,
  miniMaxError,
  normalizeChunk,
  normalizeResponse,
  callIdPrefix,
  upstreamHttpError,
  failedFinish,
} from './openai-compat.mapper';
import { OPENAI_COMPAT_ALIASES, profileFor, type OpenAiCompatProfile } from './openai-compat.profiles';

type WireChunk = ChatChunk & { error?: { message?: string; code?: unknown; type?: string; metadata?: unknown } };

/** How long a complete answer (its final usage chunk come) waits for its `[DONE]`. */
export const ANSWERED_GRACE_MS = 1000;
/** The silence after an answer with fewer choices than its n asked for (see relay). */
const UNSEEN_CHOICE_GRACE_MS = 5000;
/** The silence after an answer whose every choice finished but whose usage has not come (see relay). */
const USAGE_AWAITED_GRACE_MS = 5000;

/**
 * Any server that speaks OpenAI's chat-completions protocol: vLLM, SGLang, Ollama, DeepSeek, ...
 * Also serves their legacy `/completions` and `/embeddings`. Subclasses (OpenRouter) change the
 * body, headers and profile through the protected hooks.
 */
@Injectable()
@LlmAdapter({ kind: 'openai_compat', aliases: OPENAI_COMPAT_ALIASES, options: [] })
export class OpenAiCompatAdapter implements LlmAdapter {
  constructor(
    protected readonly http: UpstreamClient,
    protected readonly keys: KeyPool,
  ) {}

  validateRoute(route: RouteDef): string[] {
    return this.baseUrl(route) ? [] : [`${route.where}: route kind ${route.kind} needs base_url (the API root, e.g. http://host:8000/v1)`];
  }

  /** Whether routes of this kind can serve embedding models. */
  canEmbed(route: RouteDef): boolean {
    return this.profile(route).embeddings !== false;
  }

  async complete(req: ChatRequest, route: RouteDef, ctx: CallContext): Promise<ChatResponse> {
    const res = await this.send('chat/completions', this.chatBody(req, route, false), route, ctx, false);
    return this.chatAnswer(await readJson<ChatResponse>(this.http, res, route, ctx), route, ctx);
  }

  async *stream(req: ChatRequest, route: RouteDef, ctx: CallContext): AsyncGenerator<ChatChunk> {
    const res = await this.send('chat/completions', this.chatBody(req, route, true), route, ctx, true);
    if (String(res.headers['content-type'] ?? '').includes('application/json')) {
      // Some servers ignore `stream: true`; their whole answer becomes a stream of one piece.
      yield* responseToChunks(this.chatAnswer(await readJson<ChatResponse>(this.http, res, route, ctx), route, ctx));
      return;
    }
    const calls = new ToolCallFixer((choice, call) => `call_${callIdPrefix(ctx.requestId)}_${choice}_${call}`);
    yield* this.relay(res, route, ctx, 'delta', choicesAskedFor(req.n), (c) => calls.fix(normalizeChunk(c)));
  }

  async completeText(req: CompletionRequest, route: RouteDef, ctx: CallContext): Promise<ChatResponse> {
    if (this.profile(route).textCompletions === false) return this.complete(completionAsChatRequest(req), route, ctx);
    let res: Dispatcher.ResponseData;
    try {
      res = await this.send('completions', buildCompletionBody(req, route, false, this.profile(route)), route, ctx, false);
    } catch (err) {
      const chat = chatInstead(err, req);
      if (chat) return this.complete(chat, route, ctx);
      throw err;
    }
    return normalizeResponse(
      completionToChat(this.textAnswer(await readJson<Completion>(this.http, res, route, ctx), route)),
      ctx.requestId,
    );
  }

  async *streamText(req: CompletionRequest, route: RouteDef, ctx: CallContext): AsyncGenerator<ChatChunk> {
    if (this.profile(route).textCompletions === false) {
      yield* this.stream(completionAsChatRequest(req), route, ctx);
      return;
    }
    let res: Dispatcher.ResponseData;
    try {
      res = await this.send('completions', buildCompletionBody(req, route, true, this.profile(route)), route, ctx, true);
    } catch (err) {
      const chat = chatInstead(err, req);
      if (!chat) throw err;
      yield* this.stream(chat, route, ctx);
      return;
    }
    if (String(res.headers['content-type'] ?? '').includes('application/json')) {
      yield* responseToChunks(
        normalizeResponse(completionToChat(this.textAnswer(await readJson<Completion>(this.http, res, route, ctx), route)), ctx.requestId),
      );
      return;
    }
    // One set of n choices per prompt of a list (strings, or token lists).
    const prompts = Array.isArray(req.prompt) && req.prompt.length > 0 && typeof req.prompt[0] !== 'number' ? req.prompt.length : 1;
    yield* this.relay(res, route, ctx, 'text', choicesAskedFor(req.n) * prompts, (c) =>
      normalizeChunk(completionChunkToChat(c as unknown as Completion)),
    );
  }

  async embed(req: EmbeddingsRequest, route: RouteDef, ctx: CallContext): Promise<EmbeddingsResponse> {
    const res = await this.send('embeddings', buildEmbeddingsBody(req, route, this.profile(route)), route, ctx, false);
    const json = await readJson<EmbeddingsResponse>(this.http, res, route, ctx);
    if (!json || !Array.isArray(json.data)) throw miniMaxError(json, route) ?? protocolError(route, 'answered without embeddings');
    return json;
  }

  async probe(route: RouteDef, signal: AbortSignal): Promise<ProbeResult> {
    const profile = this.profile(route);
    const base = this.baseUrl(route);
    // A path from the server's root (vLLM's /health), with the base URL's query (its credentials) kept.
    const url = profile.healthPath.startsWith('/') ? rootPath(base, profile.healthPath) : endpointUrl(base, profile.healthPath);
    // A model listing is optional (hosted chat APIs without it); vLLM's /health is not.
    return probeGet(this.http, url, this.headers(route, route.apiKeys[0], false), route, signal, profile.healthPath === 'models');
  }

  /** The API root requests go to. */
  protected baseUrl(route: RouteDef): string {
    return route.baseUrl ?? '';
  }

  protected profile(route: RouteDef): OpenAiCompatProfile {
    return profileFor(route.kind);
  }

  protected chatBody(req: ChatRequest, route: RouteDef, stream: boolean): Record<string, unknown> {
    return buildChatBody(req, route, stream, this.profile(route));
  }

  /** Last changes to any request body (chat, completions, embeddings) before it is sent. */
  protected finishBody(body: Record<string, unknown>, _route: RouteDef, _path: string): Record<string, unknown> {
    return body;
  }

  protected headers(route: RouteDef, key: string | undefined, stream: boolean): Record<string, string> {
    const h: Record<string, string> = {
      'content-type': 'application/json',
      accept: stream ? 'text/event-stream' : 'application/json',
      ...route.headers,
    };
    if (key) h.authorization = `Bearer ${key}`;
    return h;
  }

  /** POSTs to `{base_url}/{path}` with one of the route's keys (another one if that key is refused). */
  private send(
    path: string,
    body: Record<string, unknown>,
    route: RouteDef,
    ctx: CallContext,
    stream: boolean,
  ): Promise<Dispatcher.ResponseData> {
    const url = endpointUrl(this.baseUrl(route), path);
    const text = JSON.stringify(this.finishBody(body, route, path));
    return this.keys.run(route, ctx, (key) =>
      postJson(this.http, url, this.headers(route, key, stream), text, route, ctx, (status, errText, retryAfter) =>
        upstreamHttpError(status, errText, route, retryAfter),
      ),
    );
  }

  private chatAnswer(json: ChatResponse, route: RouteDef, ctx: CallContext): ChatResponse {
    if (!json || !Array.isArray(json.choices) || json.choices.length === 0) throw answerError(json, route);
    miniMaxStatus(json, route);
    const problem = choicesProblem(json.choices, 'message');
    if (problem) throw protocolError(route, `sent an answer the gateway cannot read (${problem})`);
    // OpenRouter answers a provider that failed after accepting the call with HTTP 200 and a
    // choice that finished with `error`: a failure (the next route may answer), never billed as one.
    const failed = json.choices.find((c) => failedFinish(c.finish_reason));
    if (failed) throw inBandError((failed.error as WireChunk['error']) ?? {}, route, 'failed', String(failed.finish_reason));
    return normalizeResponse(json, ctx.requestId);
  }

  private textAnswer(json: Completion, route: RouteDef): Completion {
    if (!json || !Array.isArray(json.choices) || json.choices.length === 0) throw answerError(json, route);
    miniMaxStatus(json, route);
    // A whole answer's choice has its text (a stream's last chunk may carry only the finish
    // reason); without it (a server answering in the chat shape) it would be billed as empty.
    // A content-filter stop is an empty answer, as a chat choice with no message is.
    const problem =
      choicesProblem(json.choices, 'text') ??
      json.choices
        .map((c, i) => (typeof c.text !== 'string' && c.finish_reason !== 'content_filter' ? `choices[${i}] has no text` : ''))
        .find(Boolean);
    if (problem) throw protocolError(route, `sent an answer the gateway cannot read (${problem})`);
    return json;
  }

  /**
   * Relays an SSE body as chunks: ends at `[DONE]` (or at the end of a body whose answer had its
   * finish reason), fails on an in-band error or a stream cut short. Once usage has come and
   * every choice seen has finished, the answer is complete: a server that then goes silent,
   * neither sending `[DONE]` nor closing, is left after ANSWERED_GRACE_MS of silence (or half the
   * idle timeout, if shorter), and the stream ends as it would have (it used to hang until the
   * idle timeout, then fail an answer the client had whole). Every choice finished but no usage
   * yet: the same after USAGE_AWAITED_GRACE_MS. Any event in that time (a choice not seen yet,
   * the final usage) waits for the next silence.
   *
   * `asked`: the choices the request asked for (n). Until that many have finished, the silence
   * waited for is UNSEEN_CHOICE_GRACE_MS (a choice not seen yet may still come; a server that
   * ignores n sends one, and that is its whole answer); a body that ends without `[DONE]` is
   * complete when every choice seen has finished.
   */
  private async *relay(
    res: Dispatcher.ResponseData,
    route: RouteDef,
    ctx: CallContext,
    part: 'delta' | 'text',
    asked: number,
    map: (chunk: ChatChunk) => ChatChunk,
  ): AsyncGenerator<ChatChunk> {
    let done = false;
    let grace: NodeJS.Timeout | undefined;
    let leftAfterAnswer = false;
    /** MiniMax's output moderation stopped the answer (base_resp 1027). */
    let moderated = false;
    /** Choices seen, and those finished: the answer is complete when all seen have finished. */
    const seen = new Set<number>();
    const ended = new Set<number>();
    let last: ChatChunk | undefined;
    /** Usage came once every choice seen had finished: how OpenAI ends a stream, all choices done. */
    let usageAfterAll = false;
    /** Every choice seen has finished, and they are all there is: as many as asked, or usage came after them. */
    const answered = () => ended.size > 0 && ended.size === seen.size && (ended.size >= asked || usageAfterAll);
    /** Choices that carried some answer (content, a tool call, ...). */
    const spoke = new Set<number>();
    const sse = new SseDecoder();
    try {
      read: for await (const bytes of bodyChunks(res.body)) {
        for (const ev of sse.push(bytes)) {
          // As OpenAI's SDKs read it: whatever follows [DONE] (a space, a newline) is no event.
          if (ev.data.startsWith('[DONE]')) {
            done = true;
            break read;
          }
          // An event with no data (`data:` alone) carries nothing; OpenAI's SDKs could not parse it either.
          if (ev.data === '' || (ev.data.charCodeAt(0) <= 0x20 && ev.data.trim() === '')) continue;
          // An `event: error` (some servers and proxies name theirs so) fails the stream with what it
          // says, whatever its shape; read as a chunk, its message was lost. Once the answer is whole
          // (answered()), a proxy's notice then does not undo it.
          if (ev.event === 'error') {
            if (answered()) continue;
            throw inBandError(namedErrorOf(ev.data), route, 'failed mid-stream');
          }
          const chunk = parseEvent<WireChunk>(ev.data, route);
          if (chunk.error) throw inBandError(chunk.error, route, 'failed mid-stream');
          // vLLM's error object sent bare as an event (`{"object": "error", "message", "code"}`).
          const bare = chunk as { object?: unknown; message?: unknown; code?: unknown };
          if (bare.object === 'error' && typeof bare.message === 'string')
            throw inBandError({ message: bare.message, code: bare.code }, route, 'failed mid-stream');
          // MiniMax's output moderation in a stream: the answer stops for a content filter.
          if (isMiniMaxOutputFiltered(chunk) && (!Array.isArray(chunk.choices) || chunk.choices.length === 0))
            chunk.choices = [{ index: 0, delta: {}, finish_reason: null }];
          if (moderated && (chunk as { base_resp?: { status_code?: unknown } }).base_resp?.status_code === 1027)
            // The same moderation said again on a later chunk (its usage): no new error.
            withoutMiniMaxStatus(chunk);
          else if (miniMaxStatus(chunk, route)) moderated = true;
          if (!Array.isArray(chunk.choices)) {
            // Choices that are there but not a list are an answer the gateway cannot read, not none.
            if (chunk.choices !== undefined && chunk.choices !== null)
              throw protocolError(route, 'sent a stream event the gateway cannot read (choices is not a list)');
            // A usage chunk without `choices: []` (seen from some servers) still carries the usage.
            if (chunk.usage == null) continue;
            chunk.choices = [];
          }
          const problem = choicesProblem(chunk.choices, part);
          if (problem) throw protocolError(route, `sent a stream event the gateway cannot read (${problem})`);
          // OpenRouter may end a choice with `error` and carry the error on the choice alone.
          for (const c of chunk.choices)
            if (failedFinish(c.finish_reason))
              throw inBandError((c.error as WireChunk['error']) ?? {}, route, 'failed mid-stream', String(c.finish_reason));
          const out = map(chunk);
          // Complete: usage came and every choice seen has finished (usage alone after the finish,
          // as OpenAI ends a stream; or on the finish chunk, as DeepSeek and older vLLM do).
          // Anything that comes after waits for the next silence (a choice not seen yet).
          last = out;
          for (const c of out.choices) {
            seen.add(c.index);
            if (c.finish_reason) ended.add(c.index);
            else if (!spoke.has(c.index) && deltaHasContent(c.delta)) spoke.add(c.index);
          }
          clearTimeout(grace);
          grace = undefined;
          if (chunk.usage != null) usageAfterAll = ended.size > 0 && ended.size === seen.size;
          if (ended.size > 0 && ended.size === seen.size)
            grace = setTimeout(
              () => {
                leftAfterAnswer = true;
                res.body.destroy();
              },
              // Fewer choices than asked for: another may be on its way, or the server ignores n.
              // No usage yet: it follows the finish (it was asked for), or never comes (a server
              // that ignores stream_options), and the output is then estimated.
              // (Before the idle timeout, which would fail the answer: for usage, just before it,
              // so that a route with a short idle_ms does not give up usage a little late.)
              ended.size < asked
                ? Math.min(UNSEEN_CHOICE_GRACE_MS, ctx.timeouts.idleMs / 2)
                : chunk.usage != null
                  ? Math.min(ANSWERED_GRACE_MS, ctx.timeouts.idleMs / 2)
                  : Math.min(USAGE_AWAITED_GRACE_MS, ctx.timeouts.idleMs * 0.9),
            );
          yield out;
        }
      }
    } catch (err) {
      const e = leftAfterAnswer ? undefined : this.http.toUpstreamError(err, callInfo(route, ctx));
      // The connection broke once every choice asked for had finished: the answer is whole, as
      // when the server goes silent there (its usage estimated if it sent none). Fewer than asked
      // (n > 1, several prompts): the others were cut off, unless usage came after them all (a
      // server that ignores n ends so). An error the stream told is no break.
      const brokeAfterAnswer = e instanceof UpstreamError && e.failure === 'reset' && !(err instanceof UpstreamError) && answered();
      if (e && !brokeAfterAnswer) throw e;
    } finally {
      sse.close();
      clearTimeout(grace);
      releaseBody(res, done);
    }
    const finished = ended.size > 0 && ended.size === seen.size;
    const open = [...spoke].filter((i) => !ended.has(i));
    if (done && last && open.length > 0) {
      // [DONE] said the answer is whole, but a choice that answered never said how it ended
      // (some servers leave the finish chunk out): it stopped, as clients need to read (the
      // OpenAI SDKs' final completion refuses a choice without a finish reason). One that never
      // answered stays without: a stream of nothing is a failure, not an empty answer.
      yield { ...last, usage: undefined, choices: open.map((index) => ({ index, delta: {}, finish_reason: 'stop' })) };
    }
    if (!done && !finished && sse.notEventStream) throw notEventStreamError(res, route);
    if (!done && !finished) {
      throw new UpstreamError({
        failure: 'reset',
        message: `upstream ${route.id} ended the stream before the answer was complete`,
        provider: route.kind,
        route: route.id,
      });
    }
  }
}

/** How many choices a request's `n` asks for (it is validated as a positive integer, when sent). */
function choicesAskedFor(n: unknown): number {
  return typeof n === 'number' && Number.isInteger(n) && n > 1 ? n : 1;
}

/**
 * An error a server sent inside an answer or a stream (OpenRouter's `{"error": {"code",
 * "message"}}`): with its HTTP-like code when it has one (a 429 stays a rate limit, retried
 * after its wait), else a 502.
 */
/** The error an `event: error` carries: OpenAI's `{"error": {...}}`, a bare `{message, code}`, or text. */
function namedErrorOf(data: string): NonNullable<WireChunk['error']> {
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    return { message: data.trim().slice(0, 500) };
  }
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as { error?: unknown };
    if (o.error !== null && typeof o.error === 'object' && !Array.isArray(o.error)) return o.error;
    if (typeof o.error === 'string') return { message: o.error };
    return o as NonNullable<WireChunk['error']>;
  }
  return { message: data.trim().slice(0, 500) };
}

function inBandError(e: NonNullable<WireChunk['error']>, route: RouteDef, what: string, reason = 'error'): UpstreamError {
  const status = typeof e.code === 'number' && e.code >= 400 && e.code <= 599 ? e.code : 502;
  const said = JSON.stringify(e);
  const message =
    typeof e.message === 'string' && e.message
      ? e.message
      : // A choice ended in failure and nothing said why: say that rather than "{}".
        said === '{}'
        ? `the answer ended with finish_reason ${JSON.stringify(reason).slice(0, 60)} and no error message`
        : said.slice(0, 500);
  return providerHttpError(status, { message, code: null, metadata: e.metadata }, route, undefined, what);
}

/**
 * MiniMax's `base_resp` (it answers errors with HTTP 200, some with choices too): output its
 * moderation removed (1027 with `output_sensitive`, empty content) is an answer stopped by a
 * content filter, as OpenAI and Z.AI give it, its choices so marked and MiniMax's status fields
 * taken out (true); another error is thrown; none, nothing happens (false). Answers and chunks.
 */
function miniMaxStatus(json: { choices: Array<{ finish_reason?: unknown }> }, route: RouteDef): boolean {
  if (isMiniMaxOutputFiltered(json)) {
    for (const c of json.choices) c.finish_reason = 'content_filter';
    withoutMiniMaxStatus(json);
    return true;
  }
  const refused = miniMaxError(json, route);
  if (refused) throw refused;
  return false;
}

/** MiniMax's own status fields, which an answer passed on as OpenAI's has no place for. */
function withoutMiniMaxStatus(json: object): void {
  const o = json as Record<string, unknown>;
  for (const f of ['base_resp', 'output_sensitive', 'output_sensitive_type', 'input_sensitive', 'input_sensitive_type']) delete o[f];
}

/** MiniMax's answer whose output its moderation removed: `output_sensitive`, base_resp 1027. */
function isMiniMaxOutputFiltered(json: unknown): boolean {
  const j = json as { output_sensitive?: unknown; base_resp?: { status_code?: unknown } } | null;
  return j?.output_sensitive === true && j.base_resp?.status_code === 1027;
}

/**
 * A whole answer without choices: an error said in the body of an HTTP 200 (OpenRouter's, once a
 * provider accepted the call: `{"error": {"code", "message", "metadata"}}`; MiniMax's
 * `base_resp`), with the upstream's own words and status, else an answer the gateway cannot read.
 */
function answerError(json: unknown, route: RouteDef): UpstreamError {
  const said = (json as { error?: unknown } | null)?.error;
  if (said && typeof said === 'object' && !Array.isArray(said)) return inBandError(said, route, 'failed');
  return miniMaxError(json, route) ?? protocolError(route, 'answered without choices');
}

/** `path` from the root of `base`'s server, `base`'s query kept. */
function rootPath(base: string, path: string): string {
  const url = new URL(path, base);
  url.search = new URL(base).search;
  return url.toString();
}

/**
 * A server without the legacy `/completions` (a 404 or 405 for it; many hosted OpenAI-compatible
 * APIs serve chat only): the prompt as a chat request. A 404 that meant the model instead gets
 * the same answer from chat. A request chat cannot express (echo, token prompts, best_of) throws
 * the 400 naming its parameter, as on a chat-only kind: the server's bare "Not Found" said
 * nothing a client could act on (the model's next route, if any, is still tried).
 */
function chatInstead(err: unknown, req: CompletionRequest): ChatRequest | undefined {
  if (!(err instanceof UpstreamError) || (err.upstreamStatus !== 404 && err.upstreamStatus !== 405)) return undefined;
  try {
    return completionAsChatRequest(req);
  } catch (why) {
    if (!(why instanceof UpstreamError)) throw why;
    // The server's own words too: its 404 may have been about the model, not the path.
    throw unsupported(`${why.message} (the server answered ${err.upstreamStatus} for /completions: ${err.message})`, why.param);
  }
}
