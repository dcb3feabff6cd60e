import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { json, type NextFunction, type Request, type Response } from 'express';
import { AppModule } from './app.module';
import { errorBody, sendError } from './common/openai-error';
import { requestContext } from './common/request-context';
import { AppConfig } from './config/app-config';
import type { AppConfigOptions } from './config/app-config.module';
import { AppLogger } from './observability/app-logger';

export interface CreateAppOptions extends AppConfigOptions {
  /** Defaults to a pino logger at LOG_LEVEL writing JSON to stdout. */
  logger?: AppLogger;
}

/**
 * Builds the gateway (not yet listening). `main.ts` and the end-to-end tests both start here, so
 * what is tested is what runs.
 */
export async function createApp(options: CreateAppOptions = {}): Promise<NestExpressApplication> {
  const level = options.overrides?.LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info';
  const logger = options.logger ?? new AppLogger(level);
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot({ ...options, logger }), {
    bodyParser: false,
    logger,
    abortOnError: false,
  });
  const config = app.get(AppConfig);
  const express = app.getHttpAdapter().getInstance();
  express.disable('x-powered-by');
  express.set('etag', false);

  // Request id and context first, so that even a body that fails to parse is answered with one.
  app.use((req: Request, res: Response, next: NextFunction) => {
    const requestId = randomUUID();
    res.setHeader('x-request-id', requestId);
    requestContext.run({ requestId, startedAt: performance.now() }, next);
  });
  // Any content type is read as JSON: `curl -d` sends form encoding by default.
  app.use(json({ limit: config.bodyLimitBytes, type: () => true }));
  app.use((err: Error & { type?: string; status?: number; limit?: number }, _req: Request, res: Response, next: NextFunction) => {
    if (!err) return next();
    switch (err.type) {
      case 'entity.parse.failed':
        return sendError(res, 400, errorBody(`The request body is not valid JSON: ${err.message}`, 'invalid_request_error', 'invalid_json', 'body'));
      case 'entity.too.large':
        return sendError(res, 413, errorBody(`The request body exceeds the limit of ${config.env.BODY_LIMIT} (BODY_LIMIT)`, 'invalid_request_error', 'request_too_large'));
      case 'encoding.unsupported':
      case 'charset.unsupported':
        return sendError(res, 415, errorBody(err.message, 'invalid_request_error', 'unsupported_encoding'));
      case 'request.aborted':
      case 'request.size.invalid':
        return sendError(res, 400, errorBody(err.message, 'invalid_request_error', 'invalid_body'));
      default:
        return next(err);
    }
  });
  app.enableShutdownHooks(['SIGTERM', 'SIGINT']);
  return app;
}
