import { Injectable, Logger, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { ServerResponse } from 'node:http';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { AppConfig } from '../config/app-config';

/** Node's HTTP server publishes every request it starts here (any module's, any port's). */
const REQUEST_START = 'http.server.request.start';

/** V8's full collection, as `--expose-gc` exposes it. */
export type FullGc = () => void;

/**
 * Keeps the process's memory near what it uses.
 *
 * V8 picks how far the old generation may grow past the live heap before its next mark-compact
 * from how fast it collects against how fast the program allocates: from 1.1 to 4 times the live
 * heap on a machine with a lot of memory. It gives memory back to the system only after a
 * collection it ran while the process was quiet. A gateway promotes the state of every request
 * that lives across two young-generation collections (every stream does), so after a bench run
 * it stayed at 261 MB RSS while idle, with about 40 MB of heap in use. Under 100 paced streams V8
 * chose ~1.5 times instead: a mark-compact every ~2.7 s, and each one's marking steps and pause
 * stalled the event loop for 10-25 ms at a time, which set the 99th percentile of time to first
 * token. A fixed factor of 3 (200%) makes that one every ~12 s.
 *
 * - `HEAP_GROWTH_PERCENT`: the old generation may grow this far past the live heap before V8
 *   collects it (V8's `--heap-growing-percent`; 0 leaves V8's own choice).
 * - `IDLE_GC_AFTER_MS`: once no request has been open for this long after a busy spell (a
 *   trickle of health probes does not count), one full collection hands the young generation's
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
    this.idle = new IdleCollector(after, gc, (ms, before, usedAfter) =>
      this.logger.debug(`idle for ${after} ms: full collection in ${ms.toFixed(1)} ms, heap in use ${mb(before)} -> ${mb(usedAfter)} MB`),
    );
    this.idle.start();
  }

  onModuleDestroy(): void {
    this.idle?.stop();
    this.idle = undefined;
  }
}

/**
 * Runs `gc` once each time the process goes quiet: when, after a busy spell, no request has been
 * open and no more than a trickle (one a second: health probes, a scrape) has started for
 * `afterMs`. So an open stream is never paused for it. Checked a few times per `afterMs` (at most
 * every second) by a timer that does not keep the process alive.
 */
export class IdleCollector {
  private timer?: ReturnType<typeof setInterval>;
  private started = 0;
  private seen = 0;
  private lastCheck: number;
  private lastActivity = 0;
  private busy = false;
  /** Requests whose response has not closed yet (closed: finished, or the client went away). */
  private open = 0;
  private readonly onClose = () => {
    this.open--;
  };
  private readonly onRequest = (message: unknown) => {
    this.started++;
    const res = (message as { response?: ServerResponse }).response;
    if (!res) return;
    this.open++;
    res.once('close', this.onClose);
  };

  constructor(
    private readonly afterMs: number,
    private readonly gc: FullGc,
    /** Called after each collection: its duration, and the heap in use before and after (bytes). */
    private readonly collected?: (ms: number, heapBefore: number, heapAfter: number) => void,
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
    const busyNow = requests > Math.max(1, elapsed / 1000);
    if (busyNow) this.busy = true;
    if (!this.busy) return false;
    // A busy moment, or a request still open (a stream): the quiet period starts again.
    if (busyNow || this.open > 0) this.lastActivity = now;
    if (now - this.lastActivity < this.afterMs) return false;
    this.busy = false;
    const before = getHeapStatistics().used_heap_size;
    const t0 = performance.now();
    this.gc();
    this.collected?.(performance.now() - t0, before, getHeapStatistics().used_heap_size);
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
