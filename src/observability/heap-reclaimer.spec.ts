import 'reflect-metadata';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { runInNewContext } from 'node:vm';
import { AppConfig } from '../config/app-config';
import { validateEnv } from '../config/env.schema';
import { exposeGc, HeapReclaimer, IdleCollector } from './heap-reclaimer';

describe('IdleCollector', () => {
  let server: Server;
  let url: string;
  let clock: number;
  let collections: number;
  let idle: IdleCollector;
  let release: () => void = () => undefined;
  let closed: Promise<unknown> = Promise.resolve();
  let arrived: () => void = () => undefined;
  /** Sends GET /slow, which stays open until release(); resolves once the server has it. */
  const openSlow = async (signal?: AbortSignal) => {
    const there = new Promise<void>((r) => (arrived = r));
    const answer = fetch(`${url}slow`, { signal }).then(
      (r) => r.text(),
      () => 'aborted',
    );
    await there;
    return { answer };
  };

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/slow') {
        release = () => res.end('late');
        closed = new Promise((r) => res.once('close', r));
        arrived();
      } else res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => new Promise((r) => server.close(r)));

  beforeEach(() => {
    clock = 0;
    collections = 0;
    idle = new IdleCollector(
      10_000,
      () => collections++,
      undefined,
      () => clock,
    );
    idle.start(false); // the test calls check() itself
  });
  afterEach(() => idle.stop());

  const request = async () => (await fetch(url)).text();
  /** A busy moment: more than one request a second. */
  const burst = async () => {
    for (let i = 0; i < 3; i++) await request();
  };

  it('never collects in a process that served nothing', () => {
    for (clock = 0; clock < 60_000; clock += 1000) expect(idle.check()).toBe(false);
    expect(collections).toBe(0);
  });

  it('collects once when requests stop for the quiet period, and again after the next busy spell', async () => {
    clock = 1000;
    await burst();
    expect(idle.check()).toBe(false); // sees the requests
    clock = 10_999;
    expect(idle.check()).toBe(false);
    clock = 11_000;
    expect(idle.check()).toBe(true);
    clock = 30_000;
    expect(idle.check()).toBe(false);
    expect(collections).toBe(1);

    await burst();
    clock = 31_000;
    expect(idle.check()).toBe(false);
    clock = 41_000;
    expect(idle.check()).toBe(true);
    expect(collections).toBe(2);
  });

  it('does not collect while requests keep arriving', async () => {
    for (clock = 1000; clock < 60_000; clock += 1000) {
      await burst();
      expect(idle.check()).toBe(false);
    }
    expect(collections).toBe(0);
  });

  it('takes a trickle of requests (health probes) for quiet', async () => {
    clock = 1000;
    await burst();
    expect(idle.check()).toBe(false);
    for (let t = 2000; t <= 11_000; t += 1000) {
      clock = t;
      await request(); // one a second
      expect(idle.check()).toBe(t === 11_000);
    }
    expect(collections).toBe(1);
  });

  it('waits for open requests (streams) to close, then for the quiet period', async () => {
    clock = 1000;
    const slow = (await openSlow()).answer;
    await burst();
    expect(idle.check()).toBe(false);
    clock = 30_000; // the request is still open
    expect(idle.check()).toBe(false);
    release();
    expect(await slow).toBe('late');
    clock = 39_999;
    expect(idle.check()).toBe(false);
    clock = 40_000;
    expect(idle.check()).toBe(true);
    expect(collections).toBe(1);
  });

  it('counts a request whose client went away as closed', async () => {
    clock = 1000;
    const abort = new AbortController();
    const slow = (await openSlow(abort.signal)).answer;
    await burst();
    expect(idle.check()).toBe(false);
    abort.abort();
    expect(await slow).toBe('aborted');
    await closed; // the server sees the connection close
    clock = 11_000;
    expect(idle.check()).toBe(true);
    release();
  });

  it('stops listening when stopped', async () => {
    idle.stop();
    clock = 1000;
    await burst();
    expect(idle.check()).toBe(false);
    clock = 20_000;
    expect(idle.check()).toBe(false);
    expect(collections).toBe(0);
  });
});

describe('exposeGc', () => {
  it("returns V8's full collection without leaving gc() in new contexts", () => {
    const gc = exposeGc();
    expect(typeof gc).toBe('function');
    const allocate = () => Array.from({ length: 2000 }, () => new Array<number>(1000).fill(1)).length; // ~16 MB, garbage on return
    expect(allocate()).toBe(2000);
    const before = process.memoryUsage().heapUsed;
    gc!();
    expect(process.memoryUsage().heapUsed).toBeLessThan(before - 8_000_000); // ~16 MB of arrays freed
    expect(runInNewContext('typeof gc')).toBe('undefined');
  });
});

describe('HeapReclaimer', () => {
  const reclaimer = (vars: Record<string, string>) => new HeapReclaimer(new AppConfig(validateEnv(vars)));

  it('watches requests by default and lets go on shutdown', () => {
    const r = reclaimer({});
    r.onModuleInit();
    expect(r.watching).toBe(true);
    r.onModuleDestroy();
    expect(r.watching).toBe(false);
  });

  it('does nothing with IDLE_GC_AFTER_MS=0', () => {
    const r = reclaimer({ IDLE_GC_AFTER_MS: '0', HEAP_GROWTH_PERCENT: '0' });
    r.onModuleInit();
    expect(r.watching).toBe(false);
    r.onModuleDestroy();
  });

  it('refuses settings that are not whole numbers in range', () => {
    expect(() => validateEnv({ HEAP_GROWTH_PERCENT: '-5' })).toThrow(/HEAP_GROWTH_PERCENT/);
    expect(() => validateEnv({ IDLE_GC_AFTER_MS: 'soon' })).toThrow(/IDLE_GC_AFTER_MS/);
  });
});
