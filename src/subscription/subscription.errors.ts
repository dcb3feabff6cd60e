import { GatewayError } from '../common/errors';

export class AccountNotFoundError extends GatewayError {
  readonly status = 404;
  readonly type = 'not_found_error';
  override readonly code = 'account_not_found';
  constructor(id: string) {
    super(`No subscription account with id "${id}"; GET /admin/accounts lists them`);
  }
}

/** The request is fine but the account's state or an existing account stands in the way. */
export class AccountConflictError extends GatewayError {
  readonly status = 409;
  readonly type = 'invalid_request_error';
  constructor(
    message: string,
    override readonly code: string,
  ) {
    super(message);
  }
}

/** Accounts cannot be stored right now: no encryption key, or no database. */
export class SubscriptionUnavailableError extends GatewayError {
  readonly status = 503;
  readonly type = 'server_error';
  constructor(
    message: string,
    override readonly code: string,
  ) {
    super(message);
  }
}
