import { Injectable } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import { UpstreamError } from '../../common/errors';
import { isInterleavedThinkingBeta } from '../../common/reasoning';
import type { RouteDef } from '../../config/registry.types';
import { AnthropicAdapter, type ClientProtocol, type MessagesEndpoint } from '../anthropic/anthropic.adapter';
import { mergeBetas } from '../anthropic/anthropic.mapper';
import type { AnthropicRequest, AnthropicTextBlock } from '../anthropic/anthropic.types';
import { googleRetryDelayMs, googleStatus, parseGoogleError } from '../http/google-error';
import { KeyPool } from '../http/key-pool.service';
import { joinUrl, optionString, postJson, unsupported, withoutSecrets } from '../http/upstream-call';
import { UpstreamClient } from '../http/upstream-client.service';
import { LlmAdapter, type CallContext, type ProbeResult } from '../llm-adapter';
import { GoogleTokenSource, loadServiceAccount, type ServiceAccount } from './google-auth';

export const VERTEX_ANTHROPIC_VERSION = 'vertex-2023-10-16';

/**
 * Of a client's betas, those Vertex AI takes on every Claude it serves and that change what a
 * request may say: interleaved thinking, with which a thinking budget may exceed `max_tokens`
 * (which the gateway then accepts). Claude Code sends it to Vertex itself (CLAUDE_CODE_USE_VERTEX).
 */
function vertexClientBetas(client: ClientProtocol | undefined): string[] {
  return (client?.betas ?? []).flatMap((b) => b.split(',').map((p) => p.trim())).filter(isInterleavedThinkingBeta);
}

/** Where a Vertex route sends requests. */
export interface VertexTarget {
  baseUrl: string;
  project: string;
  region: string;
}

/** Vertex's API root for a region: `global`, the `us`/`eu` multi-regions, or `<region>-aiplatform`. */
export function vertexBaseUrl(region: string): string {
  if (region === 'global') return 'https://aiplatform.googleapis.com/v1';
  if (region === 'us' || region === 'eu') return `https://aiplatform.${region}.rep.googleapis.com/v1`;
  return `https://${region}-aiplatform.googleapis.com/v1`;
}

/** The region a Vertex API root names (`https://us-east5-aiplatform.googleapis.com/v1` → `us-east5`). */
export function regionOf(baseUrl: string | undefined): string | undefined {
  if (!baseUrl) return undefined;
  const host = new URL(baseUrl).hostname;
  if (host === 'aiplatform.googleapis.com') return 'global';
  return /^([a-z0-9-]+)-aiplatform\.googleapis\.com$/.exec(host)?.[1] ?? /^aiplatform\.(us|eu)\.rep\.googleapis\.com$/.exec(host)?.[1];
}

/** `…/projects/{p}/locations/{r}/publishers/anthropic/models/{model}:rawPredict` (or `:streamRawPredict`). */
export function vertexUrl(t: VertexTarget, model: string, stream: boolean): string {
  return joinUrl(
    t.baseUrl,
    `projects/${segment(t.project)}/locations/${segment(t.region)}/publishers/anthropic/models/${segment(model)}:${stream ? 'streamRawPredict' : 'rawPredict'}`,
  );
}

/** `…/publishers/anthropic/models/count-tokens:rawPredict`: one endpoint for every model, named in the body. */
export function vertexCountTokensUrl(t: VertexTarget): string {
  return joinUrl(
    t.baseUrl,
    `projects/${segment(t.project)}/locations/${segment(t.region)}/publishers/anthropic/models/count-tokens:rawPredict`,
  );
}

/** A path segment, with the `@` of versioned model ids kept as Anthropic's SDK sends it. */
function segment(s: string): string {
  return encodeURIComponent(s).replace(/%40/g, '@');
}

/**
 * A Messages body for Vertex: no `model` (it is in the URL), `anthropic_version` in the body.
 * Images and documents by URL are refused before sending, as this route's: Vertex takes them
 * inline only (a 400 "URL sources are not supported" otherwise), and another route of the model
 * may take them. The gateway does not fetch a URL a client gave it.
 */
export function toVertexBody(body: AnthropicRequest): AnthropicRequest {
  refuseUrlSources(body.messages);
  const { model: _model, ...rest } = foldSystemMessages(body);
  return { ...rest, anthropic_version: VERTEX_ANTHROPIC_VERSION };
}

/** A count-tokens body: as for messages, its media inline and its system messages folded. */
function forCountTokens(body: AnthropicRequest): AnthropicRequest {
  refuseUrlSources(body.messages);
  return foldSystemMessages(body);
}

/**
 * Mid-conversation system messages (Claude Code sends them) are the Claude API's; Vertex AI has
 * none, and refuses a `system` role. Their text joins the top-level `system` instead, so the
 * instructions still come as system instructions, though from the start, and the prompt cache's
 * prefix changes with them. A tool change (`tool_addition`, ...) has no such form: refused as
 * this route's, so that another route of the model may take the request.
 */
export function foldSystemMessages(body: AnthropicRequest): AnthropicRequest {
  const messages = body.messages;
  if (!Array.isArray(messages) || !messages.some((m) => m?.role === 'system')) return body;
  const folded: AnthropicTextBlock[] = [];
  messages.forEach((m, i) => {
    if (m.role !== 'system') return;
    if (typeof m.content === 'string') {
      if (m.content !== '') folded.push({ type: 'text', text: m.content });
      return;
    }
    m.content.forEach((b, j) => {
      if (b.type !== 'text')
        throw unsupported(
          `messages[${i}].content[${j}]: Claude on Vertex AI takes no mid-conversation system content of type "${String(b.type)}"`,
          `messages[${i}].content[${j}].type`,
        );
      folded.push(b);
    });
  });
  const system: AnthropicTextBlock[] =
    body.system === undefined || body.system === null || body.system === ''
      ? []
      : typeof body.system === 'string'
        ? [{ type: 'text', text: body.system }]
        : body.system;
  return { ...body, system: [...system, ...folded], messages: messages.filter((m) => m.role !== 'system') };
}

function refuseUrlSources(messages: unknown): void {
  if (!Array.isArray(messages)) return;
  const check = (blocks: unknown, at: string): void => {
    if (!Array.isArray(blocks)) return;
    blocks.forEach((b: { type?: unknown; source?: { type?: unknown }; content?: unknown } | null, j) => {
      if (b?.source?.type === 'url')
        throw unsupported(
          `${at}[${j}]: Claude on Vertex AI takes ${b.type === 'document' ? 'documents' : 'images'} inline only (base64), not by URL`,
          `${at}[${j}].source`,
        );
      if (b?.type === 'tool_result') check(b.content, `${at}[${j}].content`);
    });
  };
  messages.forEach((m: { content?: unknown } | null, i) => check(m?.content, `messages[${i}].content`));
}

/**
 * Claude on Vertex AI: the Messages protocol through `rawPredict` / `streamRawPredict` (and
 * `count-tokens:rawPredict`); chat requests are translated, the Anthropic surface's relayed,
 * authenticated with a service account (route option `credentials`: the key file's path or its
 * JSON) whose signed JWT is exchanged for an OAuth access token, cached and refreshed before it
 * expires. Options `project_id` (default: the key file's) and `region` (default: from
 * `base_url`, which defaults from the region).
 */
@Injectable()
@LlmAdapter({ kind: 'vertex_claude', options: ['region', 'location', 'project_id', 'credentials', 'default_max_tokens', 'anthropic_beta'] })
export class VertexClaudeAdapter extends AnthropicAdapter {
  private readonly accounts = new Map<string, ServiceAccount>();

  constructor(
    http: UpstreamClient,
    keys: KeyPool,
    private readonly tokens: GoogleTokenSource,
  ) {
    super(http, keys);
  }

  override validateRoute(route: RouteDef): string[] {
    const problems: string[] = [];
    const creds = optionString(route, 'credentials');
    let sa: ServiceAccount | undefined;
    if (!creds) problems.push(`${route.where}: vertex_claude needs credentials (the path of a service-account key file, or its JSON)`);
    else {
      try {
        sa = loadServiceAccount(creds);
        this.accounts.set(creds, sa);
      } catch (err) {
        problems.push(`${route.where}: credentials: ${(err as Error).message}`);
      }
    }
    if (sa && !optionString(route, 'project_id') && !sa.project_id)
      problems.push(`${route.where}: vertex_claude needs project_id (the key file names none)`);
    let region: string | undefined;
    try {
      region = optionString(route, 'region', 'location') ?? regionOf(route.baseUrl);
    } catch {
      region = undefined;
    }
    if (!region)
      problems.push(
        `${route.where}: vertex_claude needs region (e.g. us-east5 or global), or a base_url like https://us-east5-aiplatform.googleapis.com/v1`,
      );
    const max = route.options.default_max_tokens;
    if (max !== undefined && !(Number(max) >= 1)) problems.push(`${route.where}: default_max_tokens must be a positive number`);
    return problems;
  }

  protected override url(route: RouteDef, stream: boolean, endpoint: MessagesEndpoint = 'messages'): string {
    const sa = this.account(route);
    const region = optionString(route, 'region', 'location') ?? regionOf(route.baseUrl) ?? 'global';
    const target: VertexTarget = {
      baseUrl: route.baseUrl ?? vertexBaseUrl(region),
      project: optionString(route, 'project_id') ?? sa.project_id ?? '',
      region,
    };
    return endpoint === 'messages/count_tokens' ? vertexCountTokensUrl(target) : vertexUrl(target, route.providerModelId, stream);
  }

  /** Healthy when the service account gets an access token (Vertex has no cheap model endpoint). */
  override async probe(route: RouteDef, signal: AbortSignal): Promise<ProbeResult> {
    const started = performance.now();
    try {
      await this.tokens.token(this.account(route), { signal, route: route.id, provider: route.kind });
      return { ok: true, latencyMs: performance.now() - started, detail: 'token' };
    } catch (err) {
      return { ok: false, latencyMs: performance.now() - started, detail: (err as Error).message };
    }
  }

  /**
   * Vertex's own front end answers refusals (quota, permissions, an unknown model) in Google's
   * shape before Claude sees the request: a 429's wait is then in `google.rpc.RetryInfo`, not in
   * Retry-After; a project not allowed to use the model is a 400 `FAILED_PRECONDITION`, which
   * counts as a 403 (the next route is tried), as on Gemini.
   */
  protected override error(status: number, text: string, route: RouteDef, retryAfterMs: number | undefined): UpstreamError {
    const google = parseGoogleError(text);
    return super.error(googleStatus(status, google), text, route, retryAfterMs ?? googleRetryDelayMs(google));
  }

  /**
   * Sends with a cached access token. A 401 means the token was revoked or expired early: it is
   * dropped and the request made once more with a fresh one.
   */
  protected override async send(
    body: AnthropicRequest,
    route: RouteDef,
    ctx: CallContext,
    stream: boolean,
    client?: ClientProtocol,
    endpoint: MessagesEndpoint = 'messages',
  ): Promise<Dispatcher.ResponseData> {
    const sa = this.account(route);
    // Chat requests and the Anthropic surface's relayed ones alike: Vertex's version in the body;
    // the model in the URL, except for count-tokens, which names it in the body.
    const text = JSON.stringify(
      endpoint === 'messages/count_tokens'
        ? { ...forCountTokens(body), model: route.providerModelId, anthropic_version: VERTEX_ANTHROPIC_VERSION }
        : toVertexBody(body),
    );
    const url = this.url(route, stream, endpoint);
    for (let attempt = 0; ; attempt++) {
      const token = await this.tokens.token(sa, { signal: ctx.signal, route: route.id, provider: route.kind });
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        accept: stream ? 'text/event-stream' : 'application/json',
        authorization: `Bearer ${token}`,
        ...route.headers,
      };
      // The route's betas, and of a client's only those Vertex takes on every Claude it serves:
      // Vertex refuses (400) first-party ones Claude Code sends, such as oauth-2025-04-20, and a
      // route sets what its region accepts (context-1m).
      const beta = mergeBetas(optionString(route, 'anthropic_beta'), vertexClientBetas(client));
      if (beta) headers['anthropic-beta'] = beta;
      try {
        return await postJson(this.http, url, headers, text, route, ctx, (status, errText, retryAfter) =>
          this.error(status, withoutSecrets(errText, [token]), route, retryAfter),
        );
      } catch (err) {
        if (attempt === 0 && err instanceof UpstreamError && err.upstreamStatus === 401) {
          this.tokens.invalidate(sa);
          continue;
        }
        throw err;
      }
    }
  }

  private account(route: RouteDef): ServiceAccount {
    const creds = optionString(route, 'credentials') ?? '';
    let sa = this.accounts.get(creds);
    if (!sa) {
      // validateRoute() loaded it at start-up; a file that became unreadable since is a bad route.
      try {
        sa = loadServiceAccount(creds);
      } catch (err) {
        throw new UpstreamError({
          failure: 'connect',
          message: `route ${route.id}: ${(err as Error).message}`,
          provider: route.kind,
          route: route.id,
        });
      }
      this.accounts.set(creds, sa);
    }
    return sa;
  }
}
