import { GatewayError, retryAfterHeaders } from '../common/errors';

/**
 * Every route that could serve the request is unhealthy or behind an open circuit: answered at
 * once (503 with Retry-After) instead of waiting on endpoints known to be failing.
 */
export class NoAvailableRouteError extends GatewayError {
  readonly status = 503;
  readonly type = 'server_error';
  override readonly code = 'no_available_route';

  constructor(message: string, retryAfterMs?: number) {
    super(message);
    if (retryAfterMs !== undefined) (this as { headers?: Record<string, string> }).headers = retryAfterHeaders(retryAfterMs);
  }
}

/** The request's provider preferences (`only`, `ignore`, `max_price`) leave no route, as OpenRouter answers 404. */
export class NoMatchingRouteError extends GatewayError {
  readonly status = 404;
  readonly type = 'invalid_request_error';
  override readonly code = 'no_matching_route';
  override readonly param = 'provider';
}
