import type { ModelDef, RetryPolicy, RouteDef, RoutingDef } from '../config/registry.types';

/**
 * Routing settings a route may carry in models.yaml next to its adapter options:
 * `context_length` (when this backend's window differs from the model's) and `retry` (overrides
 * of routing.yaml's retry policy). Read once per route object and cached.
 */
export interface RouteSettings {
  readonly contextLength?: number;
  readonly retry: Partial<RetryPolicy>;
  readonly problems: readonly string[];
}

/** The route keys read here, next to the adapter's options. */
export const ROUTE_SETTING_KEYS: readonly string[] = ['context_length', 'retry'];

const RETRY_KEYS: Record<string, keyof RetryPolicy> = {
  max_retries: 'maxRetries',
  backoff_ms: 'backoffMs',
  max_backoff_ms: 'maxBackoffMs',
  max_retry_after_ms: 'maxRetryAfterMs',
};
const RETRY_MIN: Record<string, number> = { max_retries: 0, backoff_ms: 1, max_backoff_ms: 1, max_retry_after_ms: 0 };

const cache = new WeakMap<RouteDef, RouteSettings>();

export function routeSettings(route: RouteDef): RouteSettings {
  let s = cache.get(route);
  if (!s) {
    s = readRouteSettings(route);
    cache.set(route, s);
  }
  return s;
}

function wholeNumber(v: unknown): number | undefined {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  return typeof n === 'number' && Number.isInteger(n) ? n : undefined;
}

function readRouteSettings(route: RouteDef): RouteSettings {
  const problems: string[] = [];
  const o = route.options;
  let contextLength: number | undefined;
  if (o.context_length !== undefined && o.context_length !== null) {
    contextLength = wholeNumber(o.context_length);
    if (contextLength === undefined || contextLength < 1) {
      problems.push(`${route.where}: context_length must be a whole number of tokens, at least 1`);
      contextLength = undefined;
    }
  }
  const retry: { -readonly [K in keyof RetryPolicy]?: number } = {};
  if (o.retry !== undefined && o.retry !== null) {
    if (typeof o.retry !== 'object' || Array.isArray(o.retry)) {
      problems.push(`${route.where}: retry must be a mapping of ${Object.keys(RETRY_KEYS).join(', ')}`);
    } else {
      for (const [key, value] of Object.entries(o.retry as Record<string, unknown>)) {
        const field = RETRY_KEYS[key];
        if (!field) {
          problems.push(`${route.where}: retry.${key} is not a per-route setting; use ${Object.keys(RETRY_KEYS).join(', ')}`);
          continue;
        }
        const n = wholeNumber(value);
        if (n === undefined || n < RETRY_MIN[key])
          problems.push(`${route.where}: retry.${key} must be a whole number, at least ${RETRY_MIN[key]}`);
        else retry[field] = n;
      }
    }
  }
  return { contextLength, retry, problems };
}

/** The retry policy for attempts at this route: routing.yaml's, with the route's overrides. */
export function retryPolicyFor(route: RouteDef, routing: RoutingDef): RetryPolicy {
  const own = routeSettings(route).retry;
  return Object.keys(own).length === 0 ? routing.retry : { ...routing.retry, ...own };
}

/** The context window of a route: its own `context_length`, else the model's. */
export function contextLengthOf(model: ModelDef, route: RouteDef): number {
  return routeSettings(route).contextLength ?? model.contextLength;
}
