import type { NextFunction, Request, Response } from 'express';
import { isAnthropicPath, sendAnthropicGatewayError } from './anthropic-error';
import { RequestBodyError } from './errors';
import { sendGatewayError } from './openai-error';
import { contextOf } from './request-context';

/**
 * Reads a JSON request body. express.json (body-parser, raw-body, iconv) cost ~4% of the
 * gateway's CPU under load for features this API does not use (form bodies, charsets other than
 * UTF-8); this reads the bytes, enforces the size limit before and while reading, and parses.
 * Any declared content type is read as JSON, because `curl -d` sends form encoding by default.
 * Refusals are in OpenAI's error shape, or Anthropic's on the Anthropic surface's paths. On the
 * model endpoints (`framed`) the refusal is left on the request for the handler's frame, which
 * answers it after the key check and logs it like any other refused request.
 */
export function jsonBody(limitBytes: number, limitText: string, framed: (path: string) => boolean = () => false, idleTimeoutMs = 0) {
  const tooLargeText = `The request body exceeds the limit of ${limitText} (BODY_LIMIT)`;
  const stalledText = `No byte of the request body arrived for ${idleTimeoutMs / 1000} s (BODY_IDLE_TIMEOUT_MS); send the body without pauses`;
  const tooDeepText = `The request body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep`;
  const tooLarge = () => new RequestBodyError(413, tooLargeText, 'request_too_large', null, { connection: 'close' });
  /** Answers now, or — on the model endpoints — leaves the refusal to the request frame (one log row). */
  const refuse = (req: Request, res: Response, next: NextFunction, err: RequestBodyError) => {
    if (framed(req.path)) {
      (req as Request & { [BODY_ERROR]?: RequestBodyError })[BODY_ERROR] = err;
      req.body = undefined;
      // A body still arriving (413, 415) is drained, not read: whatever answers first (the key
      // check, the frame) must close the connection, or a client could keep sending forever.
      if (err.headers?.connection === 'close') res.setHeader('connection', 'close');
      return next();
    }
    if (isAnthropicPath(req.path)) sendAnthropicGatewayError(res, err, contextOf(req)?.requestId ?? null);
    else sendGatewayError(res, err);
  };
  return (req: Request, res: Response, next: NextFunction): void => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'DELETE' || req.method === 'OPTIONS') return next();
    const declared = Number(req.headers['content-length']);
    if (declared > limitBytes) {
      req.resume(); // drain so the connection can be reused
      return refuse(req, res, next, tooLarge());
    }
    const encoding = req.headers['content-encoding'];
    if (encoding && encoding !== 'identity') {
      req.resume();
      return refuse(
        req,
        res,
        next,
        new RequestBodyError(
          415,
          `Content-Encoding "${encoding}" is not supported; send the body uncompressed`,
          'unsupported_encoding',
          null,
          { connection: 'close' },
        ),
      );
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    // A client that stops sending mid-body would otherwise hold its connection and everything
    // read so far until Node's five-minute request timeout, which answers without a request id.
    const stalled =
      idleTimeoutMs > 0
        ? setTimeout(() => {
            if (failed || req.destroyed) return; // gone: 'error' saw it
            failed = true;
            chunks.length = 0;
            refuse(req, res, next, new RequestBodyError(408, stalledText, 'request_timeout', null, { connection: 'close' }));
          }, idleTimeoutMs).unref()
        : undefined;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      stalled?.refresh();
      size += chunk.length;
      if (size > limitBytes) {
        clearTimeout(stalled);
        failed = true;
        chunks.length = 0;
        req.resume();
        refuse(req, res, next, tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      clearTimeout(stalled);
      if (failed) return;
      if (size === 0) {
        req.body = undefined;
        return next();
      }
      const text = chunks.length === 1 ? chunks[0].toString('utf8') : Buffer.concat(chunks, size).toString('utf8');
      try {
        req.body = JSON.parse(text);
      } catch (err) {
        return refuse(
          req,
          res,
          next,
          new RequestBodyError(400, `The request body is not valid JSON: ${(err as Error).message}`, 'invalid_json', 'body'),
        );
      }
      if (nestingExceeds(req.body, MAX_JSON_DEPTH))
        return refuse(req, res, next, new RequestBodyError(400, tooDeepText, 'invalid_json', 'body'));
      next();
    });
    req.on('error', () => {
      clearTimeout(stalled);
      failed = true; // the client went away mid-body; nothing to answer
    });
  };
}

const BODY_ERROR = Symbol('bodyError');

/** The body reader's refusal of this request, left for the request frame to answer and log. */
export function bodyErrorOf(req: Request): RequestBodyError | undefined {
  return (req as Request & { [BODY_ERROR]?: RequestBodyError })[BODY_ERROR];
}

/**
 * How deep a body may nest. JSON.parse takes thousands of levels, but serialising such a value
 * again (to send it upstream) overflows the stack; no API this gateway serves needs more than a
 * few levels (OpenAI allows 10 in a structured-output schema).
 */
export const MAX_JSON_DEPTH = 128;

/**
 * Whether a parsed JSON value nests arrays and objects deeper than `max` levels. It visits each
 * array and object once (strings are leaves, never scanned) and stops `max` levels down, so its
 * own recursion is bounded; a chat body of 7 KB takes about a microsecond.
 */
export function nestingExceeds(value: unknown, max: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (max <= 0) return true;
  if (Array.isArray(value)) {
    for (const item of value) if (nestingExceeds(item, max - 1)) return true;
    return false;
  }
  const obj = value as Record<string, unknown>;
  for (const key in obj) if (nestingExceeds(obj[key], max - 1)) return true;
  return false;
}
