import { Injectable } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import type { ChatRequest } from '../../common/chat.types';
import { UpstreamError } from '../../common/errors';
import type { RouteDef } from '../../config/registry.types';
import { type AccountLease, AccountPool } from '../../subscription/account-pool.service';
import { AccountRateLimitError, streamAccountLimit } from '../../subscription/account-session';
import { CredentialVault } from '../../subscription/credential-vault.service';
import { ANTHROPIC_API, AnthropicAdapter, type Accepted, type ClientProtocol, type MessagesEndpoint } from '../anthropic/anthropic.adapter';
import {
  ANTHROPIC_VERSION,
  anthropicHttpError,
  anthropicStreamError,
  mergeBetas,
  parseAnthropicError,
} from '../anthropic/anthropic.mapper';
import type { AnthropicRequest } from '../anthropic/anthropic.types';
import { KeyPool } from '../http/key-pool.service';
import { joinUrl, optionString, postJson, withoutSecrets } from '../http/upstream-call';
import { retryAfterMs, UpstreamClient } from '../http/upstream-client.service';
import { LlmAdapter, type CallContext, type MessagesCall, type ProbeResult } from '../llm-adapter';
import { CLAUDE_CODE_BETAS, CLAUDE_CODE_VERSION, claudeCodeUserAgent, subscriptionResetAt, withClaudeCodeIdentity } from './claude-code';

/**
 * `kind: claude_sub` — Claude subscription logins (Claude Code's OAuth) from the `claude` account
 * pool, on the Messages API (`base_url`, default https://api.anthropic.com/v1). Requests go as
 * Claude Code sends them: the account's access token as a Bearer token (never `x-api-key`),
 * `anthropic-beta` with `oauth-2025-04-20` and `claude-code-20250219` merged with the route's
 * and the client's betas, `x-app: cli`, a `claude-cli/…` user agent, `?beta=true`, and Claude
 * Code's identity as the first system block (route option `claude_code_system: false` leaves
 * the system prompt alone).
 *
 * Chat requests (the OpenAI surface) are translated as for `kind: anthropic`; the Anthropic
 * surface relays its requests unchanged but for model and credentials. Either way the call goes
 * through the pool: a 401 refreshes the token and retries once, a 403 or a 429 moves on to the
 * next account (a 429 cools the account down until `anthropic-ratelimit-unified-reset`, else
 * `retry-after`), and a rate-limit `error` event in a stream cools it down too. With no account
 * left the error is retryable, so the model's next route (a paid API key) takes over.
 */
@Injectable()
@LlmAdapter({ kind: 'claude_sub', options: ['default_max_tokens', 'claude_code_system', 'client_version', 'anthropic_beta', 'user_agent'] })
export class ClaudeSubAdapter extends AnthropicAdapter {
  constructor(
    http: UpstreamClient,
    keys: KeyPool,
    private readonly pool: AccountPool,
    private readonly vault: CredentialVault,
  ) {
    super(http, keys);
  }

  override validateRoute(route: RouteDef): string[] {
    const problems: string[] = [];
    if (!this.vault.configured)
      problems.push(`${route.where}: route kind claude_sub needs SUBSCRIPTION_ENCRYPTION_KEY (subscription tokens are stored encrypted)`);
    if (route.baseUrl !== undefined && !/^https?:\/\//.test(route.baseUrl))
      problems.push(`${route.where}: base_url must be an http(s) URL`);
    const max = route.options.default_max_tokens;
    if (max !== undefined && !(Number(max) >= 1)) problems.push(`${route.where}: default_max_tokens must be a positive number`);
    const identity = route.options.claude_code_system;
    if (identity !== undefined && typeof identity !== 'boolean') problems.push(`${route.where}: claude_code_system must be true or false`);
    if (route.apiKeys.length > 0)
      problems.push(`${route.where}: claude_sub routes use the accounts of the claude pool (/admin/accounts), not api_key`);
    return problems;
  }

  /** Route health without spending the accounts' quota: is any account usable? */
  override probe(): Promise<ProbeResult> {
    const { usable, total } = this.pool.usable('claude');
    return Promise.resolve({ ok: usable > 0, latencyMs: 0, detail: `${usable} of ${total} claude accounts usable` });
  }

  protected override baseUrl(route: RouteDef): string {
    return route.baseUrl ?? ANTHROPIC_API;
  }

  /** Claude Code calls the beta Messages endpoints. */
  protected override url(route: RouteDef, _stream: boolean, endpoint: MessagesEndpoint = 'messages'): string {
    return joinUrl(this.baseUrl(route), `${endpoint}?beta=true`);
  }

  protected override body(req: ChatRequest, route: RouteDef, stream: boolean): AnthropicRequest {
    const body = super.body(req, route, stream);
    return route.options.claude_code_system === false ? body : withClaudeCodeIdentity(body);
  }

  protected override relayBody(call: MessagesCall, route: RouteDef): Record<string, unknown> {
    const body = super.relayBody(call, route);
    return route.options.claude_code_system === false ? body : withClaudeCodeIdentity(body);
  }

  /** Every call spends an account of the `claude` pool (401 → refresh and retry, 403 / 429 → next account). */
  protected override async accept(
    body: unknown,
    route: RouteDef,
    ctx: CallContext,
    stream: boolean,
    client?: ClientProtocol,
    endpoint: MessagesEndpoint = 'messages',
  ): Promise<Accepted> {
    const text = JSON.stringify(body);
    const { value: res, lease } = await this.pool.run('claude', ctx.signal, (l) => {
      (ctx.served.tried ??= []).push(l.name);
      return this.sendAs(l, text, route, ctx, stream, client, endpoint);
    });
    ctx.served.account = lease.name;
    return { res, streamError: (err) => this.streamFailure(err, route, lease, res.headers) };
  }

  /** One POST with one account; resolves once the API accepted it (the body is read after). */
  private sendAs(
    lease: AccountLease,
    text: string,
    route: RouteDef,
    ctx: CallContext,
    stream: boolean,
    client: ClientProtocol | undefined,
    endpoint: MessagesEndpoint,
  ): Promise<Dispatcher.ResponseData> {
    return postJson(
      this.http,
      this.url(route, stream, endpoint),
      this.claudeHeaders(route, lease, stream, client),
      text,
      route,
      ctx,
      (status, errText, retryAfter, headers) => this.httpError(status, errText, retryAfter, headers, route, lease),
    );
  }

  private claudeHeaders(route: RouteDef, lease: AccountLease, stream: boolean, client: ClientProtocol | undefined): Record<string, string> {
    const version = optionString(route, 'client_version') ?? CLAUDE_CODE_VERSION;
    return {
      'content-type': 'application/json',
      accept: stream ? 'text/event-stream' : 'application/json',
      'anthropic-version': client?.version ?? ANTHROPIC_VERSION,
      'anthropic-beta': mergeBetas([...CLAUDE_CODE_BETAS], optionString(route, 'anthropic_beta'), client?.betas)!,
      'user-agent': optionString(route, 'user_agent') ?? claudeCodeUserAgent(version),
      'x-app': 'cli',
      ...route.headers,
      authorization: `Bearer ${lease.accessToken}`,
    };
  }

  /** 401 and 403 as they are (the pool refreshes, or moves on); 429 with the account's reset time. */
  private httpError(
    status: number,
    text: string,
    retryAfter: number | undefined,
    headers: Dispatcher.ResponseData['headers'],
    route: RouteDef,
    lease: AccountLease,
  ): UpstreamError {
    text = withoutSecrets(text, [lease.accessToken]);
    if (status === 429) {
      const e = parseAnthropicError(text);
      return new AccountRateLimitError(
        {
          message: `claude account ${lease.id}: ${e.message || 'rate limited'}`,
          type: 'rate_limit_error',
          code: e.type ?? 'rate_limit_error',
          provider: route.kind,
          route: route.id,
        },
        subscriptionResetAt(headers),
        retryAfter,
      );
    }
    return anthropicHttpError(status, text, route, retryAfter ?? retryAfterMs(headers));
  }

  /**
   * A rate-limit `error` event mid-stream: the account cools down, then the error goes on; a
   * billing, authentication or permission error counts against the account.
   */
  private streamFailure(
    err: { type?: string; message?: string },
    route: RouteDef,
    lease: AccountLease,
    headers: Dispatcher.ResponseData['headers'],
  ): UpstreamError {
    if (typeof err.message === 'string') err = { ...err, message: withoutSecrets(err.message, [lease.accessToken]) };
    if (err.type === 'billing_error' || err.type === 'authentication_error' || err.type === 'permission_error') {
      // The account's, not the route's: counted against it (as the same refusal before the
      // stream is), and not against the route's circuit.
      this.pool.authFailed(lease, `${err.type}: ${err.message ?? ''}`);
      return anthropicStreamError(err, route).with({ gatewayFault: true });
    }
    if (err.type !== 'rate_limit_error') return anthropicStreamError(err, route);
    const message = err.message || 'rate limited';
    // The stream's headers came before the limit was met: its error event says it is spent.
    const until = subscriptionResetAt(headers, Date.now(), true);
    this.pool.rateLimited(lease, message, until);
    return streamAccountLimit(
      this.pool,
      'claude',
      new AccountRateLimitError(
        {
          message: `claude account ${lease.id}: ${message}`,
          type: 'rate_limit_error',
          code: 'rate_limit_error',
          provider: route.kind,
          route: route.id,
        },
        until,
      ),
    );
  }
}
