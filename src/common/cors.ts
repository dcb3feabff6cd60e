import type { NextFunction, Request, Response } from 'express';
import { sendSurfaceError } from './anthropic-error';
import { PermissionError } from './errors';

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
  'x-should-retry',
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
 * CORS for browser apps (an OpenAI or Anthropic SDK in a web page, a chat UI on another origin),
 * and a guard against the pages it does not allow.
 *
 * Credentials (cookies) are never allowed: callers authenticate with a bearer key, which the page
 * sends itself. An allowed origin's requests get `Access-Control-Allow-Origin` (and the headers
 * above exposed), on errors too, so that the page can read the message. A preflight (`OPTIONS`
 * with `Access-Control-Request-Method`) is answered here, 204 for an allowed origin, 403 in the
 * API's error shape for another, so that the refusal is visible in the browser's network panel;
 * Private Network Access is granted to origins listed by name only, never through `*`.
 *
 * The guard: a browser lets any page send a "simple" POST (`text/plain`) without asking, and the
 * body reader takes any content type as JSON, so with USER_AUTH_ENABLED=false any page a user
 * opens could make the gateway spend. A request that changes or costs something (not GET, HEAD or
 * OPTIONS) and carries an `Origin` neither allowed nor the gateway's own (the `Host` it was sent
 * to) is refused with 403, with CORS on or off. Clients that are no browser send no `Origin`.
 * The gateway's own origin counts only under an address (an IP, `localhost`): a page whose name an
 * attacker rebinds to the gateway's address (DNS rebinding) is the same origin as its Host too. A
 * page served under the gateway's name is allowed by listing that origin in CORS_ORIGINS.
 */
export function cors(origins: CorsOrigins | undefined) {
  const any = origins === '*';
  const listed = origins !== undefined && origins !== '*' ? origins : undefined;
  return (req: Request, res: Response, next: NextFunction): void => {
    // What a cache keeps for one origin must not be served to another.
    if (listed) res.setHeader('vary', 'Origin');
    const origin = req.headers.origin;
    if (origin === undefined) {
      next();
      return;
    }
    const allowed = any || (listed !== undefined && listed.has(origin.toLowerCase()));
    if (allowed) {
      res.setHeader('access-control-allow-origin', any ? '*' : origin);
      res.setHeader('access-control-expose-headers', EXPOSED);
    }
    const preflight = req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined;
    if (!preflight) {
      if (allowed || SAFE_METHODS.has(req.method) || sameOrigin(origin, req)) next();
      else refuse(req, res, origin);
      return;
    }
    // With CORS off a preflight is left to the routes (404), as before there was CORS.
    if (origins === undefined) {
      next();
      return;
    }
    if (!allowed) {
      refuse(req, res, origin);
      return;
    }
    res.setHeader('access-control-allow-methods', METHODS);
    const asked = req.headers['access-control-request-headers'];
    if (typeof asked === 'string' && HEADER_LIST.test(asked)) res.setHeader('access-control-allow-headers', asked);
    if (listed && req.headers['access-control-request-private-network'] === 'true')
      res.setHeader('access-control-allow-private-network', 'true');
    res.setHeader('access-control-max-age', MAX_AGE);
    res.setHeader('content-length', '0');
    res.statusCode = 204;
    res.end();
  };
}

const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Whether `origin` is the address the request was sent to (a page served behind the same host),
 * and that address is an IP or `localhost`, which no one else's DNS can name.
 */
function sameOrigin(origin: string, req: Request): boolean {
  const host = req.headers['x-forwarded-host'] ?? req.headers.host;
  if (typeof host !== 'string') return false;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  if (url.host.toLowerCase() !== host.split(',')[0].trim().toLowerCase()) return false;
  const name = url.hostname.toLowerCase();
  return name === 'localhost' || name.endsWith('.localhost') || name.startsWith('[') || /^\d{1,3}(\.\d{1,3}){3}$/.test(name);
}

function refuse(req: Request, res: Response, origin: string): void {
  const message = `Origin ${origin.slice(0, 200)} may not call this gateway from a browser (CORS_ORIGINS)`;
  sendSurfaceError(req, res, new PermissionError(message, 'origin_not_allowed'));
}
