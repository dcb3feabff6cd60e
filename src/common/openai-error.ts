import type { Response } from 'express';
import { GatewayError, type OpenAiErrorBody } from './errors';

export function errorBody(
  message: string,
  type: string,
  code: string | number | null = null,
  param: string | null = null,
): OpenAiErrorBody {
  return { error: { message, type, param, code } };
}

/** Writes an error in OpenAI's shape, unless the response is already under way. */
export function sendError(res: Response, status: number, body: OpenAiErrorBody, headers?: Record<string, string>): void {
  sendErrorJson(res, status, body, headers);
}

/** Writes a JSON error body of any API's shape, unless the response is already under way. */
export function sendErrorJson(res: Response, status: number, body: object, headers?: Record<string, string>): void {
  if (res.headersSent || res.destroyed) return;
  const json = JSON.stringify(body);
  res.statusCode = status;
  if (headers) for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(json));
  res.end(json);
}

export function sendGatewayError(res: Response, err: GatewayError): void {
  sendError(res, err.status === 499 ? 499 : err.status, err.toBody(), err.headers);
}
