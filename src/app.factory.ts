import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { DynamicModule, ForwardReference, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NextFunction, Request, Response } from 'express';
import { AppModule } from './app.module';
import { jsonBody } from './common/json-body';
import { attachContext } from './common/request-context';
import { AppConfig } from './config/app-config';
import type { AppConfigOptions } from './config/app-config.module';
import { isFramedPath } from './gateway/framed-paths';
import { AppLogger } from './observability/app-logger';

export interface CreateAppOptions extends AppConfigOptions {
  /** Defaults to a pino logger at LOG_LEVEL writing JSON to stdout. */
  logger?: AppLogger;
  /** More modules (e.g. a provider adapter a team ships on its own; docs/adding-a-provider.md). */
  imports?: Array<Type | DynamicModule | ForwardReference>;
}

/**
 * Builds the gateway (not yet listening). `main.ts` and the end-to-end tests both start here, so
 * what is tested is what runs.
 */
export async function createApp(options: CreateAppOptions = {}): Promise<NestExpressApplication> {
  const level = options.overrides?.LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info';
  const logger = options.logger ?? new AppLogger(level);
  const root = AppModule.forRoot({ ...options, logger });
  if (options.imports?.length) root.imports = [...(root.imports ?? []), ...options.imports];
  const app = await NestFactory.create<NestExpressApplication>(root, {
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
    attachContext(req, { requestId, startedAt: performance.now() });
    next();
  });
  app.use(jsonBody(config.bodyLimitBytes, config.env.BODY_LIMIT, isFramedPath));
  app.enableShutdownHooks(['SIGTERM', 'SIGINT']);
  return app;
}
