import { HttpException, Injectable, Logger, type CallHandler, type ExecutionContext, type NestInterceptor } from '@nestjs/common';
import { catchError, type Observable } from 'rxjs';
import { GatewayError } from '../common/errors';
import { DatabaseService } from './database.service';

/** The database does not answer: a 503 the caller can retry, in its own words. */
export class DatabaseUnavailableError extends GatewayError {
  readonly status = 503;
  readonly type = 'server_error';
  override readonly code = 'database_unavailable';
}

/**
 * The refusal of a request that needs the database while it is known to be unreachable. Why it
 * is (an address, a driver's message) is in the log and /health, not in answers to API callers.
 */
export function databaseUnreachable(): DatabaseUnavailableError {
  return new DatabaseUnavailableError('The database is unreachable; try again shortly');
}

/**
 * SQLite's answer when another connection (a worker sharing the file, an operator's session)
 * holds the write lock past the wait a write is given: the database is there, busy.
 */
export function isDatabaseBusy(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

/** The refusal of a change SQLite was too busy to take. */
export function databaseBusy(): DatabaseUnavailableError {
  return new DatabaseUnavailableError('The database is busy (another process is writing to it); try again shortly');
}

/**
 * For endpoints that read or change the database (the admin API, /v1/generation): a query that
 * fails because the database went away is a 503 `database_unavailable`, not a 500 that blames
 * the gateway. A failure is the database's when it then does not answer a ping; any other keeps
 * its own answer (a bug stays a logged 500).
 */
@Injectable()
export class DatabaseOutageInterceptor implements NestInterceptor {
  private readonly logger = new Logger('Database');

  constructor(private readonly db: DatabaseService) {}

  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(catchError((err: unknown) => this.explain(err)));
  }

  private async explain(err: unknown): Promise<never> {
    if (err instanceof GatewayError || err instanceof HttpException) throw err;
    if (isDatabaseBusy(err)) throw databaseBusy();
    try {
      await this.db.ping(1500);
    } catch (ping) {
      // The details (addresses, driver messages) are the operator's: logged, not answered.
      this.logger.warn(
        `a query failed and the database does not answer: ${(err as Error)?.message ?? String(err)}; ${(ping as Error).message}`,
      );
      throw new DatabaseUnavailableError('The database does not answer right now; try again shortly');
    }
    throw err;
  }
}
