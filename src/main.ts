// First: a SIGHUP while the rest loads must not end the process.
import { takeEarlySighup } from './common/early-sighup';
import cluster from 'node:cluster';
import { Logger } from '@nestjs/common';
import { createApp } from './app.factory';
import { runPrimary } from './cluster';
import { AppConfig } from './config/app-config';
import { startupEnv } from './config/env-file';
import { workerCount } from './config/workers';

async function serve(): Promise<void> {
  const app = await createApp();
  const config = app.get(AppConfig);
  await app.listen(config.env.PORT, config.env.HOST);
  const url = (await app.getUrl()).replace('[::1]', 'localhost');
  const who = cluster.isWorker ? `worker ${process.pid}` : 'HybridInference';
  new Logger('Gateway').log(`${who} listening on ${url} (database: ${config.dbBackend})`);
}

function fail(err: unknown): never {
  // Config errors name the file, line and key; print them plainly for the person starting us.
  process.stderr.write(`HybridInference failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

// WORKERS is read before anything else boots: it decides how many processes there are. From
// `.env` too, read as the validated config reads it (the environment wins).
const env = startupEnv();
let workers = 1;
try {
  workers = workerCount(env.WORKERS);
} catch (err) {
  fail(err);
}

if (workers > 1 && cluster.isPrimary) {
  // LOG_LEVEL as the workers' pino takes it (their config validates the value; here a bad one is `info`).
  const rank = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity } as Record<string, number>;
  const threshold = rank[env.LOG_LEVEL?.trim() ?? 'info'] ?? rank.info;
  const log = (msg: string, level: 'info' | 'warn' | 'error' = 'info') =>
    rank[level] >= threshold &&
    process.stdout.write(
      `${JSON.stringify({ level, time: new Date().toISOString(), service: 'hybridinference', pid: process.pid, context: 'Cluster', msg })}\n`,
    );
  // Workers say nothing when Redis is not configured (one process is then the whole gateway);
  // that n of them multiply every limit is seen from here.
  if (!env.REDIS_URL?.trim())
    log(
      `WORKERS=${workers} without REDIS_URL: every process counts rate limits, concurrency and budgets on its own, so the gateway admits up to ${workers} times each limit and budget (and each process keeps its own circuit breakers and endpoint health); set REDIS_URL to share them`,
      'warn',
    );
  // The workers' drain: SHUTDOWN_GRACE_MS for requests, then the request log (a database that
  // hangs is given DB_QUERY_TIMEOUT_MS), with room to spare.
  const ms = (v: string | undefined, fallback: number) => (Number.isFinite(Number(v)) && v?.trim() ? Number(v) : fallback);
  runPrimary(workers, log, ms(env.SHUTDOWN_GRACE_MS, 30_000) + ms(env.DB_QUERY_TIMEOUT_MS, 10_000) + 15_000);
  // The workers read the files as they start: one that came before them needs no reload.
  takeEarlySighup();
} else {
  const worker = cluster.worker;
  // The primary gone (killed, out of memory): Node's default is a worker's exit at once, every
  // open stream cut without an error event and the request log's unwritten rows lost. It stops
  // as on SIGTERM instead: open requests finish (no new ones come: the primary accepted them),
  // the log is written. Node reads exitedAfterDisconnect just after this event.
  worker?.on('disconnect', () => {
    if (worker.exitedAfterDisconnect) return;
    worker.exitedAfterDisconnect = true;
    new Logger('Gateway').warn(`worker ${process.pid}: the primary process is gone; stopping as on SIGTERM`);
    process.kill(process.pid, 'SIGTERM');
  });
  serve().catch(fail);
}
