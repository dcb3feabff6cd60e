import { AsyncResource } from 'node:async_hooks';
import type { NextFunction, Request, Response } from 'express';
import { errorBody, sendError } from './openai-error';

/**
 * Reads a JSON request body. express.json (body-parser, raw-body, iconv) cost ~4% of the
 * gateway's CPU under load for features this API does not use (form bodies, charsets other than
 * UTF-8); this reads the bytes, enforces the size limit before and while reading, and parses.
 * Any declared content type is read as JSON, because `curl -d` sends form encoding by default.
 */
export function jsonBody(limitBytes: number, limitText: string) {
  const tooLarge = () => errorBody(`The request body exceeds the limit of ${limitText} (BODY_LIMIT)`, 'invalid_request_error', 'request_too_large');
  return (req: Request, res: Response, next: NextFunction): void => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'DELETE' || req.method === 'OPTIONS') return next();
    const declared = Number(req.headers['content-length']);
    if (declared > limitBytes) {
      req.resume(); // drain so the connection can be reused
      return sendError(res, 413, tooLarge(), { connection: 'close' });
    }
    const encoding = req.headers['content-encoding'];
    if (encoding && encoding !== 'identity') {
      req.resume();
      return sendError(res, 415, errorBody(`Content-Encoding "${encoding}" is not supported; send the body uncompressed`, 'invalid_request_error', 'unsupported_encoding'));
    }
    // Stream events run in the socket's async context; `next` must run in this request's, or
    // everything after the body is read loses the request context (request id, caller).
    const proceed = AsyncResource.bind(next);
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limitBytes) {
        failed = true;
        sendError(res, 413, tooLarge(), { connection: 'close' });
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (failed) return;
      if (size === 0) {
        req.body = undefined;
        return proceed();
      }
      const text = chunks.length === 1 ? chunks[0].toString('utf8') : Buffer.concat(chunks, size).toString('utf8');
      try {
        req.body = JSON.parse(text);
      } catch (err) {
        return sendError(res, 400, errorBody(`The request body is not valid JSON: ${(err as Error).message}`, 'invalid_request_error', 'invalid_json', 'body'));
      }
      proceed();
    });
    req.on('error', () => {
      failed = true; // the client went away mid-body; nothing to answer
    });
  };
}
