/**
 * Typed errors. Each knows its HTTP status and its OpenAI error fields; one filter turns them
 * into responses. `UpstreamError` also carries what the route executor needs to decide on a retry.
 */

export type OpenAiErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'api_error'
  | 'upstream_error'
  | 'timeout_error'
  | 'server_error';

export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | number | null; metadata?: Record<string, unknown> };
}

export abstract class GatewayError extends Error {
  abstract readonly status: number;
  /** An `OpenAiErrorType`, or an upstream's own type passed through. */
  abstract readonly type: string;
  readonly param: string | null = null;
  readonly code: string | number | null = null;
  /** Extra response headers (e.g. Retry-After). */
  readonly headers?: Record<string, string>;
  /** OpenRouter's `error.metadata` (moderation reasons, the provider that failed), passed on as it came. */
  readonly metadata?: Record<string, unknown>;
  /**
   * Anthropic's `error.details` (`{error_code, ...}`), which its SDKs read to recover (a message
   * thread to replay) and to pick the error's class: given on the Anthropic surface.
   */
  readonly details?: Record<string, unknown>;

  toBody(): OpenAiErrorBody {
    const error: OpenAiErrorBody['error'] = { message: this.message, type: this.type, param: this.param, code: this.code };
    if (this.metadata) error.metadata = this.metadata;
    return { error };
  }
}

export class InvalidRequestError extends GatewayError {
  readonly status = 400;
  readonly type = 'invalid_request_error';
  constructor(
    message: string,
    override readonly param: string | null = null,
    override readonly code: string | null = 'invalid_request',
  ) {
    super(message);
  }
}

export class ModelNotFoundError extends GatewayError {
  readonly status = 404;
  readonly type = 'invalid_request_error';
  override readonly param = 'model';
  override readonly code = 'model_not_found';
  constructor(model: string) {
    // A name no model has may be any size a body allows: the answer quotes its start.
    const name = model.length > 200 ? `${model.slice(0, 200)}…` : model;
    super(`The model "${name}" does not exist or is not served by this gateway; GET /v1/models lists the models`);
  }
}

export class RouteNotFoundError extends GatewayError {
  readonly status = 404;
  readonly type = 'invalid_request_error';
  override readonly code = 'not_found';
}

/**
 * Asking again with the same credentials gets the same answer. Claude Code retries a 401 with
 * backoff for minutes unless told not to (as the SDKs honour `x-should-retry`).
 */
const NO_RETRY: Readonly<Record<string, string>> = { 'x-should-retry': 'false' };

/** No credentials, or credentials we do not know. */
export class AuthenticationError extends GatewayError {
  readonly status = 401;
  readonly type = 'authentication_error';
  override readonly headers = NO_RETRY;
  constructor(
    message: string,
    override readonly code: string | null = 'invalid_api_key',
  ) {
    super(message);
  }
}

/** Credentials we know, that may not do this. */
export class PermissionError extends GatewayError {
  readonly status = 403;
  readonly type = 'permission_error';
  override readonly headers = NO_RETRY;
  constructor(
    message: string,
    override readonly code: string | null = 'forbidden',
  ) {
    super(message);
  }
}

/** A request body the reader refused (not JSON, too large, compressed): its status, code and headers. */
export class RequestBodyError extends GatewayError {
  readonly type = 'invalid_request_error';
  constructor(
    readonly status: number,
    message: string,
    override readonly code: string,
    override readonly param: string | null = null,
    override readonly headers?: Record<string, string>,
  ) {
    super(message);
  }
}

export class ServiceUnavailableError extends GatewayError {
  readonly status = 503;
  readonly type = 'server_error';
  override readonly code = 'unavailable';
}

/** How an upstream attempt failed; decides the status we answer with and whether to try again. */
export type UpstreamFailure =
  | 'http' // the upstream answered with an error status
  | 'connect' // could not connect (refused, DNS, TLS, connect timeout)
  | 'reset' // the connection broke
  | 'timeout' // first byte, first token, idle or total deadline passed
  | 'protocol' // the upstream answered something we could not understand
  | 'aborted'; // our own client went away

export interface UpstreamErrorInit {
  failure: UpstreamFailure;
  message: string;
  /** The upstream's own HTTP status, for `http` failures. */
  upstreamStatus?: number;
  type?: string;
  code?: string | number | null;
  param?: string | null;
  retryable?: boolean;
  retryAfterMs?: number;
  provider?: string;
  route?: string;
  /** The status to answer with, where the default for the failure is wrong (e.g. 503 for an overloaded upstream). */
  status?: number;
  /** The upstream's error metadata, for the client (OpenRouter's). */
  metadata?: Record<string, unknown>;
  /** Anthropic's `error.details`, for the client (see GatewayError.details). */
  details?: Record<string, unknown>;
  /**
   * One credential of the route failed and the adapter has taken it out of use (a subscription
   * account cooling down): the same route may be tried again at once, with another.
   */
  retryAtOnce?: boolean;
  /**
   * The request made the gateway's own code fail (an adapter threw a RangeError), or made the
   * model fail in a way the request caused (a function call Gemini could not use), or one
   * credential of a pool the gateway manages failed (a subscription account): not the
   * endpoint's fault, so it never counts against its circuit breaker.
   */
  gatewayFault?: boolean;
  /**
   * The failure follows from what the request asked, so every route would fail it the same way
   * (an embeddings answer over UPSTREAM_BODY_LIMIT): neither retried nor tried elsewhere.
   */
  sameOnEveryRoute?: boolean;
  /**
   * The request is one this route's protocol cannot express (several prompts for a chat backend,
   * token ids for Gemini, a message thread off Claude): the gateway refused it without a call,
   * and another route of the model may take it. The client gets it only if none does.
   */
  unsupportedByRoute?: boolean;
}

export class UpstreamError extends GatewayError {
  readonly status: number;
  readonly type: string;
  override readonly param: string | null;
  override readonly code: string | number | null;
  readonly failure: UpstreamFailure;
  readonly upstreamStatus?: number;
  retryable: boolean;
  readonly retryAfterMs?: number;
  readonly provider?: string;
  readonly gatewayFault: boolean;
  override readonly metadata?: Record<string, unknown>;
  override readonly details?: Record<string, unknown>;
  readonly retryAtOnce: boolean;
  readonly sameOnEveryRoute: boolean;
  readonly unsupportedByRoute: boolean;
  route?: string;

  /** What it was made from, for `with`. */
  private readonly init: UpstreamErrorInit;

  constructor(init: UpstreamErrorInit) {
    super(init.message);
    this.init = init;
    this.metadata = init.metadata;
    this.details = init.details;
    this.retryAtOnce = init.retryAtOnce === true;
    this.failure = init.failure;
    this.gatewayFault = init.gatewayFault === true;
    this.sameOnEveryRoute = init.sameOnEveryRoute === true;
    this.unsupportedByRoute = init.unsupportedByRoute === true;
    this.upstreamStatus = init.upstreamStatus;
    this.provider = init.provider;
    this.route = init.route;
    this.retryAfterMs = init.retryAfterMs;
    this.param = init.param ?? null;
    const s = init.upstreamStatus;
    if (init.failure === 'http' && s !== undefined && s >= 400 && s < 500) {
      // Client errors pass through with their own status and message; a code only as OpenAI
      // gives one, a string (OpenRouter's numeric `code` is the status again).
      this.status = s;
      this.type = init.type ?? typeForStatus(s);
      this.code = typeof init.code === 'string' ? init.code : s === 429 ? 'rate_limit_exceeded' : null;
    } else if (init.failure === 'timeout') {
      this.status = 504;
      this.type = 'timeout_error';
      this.code = init.code ?? 'upstream_timeout';
    } else if (init.failure === 'aborted') {
      this.status = 499;
      this.type = 'client_closed_request';
      this.code = 'client_closed_request';
    } else {
      this.status = 502;
      this.type = 'upstream_error';
      this.code = init.code ?? (init.failure === 'http' ? `upstream_${s ?? 'error'}` : `upstream_${init.failure}`);
    }
    if (init.status !== undefined) {
      this.status = init.status;
      if (init.type !== undefined) this.type = init.type;
    }
    this.retryable =
      init.retryable ?? (init.failure === 'http' ? s === undefined || s >= 500 || s === 408 || s === 429 : init.failure !== 'aborted');
    // An upstream's 503 reaches the client as a 502: its word on when to come back goes with it.
    if ((this.status === 429 || this.status === 503 || (this.status === 502 && s === 503)) && this.retryAfterMs !== undefined) {
      (this as { headers?: Record<string, string> }).headers = retryAfterHeaders(this.retryAfterMs);
    }
    // The operator's credentials or account: asking again changes nothing (the Anthropic
    // surface answers these as a 502, which SDKs would otherwise retry).
    if (isOperatorRefusal(this.code)) (this as { headers?: Record<string, string> }).headers = { 'x-should-retry': 'false' };
  }

  /**
   * The upstream's own word that asking again is pointless (`x-should-retry: false`, as OpenAI's
   * and Anthropic's APIs send it): this route is not tried again for the request, and a client
   * that gets this error is told the same.
   */
  refuseRetry(): this {
    this.retryable = false;
    (this as { headers?: Record<string, string> }).headers = { ...this.headers, 'x-should-retry': 'false' };
    return this;
  }

  /**
   * The same failure with some of what it says changed (whether the route is worth another try,
   * the route it names): everything else as it was, the client's status, metadata, details and an
   * upstream's x-should-retry: false included. Copying field by field lost them more than once.
   */
  /**
   * A prompt over the model's window says so as OpenAI does (`context_length_exceeded`), whatever
   * the provider called it (Claude's `invalid_request_error`, Gemini's `INVALID_ARGUMENT`):
   * OpenAI clients look for that code to trim the conversation.
   */
  override toBody(): OpenAiErrorBody {
    const body = super.toBody();
    if (body.error.code !== 'context_length_exceeded' && isContextLengthError(this)) body.error.code = 'context_length_exceeded';
    return body;
  }

  with(changes: Partial<UpstreamErrorInit>): UpstreamError {
    const e = new UpstreamError({ ...this.init, route: this.route, ...changes });
    if (this.headers?.['x-should-retry'] === 'false')
      (e as { headers?: Record<string, string> }).headers = { ...e.headers, 'x-should-retry': 'false' };
    return e;
  }
}

/**
 * The codes of an upstream's refusal that is about the operator's standing with the provider (its
 * credentials for the route, its account), never the client's: providerHttpError gives them,
 * the errors say so, and the Anthropic surface answers them as its own 502.
 */
export const OPERATOR_REFUSAL = { unauthorized: 'upstream_unauthorized', paymentRequired: 'upstream_payment_required' } as const;

export function isOperatorRefusal(code: unknown): boolean {
  return code === OPERATOR_REFUSAL.unauthorized || code === OPERATOR_REFUSAL.paymentRequired;
}

/** Waits longer than this are not retried by the client on its own (see `retryAfterHeaders`). */
export const LONGEST_CLIENT_RETRY_MS = 60_000;

/**
 * `Retry-After` (whole seconds, at least 1) for a refusal that frees after `ms`, and for a wait
 * longer than a minute `x-should-retry: false`: the OpenAI and Anthropic SDKs wait out any
 * Retry-After before their automatic retries, without a cap and deaf to the caller's abort, so a
 * budget that frees at midnight would hang the call for hours. They obey x-should-retry.
 */
export function retryAfterHeaders(ms: number): Record<string, string> {
  const headers: Record<string, string> = { 'retry-after': String(Math.max(1, Math.ceil(ms / 1000))) };
  if (ms > LONGEST_CLIENT_RETRY_MS) headers['x-should-retry'] = 'false';
  return headers;
}

export function typeForStatus(status: number): OpenAiErrorType {
  switch (status) {
    case 401:
      return 'authentication_error';
    case 403:
      return 'permission_error';
    case 404:
      return 'not_found_error';
    case 429:
      return 'rate_limit_error';
    default:
      return status >= 500 ? 'api_error' : 'invalid_request_error';
  }
}

/** An upstream's way of saying the prompt does not fit its context window, by code or by message. */
const CONTEXT_CODES = new Set(['context_length_exceeded', 'string_above_max_length', 'model_context_window_exceeded']);
const CONTEXT_TEXT =
  /maximum context length|context[ _-]?(length|window)|prompt is too long|too many tokens|input (is )?too long|exceeds the maximum number of tokens|reduce the length of the messages|maximum input length/i;

/**
 * What a context-length error says of the window and the prompt, where it says both: vLLM's and
 * OpenAI's "maximum context length is 32768 tokens. However, you requested 37000 tokens (5000 in
 * the messages, 32000 in the completion)", vLLM's newer "... is 32768 tokens and your request has
 * 5000 input tokens", SGLang's "... of 32768 tokens. ... 5000 tokens from the input messages",
 * OpenRouter's "This endpoint's maximum context length is 200000 tokens. However, you requested
 * about 210000 tokens (178000 of text input, 32000 in the output)".
 */
export function contextWindowOf(err: UpstreamError): { window: number; prompt: number } | undefined {
  const window = /maximum context length (?:is|of) (\d+)/i.exec(err.message)?.[1];
  const prompt =
    /(\d+) (?:in the messages|input tokens|tokens from the input)/i.exec(err.message)?.[1] ??
    // OpenRouter's "(178000 of text input, 2000 of tool input, 32000 in the output)": its parts.
    [...err.message.matchAll(/(\d+) of [a-z]+ input/gi)].reduce<number | undefined>((sum, m) => (sum ?? 0) + Number(m[1]), undefined);
  if (window === undefined || prompt === undefined) return undefined;
  return { window: Number(window), prompt: Number(prompt) };
}

export function isContextLengthError(err: UpstreamError): boolean {
  const s = err.upstreamStatus;
  if (err.failure !== 'http' || s === undefined || s < 400 || s >= 500) return false;
  if (typeof err.code === 'string' && CONTEXT_CODES.has(err.code.toLowerCase())) return true;
  return (s === 400 || s === 413 || s === 422) && CONTEXT_TEXT.test(err.message);
}
