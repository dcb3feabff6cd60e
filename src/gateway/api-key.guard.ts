import { Injectable, Logger, type CanActivate, type ExecutionContext } from '@nestjs/common';
import type { Request } from 'express';
import { AuthenticationError, GatewayError, PermissionError } from '../common/errors';
import type { Principal } from '../common/principal';
import { contextOf } from '../common/request-context';
import { AppConfig } from '../config/app-config';
import { AppLogger } from '../observability/app-logger';
import { MetricsService } from '../observability/metrics.service';
import { recordRefusal } from '../observability/refusals';
import { ApiKeysService, type KeyState } from '../storage/api-keys.service';

/**
 * The keys a client sent: `Authorization: Bearer <key>`, then `x-api-key` (Anthropic's header).
 * Both count: a client may carry a token meant for someone else in one and our key in the other
 * (an Anthropic SDK with both `authToken` and `apiKey` set sends both).
 */
export function presentedKeys(req: Request): string[] {
  const keys: string[] = [];
  const auth = req.headers.authorization;
  if (typeof auth === 'string' && auth.slice(0, 7).toLowerCase() === 'bearer ') {
    const token = auth.slice(7).trim();
    if (token) keys.push(token);
  }
  const header = req.headers['x-api-key'];
  const value = (Array.isArray(header) ? header[0] : header)?.trim();
  if (value && value !== keys[0]) keys.push(value);
  return keys;
}

/**
 * Who is calling, for every route that calls an upstream: puts the caller's key (or null,
 * anonymous) in the request context, where the limits and the request log read it.
 *
 * With USER_AUTH_ENABLED=true a valid, active, unexpired key is required: none is a 401
 * (`missing_api_key`), an unknown one a 401 (`invalid_api_key`). With it false (the default),
 * calls without a key, or with a token that is no key of ours (`unused`, an upstream's key), are
 * admitted anonymously; a key of ours is still attributed and held to its limits. Either way a
 * key of ours that is revoked or expired is a 401, a suspended one a 403 — the client said who it
 * is, and that key may not call.
 */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  private readonly logger = new Logger('ApiKeyGuard');
  private readonly required: boolean;

  constructor(
    private readonly keys: ApiKeysService,
    config: AppConfig,
    private readonly appLogger: AppLogger,
    private readonly metrics: MetricsService,
  ) {
    this.required = config.env.USER_AUTH_ENABLED;
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const req = context.switchToHttp().getRequest<Request>();
    const ctx = contextOf(req);
    let principal: Principal | null;
    // The body reader's look (refuses) decided this request already: one lookup, not two (a
    // database that fails would be waited on twice), and the same answer for the same request.
    const early = this.early.get(req);
    this.early.delete(req);
    try {
      principal = await (early ?? this.identify(presentedKeys(req)));
    } catch (err) {
      if (err instanceof GatewayError) recordRefusal(this.appLogger, this.metrics, req, err);
      throw err;
    }
    if (ctx) ctx.principal = principal;
    return true;
  }

  /**
   * Whether canActivate will refuse this request: asked by the body reader before it reads a
   * model endpoint's body, which a refused caller then does not get parsed. Without a wait for a
   * call that carries no key. A check that fails (the database away) says no: the guard decides.
   */
  refuses(req: Request): boolean | Promise<boolean> {
    const tokens = presentedKeys(req);
    if (!tokens.length) return this.required;
    // Asked again for the same request (at its 100-continue, then by the body reader): one lookup.
    const identified = this.early.get(req) ?? this.identify(tokens);
    this.early.set(req, identified);
    return identified.then(
      () => false,
      (err) => err instanceof AuthenticationError || err instanceof PermissionError,
    );
  }

  /** What refuses() found for a request, for canActivate to take up (held no longer than the request). */
  private readonly early = new WeakMap<Request, Promise<Principal | null>>();

  private async identify(tokens: string[]): Promise<Principal | null> {
    if (!tokens.length) {
      if (this.required)
        throw new AuthenticationError('An API key is required: send Authorization: Bearer <key> (or x-api-key: <key>)', 'missing_api_key');
      return null;
    }
    let state: KeyState | null = null;
    try {
      // The first that is a key of ours (almost always the only one sent).
      for (const token of tokens) if ((state = await this.keys.lookup(token))) break;
    } catch (err) {
      if (this.required) throw err;
      this.logger.warn(`API key not checked (${(err as Error).message}); admitting the call anonymously (USER_AUTH_ENABLED=false)`);
      return null;
    }
    if (!state) {
      if (this.required) throw new AuthenticationError('The API key is not valid', 'invalid_api_key');
      return null;
    }
    const refused = refusalOf(state);
    if (refused) throw refused;
    return state.principal;
  }
}

function refusalOf(state: KeyState): GatewayError | undefined {
  const who = `API key ${state.principal.prefix}…`;
  switch (state.status) {
    case 'revoked':
      return new AuthenticationError(`The ${who} has been revoked`, 'api_key_revoked');
    case 'suspended':
      return new PermissionError(`The ${who} is suspended; ask an administrator to reactivate it`, 'api_key_suspended');
    case 'active':
      break;
  }
  if (state.expiresAt !== null && state.expiresAt <= Date.now())
    return new AuthenticationError(`The ${who} expired on ${new Date(state.expiresAt).toISOString()}`, 'api_key_expired');
  return undefined;
}
