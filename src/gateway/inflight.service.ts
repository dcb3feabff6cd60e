import { Injectable, Logger, type BeforeApplicationShutdown } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { Server } from 'node:http';
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
 */
@Injectable()
export class InflightService implements BeforeApplicationShutdown {
  private readonly logger = new Logger('Shutdown');
  private readonly open = new Set<{ abort: AbortController; shutdown: boolean }>();
  private draining = false;
  private idle?: () => void;

  constructor(
    private readonly config: AppConfig,
    private readonly host: HttpAdapterHost,
  ) {}

  get count(): number {
    return this.open.size;
  }

  /** Registers a request; undefined once shutdown has begun. */
  enter(abort: AbortController): InflightTicket | undefined {
    if (this.draining) return undefined;
    const entry = { abort, shutdown: false };
    this.open.add(entry);
    return {
      leave: () => {
        this.open.delete(entry);
        if (this.open.size === 0) this.idle?.();
      },
      get shutdown() {
        return entry.shutdown;
      },
    };
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.draining = true;
    const server = this.host.httpAdapter?.getHttpServer() as Server | undefined;
    server?.close(); // stop accepting; idle keep-alive connections close now
    server?.closeIdleConnections?.();
    if (this.open.size > 0) {
      this.logger.log(`waiting up to ${this.config.env.SHUTDOWN_GRACE_MS} ms for ${this.open.size} open requests`);
      const finished = await this.waitIdle(this.config.env.SHUTDOWN_GRACE_MS);
      if (!finished) {
        this.logger.warn(`cancelling ${this.open.size} requests still open after the grace period`);
        for (const e of this.open) {
          e.shutdown = true;
          e.abort.abort();
        }
        await this.waitIdle(2000);
      }
    }
    server?.closeAllConnections?.();
  }

  private waitIdle(ms: number): Promise<boolean> {
    if (this.open.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.idle = undefined;
        resolve(false);
      }, ms);
      this.idle = () => {
        clearTimeout(timer);
        this.idle = undefined;
        resolve(true);
      };
    });
  }
}
