import { Injectable, type CallHandler, type ExecutionContext, type NestInterceptor } from '@nestjs/common';
import type { Request, Response } from 'express';
import { tap, type Observable } from 'rxjs';
import { contextOf } from '../common/request-context';
import { AppLogger } from '../observability/app-logger';

/**
 * A line in the log for every admin call that changed something (a key created, revoked or
 * regenerated, accounts imported, a reload), so that an operator can tell later who changed what
 * and when: the method, the path (ids, never secrets), the status and the request id. Bodies, in
 * and out, are never logged: they carry keys' secrets and logins' tokens. Reads are not logged.
 */
@Injectable()
export class AdminAuditInterceptor implements NestInterceptor {
  constructor(private readonly appLogger: AppLogger) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const req = context.switchToHttp().getRequest<Request>();
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return next.handle();
    return next.handle().pipe(
      tap(() => {
        const res = context.switchToHttp().getResponse<Response>();
        // Nest sets the status (@HttpCode) before the handler runs, so this is the one sent.
        const status = res.statusCode;
        this.appLogger.pino.info(
          { reqId: contextOf(req)?.requestId, context: 'AdminAudit', method: req.method, path: req.path, status },
          `admin: ${req.method} ${req.path} done`,
        );
      }),
    );
  }
}
