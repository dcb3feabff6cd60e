import type { NextFunction, Request, Response } from 'express';
import { anthropicErrorBody, isAnthropicPath, sendAnthropicError } from './anthropic-error';
import { errorBody, sendError } from './openai-error';
import { contextOf } from './request-context';

/**
 * Reads a JSON request body. express.json (body-parser, raw-body, iconv) cost ~4% of the
 * gateway's CPU under load for features this API does not use (form bodies, charsets other than
 * UTF-8); this reads the bytes, enforces the size limit before and while reading, and parses.
 * Any declared content type is read as JSON, because `curl -d` sends form encoding by default.
 * Refusals are in OpenAI's error shape, or Anthropic's on the Anthropic surface's paths.
 */
export function jsonBody(limitBytes: number, limitText: string) {
  const tooDeepText = `The request body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep`;
  const tooLargeText = `The request body exceeds the limit of ${limitText} (BODY_LIMIT)`;
  const refuse = (req: Request, res: Response, status: number, message: string, code: string, param: string | null = null, headers?: Record<string, string>) => {
    if (isAnthropicPath(req.path)) sendAnthropicError(res, status, anthropicErrorBody(status, message, contextOf(req)?.requestId ?? null), headers);
    else sendError(res, status, errorBody(message, 'invalid_request_error', code, param), headers);
  };
  return (req: Request, res: Response, next: NextFunction): void => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'DELETE' || req.method === 'OPTIONS') return next();
    const declared = Number(req.headers['content-length']);
    if (declared > limitBytes) {
      req.resume(); // drain so the connection can be reused
      return refuse(req, res, 413, tooLargeText, 'request_too_large', null, { connection: 'close' });
    }
    const encoding = req.headers['content-encoding'];
    if (encoding && encoding !== 'identity') {
      req.resume();
      return refuse(req, res, 415, `Content-Encoding "${encoding}" is not supported; send the body uncompressed`, 'unsupported_encoding');
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limitBytes) {
        failed = true;
        refuse(req, res, 413, tooLargeText, 'request_too_large', null, { connection: 'close' });
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (failed) return;
      if (size === 0) {
        req.body = undefined;
        return next();
      }
      const text = chunks.length === 1 ? chunks[0].toString('utf8') : Buffer.concat(chunks, size).toString('utf8');
      try {
        req.body = JSON.parse(text);
      } catch (err) {
        return refuse(req, res, 400, `The request body is not valid JSON: ${(err as Error).message}`, 'invalid_json', 'body');
      }
      if (jsonDepthExceeds(text, MAX_JSON_DEPTH)) return refuse(req, res, 400, tooDeepText, 'invalid_json', 'body');
      next();
    });
    req.on('error', () => {
      failed = true; // the client went away mid-body; nothing to answer
    });
  };
}

/**
 * How deep a body may nest. JSON.parse takes thousands of levels, but serialising such a value
 * again (to send it upstream) overflows the stack; no API this gateway serves needs more than a
 * few levels (OpenAI allows 10 in a structured-output schema).
 */
export const MAX_JSON_DEPTH = 128;

/**
 * Whether valid JSON `text` nests deeper than `max`: a scan of the brackets outside strings.
 * A text shorter than 2 × (max + 1) cannot, so most bodies are not scanned at all.
 */
export function jsonDepthExceeds(text: string, max: number): boolean {
  if (text.length < 2 * (max + 1)) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return false;
}
