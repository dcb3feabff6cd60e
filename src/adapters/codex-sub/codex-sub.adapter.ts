import { arch, release, type as osType } from 'node:os';
import { Injectable } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import type { ChatChunk, ChatRequest, ChatResponse } from '../../common/chat.types';
import { UpstreamError } from '../../common/errors';
import { bodyChunks, SseDecoder } from '../../common/sse';
import type { RouteDef } from '../../config/registry.types';
import { type AccountLease, AccountPool } from '../../subscription/account-pool.service';
import { AccountRateLimitError, streamAccountLimit } from '../../subscription/account-session';
import { ChatAggregator } from '../../common/chunks';
import { CredentialVault } from '../../subscription/credential-vault.service';
import { callInfo, joinUrl, notEventStreamError, providerHttpError, withoutSecrets } from '../http/upstream-call';
import { readBodyText, retryAfterMs, UpstreamClient } from '../http/upstream-client.service';
import { LlmAdapter, type CallContext, type ProbeResult } from '../llm-adapter';
import {
  buildResponsesBody,
  type CodexRequestOptions,
  type ResponsesFailure,
  ResponsesFailedError,
  ResponsesStreamTranslator,
  resetsAtOf,
  sessionHeader,
  UnsupportedRequestError,
} from './responses.mapper';

export const CODEX_BACKEND_URL = 'https://chatgpt.com/backend-api/codex';
/** The Codex CLI release the `version` header and user agent name (route option `client_version`). */
export const CODEX_CLIENT_VERSION = '0.46.0';
/** A usage limit whose end the backend does not say (e.g. `usage_not_included`): wait long. */
const UNKNOWN_RESET_MS = 24 * 3_600_000;

interface CodexRouteOptions extends CodexRequestOptions {
  originator: string;
  userAgent: string;
  clientVersion: string;
}

/**
 * `kind: codex_sub` — ChatGPT (Codex) subscription logins from the `codex` account pool. Chat
 * requests become Responses API requests to `<base_url>/responses` (default
 * https://chatgpt.com/backend-api/codex), sent with the account's OAuth token and
 * `chatgpt-account-id` and the headers the Codex CLI sends; the streamed Responses events come
 * back as chat chunks. The backend only streams, so a non-streaming request is the stream
 * collected. A 401 refreshes the token once and retries; a 429 cools the account down and tries
 * the next; with no account left the error is retryable, so the model's next route (a paid API
 * key, say) takes over.
 */
@Injectable()
@LlmAdapter({
  kind: 'codex_sub',
  options: ['instructions', 'reasoning_effort', 'reasoning_summary', 'text_verbosity', 'originator', 'client_version', 'user_agent'],
})
export class CodexSubAdapter implements LlmAdapter {
  constructor(
    private readonly http: UpstreamClient,
    private readonly pool: AccountPool,
    private readonly vault: CredentialVault,
  ) {}

  validateRoute(route: RouteDef): string[] {
    const problems: string[] = [];
    if (!this.vault.configured)
      problems.push(`${route.where}: route kind codex_sub needs SUBSCRIPTION_ENCRYPTION_KEY (subscription tokens are stored encrypted)`);
    if (route.baseUrl !== undefined && !/^https?:\/\//.test(route.baseUrl))
      problems.push(`${route.where}: base_url must be an http(s) URL`);
    const summary = route.options.reasoning_summary;
    if (summary !== undefined && !['auto', 'concise', 'detailed', 'none'].includes(String(summary)))
      problems.push(`${route.where}: reasoning_summary must be auto, concise, detailed or none`);
    return problems;
  }

  async complete(req: ChatRequest, route: RouteDef, ctx: CallContext): Promise<ChatResponse> {
    const agg = new ChatAggregator();
    for await (const chunk of this.stream(req, route, ctx)) agg.push(chunk);
    return agg.result();
  }

  async *stream(req: ChatRequest, route: RouteDef, ctx: CallContext): AsyncGenerator<ChatChunk> {
    const opts = routeOptions(route);
    let body: Record<string, unknown>;
    try {
      body = buildResponsesBody(req, route.providerModelId, opts);
    } catch (err) {
      if (err instanceof UnsupportedRequestError) {
        throw new UpstreamError({
          failure: 'http',
          upstreamStatus: 400,
          message: err.message,
          param: err.param,
          code: 'unsupported_content',
          provider: route.kind,
          route: route.id,
          retryable: false,
          unsupportedByRoute: true,
        });
      }
      throw err;
    }
    const text = JSON.stringify(body);
    const { value: res, lease } = await this.pool.run('codex', ctx.signal, (l) => {
      (ctx.served.tried ??= []).push(l.name);
      return this.send(text, body, route, ctx, opts, l);
    });
    ctx.served.account = lease.name;
    const translator = new ResponsesStreamTranslator(route.providerModelId, `resp-${ctx.requestId}`);
    const sse = new SseDecoder();
    let clean = false;
    try {
      for await (const bytes of bodyChunks(res.body)) {
        for (const ev of sse.push(bytes)) {
          if (ev.data === '[DONE]') continue;
          let data: Record<string, unknown>;
          try {
            data = JSON.parse(ev.data) as Record<string, unknown>;
          } catch {
            throw new UpstreamError({
              failure: 'protocol',
              message: `upstream ${route.id} sent a malformed stream event`,
              provider: route.kind,
              route: route.id,
            });
          }
          let chunks: ChatChunk[];
          try {
            chunks = translator.handle(ev.event, data);
          } catch (err) {
            if (err instanceof ResponsesFailedError) throw this.failed(err.failure, route, lease);
            throw err;
          }
          if (translator.rateLimit) this.pool.observeUsage(lease, translator.rateLimit.usedPercent);
          for (const c of chunks) yield c;
        }
        if (translator.completed) break;
      }
      clean = translator.completed;
    } catch (err) {
      throw this.http.toUpstreamError(err, callInfo(route, ctx));
    } finally {
      sse.close();
      if (clean) res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
      else if (!res.body.destroyed) res.body.destroy();
    }
    if (!translator.completed && sse.notEventStream) throw notEventStreamError(res, route);
    if (!translator.completed) {
      throw new UpstreamError({
        failure: 'reset',
        message: `upstream ${route.id} ended the stream before response.completed`,
        provider: route.kind,
        route: route.id,
      });
    }
  }

  /** Route health without spending the accounts' quota: is any account usable? */
  async probe(): Promise<ProbeResult> {
    const { usable, total } = this.pool.usable('codex');
    return { ok: usable > 0, latencyMs: 0, detail: `${usable} of ${total} codex accounts usable` };
  }

  /** One POST with one account; resolves once the backend accepted it (200 and an event stream). */
  private async send(
    text: string,
    body: Record<string, unknown>,
    route: RouteDef,
    ctx: CallContext,
    opts: CodexRouteOptions,
    lease: AccountLease,
  ): Promise<Dispatcher.ResponseData> {
    const res = await this.http.request({
      url: joinUrl(route.baseUrl ?? CODEX_BACKEND_URL, 'responses'),
      method: 'POST',
      headers: this.headers(route, opts, lease, sessionHeader(String(body.prompt_cache_key))),
      body: text,
      ...callInfo(route, ctx),
    });
    const used = Math.max(
      headerNumber(res.headers, 'x-codex-primary-used-percent') ?? -1,
      headerNumber(res.headers, 'x-codex-secondary-used-percent') ?? -1,
    );
    if (used >= 0) this.pool.observeUsage(lease, used);
    if (res.statusCode < 400) {
      ctx.accepted?.();
      return res;
    }
    const errText = await readBodyText(res.body);
    throw this.httpError(res.statusCode, errText, res.headers, route, lease);
  }

  private headers(route: RouteDef, opts: CodexRouteOptions, lease: AccountLease, session: string): Record<string, string> {
    return {
      'content-type': 'application/json',
      accept: 'text/event-stream',
      'openai-beta': 'responses=experimental',
      originator: opts.originator,
      'user-agent': opts.userAgent,
      version: opts.clientVersion,
      session_id: session,
      ...route.headers,
      authorization: `Bearer ${lease.accessToken}`,
      ...(lease.externalAccountId ? { 'chatgpt-account-id': lease.externalAccountId } : {}),
    };
  }

  /** An HTTP error status from the backend (`{"detail": ...}` or `{"error": {...}}` bodies). */
  private httpError(
    status: number,
    text: string,
    headers: Dispatcher.ResponseData['headers'],
    route: RouteDef,
    lease: AccountLease,
  ): UpstreamError {
    const { message, code, type, resetsAt } = errorBody(withoutSecrets(text, [lease.accessToken]), status);
    const base = { provider: route.kind, route: route.id };
    if (status === 429) {
      const notIncluded = type === 'usage_not_included' || code === 'usage_not_included';
      const ra = retryAfterMs(headers);
      const until =
        resetsAt !== undefined
          ? resetsAt * 1000
          : notIncluded
            ? Date.now() + UNKNOWN_RESET_MS
            : (resetFromHeaders(headers) ?? (ra !== undefined ? Date.now() + ra : undefined));
      return new AccountRateLimitError(
        {
          ...base,
          message: `codex account ${lease.id}: ${message}`,
          type: 'rate_limit_error',
          code: code ?? type ?? 'rate_limit_exceeded',
        },
        until,
      );
    }
    // The subscription's standing (a deactivated workspace, a lapsed plan): the operator's, said
    // so as every adapter says it (upstream_payment_required).
    if (status === 402)
      return providerHttpError(status, { message: `codex account ${lease.id}: ${message}`, type, code }, route, retryAfterMs(headers));
    return new UpstreamError({
      ...base,
      failure: 'http',
      upstreamStatus: status,
      message: `upstream ${route.id}: ${message}`,
      type: type ?? undefined,
      code: code ?? null,
      retryAfterMs: retryAfterMs(headers),
    });
  }

  /** `response.failed` / `error` mid-stream (before any content, the executor may still fail over). */
  private failed(f: ResponsesFailure, route: RouteDef, lease: AccountLease): UpstreamError {
    f = { ...f, message: withoutSecrets(f.message, [lease.accessToken]) };
    const base = { provider: route.kind, route: route.id };
    const code = f.code ?? f.type;
    if (
      code === 'rate_limit_exceeded' ||
      code === 'usage_limit_reached' ||
      code === 'insufficient_quota' ||
      code === 'usage_not_included'
    ) {
      const until =
        f.resetsAt !== undefined
          ? f.resetsAt * 1000
          : (tryAgainIn(f.message) ?? (code === 'usage_not_included' ? Date.now() + UNKNOWN_RESET_MS : undefined));
      this.pool.rateLimited(lease, f.message, until);
      const limit = new AccountRateLimitError({ ...base, message: `codex account ${lease.id}: ${f.message}`, code }, until);
      return streamAccountLimit(this.pool, 'codex', limit);
    }
    if (code === 'context_length_exceeded' || code === 'invalid_prompt' || code === 'cyber_policy') {
      return new UpstreamError({
        ...base,
        failure: 'http',
        upstreamStatus: 400,
        message: `upstream ${route.id}: ${f.message}`,
        code,
        retryable: false,
      });
    }
    return new UpstreamError({
      ...base,
      failure: 'http',
      upstreamStatus: 502,
      message: `upstream ${route.id} failed: ${f.message}`,
      code: code ?? 'response_failed',
    });
  }
}

function routeOptions(route: RouteDef): CodexRouteOptions {
  const o = route.options;
  const str = (v: unknown) => (typeof v === 'string' && v.trim() !== '' ? v : undefined);
  const version = str(o.client_version) ?? CODEX_CLIENT_VERSION;
  return {
    instructions: str(o.instructions),
    reasoningEffort: str(o.reasoning_effort),
    reasoningSummary: str(o.reasoning_summary),
    textVerbosity: str(o.text_verbosity),
    originator: str(o.originator) ?? 'codex_cli_rs',
    clientVersion: version,
    userAgent:
      str(o.user_agent) ?? `codex_cli_rs/${version} (${osType()} ${release()}; ${arch() === 'x64' ? 'x86_64' : arch()}) hybridinference`,
  };
}

function errorBody(text: string, status: number): { message: string; code?: string; type?: string; resetsAt?: number } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { message: text.trim().slice(0, 500) || `HTTP ${status}` };
  }
  const o = (json && typeof json === 'object' ? json : {}) as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === 'string' && v ? v : undefined);
  if (o.error && typeof o.error === 'object') {
    const e = o.error as Record<string, unknown>;
    const resets = resetsAtOf(e);
    return {
      message: str(e.message) ?? str(e.type) ?? str(e.code) ?? `HTTP ${status}`,
      code: str(e.code),
      type: str(e.type),
      resetsAt: resets,
    };
  }
  if (typeof o.detail === 'string') return { message: o.detail };
  return { message: text.slice(0, 500) || `HTTP ${status}` };
}

function headerNumber(headers: Dispatcher.ResponseData['headers'], name: string): number | undefined {
  const v = headers[name];
  const n = typeof v === 'string' ? Number(v) : NaN;
  return Number.isFinite(n) ? n : undefined;
}

/**
 * A spent window's reset from the rate-limit headers: `x-codex-primary-reset-at` (epoch seconds),
 * or `x-codex-primary-reset-after-seconds` as the backend also sends it.
 */
function resetFromHeaders(headers: Dispatcher.ResponseData['headers'], now = Date.now()): number | undefined {
  const resets: number[] = [];
  for (const w of ['primary', 'secondary']) {
    const used = headerNumber(headers, `x-codex-${w}-used-percent`);
    const at = headerNumber(headers, `x-codex-${w}-reset-at`);
    const after = headerNumber(headers, `x-codex-${w}-reset-after-seconds`);
    if (used === undefined || used < 100) continue;
    if (at !== undefined) resets.push(at * 1000);
    else if (after !== undefined && after >= 0) resets.push(now + after * 1000);
  }
  return resets.length ? Math.max(...resets) : undefined;
}

/** "Please try again in 20s" / "in 850ms" / "in 3 seconds" in a rate-limit message. */
function tryAgainIn(message: string): number | undefined {
  const m = /try again in\s+([\d.]+)\s*(ms|s|seconds?)\b/i.exec(message);
  if (!m) return undefined;
  const n = Number(m[1]);
  return Date.now() + (m[2].toLowerCase() === 'ms' ? n : n * 1000);
}
