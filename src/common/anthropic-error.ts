import type { Request, Response } from 'express';
import { isContextLengthError, isOperatorRefusal, UpstreamError, type GatewayError } from './errors';
import { sendErrorJson, sendGatewayError } from './openai-error';
import { contextOf } from './request-context';

/**
 * Errors on the Anthropic surface: `{"type": "error", "error": {"type", "message"}, "request_id"}`,
 * the type following the status as Anthropic's API documents it (docs.claude.com/en/api/errors),
 * so that Anthropic's SDKs raise the right exception (and retry what they retry).
 */
export interface AnthropicErrorBody {
  type: 'error';
  /** `details` (`{error_code, ...}`) as a Claude backend gave it, or the gateway's own for a thread it cannot keep. */
  error: { type: string; message: string; details?: Record<string, unknown> };
  request_id: string | null;
}

/** Anthropic's error type for a status. */
export function anthropicErrorType(status: number, code?: string | number | null): string {
  switch (status) {
    case 400:
      return 'invalid_request_error';
    case 401:
      return 'authentication_error';
    case 402:
      return 'billing_error';
    case 403:
      return 'permission_error';
    case 404:
      return 'not_found_error';
    case 409:
      return 'conflict_error';
    case 413:
      return 'request_too_large';
    case 429:
      return 'rate_limit_error';
    case 504:
      return 'timeout_error';
    case 529:
      return 'overloaded_error';
    default:
      if (status === 503 && code === 'overloaded') return 'overloaded_error';
      return status >= 500 ? 'api_error' : 'invalid_request_error';
  }
}

/**
 * The status an error is answered with. An overloaded upstream (our 503 `overloaded`) is
 * Anthropic's 529, which Claude Code and the SDKs know to wait out. An upstream that refused the
 * gateway's own credentials or the operator's account (401 `upstream_unauthorized`, 402
 * `upstream_payment_required`) is a 502 `api_error` here: Anthropic's error has no code to tell
 * them from the client's own key or billing, and Claude Code answers a 401 by asking its user to
 * log in again. The client-closed 499 and every other status stay as they are.
 */
export function anthropicStatus(status: number, code?: string | number | null): number {
  if (status === 503 && code === 'overloaded') return 529;
  if (isOperatorRefusal(code)) return 502;
  return status;
}

export function anthropicErrorBody(
  status: number,
  message: string,
  requestId: string | null,
  code?: string | number | null,
): AnthropicErrorBody {
  return { type: 'error', error: { type: anthropicErrorType(status, code), message }, request_id: requestId };
}

export function anthropicBodyOf(err: GatewayError, requestId: string | null): AnthropicErrorBody {
  const body = anthropicErrorBody(anthropicStatus(err.status, err.code), anthropicMessage(err), requestId, err.code);
  if (err.details) body.error.details = err.details;
  return body;
}

/**
 * The message in Anthropic's words where clients look for them: a prompt over a backend's
 * context window is "prompt is too long", which Claude Code reads to compact the conversation.
 */
function anthropicMessage(err: GatewayError): string {
  if (err instanceof UpstreamError && isContextLengthError(err) && !/prompt is too long/i.test(err.message))
    return `prompt is too long: ${err.message}`;
  return err.message;
}

/** Writes an Anthropic-shaped error response, unless the response is already under way. */
export function sendAnthropicError(res: Response, status: number, body: AnthropicErrorBody, headers?: Record<string, string>): void {
  sendErrorJson(res, status, body, headers);
}

export function sendAnthropicGatewayError(res: Response, err: GatewayError, requestId: string | null): void {
  sendAnthropicError(res, anthropicStatus(err.status, err.code), anthropicBodyOf(err, requestId), err.headers);
}

/**
 * Answers `err` in the shape of the surface `req` came to (Anthropic's on its paths, OpenAI's
 * elsewhere), for refusals made before any handler runs.
 */
export function sendSurfaceError(req: Request, res: Response, err: GatewayError): void {
  if (isAnthropicPath(req.path)) sendAnthropicGatewayError(res, err, contextOf(req)?.requestId ?? null);
  else sendGatewayError(res, err);
}

/**
 * The Anthropic surface's paths: `/anthropic/...` and `/v1/messages[/...]` (what an Anthropic SDK
 * whose base URL is the gateway's root calls). Errors raised before a handler runs (the body
 * reader, the key guard, unknown paths) are answered in Anthropic's shape there too.
 */
export function isAnthropicPath(path: string): boolean {
  return path.startsWith('/anthropic/') || path === '/anthropic' || path === '/v1/messages' || path.startsWith('/v1/messages/');
}
