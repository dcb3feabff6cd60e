/**
 * The account state machine, as pure functions so every transition is tested without a database.
 *
 *   active ──429──────────────────────────▶ cooldown (until the provider's reset time, else a backoff)
 *   active ──auth failure × threshold─────▶ cooldown (backoff)
 *   cooldown ──time passes───────────────▶ active   (seen lazily: `effectiveStatus`)
 *   active | cooldown | disabled ──invalid_grant on refresh──▶ revoked
 *   active | cooldown ──admin disable────▶ disabled ──admin enable──▶ active
 *   active | cooldown | revoked ──new credentials (import, add)──▶ active
 *
 * A revoked account is dead until it gets new credentials: enabling or disabling it is refused, so
 * no admin action can put a dead refresh token back into rotation.
 */

export const ACCOUNT_STATUSES = ['active', 'cooldown', 'revoked', 'disabled'] as const;
export type AccountStatus = (typeof ACCOUNT_STATUSES)[number];

export interface AccountState {
  status: AccountStatus;
  /** Epoch ms; set while in cooldown. */
  cooldownUntil: number | null;
  /** Consecutive rate-limit and authentication failures; a success resets it. */
  failures: number;
  lastError: string | null;
  /** Epoch ms. */
  lastErrorAt: number | null;
}

export interface StatePolicy {
  /** Cooldown after a 429 without a reset time, doubled per consecutive failure. */
  cooldownMs: number;
  maxCooldownMs: number;
  /** Consecutive auth failures that put an account in cooldown. */
  failureThreshold: number;
}

export type AccountEvent =
  /** The provider said 429 (or a usage limit in-stream). `until`: its reset time, epoch ms. */
  | { type: 'rate_limited'; message: string; until?: number }
  /** Rejected after a forced refresh, or a refresh failed for a reason that may pass. */
  | { type: 'auth_failed'; message: string }
  /**
   * The account has no usable token and its refresh failed for a reason of the token endpoint's
   * (unreachable, a 5xx): usable again at `until`, when the refresh is tried again. Not counted as
   * the account's failure, so an outage of the endpoint does not grow its cooldowns.
   */
  | { type: 'refresh_unavailable'; message: string; until: number }
  /** New tokens came (a refresh that succeeded). */
  | { type: 'refreshed' }
  /** The token endpoint refused the refresh token for good (invalid_grant and kin). */
  | { type: 'refresh_rejected'; message: string }
  | { type: 'succeeded' }
  | { type: 'disable' }
  | { type: 'enable' }
  /** New tokens from an import or an admin add. */
  | { type: 'credentials_replaced' };

/** An event the current state does not allow (an admin action on a revoked account). */
export class TransitionRefused extends Error {}

export function initialState(): AccountState {
  return { status: 'active', cooldownUntil: null, failures: 0, lastError: null, lastErrorAt: null };
}

/** The status as of `now`: a cooldown that has run out is active again. */
export function effectiveStatus(s: AccountState, now: number): AccountStatus {
  return s.status === 'cooldown' && (s.cooldownUntil === null || s.cooldownUntil <= now) ? 'active' : s.status;
}

/** How the message of a failed refresh begins (stored: every process reads why an account waits). */
export const REFRESH_FAILED = 'token refresh failed';

/** Cooling down because its token could not be refreshed (by any process), not for its own failures. */
export function waitsForRefresh(s: AccountState): boolean {
  return s.status === 'cooldown' && s.lastError?.startsWith(REFRESH_FAILED) === true;
}

export function isUsable(s: AccountState, now: number): boolean {
  return effectiveStatus(s, now) === 'active';
}

/** Cooldown length for the n-th consecutive failure (n ≥ 1) when the provider names no time. */
export function backoffMs(n: number, policy: StatePolicy): number {
  return Math.min(policy.maxCooldownMs, policy.cooldownMs * 2 ** Math.min(30, Math.max(0, n - 1)));
}

/**
 * The state after `event`. Returns the same object when nothing changed, so callers persist only
 * real changes. Throws `TransitionRefused` for admin actions the state does not allow.
 */
export function transition(state: AccountState, event: AccountEvent, now: number, policy: StatePolicy): AccountState {
  const s: AccountState = { ...state, status: effectiveStatus(state, now) };
  if (s.status === 'active') s.cooldownUntil = null;
  switch (event.type) {
    case 'rate_limited': {
      if (s.status === 'revoked' || s.status === 'disabled') return state;
      const failures = s.failures + 1;
      const cap = now + policy.maxCooldownMs;
      const wanted = event.until !== undefined && event.until > now ? Math.min(event.until, cap) : now + backoffMs(failures, policy);
      return {
        status: 'cooldown',
        cooldownUntil: Math.max(wanted, s.cooldownUntil ?? 0),
        failures,
        lastError: event.message,
        lastErrorAt: now,
      };
    }
    case 'auth_failed': {
      if (s.status === 'revoked' || s.status === 'disabled') return state;
      const failures = s.failures + 1;
      const next: AccountState = { ...s, failures, lastError: event.message, lastErrorAt: now };
      if (failures >= policy.failureThreshold) {
        next.status = 'cooldown';
        next.cooldownUntil = Math.max(now + backoffMs(failures - policy.failureThreshold + 1, policy), s.cooldownUntil ?? 0);
      }
      return next;
    }
    case 'refresh_unavailable':
      if (s.status === 'revoked' || s.status === 'disabled') return state;
      // A longer cooldown (a rate limit) stands, and says why.
      if (s.status === 'cooldown' && (s.cooldownUntil ?? 0) >= event.until) return state;
      return { ...s, status: 'cooldown', cooldownUntil: event.until, lastError: event.message, lastErrorAt: now };
    case 'refreshed':
      // New tokens end a wait for them (not a rate limit's cooldown, nor anything else).
      if (!waitsForRefresh(s)) return state;
      return { ...s, status: 'active', cooldownUntil: null };
    case 'refresh_rejected':
      return { status: 'revoked', cooldownUntil: null, failures: s.failures, lastError: event.message, lastErrorAt: now };
    case 'succeeded':
      // A success that raced a revocation or a disable changes nothing.
      if (s.status !== 'active') return state;
      if (state.status === 'active' && state.failures === 0) return state;
      return { ...s, failures: 0 };
    case 'disable':
      if (s.status === 'revoked')
        throw new TransitionRefused('the account is revoked (its refresh token was refused); import new credentials for it instead');
      if (state.status === 'disabled') return state;
      return { ...s, status: 'disabled', cooldownUntil: null };
    case 'enable':
      if (s.status === 'revoked')
        throw new TransitionRefused(
          'the account is revoked (its refresh token was refused); import new credentials for it to use it again',
        );
      if (state.status === 'active' && state.failures === 0) return state;
      return { ...s, status: 'active', cooldownUntil: null, failures: 0 };
    case 'credentials_replaced':
      if (s.status === 'disabled')
        return state.cooldownUntil === null && state.failures === 0 ? state : { ...s, cooldownUntil: null, failures: 0 };
      return { ...s, status: 'active', cooldownUntil: null, failures: 0 };
  }
}
