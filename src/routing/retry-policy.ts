import { isContextLengthError, type UpstreamError } from '../common/errors';
import type { RetryPolicy } from '../config/registry.types';

/**
 * What a failed attempt says about what to do next:
 * - `aborted`: our client left; stop.
 * - `request`: the request itself is wrong (400, 413, 422, ...), or asks for more than the gateway
 *   takes in (an embeddings answer over UPSTREAM_BODY_LIMIT): the same on every route; stop.
 * - `content_filter`: the provider refused the content; returned with its reason; stop.
 * - `context_length`: the prompt does not fit; only a route or model with a larger context helps.
 * - `route`: this route cannot serve it (401, 402, 403, 404: its key, credit or deployment; a 4xx
 *   saying its server has no such model, as DeepSeek's 400 "Model Not Exist"; or a request its
 *   protocol cannot express); next route.
 * - `transient`: connection refused or reset before any byte, 5xx, 408, 429; worth another try here.
 * - `slow`: a first-byte, first-token, idle or total deadline passed; the next route, not this one again.
 * - `broken`: an answer we could not understand; the next route.
 */
export type FailureClass = 'aborted' | 'request' | 'content_filter' | 'context_length' | 'route' | 'transient' | 'slow' | 'broken';

const FILTER_CODES = new Set([
  'content_filter',
  'content_policy_violation',
  'content_filtered',
  'responsibleaipolicyviolation',
  'moderation',
  'safety',
]);
const FILTER_TEXT =
  /content (management )?polic|content[ _-]filter|flagged by (our )?moderation|violat\w* (our|the) (usage|content) polic|safety (system|filter)/i;

/**
 * A server's word that it has no such model, as its message begins (DeepSeek: 400 "Model Not
 * Exist"; vLLM: "The model `x` does not exist."; Ollama: "model 'x' not found"): not the words
 * anywhere, where an error quoting what the client sent (an unknown parameter's name) would let
 * a client make its own 400 the route's.
 */
const MODEL_MISSING_TEXT =
  /^\s*(the )?model(\s+[`'"][^`'"\n]{1,200}[`'"])?\s+(does not exist|not exists?|not found|is not (served|available))\b/i;

/** A 4xx by which the route's server says it lacks the model (its deployment, not the request, is wrong). */
export function isModelMissingError(err: UpstreamError): boolean {
  const s = err.upstreamStatus;
  if (err.failure !== 'http' || s === undefined || s < 400 || s >= 500) return false;
  if (err.code === 'model_not_found') return true;
  return MODEL_MISSING_TEXT.test(err.message);
}

export function isContentFilterError(err: UpstreamError): boolean {
  const s = err.upstreamStatus;
  if (err.failure !== 'http' || s === undefined || s < 400 || s >= 500) return false;
  if (typeof err.code === 'string' && FILTER_CODES.has(err.code.toLowerCase())) return true;
  return FILTER_TEXT.test(err.message);
}

export function classifyFailure(err: UpstreamError): FailureClass {
  if (err.sameOnEveryRoute && err.failure !== 'aborted') return 'request';
  if (err.unsupportedByRoute) return 'route';
  switch (err.failure) {
    case 'aborted':
      return 'aborted';
    case 'connect':
    case 'reset':
      // An error the adapter marked as not worth repeating (an invalid URL) is a route problem.
      return err.retryable ? 'transient' : 'route';
    case 'timeout':
      return 'slow';
    case 'protocol':
      return 'broken';
    case 'http': {
      const s = err.upstreamStatus;
      if (s === undefined || s >= 500 || s === 408 || s === 429) return err.retryable ? 'transient' : 'route';
      if (isContentFilterError(err)) return 'content_filter';
      if (isContextLengthError(err)) return 'context_length';
      if (s === 401 || s === 402 || s === 403 || s === 404 || isModelMissingError(err)) return 'route';
      return 'request';
    }
  }
}

/** The least time left before a request's deadline for which another try is begun. */
export const MIN_RETRY_MS = 100;

/**
 * Whether a failure counts against the route's circuit breaker: its endpoint's own faults (5xx,
 * 408, 429, connection, timeouts, garbage) and its operator's (401, its key refused; 402, its
 * account's credit), which no request changes: else a route whose key was revoked was tried first
 * by every request for ever, and a latency-ranked one (never measured) first of all. Not the
 * request's (other 4xx: a 403 or 404 may be about what the request asked for, OpenRouter's 402
 * about its max_tokens against the credit left), our client leaving, nor the gateway's own code
 * failing on one request (else a client could take a route offline).
 */
export function countsAgainstEndpoint(err: UpstreamError): boolean {
  if (err.gatewayFault) return false;
  switch (err.failure) {
    case 'aborted':
      return false;
    case 'http': {
      const s = err.upstreamStatus;
      return s === undefined || s >= 500 || s === 408 || s === 429 || s === 401 || (s === 402 && !mayBeTheRequests402(err));
    }
    case 'connect':
    case 'reset':
    case 'timeout':
    case 'protocol':
      return true;
  }
}

/**
 * A 402 that may be about the request rather than the account: OpenRouter's, which it answers
 * when a request's max_tokens (or prompt) is more than the credit left could pay for, while
 * smaller requests go through.
 */
function mayBeTheRequests402(err: UpstreamError): boolean {
  return err.provider === 'openrouter' || /max_tokens|can only afford|prompt tokens limit/i.test(err.message);
}

/**
 * The wait before retry number `retry` (0 = the first retry): exponential from `backoffMs`,
 * capped at `maxBackoffMs`, with "equal jitter" — half fixed, half random — so that many clients
 * failing together spread out without ever retrying immediately.
 */
export function backoffDelay(retry: number, policy: Pick<RetryPolicy, 'backoffMs' | 'maxBackoffMs'>, random: () => number): number {
  const ceiling = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** Math.min(retry, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export type RetryDecision = { kind: 'stop' } | { kind: 'next' } | { kind: 'larger_context' } | { kind: 'retry'; delayMs: number };

/**
 * After a failed attempt on a route that has had `retriesDone` retries: stop, try the same route
 * again after a delay, or move on (a 429 at once, while `otherRoutes` are left to try). A
 * Retry-After within the cap is honoured (never retried sooner); a longer one, or a wait that
 * would not fit in `remainingMs`, moves on instead.
 */
export function decideRetry(
  err: UpstreamError,
  retriesDone: number,
  policy: RetryPolicy,
  remainingMs: number,
  random: () => number,
  /** Routes of the model not tried yet: a rate-limited route is waited for only when none is left. */
  otherRoutes = 0,
): RetryDecision {
  switch (classifyFailure(err)) {
    case 'aborted':
    case 'request':
    case 'content_filter':
      return { kind: 'stop' };
    case 'context_length':
      return { kind: 'larger_context' };
    case 'route':
    case 'slow':
    case 'broken':
      return { kind: 'next' };
    case 'transient': {
      // Another credential of this route will serve now (set only while one is usable, so it
      // cannot loop); the failed one's wait is its own, and no retry of the route was spent.
      if (err.retryAtOnce) return { kind: 'retry', delayMs: 0 };
      // Another route may answer now; the wait would be spent for nothing if the rate-limited
      // route's circuit opened meanwhile.
      if (err.upstreamStatus === 429 && otherRoutes > 0) return { kind: 'next' };
      if (retriesDone >= policy.maxRetries) return { kind: 'next' };
      let delayMs = backoffDelay(retriesDone, policy, random);
      if (err.retryAfterMs !== undefined) {
        if (err.retryAfterMs > policy.maxRetryAfterMs) return { kind: 'next' };
        delayMs = Math.max(delayMs, err.retryAfterMs);
      }
      // The wait must leave time for the try itself (MIN_RETRY_MS), or it was spent for nothing.
      if (delayMs + MIN_RETRY_MS > remainingMs) return { kind: 'next' };
      return { kind: 'retry', delayMs };
    }
  }
}
