import { Injectable, Logger, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { AppConfig } from '../config/app-config';

export interface InflightTicket {
  leave(): void;
  /** Set when shutdown cut this request short. */
  readonly shutdown: boolean;
}

/**
 * Open requests, so that shutdown can let them finish. On SIGTERM the server stops accepting
 * connections, open requests get SHUTDOWN_GRACE_MS to complete, and whatever is still running
 * then is cancelled (streams end with an in-band error) so shutdown never hangs.
 *
 * A request counts from its arrival, not only from its handler: one whose body is still
 * arriving has a row to write too (a 503, or a 499 when the connection is cut), and shutdown
 * waits for it before the request log is drained. While draining, answers close their
 * connections, so that clients go to another instance rather than send more requests here.
 */
@Injectable()
export class InflightService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger('Shutdown');
  /** Requests in a handler, which shutdown cancels after the grace period. */
  private readonly open = new Set<{ abort: AbortController; shutdown: boolean }>();
  /** Responses not yet closed, from each request's arrival. */
  private readonly arrived = new Set<ServerResponse>();
  private readonly bySocket = new WeakMap<Socket, Set<ServerResponse>>();
  private draining = false;
  /** While shutdown waits: called as requests leave. */
  private changed?: () => void;
  private server?: Server;
  private closeIdleSoon = false;

  constructor(
    private readonly config: AppConfig,
    private readonly host: HttpAdapterHost,
  ) {}

  get count(): number {
    return this.open.size;
  }

  onApplicationBootstrap(): void {
    this.server = this.host.httpAdapter?.getHttpServer() as Server | undefined;
    this.server?.on('request', this.onRequest);
  }

  /** Registers a request; undefined once shutdown has begun. */
  enter(abort: AbortController): InflightTicket | undefined {
    if (this.draining) return undefined;
    const entry = { abort, shutdown: false };
    this.open.add(entry);
    return {
      leave: () => {
        this.open.delete(entry);
        this.changed?.();
      },
      get shutdown() {
        return entry.shutdown;
      },
    };
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.draining = true;
    const server = this.server;
    server?.close(); // stop accepting; idle keep-alive connections close now
    server?.closeIdleConnections?.();
    for (const res of this.arrived) if (!res.headersSent) res.setHeader('connection', 'close');
    const none = () => this.arrived.size === 0;
    if (!none()) {
      this.logger.log(`waiting up to ${this.config.env.SHUTDOWN_GRACE_MS} ms for ${this.arrived.size} open requests`);
      const finished = await this.waitFor(this.config.env.SHUTDOWN_GRACE_MS, none);
      if (!finished) {
        this.logger.warn(`cancelling ${this.arrived.size} requests still open after the grace period`);
        for (const e of this.open) {
          e.shutdown = true;
          e.abort.abort();
        }
        await this.waitFor(2000, () => this.open.size === 0);
      }
    }
    server?.closeAllConnections?.();
    // Requests cut there while their bodies were still arriving are answered and logged as they
    // go (a 499): their rows come before the request log is drained.
    await this.waitFor(1000, none);
  }

  /** Every request the server takes, from its arrival until its response is closed. */
  private readonly onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    this.arrived.add(res);
    if (this.draining && !res.headersSent) res.setHeader('connection', 'close');
    // A response whose connection died before its turn (pipelining) gets no close of its own:
    // the connection's close lets go of its responses (one listener a connection, however many
    // requests it carries).
    const responses = this.responsesOf(req.socket);
    responses.add(res);
    res.once('close', () => {
      responses.delete(res);
      this.leave(res);
    });
  };

  private responsesOf(socket: Socket): Set<ServerResponse> {
    let responses = this.bySocket.get(socket);
    if (!responses) {
      const mine = new Set<ServerResponse>();
      this.bySocket.set(socket, mine);
      socket.once('close', () => {
        for (const r of mine) this.leave(r);
        mine.clear();
      });
      responses = mine;
    }
    return responses;
  }

  private leave(res: ServerResponse): void {
    if (!this.arrived.delete(res)) return;
    if (this.draining) this.closeIdleConnections();
    this.changed?.();
  }

  /**
   * While draining, a connection whose answer is done is closed (the answers sent before the
   * drain began said keep-alive), once Node has let it go (on the next turn).
   */
  private closeIdleConnections(): void {
    if (this.closeIdleSoon) return;
    this.closeIdleSoon = true;
    setImmediate(() => {
      this.closeIdleSoon = false;
      this.server?.closeIdleConnections?.();
    });
  }

  /** Resolves true once `done()` holds (checked as requests leave), false after `ms`. */
  private waitFor(ms: number, done: () => boolean): Promise<boolean> {
    if (done()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.changed = undefined;
        resolve(false);
      }, ms);
      this.changed = () => {
        if (!done()) return;
        clearTimeout(timer);
        this.changed = undefined;
        resolve(true);
      };
    });
  }
}
