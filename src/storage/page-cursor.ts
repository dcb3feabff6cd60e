import { InvalidRequestError } from '../common/errors';
import { toDate } from './api-log-rollup';

/**
 * A page cursor for lists ordered newest first by (created_at, id): the last row's pair, opaque
 * to clients. A row created between two pages cannot shift the next page, as an offset does.
 */
export function encodeCursor(at: Date | string, id: string): string {
  return Buffer.from(JSON.stringify([toDate(at).toISOString(), id])).toString('base64url');
}

export function decodeCursor(cursor: string): { at: Date; id: string } {
  try {
    const [at, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [unknown, unknown];
    const date = new Date(String(at));
    // Within what a column stores, and an id of ours (PostgreSQL refuses U+0000 and dates past
    // its range outright): a forged cursor is the client's mistake, not a 500.
    const t = date.getTime();
    if (typeof at === 'string' && typeof id === 'string' && t >= 0 && t < Date.UTC(10000, 0, 1) && /^[\w-]{1,64}$/.test(id))
      return { at: date, id };
  } catch {
    // falls through to the error below
  }
  throw new InvalidRequestError('cursor is not one this API returned (use next_cursor from the previous page)', 'cursor');
}
