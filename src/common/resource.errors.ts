import { GatewayError } from './errors';

/** A thing asked for by id (an API key, a generation) that does not exist or is not the caller's. */
export class NotFoundError extends GatewayError {
  readonly status = 404;
  readonly type = 'not_found_error';
  constructor(
    message: string,
    override readonly code: string | null = 'not_found',
    override readonly param: string | null = null,
  ) {
    super(message);
  }
}

/** A change the thing's current state does not allow (e.g. reactivating a revoked key). */
export class ConflictError extends GatewayError {
  readonly status = 409;
  readonly type = 'invalid_request_error';
  constructor(
    message: string,
    override readonly code: string | null = 'conflict',
  ) {
    super(message);
  }
}
