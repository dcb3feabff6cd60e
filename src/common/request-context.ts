import { AsyncLocalStorage } from 'node:async_hooks';
import type { Principal } from './principal';

/** What every log line and every layer may want to know about the request being served. */
export interface RequestContext {
  readonly requestId: string;
  /** performance.now() when the request arrived. */
  readonly startedAt: number;
  keyId?: string;
  /** Set by ApiKeyGuard: the caller's key, or null for an anonymous call (undefined: the guard did not run). */
  principal?: Principal | null;
  route?: string;
}

export const requestContext = new AsyncLocalStorage<RequestContext>();

export function currentRequestId(): string | undefined {
  return requestContext.getStore()?.requestId;
}
