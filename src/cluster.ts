import cluster, { type Worker } from 'node:cluster';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AggregatorRegistry, type Registry } from 'prom-client';

/** IPC between a worker serving /metrics and the primary that aggregates every worker's. */
export const METRICS_REQUEST = 'hybridinference:metrics-request';
export const METRICS_RESPONSE = 'hybridinference:metrics-response';
/** IPC between the primary and each worker: that worker's own metrics (registry JSON). */
export const WORKER_METRICS_REQUEST = 'hybridinference:worker-metrics-request';
export const WORKER_METRICS_RESPONSE = 'hybridinference:worker-metrics-response';

/** From a worker that reloaded its routing config (admin API): the primary has the others reload too. */
export const RELOAD_OTHERS = 'hybridinference:routing-reload';
/**
 * From a worker whose admin API changed an API key (`id`): the primary passes it to the other
 * workers, which drop the key from their caches. Without it they went on admitting a revoked
 * key, or its old limits, for up to API_KEY_CACHE_TTL_MS.
 */
export const API_KEY_CHANGED = 'hybridinference:api-key-changed';
/**
 * From a worker that loaded its routing config (at start, or a reload it took): the files' text
 * (`models`, `routing`). The primary hands the last to every worker it starts in place of one that
 * died, in ACCEPTED_CONFIG_ENV: a file refused by a reload, still on disk, otherwise stopped each
 * replacement from starting (a crash loop, and with every worker gone nothing served).
 */
export const CONFIG_ACCEPTED = 'hybridinference:config-accepted';
/** The environment variable naming the primary's copy of the accepted config (JSON: {models, routing}). */
export const ACCEPTED_CONFIG_ENV = 'HYBRIDINFERENCE_ACCEPTED_CONFIG';

/** The primary's private temp dir for the accepted config: `<prefix><primary pid>-<random>`. */
const CONFIG_DIR_PREFIX = 'hybridinference-config-';
const CONFIG_DIR_NAME = new RegExp(`^${CONFIG_DIR_PREFIX}(\\d+)-`);

/**
 * Removes the accepted-config copies of primaries that are gone: one killed (kill -9, the OOM
 * killer) never ran its exit handler, and its copy may hold keys written into the config. Only
 * this user's directories of this shape, and only those whose primary's pid is not running (or
 * is this process's: called before this primary has a copy).
 */
export function sweepStaleConfigCopies(root = tmpdir()): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return removed;
  }
  for (const name of names) {
    const pid = CONFIG_DIR_NAME.exec(name)?.[1];
    // This process's pid: a copy of one before it with the same pid (a container's primary is
    // pid 1 at every restart), as the sweep runs before this primary makes its own.
    if (!pid || (Number(pid) !== process.pid && processAlive(Number(pid)))) continue;
    const path = join(root, name);
    try {
      if (statSync(path).uid !== process.getuid?.()) continue;
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // Another primary swept it first, or it is not ours to remove.
    }
  }
  return removed;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: alive, another user's.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * How long the primary waits for each worker's metrics. A worker answers in milliseconds unless
 * it is stopped, hung or gone; it is then left out of the scrape rather than failing it (the
 * worker that asked gives up after 5 s, and Prometheus' default scrape timeout is 10 s).
 */
const WORKER_METRICS_WAIT_MS = 2000;

/**
 * The primary of a multi-process gateway: it serves nothing itself. It starts the first worker
 * alone (so database migrations never race), then the rest; restarts a worker that dies while
 * serving; forwards SIGTERM/SIGINT and waits for the workers to drain; forwards SIGHUP (config
 * reload) to every worker (to one still starting once it listens: before, the signal would end
 * it); and answers workers'
 * requests for cluster-wide metrics. A worker that fails before it ever listened (a bad config)
 * stops the whole gateway instead of restarting forever.
 */
export function runPrimary(
  count: number,
  log: (msg: string, level?: 'info' | 'warn' | 'error') => void,
  /** How long the workers may take to drain after SIGTERM before they are killed (grace + log drain). */
  stopDeadlineMs = 60_000,
): void {
  /** Workers that listen: the ones asked for metrics (one still booting has nothing to tell yet). */
  const serving = new Set<Worker>();
  let stopping = false;
  let everListened = false;
  const restarts: number[] = [];
  /** Crashed workers' replacements, each waiting out its backoff (several may die at once). */
  const restartTimers = new Set<NodeJS.Timeout>();
  const workersLeft = () => Object.keys(cluster.workers ?? {}).length;
  /** Workers still starting that were asked to reload: they get the SIGHUP once they listen. */
  const reloadWhenUp = new Set<Worker>();
  /** The primary's copy of the config its workers last accepted (see CONFIG_ACCEPTED); for replacements. */
  let acceptedConfig: string | undefined;
  const keepAccepted = (msg: { models?: unknown; routing?: unknown }) => {
    if (typeof msg.models !== 'string') return;
    try {
      if (!acceptedConfig) {
        // Private: the text may hold keys written into it. Gone with the primary.
        for (const stale of sweepStaleConfigCopies()) log(`removed ${stale}, left by a primary that was killed`);
        const dir = mkdtempSync(join(tmpdir(), `${CONFIG_DIR_PREFIX}${process.pid}-`));
        chmodSync(dir, 0o700);
        acceptedConfig = join(dir, 'accepted.json');
        process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
      }
      writeFileSync(acceptedConfig, JSON.stringify({ models: msg.models, routing: typeof msg.routing === 'string' ? msg.routing : null }), {
        mode: 0o600,
      });
    } catch (err) {
      log(`cannot keep the accepted configuration for replacement workers: ${(err as Error).message}`, 'warn');
    }
  };
  /** SIGHUP to every worker but `except`; one still starting gets it when it listens. */
  const reload = (except?: Worker) => {
    // Workers that are draining have let go of their reload handler: a SIGHUP would end them.
    if (stopping) return;
    for (const w of Object.values(cluster.workers ?? {})) {
      if (!w || w === except) continue;
      if (serving.has(w)) w.process.kill('SIGHUP');
      else reloadWhenUp.add(w);
    }
  };

  /** `replacement`: in place of one that died, with the config the workers accepted last. */
  const fork = (replacement = false): Promise<Worker | undefined> =>
    new Promise((resolve) => {
      // Stopping: no new worker (it would serve on, and the primary would never exit).
      if (stopping) return resolve(undefined);
      const worker = cluster.fork(replacement && acceptedConfig ? { [ACCEPTED_CONFIG_ENV]: acceptedConfig } : undefined);
      worker.once('listening', () => {
        everListened = true;
        serving.add(worker);
        if (reloadWhenUp.delete(worker)) worker.process.kill('SIGHUP');
        resolve(worker);
      });
      worker.once('exit', () => {
        serving.delete(worker);
        reloadWhenUp.delete(worker);
        void retireWorkerMetrics(worker).catch(() => undefined);
      });
      worker.on('message', (msg: { type?: string; id?: number | string }) => {
        if (msg?.type === API_KEY_CHANGED) {
          // To workers still booting too: they may have looked the key up already.
          for (const w of Object.values(cluster.workers ?? {}))
            if (w && w !== worker && w.isConnected()) w.send({ type: API_KEY_CHANGED, id: msg.id }, () => undefined);
          return;
        }
        if (msg?.type === CONFIG_ACCEPTED) return keepAccepted(msg as { models?: unknown; routing?: unknown });
        if (msg?.type === RELOAD_OTHERS) {
          // A worker reloaded its routing config through the admin API: the others follow.
          reload(worker);
          return;
        }
        if (msg?.type !== METRICS_REQUEST) return;
        // The asking worker may have died while the others were asked (its scrape then failed
        // with it): a send without a callback would throw ERR_IPC_CHANNEL_CLOSED as an 'error'
        // event on the worker, which nothing handles, and take the primary and every worker down.
        const answer = (reply: Record<string, unknown>) => {
          if (worker.isConnected()) worker.send({ type: METRICS_RESPONSE, id: msg.id, ...reply }, () => undefined);
        };
        aggregateMetrics([...serving], count, WORKER_METRICS_WAIT_MS).then(
          ({ text, contentType }) => answer({ text, contentType }),
          (err: Error) => answer({ error: err.message }),
        );
      });
    });

  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (workersLeft() === 0) process.exit(0);
      return;
    }
    if (!everListened) {
      log(`worker ${worker.process.pid} failed to start (exit ${code ?? signal}); stopping`, 'error');
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM');
      process.exitCode = 1;
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(1);
      return;
    }
    const now = Date.now();
    restarts.push(now);
    while (restarts.length && restarts[0] < now - 60_000) restarts.shift();
    const delay = Math.min(30_000, 250 * 2 ** Math.max(0, restarts.length - 1));
    // An error: a worker the OOM killer ended logs nothing itself, so this line is its only trace.
    log(`worker ${worker.process.pid} exited (${code ?? signal}); restarting in ${delay} ms`, 'error');
    const timer = setTimeout(() => {
      restartTimers.delete(timer);
      void fork(true);
    }, delay);
    restartTimers.add(timer);
  });

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    for (const timer of restartTimers) clearTimeout(timer);
    restartTimers.clear();
    log(`${signal}: stopping ${workersLeft()} workers`);
    // Every worker had died and its replacement was still waiting: nothing to wait for.
    if (workersLeft() === 0) process.exit(0);
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal);
    // A worker that does not finish (stopped, hung) must not hold the shutdown for ever.
    setTimeout(() => {
      const left = Object.values(cluster.workers ?? {});
      log(`${left.length} workers did not stop within ${stopDeadlineMs} ms; killing them`, 'error');
      for (const w of left) w?.process.kill('SIGKILL');
      process.exit(1);
    }, stopDeadlineMs).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // SIGHUP reloads the routing config; each worker holds its own copy.
  process.on('SIGHUP', () => {
    log('SIGHUP: asking every worker to reload its routing configuration');
    reload();
  });

  void (async () => {
    await fork();
    await Promise.all(Array.from({ length: count - 1 }, fork));
    log(`${count} workers serving`);
  })();
}

let workerMetricsRequests = 0;

/**
 * What each worker answered last (by worker id), used for a worker that does not answer a scrape
 * (stopped, busy): without it, the sum of every counter would drop, which Prometheus takes for a
 * reset and answers with a jump in rate() once the worker is back.
 */
const lastMetrics = new Map<number, MetricsJson[]>();
/**
 * The counters and histograms of workers that exited: a worker's replacement starts from zero,
 * and the cluster's counters must not go back by what the old one had counted. Added at once
 * when a worker exits (a scrape under way must see it either as answered or as retired, never
 * both, nor neither), summed into one registry now and then.
 */
let retiredMetrics: MetricsJson[] = [];
/** Workers whose figures are in retiredMetrics: an answer of theirs a scrape still holds is left out. */
const retiredIds = new Set<number>();
let folding = false;

/** A worker exited: its last counters and histograms stay in every sum from now on. */
export async function retireWorkerMetrics(worker: Worker): Promise<void> {
  const last = lastMetrics.get(worker.id);
  lastMetrics.delete(worker.id);
  if (!last) return;
  retiredIds.add(worker.id);
  retiredMetrics.push(...last.map((registry) => registry.filter((m) => m.type === 'counter' || m.type === 'histogram')));
  if (retiredMetrics.length <= RETIRED_UNFOLDED || folding) return;
  // Workers dying in a loop: their registries summed into one, those retired meanwhile kept after it.
  folding = true;
  const taken = retiredMetrics.length;
  try {
    const sum = (await AggregatorRegistry.aggregate(retiredMetrics.slice(0, taken)).getMetricsAsJSON()) as unknown as MetricsJson;
    retiredMetrics = [sum, ...retiredMetrics.slice(taken)];
  } finally {
    folding = false;
  }
}

/** How many exited workers' registries are kept apart before they are summed into one. */
const RETIRED_UNFOLDED = 16;

/** One registry's metrics as prom-client's getMetricsAsJSON() gives them (its typings call `type` an enum; it is the name). */
type MetricsJson = Array<{ name: string; type: string; [k: string]: unknown }>;

/**
 * In the primary: the metrics of every worker in `workers` that answers within `waitMs`, summed
 * (prom-client's aggregation), plus how many of the `expected` workers are in the sum. prom-client's
 * own `clusterMetrics()` waited for every worker it could write to and failed the whole scrape
 * after 5 s: with one worker stopped (SIGSTOP) /metrics answered 500 after 5.1 s, and with one
 * restarting (asked while it booted, answering once booted) each scrape waited out the boot (2.9 s
 * measured on a loaded 2-CPU machine; a 500 past 5 s).
 */
export function aggregateMetrics(workers: Worker[], expected: number, waitMs: number): Promise<{ text: string; contentType: string }> {
  const id = ++workerMetricsRequests;
  const answers = new Map<number, MetricsJson[]>();
  let answered = 0;
  const pending = new Set(workers.filter((w) => w.isConnected()));
  return new Promise((resolve, reject) => {
    const cleanups: Array<() => void> = [];
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      for (const cleanup of cleanups) cleanup();
      // Workers that did not answer count with their last figures; exited ones with their totals.
      // A worker that answered and then exited is in retiredMetrics: counted there, once.
      const stale = workers.filter((w) => !answers.has(w.id) && lastMetrics.has(w.id)).flatMap((w) => lastMetrics.get(w.id)!);
      const live = [...answers].filter(([wid]) => !retiredIds.has(wid)).flatMap(([, m]) => m);
      const registry = AggregatorRegistry.aggregate([...live, ...stale, ...retiredMetrics]);
      registry
        .metrics()
        .then(
          (text) => resolve({ text: text + workersGauge(answered, expected - answered, waitMs), contentType: registry.contentType }),
          reject,
        );
    };
    const timer = setTimeout(finish, waitMs);
    for (const w of [...pending]) {
      // A worker that exits (or cannot be written to) will not answer: no need to wait for it.
      const settle = () => {
        if (pending.delete(w) && pending.size === 0) finish();
      };
      const onMessage = (msg: WorkerMetricsResponse) => {
        if (msg?.type !== WORKER_METRICS_RESPONSE || msg.id !== id) return;
        if (msg.metrics) {
          answers.set(w.id, msg.metrics);
          lastMetrics.set(w.id, msg.metrics);
          answered++;
        }
        settle();
      };
      w.on('message', onMessage);
      w.once('exit', settle);
      cleanups.push(() => {
        w.off('message', onMessage);
        w.off('exit', settle);
      });
      w.send({ type: WORKER_METRICS_REQUEST, id }, (err: Error | null) => {
        if (err) settle();
      });
    }
    if (pending.size === 0) finish();
  });
}

interface WorkerMetricsResponse {
  type?: string;
  id?: number;
  metrics?: MetricsJson[];
  error?: string;
}

/** A gauge written by hand: the sum above covers `answered` workers, and lacks `missing` ones. */
function workersGauge(answered: number, missing: number, waitMs: number): string {
  return [
    `# HELP hybridinference_metrics_workers Workers that answered this scrape, or did not (missing: stopped, restarting, or slower than ${waitMs} ms; counted with their last figures)`,
    '# TYPE hybridinference_metrics_workers gauge',
    `hybridinference_metrics_workers{state="answered"} ${answered}`,
    `hybridinference_metrics_workers{state="missing"} ${Math.max(0, missing)}`,
    '',
  ].join('\n');
}

/** In a worker: answers the primary's requests for this process's metrics. */
export function answerMetricsRequests(registry: Registry): void {
  process.on('message', (msg: { type?: string; id?: number }) => {
    if (msg?.type !== WORKER_METRICS_REQUEST) return;
    // The callback: a primary that went away meanwhile is no error of ours.
    const send = (reply: WorkerMetricsResponse) => process.send?.(reply, undefined, undefined, () => undefined);
    registry.getMetricsAsJSON().then(
      (metrics) => send({ type: WORKER_METRICS_RESPONSE, id: msg.id, metrics: [metrics as unknown as MetricsJson] }),
      (err: Error) => send({ type: WORKER_METRICS_RESPONSE, id: msg.id, error: err.message }),
    );
  });
}

/** In a worker: aggregated metrics of every worker, from the primary. */
export function clusterMetrics(timeoutMs = 5000): Promise<{ text: string; contentType: string }> {
  return new Promise((resolve, reject) => {
    const id = Math.floor(Math.random() * 2 ** 31);
    const timer = setTimeout(() => {
      process.off('message', onMessage);
      reject(new Error('the primary did not answer with metrics'));
    }, timeoutMs);
    const onMessage = (msg: { type?: string; id?: number; text?: string; contentType?: string; error?: string }) => {
      if (msg?.type !== METRICS_RESPONSE || msg.id !== id) return;
      clearTimeout(timer);
      process.off('message', onMessage);
      if (msg.error) reject(new Error(msg.error));
      else resolve({ text: msg.text ?? '', contentType: msg.contentType ?? 'text/plain' });
    };
    process.on('message', onMessage);
    process.send?.({ type: METRICS_REQUEST, id });
  });
}
