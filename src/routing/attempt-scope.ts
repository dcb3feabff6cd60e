import { UpstreamError } from '../common/errors';
import type { RouteDef } from '../config/registry.types';

/**
 * The lifetime of one attempt at one route: an AbortSignal that fires when the client leaves or
 * one of the attempt's deadlines passes, with the reason attached as a typed error.
 */
export class AttemptScope {
  private readonly controller = new AbortController();
  private readonly timers: Array<ReturnType<typeof setTimeout> | undefined> = [undefined, undefined, undefined];
  private lastActivity = 0;
  private paused = false;
  private readonly onParentAbort = () =>
    this.abort(
      new UpstreamError({ failure: 'aborted', message: 'the client closed the request', route: this.route.id, provider: this.route.kind }),
    );

  constructor(
    private readonly parent: AbortSignal,
    private readonly route: RouteDef,
    totalMs: number,
  ) {
    if (parent.aborted) this.onParentAbort();
    else parent.addEventListener('abort', this.onParentAbort, { once: true });
    this.timers[0] = setTimeout(
      () => this.timeout('total_timeout', `no complete answer from upstream ${route.id} within ${Math.round(totalMs)} ms`),
      totalMs,
    );
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Streams: fail the attempt if no content arrives within `ms`. */
  armFirstToken(ms: number): void {
    this.timers[1] = setTimeout(
      () => this.timeout('first_token_timeout', `upstream ${this.route.id} sent no first token within ${ms} ms`),
      ms,
    );
  }

  disarmFirstToken(): void {
    clearTimeout(this.timers[1]);
  }

  /**
   * Streams after the first token: fail if the upstream stays silent for `ms`. One interval per
   * stream checks a timestamp, rather than a timer per chunk. Time the consumer spends writing
   * to a slow client (between `pause` and `touch`) is not the upstream's silence.
   */
  armIdle(ms: number): void {
    clearInterval(this.timers[2]);
    this.lastActivity = performance.now();
    this.timers[2] = setInterval(
      () => {
        if (!this.paused && performance.now() - this.lastActivity > ms) {
          this.timeout('idle_timeout', `upstream ${this.route.id} went silent for ${ms} ms mid-stream`);
        }
      },
      Math.max(10, Math.min(1000, ms / 4)),
    );
  }

  /** A chunk arrived: the upstream is alive; the consumer is about to handle it. */
  pause(): void {
    this.paused = true;
  }

  /** The consumer is done with the chunk; waiting for the upstream again. */
  touch(): void {
    this.paused = false;
    this.lastActivity = performance.now();
  }

  /** The typed reason the attempt was aborted, if it was. */
  reason(): UpstreamError | undefined {
    const r = this.controller.signal.reason;
    return this.controller.signal.aborted && r instanceof UpstreamError ? r : undefined;
  }

  dispose(): void {
    clearTimeout(this.timers[0]);
    clearTimeout(this.timers[1]);
    clearInterval(this.timers[2]);
    this.parent.removeEventListener('abort', this.onParentAbort);
  }

  private timeout(code: string, message: string): void {
    this.abort(new UpstreamError({ failure: 'timeout', code, message, route: this.route.id, provider: this.route.kind }));
  }

  private abort(reason: UpstreamError): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }
}
