import { UpstreamError, type UpstreamErrorInit } from '../common/errors';
import type { AccountLease, AccountPool } from './account-pool.service';
import { RefreshSlow } from './oauth-refresh.service';
import type { SubscriptionProvider } from './subscription.types';

/** Accounts tried per request before giving up on the subscription route (the executor then moves on). */
export const MAX_ACCOUNTS_PER_REQUEST = 3;

/**
 * A 429 whose end the provider named (`resets_at`, reset headers): the cooldown ends exactly
 * then, not at a wait recomputed from `retryAfterMs`.
 */
export class AccountRateLimitError extends UpstreamError {
  constructor(
    init: Omit<UpstreamErrorInit, 'failure' | 'upstreamStatus' | 'retryAfterMs'>,
    /** Epoch ms, or undefined when the provider said nothing (the default backoff applies). */
    readonly until: number | undefined,
    retryAfterMs?: number,
  ) {
    super({
      ...init,
      failure: 'http',
      upstreamStatus: 429,
      // One account's limit: the pool cools that account, and the route stays in service for
      // the others (retried at once when one is usable: see \`retryAtOnce\` in the init).
      gatewayFault: true,
      retryAfterMs: until !== undefined ? Math.max(0, until - Date.now()) : retryAfterMs,
    });
  }
}

/** What one send with one account came to. */
type Outcome<T> = { ok: T } | { unauthorized: UpstreamError } | { next: UpstreamError };

/**
 * One upstream call with an account of `provider`, handling what accounts are for, the same for
 * every adapter that spends them (codex_sub, claude_sub):
 *
 * - 401: the access token was refused — one forced refresh (shared with any other request that
 *   saw the 401) and one retry; refused again, the failure counts against the account;
 * - 429: the account cools down (until `retryAfterMs` when the adapter read a reset time) and the
 *   next account is tried;
 * - 402, 403: the account's plan lapsed or its billing failed, or this login may not do this
 *   (plan, region, policy) — counted against it, next account;
 * - anything else passes through untouched (the executor decides about other routes).
 *
 * Up to MAX_ACCOUNTS_PER_REQUEST accounts. `send` throws `UpstreamError`s as adapters do; for
 * streams it resolves once the upstream accepted the request (status 200), before the body is
 * read. With no account left the error is retryable, so the model's next route takes over.
 */
export async function runWithAccounts<T>(
  pool: AccountPool,
  provider: SubscriptionProvider,
  signal: AbortSignal,
  send: (lease: AccountLease) => Promise<T>,
): Promise<{ value: T; lease: AccountLease }> {
  const tried = new Set<string>();
  let last: UpstreamError | undefined;
  for (let i = 0; i < MAX_ACCOUNTS_PER_REQUEST; i++) {
    let lease: AccountLease;
    try {
      // After one account failed, only accounts that have not failed lately: one that did (a 403
      // a moment ago, in this request or another) is a last resort for a request's first try,
      // not worth another refusal counted against it.
      lease = await pool.acquire(provider, signal, tried, tried.size > 0);
    } catch (err) {
      if (last && err instanceof UpstreamError && err.failure !== 'aborted') {
        // The accounts tried were rate limited (they cool down now) and none fresh is left, but
        // one that failed lately is usable and was not tried: the route is tried again at once,
        // whose first pick takes it (rather than tell the client to wait until the soonest
        // cooldown ends, an hour perhaps). Not after other refusals: the accounts that gave them
        // are still usable, and would be asked again.
        if (last.upstreamStatus === 429 && pool.usable(provider, tried).untried > 0) throw retryAtOnce(last);
        // Out of accounts after some failed: the client learns what the accounts said.
        throw exhausted(provider, last, err);
      }
      throw err;
    }
    tried.add(lease.id);
    let out = await attempt(pool, lease, send);
    if ('unauthorized' in out) {
      const refused = lease;
      try {
        lease = await pool.forceRefresh(refused, signal);
      } catch (err) {
        if (signal.aborted)
          throw new UpstreamError({ failure: 'aborted', message: 'the request was cancelled', provider: `${provider}_sub` });
        if (err instanceof RefreshSlow) {
          // Its token endpoint has not answered: the model's next route at once, not this one
          // again (each try would wait on the same refresh).
          last = refreshUnavailable(
            provider,
            `${provider} account ${refused.id} was refused and its token refresh has not answered yet (${err.message})`,
          );
          continue;
        }
        last = accountError(
          provider,
          // The token endpoint's answer is for the operator (the account's last_error and the
          // log), not for every client: it names the OAuth client and echoes the grant.
          `${provider} account ${refused.id} was refused and its token could not be refreshed (GET /admin/accounts has why)`,
          'subscription_auth_failed',
        );
        continue;
      }
      out = await attempt(pool, lease, send);
      if ('unauthorized' in out) {
        pool.authFailed(lease, `refused with a freshly refreshed token: ${out.unauthorized.message}`);
        out = {
          next: accountError(
            provider,
            `${provider} account ${lease.id} was refused even after a token refresh`,
            'subscription_auth_failed',
            // Not the route again after a backoff: each try would refresh (and rotate) the same
            // account's token once more. Another account is tried at once below, if one is fresh.
            false,
          ),
        };
      }
    }
    if ('ok' in out) return { value: out.ok, lease };
    last = out.next;
  }
  // As many accounts tried as one request may. Others still usable: the route is tried again at
  // once, with them. None: if they were rate limited, the client learns when the first account
  // is usable again (the last one's own 429 may not have said).
  // Only accounts that have not failed lately count: the ones tried and refused (a 403) are
  // still usable, and trying them again at once would only count each refusal once more.
  if (pool.usable(provider).fresh > 0) throw retryAtOnce(last!);
  const until = pool.firstUsableAgain(provider);
  if (last!.upstreamStatus === 429 && last!.retryAfterMs === undefined && until !== undefined)
    throw exhausted(provider, last!, accountError(provider, 'cooling down', 'subscription_rate_limited'), Math.max(0, until - Date.now()));
  throw last!;
}

/** `err`, marked as one the route may be tried again for at once (another account will serve). */
function retryAtOnce(err: UpstreamError): UpstreamError {
  return err.with({ retryable: true, gatewayFault: true, retryAtOnce: true });
}

/**
 * A limit an account met after the call was accepted (an error event in the stream): cooled by
 * the adapter; the route is retried at once when another account is usable.
 */
export function streamAccountLimit(pool: AccountPool, provider: SubscriptionProvider, err: AccountRateLimitError): UpstreamError {
  return pool.usable(provider).usable > 0 ? retryAtOnce(err) : err;
}

async function attempt<T>(pool: AccountPool, lease: AccountLease, send: (lease: AccountLease) => Promise<T>): Promise<Outcome<T>> {
  try {
    const value = await send(lease);
    pool.succeeded(lease);
    return { ok: value };
  } catch (err) {
    if (!(err instanceof UpstreamError) || err.failure !== 'http') throw err;
    switch (err.upstreamStatus) {
      case 401:
        return { unauthorized: err };
      case 429:
        pool.rateLimited(
          lease,
          err.message,
          err instanceof AccountRateLimitError && err.until !== undefined
            ? err.until
            : err.retryAfterMs !== undefined
              ? Date.now() + err.retryAfterMs
              : undefined,
        );
        return { next: err };
      case 402:
        // The account's plan lapsed or its billing failed: counted against it, the next account.
        // The client gets it as it is (502 upstream_payment_required, x-should-retry: false),
        // the account's fault, not the route's.
        pool.authFailed(lease, `402: ${err.message}`);
        return { next: err.with({ gatewayFault: true }) };
      case 403:
        pool.authFailed(lease, `403: ${err.message}`);
        return {
          next: accountError(
            lease.provider,
            `${lease.provider} account ${lease.id} is not allowed: ${err.message}`,
            'subscription_forbidden',
            // The login may not do this: trying the same accounts again after a backoff would
            // only count each refusal against them again. The model's next route may serve.
            false,
          ),
        };
      default:
        throw err;
    }
  }
}

/** Keeps the 429 and its wait when the accounts were rate limited; otherwise says what went wrong last. */
function exhausted(provider: SubscriptionProvider, last: UpstreamError, none: UpstreamError, retryAfterMs?: number): UpstreamError {
  if (none.upstreamStatus !== 429 && last.upstreamStatus !== 429) return last;
  return new UpstreamError({
    failure: 'http',
    upstreamStatus: 429,
    message: `${provider} subscription accounts are rate limited: ${last.message}`,
    code: 'subscription_rate_limited',
    retryAfterMs: retryAfterMs ?? none.retryAfterMs ?? last.retryAfterMs,
    retryable: true,
    gatewayFault: true,
    provider: `${provider}_sub`,
  });
}

/**
 * No account has a usable token because its provider's token endpoint failed or has not answered:
 * a 503 that moves to the model's next route at once (this one again would wait on the same
 * refresh); the client gets the Retry-After, if given, when no route is left.
 */
export function refreshUnavailable(provider: SubscriptionProvider, message: string, retryAfterMs?: number): UpstreamError {
  return new UpstreamError({
    failure: 'http',
    status: 503,
    type: 'upstream_error',
    message,
    code: 'subscription_token_refresh_unavailable',
    retryAfterMs,
    retryable: false,
    gatewayFault: true,
    provider: `${provider}_sub`,
  });
}

/**
 * An account-level failure: retryable (the route again after a backoff, then the model's next
 * route) unless `retryable` is false (the next route at once). Not
 * counted against the route's circuit breaker: the pool takes failing accounts out itself, and
 * an open circuit would keep refusing after an account is enabled or cools down.
 */
export function accountError(provider: SubscriptionProvider, message: string, code: string, retryable = true): UpstreamError {
  return new UpstreamError({ failure: 'http', message, code, retryable, gatewayFault: true, provider: `${provider}_sub` });
}
