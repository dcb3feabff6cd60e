import { Injectable, Logger, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { AppConfig } from '../config/app-config';

/** Node's HTTP server publishes every request it starts here (any module's, any port's). */
const REQUEST_START = 'http.server.request.start';

/** V8's full collection, as `--expose-gc` exposes it. */
export type FullGc = () => void;

/**
 * Keeps the process's memory near what it uses.
 *
 * V8 sizes the heap for speed: on a machine with a lot of memory it lets the old generation grow
 * to about four times the live heap before it collects it, and gives memory back to the system
 * only after a collection it ran while the process was quiet. A gateway promotes the state of
 * every request that lives across two young-generation collections (every stream does), so after
 * a busy spell it held 260 MB with 45 MB live, and kept holding it while idle.
 *
 * - `HEAP_GROWTH_PERCENT`: the old generation may grow this far past the live heap before V8
 *   collects it (V8's `--heap-growing-percent`; 0 leaves V8's own factor).
 * - `IDLE_GC_AFTER_MS`: once requests have stopped for this long after a busy spell (a trickle of
 *   health probes counts as stopped), one full collection hands the young generation's
 *   semi-spaces and the freed pages back (0: never).
 */
@Injectable()
export class HeapReclaimer implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('Memory');
  private idle?: IdleCollector;

  constructor(private readonly config: AppConfig) {}

  /** Whether it is watching for quiet spells. */
  get watching(): boolean {
    return this.idle !== undefined;
  }

  onModuleInit(): void {
    const growth = this.config.env.HEAP_GROWTH_PERCENT;
    if (growth > 0) setFlagsFromString(`--heap-growing-percent=${growth}`);
    const after = this.config.env.IDLE_GC_AFTER_MS;
    if (after <= 0) return;
    const gc = exposeGc();
    if (!gc) {
      this.logger.warn('no full garbage collection available: memory is not handed back when idle');
      return;
    }
    const mb = (n: number) => (n / 1048576).toFixed(1);
    this.idle = new IdleCollector(after, gc, (ms, before, rss) =>
      this.logger.debug(`idle for ${after} ms: full collection in ${ms.toFixed(1)} ms, RSS ${mb(before)} -> ${mb(rss)} MB`),
    );
    this.idle.start();
  }

  onModuleDestroy(): void {
    this.idle?.stop();
    this.idle = undefined;
  }
}

/**
 * Runs `gc` once each time the process goes quiet: when, after a busy spell, no more than a
 * trickle of HTTP requests (one a second: health probes, a scrape) has started for `afterMs`.
 * Checked a few times per `afterMs` (at most every second) by a timer that does not keep the
 * process alive.
 */
export class IdleCollector {
  private timer?: ReturnType<typeof setInterval>;
  private started = 0;
  private seen = 0;
  private lastCheck: number;
  private lastActivity = 0;
  private busy = false;
  private readonly onRequest = () => {
    this.started++;
  };

  constructor(
    private readonly afterMs: number,
    private readonly gc: FullGc,
    private readonly collected?: (ms: number, rssBefore: number, rssAfter: number) => void,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.lastCheck = now();
  }

  /** Watches requests; `timer: false` (tests) leaves the checking to the caller. */
  start(timer = true): void {
    subscribe(REQUEST_START, this.onRequest);
    if (!timer) return;
    this.timer = setInterval(() => this.check(), Math.max(10, Math.min(1000, this.afterMs / 4)));
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    unsubscribe(REQUEST_START, this.onRequest);
  }

  /** One look (the timer's); true when it collected. */
  check(): boolean {
    const now = this.now();
    const requests = this.started - this.seen;
    const elapsed = now - this.lastCheck;
    this.seen = this.started;
    this.lastCheck = now;
    if (requests > Math.max(1, elapsed / 1000)) {
      this.lastActivity = now;
      this.busy = true;
      return false;
    }
    if (!this.busy || now - this.lastActivity < this.afterMs) return false;
    this.busy = false;
    const before = process.memoryUsage.rss();
    const t0 = performance.now();
    this.gc();
    this.collected?.(performance.now() - t0, before, process.memoryUsage.rss());
    return true;
  }
}

/**
 * V8's `gc()`: the global one when Node was started with `--expose-gc`, else one taken from a
 * fresh context created while the flag is briefly on (the flag only decides whether new contexts
 * get the function; it is switched off again so no other context gets it).
 */
export function exposeGc(): FullGc | undefined {
  const global = (globalThis as { gc?: unknown }).gc;
  if (typeof global === 'function') return global as FullGc;
  setFlagsFromString('--expose-gc');
  try {
    const gc: unknown = runInNewContext('typeof gc === "function" ? gc : undefined');
    return typeof gc === 'function' ? (gc as FullGc) : undefined;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
}
