import { Client, type ClientConfig } from 'pg';

/** node-postgres' error for a query not answered within `query_timeout` (DB_QUERY_TIMEOUT_MS). */
const QUERY_TIMEOUT = 'Query read timeout';

/**
 * A node-postgres client that closes its connection once a query on it has timed out.
 *
 * node-postgres fails a query not answered within `query_timeout` but keeps the connection, and
 * keeps waiting on it for that query's answer before it sends the next. When the answer was lost
 * (a NAT or proxy that dropped its state), it never comes: every later query on the connection
 * times out in turn, yet TypeORM hands the connection back to the pool as healthy, and the pool
 * hands it out again first (it reuses the last one released). The request-log writer's
 * inserts kept landing on it: rows spooled for good once the database was reachable again, and
 * the server showed the session "idle in transaction" (its BEGIN was answered into the void).
 * Closed, the connection is dropped by the pool, which opens a fresh one.
 *
 * A query that timed out while still queued behind another is as good a sign: the one ahead of
 * it went unanswered for as long. A late answer on a closed connection is lost; its query was
 * already reported failed to its caller (the writer spools its rows; inserts skip rows already
 * present, so a batch that did land is not written twice).
 */
export class ResettingPgClient extends Client {
  constructor(config?: string | ClientConfig) {
    super(config);
    const query = this.query.bind(this) as (...args: unknown[]) => unknown;
    const onError = (err: unknown): void => {
      if ((err as Error | null)?.message === QUERY_TIMEOUT) this.connection.stream.destroy();
    };
    this.query = ((...args: unknown[]) => {
      const last = args[args.length - 1];
      if (typeof last === 'function') {
        args[args.length - 1] = (err: unknown, res: unknown) => {
          onError(err);
          (last as (err: unknown, res: unknown) => void)(err, res);
        };
        return query(...args);
      }
      const out = query(...args);
      if (typeof (out as Promise<unknown> | undefined)?.then === 'function') (out as Promise<unknown>).then(undefined, onError);
      return out;
    }) as Client['query'];
  }
}
