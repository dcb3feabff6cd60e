import { Catch, HttpException, Logger, Optional, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import { AppLogger } from '../observability/app-logger';
import type { Request, Response } from 'express';
import { anthropicErrorBody, isAnthropicPath, sendAnthropicError, sendAnthropicGatewayError } from './anthropic-error';
import { GatewayError, typeForStatus } from './errors';
import { errorBody, sendError, sendGatewayError } from './openai-error';
import { contextOf } from './request-context';
import { allowedMethods, type RoutedApp } from './routes';

/**
 * Every error leaves the gateway in OpenAI's shape (on the Anthropic surface's paths, in
 * Anthropic's: `isAnthropicPath`). Our typed errors carry their own status;
 * Nest's HTTP exceptions (unknown path, wrong method) keep theirs; anything else is a bug,
 * logged with its stack and answered as a 500 that names the request id but shows no internals.
 */
@Catch()
export class OpenAiExceptionFilter implements ExceptionFilter {
  private readonly logger = new Logger('Errors');

  constructor(@Optional() private readonly appLogger?: AppLogger) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const res = http.getResponse<Response>();
    const req = http.getRequest<Request>();
    const anthropic = isAnthropicPath(req.path ?? '');
    const id = contextOf(req)?.requestId;
    if (exception instanceof GatewayError)
      return anthropic ? sendAnthropicGatewayError(res, exception, id ?? null) : sendGatewayError(res, exception);
    if (exception instanceof HttpException) {
      let status = exception.getStatus();
      const r = exception.getResponse();
      const message = Array.isArray(r)
        ? r.join('; ')
        : typeof r === 'string'
          ? r
          : ((r as { message?: unknown }).message ?? exception.message);
      let text = Array.isArray(message) ? message.join('; ') : String(message);
      // No route for this method, but one for another at this path: the method is what is wrong
      // (Express says 404 for both). A 405 names the methods the path takes (RFC 9110 §15.5.6).
      const allow = status === 404 && text.startsWith('Cannot ') ? allowedMethods(req.app as unknown as RoutedApp, req.path) : [];
      if (allow.length > 0) {
        status = 405;
        text = `Method ${req.method} is not allowed on ${req.path}; it takes ${allow.join(', ')}`;
        res.setHeader('allow', allow.join(', '));
      }
      if (anthropic) return sendAnthropicError(res, status, anthropicErrorBody(status, text, id ?? null));
      // Express refuses a path whose percent-encoding does not decode (`/v1/models/%ZZ`) this way.
      const badPath = status === 400 && text.startsWith('Failed to decode param');
      const code = status === 404 ? 'not_found' : status === 405 ? 'method_not_allowed' : badPath ? 'invalid_path' : null;
      return sendError(res, status, errorBody(text, typeForStatus(status), code, badPath ? 'path' : null));
    }
    // With the request id the client's 500 names, so that the stack can be found by it.
    if (this.appLogger) this.appLogger.pino.error({ reqId: id, err: exception, context: 'Errors' }, `request ${id ?? 'unknown'} failed`);
    else this.logger.error(exception instanceof Error ? exception : String(exception));
    const message = `The gateway failed to handle this request (request id ${id ?? 'unknown'})`;
    if (anthropic) return sendAnthropicError(res, 500, anthropicErrorBody(500, message, id ?? null));
    sendError(res, 500, errorBody(message, 'server_error', 'internal_error'));
  }
}
