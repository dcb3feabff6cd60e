import { createHash, createPrivateKey, createSign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Injectable } from '@nestjs/common';
import type { Dispatcher } from 'undici';
import { UpstreamError } from '../../common/errors';
import { raceAbort } from '../../common/abort';
import { readBodyText, UpstreamClient } from '../http/upstream-client.service';

/** The fields of a Google service-account key file the gateway uses. */
export interface ServiceAccount {
  client_email: string;
  private_key: string;
  private_key_id?: string;
  project_id?: string;
  token_uri: string;
}

export const GOOGLE_TOKEN_URI = 'https://oauth2.googleapis.com/token';
export const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';
/** Refresh this long before a token expires (requests in flight must not carry an expired one). */
export const TOKEN_REFRESH_MARGIN_MS = 5 * 60_000;
/** A refused exchange (bad key, deleted account) is not tried again for this long. */
export const REFUSAL_HOLD_MS = 10_000;

/**
 * A service-account key file's JSON as a `ServiceAccount`; throws an Error saying what is wrong.
 * The private key is checked to be a usable RSA key here, so a bad file fails at load time.
 */
export function parseServiceAccount(text: string): ServiceAccount {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new Error('the service-account credentials are not valid JSON', { cause: err });
  }
  if (!json || typeof json !== 'object') throw new Error('the service-account credentials must be a JSON object');
  if (json.type !== undefined && json.type !== 'service_account')
    throw new Error(`the credentials are of type "${String(json.type)}", not service_account`);
  for (const f of ['client_email', 'private_key']) {
    if (typeof json[f] !== 'string' || json[f] === '') throw new Error(`the service-account credentials lack ${f}`);
  }
  try {
    createPrivateKey(json.private_key as string);
  } catch (err) {
    throw new Error(`the service-account private_key is not a usable PEM key: ${(err as Error).message}`, { cause: err });
  }
  return {
    client_email: json.client_email as string,
    private_key: json.private_key as string,
    private_key_id: typeof json.private_key_id === 'string' ? json.private_key_id : undefined,
    project_id: typeof json.project_id === 'string' ? json.project_id : undefined,
    token_uri: typeof json.token_uri === 'string' && json.token_uri ? json.token_uri : GOOGLE_TOKEN_URI,
  };
}

/** Reads a key file, or takes the JSON itself when the value starts with `{`. */
export function loadServiceAccount(fileOrJson: string): ServiceAccount {
  const text = fileOrJson.trimStart().startsWith('{') ? fileOrJson : readKeyFile(fileOrJson);
  return parseServiceAccount(text);
}

function readKeyFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the service-account key file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      cause: err,
    });
  }
}

const b64url = (data: string | Buffer) => Buffer.from(data).toString('base64url');

/**
 * The signed JWT a service account exchanges for an access token (Google's OAuth 2.0 JWT bearer
 * flow): RS256 over `{iss, scope, aud, iat, exp}`, valid for one hour.
 */
export function serviceAccountJwt(sa: ServiceAccount, scope: string, nowSeconds: number, key: KeyObject | string = sa.private_key): string {
  const header = { alg: 'RS256', typ: 'JWT', ...(sa.private_key_id ? { kid: sa.private_key_id } : {}) };
  const claims = { iss: sa.client_email, scope, aud: sa.token_uri, iat: nowSeconds, exp: nowSeconds + 3600 };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature = createSign('RSA-SHA256').update(input).sign(key);
  return `${input}.${b64url(signature)}`;
}

interface CachedToken {
  token: string;
  /** When a new one is fetched (ms since epoch): TOKEN_REFRESH_MARGIN_MS before its expiry, or half-way through a shorter life. */
  refreshAt: number;
}

export interface TokenCall {
  signal: AbortSignal;
  /** Names the route in errors. */
  route: string;
  provider: string;
}

/**
 * OAuth access tokens for service accounts, cached until shortly before they expire. Concurrent
 * requests share one exchange; a refresh happens only when the cached token is within
 * `TOKEN_REFRESH_MARGIN_MS` of expiry (half-way through a shorter life) or was invalidated (the
 * upstream said 401).
 */
@Injectable()
export class GoogleTokenSource {
  private readonly cache = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();
  /** Exchanges the token endpoint refused (why), so a misconfigured route fails fast instead of asking every time. */
  private readonly refused = new Map<string, { reason: string; until: number }>();
  private readonly keys = new Map<string, KeyObject>();
  private readonly fingerprints = new Map<string, string>();
  /** The clock (tests replace it). */
  now: () => number = Date.now;
  /** Token exchanges made (for tests and logs). */
  exchanges = 0;

  constructor(private readonly http: UpstreamClient) {}

  async token(sa: ServiceAccount, call: TokenCall, scope = CLOUD_PLATFORM_SCOPE): Promise<string> {
    const id = this.id(sa, scope);
    const cached = this.cache.get(id);
    if (cached && cached.refreshAt > this.now()) return cached.token;
    const refusal = this.refused.get(id);
    if (refusal && refusal.until > this.now()) throw exchangeFailed(call, refusal.reason);
    let p = this.pending.get(id);
    if (!p) {
      p = this.exchange(sa, scope).finally(() => this.pending.delete(id));
      this.pending.set(id, p);
    }
    // The exchange is shared: one caller leaving does not cancel it for the others, and each
    // caller's failure names its own route (the account's name stays in the operator's config).
    const got = await raceAbort(
      p.catch((err: unknown) => {
        throw err instanceof TokenExchangeError ? exchangeFailed(call, err.message) : err;
      }),
      call.signal,
      () => (call.signal.reason instanceof UpstreamError ? call.signal.reason : aborted(call)),
    );
    return got.token;
  }

  /** Forgets a token the upstream refused, so the next call fetches a new one. */
  invalidate(sa: ServiceAccount, scope = CLOUD_PLATFORM_SCOPE): void {
    this.cache.delete(this.id(sa, scope));
    this.refused.delete(this.id(sa, scope));
  }

  private async exchange(sa: ServiceAccount, scope: string): Promise<CachedToken> {
    const issuedAt = this.now();
    const assertion = serviceAccountJwt(sa, scope, Math.floor(issuedAt / 1000), this.key(sa));
    // `refused` marks the endpoint's own no (a 4xx), which is held.
    const fail = (reason: string, refused = false) => {
      if (refused) this.refused.set(this.id(sa, scope), { reason, until: this.now() + REFUSAL_HOLD_MS });
      return new TokenExchangeError(reason);
    };
    const timeouts = { connectMs: 10_000, firstByteMs: 30_000, firstTokenMs: 30_000, idleMs: 30_000, totalMs: 30_000 };
    let res: Dispatcher.ResponseData;
    let text: string;
    try {
      res = await this.http.request({
        url: sa.token_uri,
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }).toString(),
        signal: AbortSignal.timeout(timeouts.totalMs),
        timeouts,
        route: 'token endpoint',
        provider: 'google',
      });
      this.exchanges++;
      text = await readBodyText(res.body);
    } catch (err) {
      // Shared by every route of the account: each caller's error is made from the reason.
      throw new TokenExchangeError((err as Error)?.message ?? String(err));
    }
    let json: { access_token?: unknown; expires_in?: unknown; error?: unknown; error_description?: unknown } = {};
    try {
      json = JSON.parse(text) as typeof json;
    } catch {
      // reported below
    }
    if (res.statusCode >= 400) {
      const what =
        typeof json.error === 'string'
          ? `${json.error}${typeof json.error_description === 'string' ? `: ${json.error_description}` : ''}`
          : `HTTP ${res.statusCode}`;
      throw fail(what, res.statusCode < 500);
    }
    if (typeof json.access_token !== 'string' || !json.access_token) throw fail('the token endpoint answered without access_token');
    const ttl = typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : 3600;
    // A token that lives less than twice the margin was exchanged again at every call.
    const entry = { token: json.access_token, refreshAt: issuedAt + ttl * 1000 - Math.min(TOKEN_REFRESH_MARGIN_MS, (ttl * 1000) / 2) };
    this.cache.set(this.id(sa, scope), entry);
    return entry;
  }

  private key(sa: ServiceAccount): KeyObject {
    let k = this.keys.get(sa.private_key);
    if (!k) {
      k = createPrivateKey(sa.private_key);
      this.keys.set(sa.private_key, k);
    }
    return k;
  }

  /** Per key, not only per account: a key file with a wrong or revoked key must not borrow another's token. */
  private id(sa: ServiceAccount, scope: string): string {
    let fp = this.fingerprints.get(sa.private_key);
    if (!fp) {
      fp = createHash('sha256').update(sa.private_key).digest('base64url').slice(0, 16);
      this.fingerprints.set(sa.private_key, fp);
    }
    return `${sa.token_uri} ${sa.client_email} ${fp} ${scope}`;
  }
}

/** Why an exchange failed, before it is told to a caller (whose route it names). */
class TokenExchangeError extends Error {}

/** A failed exchange for one caller: retryable, since other routes may serve. */
function exchangeFailed(call: TokenCall, reason: string): UpstreamError {
  return new UpstreamError({
    failure: 'http',
    upstreamStatus: 502,
    status: 502,
    code: 'upstream_auth_failed',
    message: `route ${call.route}: the Google token exchange for its service account failed: ${reason}`,
    provider: call.provider,
    route: call.route,
  });
}

function aborted(call: TokenCall): UpstreamError {
  return new UpstreamError({ failure: 'aborted', message: 'the request was cancelled', provider: call.provider, route: call.route });
}
