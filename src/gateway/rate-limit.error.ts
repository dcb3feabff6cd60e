import { GatewayError, retryAfterHeaders } from '../common/errors';
import type { LimitName } from './local-limits';

const CODES: Record<LimitName, string> = {
  rpm: 'rpm_limit_exceeded',
  tpm: 'tpm_limit_exceeded',
  concurrency: 'concurrency_limit_exceeded',
  daily_budget: 'daily_budget_exceeded',
  monthly_budget: 'monthly_budget_exceeded',
};

/** A key's own limit refused the request (429): the code names the limit, Retry-After says when to come back. */
export class RateLimitError extends GatewayError {
  readonly status = 429;
  readonly type = 'rate_limit_error';
  override readonly code: string;
  override readonly headers: Record<string, string>;

  constructor(
    readonly limit: LimitName,
    message: string,
    readonly retryAfterMs: number,
    headers: Record<string, string> = {},
    /** The request can never pass this limit as it is (it asks for more than the limit itself). */
    permanent = false,
  ) {
    super(message);
    this.code = CODES[limit];
    // The SDKs retry a 429 after its Retry-After; a permanent one would be refused again each time,
    // so it names no wait (a Retry-After would tell other clients and proxies to come back).
    this.headers = permanent ? { ...headers, 'x-should-retry': 'false' } : { ...headers, ...retryAfterHeaders(retryAfterMs) };
  }
}
