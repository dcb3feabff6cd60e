import { PROVIDER_POLICY_KEYS } from '../../common/chat.types';
import type { RouteDef } from '../../config/registry.types';

/**
 * The OpenRouter extras on a request body (in place): usage accounting asked for on chat and
 * text completions (so the answer carries `usage.cost`; OpenRouter now always sends it, older
 * deployments only when asked), the route's static provider preferences, and for
 * `kind: openrouter[slug]` the pinned sub-provider: `provider.order = [slug]` with
 * `allow_fallbacks: false`, so the request is served there or fails (and the gateway's own
 * routing decides what next). The client's `models` and its provider choices (order, only,
 * ignore, sort, fallbacks) never reach OpenRouter: the gateway routes. Its policy preferences do,
 * which the gateway cannot act on (data collection, zero data retention, quantisations,
 * throughput and latency targets, price ceilings): OpenRouter can.
 */
export function openRouterBody(body: Record<string, unknown>, route: RouteDef, accounting = true): Record<string, unknown> {
  if (accounting) body.usage = { include: true };
  const prefs = route.options.provider;
  const fromClient = clientPolicy(body.provider);
  delete body.provider;
  // Plugins (web search, ...) are billed on top of the tokens, which the route's pricing does not
  // cover and a key's budget would not see: only routes that allow them pass them on.
  if (route.options.plugins !== true) delete body.plugins;
  const provider: Record<string, unknown> = {
    ...fromClient,
    ...(typeof prefs === 'object' && prefs !== null && !Array.isArray(prefs) ? (prefs as Record<string, unknown>) : {}),
  };
  // Of the data policies, the stricter holds: a client may ask for more privacy than the route's.
  if (fromClient.data_collection === 'deny') provider.data_collection = 'deny';
  if (fromClient.zdr === true) provider.zdr = true;
  if (route.kindArg) {
    provider.order = [route.kindArg];
    provider.allow_fallbacks = false;
  }
  if (Object.keys(provider).length > 0) body.provider = provider;
  return body;
}

/** App attribution headers (OpenRouter's `HTTP-Referer` and `X-Title`), when configured. */
export function openRouterHeaders(
  headers: Record<string, string>,
  referer: string | undefined,
  title: string | undefined,
): Record<string, string> {
  if (referer) headers['HTTP-Referer'] = referer;
  if (title) headers['X-Title'] = title;
  return headers;
}

/**
 * The client's provider preferences OpenRouter acts on and the gateway's routing does not decide
 * (a price ceiling the gateway applies to its own routes, OpenRouter to its providers).
 */
const POLICY_KEYS = [...PROVIDER_POLICY_KEYS, 'max_price'] as const;

function clientPolicy(p: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (typeof p !== 'object' || p === null || Array.isArray(p)) return out;
  for (const k of POLICY_KEYS) {
    const v = (p as Record<string, unknown>)[k];
    if (v !== undefined && v !== null) out[k] = v;
  }
  return out;
}
