import type { Request } from 'express';
import type { GatewayError } from '../common/errors';
import { contextOf } from '../common/request-context';
import type { AppLogger } from './app-logger';
import type { MetricsService } from './metrics.service';

/**
 * A call a guard refused (an API key or admin token missing, not valid, revoked...): no
 * request-log row (anyone can send them, and each would be a database write), but an access line
 * and a counter, so that a client stuck on a stale key or someone trying keys shows. The line
 * names the error code, never what was sent. `level`: `warn` where a refusal is itself a signal
 * (a wrong admin token).
 */
export function recordRefusal(
  logger: AppLogger,
  metrics: MetricsService,
  req: Request,
  err: GatewayError,
  level: 'info' | 'warn' = 'info',
): void {
  const code = String(err.code ?? err.type);
  metrics.observeRefusal(err.status, code);
  const log = logger.access;
  if (!log.isLevelEnabled(level)) return;
  log[level](
    { reqId: contextOf(req)?.requestId, method: req.method, path: req.path, status: err.status, error: code, ip: req.socket.remoteAddress },
    'request refused',
  );
}
