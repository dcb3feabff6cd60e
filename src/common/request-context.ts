import type { IncomingMessage } from 'node:http';
import type { Principal } from './principal';

/** What the layers serving a request need to know about it besides its body. */
export interface RequestContext {
  readonly requestId: string;
  /** performance.now() when the request arrived. */
  readonly startedAt: number;
  /** Set by ApiKeyGuard: the caller's key, or null for an anonymous call (undefined: the guard did not run). */
  principal?: Principal | null;
}

const CONTEXT = Symbol('hybridinference.requestContext');
type WithContext = IncomingMessage & { [CONTEXT]?: RequestContext };

/**
 * The context travels on the request object, not in an AsyncLocalStorage: on Node 20 an active
 * AsyncLocalStorage installs promise hooks that run on every promise of every request: 3–4% of
 * self time in every CPU profile of the gateway under load (JSON requests and relayed streams).
 */
export function attachContext(req: IncomingMessage, ctx: RequestContext): RequestContext {
  (req as WithContext)[CONTEXT] = ctx;
  return ctx;
}

export function contextOf(req: IncomingMessage): RequestContext | undefined {
  return (req as WithContext)[CONTEXT];
}
