import { Injectable } from '@nestjs/common';
import { withoutSecrets } from '../adapters/http/upstream-call';
import { readBodyText, UpstreamClient } from '../adapters/http/upstream-client.service';
import { UpstreamError } from '../common/errors';
import { AppConfig } from '../config/app-config';
import { storableTime } from './expiry';
import { jwtExpiry } from './jwt';
import type { AccountCredentials, SubscriptionProvider } from './subscription.types';

export interface RefreshedTokens {
  credentials: AccountCredentials;
  /** Epoch ms; null when the endpoint did not say. */
  expiresAt: number | null;
}

/** The token endpoint refused the refresh token for good: the login is gone (revoke the account). */
export class RefreshRejected extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** The refresh did not happen, for a reason that may pass (network, 5xx, an unexpected answer). */
export class RefreshFailed extends Error {}

/** A refresh a request waited SUBSCRIPTION_REFRESH_WAIT_MS for without an answer (it goes on). */
export class RefreshSlow extends RefreshFailed {}

/**
 * Error codes that mean the refresh token will never work again. `invalid_grant` is OAuth's
 * (RFC 6749 §5.2, what Anthropic's endpoint answers); the others are what OpenAI's answers for
 * Codex logins (a token used twice, expired or invalidated by a new login).
 */
const PERMANENT = new Set([
  'invalid_grant',
  'refresh_token_reused',
  'refresh_token_expired',
  'refresh_token_invalidated',
  'invalid_refresh_token',
]);

/**
 * How long a refresh may take once sent. Long: the endpoint may rotate the refresh token and
 * answer late, and a refresh given up on then loses the login (the next one sends the spent
 * token: `invalid_grant`, or `refresh_token_reused`, which also ends the login at OpenAI). The
 * callers do not wait for it (each request has its own deadline); only the account's next
 * refresh does. Connecting is bounded short: nothing has been sent before.
 */
export const REFRESH_TIMEOUT_MS = 120_000;
const TIMEOUTS = {
  connectMs: 10_000,
  firstByteMs: REFRESH_TIMEOUT_MS,
  firstTokenMs: REFRESH_TIMEOUT_MS,
  idleMs: REFRESH_TIMEOUT_MS,
  totalMs: REFRESH_TIMEOUT_MS,
};

/**
 * The OAuth refresh_token grant at each provider's token endpoint (JSON bodies, as Claude Code and
 * Codex send them). Refresh tokens rotate: the answer's refresh token replaces the old one, which
 * must not be used again. Nothing from a request or a response body is put in an error message
 * except the endpoint's `error` / `error_description`, with the account's tokens blanked out.
 */
@Injectable()
export class OAuthRefresher {
  constructor(
    private readonly http: UpstreamClient,
    private readonly config: AppConfig,
  ) {}

  /**
   * Takes no caller's signal on purpose: a refresh cut off after the endpoint rotated the token
   * would lose the only valid refresh token. A caller that stops waiting lets it finish.
   */
  async refresh(provider: SubscriptionProvider, current: AccountCredentials): Promise<RefreshedTokens> {
    const env = this.config.env;
    const url = provider === 'claude' ? env.SUBSCRIPTION_CLAUDE_TOKEN_URL : env.SUBSCRIPTION_CODEX_TOKEN_URL;
    const clientId = provider === 'claude' ? env.SUBSCRIPTION_CLAUDE_CLIENT_ID : env.SUBSCRIPTION_CODEX_CLIENT_ID;
    const body = JSON.stringify({ grant_type: 'refresh_token', refresh_token: current.refreshToken, client_id: clientId });
    let status: number;
    let text: string;
    try {
      const res = await this.http.request({
        url,
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body,
        // A backstop only: the timeouts above end a hung call first, saying which wait it was.
        signal: AbortSignal.timeout(TIMEOUTS.totalMs + 5_000),
        timeouts: TIMEOUTS,
        route: `${provider}-oauth`,
        provider: `${provider}_sub`,
      });
      status = res.statusCode;
      text = await readBodyText(res.body);
    } catch (err) {
      throw new RefreshFailed(`token endpoint unreachable: ${err instanceof UpstreamError ? err.message : (err as Error).message}`);
    }
    let json: Record<string, unknown> | undefined;
    try {
      const parsed = JSON.parse(text) as unknown;
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) json = parsed as Record<string, unknown>;
    } catch {
      json = undefined;
    }
    if (status >= 400) {
      const { code, description } = oauthError(json);
      // Both are the endpoint's words, which may quote the token it refused.
      const scrub = (v: string) => withoutSecrets(v, [current.refreshToken, current.accessToken]);
      const said = description ? `: ${scrub(description)}` : '';
      const what = `token endpoint answered ${status}${code ? ` ${scrub(code)}` : ''}${said}`;
      if (code && PERMANENT.has(code) && status < 500) throw new RefreshRejected(`refresh token refused (${what})`, code);
      throw new RefreshFailed(what);
    }
    const access = typeof json?.access_token === 'string' ? json.access_token : undefined;
    if (!access) throw new RefreshFailed(`token endpoint answered ${status} without an access_token`);
    const refresh = typeof json?.refresh_token === 'string' && json.refresh_token ? json.refresh_token : current.refreshToken;
    const idToken = typeof json?.id_token === 'string' && json.id_token ? json.id_token : current.idToken;
    const expiresIn = typeof json?.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : undefined;
    const expiresAt = expiresIn !== undefined ? (storableTime(Date.now() + expiresIn * 1000) ?? null) : jwtExpiry(access);
    return { credentials: { accessToken: access, refreshToken: refresh, ...(idToken ? { idToken } : {}) }, expiresAt };
  }
}

/** `{"error": "invalid_grant", "error_description": ...}` (RFC 6749) or `{"error": {"code", "message"}}` (OpenAI). */
function oauthError(json: Record<string, unknown> | undefined): { code?: string; description?: string } {
  if (!json) return {};
  const e = json.error;
  const clip = (v: unknown) => (typeof v === 'string' ? v.slice(0, 300) : undefined);
  if (typeof e === 'string') return { code: clip(e), description: clip(json.error_description) };
  if (e && typeof e === 'object') {
    const o = e as Record<string, unknown>;
    return { code: clip(o.code) ?? clip(o.type), description: clip(o.message) };
  }
  return { code: clip(json.code), description: clip(json.message) ?? clip(json.detail) };
}
