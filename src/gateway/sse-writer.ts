import type { Response } from 'express';
import { SSE_DONE, SSE_KEEPALIVE } from '../common/sse';
import type { Execution } from '../routing/execution';
import { disconnectIfStalled } from './stalled-client';

export interface SseWriterOptions {
  /** The interval of `: keepalive` comments, from `startKeepalive` to `stopKeepalive`. */
  keepaliveMs?: number;
  /** How long a client may take none of the queued stream before it is disconnected. */
  stallMs?: number;
  /**
   * Fires when the client is gone. A pipelined request's response has no socket of its own until
   * the one before it finishes, and gets no `close` should the connection die first: without
   * this, a write waiting for its drain would wait for ever.
   */
  signal?: AbortSignal;
}

/**
 * Writes a text/event-stream response as events arrive: headers go out with the first event
 * (or the first keepalive), nothing is compressed or buffered, and a slow client applies
 * backpressure instead of growing memory.
 */
export class SseWriter {
  private started = false;
  private keepaliveTimer?: ReturnType<typeof setInterval>;
  /** An event (not a keepalive) went out: the stream is committed, and no keepalive follows. */
  private eventSent = false;
  /** The wait for the client to take what is queued, while there is one. */
  private draining?: Promise<void>;

  private readonly keepaliveMs?: number;
  private readonly stallMs: number;
  private readonly signal?: AbortSignal;

  constructor(
    private readonly res: Response,
    opts: SseWriterOptions = {},
  ) {
    this.keepaliveMs = opts.keepaliveMs;
    this.stallMs = opts.stallMs ?? 0;
    this.signal = opts.signal;
  }

  /**
   * The wait for a first token has begun (an upstream accepted the request): keep the connection
   * alive. Not before: the first keepalive sends the 200, after which a failure can only be told
   * in the stream. Again for each attempt after a failed one, though an earlier keepalive has sent
   * the headers: the next route's wait for a first token is as long.
   */
  startKeepalive(): void {
    if (!this.keepaliveMs || this.keepaliveTimer !== undefined || this.eventSent || this.closed) return;
    this.keepaliveTimer = setInterval(() => this.keepalive(), this.keepaliveMs);
  }

  /** The wait is over (the first event the client will see); also done by every way of ending. */
  stopKeepalive(): void {
    if (this.keepaliveTimer === undefined) return;
    clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = undefined;
  }

  /** The client is gone (or the response was ended): stop producing. */
  get closed(): boolean {
    return this.res.destroyed || this.res.writableEnded || this.signal?.aborted === true;
  }

  private start(): void {
    if (this.started) return;
    this.started = true;
    const res = this.res;
    res.statusCode = 200;
    res.setHeader('content-type', 'text/event-stream; charset=utf-8');
    res.setHeader('cache-control', 'no-cache');
    // No Connection header of its own: Node writes keep-alive, or close when the client asked
    // for it or the drain has begun (a keep-alive here overwrote both).
    res.setHeader('x-accel-buffering', 'no');
    // No flushHeaders(): the status line and headers leave with the first event, in the same
    // write (one syscall and one TCP segment instead of two on the time-to-first-token path).
    // No setNoDelay() either: Node's HTTP server disables Nagle on every connection already.
  }

  /** Writes raw SSE text; resolves at once unless the client is slow, then on drain (or close). */
  write(text: string): Promise<void> | undefined {
    if (this.closed) return undefined;
    if (!this.started) this.start();
    if (text !== SSE_KEEPALIVE) this.eventSent = true;
    if (this.res.write(text)) return undefined;
    // One wait (listeners and stall watch) for however many writes are queued behind it.
    this.draining ??= new Promise<void>((resolve) => {
      disconnectIfStalled(this.res, 'drain', this.stallMs);
      const done = () => {
        this.res.off('drain', done);
        this.res.off('close', done);
        this.signal?.removeEventListener('abort', done);
        this.draining = undefined;
        resolve();
      };
      this.res.on('drain', done);
      this.res.on('close', done);
      this.signal?.addEventListener('abort', done, { once: true });
    });
    return this.draining;
  }

  /** A keepalive is only for a connection that is otherwise quiet: none while the client has not taken the last one. */
  keepalive(): void {
    if (this.draining) return;
    void this.write(SSE_KEEPALIVE);
  }

  /** Ends a stream that completed: `data: [DONE]`. */
  done(): void {
    this.stopKeepalive();
    if (this.closed) return;
    this.res.end(SSE_DONE);
  }

  /**
   * Ends a stream that failed, without `[DONE]`, so no client mistakes it for a whole answer.
   * `event` names the SSE event (Anthropic's `error`); OpenAI's streams carry data lines only.
   */
  fail(payload: unknown, event?: string): void {
    this.stopKeepalive();
    if (this.closed) return;
    this.res.end(`${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(payload)}\n\n`);
  }

  /** Ends a stream that completed without a terminator of its own (Anthropic's ends with `message_stop`). */
  end(): void {
    this.stopKeepalive();
    if (this.closed) return;
    this.res.end();
  }
}

/**
 * A stream's keepalives follow its execution's attempts: from an upstream's acceptance until
 * content or that attempt's failure. A failure before any keepalive was sent, and a retry's
 * wait, leave the response's status free.
 */
export function keepaliveWhileAccepted(ex: Execution, sse: SseWriter): void {
  ex.onAccepted = () => sse.startKeepalive();
  ex.onAttemptFailed = () => sse.stopKeepalive();
}
