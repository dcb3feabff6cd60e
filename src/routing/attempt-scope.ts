import { UpstreamError } from '../common/errors';
import type { RouteDef } from '../config/registry.types';

/**
 * The lifetime of one attempt at one route: an AbortSignal that fires when the client leaves or
 * one of the attempt's deadlines passes, with the reason attached as a typed error.
 */
export class AttemptScope {
  private readonly controller = new AbortController();
  private readonly timers: Array<ReturnType<typeof setTimeout> | undefined> = [undefined, undefined, undefined];
  private readonly onParentAbort = () => this.abort(new UpstreamError({ failure: 'aborted', message: 'the client closed the request', route: this.route.id, provider: this.route.kind }));

  constructor(
    private readonly parent: AbortSignal,
    private readonly route: RouteDef,
    totalMs: number,
  ) {
    if (parent.aborted) this.onParentAbort();
    else parent.addEventListener('abort', this.onParentAbort, { once: true });
    this.timers[0] = setTimeout(() => this.timeout('total_timeout', `no complete answer from upstream ${route.id} within ${totalMs} ms`), totalMs);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Streams: fail the attempt if no content arrives within `ms`. */
  armFirstToken(ms: number): void {
    this.timers[1] = setTimeout(() => this.timeout('first_token_timeout', `upstream ${this.route.id} sent no first token within ${ms} ms`), ms);
  }

  disarmFirstToken(): void {
    clearTimeout(this.timers[1]);
  }

  /** Streams after the first token: fail if the upstream goes silent for `ms`. Call again after every chunk. */
  armIdle(ms: number): void {
    clearTimeout(this.timers[2]);
    this.timers[2] = setTimeout(() => this.timeout('idle_timeout', `upstream ${this.route.id} went silent for ${ms} ms mid-stream`), ms);
  }

  disarmIdle(): void {
    clearTimeout(this.timers[2]);
  }

  /** The typed reason the attempt was aborted, if it was. */
  reason(): UpstreamError | undefined {
    const r = this.controller.signal.reason;
    return this.controller.signal.aborted && r instanceof UpstreamError ? r : undefined;
  }

  dispose(): void {
    for (const t of this.timers) clearTimeout(t);
    this.parent.removeEventListener('abort', this.onParentAbort);
  }

  private timeout(code: string, message: string): void {
    this.abort(new UpstreamError({ failure: 'timeout', code, message, route: this.route.id, provider: this.route.kind }));
  }

  private abort(reason: UpstreamError): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }
}

/** Resolves like `promise`, or rejects with the signal's reason as soon as it aborts. */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: Error) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
