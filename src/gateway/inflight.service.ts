import { Injectable, Logger, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppConfig } from '../config/app-config';

export interface InflightTicket {
  leave(): void;
  /** Set when shutdown cut this request short. */
  readonly shutdown: boolean;
}

/** How often the drain closes the connections whose answers are done, and counts the rest. */
const DRAIN_POLL_MS = 25;

/**
 * Open requests, so that shutdown can let them finish. On SIGTERM the server stops accepting
 * connections, open requests get SHUTDOWN_GRACE_MS to complete, and whatever is still running
 * then is cancelled (streams end with an in-band error) so shutdown never hangs.
 *
 * The drain waits for connections, not only for requests in a handler: a request whose body
 * is still arriving has no handler yet, and has a row to write too (its 503). Connections whose
 * answers are done are closed as the drain goes (answers sent before it said keep-alive, and
 * their clients would send the next request here), and answers during the drain say
 * `Connection: close`. Nothing is done per request until shutdown.
 */
@Injectable()
export class InflightService implements BeforeApplicationShutdown, OnApplicationBootstrap {
  private readonly logger = new Logger('Shutdown');
  private readonly open = new Set<{ abort: AbortController; shutdown: boolean; res?: ServerResponse }>();
  /**
   * Connections that have not sent a byte (a load balancer's TCP check, a client's pre-opened
   * socket): Node's closeIdleConnections leaves them, and each held the drain for its whole grace.
   */
  private readonly silent = new Set<Socket>();
  private draining = false;
  /** Requests that reached their handler after the drain began (each is answered 503 or 499, and logged). */
  private refused = 0;

  constructor(
    private readonly config: AppConfig,
    private readonly host: HttpAdapterHost,
  ) {}

  get count(): number {
    return this.open.size;
  }

  onApplicationBootstrap(): void {
    const server = this.host.httpAdapter?.getHttpServer() as Server | undefined;
    server?.on('connection', (socket: Socket) => {
      this.silent.add(socket);
      const spoke = (): void => {
        this.silent.delete(socket);
      };
      socket.once('data', spoke);
      socket.once('close', spoke);
    });
  }

  /** Registers a request; undefined once shutdown has begun. */
  enter(abort: AbortController, res?: ServerResponse): InflightTicket | undefined {
    if (this.draining) {
      this.refused++;
      return undefined;
    }
    const entry = { abort, shutdown: false, res };
    this.open.add(entry);
    return {
      leave: () => {
        this.open.delete(entry);
      },
      get shutdown() {
        return entry.shutdown;
      },
    };
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.draining = true;
    const server = this.host.httpAdapter?.getHttpServer() as Server | undefined;
    server?.close(); // stop accepting
    server?.on('request', closeAfterAnswer);
    // Answers still being made close their connections too, where their headers have not gone
    // yet (a stream's connection is closed by the drain once it ends).
    for (const e of this.open) if (e.res) closeAfterAnswer(undefined, e.res);
    const grace = this.config.env.SHUTDOWN_GRACE_MS;
    const busy = await this.busy(server);
    if (busy > 0) {
      this.logger.log(`waiting up to ${grace} ms for ${busy} open requests and connections`);
      if (!(await this.until(grace, async () => (await this.busy(server)) === 0))) {
        this.logger.warn(`cancelling ${this.open.size} requests still open after the grace period`);
        for (const e of this.open) {
          e.shutdown = true;
          e.abort.abort();
        }
        await this.until(2000, () => Promise.resolve(this.open.size === 0));
      }
    }
    // What is left is requests whose bodies are still arriving (or headers, from a client too
    // slow to matter). Cut, each reaches its handler, is refused (the shutdown's 503) and logged:
    // the drain waits for those rows, which must come before the request log is drained.
    const cut = this.open.size === 0 ? await this.busy(server) : 0;
    const before = this.refused;
    server?.closeAllConnections?.();
    if (cut > 0) await this.until(1000, () => Promise.resolve(this.refused - before >= cut));
  }

  /**
   * Requests in a handler, else connections still open once those whose answers are done are
   * closed (a request between its headers and its handler: a body still arriving).
   */
  private async busy(server: Server | undefined): Promise<number> {
    server?.closeIdleConnections?.();
    for (const socket of this.silent) socket.destroy();
    if (this.open.size > 0 || !server) return this.open.size;
    return new Promise((resolve) => server.getConnections((err, n) => resolve(err ? 0 : n)));
  }

  private async until(ms: number, done: () => Promise<boolean>): Promise<boolean> {
    const end = performance.now() + ms;
    for (;;) {
      if (await done()) return true;
      if (performance.now() >= end) return false;
      await sleep(DRAIN_POLL_MS);
    }
  }
}

/** During the drain: an answer says its connection closes after it (and Node closes it then). */
function closeAfterAnswer(_req: IncomingMessage | undefined, res: ServerResponse): void {
  if (!res.headersSent) res.setHeader('connection', 'close');
}
