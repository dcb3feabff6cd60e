import { AsyncLocalStorage } from 'node:async_hooks';

/** What every log line and every layer may want to know about the request being served. */
export interface RequestContext {
  readonly requestId: string;
  /** performance.now() when the request arrived. */
  readonly startedAt: number;
  keyId?: string;
  route?: string;
}

export const requestContext = new AsyncLocalStorage<RequestContext>();

export function currentRequestId(): string | undefined {
  return requestContext.getStore()?.requestId;
}
