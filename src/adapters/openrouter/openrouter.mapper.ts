import type { RouteDef } from '../../config/registry.types';

/**
 * The OpenRouter extras on a request body (in place): usage accounting asked for on chat and
 * text completions (so the answer carries `usage.cost`; OpenRouter now always sends it, older
 * deployments only when asked), the route's static provider preferences, and for
 * `kind: openrouter[slug]` the pinned sub-provider: `provider.order = [slug]` with
 * `allow_fallbacks: false`, so the request is served there or fails (and the gateway's own
 * routing decides what next). The client's own `provider`/`models` never reach OpenRouter: the
 * gateway routes.
 */
export function openRouterBody(body: Record<string, unknown>, route: RouteDef, accounting = true): Record<string, unknown> {
  if (accounting) body.usage = { include: true };
  const prefs = route.options.provider;
  const provider: Record<string, unknown> =
    typeof prefs === 'object' && prefs !== null && !Array.isArray(prefs) ? { ...(prefs as Record<string, unknown>) } : {};
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
