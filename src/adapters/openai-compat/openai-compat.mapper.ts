import type { ChatRequest } from '../../common/chat.types';
import { UpstreamError } from '../../common/errors';
import type { RouteDef } from '../../config/registry.types';
import type { OpenAiCompatProfile } from './openai-compat.profiles';

/** OpenRouter-style request options the gateway acts on itself; upstreams never see them. */
export const GATEWAY_ONLY_FIELDS = ['models', 'provider', 'route', 'transforms', 'plugins', 'usage'] as const;

/**
 * The upstream request body: everything the client sent (standard and server-specific
 * parameters alike), the route's `extra_body`, and the upstream's model name. Streams always ask
 * for usage so the gateway can account for them.
 */
export function buildChatBody(req: ChatRequest, route: RouteDef, stream: boolean, profile: OpenAiCompatProfile): Record<string, unknown> {
  const body: Record<string, unknown> = route.extraBody ? { ...req, ...route.extraBody } : { ...req };
  for (const f of GATEWAY_ONLY_FIELDS) delete body[f];
  for (const f of profile.dropFields) delete body[f];
  body.model = route.providerModelId;
  if (stream) {
    body.stream = true;
    body.stream_options = { ...(req.stream_options ?? {}), include_usage: true };
  } else {
    delete body.stream;
    delete body.stream_options;
  }
  return body;
}

/** `{base_url}/chat/completions`, whatever slashes the operator wrote. */
export function endpointUrl(baseUrl: string, path: string): string {
  return `${baseUrl.replace(/\/+$/, '')}/${path.replace(/^\/+/, '')}`;
}

/**
 * An upstream error response as a typed error, keeping the upstream's own message. Understands
 * OpenAI's `{error: {message, type, code, param}}`, vLLM's flat `{object: "error", message}`,
 * FastAPI's `{detail}` and plain text.
 */
export function upstreamHttpError(
  status: number,
  text: string,
  route: RouteDef,
  retryAfterMs: number | undefined,
): UpstreamError {
  let message = text.trim().slice(0, 2000);
  let type: string | undefined;
  let code: string | number | null | undefined;
  let param: string | null | undefined;
  try {
    const json = JSON.parse(text) as Record<string, unknown>;
    const err = (typeof json.error === 'object' && json.error !== null ? json.error : json) as Record<string, unknown>;
    const m = err.message ?? (typeof json.error === 'string' ? json.error : undefined) ?? json.detail ?? json.msg;
    if (typeof m === 'string' && m) message = m;
    else if (m !== undefined) message = JSON.stringify(m);
    if (typeof err.type === 'string') type = err.type;
    if (typeof err.code === 'string' || typeof err.code === 'number') code = err.code;
    if (typeof err.param === 'string') param = err.param;
  } catch {
    // not JSON: keep the text
  }
  if (!message) message = `HTTP ${status}`;
  const clientError = status >= 400 && status < 500;
  return new UpstreamError({
    failure: 'http',
    upstreamStatus: status,
    message: clientError ? message : `upstream ${route.id} answered ${status}: ${message}`,
    type: clientError ? type : undefined,
    code: clientError ? code : undefined,
    param,
    retryAfterMs,
    provider: route.kind,
    route: route.id,
  });
}
