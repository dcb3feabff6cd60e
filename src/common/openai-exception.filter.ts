import { Catch, HttpException, Logger, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import type { Response } from 'express';
import { GatewayError, typeForStatus } from './errors';
import { errorBody, sendError, sendGatewayError } from './openai-error';
import { currentRequestId } from './request-context';

/**
 * Every error leaves the gateway in OpenAI's shape. Our typed errors carry their own status;
 * Nest's HTTP exceptions (unknown path, wrong method) keep theirs; anything else is a bug,
 * logged with its stack and answered as a 500 that names the request id but shows no internals.
 */
@Catch()
export class OpenAiExceptionFilter implements ExceptionFilter {
  private readonly logger = new Logger('Errors');

  catch(exception: unknown, host: ArgumentsHost): void {
    const res = host.switchToHttp().getResponse<Response>();
    if (exception instanceof GatewayError) return sendGatewayError(res, exception);
    if (exception instanceof HttpException) {
      const status = exception.getStatus();
      const r = exception.getResponse();
      const message = typeof r === 'string' ? r : ((r as { message?: unknown }).message ?? exception.message);
      const code = status === 404 ? 'not_found' : status === 405 ? 'method_not_allowed' : null;
      return sendError(res, status, errorBody(Array.isArray(message) ? message.join('; ') : String(message), typeForStatus(status), code));
    }
    const id = currentRequestId();
    this.logger.error(exception instanceof Error ? exception : String(exception));
    sendError(res, 500, errorBody(`The gateway failed to handle this request (request id ${id ?? 'unknown'})`, 'server_error', 'internal_error'));
  }
}
