import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventEmitter } from 'node:events';
import type { Worker } from 'node:cluster';
import { Counter, Registry } from 'prom-client';
import { aggregateMetrics, retireWorkerMetrics, sweepStaleConfigCopies, WORKER_METRICS_RESPONSE } from './cluster';

describe('sweepStaleConfigCopies', () => {
  let root: string;
  beforeEach(() => (root = mkdtempSync(join(tmpdir(), 'hi-sweep-'))));
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it("removes the copies of primaries that are gone, and no one else's", () => {
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    const mk = (name: string) => {
      mkdirSync(join(root, name));
      writeFileSync(join(root, name, 'accepted.json'), '{"models":"api_key: sk-secret"}');
      return join(root, name);
    };
    const stale = mk(`hybridinference-config-${dead}-AbC123`);
    // A container's primary is pid 1 at every restart: a copy under its own pid is a predecessor's.
    const mine = mk(`hybridinference-config-${process.pid}-QrS456`);
    const live = mk(`hybridinference-config-${process.ppid}-XyZ789`);
    const old = mk('hybridinference-config-AbC123'); // the unnamed shape: whose, unknown
    const other = mk(`something-${dead}-else`);
    expect(sweepStaleConfigCopies(root).sort()).toEqual([stale, mine].sort());
    expect([stale, mine, live, old, other].map(existsSync)).toEqual([false, false, true, true, true]);
  });

  it('finds nothing in a directory that is not there', () => {
    expect(sweepStaleConfigCopies(join(root, 'missing'))).toEqual([]);
  });
});

describe('aggregateMetrics', () => {
  /** A worker as the primary sees it: it answers a metrics request with `count` after `delayMs`, or never. */
  class FakeWorker extends EventEmitter {
    constructor(
      readonly id: number,
      private readonly count: number | undefined,
    ) {
      super();
    }
    isConnected(): boolean {
      return true;
    }
    send(msg: { id: number }, cb: (err: Error | null) => void): boolean {
      cb(null);
      if (this.count !== undefined) {
        const registry = new Registry();
        new Counter({ name: 'req_total', help: 'requests', registers: [registry] }).inc(this.count);
        void registry
          .getMetricsAsJSON()
          .then((metrics) => this.emit('message', { type: WORKER_METRICS_RESPONSE, id: msg.id, metrics: [metrics] }));
      }
      return true;
    }
  }
  const total = (text: string) => Number(/^req_total (\d+)/m.exec(text)?.[1]);

  it('counts a worker that answered a scrape and exited before it ended once, in that scrape and after', async () => {
    const answering = new FakeWorker(101, 10);
    const silent = new FakeWorker(102, undefined);
    const workers = [answering, silent] as unknown as Worker[];
    const scrape = aggregateMetrics(workers, 2, 200);
    await new Promise((r) => setTimeout(r, 50));
    // It exits while the scrape waits for the silent one: its figures move to the retired sum.
    await retireWorkerMetrics(answering as unknown as Worker);
    expect(total((await scrape).text)).toBe(10);
    expect(total((await aggregateMetrics([silent as unknown as Worker], 1, 50)).text)).toBe(10);
  });
});
