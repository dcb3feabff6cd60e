import type { Dispatcher } from 'undici';
import { SECRET_NAME } from '../../common/secret-names';
import { OPERATOR_REFUSAL, UpstreamError } from '../../common/errors';
import { isJsonObject } from '../../common/json-object';
import { EFFORTS } from '../../common/reasoning';
import type { ChatRequest } from '../../common/chat.types';
import type { RouteDef } from '../../config/registry.types';
import type { CallContext, ProbeResult } from '../llm-adapter';
import { readBodyText, retryAfterMs, type UpstreamClient } from './upstream-client.service';

/** Turns an upstream's error response into a typed error, in that provider's terms. */
export type HttpErrorMapper = (
  status: number,
  text: string,
  retryAfterMs: number | undefined,
  headers: Dispatcher.ResponseData['headers'],
) => UpstreamError;

export function callInfo(route: RouteDef, ctx: Pick<CallContext, 'signal' | 'timeouts' | 'dispatched'>) {
  return { signal: ctx.signal, timeouts: ctx.timeouts, route: route.id, provider: route.kind, sent: ctx.dispatched };
}

/**
 * POSTs a JSON body through the pooled client. An error status is read (up to 64 KiB) and
 * becomes the provider's `UpstreamError`; a success is returned with its body unread.
 */
export async function postJson(
  http: UpstreamClient,
  url: string,
  headers: Record<string, string>,
  body: unknown,
  route: RouteDef,
  ctx: Pick<CallContext, 'signal' | 'timeouts' | 'accepted' | 'dispatched'>,
  toError: HttpErrorMapper,
): Promise<Dispatcher.ResponseData> {
  const res = await http.request({
    url,
    method: 'POST',
    headers,
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...callInfo(route, ctx),
  });
  if (res.statusCode >= 400) {
    const text = await readBodyText(res.body);
    const err = toError(res.statusCode, text, retryAfterMs(res.headers), res.headers);
    throw res.headers['x-should-retry'] === 'false' ? err.refuseRetry() : err;
  }
  const unusable = unusableAnswer(res, url);
  if (unusable) {
    res.body.destroy();
    throw protocolError(route, unusable);
  }
  ctx.accepted?.();
  return res;
}

/**
 * What makes a success status no answer, whatever its body: a redirect (undici follows none, and
 * an API that moved is a route to fix, not a body to parse), or a compression the gateway never
 * asked for. Both were reported as invalid JSON, or as a stream that ended without an answer.
 */
function unusableAnswer(res: Dispatcher.ResponseData, url: string): string | undefined {
  if (res.statusCode >= 300) return `answered ${res.statusCode}${redirectTarget(res.headers.location, url)}`;
  const encoding = res.headers['content-encoding'];
  if (typeof encoding === 'string' && encoding.trim() !== '' && encoding.trim().toLowerCase() !== 'identity')
    return `answered ${encoding.trim().slice(0, 40)}-encoded, which the gateway did not ask for`;
  return undefined;
}

/**
 * Where a redirect points, in terms that do not give the client the upstream's address (the
 * usual redirect is http to https on the route's own host): the scheme, the path on the same
 * host, or just that it is another host.
 */
function redirectTarget(location: string | string[] | undefined, url: string): string {
  if (typeof location !== 'string' || location === '') return '';
  let to: URL;
  let from: URL;
  try {
    from = new URL(url);
    to = new URL(location, from);
  } catch {
    return '';
  }
  if (to.host !== from.host) return ' (a redirect to another host)';
  if (to.protocol !== from.protocol) return ` (a redirect to ${to.protocol.slice(0, -1)}: the route's base_url should use it)`;
  return ` (a redirect to ${to.pathname.slice(0, 200)})`;
}

/**
 * Reads a whole success body (up to UPSTREAM_BODY_LIMIT) as JSON; leading blank lines
 * (DeepSeek's keep-alives) are fine.
 */
export async function readJson<T>(
  http: UpstreamClient,
  res: Dispatcher.ResponseData,
  route: RouteDef,
  ctx: Pick<CallContext, 'signal' | 'timeouts'>,
): Promise<T> {
  return parseAnswer<T>(await http.readAnswer(res.body, res.headers, callInfo(route, ctx)), res, route);
}

/**
 * A success body as JSON. Its content type is not checked first (servers send JSON as
 * text/plain or with none); only when it does not parse does the error name the type, so that a
 * proxy's HTML page reads as one.
 */
export function parseAnswer<T>(text: string, res: Dispatcher.ResponseData, route: RouteDef): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    const type = res.headers['content-type'];
    const mime = typeof type === 'string' ? type.split(';')[0].trim().toLowerCase().slice(0, 60) : '';
    throw protocolError(route, mime !== '' && !mime.includes('json') ? `answered ${mime}, not JSON` : 'answered with invalid JSON');
  }
}

export function protocolError(route: RouteDef, what: string): UpstreamError {
  return new UpstreamError({ failure: 'protocol', message: `upstream ${route.id} ${what}`, provider: route.kind, route: route.id });
}

/**
 * A stream request answered with a page or a whole JSON answer instead of events (a server that
 * ignored `stream`, a proxy's error page): a route that answers wrongly, not a stream cut short
 * (which is retried). Callers check `SseDecoder.notEventStream` once the body has ended.
 */
export function notEventStreamError(res: Dispatcher.ResponseData, route: RouteDef): UpstreamError {
  const type = String(res.headers['content-type'] ?? '')
    .split(';')[0]
    .trim()
    .slice(0, 60);
  return protocolError(route, `answered a stream request with no event stream (${type || 'no content type'})`);
}

/**
 * Parses one SSE data payload as a JSON object, or fails the stream as a protocol error. Every
 * provider's events are objects; `null`, a number or an array would otherwise reach code that
 * reads fields off it.
 */
export function parseEvent<T>(data: string, route: RouteDef): T {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    throw protocolError(route, 'sent a malformed stream event');
  }
  if (!isJsonObject(value)) throw protocolError(route, `sent a stream event that is not a JSON object (${data.slice(0, 40)})`);
  return value as T;
}

/**
 * Ends a response body after a stream: read the rest when the stream completed (so the
 * keep-alive connection goes back to the pool), destroy it otherwise.
 */
export function releaseBody(res: Dispatcher.ResponseData, completed: boolean): void {
  if (completed) res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
  else if (!res.body.destroyed) res.body.destroy();
}

/** A route option as a string, if set. */
export function optionString(route: RouteDef, ...keys: string[]): string | undefined {
  for (const k of keys) {
    const v = route.options[k];
    if (typeof v === 'string' && v.trim() !== '') return v.trim();
    if (typeof v === 'number') return String(v);
    // A list where a comma-separated value is meant (`anthropic_beta: [a, b]`).
    if (LIST_OPTIONS.has(k) && Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string')) return v.join(',');
  }
  return undefined;
}

/** Route options that are text, whichever adapter reads them (`optionString`). */
const TEXT_OPTIONS: ReadonlySet<string> = new Set([
  'anthropic_beta',
  'client_version',
  'user_agent',
  'http_referer',
  'x_title',
  'task_type',
  'instructions',
  'reasoning_effort',
  'reasoning_summary',
  'text_verbosity',
  'originator',
  'region',
  'location',
  'project_id',
]);
/** Text options that may also be written as a list of strings (joined with commas). */
const LIST_OPTIONS: ReadonlySet<string> = new Set(['anthropic_beta']);

/**
 * A route's text options of another type (`anthropic_beta: 5`, `instructions: {a: 1}`), which
 * `optionString` would take for unset: refused at start and reload, naming the option.
 */
export function textOptionProblems(route: RouteDef, declared: readonly string[]): string[] {
  const problems: string[] = [];
  for (const key of declared) {
    const v = route.options[key];
    if (v === undefined || v === null || !TEXT_OPTIONS.has(key) || typeof v === 'string' || typeof v === 'number') continue;
    if (LIST_OPTIONS.has(key) && Array.isArray(v) && v.every((x) => typeof x === 'string')) continue;
    problems.push(`${route.where}: ${key} must be a string${LIST_OPTIONS.has(key) ? ' (or a list of strings)' : ''}`);
  }
  return problems;
}

/** A route option as a number, if set to one (numeric strings count: `${VAR}` expansions). */
export function optionNumber(route: RouteDef, key: string): number | undefined {
  const v = route.options[key];
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  return Number.isFinite(n) ? n : undefined;
}

/**
 * `{base_url}/path`, whatever slashes the operator wrote. A query on the base URL (Azure's
 * `?api-version=...`, a gateway's key) stays a query, after the path and its own query.
 */
export function joinUrl(baseUrl: string, path: string): string {
  const [base, baseQuery] = splitQuery(baseUrl);
  const [rest, pathQuery] = splitQuery(path);
  const query = [pathQuery, baseQuery].filter((q) => q !== '').join('&');
  return `${base.replace(/\/+$/, '')}/${rest.replace(/^\/+/, '')}${query ? `?${query}` : ''}`;
}

function splitQuery(url: string): [string, string] {
  const at = url.indexOf('?');
  return at < 0 ? [url, ''] : [url.slice(0, at), url.slice(at + 1)];
}

/** What a provider's error body said, in OpenAI's terms. */
export interface ProviderErrorFields {
  message: string;
  type?: string;
  code?: string | number | null;
  param?: string | null;
  /** Overrides the retry decision (default: 5xx, 408 and 429 are retryable). */
  retryable?: boolean;
  /** Overrides the status the client sees (default: 4xx as is, 5xx as 502). */
  status?: number;
  /** The error's `metadata` (OpenRouter's: moderation reasons, the provider that failed, its raw error). */
  metadata?: unknown;
  /** Anthropic's `error.details` (`{error_code, ...}`). */
  details?: unknown;
}

/** Metadata larger than this is not passed on: an error body is no place for a provider's whole page. */
const MAX_METADATA_CHARS = 8_000;

/**
 * An upstream's error status as a typed error: a 4xx keeps the provider's message, type and code
 * (the client's request was at fault), a 5xx names the route and is retryable.
 */
export function providerHttpError(
  status: number,
  f: ProviderErrorFields,
  route: RouteDef,
  retryAfterMs: number | undefined,
  /** What the upstream did, for a server error's message (an in-band error event is no HTTP status). */
  what = `answered ${status}`,
): UpstreamError {
  const message = withoutKeys(f.message || `HTTP ${status}`, route);
  // An upstream's 408 is its own timeout waiting for the request, not the client's: a 504, as the
  // gateway's own timeouts are (a 408 from the gateway means the client's body stalled).
  const clientError = status >= 400 && status < 500 && status !== 408;
  // A 401 is about the gateway's credentials for the route (its key, a subscription's token), a
  // 402 about the operator's account with the provider: never the client's. Said so, so that no
  // one takes it for their own key refused or their own credits spent (OpenRouter's 402).
  const aboutUs = status === 401 ? OPERATOR_REFUSALS[401] : status === 402 ? OPERATOR_REFUSALS[402] : undefined;
  // A 401 to the client is its own key refused (the SDKs raise AuthenticationError, and apps ask
  // their user for a new key), a 402 its own credits spent (OpenRouter's meaning): the gateway's
  // credentials or the operator's account refused upstream are a 502, as the Anthropic surface
  // has them, with `upstream_unauthorized` / `upstream_payment_required` and x-should-retry: false.
  const operators = aboutUs !== undefined;
  return new UpstreamError({
    failure: 'http',
    upstreamStatus: status,
    message: aboutUs
      ? `upstream ${route.id} ${aboutUs.what} (${status}): ${message}`
      : clientError
        ? message
        : `upstream ${route.id} ${what}: ${message}`,
    type: operators ? 'upstream_error' : status === 408 ? 'timeout_error' : clientError || f.status !== undefined ? f.type : undefined,
    code: aboutUs ? aboutUs.code : status === 408 ? 'upstream_timeout' : clientError || f.status !== undefined ? f.code : undefined,
    param: f.param,
    retryAfterMs,
    retryable: f.retryable,
    status: operators ? 502 : status === 408 ? 504 : f.status,
    metadata: errorMetadata(f.metadata, route),
    details: errorMetadata(f.details, route),
    provider: route.kind,
    route: route.id,
  });
}

/** Upstream refusals that are about the operator's standing with the provider, not the client's. */
const OPERATOR_REFUSALS = {
  401: { what: "refused the gateway's credentials for it", code: OPERATOR_REFUSAL.unauthorized },
  402: { what: "refused for payment: the operator's account with the provider", code: OPERATOR_REFUSAL.paymentRequired },
} as const;

/** An upstream's error metadata (or details) for the client: a JSON object, the route's keys blanked out, not too large. */
function errorMetadata(m: unknown, route: RouteDef): Record<string, unknown> | undefined {
  if (!isJsonObject(m)) return undefined;
  const json = withoutKeys(JSON.stringify(m), route);
  return json.length <= MAX_METADATA_CHARS && json !== '{}' ? (JSON.parse(json) as Record<string, unknown>) : undefined;
}

/**
 * A request body with a route's `extra_body` merged in: objects merge key by key at every depth
 * (a route's `generationConfig: {temperature: ...}` joins the request's token limit and stop
 * sequences instead of replacing them), and anything else the route sets wins. An object that
 * is one choice among alternatives replaces the request's whole: one with a `type`
 * (`thinking: {type: disabled}`, `response_format`, `tool_choice`), and the settings whose fields
 * exclude each other (Gemini's `thinkingConfig`: a level or a budget; OpenRouter's `reasoning`:
 * an effort or a token count). Neither input is changed.
 */
export function withExtraBody(
  body: Record<string, unknown>,
  extra: Readonly<Record<string, unknown>> | undefined,
): Record<string, unknown> {
  if (!extra) return body;
  const out: Record<string, unknown> = { ...body };
  for (const [k, v] of Object.entries(extra))
    out[k] = isJsonObject(v) && isJsonObject(out[k]) && !('type' in v) && !WHOLE_SETTINGS.has(k) ? withExtraBody(out[k], v) : v;
  return out;
}

/** Settings whose fields exclude each other: a route's replaces the request's, never merges with it. */
const WHOLE_SETTINGS: ReadonlySet<string> = new Set(['thinkingConfig', 'reasoning']);

/**
 * An upstream's error text with the route's own keys blanked out (some servers quote the key
 * they refused, and the text is passed on to the client: a 401 passes through), and the route's
 * address: a client is never told where a route's server is (`/routing` never shows it either),
 * and proxies and servers often name their own address in an error.
 */
export function withoutKeys(text: string, route: RouteDef): string {
  let out = withoutSecrets(text, route.apiKeys);
  out = withoutSecrets(out, routeCredentials(route));
  for (const address of addressesOf(route.baseUrl)) if (out.includes(address)) out = out.replaceAll(address, '[upstream]');
  return out;
}

/**
 * A route's credentials besides its keys: the values of its credential headers (`headers:
 * {api-key: ...}`), and those of its base URL's credential parameters and user info.
 */
function routeCredentials(route: RouteDef): string[] {
  const found: string[] = [];
  for (const [name, value] of Object.entries(route.headers)) if (SECRET_NAME.test(name)) found.push(value, ...value.split(/\s+/));
  if (route.baseUrl?.includes('?') || route.baseUrl?.includes('@')) {
    try {
      const url = new URL(route.baseUrl);
      for (const [name, value] of url.searchParams) if (SECRET_NAME.test(name)) found.push(value, encodeURIComponent(value));
      found.push(decodeURIComponent(url.username), decodeURIComponent(url.password));
    } catch {
      // not a URL: nothing more to blank
    }
  }
  // Longest first, so that a whole value goes before a shorter one it contains (`Bearer sk-...`
  // before `sk-...`, a key before another key's prefix of it).
  return found.sort((a, b) => b.length - a.length);
}

/**
 * How an error may write a base URL's address, longest first: its origin, and its host when
 * that has a port or a dot (a bare name, `vllm`, is also an ordinary word in a message).
 */
function addressesOf(baseUrl: string | undefined): string[] {
  if (!baseUrl) return [];
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    return [];
  }
  const host = url.host;
  return host.includes(':') || host.includes('.') ? [url.origin, host] : [url.origin];
}

/**
 * `text` with each of `secrets` blanked out: the keys of a route, or the OAuth or service-account
 * access token a call was made with (subscription accounts, Vertex), which are no route key.
 */
export function withoutSecrets(text: string, secrets: readonly string[]): string {
  for (const secret of secrets) if (secret.length >= 8 && text.includes(secret)) text = text.replaceAll(secret, '[redacted]');
  return text;
}

/**
 * `data:<type>;base64,<data>` → its parts; any other URL → undefined. A `data:` URL that is not
 * base64 is refused (a 400 at `param`): providers take inline media as base64 only, and would
 * otherwise get it as a URL to fetch.
 */
export function base64DataUrl(url: string, param: string): { mediaType: string; data: string } | undefined {
  // RFC 2397: the scheme and `base64` in any case; no media type means text/plain.
  const m = /^data:([^;,]*)(?:;[^,]*)?;base64,(.*)$/is.exec(url);
  if (m) {
    const type = m[1].trim().toLowerCase() || 'text/plain';
    // White space is no base64 (a space after the comma, MIME's line breaks): providers refuse it.
    const data = /\s/.test(m[2]) ? m[2].replace(/\s+/g, '') : m[2];
    // image/jpg is common and unregistered; Anthropic takes image/jpeg only.
    return { mediaType: type === 'image/jpg' ? 'image/jpeg' : type, data };
  }
  if (/^data:/i.test(url)) throw unsupported(`${param}: media given as a data: URL must be base64 (data:<type>;base64,<data>)`, param);
  return undefined;
}

/**
 * A request this route's protocol cannot express (several prompts for a chat backend, n > 1 for
 * Anthropic, a remote image for Gemini): a 400 naming the parameter, never sent. The model's next
 * route may express it; the client gets the 400 when none does.
 */
/**
 * A translating adapter's check of an effort it maps to its own setting: one it does not know
 * is a 400 naming it, where it used to mean no thinking at all (`max` got the least).
 */
export function checkEffort(effort: unknown, param: string): void {
  if (typeof effort === 'string' && !EFFORTS.includes(effort))
    throw unsupported(`${param} must be one of ${EFFORTS.join(', ')} (got "${effort.slice(0, 40)}")`, param);
}

export function unsupported(message: string, param: string | null): UpstreamError {
  return new UpstreamError({
    failure: 'http',
    upstreamStatus: 400,
    type: 'invalid_request_error',
    code: 'unsupported_parameter',
    param,
    message,
    retryable: false,
    unsupportedByRoute: true,
  });
}

/**
 * OpenAI's deprecated function calling (`functions`, `function_call`, `role: "function"`
 * messages, an assistant's `function_call`), for backends the gateway translates to: refused
 * with a 400 naming the field rather than sent half-translated (a call without an id, a history
 * missing its calls), since the answer would come back as `tool_calls` a legacy client does not
 * read either.
 */
function refuseLegacyFunctions(req: ChatRequest, provider: string): void {
  const r = req as ChatRequest & { functions?: unknown; function_call?: unknown };
  let param: string | undefined;
  if (r.functions !== undefined) param = 'functions';
  else if (r.function_call !== undefined) param = 'function_call';
  else {
    const i = req.messages.findIndex((m) => m.role === 'function' || (m as { function_call?: unknown }).function_call != null);
    if (i >= 0) param = `messages[${i}]`;
  }
  if (param !== undefined)
    throw unsupported(
      `${provider} is reached through tools: send tools, tool_choice, the assistant's tool_calls and role "tool" messages instead of OpenAI's deprecated functions and function_call`,
      param,
    );
}

/**
 * OpenAI's custom tools (free-form input) and `allowed_tools`, which a backend the gateway
 * translates to (Claude, Gemini, Codex) has no form for: the route refuses them, naming the
 * field, rather than send the request without them.
 */
function refuseOpenAiOnlyTools(req: ChatRequest, provider: string): void {
  const r = req as { tools?: Array<{ type?: unknown }>; tool_choice?: unknown };
  const i = Array.isArray(r.tools) ? r.tools.findIndex((t) => t?.type === 'custom') : -1;
  let param: string | undefined = i >= 0 ? `tools[${i}]` : undefined;
  const tc = r.tool_choice as { type?: unknown } | undefined;
  if (!param && tc && typeof tc === 'object' && (tc.type === 'custom' || tc.type === 'allowed_tools')) param = 'tool_choice';
  if (!param) {
    const m = req.messages.findIndex((msg) => (msg.tool_calls ?? []).some((t) => (t as { type?: unknown }).type === 'custom'));
    if (m >= 0) param = `messages[${m}].tool_calls`;
  }
  if (param !== undefined)
    throw unsupported(`${param}: ${provider} takes function tools only (not OpenAI's custom tools or allowed_tools)`, param);
}

/**
 * What of OpenAI's tool calling a backend the gateway translates to (Claude, Gemini, Codex)
 * cannot take: the deprecated functions, custom tools and allowed_tools. Refused by the route,
 * naming the field.
 */
export function refuseUntranslatableTools(req: ChatRequest, provider: string): void {
  refuseLegacyFunctions(req, provider);
  refuseOpenAiOnlyTools(req, provider);
}

/**
 * Timeouts of a health probe's call: out of the way, since the caller's signal carries the
 * probe's deadline (`health_check_timeout_ms`), which may be longer than any fixed one here.
 * The connect timeout only bounds how long a connection that never completes holds its place
 * in the pool after the probe gave up on it.
 */
const PROBE_TIMEOUTS = { connectMs: 60_000, firstByteMs: 600_000, firstTokenMs: 600_000, idleMs: 600_000, totalMs: 600_000 };

/**
 * A health probe: GET `url` until `signal` ends it; healthy below HTTP 400, and at a 429 (it
 * answers, busy: the routes' own calls meet that, and Retry-After). With `mayLackPath` (a path
 * the API need not have: a model listing, /models, which many hosted APIs serving chat, and
 * third parties' Anthropic-compatible endpoints, lack), also at a 404 or 405. Down at a 5xx, a 401 or 403 (the route's calls would be
 * refused too), a 404 for a path the server must have (vLLM's /health: the base URL is wrong),
 * and when nothing answers.
 */
export async function probeGet(
  http: UpstreamClient,
  url: string,
  headers: Record<string, string>,
  route: RouteDef,
  signal: AbortSignal,
  mayLackPath = false,
): Promise<ProbeResult> {
  const started = performance.now();
  const res = await http.request({
    url,
    method: 'GET',
    headers,
    signal,
    timeouts: PROBE_TIMEOUTS,
    route: route.id,
    provider: route.kind,
  });
  await readBodyText(res.body, 1024);
  const s = res.statusCode;
  const answering = s === 429 || (mayLackPath && (s === 404 || s === 405));
  return {
    ok: s < 400 || answering,
    latencyMs: performance.now() - started,
    detail: answering ? `HTTP ${s} (the server answers: taken as up)` : `HTTP ${s}`,
  };
}
