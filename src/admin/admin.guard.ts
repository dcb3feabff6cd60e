import { createHash, timingSafeEqual } from 'node:crypto';
import { Injectable, type CanActivate, type ExecutionContext } from '@nestjs/common';
import type { Request } from 'express';
import { AuthenticationError, PermissionError } from '../common/errors';
import { AppConfig } from '../config/app-config';
import { AppLogger } from '../observability/app-logger';
import { MetricsService } from '../observability/metrics.service';
import { recordRefusal } from '../observability/refusals';

/**
 * Guards /admin/*: `Authorization: Bearer <ADMIN_TOKEN>` (or `x-admin-token`). Missing
 * credentials are a 401, wrong ones a 403; without ADMIN_TOKEN configured the admin API is off
 * (403). Compared in constant time over digests, so neither content nor length leaks.
 */
@Injectable()
export class AdminGuard implements CanActivate {
  private readonly expected?: Buffer;

  constructor(
    config: AppConfig,
    private readonly appLogger: AppLogger,
    private readonly metrics: MetricsService,
  ) {
    const token = config.env.ADMIN_TOKEN;
    this.expected = token ? digest(token) : undefined;
  }

  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<Request>();
    if (!this.expected) throw new PermissionError('The admin API is disabled: set ADMIN_TOKEN to enable it', 'admin_disabled');
    const auth = req.headers.authorization;
    const presented = auth?.toLowerCase().startsWith('bearer ')
      ? auth.slice(7).trim()
      : (req.headers['x-admin-token'] as string | undefined);
    if (!presented) {
      const err = new AuthenticationError('Admin credentials required: send Authorization: Bearer <ADMIN_TOKEN>', 'missing_admin_token');
      recordRefusal(this.appLogger, this.metrics, req, err);
      throw err;
    }
    if (!timingSafeEqual(digest(presented), this.expected)) {
      const err = new PermissionError('The admin token is not valid', 'invalid_admin_token');
      // Someone holds a wrong admin token, or is guessing one.
      recordRefusal(this.appLogger, this.metrics, req, err, 'warn');
      throw err;
    }
    return true;
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
