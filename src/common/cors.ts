import type { NextFunction, Request, Response } from 'express';
import { anthropicErrorBody, isAnthropicPath } from './anthropic-error';
import { errorBody, sendErrorJson } from './openai-error';
import { contextOf } from './request-context';

/** Who may call from a browser page: any origin, or these exact origins (`scheme://host[:port]`). */
export type CorsOrigins = '*' | ReadonlySet<string>;

/**
 * `CORS_ORIGINS` as the middleware takes it: undefined (no CORS), `*`, or the listed origins in
 * lower case (browsers send `Origin` as `scheme://host[:port]`; the env schema checks the form).
 */
export function parseCorsOrigins(value: string | undefined): CorsOrigins | undefined {
  const entries = (value ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  if (!entries.length) return undefined;
  return entries.includes('*') ? '*' : new Set(entries);
}

/** Headers a browser page may read from our answers (beyond the CORS-safelisted ones). */
const EXPOSED = [
  'x-request-id',
  'request-id',
  'retry-after',
  'x-ratelimit-limit-requests',
  'x-ratelimit-remaining-requests',
  'x-ratelimit-reset-requests',
  'x-ratelimit-limit-tokens',
  'x-ratelimit-remaining-tokens',
  'x-ratelimit-reset-tokens',
].join(', ');

const METHODS = 'GET, POST, PATCH, DELETE';
/** A header list as a browser sends it in Access-Control-Request-Headers: tokens and commas. */
const HEADER_LIST = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*$/;
/** How long a browser may cache a preflight's answer, in seconds (Chromium caps it at 7,200). */
const MAX_AGE = '7200';

/**
 * CORS for browser apps (an OpenAI or Anthropic SDK in a web page, a chat UI on another origin).
 * Credentials (cookies) are never allowed: callers authenticate with a bearer key, which the page
 * sends itself. An allowed origin's requests get `Access-Control-Allow-Origin` (and the headers
 * above exposed), on errors too, so that the page can read the message. A preflight (`OPTIONS`
 * with `Access-Control-Request-Method`) is answered here, 204 for an allowed origin, 403 in the
 * API's error shape for another, so that the refusal is visible in the browser's network panel.
 * With CORS off the middleware is not installed.
 */
export function cors(origins: CorsOrigins) {
  const any = origins === '*';
  return (req: Request, res: Response, next: NextFunction): void => {
    const origin = req.headers.origin;
    if (origin === undefined) {
      next();
      return;
    }
    const allowed = any || origins.has(origin.toLowerCase());
    if (!any) res.setHeader('vary', 'Origin');
    if (allowed) {
      res.setHeader('access-control-allow-origin', any ? '*' : origin);
      res.setHeader('access-control-expose-headers', EXPOSED);
    }
    if (req.method !== 'OPTIONS' || req.headers['access-control-request-method'] === undefined) {
      next();
      return;
    }
    if (!allowed) {
      refusePreflight(req, res, origin);
      return;
    }
    res.setHeader('access-control-allow-methods', METHODS);
    const asked = req.headers['access-control-request-headers'];
    if (typeof asked === 'string' && HEADER_LIST.test(asked)) res.setHeader('access-control-allow-headers', asked);
    if (req.headers['access-control-request-private-network'] === 'true') res.setHeader('access-control-allow-private-network', 'true');
    res.setHeader('access-control-max-age', MAX_AGE);
    res.setHeader('content-length', '0');
    res.statusCode = 204;
    res.end();
  };
}

function refusePreflight(req: Request, res: Response, origin: string): void {
  const message = `Origin ${origin.slice(0, 200)} may not call this gateway from a browser (CORS_ORIGINS)`;
  const requestId = contextOf(req)?.requestId ?? '';
  const body = isAnthropicPath(req.path)
    ? anthropicErrorBody(403, message, requestId)
    : errorBody(message, 'permission_error', 'origin_not_allowed');
  sendErrorJson(res, 403, body);
}
